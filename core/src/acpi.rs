//! Just enough ACPI to boot: find the RSDP, walk the XSDT or RSDT, and summarise the MADT.
//!
//! Structure layouts and section numbers are from the ACPI 6.5
//! specification. Every table is read through [`PhysicalMemory`] and its
//! checksum verified before any field is trusted; lengths taken from tables
//! are capped, and every walk advances by at least one byte per step, so a
//! corrupt table gives an error or a count, never a panic or an endless loop.
//!
//! Not covered: the EBDA (the RSDP search only scans the BIOS area
//! [`RSDP_SEARCH_START`]..[`RSDP_SEARCH_END`], where QEMU and Firecracker
//! put it), and the DSDT, which the FADT points to rather than the root table.

use core::fmt;

use crate::physical_memory::{
    read_bytes, read_u16, read_u32, read_u64, read_u8, PhysicalMemory, SliceMemory, Unreadable,
};

/// Where the BIOS area searched for the RSDP begins (ACPI 6.5, section 5.2.5.1).
pub const RSDP_SEARCH_START: u64 = 0xE0000;
/// Where the BIOS area searched for the RSDP ends (exclusive).
pub const RSDP_SEARCH_END: u64 = 0x100000;

/// The most processors [`MadtSummary`] lists.
pub const MAX_CPUS: usize = 256;

/// The longest table whose checksum is verified, in bytes; longer ones are
/// taken as corrupt (real DSDTs are well under 1 MiB).
pub const MAX_TABLE_LENGTH: u32 = 16 << 20;

/// The most root-table entries walked.
pub const MAX_ROOT_ENTRIES: u32 = 256;

/// RSDP (section 5.2.5.3): signature, and field offsets in bytes.
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const RSDP_OEM_ID_OFFSET: u64 = 9;
const RSDP_REVISION_OFFSET: u64 = 15;
const RSDP_RSDT_ADDRESS_OFFSET: u64 = 16;
const RSDP_LENGTH_OFFSET: u64 = 20;
const RSDP_XSDT_ADDRESS_OFFSET: u64 = 24;
/// The bytes the ACPI 1.0 checksum covers.
const RSDP_V1_LENGTH: u32 = 20;
/// The length of an ACPI 2.0+ RSDP; `length` may not be less.
const RSDP_V2_LENGTH: u32 = 36;
/// Longest RSDP `length` accepted (the structure is 36 bytes today).
const RSDP_MAX_LENGTH: u32 = 4096;
/// The first revision with `length`, `xsdt_address` and the extended checksum.
const RSDP_FIRST_EXTENDED_REVISION: u8 = 2;
/// The RSDP sits on a 16-byte boundary.
const RSDP_ALIGNMENT: usize = 16;
/// How much of the BIOS area is read at once while scanning.
const SCAN_CHUNK: usize = 1024;

/// System description table header (section 5.2.6): size and field offsets.
const HEADER_LENGTH: u32 = 36;
const HEADER_LENGTH_OFFSET: u64 = 4;
const HEADER_REVISION_OFFSET: u64 = 8;

/// MADT (section 5.2.12): fixed fields after the header, and where entries start.
const MADT_LOCAL_APIC_ADDRESS_OFFSET: u64 = 36;
const MADT_FLAGS_OFFSET: u64 = 40;
const MADT_ENTRIES_OFFSET: u32 = 44;
/// MADT flags bit 0, `PCAT_COMPAT`: the machine also has dual 8259 PICs.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
/// The first MADT revision whose processor flags define "online capable" (ACPI 6.3).
const MADT_FIRST_ONLINE_CAPABLE_REVISION: u8 = 5;

/// MADT entry types (table 5.21) and the lengths they need.
const ENTRY_LOCAL_APIC: u8 = 0;
const ENTRY_LOCAL_APIC_LENGTH: u8 = 8;
const ENTRY_IO_APIC: u8 = 1;
const ENTRY_IO_APIC_LENGTH: u8 = 12;
const ENTRY_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const ENTRY_INTERRUPT_SOURCE_OVERRIDE_LENGTH: u8 = 10;
const ENTRY_LOCAL_APIC_ADDRESS_OVERRIDE: u8 = 5;
const ENTRY_LOCAL_APIC_ADDRESS_OVERRIDE_LENGTH: u8 = 12;
const ENTRY_LOCAL_X2APIC: u8 = 9;
const ENTRY_LOCAL_X2APIC_LENGTH: u8 = 16;
/// Every entry starts with its type and length bytes.
const ENTRY_HEADER_LENGTH: u8 = 2;

/// Local APIC and x2APIC flags (tables 5.23 and 5.37).
const PROCESSOR_ENABLED: u32 = 1 << 0;
const PROCESSOR_ONLINE_CAPABLE: u32 = 1 << 1;

/// What went wrong finding or reading an ACPI structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// Memory a structure occupies, or points to, could not be read.
    Unreadable(Unreadable),
    /// No valid RSDP in the BIOS area.
    RsdpNotFound {
        /// Candidates with the right signature that failed a checksum or length check.
        rejected: usize,
    },
    /// The RSDP address does not hold the `"RSD PTR "` signature.
    RsdpSignature {
        /// Where the RSDP was expected.
        address: u64,
    },
    /// An RSDP checksum does not add up.
    RsdpChecksum {
        /// Where the RSDP is.
        address: u64,
        /// Whether it is the ACPI 2.0 extended checksum (else the 20-byte one).
        extended: bool,
    },
    /// An ACPI 2.0+ RSDP gives a length below 36 bytes or above 4 KiB.
    RsdpLength {
        /// Where the RSDP is.
        address: u64,
        /// The length it gives.
        length: u32,
    },
    /// Neither a valid XSDT nor an RSDT address is given.
    NoRootTable,
    /// A table does not have the signature expected of it.
    TableSignature {
        /// Where the table is.
        address: u64,
        /// The signature expected.
        expected: [u8; 4],
        /// The signature found.
        found: [u8; 4],
    },
    /// A table's length is shorter than its fixed fields, or above [`MAX_TABLE_LENGTH`].
    TableLength {
        /// Where the table is.
        address: u64,
        /// The table's signature.
        signature: [u8; 4],
        /// The length it gives.
        length: u32,
    },
    /// A table's checksum does not add up.
    TableChecksum {
        /// Where the table is.
        address: u64,
        /// The table's signature.
        signature: [u8; 4],
    },
}

impl From<Unreadable> for AcpiError {
    fn from(unreadable: Unreadable) -> Self {
        Self::Unreadable(unreadable)
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unreadable(unreadable) => write!(formatter, "ACPI: {unreadable}"),
            Self::RsdpNotFound { rejected } => write!(
                formatter,
                "no valid ACPI RSDP in {RSDP_SEARCH_START:#x}..{RSDP_SEARCH_END:#x} ({rejected} candidates rejected)"
            ),
            Self::RsdpSignature { address } => {
                write!(formatter, "no ACPI RSDP signature at {address:#x}")
            }
            Self::RsdpChecksum { address, extended } => write!(
                formatter,
                "ACPI RSDP at {address:#x} has a bad {} checksum",
                if extended { "extended" } else { "ACPI 1.0" }
            ),
            Self::RsdpLength { address, length } => {
                write!(formatter, "ACPI RSDP at {address:#x} gives an invalid length of {length} bytes")
            }
            Self::NoRootTable => formatter.write_str("the ACPI RSDP points to no valid XSDT or RSDT"),
            Self::TableSignature { address, expected, found } => write!(
                formatter,
                "ACPI table at {address:#x} is \"{}\", expected \"{}\"",
                Signature(&found),
                Signature(&expected)
            ),
            Self::TableLength { address, signature, length } => write!(
                formatter,
                "ACPI table \"{}\" at {address:#x} gives an invalid length of {length} bytes",
                Signature(&signature)
            ),
            Self::TableChecksum { address, signature } => {
                write!(formatter, "ACPI table \"{}\" at {address:#x} has a bad checksum", Signature(&signature))
            }
        }
    }
}

/// Shows a table signature as text, with non-printable bytes as `.`.
struct Signature<'a>(&'a [u8]);

impl fmt::Display for Signature<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|&byte| {
            let shown = if byte.is_ascii_graphic() || byte == b' ' { char::from(byte) } else { '.' };
            fmt::Write::write_char(formatter, shown)
        })
    }
}

/// The fields of the Root System Description Pointer (section 5.2.5.3) the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsdp {
    /// 0 for ACPI 1.0, 2 for ACPI 2.0 and later.
    pub revision: u8,
    /// The RSDT's physical address (0 if absent).
    pub rsdt_address: u32,
    /// The XSDT's physical address: revision 2 and later, when not 0.
    pub xsdt_address: Option<u64>,
    /// The OEM's identifier.
    pub oem_id: [u8; 6],
}

/// Finds a valid RSDP on a 16-byte boundary of `bytes`; returns its offset.
///
/// `bytes` is the BIOS area (or part of it) copied by the caller, starting
/// on a 16-byte boundary. A candidate counts when its ACPI 1.0 checksum
/// (first 20 bytes) holds and, for revision 2 and later, its length is
/// sane and the extended checksum over that length holds; candidates that
/// fail are skipped and the search goes on.
pub fn find_rsdp_in(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).step_by(RSDP_ALIGNMENT).find(|&offset| {
        bytes.get(offset..).is_some_and(|candidate| {
            candidate.starts_with(RSDP_SIGNATURE) && parse_rsdp(&SliceMemory::new(0, candidate), 0).is_ok()
        })
    })
}

/// Searches the BIOS area [`RSDP_SEARCH_START`]..[`RSDP_SEARCH_END`] for a valid RSDP; returns its address.
///
/// The area is read 1 KiB at a time; chunks that cannot be read are
/// skipped, and candidates that fail validation (see [`parse_rsdp`]) do
/// not stop the search.
pub fn scan_for_rsdp(memory: &impl PhysicalMemory) -> Result<u64, AcpiError> {
    let mut chunk = [0; SCAN_CHUNK];
    let mut rejected = 0;
    let mut any_readable = false;
    let mut chunk_address = RSDP_SEARCH_START;
    while chunk_address < RSDP_SEARCH_END {
        if memory.read(chunk_address, &mut chunk).is_ok() {
            any_readable = true;
            for offset in (0..SCAN_CHUNK).step_by(RSDP_ALIGNMENT) {
                if chunk.get(offset..).is_some_and(|candidate| candidate.starts_with(RSDP_SIGNATURE)) {
                    // offset < 1024, and the area is far below u64::MAX.
                    let address = chunk_address + offset as u64;
                    // Validated in place, not in the chunk: an RSDP may
                    // straddle two chunks.
                    match parse_rsdp(memory, address) {
                        Ok(_) => return Ok(address),
                        Err(_) => rejected += 1,
                    }
                }
            }
        }
        chunk_address += SCAN_CHUNK as u64;
    }
    if any_readable {
        Err(AcpiError::RsdpNotFound { rejected })
    } else {
        Err(AcpiError::Unreadable(Unreadable {
            address: RSDP_SEARCH_START,
            length: (RSDP_SEARCH_END - RSDP_SEARCH_START) as usize,
        }))
    }
}

/// Reads and validates the RSDP at `address`: signature, ACPI 1.0
/// checksum, and for revision 2 and later, length and extended checksum.
pub fn parse_rsdp(memory: &impl PhysicalMemory, address: u64) -> Result<Rsdp, AcpiError> {
    let signature: [u8; 8] = read_bytes(memory, address, 0)?;
    if &signature != RSDP_SIGNATURE {
        return Err(AcpiError::RsdpSignature { address });
    }
    if checksum(memory, address, RSDP_V1_LENGTH)? != 0 {
        return Err(AcpiError::RsdpChecksum { address, extended: false });
    }
    let revision = read_u8(memory, address, RSDP_REVISION_OFFSET)?;
    let xsdt_address = if revision >= RSDP_FIRST_EXTENDED_REVISION {
        let length = read_u32(memory, address, RSDP_LENGTH_OFFSET)?;
        if !(RSDP_V2_LENGTH..=RSDP_MAX_LENGTH).contains(&length) {
            return Err(AcpiError::RsdpLength { address, length });
        }
        if checksum(memory, address, length)? != 0 {
            return Err(AcpiError::RsdpChecksum { address, extended: true });
        }
        Some(read_u64(memory, address, RSDP_XSDT_ADDRESS_OFFSET)?).filter(|&xsdt| xsdt != 0)
    } else {
        None
    };
    Ok(Rsdp {
        revision,
        rsdt_address: read_u32(memory, address, RSDP_RSDT_ADDRESS_OFFSET)?,
        xsdt_address,
        oem_id: read_bytes(memory, address, RSDP_OEM_ID_OFFSET)?,
    })
}

/// What [`for_each_table`] walked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableWalkReport {
    /// The XSDT was walked (else the RSDT).
    pub used_xsdt: bool,
    /// The RSDP gave an XSDT, but it was unreadable or invalid, so the RSDT was walked instead.
    pub xsdt_rejected: bool,
    /// Valid tables passed to the callback.
    pub tables: usize,
    /// Entries skipped: address 0, unreadable, bad length or bad checksum.
    pub invalid_tables: usize,
    /// Root-table entries beyond [`MAX_ROOT_ENTRIES`], not walked.
    pub entries_over_limit: u32,
}

/// Which root table is walked, and so how wide its entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootTable {
    /// 64-bit entries (section 5.2.8).
    Xsdt,
    /// 32-bit entries (section 5.2.7).
    Rsdt,
}

impl RootTable {
    const fn entry_size(self) -> u32 {
        match self {
            Self::Xsdt => 8,
            Self::Rsdt => 4,
        }
    }
}

/// Calls `f(signature, address, length)` for every valid table the root table lists.
///
/// The XSDT is preferred when the RSDP gives one and it is valid; otherwise
/// the RSDT is walked. Tables that are unreadable or fail their checksum
/// are skipped and counted in [`TableWalkReport::invalid_tables`]; only a
/// missing or invalid root table is an error.
pub fn for_each_table(
    memory: &impl PhysicalMemory,
    rsdp: &Rsdp,
    mut f: impl FnMut([u8; 4], u64, u32),
) -> Result<TableWalkReport, AcpiError> {
    let mut report = TableWalkReport::default();
    let xsdt = rsdp.xsdt_address.and_then(|address| {
        let header = check_table(memory, address, Some(*b"XSDT"), HEADER_LENGTH);
        report.xsdt_rejected = header.is_err();
        header.ok().map(|header| (RootTable::Xsdt, address, header))
    });
    let (root, root_address, header) = match xsdt {
        Some(found) => found,
        None if rsdp.rsdt_address == 0 => return Err(AcpiError::NoRootTable),
        None => {
            let address = u64::from(rsdp.rsdt_address);
            (RootTable::Rsdt, address, check_table(memory, address, Some(*b"RSDT"), HEADER_LENGTH)?)
        }
    };
    report.used_xsdt = root == RootTable::Xsdt;
    // check_table guarantees length >= HEADER_LENGTH.
    let entries = header.length.saturating_sub(HEADER_LENGTH) / root.entry_size();
    let walked = entries.min(MAX_ROOT_ENTRIES);
    report.entries_over_limit = entries - walked;
    for index in 0..walked {
        // At most 36 + 256 * 8: no overflow.
        let offset = u64::from(HEADER_LENGTH + index * root.entry_size());
        let table_address = match root {
            RootTable::Xsdt => read_u64(memory, root_address, offset)?,
            RootTable::Rsdt => u64::from(read_u32(memory, root_address, offset)?),
        };
        let table =
            if table_address == 0 { None } else { check_table(memory, table_address, None, HEADER_LENGTH).ok() };
        match table {
            Some(table) => {
                report.tables += 1;
                f(table.signature, table_address, table.length);
            }
            None => report.invalid_tables += 1,
        }
    }
    Ok(report)
}

/// Finds the first valid table with `signature`; returns its address and length.
pub fn find_table(
    memory: &impl PhysicalMemory,
    rsdp: &Rsdp,
    signature: [u8; 4],
) -> Result<Option<(u64, u32)>, AcpiError> {
    let mut found = None;
    for_each_table(memory, rsdp, |table_signature, address, length| {
        if table_signature == signature && found.is_none() {
            found = Some((address, length));
        }
    })?;
    Ok(found)
}

/// One processor the MADT lists as present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorEntry {
    /// Its local APIC ID (x2APIC ID for x2APIC entries).
    pub apic_id: u32,
    /// Its ACPI processor UID, matching the processor objects in the namespace.
    pub processor_uid: u32,
    /// Listed by an x2APIC entry (type 9) rather than a local APIC entry (type 0).
    pub x2apic: bool,
}

/// A MADT entry that stopped the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedEntry {
    /// Its offset from the start of the table.
    pub offset: u32,
    /// Its type byte (0 if not even that fits in the table).
    pub entry_type: u8,
    /// Its length byte (0 if not even that fits in the table).
    pub length: u8,
}

/// I/O APICs kept from the MADT; more are counted in
/// [`MadtSummary::io_apics_over_limit`].
pub const MAX_IO_APICS: usize = 8;
/// Interrupt source overrides kept from the MADT; more are counted in
/// [`MadtSummary::bad_overrides`].
pub const MAX_SOURCE_OVERRIDES: usize = 16;
/// ISA interrupts (IRQ 0-15) an override can name.
pub const ISA_INTERRUPTS: u8 = 16;

/// An I/O APIC (MADT entry type 1, section 5.2.12.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoApicEntry {
    /// Its I/O APIC ID.
    pub id: u8,
    /// The physical address of its registers.
    pub address: u32,
    /// The first global system interrupt (GSI) it serves.
    pub gsi_base: u32,
}

/// An interrupt's polarity (MPS INTI flags, table 5.26).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Polarity {
    /// As the bus says: active high for ISA.
    #[default]
    ConformsToBus,
    /// Active high.
    ActiveHigh,
    /// Active low.
    ActiveLow,
}

/// An interrupt's trigger mode (MPS INTI flags, table 5.26).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TriggerMode {
    /// As the bus says: edge for ISA.
    #[default]
    ConformsToBus,
    /// Edge-triggered.
    Edge,
    /// Level-triggered.
    Level,
}

/// An ISA interrupt wired to another GSI or with other flags (MADT entry
/// type 2, section 5.2.12.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceOverride {
    /// The ISA IRQ (bus-relative source).
    pub source: u8,
    /// The GSI it arrives on.
    pub gsi: u32,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: TriggerMode,
}

/// Where an ISA interrupt arrives and how it signals, after overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaRoute {
    /// The GSI.
    pub gsi: u32,
    /// Active low (else active high).
    pub active_low: bool,
    /// Level-triggered (else edge).
    pub level: bool,
}

/// What the MADT (section 5.2.12) says about interrupt controllers and processors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadtSummary {
    /// The local APIC's physical address (from the header, or the type 5 override).
    pub local_apic_address: u64,
    /// `processors[..processor_count]` are the enabled processors, in table order.
    pub processors: [ProcessorEntry; MAX_CPUS],
    /// Enabled processors listed (at most [`MAX_CPUS`]).
    pub processor_count: usize,
    /// Processor entries neither enabled nor online capable.
    pub disabled_processors: usize,
    /// Processors not enabled but online capable (MADT revision 5 and later): hot-pluggable, not present now.
    pub online_capable_processors: usize,
    /// Enabled processors beyond [`MAX_CPUS`], not listed.
    pub processors_over_limit: usize,
    /// Enabled entries repeating an APIC ID already listed (some firmware lists a CPU as both type 0 and type 9).
    pub duplicate_processors: usize,
    /// I/O APIC entries (type 1).
    pub io_apics: usize,
    /// `io_apic_entries[..io_apics.min(MAX_IO_APICS)]` are the I/O APICs, in table order.
    pub io_apic_entries: [IoApicEntry; MAX_IO_APICS],
    /// I/O APICs beyond [`MAX_IO_APICS`], not listed.
    pub io_apics_over_limit: usize,
    /// `overrides[..override_count]` are the valid interrupt source overrides.
    pub overrides: [SourceOverride; MAX_SOURCE_OVERRIDES],
    /// Valid overrides listed.
    pub override_count: usize,
    /// Overrides ignored: not for the ISA bus or an ISA IRQ, reserved flag
    /// values, or beyond [`MAX_SOURCE_OVERRIDES`].
    pub bad_overrides: usize,
    /// The machine also has the two 8259 PICs (flag `PCAT_COMPAT`), which the kernel should mask.
    pub has_8259: bool,
    /// The entry that stopped the walk: shorter than 2 bytes or than its
    /// type needs, or running past the end of the table. Entries before it
    /// were used.
    pub malformed_entry: Option<MalformedEntry>,
}

impl MadtSummary {
    /// The I/O APICs.
    pub fn io_apic_entries(&self) -> &[IoApicEntry] {
        self.io_apic_entries.get(..self.io_apics.min(MAX_IO_APICS)).unwrap_or(&self.io_apic_entries)
    }

    /// The valid interrupt source overrides.
    pub fn overrides(&self) -> &[SourceOverride] {
        self.overrides.get(..self.override_count).unwrap_or(&self.overrides)
    }

    /// Where ISA interrupt `irq` arrives: its override if there is one,
    /// else the GSI of the same number, edge-triggered and active high (the
    /// ISA bus's conventions).
    pub fn isa_interrupt(&self, irq: u8) -> IsaRoute {
        match self.overrides().iter().find(|o| o.source == irq) {
            Some(found) => IsaRoute {
                gsi: found.gsi,
                active_low: found.polarity == Polarity::ActiveLow,
                level: found.trigger == TriggerMode::Level,
            },
            None => IsaRoute { gsi: u32::from(irq), active_low: false, level: false },
        }
    }

    /// The I/O APIC serving `gsi` and the pin it arrives on: the one with
    /// the highest GSI base not above it (the caller checks the pin against
    /// the I/O APIC's own count of pins).
    pub fn io_apic_for(&self, gsi: u32) -> Option<(IoApicEntry, u32)> {
        self.io_apic_entries()
            .iter()
            .filter(|entry| entry.gsi_base <= gsi)
            .max_by_key(|entry| entry.gsi_base)
            .map(|entry| (*entry, gsi - entry.gsi_base))
    }

    fn add_override(&mut self, bus: u8, source: u8, gsi: u32, flags: u16) {
        // MPS INTI flags: bits 1:0 polarity, bits 3:2 trigger mode; 10b is
        // reserved in both.
        let polarity = match flags & 0b11 {
            0b00 => Some(Polarity::ConformsToBus),
            0b01 => Some(Polarity::ActiveHigh),
            0b11 => Some(Polarity::ActiveLow),
            _ => None,
        };
        let trigger = match (flags >> 2) & 0b11 {
            0b00 => Some(TriggerMode::ConformsToBus),
            0b01 => Some(TriggerMode::Edge),
            0b11 => Some(TriggerMode::Level),
            _ => None,
        };
        let (Some(polarity), Some(trigger)) = (polarity, trigger) else {
            self.bad_overrides += 1;
            return;
        };
        if bus != 0 || source >= ISA_INTERRUPTS || self.overrides().iter().any(|o| o.source == source) {
            self.bad_overrides += 1;
            return;
        }
        match self.overrides.get_mut(self.override_count) {
            Some(slot) => {
                *slot = SourceOverride { source, gsi, polarity, trigger };
                self.override_count += 1;
            }
            None => self.bad_overrides += 1,
        }
    }

    /// The enabled processors.
    pub fn processors(&self) -> &[ProcessorEntry] {
        self.processors.get(..self.processor_count).unwrap_or(&self.processors)
    }

    fn count_processor(&mut self, processor: ProcessorEntry, flags: u32, online_capable_defined: bool) {
        if flags & PROCESSOR_ENABLED != 0 {
            self.add_processor(processor);
        } else if online_capable_defined && flags & PROCESSOR_ONLINE_CAPABLE != 0 {
            self.online_capable_processors += 1;
        } else {
            self.disabled_processors += 1;
        }
    }

    fn add_processor(&mut self, processor: ProcessorEntry) {
        if self.processors().iter().any(|known| known.apic_id == processor.apic_id) {
            self.duplicate_processors += 1;
            return;
        }
        match self.processors.get_mut(self.processor_count) {
            Some(slot) => {
                *slot = processor;
                self.processor_count += 1;
            }
            None => self.processors_over_limit += 1,
        }
    }
}

/// Summarises the MADT (signature `"APIC"`) at `address`.
///
/// Local APIC (type 0) and x2APIC (type 9) entries are listed when enabled
/// (flags bit 0); those only online capable (bit 1, MADT revision 5 and
/// later) are counted apart, as they are not present yet. Type 5 overrides
/// the local APIC address; type 1 entries are counted as I/O APICs; other
/// types are skipped. A malformed entry stops the walk and is recorded in
/// [`MadtSummary::malformed_entry`]; an invalid table (signature, length,
/// checksum) is an error.
pub fn parse_madt(memory: &impl PhysicalMemory, address: u64) -> Result<MadtSummary, AcpiError> {
    let header = check_table(memory, address, Some(*b"APIC"), MADT_ENTRIES_OFFSET)?;
    let revision = read_u8(memory, address, HEADER_REVISION_OFFSET)?;
    let flags = read_u32(memory, address, MADT_FLAGS_OFFSET)?;
    let mut summary = MadtSummary {
        local_apic_address: u64::from(read_u32(memory, address, MADT_LOCAL_APIC_ADDRESS_OFFSET)?),
        processors: [ProcessorEntry::default(); MAX_CPUS],
        processor_count: 0,
        disabled_processors: 0,
        online_capable_processors: 0,
        processors_over_limit: 0,
        duplicate_processors: 0,
        io_apics: 0,
        io_apic_entries: [IoApicEntry::default(); MAX_IO_APICS],
        io_apics_over_limit: 0,
        overrides: [SourceOverride::default(); MAX_SOURCE_OVERRIDES],
        override_count: 0,
        bad_overrides: 0,
        has_8259: flags & MADT_PCAT_COMPAT != 0,
        malformed_entry: None,
    };
    let online_capable_defined = revision >= MADT_FIRST_ONLINE_CAPABLE_REVISION;

    // Invariant: offset < header.length, and each step adds the entry's
    // length, which is at least 2, so the walk ends.
    let mut offset = MADT_ENTRIES_OFFSET;
    while offset < header.length {
        let entry = address.checked_add(u64::from(offset)).ok_or(Unreadable { address, length: 0 })?;
        let remaining = header.length - offset;
        let mut malformed = MalformedEntry { offset, entry_type: 0, length: 0 };
        if remaining < u32::from(ENTRY_HEADER_LENGTH) {
            summary.malformed_entry = Some(malformed);
            break;
        }
        let entry_type = read_u8(memory, entry, 0)?;
        let length = read_u8(memory, entry, 1)?;
        malformed = MalformedEntry { offset, entry_type, length };
        let needed = match entry_type {
            ENTRY_LOCAL_APIC => ENTRY_LOCAL_APIC_LENGTH,
            ENTRY_IO_APIC => ENTRY_IO_APIC_LENGTH,
            ENTRY_LOCAL_APIC_ADDRESS_OVERRIDE => ENTRY_LOCAL_APIC_ADDRESS_OVERRIDE_LENGTH,
            ENTRY_LOCAL_X2APIC => ENTRY_LOCAL_X2APIC_LENGTH,
            ENTRY_INTERRUPT_SOURCE_OVERRIDE => ENTRY_INTERRUPT_SOURCE_OVERRIDE_LENGTH,
            _ => ENTRY_HEADER_LENGTH,
        };
        if length < needed || u32::from(length) > remaining {
            summary.malformed_entry = Some(malformed);
            break;
        }
        match entry_type {
            ENTRY_LOCAL_APIC => {
                let processor = ProcessorEntry {
                    processor_uid: read_u8(memory, entry, 2)?.into(),
                    apic_id: read_u8(memory, entry, 3)?.into(),
                    x2apic: false,
                };
                summary.count_processor(processor, read_u32(memory, entry, 4)?, online_capable_defined);
            }
            ENTRY_LOCAL_X2APIC => {
                let processor = ProcessorEntry {
                    apic_id: read_u32(memory, entry, 4)?,
                    processor_uid: read_u32(memory, entry, 12)?,
                    x2apic: true,
                };
                summary.count_processor(processor, read_u32(memory, entry, 8)?, online_capable_defined);
            }
            ENTRY_IO_APIC => {
                let io_apic = IoApicEntry {
                    id: read_u8(memory, entry, 2)?,
                    address: read_u32(memory, entry, 4)?,
                    gsi_base: read_u32(memory, entry, 8)?,
                };
                match summary.io_apic_entries.get_mut(summary.io_apics) {
                    Some(slot) => {
                        *slot = io_apic;
                        summary.io_apics += 1;
                    }
                    None => summary.io_apics_over_limit += 1,
                }
            }
            ENTRY_INTERRUPT_SOURCE_OVERRIDE => {
                let bus = read_u8(memory, entry, 2)?;
                let source = read_u8(memory, entry, 3)?;
                let gsi = read_u32(memory, entry, 4)?;
                let flags = read_u16(memory, entry, 8)?;
                summary.add_override(bus, source, gsi, flags);
            }
            ENTRY_LOCAL_APIC_ADDRESS_OVERRIDE => summary.local_apic_address = read_u64(memory, entry, 4)?,
            _ => {}
        }
        offset += u32::from(length);
    }
    Ok(summary)
}

/// Checks the table header at `address` (signature, length between
/// `minimum_length` and [`MAX_TABLE_LENGTH`], checksum); returns its length.
pub(crate) fn check_table_header(
    memory: &impl PhysicalMemory,
    address: u64,
    signature: [u8; 4],
    minimum_length: u32,
) -> Result<u32, AcpiError> {
    check_table(memory, address, Some(signature), minimum_length).map(|header| header.length)
}

/// The header fields of a checked table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableHeader {
    pub(crate) signature: [u8; 4],
    pub(crate) length: u32,
}

/// Reads the table header at `address` and verifies the signature (if
/// `expected`), that the length is between `minimum_length` and
/// [`MAX_TABLE_LENGTH`], and the checksum over that length.
pub(crate) fn check_table(
    memory: &impl PhysicalMemory,
    address: u64,
    expected: Option<[u8; 4]>,
    minimum_length: u32,
) -> Result<TableHeader, AcpiError> {
    let signature: [u8; 4] = read_bytes(memory, address, 0)?;
    if let Some(expected) = expected {
        if signature != expected {
            return Err(AcpiError::TableSignature { address, expected, found: signature });
        }
    }
    let length = read_u32(memory, address, HEADER_LENGTH_OFFSET)?;
    if !(minimum_length.max(HEADER_LENGTH)..=MAX_TABLE_LENGTH).contains(&length) {
        return Err(AcpiError::TableLength { address, signature, length });
    }
    if checksum(memory, address, length)? != 0 {
        return Err(AcpiError::TableChecksum { address, signature });
    }
    Ok(TableHeader { signature, length })
}

/// The byte sum of `length` bytes at `address`; 0 for a valid ACPI structure.
pub(crate) fn checksum(memory: &impl PhysicalMemory, address: u64, length: u32) -> Result<u8, Unreadable> {
    const PIECE: u32 = 64;
    let mut piece = [0u8; PIECE as usize];
    let mut sum = 0u8;
    let mut done = 0u32;
    while done < length {
        let size = (length - done).min(PIECE);
        let bytes = piece.get_mut(..size as usize).unwrap_or(&mut []);
        let bytes_address =
            address.checked_add(u64::from(done)).ok_or(Unreadable { address, length: length as usize })?;
        memory.read(bytes_address, bytes)?;
        sum = bytes.iter().fold(sum, |sum, &byte| sum.wrapping_add(byte));
        done += size;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_memory::{acpi_table, madt_bytes, rsdp_v1, rsdp_v2, FakeMemory};

    const BIOS_AREA_LENGTH: usize = (RSDP_SEARCH_END - RSDP_SEARCH_START) as usize;

    /// The BIOS area, zero-filled, with `rsdps` written at their offsets.
    fn bios_area(rsdps: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut area = vec![0; BIOS_AREA_LENGTH];
        for (offset, rsdp) in rsdps {
            area[*offset..offset + rsdp.len()].copy_from_slice(rsdp);
        }
        area
    }

    fn corrupt(mut bytes: Vec<u8>, index: usize) -> Vec<u8> {
        bytes[index] ^= 0x55;
        bytes
    }

    #[test]
    fn find_rsdp_in_finds_valid_v1_and_v2() {
        let area = bios_area(&[(0x10, rsdp_v1(0x7fe_0000)), (0x200, rsdp_v2(0x7fe_0000, 0x7fe_1000))]);
        assert_eq!(find_rsdp_in(&area), Some(0x10));
        let area = bios_area(&[(0x200, rsdp_v2(0x7fe_0000, 0x7fe_1000))]);
        assert_eq!(find_rsdp_in(&area), Some(0x200));
        assert_eq!(find_rsdp_in(&[]), None);
        assert_eq!(find_rsdp_in(b"RSD PTR "), None);
    }

    #[test]
    fn find_rsdp_in_skips_bad_checksums_and_misalignment() {
        let good = rsdp_v2(0x1000, 0x2000);
        let area = bios_area(&[
            // Bad ACPI 1.0 checksum.
            (0x0, corrupt(rsdp_v1(0x1000), 16)),
            // Good 1.0 checksum, bad extended checksum (byte 24 is outside the first 20).
            (0x40, corrupt(rsdp_v2(0x1000, 0x2000), 24)),
            // Valid but not on a 16-byte boundary.
            (0x88, good.clone()),
            (0x100, good),
        ]);
        assert_eq!(find_rsdp_in(&area), Some(0x100));
        // Truncated at the end of the slice.
        let area = bios_area(&[(BIOS_AREA_LENGTH - 32, rsdp_v2(1, 2)[..32].to_vec())]);
        assert_eq!(find_rsdp_in(&area), None);
    }

    #[test]
    fn scan_finds_the_rsdp_after_a_bad_one() {
        let memory = FakeMemory::new().with(
            RSDP_SEARCH_START,
            bios_area(&[(0x0, corrupt(rsdp_v1(0x1000), 8)), (0x1_f5e0, rsdp_v2(0x7fe_0000, 0x7fe_1000))]),
        );
        assert_eq!(scan_for_rsdp(&memory), Ok(RSDP_SEARCH_START + 0x1_f5e0));
    }

    #[test]
    fn scan_finds_an_rsdp_straddling_two_chunks() {
        let memory = FakeMemory::new().with(RSDP_SEARCH_START, bios_area(&[(0x3f0, rsdp_v2(0x1000, 0x2000))]));
        assert_eq!(scan_for_rsdp(&memory), Ok(RSDP_SEARCH_START + 0x3f0));
    }

    #[test]
    fn scan_reports_rejected_candidates_and_unreadable_areas() {
        let memory = FakeMemory::new().with(RSDP_SEARCH_START, bios_area(&[(0x100, corrupt(rsdp_v1(0x1000), 19))]));
        let error = scan_for_rsdp(&memory).unwrap_err();
        assert_eq!(error, AcpiError::RsdpNotFound { rejected: 1 });
        assert_eq!(error.to_string(), "no valid ACPI RSDP in 0xe0000..0x100000 (1 candidates rejected)");
        assert!(matches!(scan_for_rsdp(&FakeMemory::new()), Err(AcpiError::Unreadable(_))));
        // Only the upper half readable: still searched.
        let memory = FakeMemory::new().with(0xf_0000, bios_area(&[(0x40, rsdp_v1(0x1000))])[..0x1_0000].to_vec());
        assert_eq!(scan_for_rsdp(&memory), Ok(0xf_0040));
    }

    #[test]
    fn parse_rsdp_reads_both_revisions() {
        let memory =
            FakeMemory::new().with(0xf_0000, rsdp_v1(0x7fe_0000)).with(0xf_1000, rsdp_v2(0x7fe_0000, 0x7fe_1000));
        let v1 = parse_rsdp(&memory, 0xf_0000).unwrap();
        assert_eq!(v1, Rsdp { revision: 0, rsdt_address: 0x7fe_0000, xsdt_address: None, oem_id: *b"TOROVM" });
        let v2 = parse_rsdp(&memory, 0xf_1000).unwrap();
        assert_eq!(v2.revision, 2);
        assert_eq!(v2.xsdt_address, Some(0x7fe_1000));
    }

    #[test]
    fn parse_rsdp_rejects_bad_ones() {
        let mut long = rsdp_v2(1, 2);
        long[20..24].copy_from_slice(&5000u32.to_le_bytes());
        let memory = FakeMemory::new()
            .with(0x1000, corrupt(rsdp_v2(1, 2), 33))
            .with(0x2000, b"RSD PTX \0\0\0\0\0\0\0\0\0\0\0\0".to_vec())
            .with(0x3000, crate::test_memory::fix_checksum(long, 8, 20));
        assert_eq!(parse_rsdp(&memory, 0x1000), Err(AcpiError::RsdpChecksum { address: 0x1000, extended: true }));
        assert_eq!(parse_rsdp(&memory, 0x2000), Err(AcpiError::RsdpSignature { address: 0x2000 }));
        assert_eq!(parse_rsdp(&memory, 0x3000), Err(AcpiError::RsdpLength { address: 0x3000, length: 5000 }));
        assert!(matches!(parse_rsdp(&memory, 0x4000), Err(AcpiError::Unreadable(_))));
        assert_eq!(
            AcpiError::RsdpChecksum { address: 0x1000, extended: true }.to_string(),
            "ACPI RSDP at 0x1000 has a bad extended checksum"
        );
    }

    /// A QEMU-like set of tables: XSDT and RSDT both listing FACP, APIC and HPET.
    fn qemu_tables() -> (FakeMemory, Rsdp) {
        let madt = madt_bytes(1, 0xfee0_0000, 1, &[&[0, 8, 0, 0, 1, 0, 0, 0], &[0, 8, 1, 1, 1, 0, 0, 0]]);
        let tables = [
            (0x7fe_2000u64, acpi_table(b"FACP", 6, &[0; 80])),
            (0x7fe_3000, madt),
            (0x7fe_4000, acpi_table(b"HPET", 1, &[0; 20])),
        ];
        let xsdt_body: Vec<u8> = tables.iter().flat_map(|(address, _)| address.to_le_bytes()).collect();
        let rsdt_body: Vec<u8> = tables.iter().flat_map(|(address, _)| (*address as u32).to_le_bytes()).collect();
        let mut memory = FakeMemory::new()
            .with(0x7fe_0000, acpi_table(b"RSDT", 1, &rsdt_body))
            .with(0x7fe_1000, acpi_table(b"XSDT", 1, &xsdt_body));
        for (address, table) in tables {
            memory = memory.with(address, table);
        }
        let rsdp = Rsdp { revision: 2, rsdt_address: 0x7fe_0000, xsdt_address: Some(0x7fe_1000), oem_id: *b"TOROVM" };
        (memory, rsdp)
    }

    fn walk(memory: &FakeMemory, rsdp: &Rsdp) -> (Vec<(String, u64)>, TableWalkReport) {
        let mut seen = Vec::new();
        let report = for_each_table(memory, rsdp, |signature, address, length| {
            assert!(length >= 36);
            seen.push((String::from_utf8_lossy(&signature).into_owned(), address));
        })
        .unwrap();
        (seen, report)
    }

    #[test]
    fn walks_the_xsdt_when_valid() {
        let (memory, rsdp) = qemu_tables();
        let (seen, report) = walk(&memory, &rsdp);
        assert_eq!(seen, [("FACP".into(), 0x7fe_2000), ("APIC".into(), 0x7fe_3000), ("HPET".into(), 0x7fe_4000)]);
        assert!(report.used_xsdt && !report.xsdt_rejected);
        assert_eq!((report.tables, report.invalid_tables), (3, 0));
        assert_eq!(find_table(&memory, &rsdp, *b"APIC"), Ok(Some((0x7fe_3000, 44 + 16))));
        assert_eq!(find_table(&memory, &rsdp, *b"SRAT"), Ok(None));
    }

    #[test]
    fn falls_back_to_the_rsdt_when_the_xsdt_is_bad() {
        let (mut memory, rsdp) = qemu_tables();
        memory.write(0x7fe_1000 + 9, &[0x42]);
        let (seen, report) = walk(&memory, &rsdp);
        assert_eq!(seen.len(), 3);
        assert!(!report.used_xsdt && report.xsdt_rejected);
        // And with no XSDT at all (ACPI 1.0).
        let v1 = Rsdp { revision: 0, xsdt_address: None, ..rsdp };
        let (_, report) = walk(&memory, &v1);
        assert!(!report.used_xsdt && !report.xsdt_rejected);
    }

    #[test]
    fn invalid_tables_are_counted_not_fatal() {
        let (mut memory, rsdp) = qemu_tables();
        memory.write(0x7fe_4000 + 40, &[0x01]); // HPET checksum now off
        let (seen, report) = walk(&memory, &rsdp);
        assert_eq!(seen.len(), 2);
        assert_eq!(report.invalid_tables, 1);
        // Entries pointing at nothing or at 0.
        let body: Vec<u8> = [0u64, 0x5000_0000, 0x7fe_3000].iter().flat_map(|a| a.to_le_bytes()).collect();
        memory.insert(0x8000_0000, acpi_table(b"XSDT", 1, &body));
        let rsdp = Rsdp { xsdt_address: Some(0x8000_0000), ..rsdp };
        let (seen, report) = walk(&memory, &rsdp);
        assert_eq!(seen, [("APIC".into(), 0x7fe_3000)]);
        assert_eq!(report.invalid_tables, 2);
    }

    #[test]
    fn a_bad_root_table_is_an_error() {
        let (mut memory, rsdp) = qemu_tables();
        memory.write(0x7fe_0000 + 9, &[0x42]);
        let v1 = Rsdp { revision: 0, xsdt_address: None, ..rsdp };
        assert_eq!(
            for_each_table(&memory, &v1, |_, _, _| {}),
            Err(AcpiError::TableChecksum { address: 0x7fe_0000, signature: *b"RSDT" })
        );
        let nothing = Rsdp { rsdt_address: 0, ..v1 };
        assert_eq!(for_each_table(&memory, &nothing, |_, _, _| {}), Err(AcpiError::NoRootTable));
        let wrong = Rsdp { rsdt_address: 0x7fe_2000, ..v1 };
        let error = for_each_table(&memory, &wrong, |_, _, _| {}).unwrap_err();
        assert_eq!(error.to_string(), "ACPI table at 0x7fe2000 is \"FACP\", expected \"RSDT\"");
    }

    #[test]
    fn huge_table_lengths_are_refused_without_reading() {
        let mut table = acpi_table(b"RSDT", 1, &[]);
        table[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let memory = FakeMemory::new().with(0x1000, table);
        let rsdp = Rsdp { revision: 0, rsdt_address: 0x1000, xsdt_address: None, oem_id: [0; 6] };
        assert_eq!(
            for_each_table(&memory, &rsdp, |_, _, _| {}),
            Err(AcpiError::TableLength { address: 0x1000, signature: *b"RSDT", length: u32::MAX })
        );
    }

    #[test]
    fn madt_as_qemu_builds_it() {
        // Two enabled CPUs, one disabled (hot-pluggable slot before revision 5),
        // an I/O APIC, interrupt source overrides and local APIC NMIs.
        let madt = madt_bytes(
            1,
            0xfee0_0000,
            1,
            &[
                &[0, 8, 0, 0, 1, 0, 0, 0],
                &[0, 8, 1, 1, 1, 0, 0, 0],
                &[0, 8, 2, 2, 2, 0, 0, 0],
                &[1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
                &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
                &[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0],
                &[4, 6, 0xff, 0, 0, 1],
            ],
        );
        let memory = FakeMemory::new().with(0x7fe_3000, madt);
        let summary = parse_madt(&memory, 0x7fe_3000).unwrap();
        assert_eq!(summary.local_apic_address, 0xfee0_0000);
        assert_eq!(summary.processor_count, 2);
        assert_eq!(
            summary.processors(),
            &[
                ProcessorEntry { apic_id: 0, processor_uid: 0, x2apic: false },
                ProcessorEntry { apic_id: 1, processor_uid: 1, x2apic: false }
            ]
        );
        assert_eq!(summary.disabled_processors, 1);
        assert_eq!(summary.online_capable_processors, 0);
        assert_eq!(summary.io_apics, 1);
        assert!(summary.has_8259);
        assert_eq!(summary.malformed_entry, None);
        assert_eq!(summary.io_apic_entries(), &[IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 }]);
        assert_eq!(
            summary.overrides(),
            &[
                SourceOverride {
                    source: 0,
                    gsi: 2,
                    polarity: Polarity::ConformsToBus,
                    trigger: TriggerMode::ConformsToBus
                },
                SourceOverride { source: 9, gsi: 9, polarity: Polarity::ActiveHigh, trigger: TriggerMode::Level },
            ]
        );
        assert_eq!(summary.isa_interrupt(0), IsaRoute { gsi: 2, active_low: false, level: false });
        assert_eq!(summary.isa_interrupt(9), IsaRoute { gsi: 9, active_low: false, level: true });
        assert_eq!(summary.isa_interrupt(4), IsaRoute { gsi: 4, active_low: false, level: false });
        assert_eq!(summary.io_apic_for(9), Some((summary.io_apic_entries[0], 9)));
    }

    #[test]
    fn madt_garbled_overrides_and_io_apics() {
        let mut entries: Vec<Vec<u8>> = vec![
            vec![1, 12, 1, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
            vec![1, 12, 2, 0, 0x00, 0x10, 0xc0, 0xfe, 24, 0, 0, 0],
            // Reserved polarity (10b), reserved trigger (10b), not ISA
            // (bus 1), IRQ 16 (not ISA), a repeat of IRQ 5, then a valid
            // active-low level override of IRQ 5 to GSI 30.
            vec![2, 10, 0, 3, 3, 0, 0, 0, 0b0010, 0],
            vec![2, 10, 0, 4, 4, 0, 0, 0, 0b1000, 0],
            vec![2, 10, 1, 5, 5, 0, 0, 0, 0, 0],
            vec![2, 10, 0, 16, 16, 0, 0, 0, 0, 0],
            vec![2, 10, 0, 5, 30, 0, 0, 0, 0b1111, 0],
            vec![2, 10, 0, 5, 31, 0, 0, 0, 0b0101, 0],
        ];
        for id in 0..MAX_IO_APICS as u8 {
            entries.push(vec![1, 12, 10 + id, 0, 0, 0, 0xc1, 0xfe, 100 + id, 0, 0, 0]);
        }
        // A truncated override stops the walk.
        entries.push(vec![2, 8, 0, 6, 6, 0, 0, 0]);
        entries.push(vec![2, 10, 0, 7, 7, 0, 0, 0, 0, 0]);
        let entries: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let memory = FakeMemory::new().with(0x1000, madt_bytes(1, 0xfee0_0000, 1, &entries));
        let summary = parse_madt(&memory, 0x1000).unwrap();
        assert_eq!(summary.io_apics, MAX_IO_APICS);
        assert_eq!(summary.io_apics_over_limit, 2);
        assert_eq!(summary.io_apic_for(23).map(|(a, pin)| (a.id, pin)), Some((1, 23)));
        assert_eq!(summary.io_apic_for(30).map(|(a, pin)| (a.id, pin)), Some((2, 6)));
        assert_eq!(
            summary.overrides(),
            &[SourceOverride { source: 5, gsi: 30, polarity: Polarity::ActiveLow, trigger: TriggerMode::Level }]
        );
        assert_eq!(summary.bad_overrides, 5);
        assert_eq!(summary.isa_interrupt(5), IsaRoute { gsi: 30, active_low: true, level: true });
        assert_eq!(summary.isa_interrupt(3), IsaRoute { gsi: 3, active_low: false, level: false });
        assert!(matches!(summary.malformed_entry, Some(MalformedEntry { entry_type: 2, length: 8, .. })));
    }

    #[test]
    fn madt_parse_never_panics_on_flipped_bytes() {
        let madt = madt_bytes(
            1,
            0xfee0_0000,
            1,
            &[
                &[0, 8, 0, 0, 1, 0, 0, 0],
                &[1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
                &[2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
                &[2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0],
            ],
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5_000 {
            let mut garbled = madt.clone();
            for _ in 0..3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = 44 + (state as usize) % (garbled.len() - 44);
                garbled[index] = (state >> 32) as u8;
            }
            // Fix the checksum so the entries themselves are parsed.
            let sum = garbled.iter().fold(0u8, |sum, &b| sum.wrapping_add(b));
            garbled[9] = garbled[9].wrapping_sub(sum);
            let memory = FakeMemory::new().with(0x1000, garbled);
            let summary = parse_madt(&memory, 0x1000).unwrap();
            assert!(summary.override_count <= MAX_SOURCE_OVERRIDES && summary.io_apics <= MAX_IO_APICS);
            for irq in 0..ISA_INTERRUPTS {
                let _ = summary.isa_interrupt(irq);
            }
        }
    }

    #[test]
    fn madt_x2apic_online_capable_and_override() {
        let mut x2apic = vec![9, 16, 0, 0];
        x2apic.extend_from_slice(&300u32.to_le_bytes()); // x2APIC ID
        x2apic.extend_from_slice(&1u32.to_le_bytes()); // enabled
        x2apic.extend_from_slice(&7u32.to_le_bytes()); // UID
        let mut duplicate = x2apic.clone();
        duplicate[12] = 8;
        let mut override_entry = vec![5, 12, 0, 0];
        override_entry.extend_from_slice(&0xfee0_1000u64.to_le_bytes());
        let madt = madt_bytes(
            5,
            0xfee0_0000,
            0,
            &[
                &[0, 8, 0, 4, 1, 0, 0, 0],
                &x2apic,
                &duplicate,
                &[0, 8, 1, 5, 2, 0, 0, 0],
                &[0, 8, 2, 6, 0, 0, 0, 0],
                &override_entry,
            ],
        );
        let memory = FakeMemory::new().with(0x1000, madt);
        let summary = parse_madt(&memory, 0x1000).unwrap();
        assert_eq!(
            summary.processors(),
            &[
                ProcessorEntry { apic_id: 4, processor_uid: 0, x2apic: false },
                ProcessorEntry { apic_id: 300, processor_uid: 7, x2apic: true }
            ]
        );
        assert_eq!(summary.duplicate_processors, 1);
        assert_eq!(summary.online_capable_processors, 1);
        assert_eq!(summary.disabled_processors, 1);
        assert_eq!(summary.local_apic_address, 0xfee0_1000);
        assert!(!summary.has_8259);
    }

    #[test]
    fn madt_zero_length_entry_stops_the_walk() {
        let madt =
            madt_bytes(1, 0xfee0_0000, 1, &[&[0, 8, 0, 0, 1, 0, 0, 0], &[0, 0, 0, 0], &[0, 8, 1, 1, 1, 0, 0, 0]]);
        let memory = FakeMemory::new().with(0x1000, madt);
        let summary = parse_madt(&memory, 0x1000).unwrap();
        assert_eq!(summary.processor_count, 1);
        assert_eq!(summary.malformed_entry, Some(MalformedEntry { offset: 52, entry_type: 0, length: 0 }));
    }

    #[test]
    fn madt_entries_running_past_the_table_or_too_short_stop_the_walk() {
        let past_end = madt_bytes(1, 0xfee0_0000, 1, &[&[0, 8, 0, 0, 1, 0, 0, 0], &[1, 40, 0, 0]]);
        let one_byte_left = madt_bytes(1, 0xfee0_0000, 1, &[&[0, 8, 0, 0, 1, 0, 0, 0], &[7]]);
        let too_short = madt_bytes(1, 0xfee0_0000, 1, &[&[0, 4, 0, 0], &[0, 8, 1, 1, 1, 0, 0, 0]]);
        let memory = FakeMemory::new().with(0x1000, past_end).with(0x2000, one_byte_left).with(0x3000, too_short);
        let summary = parse_madt(&memory, 0x1000).unwrap();
        assert_eq!(summary.processor_count, 1);
        assert_eq!(summary.malformed_entry, Some(MalformedEntry { offset: 52, entry_type: 1, length: 40 }));
        let summary = parse_madt(&memory, 0x2000).unwrap();
        assert_eq!(summary.malformed_entry, Some(MalformedEntry { offset: 52, entry_type: 0, length: 0 }));
        let summary = parse_madt(&memory, 0x3000).unwrap();
        assert_eq!(summary.processor_count, 0);
        assert_eq!(summary.malformed_entry, Some(MalformedEntry { offset: 44, entry_type: 0, length: 4 }));
    }

    #[test]
    fn madt_with_more_cpus_than_fit() {
        let entries: Vec<Vec<u8>> = (0..300u32)
            .map(|id| {
                let mut entry = vec![9, 16, 0, 0];
                entry.extend_from_slice(&id.to_le_bytes());
                entry.extend_from_slice(&1u32.to_le_bytes());
                entry.extend_from_slice(&id.to_le_bytes());
                entry
            })
            .collect();
        let entries: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let memory = FakeMemory::new().with(0x1000, madt_bytes(4, 0xfee0_0000, 0, &entries));
        let summary = parse_madt(&memory, 0x1000).unwrap();
        assert_eq!(summary.processor_count, MAX_CPUS);
        assert_eq!(summary.processors_over_limit, 300 - MAX_CPUS);
        assert_eq!(summary.processors().last().unwrap().apic_id, MAX_CPUS as u32 - 1);
    }

    #[test]
    fn madt_that_is_not_a_madt() {
        let memory = FakeMemory::new()
            .with(0x1000, acpi_table(b"FACP", 1, &[0; 16]))
            .with(0x2000, acpi_table(b"APIC", 1, &[0; 4]))
            .with(0x3000, corrupt(madt_bytes(1, 0xfee0_0000, 1, &[]), 40));
        assert!(matches!(parse_madt(&memory, 0x1000), Err(AcpiError::TableSignature { .. })));
        assert_eq!(
            parse_madt(&memory, 0x2000),
            Err(AcpiError::TableLength { address: 0x2000, signature: *b"APIC", length: 40 })
        );
        assert_eq!(parse_madt(&memory, 0x3000), Err(AcpiError::TableChecksum { address: 0x3000, signature: *b"APIC" }));
    }
}

/// The MADT and MCFG as QEMU builds them, recorded from a guest
/// (`core/tests/fixtures/acpi/README.md`).
#[cfg(test)]
mod recorded_tests {
    use super::*;
    use crate::test_memory::FakeMemory;

    const Q35_4CPU_APIC: &[u8] = include_bytes!("../tests/fixtures/acpi/qemu-q35-4cpu-apic.bin");
    const Q35_4CPU_MCFG: &[u8] = include_bytes!("../tests/fixtures/acpi/qemu-q35-4cpu-mcfg.bin");

    /// Where the tables were in the guest (q35, 4 CPUs, 128 MiB).
    const APIC_AT: u64 = 0x7fe_226c;
    const MCFG_AT: u64 = 0x7fe_2334;

    fn q35() -> FakeMemory {
        FakeMemory::new().with(APIC_AT, Q35_4CPU_APIC.to_vec()).with(MCFG_AT, Q35_4CPU_MCFG.to_vec())
    }

    #[test]
    fn qemu_q35_madt_four_cpus_one_ioapic_five_overrides() {
        let madt = parse_madt(&q35(), APIC_AT).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert_eq!(madt.processor_count, 4);
        for (n, cpu) in madt.processors[..4].iter().enumerate() {
            assert_eq!((cpu.apic_id, cpu.processor_uid, cpu.x2apic), (n as u32, n as u32, false));
        }
        assert_eq!(
            (
                madt.disabled_processors,
                madt.online_capable_processors,
                madt.processors_over_limit,
                madt.duplicate_processors
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(madt.io_apics, 1);
        assert_eq!(madt.io_apic_entries[0], IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 });
        // The PIT's IRQ 0 on GSI 2 (flags 0: conforms to the ISA bus), and
        // the PCI interrupt lines 5, 9, 10, 11 level-triggered, active high.
        let overrides: Vec<_> =
            madt.overrides[..madt.override_count].iter().map(|o| (o.source, o.gsi, o.polarity, o.trigger)).collect();
        assert_eq!(
            overrides,
            [
                (0, 2, Polarity::ConformsToBus, TriggerMode::ConformsToBus),
                (5, 5, Polarity::ActiveHigh, TriggerMode::Level),
                (9, 9, Polarity::ActiveHigh, TriggerMode::Level),
                (10, 10, Polarity::ActiveHigh, TriggerMode::Level),
                (11, 11, Polarity::ActiveHigh, TriggerMode::Level),
            ]
        );
        assert_eq!(madt.bad_overrides, 0);
        assert!(madt.has_8259);
        assert_eq!(madt.malformed_entry, None);
    }

    #[test]
    fn qemu_q35_mcfg_one_ecam_region() {
        let mcfg = crate::pci::parse_mcfg(&q35(), MCFG_AT).unwrap();
        assert_eq!(
            mcfg.regions(),
            [crate::pci::EcamRegion { base: 0xb000_0000, segment: 0, start_bus: 0, end_bus: 255 }]
        );
        assert_eq!((mcfg.bad_entries, mcfg.trailing_bytes), (0, 0));
    }

    #[test]
    fn qemu_microvm_madt_two_cpus_two_ioapics_no_overrides() {
        const AT: u64 = 0xe_ff39;
        let table = include_bytes!("../tests/fixtures/acpi/qemu-microvm-2cpu-apic.bin");
        let madt = parse_madt(&FakeMemory::new().with(AT, table.to_vec()), AT).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert_eq!(madt.processor_count, 2);
        assert_eq!((madt.processors[0].apic_id, madt.processors[1].apic_id), (0, 1));
        // The second IOAPIC holds the virtio-mmio GSIs (24 and up).
        assert_eq!(madt.io_apics, 2);
        assert_eq!(
            madt.io_apic_entries[..2],
            [
                IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 },
                IoApicEntry { id: 1, address: 0xfec1_0000, gsi_base: 24 }
            ]
        );
        assert_eq!((madt.override_count, madt.bad_overrides), (0, 0));
        // PCAT_COMPAT is set even with `pic=off`.
        assert!(madt.has_8259);
        assert_eq!(madt.malformed_entry, None);
    }

    /// Firecracker v1.16.1, 2 vCPUs: MADT at 0xa003f, MCFG at 0xa0087.
    #[test]
    fn firecracker_madt_two_cpus_one_ioapic_no_overrides_no_8259() {
        const AT: u64 = 0xa_003f;
        let table = include_bytes!("../tests/fixtures/acpi/firecracker-2cpu-apic.bin");
        let madt = parse_madt(&FakeMemory::new().with(AT, table.to_vec()), AT).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        assert_eq!(madt.processor_count, 2);
        for (n, cpu) in madt.processors[..2].iter().enumerate() {
            assert_eq!((cpu.apic_id, cpu.processor_uid, cpu.x2apic), (n as u32, n as u32, false));
        }
        assert_eq!((madt.disabled_processors, madt.online_capable_processors, madt.duplicate_processors), (0, 0, 0));
        assert_eq!(madt.io_apics, 1);
        assert_eq!(madt.io_apic_entries[0], IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 });
        assert_eq!((madt.override_count, madt.bad_overrides), (0, 0));
        // No PCAT_COMPAT: Firecracker has no 8259 pair.
        assert!(!madt.has_8259);
        assert_eq!(madt.malformed_entry, None);
    }

    /// cloud-hypervisor v53.0, 2 vCPUs: MADT at 0xa13cb, MCFG at 0xa142d.
    #[test]
    fn cloud_hypervisor_madt_two_x2apic_cpus_one_ioapic_one_override() {
        const AT: u64 = 0xa_13cb;
        let table = include_bytes!("../tests/fixtures/acpi/cloud-hypervisor-2cpu-apic.bin");
        let madt = parse_madt(&FakeMemory::new().with(AT, table.to_vec()), AT).unwrap();
        assert_eq!(madt.local_apic_address, 0xfee0_0000);
        // Processor Local x2APIC entries (type 9), enabled and online capable.
        assert_eq!(madt.processor_count, 2);
        for (n, cpu) in madt.processors[..2].iter().enumerate() {
            assert_eq!((cpu.apic_id, cpu.processor_uid, cpu.x2apic), (n as u32, n as u32, true));
        }
        assert_eq!((madt.disabled_processors, madt.duplicate_processors), (0, 0));
        assert_eq!(madt.io_apics, 1);
        assert_eq!(madt.io_apic_entries[0], IoApicEntry { id: 0, address: 0xfec0_0000, gsi_base: 0 });
        // ISA IRQ 4 (the serial port) on GSI 4, conforming to the bus.
        let overrides: Vec<_> =
            madt.overrides[..madt.override_count].iter().map(|o| (o.source, o.gsi, o.polarity, o.trigger)).collect();
        assert_eq!(overrides, [(4, 4, Polarity::ConformsToBus, TriggerMode::ConformsToBus)]);
        assert_eq!(madt.bad_overrides, 0);
        assert!(!madt.has_8259);
        assert_eq!(madt.malformed_entry, None);
    }

    #[test]
    fn firecracker_and_cloud_hypervisor_mcfg_one_bus() {
        for (table, at, base) in [
            (&include_bytes!("../tests/fixtures/acpi/firecracker-2cpu-mcfg.bin")[..], 0xa_0087, 0xeec0_0000),
            (&include_bytes!("../tests/fixtures/acpi/cloud-hypervisor-2cpu-mcfg.bin")[..], 0xa_142d, 0xe800_0000),
        ] {
            let mcfg = crate::pci::parse_mcfg(&FakeMemory::new().with(at, table.to_vec()), at).unwrap();
            assert_eq!(mcfg.regions(), [crate::pci::EcamRegion { base, segment: 0, start_bus: 0, end_bus: 0 }]);
            assert_eq!((mcfg.bad_entries, mcfg.trailing_bytes), (0, 0));
        }
    }

    #[test]
    fn recorded_tables_with_a_flipped_byte_are_refused() {
        let mut apic = Q35_4CPU_APIC.to_vec();
        apic[50] ^= 0x40;
        let memory = FakeMemory::new().with(APIC_AT, apic);
        assert!(parse_madt(&memory, APIC_AT).is_err(), "checksum");
        let mut mcfg = Q35_4CPU_MCFG.to_vec();
        mcfg[50] ^= 0x40;
        let memory = FakeMemory::new().with(MCFG_AT, mcfg);
        assert!(crate::pci::parse_mcfg(&memory, MCFG_AT).is_err(), "checksum");
    }
}
