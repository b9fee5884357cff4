//! Toro: a dedicated kernel for one multi-threaded Rust application.
//!
//! An application is a `#![no_std]`, `#![no_main]` crate that depends on
//! this one and marks its entry point with `#[toro::main]`; the kernel and
//! the application link into one image that boots through PVH. See
//! `docs/` for each subsystem and `examples/hello` for the smallest
//! application.

#![no_std]

/// `alloc`, re-exported so applications need no `extern crate alloc`.
pub extern crate alloc;
pub use toro_macros::main;

mod acpi_dump;
mod arch;
mod backtrace;
mod boot;
pub mod console;
pub mod cpu;
pub mod devices;
pub mod fs;
pub mod interrupts;
pub mod io;
#[cfg(any(
    feature = "lockcheck-mutation-1",
    feature = "lockcheck-mutation-2",
    feature = "lockcheck-mutation-3",
    feature = "lockcheck-mutation-4",
    feature = "lockcheck-mutation-5"
))]
mod lockcheck_mutation;
mod logger;
pub mod memory;
pub mod net;
mod once;
mod panic;
pub mod random;
pub mod service;
pub mod sync;
pub mod system;
pub mod thread;
pub mod time;
pub mod virtio;

pub use log;
/// Single-producer, single-consumer rings (`toro_core::spsc`).
pub use toro_core::spsc;

/// What `main` may return; it becomes the VM's exit status.
pub trait Termination {
    /// The exit status (0 = success).
    fn report(self) -> i32;
}

impl Termination for () {
    fn report(self) -> i32 {
        0
    }
}

impl Termination for i32 {
    fn report(self) -> i32 {
        self
    }
}

impl<T: Termination, E: core::fmt::Debug> Termination for Result<T, E> {
    fn report(self) -> i32 {
        match self {
            Ok(value) => value.report(),
            Err(error) => {
                println!("Error: {error:?}");
                1
            }
        }
    }
}

/// Largest status QEMU's `isa-debug-exit` carries through (`(s << 1) | 1`
/// must fit the host's 8-bit exit status).
pub const MAX_EXIT_STATUS: i32 = 127;

/// Ends the VM with `status`. Statuses outside `0..=127` become 127.
pub fn exit(status: i32) -> ! {
    let status = if (0..=MAX_EXIT_STATUS).contains(&status) {
        status
    } else {
        println!("toro: exit status {status} out of range 0..=127; exiting with 127");
        MAX_EXIT_STATUS
    };
    // A clean exit: every filesystem's changes reach its disk.
    fs::shutdown();
    arch::exit::exit_vm(status as u32)
}

/// The index of the CPU running the caller: 0 is the boot CPU, then the
/// firmware's (MADT) order.
pub fn cpu_id() -> u32 {
    arch::percpu::current_index() as u32
}

/// Blocks the calling thread for good without ending the VM: for a `main`
/// whose work is handed to other threads and whose VM is stopped from
/// outside (a server). The calling CPU keeps scheduling its other threads
/// and the services it owns (a network instance, a filesystem), and halts
/// when it has nothing to run, costing the host nothing.
///
/// (It used to halt the CPU itself, which silently stopped every thread and
/// service on that CPU: a thread that migrated there, as a remote socket
/// call does, never came back.)
pub fn park() -> ! {
    loop {
        // `thread::park` may return spuriously, or because someone unparked
        // this thread: either way it has nothing to do.
        thread::park();
    }
}
