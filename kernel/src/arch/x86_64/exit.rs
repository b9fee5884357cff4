//! Ending the VM with a status, on every VMM.
//!
//! In order, each step ending the VM where it works and being ignored where
//! it does not:
//! 1. the other CPUs are stopped (an NMI; they halt), so the next line is
//!    the last; the line `toro: exit status N` goes out on the console:
//!    where no exit port exists the host tool takes the status from it;
//! 2. QEMU's `isa-debug-exit` (port 0xf4, 4 bytes): QEMU exits with status
//!    `(N << 1) | 1`, which the host tool turns back into `N`;
//! 3. ACPI power-off (the FADT's PM1a/PM1b control blocks or the sleep
//!    control register, with the DSDT's S5 sleep type; see
//!    `toro_core::fadt`), when boot found one: cloud-hypervisor stops here
//!    (to it an i8042 reset is a reboot);
//! 4. the i8042 reset pulse: Firecracker stops here;
//! 5. this CPU halts.
//!
//! Panics and CPU exceptions end the VM the same way, after their report.

use core::sync::atomic::{AtomicBool, Ordering};

use toro_core::fadt::{AddressSpace, PowerOff, RegisterWrite};
use x86_64::instructions::port::Port;

use crate::once::BootCell;

const DEBUG_EXIT_PORT: u16 = 0xf4;
/// i8042 command port, and "pulse the reset line" (the 8042 output port's bit 0).
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
/// Memory-mapped power-off registers are written only below this: the
/// boot page tables map all of it (RAM, and the 3-4 GiB device hole
/// uncached; see `paging`).
const MAPPED_REGISTER_LIMIT: u64 = 4 << 30;

/// How ACPI powers off, set once at boot when the firmware tables say.
static POWER_OFF: BootCell<PowerOff> = BootCell::new();

/// Records how ACPI powers this VM off (boot CPU, once, before `main`).
pub fn set_power_off(plan: PowerOff) {
    POWER_OFF.set(plan);
}

/// Set when the VM is ending; an NMI then means "halt", not a hardware problem.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Set before the ACPI writes: a fault while writing (a register the page
/// tables do not map after all) must not try them again.
static ACPI_TRIED: AtomicBool = AtomicBool::new(false);

/// Whether the VM is ending (the other CPUs are being stopped).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Exits the VM with `status` (0..=127 survive QEMU's encoding).
pub fn exit_vm(status: u32) -> ! {
    end(status)
}

/// Ends the VM after a fatal error, its report already printed.
pub fn fail(status: u32) -> ! {
    end(status)
}

fn end(status: u32) -> ! {
    if super::percpu::online() > 1 && !STOPPING.load(Ordering::Acquire) {
        STOPPING.store(true, Ordering::Release);
        super::apic::send_nmi_to_others();
    }
    {
        use core::fmt::Write;
        let mut out = crate::console::Emergency::lock();
        let _ = writeln!(out, "toro: exit status {status}");
    }
    // SAFETY: writing the debug-exit port ends the VM under QEMU and is
    // ignored elsewhere.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status) };
    if !ACPI_TRIED.load(Ordering::Relaxed) {
        ACPI_TRIED.store(true, Ordering::Relaxed);
        if let Some(plan) = POWER_OFF.get() {
            plan.writes().into_iter().flatten().for_each(write_register);
        }
    }
    // SAFETY: pulsing the i8042 reset line ends the VM on Firecracker (and
    // resets it elsewhere); nothing else is left to do on this CPU.
    unsafe { Port::<u8>::new(I8042_COMMAND).write(I8042_RESET) };
    super::cpu::halt_forever()
}

/// Writes a power-off value to an ACPI register.
fn write_register(write: RegisterWrite) {
    let RegisterWrite { register, value } = write;
    match register.space {
        AddressSpace::Io => {
            // `toro_core::fadt` gives I/O registers below 0x10000 only.
            let port = register.address as u16;
            // SAFETY: the FADT names this port as the power-off register;
            // the VM is ending, so whatever it does to the machine is
            // wanted. Values are truncated to the register's width.
            unsafe {
                match register.width_bits {
                    8 => Port::<u8>::new(port).write(value as u8),
                    16 => Port::<u16>::new(port).write(value as u16),
                    _ => Port::<u32>::new(port).write(value),
                }
            }
        }
        AddressSpace::Memory if register.address < MAPPED_REGISTER_LIMIT => {
            let address = register.address as usize;
            // SAFETY: the FADT names this address as the power-off
            // register; it is below 4 GiB, which the page tables map (RAM
            // and the device hole). A misaligned or unbacked address gives
            // a fault, which ends the VM without coming back here.
            unsafe {
                match register.width_bits {
                    8 => core::ptr::write_volatile(address as *mut u8, value as u8),
                    16 => core::ptr::write_volatile(address as *mut u16, value as u16),
                    _ => core::ptr::write_volatile(address as *mut u32, value),
                }
            }
        }
        AddressSpace::Memory => {}
    }
}
