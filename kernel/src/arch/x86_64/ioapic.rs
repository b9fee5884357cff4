//! The I/O APICs the MADT lists: routing a GSI to a CPU's APIC id and vector.
//!
//! Register access is indirect (IOREGSEL at offset 0 selects, IOWIN at
//! 0x10 reads or writes; Intel 82093AA datasheet, 3.1), so two CPUs must
//! never program one I/O APIC at the same time: the I/O APICs belong to the
//! boot CPU, and `crate::interrupts` sends every change there as a message.
//! Their registers lie in the 3-4 GiB hole, which `paging::init` maps
//! uncached.

use toro_core::acpi::{IoApicEntry, MadtSummary, MAX_IO_APICS};

/// IOREGSEL and IOWIN offsets (82093AA datasheet, 3.1).
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// IOAPICVER: bits 23:16 hold the index of the highest redirection entry.
const REGISTER_VERSION: u32 = 0x01;
/// Redirection table entry `n`: low half at 0x10 + 2n, high half after it.
const REGISTER_REDIRECTION_BASE: u32 = 0x10;

/// Redirection entry bits (82093AA datasheet, 3.2.4).
const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
const ENTRY_LEVEL: u64 = 1 << 15;
const ENTRY_MASKED: u64 = 1 << 16;
const ENTRY_DESTINATION_SHIFT: u64 = 56;

/// Why a GSI could not be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoApicError {
    /// No I/O APIC serves this GSI (none listed, or past its last pin).
    NoSuchGsi(u32),
    /// The destination APIC id does not fit the entry's 8-bit field.
    DestinationTooLarge(u32),
}

impl core::fmt::Display for IoApicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchGsi(gsi) => write!(f, "no I/O APIC serves GSI {gsi}"),
            Self::DestinationTooLarge(id) => write!(f, "APIC id {id} does not fit an I/O APIC entry"),
        }
    }
}

/// The I/O APICs, with their pin counts read from the hardware (kept by
/// `crate::interrupts`).
#[derive(Clone, Copy)]
pub struct IoApics {
    entries: [IoApicEntry; MAX_IO_APICS],
    pins: [u32; MAX_IO_APICS],
    count: usize,
}

fn read(entry: &IoApicEntry, register: u32) -> u32 {
    let base = u64::from(entry.address);
    // SAFETY: the I/O APIC's registers, identity-mapped uncached (the 3-4
    // GiB hole); only the boot CPU gets here (see the module docs).
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

fn write(entry: &IoApicEntry, register: u32, value: u32) {
    let base = u64::from(entry.address);
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, register);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, value);
    }
}

/// Whether `address` is one the boot page tables map uncached (the 3-4
/// GiB hole), so that touching it is safe.
fn is_mapped_device_address(address: u32) -> bool {
    (0xc000_0000..=0xffff_f000).contains(&address) && address.is_multiple_of(16)
}

/// Reads every I/O APIC's pin count and masks all its pins. Boot CPU, once,
/// after paging. I/O APICs at addresses outside the device hole are left
/// out with a log line.
pub fn init(madt: &MadtSummary) -> IoApics {
    let mut apics = IoApics { entries: [IoApicEntry::default(); MAX_IO_APICS], pins: [0; MAX_IO_APICS], count: 0 };
    for entry in madt.io_apic_entries() {
        if !is_mapped_device_address(entry.address) {
            log::warn!(
                "ACPI MADT: I/O APIC {} at {:#x} is outside the device range; left out",
                entry.id,
                entry.address
            );
            continue;
        }
        let version = read(entry, REGISTER_VERSION);
        let pins = ((version >> 16) & 0xff) + 1;
        for pin in 0..pins {
            write(entry, REGISTER_REDIRECTION_BASE + 2 * pin, ENTRY_MASKED as u32);
        }
        log::info!("I/O APIC {} at {:#x}: GSIs {}..{}", entry.id, entry.address, entry.gsi_base, entry.gsi_base + pins);
        apics.entries[apics.count] = *entry;
        apics.pins[apics.count] = pins;
        apics.count += 1;
    }
    if madt.bad_overrides > 0 {
        log::warn!("ACPI MADT: {} interrupt source overrides ignored (garbled or not ISA)", madt.bad_overrides);
    }
    apics
}

/// The I/O APIC and pin serving `gsi`.
fn find(apics: &IoApics, gsi: u32) -> Result<(IoApicEntry, u32), IoApicError> {
    (0..apics.count)
        .filter(|&i| apics.entries[i].gsi_base <= gsi && gsi - apics.entries[i].gsi_base < apics.pins[i])
        .map(|i| (apics.entries[i], gsi - apics.entries[i].gsi_base))
        .next()
        .ok_or(IoApicError::NoSuchGsi(gsi))
}

/// Routes `gsi` to `vector` on the CPU with APIC id `apic_id` (physical
/// destination, fixed delivery), unmasked. Boot CPU only.
pub fn route(
    apics: &IoApics,
    gsi: u32,
    apic_id: u32,
    vector: u8,
    level: bool,
    active_low: bool,
) -> Result<(), IoApicError> {
    if apic_id > 0xff {
        return Err(IoApicError::DestinationTooLarge(apic_id));
    }
    let (entry, pin) = find(apics, gsi)?;
    let mut value = u64::from(vector) | (u64::from(apic_id) << ENTRY_DESTINATION_SHIFT);
    if level {
        value |= ENTRY_LEVEL;
    }
    if active_low {
        value |= ENTRY_ACTIVE_LOW;
    }
    let register = REGISTER_REDIRECTION_BASE + 2 * pin;
    // Masked while the halves disagree, then the low half unmasks.
    write(&entry, register, ENTRY_MASKED as u32);
    write(&entry, register + 1, (value >> 32) as u32);
    write(&entry, register, value as u32);
    Ok(())
}

/// Masks `gsi` (after a storm, or when its device is left out). Boot CPU only.
pub fn mask(apics: &IoApics, gsi: u32) -> Result<(), IoApicError> {
    let (entry, pin) = find(apics, gsi)?;
    let register = REGISTER_REDIRECTION_BASE + 2 * pin;
    let low = read(&entry, register);
    write(&entry, register, low | ENTRY_MASKED as u32);
    Ok(())
}
