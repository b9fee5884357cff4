//! The Xen PVH boot protocol's `hvm_start_info`: what QEMU, Firecracker and Xen hand the kernel at entry.
//!
//! Layout from Xen's `xen/include/public/arch-x86/hvm/start_info.h`, all
//! fields little-endian:
//!
//! | offset | field            | since   |
//! |--------|------------------|---------|
//! | 0      | `magic` (u32)    | 0       |
//! | 4      | `version` (u32)  | 0       |
//! | 8      | `flags` (u32)    | 0       |
//! | 12     | `nr_modules`     | 0       |
//! | 16     | `modlist_paddr`  | 0       |
//! | 24     | `cmdline_paddr`  | 0       |
//! | 32     | `rsdp_paddr`     | 0       |
//! | 40     | `memmap_paddr`   | 1       |
//! | 48     | `memmap_entries` | 1       |
//! | 52     | `reserved`       | 1       |
//!
//! A memory map entry (`hvm_memmap_table_entry`) is 24 bytes: `addr` u64,
//! `size` u64, `type` u32 (e820 numbering), `reserved` u32.
//!
//! Every address here comes from the VMM, so each is read through
//! [`PhysicalMemory`], which may refuse it.

use core::fmt;

use crate::memory_map::{MemoryMap, RegionKind};
use crate::physical_memory::{read_bytes, read_u32, read_u64, read_u8, SliceMemory};
pub use crate::physical_memory::{PhysicalMemory, Unreadable};

/// The value of `hvm_start_info.magic` ("xEn3" with the top bit set).
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// The most memory map entries read; beyond it the count is taken as corrupt
/// (QEMU and Firecracker pass fewer than a dozen, Xen at most 128).
pub const MAX_START_INFO_MEMORY_MAP_ENTRIES: u32 = 1024;

/// `hvm_start_info` field offsets, in bytes.
const MAGIC_OFFSET: u64 = 0;
const VERSION_OFFSET: u64 = 4;
const FLAGS_OFFSET: u64 = 8;
const COMMAND_LINE_OFFSET: u64 = 24;
const RSDP_OFFSET: u64 = 32;
const MEMORY_MAP_OFFSET: u64 = 40;
const MEMORY_MAP_ENTRIES_OFFSET: u64 = 48;

/// The first `hvm_start_info` version with `memmap_paddr` and `memmap_entries`.
const FIRST_VERSION_WITH_MEMORY_MAP: u32 = 1;

/// `hvm_memmap_table_entry`: size and field offsets, in bytes.
const MEMORY_MAP_ENTRY_SIZE: u64 = 24;
const ENTRY_ADDRESS_OFFSET: u64 = 0;
const ENTRY_SIZE_OFFSET: u64 = 8;
const ENTRY_TYPE_OFFSET: u64 = 16;

/// The fields of `hvm_start_info` the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    /// `version`: 0 has no memory map; 1 added it. Later versions are read as version 1.
    pub version: u32,
    /// `flags` (bit 0: the guest is the hardware domain, Xen only).
    pub flags: u32,
    /// `cmdline_paddr`: the NUL-terminated command line, 0 if there is none.
    pub command_line_address: u64,
    /// `rsdp_paddr`: the ACPI RSDP, 0 if the VMM left it to be searched for (Firecracker, microvm).
    pub rsdp_address: u64,
    /// `memmap_paddr`: the memory map, 0 for version 0.
    pub memory_map_address: u64,
    /// `memmap_entries`: entries in the memory map, 0 for version 0.
    pub memory_map_entries: u32,
}

impl StartInfo {
    /// The RSDP address, if the VMM passed one.
    pub const fn rsdp(&self) -> Option<u64> {
        if self.rsdp_address == 0 {
            None
        } else {
            Some(self.rsdp_address)
        }
    }
}

/// What went wrong reading `hvm_start_info` or what it points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// The structure does not start with [`START_INFO_MAGIC`]: the kernel
    /// was not entered through PVH, or the address is wrong.
    WrongMagic {
        /// The value found where the magic should be.
        found: u32,
    },
    /// The structure could not be read, or the first memory map entry or
    /// the first command line byte it points to.
    Unreadable(Unreadable),
    /// There is no memory map: the structure is version 0, or declares zero
    /// entries or a map at address 0.
    NoMemoryMap,
}

impl From<Unreadable> for StartInfoError {
    fn from(unreadable: Unreadable) -> Self {
        Self::Unreadable(unreadable)
    }
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongMagic { found } => {
                write!(formatter, "PVH start info has magic {found:#010x}, expected {START_INFO_MAGIC:#010x}")
            }
            Self::Unreadable(unreadable) => write!(formatter, "PVH start info: {unreadable}"),
            Self::NoMemoryMap => {
                formatter.write_str("PVH start info carries no memory map (version 0, or zero entries)")
            }
        }
    }
}

/// What [`read_memory_map`] did, for the kernel to log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// `memmap_entries` as the VMM wrote it.
    pub entries_declared: u32,
    /// Entries read and added to the map.
    pub entries_stored: usize,
    /// Entries read but dropped because the map was full.
    pub entries_dropped: usize,
    /// Declared entries not read because the count is above
    /// [`MAX_START_INFO_MEMORY_MAP_ENTRIES`]; non-zero means the count is corrupt.
    pub entries_over_limit: u32,
    /// Set when an entry after the first could not be read: reading
    /// stopped there, and the entries before it were kept.
    pub stopped_at: Option<Unreadable>,
}

impl ReadReport {
    /// Whether every declared entry was read and stored.
    pub const fn is_complete(&self) -> bool {
        self.entries_dropped == 0 && self.entries_over_limit == 0 && self.stopped_at.is_none()
    }
}

/// Reads the `hvm_start_info` at `address`.
///
/// Version 0 is accepted (its memory map fields read as 0, and
/// [`read_memory_map`] then reports [`StartInfoError::NoMemoryMap`]), so the
/// command line can still be read. Versions above 1 are read as version 1,
/// whose fields they keep.
pub fn parse_start_info(memory: &impl PhysicalMemory, address: u64) -> Result<StartInfo, StartInfoError> {
    let magic = read_u32(memory, address, MAGIC_OFFSET)?;
    if magic != START_INFO_MAGIC {
        return Err(StartInfoError::WrongMagic { found: magic });
    }
    let version = read_u32(memory, address, VERSION_OFFSET)?;
    let (memory_map_address, memory_map_entries) = if version >= FIRST_VERSION_WITH_MEMORY_MAP {
        (read_u64(memory, address, MEMORY_MAP_OFFSET)?, read_u32(memory, address, MEMORY_MAP_ENTRIES_OFFSET)?)
    } else {
        (0, 0)
    };
    Ok(StartInfo {
        version,
        flags: read_u32(memory, address, FLAGS_OFFSET)?,
        command_line_address: read_u64(memory, address, COMMAND_LINE_OFFSET)?,
        rsdp_address: read_u64(memory, address, RSDP_OFFSET)?,
        memory_map_address,
        memory_map_entries,
    })
}

/// Appends the raw memory map entries to `map`; the caller then normalises it.
///
/// Entries are read one at a time, at most
/// [`MAX_START_INFO_MEMORY_MAP_ENTRIES`] of them. If the first entry cannot
/// be read, the result is [`StartInfoError::Unreadable`]; if a later one
/// cannot, reading stops there and the report says where (a corrupt count
/// pointing past the real table). Entries that do not fit in `map` are
/// counted in [`ReadReport::entries_dropped`].
pub fn read_memory_map(
    memory: &impl PhysicalMemory,
    info: &StartInfo,
    map: &mut MemoryMap,
) -> Result<ReadReport, StartInfoError> {
    if info.version < FIRST_VERSION_WITH_MEMORY_MAP || info.memory_map_entries == 0 || info.memory_map_address == 0 {
        return Err(StartInfoError::NoMemoryMap);
    }
    let readable_entries = info.memory_map_entries.min(MAX_START_INFO_MEMORY_MAP_ENTRIES);
    let mut report = ReadReport {
        entries_declared: info.memory_map_entries,
        entries_over_limit: info.memory_map_entries - readable_entries,
        ..ReadReport::default()
    };
    for index in 0..readable_entries {
        // index < 1024, so the offset cannot overflow; the sum with the base can.
        let offset = u64::from(index) * MEMORY_MAP_ENTRY_SIZE;
        match read_entry(memory, info.memory_map_address, offset) {
            Ok((start, size, kind)) => match map.push(start, size, RegionKind::from_e820(kind)) {
                Ok(()) => report.entries_stored += 1,
                Err(_) => report.entries_dropped += 1,
            },
            Err(unreadable) if index == 0 => return Err(unreadable.into()),
            Err(unreadable) => {
                report.stopped_at = Some(unreadable);
                break;
            }
        }
    }
    Ok(report)
}

/// Reads one `hvm_memmap_table_entry` at `base + offset`: (address, size, type).
fn read_entry(memory: &impl PhysicalMemory, base: u64, offset: u64) -> Result<(u64, u64, u32), Unreadable> {
    let entry: [u8; MEMORY_MAP_ENTRY_SIZE as usize] = read_bytes(memory, base, offset)?;
    // Decoded from the copy, through the same field readers: they cannot
    // fail on offsets inside the 24 bytes, and no indexing is needed.
    let entry = SliceMemory::new(0, &entry);
    Ok((
        read_u64(&entry, 0, ENTRY_ADDRESS_OFFSET)?,
        read_u64(&entry, 0, ENTRY_SIZE_OFFSET)?,
        read_u32(&entry, 0, ENTRY_TYPE_OFFSET)?,
    ))
}

/// Reads the NUL-terminated command line into `buffer`.
///
/// Returns the bytes before the NUL (raw: not checked for UTF-8; see
/// [`crate::command_line::CommandLineBuffer::fill`]) and whether the line
/// was truncated: longer than `buffer`, or cut short by unreadable memory
/// before any NUL. A command line address of 0 means an empty command line.
/// Only an unreadable first byte is an error.
pub fn read_command_line<'b>(
    memory: &impl PhysicalMemory,
    info: &StartInfo,
    buffer: &'b mut [u8],
) -> Result<(&'b [u8], bool), StartInfoError> {
    let address = info.command_line_address;
    if address == 0 {
        return Ok((&[], false));
    }
    // Byte by byte: the line has no known length, and a bulk read could run
    // past the NUL into memory the VMM never meant to be read.
    let mut length = 0;
    let mut truncated = true;
    // One more byte than fits, to tell a full buffer from a truncated line.
    let last_offset = u64::try_from(buffer.len()).unwrap_or(u64::MAX);
    for offset in 0..=last_offset {
        let byte = match read_u8(memory, address, offset) {
            Ok(byte) => byte,
            Err(unreadable) if offset == 0 => return Err(unreadable.into()),
            Err(_) => break,
        };
        if byte == 0 {
            truncated = false;
            break;
        }
        match buffer.get_mut(length) {
            Some(slot) => {
                *slot = byte;
                length += 1;
            }
            // Full, and the next byte is not the NUL.
            None => break,
        }
    }
    Ok((buffer.get(..length).unwrap_or(&[]), truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command_line::{CommandLine, CommandLineBuffer};
    use crate::memory_map::{Region, RegionKind::*};
    use crate::test_memory::{memory_map_bytes, FakeMemory, StartInfoLayout};

    const START_INFO: u64 = 0x6000;
    const MEMORY_MAP: u64 = 0x7000;
    const COMMAND_LINE: u64 = 0x2_0000;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    const RAM: u32 = 1;
    const RESERVED: u32 = 2;

    /// A machine with a start info at START_INFO, the map at MEMORY_MAP and
    /// the command line (NUL-terminated) at COMMAND_LINE.
    fn machine(layout: StartInfoLayout, map: &[(u64, u64, u32)], command_line: &[u8]) -> FakeMemory {
        let mut line = command_line.to_vec();
        line.push(0);
        FakeMemory::new()
            .with(START_INFO, layout.bytes())
            .with(MEMORY_MAP, memory_map_bytes(map))
            .with(COMMAND_LINE, line)
    }

    fn version_1(entries: usize, rsdp: u64) -> StartInfoLayout {
        StartInfoLayout {
            version: 1,
            command_line: COMMAND_LINE,
            rsdp,
            memory_map: MEMORY_MAP,
            memory_map_entries: entries as u32,
            ..StartInfoLayout::default()
        }
    }

    /// Parses, reads and normalises the map the way the kernel does.
    fn boot(memory: &FakeMemory) -> (StartInfo, MemoryMap, ReadReport) {
        let info = parse_start_info(memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let report = read_memory_map(memory, &info, &mut map).unwrap();
        map.normalize();
        (info, map, report)
    }

    fn region(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    fn command_line_of(memory: &FakeMemory, info: &StartInfo) -> (Vec<u8>, bool) {
        let mut buffer = [0; 4096];
        let (bytes, truncated) = read_command_line(memory, info, &mut buffer).unwrap();
        (bytes.to_vec(), truncated)
    }

    #[test]
    fn qemu_microvm_unsorted_map_with_an_empty_entry() {
        // QEMU `-M microvm -m 256M`: the map is not sorted and has a {0, 0} entry.
        let map = [
            (0x10_0000, 256 * MIB - 0x10_0000, RAM),
            (0xfeff_c000, 0x4000, RESERVED),
            (0, 0, RAM),
            (0x9_fc00, 0x400, RESERVED),
            (0, 0x9_fc00, RAM),
            (0xf_0000, 0x1_0000, RESERVED),
        ];
        let memory = machine(version_1(map.len(), 0), &map, b"console=ttyS0 earlyprintk=ttyS0 toro.log=debug");
        let (info, normalized, report) = boot(&memory);
        assert_eq!(info.version, 1);
        assert_eq!(info.rsdp(), None);
        assert_eq!(report.entries_stored, 6);
        assert!(report.is_complete());
        assert_eq!(
            normalized.regions(),
            &[
                region(0, 0x9_f000, Usable),
                region(0x9_fc00, 0xa_0000, Reserved),
                region(0xf_0000, 0x10_0000, Reserved),
                region(0x10_0000, 256 * MIB, Usable),
                region(0xfeff_c000, 0xff00_0000, Reserved),
            ]
        );
        assert_eq!(normalized.usable_bytes(), 0x9_f000 + 255 * MIB);
        let (line, truncated) = command_line_of(&memory, &info);
        assert!(!truncated);
        assert_eq!(CommandLine::new(core::str::from_utf8(&line).unwrap()).get("toro.log"), Some("debug"));
    }

    #[test]
    fn qemu_q35_with_ram_above_4_gib() {
        // QEMU `-M q35 -m 4G`: low RAM ends at 2 GiB, the rest moves above 4 GiB.
        let map = [
            (0, 0x9_fc00, RAM),
            (0x9_fc00, 0x400, RESERVED),
            (0xf_0000, 0x1_0000, RESERVED),
            (0x10_0000, 2 * GIB - 0x10_0000, RAM),
            (0xb000_0000, 0x1000_0000, RESERVED),
            (0xfeff_c000, 0x4000, RESERVED),
            (0xfffc_0000, 0x4_0000, RESERVED),
            (4 * GIB, 2 * GIB, RAM),
        ];
        let memory = machine(version_1(map.len(), 0xf_52e0), &map, b"console=ttyS0");
        let (info, normalized, _) = boot(&memory);
        assert_eq!(info.rsdp(), Some(0xf_52e0));
        assert_eq!(normalized.len(), 8);
        assert_eq!(normalized.regions()[7], region(4 * GIB, 6 * GIB, Usable));
        assert_eq!(normalized.regions()[6], region(0xfffc_0000, 4 * GIB, Reserved));
        assert_eq!(normalized.usable_bytes(), 0x9_f000 + 2 * GIB - MIB + 2 * GIB);
        assert_eq!(normalized.highest_address(), 6 * GIB);
    }

    #[test]
    fn qemu_pc_with_ram_above_4_gib() {
        // QEMU `-M pc -m 8G`: low RAM ends at 3 GiB.
        let map = [
            (0, 0x9_fc00, RAM),
            (0x9_fc00, 0x400, RESERVED),
            (0xf_0000, 0x1_0000, RESERVED),
            (0x10_0000, 3 * GIB - 0x10_0000, RAM),
            (0xfeff_c000, 0x4000, RESERVED),
            (0xfffc_0000, 0x4_0000, RESERVED),
            (4 * GIB, 5 * GIB, RAM),
        ];
        let memory = machine(version_1(map.len(), 0xf_5a40), &map, b"");
        let (info, normalized, _) = boot(&memory);
        assert_eq!(normalized.len(), 7);
        assert_eq!(normalized.usable_bytes(), 0x9_f000 + 3 * GIB - MIB + 5 * GIB);
        assert_eq!(normalized.highest_usable_address(), 9 * GIB);
        assert_eq!(command_line_of(&memory, &info), (vec![], false));
    }

    #[test]
    fn firecracker_large_memory_with_the_32_bit_gap() {
        // Firecracker with 4 GiB: RSDP not passed (the kernel scans for it),
        // RAM up to the MMIO gap at 3 GiB, then from 4 GiB on.
        let map = [(0, 0x9_fc00, RAM), (0x10_0000, 3 * GIB - 0x10_0000, RAM), (4 * GIB, GIB, RAM)];
        let command_line = b"console=ttyS0 reboot=k panic=1 virtio_mmio.device=4K@0xd0000000:5";
        let memory = machine(version_1(map.len(), 0), &map, command_line);
        let (info, normalized, _) = boot(&memory);
        assert_eq!(info.rsdp(), None);
        assert_eq!(
            normalized.regions(),
            &[region(0, 0x9_f000, Usable), region(0x10_0000, 3 * GIB, Usable), region(4 * GIB, 5 * GIB, Usable)]
        );
        let (line, truncated) = command_line_of(&memory, &info);
        assert!(!truncated);
        let mut sanitized = CommandLineBuffer::new();
        assert_eq!(sanitized.fill(&line), Default::default());
        let command_line = CommandLine::new(sanitized.as_str());
        assert_eq!(command_line.get("virtio_mmio.device"), Some("4K@0xd0000000:5"));
        assert_eq!(command_line.get("panic"), Some("1"));
    }

    #[test]
    fn firecracker_small_memory() {
        let map = [(0, 0x9_fc00, RAM), (0x10_0000, 128 * MIB - 0x10_0000, RAM)];
        let memory = machine(version_1(map.len(), 0), &map, b"console=ttyS0");
        let (_, normalized, _) = boot(&memory);
        assert_eq!(normalized.usable_bytes(), 0x9_f000 + 127 * MIB);
    }

    #[test]
    fn wrong_magic_is_refused() {
        let layout = StartInfoLayout { magic: 0x1bad_b002, ..version_1(0, 0) };
        let memory = FakeMemory::new().with(START_INFO, layout.bytes());
        let error = parse_start_info(&memory, START_INFO).unwrap_err();
        assert_eq!(error, StartInfoError::WrongMagic { found: 0x1bad_b002 });
        assert_eq!(error.to_string(), "PVH start info has magic 0x1badb002, expected 0x336ec578");
    }

    #[test]
    fn unreadable_start_info_is_an_error() {
        let memory = FakeMemory::new();
        assert!(matches!(
            parse_start_info(&memory, START_INFO),
            Err(StartInfoError::Unreadable(Unreadable { address: START_INFO, length: 4 }))
        ));
        // A truncated structure: the magic is there, the rest is not.
        let memory = FakeMemory::new().with(START_INFO, version_1(1, 0).bytes()[..40].to_vec());
        assert!(matches!(parse_start_info(&memory, START_INFO), Err(StartInfoError::Unreadable(_))));
        // At the very top of the address space.
        assert!(parse_start_info(&memory, u64::MAX - 2).is_err());
    }

    #[test]
    fn version_0_has_no_memory_map_but_a_command_line() {
        // Version 0 is 48 bytes long: whatever follows is not a memory map.
        let layout = StartInfoLayout { version: 0, ..version_1(3, 0) };
        let memory = machine(layout, &[(0, 0x9_fc00, RAM)], b"quiet");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        assert_eq!((info.memory_map_address, info.memory_map_entries), (0, 0));
        let mut map = MemoryMap::new();
        assert_eq!(read_memory_map(&memory, &info, &mut map), Err(StartInfoError::NoMemoryMap));
        assert!(map.is_empty());
        assert_eq!(command_line_of(&memory, &info), (b"quiet".to_vec(), false));
    }

    #[test]
    fn zero_entries_is_no_memory_map() {
        let memory = machine(version_1(0, 0), &[], b"");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let error = read_memory_map(&memory, &info, &mut MemoryMap::new()).unwrap_err();
        assert_eq!(error, StartInfoError::NoMemoryMap);
        assert!(error.to_string().contains("no memory map"));
    }

    #[test]
    fn huge_entry_count_pointing_at_unreadable_memory() {
        let layout = StartInfoLayout { memory_map: 0x4000_0000, memory_map_entries: u32::MAX, ..version_1(0, 0) };
        let memory = FakeMemory::new().with(START_INFO, layout.bytes());
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let error = read_memory_map(&memory, &info, &mut map).unwrap_err();
        assert_eq!(error, StartInfoError::Unreadable(Unreadable { address: 0x4000_0000, length: 24 }));
    }

    #[test]
    fn huge_entry_count_is_capped_and_stops_at_unreadable_memory() {
        let map_entries = [(0, 0x9_fc00, RAM), (0x10_0000, 64 * MIB, RAM)];
        let layout = StartInfoLayout { memory_map_entries: u32::MAX, ..version_1(0, 0) };
        let memory = machine(layout, &map_entries, b"");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let report = read_memory_map(&memory, &info, &mut map).unwrap();
        assert_eq!(report.entries_declared, u32::MAX);
        assert_eq!(report.entries_over_limit, u32::MAX - MAX_START_INFO_MEMORY_MAP_ENTRIES);
        assert_eq!(report.entries_stored, 2);
        assert_eq!(report.stopped_at, Some(Unreadable { address: MEMORY_MAP + 48, length: 24 }));
        assert!(!report.is_complete());
        map.normalize();
        assert_eq!(map.usable_bytes(), 0x9_f000 + 64 * MIB);
    }

    #[test]
    fn huge_entry_count_over_readable_memory_reads_only_the_cap() {
        // 1100 readable entries (mostly zero-length): only 1024 are read, 128 kept.
        let mut entries = vec![(0, 0, RAM); 1100];
        entries[0] = (0x10_0000, MIB, RAM);
        let memory = machine(version_1(entries.len(), 0), &entries, b"");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let report = read_memory_map(&memory, &info, &mut map).unwrap();
        assert_eq!(report.entries_over_limit, 1100 - 1024);
        assert_eq!(report.entries_stored, 128);
        assert_eq!(report.entries_dropped, 1024 - 128);
        assert_eq!(report.stopped_at, None);
    }

    #[test]
    fn a_map_at_the_top_of_the_address_space_does_not_overflow() {
        let base = u64::MAX - 30;
        let layout = StartInfoLayout { memory_map: base, memory_map_entries: 4, ..version_1(0, 0) };
        let mut top = memory_map_bytes(&[(0, MIB, RAM)]);
        top.resize(30, 0);
        let memory = FakeMemory::new().with(START_INFO, layout.bytes()).with(base, top);
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let report = read_memory_map(&memory, &info, &mut map).unwrap();
        assert_eq!(report.entries_stored, 1);
        assert_eq!(report.stopped_at, Some(Unreadable { address: base + 24, length: 24 }));
        // Entirely past the end.
        let layout = StartInfoLayout { memory_map: u64::MAX - 4, ..layout };
        let memory = FakeMemory::new().with(START_INFO, layout.bytes());
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let error = read_memory_map(&memory, &info, &mut MemoryMap::new()).unwrap_err();
        assert!(matches!(error, StartInfoError::Unreadable(_)));
    }

    #[test]
    fn overlapping_out_of_order_and_overflowing_entries() {
        let map = [
            (0x10_0000, 512 * MIB, RAM),
            (0x800_0000, 0x100_0000, RESERVED),
            (0, 0xa_0000, RAM),
            (0x9_f000, 0x2000, 4),
            (0x4000_0000, u64::MAX, RAM),
            (0xffff_ffff_ffff_0000, 0x2_0000, RESERVED),
            (0x1_0000, 0x1000, 5),
        ];
        let memory = machine(version_1(map.len(), 0), &map, b"");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut normalized = MemoryMap::new();
        read_memory_map(&memory, &info, &mut normalized).unwrap();
        let report = normalized.normalize();
        assert_eq!(report.clamped, 2);
        assert_eq!(
            normalized.regions(),
            &[
                region(0, 0x1_0000, Usable),
                region(0x1_0000, 0x1_1000, Unusable),
                region(0x1_1000, 0x9_f000, Usable),
                region(0x9_f000, 0xa_1000, AcpiNvs),
                region(0x10_0000, 0x800_0000, Usable),
                region(0x800_0000, 0x900_0000, Reserved),
                region(0x900_0000, 0x2010_0000, Usable),
                region(0x4000_0000, 0xffff_ffff_ffff_0000, Usable),
                region(0xffff_ffff_ffff_0000, u64::MAX, Reserved),
            ]
        );
    }

    #[test]
    fn map_full_entries_are_counted() {
        let entries: Vec<_> = (0..200u64).map(|index| (index * 2 * MIB, MIB, RAM)).collect();
        let memory = machine(version_1(entries.len(), 0), &entries, b"");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut map = MemoryMap::new();
        let report = read_memory_map(&memory, &info, &mut map).unwrap();
        assert_eq!((report.entries_stored, report.entries_dropped), (128, 72));
    }

    #[test]
    fn command_line_without_nul_at_the_end_of_memory() {
        let layout = version_1(1, 0);
        let memory = FakeMemory::new()
            .with(START_INFO, layout.bytes())
            .with(MEMORY_MAP, memory_map_bytes(&[(0, MIB, RAM)]))
            .with(COMMAND_LINE, b"console=ttyS0 toro.log=info".to_vec());
        let info = parse_start_info(&memory, START_INFO).unwrap();
        assert_eq!(command_line_of(&memory, &info), (b"console=ttyS0 toro.log=info".to_vec(), true));
    }

    #[test]
    fn ten_kilobyte_command_line_is_truncated() {
        let long: Vec<u8> = b"toro.padding=".iter().copied().chain(core::iter::repeat(b'x')).take(10 * 1024).collect();
        let memory = machine(version_1(1, 0), &[(0, MIB, RAM)], &long);
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let (line, truncated) = command_line_of(&memory, &info);
        assert!(truncated);
        assert_eq!(line, long[..4096]);
    }

    #[test]
    fn command_line_that_exactly_fills_the_buffer_is_not_truncated() {
        let memory = machine(version_1(1, 0), &[(0, MIB, RAM)], b"abcd");
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut buffer = [0; 4];
        assert_eq!(read_command_line(&memory, &info, &mut buffer).unwrap(), (&b"abcd"[..], false));
        let mut small = [0; 3];
        assert_eq!(read_command_line(&memory, &info, &mut small).unwrap(), (&b"abc"[..], true));
        let mut none: [u8; 0] = [];
        assert_eq!(read_command_line(&memory, &info, &mut none).unwrap(), (&b""[..], true));
    }

    #[test]
    fn absent_and_unreadable_command_lines() {
        let layout = StartInfoLayout { command_line: 0, ..version_1(1, 0) };
        let memory = FakeMemory::new().with(START_INFO, layout.bytes());
        let info = parse_start_info(&memory, START_INFO).unwrap();
        assert_eq!(command_line_of(&memory, &info), (vec![], false));

        let layout = StartInfoLayout { command_line: 0x9999_0000, ..version_1(1, 0) };
        let memory = FakeMemory::new().with(START_INFO, layout.bytes());
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let mut buffer = [0; 16];
        assert_eq!(
            read_command_line(&memory, &info, &mut buffer),
            Err(StartInfoError::Unreadable(Unreadable { address: 0x9999_0000, length: 1 }))
        );
    }

    #[test]
    fn garbage_command_line_is_sanitized_downstream() {
        let raw = b"console=ttyS0\x01 bad=\xff\xfe\n toro.log=\"warn\" \x7f";
        let memory = machine(version_1(1, 0), &[(0, MIB, RAM)], raw);
        let info = parse_start_info(&memory, START_INFO).unwrap();
        let (line, truncated) = command_line_of(&memory, &info);
        assert!(!truncated);
        let mut sanitized = CommandLineBuffer::new();
        let report = sanitized.fill(&line);
        assert_eq!(sanitized.as_str(), "console=ttyS0? bad=??  toro.log=\"warn\" ?");
        assert_eq!(report.control_bytes_replaced, 2);
        assert_eq!(report.invalid_bytes_replaced, 2);
        assert_eq!(CommandLine::new(sanitized.as_str()).get("toro.log"), Some("warn"));
    }
}
