//! Ending the VM with a status.
//!
//! QEMU: the `isa-debug-exit` device (port 0xf4, 4 bytes) makes QEMU exit with
//! status `(value << 1) | 1`; the host tool turns that back into `value`.
//! Elsewhere (Firecracker, cloud-hypervisor) that port is ignored; Firecracker
//! stops the VM on an i8042 reset (the status is lost), and after that this
//! CPU halts.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;

/// Exits the VM with `status` (0..=127 survive QEMU's encoding).
pub fn exit_vm(status: u32) -> ! {
    // SAFETY: writing the debug-exit port ends the VM under QEMU and is
    // ignored elsewhere.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status) };
    // SAFETY: pulsing the i8042 reset line ends the VM on Firecracker; on
    // QEMU we never get here.
    unsafe { Port::<u8>::new(I8042_COMMAND).write(I8042_RESET) };
    super::cpu::halt_forever()
}

/// Set when the kernel stops every CPU after a fatal error; an NMI then
/// means "halt", not a hardware problem.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether a fatal error is stopping all CPUs.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Stops after a fatal error: `exit_vm` with a failure status when the VMM
/// has `isa-debug-exit`; otherwise every CPU halts (others through an NMI),
/// leaving the report on the console.
pub fn fail(status: u32) -> ! {
    // SAFETY: as in `exit_vm`.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status) };
    if super::percpu::online() > 1 {
        STOPPING.store(true, Ordering::Release);
        super::apic::send_nmi_to_others();
    }
    super::cpu::halt_forever()
}
