//! The CMOS real-time clock (MC146818 compatible) through its index and
//! data ports; decoding the registers is `toro_core::rtc`.
//!
//! Ports 0x70 (index; bit 7 set keeps NMIs masked while we access it) and
//! 0x71 (data), as on every PC and QEMU's q35 and pc machines. Where there
//! is no RTC (QEMU microvm with `rtc=off`, Firecracker) every read returns
//! 0xff, so the update-in-progress bit never clears and `read` says `None`.

use toro_core::rtc::{
    Registers, CENTURY, DAY_OF_MONTH, HOURS, MINUTES, MONTH, SECONDS, STATUS_A, STATUS_B, UPDATE_IN_PROGRESS, YEAR,
};
use x86_64::instructions::port::Port;

/// The index port.
const INDEX: u16 = 0x70;
/// The data port.
const DATA: u16 = 0x71;
/// Index bit 7: NMIs stay disabled.
const NMI_DISABLE: u8 = 1 << 7;
/// Reads of register A to wait for an update to end (an update lasts at
/// most 1984 us by the data sheet; a port read takes about 1 us, far more
/// under emulation).
const UPDATE_WAIT_READS: u32 = 10_000;
/// Attempts at two identical consecutive reads.
const ATTEMPTS: u32 = 5;

fn read(register: u8) -> u8 {
    // SAFETY: selecting a CMOS register and reading it has no other effect.
    unsafe {
        Port::<u8>::new(INDEX).write(NMI_DISABLE | register);
        Port::<u8>::new(DATA).read()
    }
}

/// Waits while an update is in progress; false if it never ends (no RTC).
fn wait_for_update_end() -> bool {
    (0..UPDATE_WAIT_READS).any(|_| read(STATUS_A) & UPDATE_IN_PROGRESS == 0)
}

fn snapshot() -> Registers {
    Registers {
        seconds: read(SECONDS),
        minutes: read(MINUTES),
        hours: read(HOURS),
        day: read(DAY_OF_MONTH),
        month: read(MONTH),
        year: read(YEAR),
        century: Some(read(CENTURY)),
        status_b: read(STATUS_B),
    }
}

/// Register D: bit 7 is "valid RAM and time", bits 0-6 read 0.
const STATUS_D: u8 = 0x0d;

/// The date registers, read twice the same outside an update (so no
/// field was caught mid-carry); `None` if there is no RTC.
pub fn read_registers() -> Option<Registers> {
    // Where nothing answers the ports (microvm, Firecracker) every read is
    // 0xff, and register D, whose low 7 bits a real RTC keeps 0, says so
    // at once; without this look the wait below ran to its 10,000 reads
    // of register A (its update bit stuck at 1), 1-2 ms of boot under TCG.
    if read(STATUS_D) == 0xff {
        return None;
    }
    for _ in 0..ATTEMPTS {
        if !wait_for_update_end() {
            return None;
        }
        let first = snapshot();
        if !wait_for_update_end() {
            return None;
        }
        if snapshot() == first {
            return Some(first);
        }
    }
    None
}
