//! `toro.acpidump` on the command line: every ACPI table the root table
//! lists, and the DSDT, printed in hex at boot, to record a VMM's tables as
//! host-test fixtures (`core/tests/fixtures/acpi/README.md` says how).
//!
//! Lines read `acpidump SIG ADDRESS LENGTH` and then `acpidump SIG HEX...`,
//! 32 bytes a line.

use core::fmt::Write;

use toro_core::acpi::{self, Rsdp};
use toro_core::fadt;
use toro_core::PhysicalMemory;

/// Bytes per hex line.
const LINE_BYTES: usize = 32;
/// Tables longer than this are announced but not dumped.
const MAX_DUMPED: u32 = 256 << 10;

/// Prints the tables (see the module documentation).
pub fn dump(memory: &impl PhysicalMemory, rsdp: &Rsdp) {
    let mut dsdt = None;
    let walk = acpi::for_each_table(memory, rsdp, |signature, address, length| {
        if signature == fadt::FADT_SIGNATURE {
            dsdt = fadt::parse_fadt(memory, address).ok().map(|fadt| fadt.dsdt_address);
        }
        dump_table(memory, signature, address, length);
    });
    if let Err(error) = walk {
        crate::println!("acpidump: cannot walk the tables: {error}");
    }
    if let Some(address) = dsdt.filter(|&address| address != 0) {
        let mut length = [0u8; 4];
        match memory.read(address.saturating_add(4), &mut length) {
            Ok(()) => dump_table(memory, *b"DSDT", address, u32::from_le_bytes(length)),
            Err(error) => crate::println!("acpidump: DSDT: {error}"),
        }
    }
}

fn dump_table(memory: &impl PhysicalMemory, signature: [u8; 4], address: u64, length: u32) {
    let name = core::str::from_utf8(&signature).unwrap_or("????");
    crate::println!("acpidump {name} {address:#x} {length}");
    if length > MAX_DUMPED {
        return;
    }
    let mut line = [0u8; LINE_BYTES];
    let mut offset = 0u32;
    while offset < length {
        let size = ((length - offset) as usize).min(LINE_BYTES);
        if memory.read(address + u64::from(offset), &mut line[..size]).is_err() {
            crate::println!("acpidump {name}: unreadable at offset {offset}");
            return;
        }
        let mut out = crate::console::writer();
        let _ = write!(out, "acpidump {name} ");
        for byte in &line[..size] {
            let _ = write!(out, "{byte:02x}");
        }
        let _ = writeln!(out);
        offset += size as u32;
    }
}
