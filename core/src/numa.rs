//! NUMA topology from the ACPI SRAT: which proximity domain each CPU and each memory range belongs to.
//!
//! The System Resource Affinity Table (ACPI 6.5, section 5.2.16) lists, per
//! processor and per memory range, a *proximity domain*: the NUMA node. QEMU
//! emits it for `-numa node,...`; Firecracker and QEMU without `-numa` emit
//! none, and [`find_srat`] then gives `None`.
//!
//! The table is read through [`PhysicalMemory`] and checked (signature,
//! length, checksum) before any entry is trusted, the same way
//! [`acpi::parse_madt`](crate::acpi::parse_madt) checks the MADT. Entries are
//! walked with the MADT's rules: each step advances by the entry's own
//! length, which must be at least what its type needs and must stay inside
//! the table, so a corrupt table stops the walk with
//! [`NumaTopology::malformed_entry`] set, never a panic or an endless loop.
//!
//! Read: type 0 (Processor Local APIC/SAPIC Affinity, section 5.2.16.1),
//! type 1 (Memory Affinity, 5.2.16.2) and type 2 (Processor Local x2APIC
//! Affinity, 5.2.16.3). Entries whose `Enabled` flag is clear are counted and
//! ignored (older QEMU pads the table with zero-length disabled memory
//! entries). GICC, GIC ITS and Generic Initiator/Port entries (types 3 to 6)
//! are counted and skipped.
//!
//! The result, [`NumaTopology`], is a fixed-capacity summary of about
//! 3.6 KiB: no heap.

#![forbid(unsafe_code)]

use core::fmt;

use crate::acpi::{checksum, find_table, AcpiError, MalformedEntry, Rsdp, MAX_CPUS, MAX_TABLE_LENGTH};
use crate::physical_memory::{read_bytes, read_u32, read_u64, read_u8, PhysicalMemory, Unreadable};

/// The most memory ranges a [`NumaTopology`] lists (QEMU emits two or three per node).
pub const MAX_MEMORY_RANGES: usize = 64;

/// The SRAT's signature.
pub const SRAT_SIGNATURE: [u8; 4] = *b"SRAT";

/// System description table header (section 5.2.6): length, and field offsets.
const HEADER_LENGTH: u32 = 36;
const HEADER_LENGTH_OFFSET: u64 = 4;
const HEADER_REVISION_OFFSET: u64 = 8;

/// SRAT (table 5.69): the header, 4 reserved bytes (set to 1 for
/// compatibility) and 8 more reserved bytes, then the entries.
const SRAT_ENTRIES_OFFSET: u32 = 48;

/// Up to SRAT revision 1 (ACPI 2.0, and what QEMU still emits), proximity
/// domains were 8 bits: the upper bytes of the type 0 field were reserved,
/// and the upper bits of the type 1 field are ignored (as Linux does).
const SRAT_LAST_8_BIT_DOMAIN_REVISION: u8 = 1;
/// The low byte of a proximity domain.
const DOMAIN_LOW_BYTE: u32 = 0xff;

/// Every entry starts with its type and length bytes.
const ENTRY_HEADER_LENGTH: u8 = 2;

/// Type 0, Processor Local APIC/SAPIC Affinity (table 5.70): length and field offsets.
const ENTRY_LOCAL_APIC: u8 = 0;
const ENTRY_LOCAL_APIC_LENGTH: u8 = 16;
const LOCAL_APIC_DOMAIN_LOW_OFFSET: u64 = 2;
const LOCAL_APIC_ID_OFFSET: u64 = 3;
const LOCAL_APIC_FLAGS_OFFSET: u64 = 4;
/// Proximity domain bits 31:8, three bytes.
const LOCAL_APIC_DOMAIN_HIGH_OFFSET: u64 = 9;

/// Type 1, Memory Affinity (table 5.72): length and field offsets.
const ENTRY_MEMORY: u8 = 1;
const ENTRY_MEMORY_LENGTH: u8 = 40;
const MEMORY_DOMAIN_OFFSET: u64 = 2;
const MEMORY_BASE_OFFSET: u64 = 8;
const MEMORY_LENGTH_OFFSET: u64 = 16;
const MEMORY_FLAGS_OFFSET: u64 = 28;

/// Type 2, Processor Local x2APIC Affinity (table 5.74): length and field offsets.
const ENTRY_LOCAL_X2APIC: u8 = 2;
const ENTRY_LOCAL_X2APIC_LENGTH: u8 = 24;
const LOCAL_X2APIC_DOMAIN_OFFSET: u64 = 4;
const LOCAL_X2APIC_ID_OFFSET: u64 = 8;
const LOCAL_X2APIC_FLAGS_OFFSET: u64 = 12;

/// Flags bit 0 of all three entry types: the entry is in use.
const FLAG_ENABLED: u32 = 1 << 0;
/// Memory Affinity flags (table 5.73).
const MEMORY_HOT_PLUGGABLE: u32 = 1 << 1;
const MEMORY_NON_VOLATILE: u32 = 1 << 2;

/// What went wrong reading the SRAT, or building a [`NumaTopology`] by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumaError {
    /// The SRAT (or the root table leading to it) is unreadable, or fails
    /// its signature, length or checksum check.
    Table(AcpiError),
    /// All [`MAX_CPUS`] processor slots are taken.
    TooManyCpus,
    /// All [`MAX_MEMORY_RANGES`] memory range slots are taken.
    TooManyMemoryRanges,
    /// The processor is already listed.
    DuplicateCpu {
        /// Its APIC (or x2APIC) ID.
        apic_id: u32,
    },
    /// A memory range whose end would lie past the end of the address space.
    InvalidMemoryRange {
        /// The range's first byte.
        base: u64,
        /// The range's length in bytes.
        length: u64,
    },
}

impl From<AcpiError> for NumaError {
    fn from(error: AcpiError) -> Self {
        Self::Table(error)
    }
}

impl From<Unreadable> for NumaError {
    fn from(unreadable: Unreadable) -> Self {
        Self::Table(AcpiError::Unreadable(unreadable))
    }
}

impl fmt::Display for NumaError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Table(error) => write!(formatter, "SRAT: {error}"),
            Self::TooManyCpus => write!(formatter, "the NUMA topology is full ({MAX_CPUS} CPUs)"),
            Self::TooManyMemoryRanges => {
                write!(formatter, "the NUMA topology is full ({MAX_MEMORY_RANGES} memory ranges)")
            }
            Self::DuplicateCpu { apic_id } => {
                write!(formatter, "APIC ID {apic_id} is already in the NUMA topology")
            }
            Self::InvalidMemoryRange { base, length } => write!(
                formatter,
                "memory range at {base:#x} of {length:#x} bytes runs past the end of the address space"
            ),
        }
    }
}

/// A processor and its proximity domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuAffinity {
    /// Its local APIC ID (x2APIC ID for type 2 entries), as in the MADT.
    pub apic_id: u32,
    /// Its proximity domain.
    pub domain: u32,
}

/// A range of physical memory and its proximity domain: `base..end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryAffinity {
    /// The first byte of the range.
    pub base: u64,
    /// One past the last byte of the range.
    pub end: u64,
    /// Its proximity domain.
    pub domain: u32,
    /// The range may be hot-plugged (QEMU marks the whole device-memory
    /// window so; it is not RAM until a DIMM is plugged in, and the memory
    /// map says which part is).
    pub hot_pluggable: bool,
    /// The range is non-volatile memory.
    pub non_volatile: bool,
}

impl MemoryAffinity {
    /// Whether `address` lies inside the range.
    pub const fn contains(&self, address: u64) -> bool {
        self.base <= address && address < self.end
    }

    /// The size of the range in bytes.
    pub const fn size(&self) -> u64 {
        self.end.saturating_sub(self.base)
    }
}

/// Which proximity domain each processor and memory range belongs to, as the SRAT says.
///
/// Only enabled entries with a non-empty range are listed; the counters say
/// what else the table held. Lists are in table order. About 3.6 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaTopology {
    /// `cpus[..cpu_count]` are in use.
    cpus: [CpuAffinity; MAX_CPUS],
    /// Invariant: `cpu_count <= MAX_CPUS`.
    cpu_count: usize,
    /// `memory[..memory_count]` are in use; every range is non-empty.
    memory: [MemoryAffinity; MAX_MEMORY_RANGES],
    /// Invariant: `memory_count <= MAX_MEMORY_RANGES`.
    memory_count: usize,
    /// The SRAT's revision (0 when built by hand).
    pub revision: u8,
    /// Processor and memory entries whose `Enabled` flag is clear.
    pub disabled_entries: usize,
    /// Enabled memory entries of length 0.
    pub empty_memory_ranges: usize,
    /// Memory entries whose range runs past the end of the address space.
    pub invalid_memory_ranges: usize,
    /// Enabled processor entries repeating an APIC ID already listed.
    pub duplicate_cpus: usize,
    /// Enabled processors beyond [`MAX_CPUS`], not listed.
    pub cpus_over_limit: usize,
    /// Memory ranges beyond [`MAX_MEMORY_RANGES`], not listed.
    pub memory_ranges_over_limit: usize,
    /// Entries of other types (GICC, GIC ITS, Generic Initiator and Port), skipped.
    pub other_entries: usize,
    /// The entry that stopped the walk: shorter than 2 bytes or than its
    /// type needs, or running past the end of the table. Entries before it
    /// were used.
    pub malformed_entry: Option<MalformedEntry>,
}

impl Default for NumaTopology {
    fn default() -> Self {
        Self::new()
    }
}

impl NumaTopology {
    /// A topology listing nothing.
    pub const fn new() -> Self {
        Self {
            cpus: [CpuAffinity { apic_id: 0, domain: 0 }; MAX_CPUS],
            cpu_count: 0,
            memory: [MemoryAffinity { base: 0, end: 0, domain: 0, hot_pluggable: false, non_volatile: false };
                MAX_MEMORY_RANGES],
            memory_count: 0,
            revision: 0,
            disabled_entries: 0,
            empty_memory_ranges: 0,
            invalid_memory_ranges: 0,
            duplicate_cpus: 0,
            cpus_over_limit: 0,
            memory_ranges_over_limit: 0,
            other_entries: 0,
            malformed_entry: None,
        }
    }

    /// The processors listed, in table order.
    pub fn cpus(&self) -> &[CpuAffinity] {
        self.cpus.get(..self.cpu_count).unwrap_or(&[])
    }

    /// The memory ranges listed, in table order (which need not be address order).
    pub fn memory_ranges(&self) -> &[MemoryAffinity] {
        self.memory.get(..self.memory_count).unwrap_or(&[])
    }

    /// The proximity domain of the processor with this APIC (or x2APIC) ID.
    pub fn domain_of_cpu(&self, apic_id: u32) -> Option<u32> {
        self.cpus().iter().find(|cpu| cpu.apic_id == apic_id).map(|cpu| cpu.domain)
    }

    /// The proximity domain of the memory at `address`: that of the first
    /// listed range holding it (ranges should not overlap; if they do, the
    /// earlier entry wins).
    pub fn domain_of_address(&self, address: u64) -> Option<u32> {
        self.memory_ranges().iter().find(|range| range.contains(address)).map(|range| range.domain)
    }

    /// The proximity domain of all of `start..end`, if every byte of it
    /// belongs to that one domain (by [`NumaTopology::domain_of_address`]);
    /// `None` if any byte belongs to another domain or to none, or the range is empty.
    pub fn domain_of_range(&self, start: u64, end: u64) -> Option<u32> {
        let domain = self.domain_of_address(start)?;
        if end <= start {
            return None;
        }
        // Each step moves `covered` to the end of a range holding it, so
        // strictly forward: at most one step per listed range.
        let mut covered = start;
        while covered < end {
            let range = self.memory_ranges().iter().find(|range| range.contains(covered))?;
            if range.domain != domain {
                return None;
            }
            covered = range.end;
        }
        Some(domain)
    }

    /// The distinct proximity domains any processor or memory range names, in increasing order.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        let all = move || {
            self.cpus().iter().map(|cpu| cpu.domain).chain(self.memory_ranges().iter().map(|range| range.domain))
        };
        core::iter::successors(all().min(), move |&previous| all().filter(|&domain| domain > previous).min())
    }

    /// The bytes of memory listed in `domain` (hot-pluggable windows included).
    pub fn memory_in_domain(&self, domain: u32) -> u64 {
        self.memory_ranges()
            .iter()
            .filter(|range| range.domain == domain)
            .fold(0, |total, range| total.saturating_add(range.size()))
    }

    /// Lists the processor `apic_id` in `domain`.
    pub fn add_cpu(&mut self, apic_id: u32, domain: u32) -> Result<(), NumaError> {
        if self.domain_of_cpu(apic_id).is_some() {
            return Err(NumaError::DuplicateCpu { apic_id });
        }
        let slot = self.cpus.get_mut(self.cpu_count).ok_or(NumaError::TooManyCpus)?;
        *slot = CpuAffinity { apic_id, domain };
        self.cpu_count += 1;
        Ok(())
    }

    /// Lists the memory range `base .. base + length` in `domain`; an empty range is accepted and not listed.
    pub fn add_memory(
        &mut self,
        base: u64,
        length: u64,
        domain: u32,
        hot_pluggable: bool,
        non_volatile: bool,
    ) -> Result<(), NumaError> {
        let end = base.checked_add(length).ok_or(NumaError::InvalidMemoryRange { base, length })?;
        if length == 0 {
            return Ok(());
        }
        let slot = self.memory.get_mut(self.memory_count).ok_or(NumaError::TooManyMemoryRanges)?;
        *slot = MemoryAffinity { base, end, domain, hot_pluggable, non_volatile };
        self.memory_count += 1;
        Ok(())
    }

    /// Adds a processor entry from the table, counting what is not listed.
    fn record_cpu(&mut self, apic_id: u32, domain: u32, flags: u32) {
        if flags & FLAG_ENABLED == 0 {
            self.disabled_entries += 1;
            return;
        }
        match self.add_cpu(apic_id, domain) {
            Ok(()) => {}
            Err(NumaError::DuplicateCpu { .. }) => self.duplicate_cpus += 1,
            Err(_) => self.cpus_over_limit += 1,
        }
    }

    /// Adds a memory entry from the table, counting what is not listed.
    fn record_memory(&mut self, base: u64, length: u64, domain: u32, flags: u32) {
        if flags & FLAG_ENABLED == 0 {
            self.disabled_entries += 1;
            return;
        }
        if length == 0 {
            self.empty_memory_ranges += 1;
            return;
        }
        let hot_pluggable = flags & MEMORY_HOT_PLUGGABLE != 0;
        let non_volatile = flags & MEMORY_NON_VOLATILE != 0;
        match self.add_memory(base, length, domain, hot_pluggable, non_volatile) {
            Ok(()) => {}
            Err(NumaError::InvalidMemoryRange { .. }) => self.invalid_memory_ranges += 1,
            Err(_) => self.memory_ranges_over_limit += 1,
        }
    }
}

/// Finds the SRAT through the root table and parses it; `None` if the machine has none.
///
/// A root table that cannot be walked is an error; an SRAT that fails its
/// checks is skipped by the walk (see [`acpi::for_each_table`](crate::acpi::for_each_table)),
/// so it reads as "no SRAT".
pub fn find_srat(memory: &impl PhysicalMemory, rsdp: &Rsdp) -> Result<Option<NumaTopology>, NumaError> {
    match find_table(memory, rsdp, SRAT_SIGNATURE)? {
        Some((address, _length)) => parse_srat(memory, address).map(Some),
        None => Ok(None),
    }
}

/// Parses the SRAT at `address`.
///
/// An invalid table (unreadable, signature, length, checksum) is an error;
/// a malformed entry stops the walk and is recorded in
/// [`NumaTopology::malformed_entry`], keeping the entries before it.
pub fn parse_srat(memory: &impl PhysicalMemory, address: u64) -> Result<NumaTopology, NumaError> {
    let length = check_srat(memory, address)?;
    let mut topology = NumaTopology::new();
    topology.revision = read_u8(memory, address, HEADER_REVISION_OFFSET)?;
    let wide_domains = topology.revision > SRAT_LAST_8_BIT_DOMAIN_REVISION;

    // Invariant: offset < length, and each step adds the entry's length,
    // which is at least 2, so the walk ends.
    let mut offset = SRAT_ENTRIES_OFFSET;
    while offset < length {
        let entry = address.checked_add(u64::from(offset)).ok_or(Unreadable { address, length: 0 })?;
        let remaining = length - offset;
        if remaining < u32::from(ENTRY_HEADER_LENGTH) {
            topology.malformed_entry = Some(MalformedEntry { offset, entry_type: 0, length: 0 });
            break;
        }
        let entry_type = read_u8(memory, entry, 0)?;
        let entry_length = read_u8(memory, entry, 1)?;
        let needed = match entry_type {
            ENTRY_LOCAL_APIC => ENTRY_LOCAL_APIC_LENGTH,
            ENTRY_MEMORY => ENTRY_MEMORY_LENGTH,
            ENTRY_LOCAL_X2APIC => ENTRY_LOCAL_X2APIC_LENGTH,
            _ => ENTRY_HEADER_LENGTH,
        };
        if entry_length < needed || u32::from(entry_length) > remaining {
            topology.malformed_entry = Some(MalformedEntry { offset, entry_type, length: entry_length });
            break;
        }
        match entry_type {
            ENTRY_LOCAL_APIC => {
                let low = u32::from(read_u8(memory, entry, LOCAL_APIC_DOMAIN_LOW_OFFSET)?);
                let [high_0, high_1, high_2] = read_bytes::<3>(memory, entry, LOCAL_APIC_DOMAIN_HIGH_OFFSET)?;
                let high = u32::from_le_bytes([high_0, high_1, high_2, 0]);
                let domain = if wide_domains { low | high << 8 } else { low };
                topology.record_cpu(
                    u32::from(read_u8(memory, entry, LOCAL_APIC_ID_OFFSET)?),
                    domain,
                    read_u32(memory, entry, LOCAL_APIC_FLAGS_OFFSET)?,
                );
            }
            ENTRY_MEMORY => {
                let domain = read_u32(memory, entry, MEMORY_DOMAIN_OFFSET)?;
                let domain = if wide_domains { domain } else { domain & DOMAIN_LOW_BYTE };
                topology.record_memory(
                    read_u64(memory, entry, MEMORY_BASE_OFFSET)?,
                    read_u64(memory, entry, MEMORY_LENGTH_OFFSET)?,
                    domain,
                    read_u32(memory, entry, MEMORY_FLAGS_OFFSET)?,
                );
            }
            ENTRY_LOCAL_X2APIC => topology.record_cpu(
                read_u32(memory, entry, LOCAL_X2APIC_ID_OFFSET)?,
                read_u32(memory, entry, LOCAL_X2APIC_DOMAIN_OFFSET)?,
                read_u32(memory, entry, LOCAL_X2APIC_FLAGS_OFFSET)?,
            ),
            _ => topology.other_entries += 1,
        }
        offset += u32::from(entry_length);
    }
    Ok(topology)
}

/// Checks the SRAT's signature, its length (at least the fixed fields, at
/// most [`MAX_TABLE_LENGTH`]) and its checksum; returns the length.
///
/// (The same checks `acpi` applies to every table, repeated here because
/// that module keeps its checker private.)
fn check_srat(memory: &impl PhysicalMemory, address: u64) -> Result<u32, NumaError> {
    let signature: [u8; 4] = read_bytes(memory, address, 0)?;
    if signature != SRAT_SIGNATURE {
        return Err(AcpiError::TableSignature { address, expected: SRAT_SIGNATURE, found: signature }.into());
    }
    let length = read_u32(memory, address, HEADER_LENGTH_OFFSET)?;
    if !(SRAT_ENTRIES_OFFSET..=MAX_TABLE_LENGTH).contains(&length) {
        return Err(AcpiError::TableLength { address, signature, length }.into());
    }
    if checksum(memory, address, length)? != 0 {
        return Err(AcpiError::TableChecksum { address, signature }.into());
    }
    Ok(length)
}

// The header length is what the SRAT's fixed fields extend.
const _: () = assert!(SRAT_ENTRIES_OFFSET == HEADER_LENGTH + 12);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_memory::{acpi_table, rsdp_v2, FakeMemory};

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    /// A type 0 entry, laid out by hand (table 5.70).
    fn local_apic(apic_id: u8, domain: u32, flags: u32) -> Vec<u8> {
        let domain = domain.to_le_bytes();
        let mut entry = vec![0, 16, domain[0], apic_id];
        entry.extend_from_slice(&flags.to_le_bytes()); // 4 flags
        entry.push(0); // 8 local SAPIC EID
        entry.extend_from_slice(&domain[1..4]); // 9 proximity domain [31:8]
        entry.extend_from_slice(&0u32.to_le_bytes()); // 12 clock domain
        assert_eq!(entry.len(), 16);
        entry
    }

    /// A type 1 entry (table 5.72).
    fn memory_entry(domain: u32, base: u64, length: u64, flags: u32) -> Vec<u8> {
        let mut entry = vec![1, 40];
        entry.extend_from_slice(&domain.to_le_bytes()); // 2
        entry.extend_from_slice(&[0, 0]); // 6 reserved
        entry.extend_from_slice(&base.to_le_bytes()); // 8 base low, high
        entry.extend_from_slice(&length.to_le_bytes()); // 16 length low, high
        entry.extend_from_slice(&0u32.to_le_bytes()); // 24 reserved
        entry.extend_from_slice(&flags.to_le_bytes()); // 28 flags
        entry.extend_from_slice(&0u64.to_le_bytes()); // 32 reserved
        assert_eq!(entry.len(), 40);
        entry
    }

    /// A type 2 entry (table 5.74).
    fn x2apic_entry(x2apic_id: u32, domain: u32, flags: u32) -> Vec<u8> {
        let mut entry = vec![2, 24, 0, 0];
        entry.extend_from_slice(&domain.to_le_bytes()); // 4
        entry.extend_from_slice(&x2apic_id.to_le_bytes()); // 8
        entry.extend_from_slice(&flags.to_le_bytes()); // 12
        entry.extend_from_slice(&0u32.to_le_bytes()); // 16 clock domain
        entry.extend_from_slice(&0u32.to_le_bytes()); // 20 reserved
        assert_eq!(entry.len(), 24);
        entry
    }

    /// An SRAT: header, the reserved 1 and 8 zero bytes, then the entries.
    fn srat(revision: u8, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        for entry in entries {
            body.extend_from_slice(entry);
        }
        acpi_table(b"SRAT", revision, &body)
    }

    /// The SRAT QEMU builds for 128 MiB and
    /// `-numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1`:
    /// CPUs, then 0..640K and 1M..64M on node 0, 64M..128M on node 1, and
    /// (older QEMU) a zero-length disabled entry padding the list.
    fn qemu_two_node_srat() -> Vec<u8> {
        srat(
            1,
            &[
                local_apic(0, 0, 1),
                local_apic(1, 0, 1),
                local_apic(2, 1, 1),
                local_apic(3, 1, 1),
                memory_entry(0, 0, 640 * KIB, 1),
                memory_entry(0, MIB, 63 * MIB, 1),
                memory_entry(1, 64 * MIB, 64 * MIB, 1),
                memory_entry(0, 0, 0, 0),
            ],
        )
    }

    fn parse(table: Vec<u8>) -> Result<NumaTopology, NumaError> {
        parse_srat(&FakeMemory::new().with(0x7fe_5000, table), 0x7fe_5000)
    }

    #[test]
    fn srat_as_qemu_builds_it_for_two_nodes() {
        let topology = parse(qemu_two_node_srat()).unwrap();
        assert_eq!(topology.revision, 1);
        assert_eq!(
            topology.cpus(),
            &[
                CpuAffinity { apic_id: 0, domain: 0 },
                CpuAffinity { apic_id: 1, domain: 0 },
                CpuAffinity { apic_id: 2, domain: 1 },
                CpuAffinity { apic_id: 3, domain: 1 },
            ]
        );
        let ranges: Vec<_> =
            topology.memory_ranges().iter().map(|range| (range.base, range.end, range.domain)).collect();
        assert_eq!(ranges, [(0, 640 * KIB, 0), (MIB, 64 * MIB, 0), (64 * MIB, 128 * MIB, 1)]);
        assert_eq!(topology.disabled_entries, 1);
        assert_eq!(topology.malformed_entry, None);
        assert_eq!(topology.domains().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(topology.domain_of_cpu(2), Some(1));
        assert_eq!(topology.domain_of_cpu(4), None);
        assert_eq!(topology.domain_of_address(0x9_f000), Some(0));
        assert_eq!(topology.domain_of_address(0xa_0000), None);
        assert_eq!(topology.domain_of_address(64 * MIB), Some(1));
        assert_eq!(topology.domain_of_address(128 * MIB), None);
        assert_eq!(topology.domain_of_range(2 * MIB, 64 * MIB), Some(0));
        assert_eq!(topology.domain_of_range(2 * MIB, 64 * MIB + 1), None);
        assert_eq!(topology.domain_of_range(0, 2 * MIB), None); // the 640K..1M hole
        assert_eq!(topology.domain_of_range(5 * MIB, 5 * MIB), None);
        assert_eq!(topology.memory_in_domain(0), 640 * KIB + 63 * MIB);
    }

    #[test]
    fn x2apic_entries_wide_domains_and_flags() {
        let table = srat(
            3,
            &[
                local_apic(1, 0x0012_3456, 1),
                x2apic_entry(300, 7, 1),
                x2apic_entry(301, 7, 0),                                     // disabled
                memory_entry(0x0100_0002, 0, 16 * MIB, 1 | 2),               // hot-pluggable
                memory_entry(7, 16 * MIB, 16 * MIB, 1 | 4),                  // non-volatile
                memory_entry(7, 32 * MIB, 0, 1),                             // enabled but empty
                vec![3, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // GICC
            ],
        );
        let topology = parse(table).unwrap();
        assert_eq!(topology.domain_of_cpu(1), Some(0x0012_3456));
        assert_eq!(topology.domain_of_cpu(300), Some(7));
        assert_eq!(topology.domain_of_cpu(301), None);
        let ranges = topology.memory_ranges();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].domain, 0x0100_0002);
        assert!(ranges[0].hot_pluggable && !ranges[0].non_volatile);
        assert!(!ranges[1].hot_pluggable && ranges[1].non_volatile);
        assert_eq!(topology.disabled_entries, 1);
        assert_eq!(topology.empty_memory_ranges, 1);
        assert_eq!(topology.other_entries, 1);
        assert_eq!(topology.domains().collect::<Vec<_>>(), [7, 0x0012_3456, 0x0100_0002]);
    }

    #[test]
    fn revision_1_domains_are_8_bits() {
        // Bits above 7 are reserved in revision 1: garbage there is ignored.
        let table = srat(1, &[local_apic(1, 0x0012_3405, 1), memory_entry(0xffff_ff05, 0, 16 * MIB, 1)]);
        let topology = parse(table).unwrap();
        assert_eq!(topology.domain_of_cpu(1), Some(5));
        assert_eq!(topology.memory_ranges()[0].domain, 5);
    }

    #[test]
    fn duplicates_and_bad_ranges_are_counted() {
        let table = srat(
            3,
            &[
                local_apic(5, 0, 1),
                x2apic_entry(5, 1, 1),
                memory_entry(0, u64::MAX - 4095, 8192, 1),
                memory_entry(0, u64::MAX - 4095, 4095, 1),
            ],
        );
        let topology = parse(table).unwrap();
        assert_eq!(topology.cpus(), &[CpuAffinity { apic_id: 5, domain: 0 }]);
        assert_eq!(topology.duplicate_cpus, 1);
        assert_eq!(topology.invalid_memory_ranges, 1);
        assert_eq!(topology.memory_ranges()[0].end, u64::MAX);
    }

    #[test]
    fn more_entries_than_fit_are_counted() {
        let mut entries: Vec<Vec<u8>> = (0..300).map(|id| x2apic_entry(id, id % 4, 1)).collect();
        entries.extend((0..70u64).map(|index| memory_entry(0, index * MIB, MIB, 1)));
        let topology = parse(srat(3, &entries)).unwrap();
        assert_eq!(topology.cpus().len(), MAX_CPUS);
        assert_eq!(topology.cpus_over_limit, 300 - MAX_CPUS);
        assert_eq!(topology.memory_ranges().len(), MAX_MEMORY_RANGES);
        assert_eq!(topology.memory_ranges_over_limit, 70 - MAX_MEMORY_RANGES);
        assert_eq!(topology.domains().collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn invalid_tables_are_errors() {
        let mut bad_checksum = qemu_two_node_srat();
        bad_checksum[60] ^= 0x40;
        assert_eq!(
            parse(bad_checksum),
            Err(NumaError::Table(AcpiError::TableChecksum { address: 0x7fe_5000, signature: *b"SRAT" }))
        );
        assert!(matches!(
            parse(acpi_table(b"APIC", 1, &[0; 12])),
            Err(NumaError::Table(AcpiError::TableSignature { .. }))
        ));
        // Shorter than the 48 bytes of fixed fields.
        assert_eq!(
            parse(acpi_table(b"SRAT", 1, &[1, 0, 0, 0])),
            Err(NumaError::Table(AcpiError::TableLength { address: 0x7fe_5000, signature: *b"SRAT", length: 40 }))
        );
        // A length field promising more than memory holds: truncated.
        let mut truncated = qemu_two_node_srat();
        truncated.truncate(100);
        assert!(matches!(parse(truncated), Err(NumaError::Table(AcpiError::Unreadable(_)))));
        let mut huge = qemu_two_node_srat();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(huge), Err(NumaError::Table(AcpiError::TableLength { length: u32::MAX, .. }))));
        // A table at the very end of the address space.
        assert!(parse_srat(&FakeMemory::new(), u64::MAX - 2).is_err());
    }

    #[test]
    fn zero_length_entry_stops_the_walk() {
        let table = srat(1, &[local_apic(0, 0, 1), vec![1, 0, 0, 0], local_apic(1, 0, 1)]);
        let topology = parse(table).unwrap();
        assert_eq!(topology.cpus().len(), 1);
        assert_eq!(topology.malformed_entry, Some(MalformedEntry { offset: 64, entry_type: 1, length: 0 }));
    }

    #[test]
    fn entries_past_the_end_or_too_short_stop_the_walk() {
        let past_end = srat(1, &[local_apic(0, 0, 1), vec![1, 40, 0, 0]]);
        let topology = parse(past_end).unwrap();
        assert_eq!(topology.cpus().len(), 1);
        assert_eq!(topology.malformed_entry, Some(MalformedEntry { offset: 64, entry_type: 1, length: 40 }));
        let one_byte_left = srat(1, &[local_apic(0, 0, 1), vec![9]]);
        assert_eq!(
            parse(one_byte_left).unwrap().malformed_entry,
            Some(MalformedEntry { offset: 64, entry_type: 0, length: 0 })
        );
        let mut short_memory = memory_entry(0, 0, MIB, 1);
        short_memory[1] = 24;
        short_memory.truncate(24);
        let topology = parse(srat(1, &[short_memory, local_apic(0, 0, 1)])).unwrap();
        assert!(topology.cpus().is_empty() && topology.memory_ranges().is_empty());
        assert_eq!(topology.malformed_entry, Some(MalformedEntry { offset: 48, entry_type: 1, length: 24 }));
    }

    #[test]
    fn find_srat_through_the_xsdt() {
        let xsdt_body: Vec<u8> = [0x7fe_2000u64, 0x7fe_5000].iter().flat_map(|address| address.to_le_bytes()).collect();
        let mut memory = FakeMemory::new()
            .with(0xf_0000, rsdp_v2(0, 0x7fe_1000))
            .with(0x7fe_1000, acpi_table(b"XSDT", 1, &xsdt_body))
            .with(0x7fe_2000, acpi_table(b"FACP", 6, &[0; 80]));
        let rsdp = crate::acpi::parse_rsdp(&memory, 0xf_0000).unwrap();
        assert_eq!(find_srat(&memory, &rsdp), Ok(None));
        memory.insert(0x7fe_5000, qemu_two_node_srat());
        let topology = find_srat(&memory, &rsdp).unwrap().unwrap();
        assert_eq!(topology.cpus().len(), 4);
    }

    #[test]
    fn building_by_hand() {
        let mut topology = NumaTopology::new();
        assert_eq!(topology.domains().next(), None);
        topology.add_cpu(0, 3).unwrap();
        assert_eq!(topology.add_cpu(0, 4), Err(NumaError::DuplicateCpu { apic_id: 0 }));
        topology.add_memory(0, 0, 9, false, false).unwrap();
        assert!(topology.memory_ranges().is_empty());
        assert_eq!(
            topology.add_memory(u64::MAX, 2, 0, false, false),
            Err(NumaError::InvalidMemoryRange { base: u64::MAX, length: 2 })
        );
        for index in 0..MAX_MEMORY_RANGES as u64 {
            topology.add_memory(index * MIB, MIB, 1, false, false).unwrap();
        }
        assert_eq!(topology.add_memory(0, 1, 1, false, false), Err(NumaError::TooManyMemoryRanges));
        for id in 1..MAX_CPUS as u32 {
            topology.add_cpu(id, 0).unwrap();
        }
        assert_eq!(topology.add_cpu(1000, 0), Err(NumaError::TooManyCpus));
        assert_eq!(topology.domains().collect::<Vec<_>>(), [0, 1, 3]);
    }

    #[test]
    fn errors_say_what_happened() {
        assert_eq!(
            NumaError::Table(AcpiError::TableChecksum { address: 0x1000, signature: *b"SRAT" }).to_string(),
            "SRAT: ACPI table \"SRAT\" at 0x1000 has a bad checksum"
        );
        assert_eq!(NumaError::DuplicateCpu { apic_id: 3 }.to_string(), "APIC ID 3 is already in the NUMA topology");
        assert_eq!(
            NumaError::InvalidMemoryRange { base: 0x1000, length: 0x20 }.to_string(),
            "memory range at 0x1000 of 0x20 bytes runs past the end of the address space"
        );
        assert_eq!(NumaError::TooManyCpus.to_string(), "the NUMA topology is full (256 CPUs)");
        assert_eq!(NumaError::TooManyMemoryRanges.to_string(), "the NUMA topology is full (64 memory ranges)");
    }

    #[test]
    fn topology_stays_small() {
        assert!(core::mem::size_of::<NumaTopology>() <= 3800);
    }
}
