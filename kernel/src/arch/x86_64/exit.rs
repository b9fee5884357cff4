//! Ending the VM with a status.
//!
//! QEMU: the `isa-debug-exit` device (port 0xf4, 4 bytes) makes QEMU exit with
//! status `(value << 1) | 1`; the host tool turns that back into `value`.
//! Elsewhere (Firecracker, cloud-hypervisor) that port is ignored; Firecracker
//! stops the VM on an i8042 reset (the status is lost), and after that this
//! CPU halts.

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

/// Stops after a fatal error: `exit_vm` with a failure status when the VMM
/// has `isa-debug-exit`; otherwise all CPUs halt (the VMM keeps the output).
pub fn fail(status: u32) -> ! {
    // SAFETY: as in `exit_vm`.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(status) };
    super::cpu::halt_forever()
}
