//! The 8254 programmable interval timer (PIT), channel 0, used only as a
//! known clock to calibrate the TSC against. Ports and command bytes: Intel
//! 8254 data sheet (control word format, counter latch command).

use x86_64::instructions::port::Port;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// Channel 0's data port.
const CHANNEL_0_DATA: u16 = 0x40;
/// The mode/command port.
const COMMAND: u16 = 0x43;
/// Counter latch command for channel 0 (SC=00, RW=00).
const LATCH_CHANNEL_0: u8 = 0x00;
/// Channel 0, lobyte/hibyte access, mode 2 (rate generator), binary.
const CHANNEL_0_RATE_GENERATOR: u8 = 0x34;

/// Starts channel 0 counting down from 65536 (reload 0), wrapping at 0. No
/// interrupt is routed from it (the legacy PIC is masked).
pub fn start_free_running() {
    // SAFETY: programming PIT channel 0 has no effect beyond its counter.
    unsafe {
        Port::<u8>::new(COMMAND).write(CHANNEL_0_RATE_GENERATOR);
        Port::<u8>::new(CHANNEL_0_DATA).write(0);
        Port::<u8>::new(CHANNEL_0_DATA).write(0);
    }
}

/// Channel 0's current count (latched, then read low byte first).
pub fn count() -> u16 {
    let mut command = Port::<u8>::new(COMMAND);
    let mut data = Port::<u8>::new(CHANNEL_0_DATA);
    // SAFETY: latching and reading PIT channel 0 only reads the counter.
    unsafe {
        command.write(LATCH_CHANNEL_0);
        let low = data.read() as u16;
        let high = data.read() as u16;
        (high << 8) | low
    }
}
