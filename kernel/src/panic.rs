//! Panics: message, location and backtrace on the console, then the VM ends
//! with `EXIT_PANIC` on every VMM (see `arch::exit`).

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

/// Exit status of the VM after a panic (the status Rust's `std` uses).
pub const EXIT_PANIC: u32 = 101;

/// Set by the first panic; a panic while reporting one stops at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.load(Ordering::Relaxed) {
        crate::arch::exit::fail(EXIT_PANIC);
    }
    PANICKING.store(true, Ordering::Relaxed);
    let mut out = crate::console::Emergency::lock();
    let _ = write!(out, "\n!!! panic on cpu {}", crate::cpu_id());
    // Which thread: read without borrowing the scheduler (the panic may
    // have interrupted a borrow of it).
    let _ = write!(out, " in ");
    crate::thread::scheduler::describe_current(&mut out);
    let _ = write!(out, ": panicked at ");
    match info.location() {
        Some(location) => {
            let _ = writeln!(out, "{}:{}:{}:", location.file(), location.line(), location.column());
        }
        None => {
            let _ = writeln!(out, "an unknown location:");
        }
    }
    let _ = writeln!(out, "{}", info.message());
    crate::memory::write_failure_report(&mut out);
    let here = crate::arch::cpu::instruction_pointer();
    crate::backtrace::write(&mut out, here, crate::arch::cpu::frame_pointer());
    drop(out);
    crate::arch::exit::fail(EXIT_PANIC)
}
