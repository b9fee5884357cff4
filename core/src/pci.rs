//! PCI: the ACPI MCFG table (where ECAM lives), configuration-space
//! addresses and layout, enumeration, BAR sizing and the capability walk,
//! written against the [`ConfigSpace`] seam so the host tests drive them
//! with a fake bus.
//!
//! References: PCI Local Bus Specification 3.0 (configuration header,
//! section 6.1; BARs, 6.2.5.1; capabilities list, 6.7; MSI, 6.8), PCI
//! Firmware Specification 3.2 (MCFG, section 4.1.2). The `pci_types` crate
//! has the register layout too, but not an enumeration or a sizing walk
//! that tolerates a lying device, which is the part worth testing here.

use crate::acpi::{AcpiError, Rsdp};
use crate::physical_memory::{read_u16, read_u64, read_u8, PhysicalMemory, Unreadable};

/// ECAM regions kept from the MCFG.
pub const MAX_ECAM_REGIONS: usize = 8;
/// Bytes of configuration space per function under ECAM.
pub const ECAM_FUNCTION_BYTES: u64 = 4096;
/// Bytes of ECAM per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_BYTES: u64 = 1 << 20;
/// Devices per bus and functions per device.
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions per device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;
/// Functions `enumerate` lists at most.
pub const MAX_FUNCTIONS: usize = 64;
/// Capabilities kept per function.
pub const MAX_CAPABILITIES: usize = 16;

/// MCFG layout: 8 reserved bytes after the header, then 16-byte entries.
const MCFG_ENTRIES_OFFSET: u32 = 44;
const MCFG_ENTRY_LENGTH: u32 = 16;

/// Configuration header offsets (PCI 3.0, figure 6-1).
pub const VENDOR_ID: u16 = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: u16 = 0x02;
/// Command register (16 bits).
pub const COMMAND: u16 = 0x04;
/// Status register (16 bits).
pub const STATUS: u16 = 0x06;
/// Revision ID; class code in the three bytes above it.
pub const REVISION_ID: u16 = 0x08;
/// Header type (bit 7: multi-function).
pub const HEADER_TYPE: u16 = 0x0e;
/// The first base address register; BAR n is at `BAR0 + 4 n`.
pub const BAR0: u16 = 0x10;
/// Offset of the first capability.
pub const CAPABILITIES_POINTER: u16 = 0x34;
/// Interrupt line (what firmware routed INTx to).
pub const INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin (1 = INTA#, 0 = none).
pub const INTERRUPT_PIN: u16 = 0x3d;
/// Type 1 (bridge) header: secondary bus number.
pub const SECONDARY_BUS: u16 = 0x19;

/// Command register bits.
pub const COMMAND_IO_SPACE: u16 = 1 << 0;
/// Command: memory space decoding.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command: bus master (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx disabled.
pub const COMMAND_INTERRUPT_DISABLE: u16 = 1 << 10;
/// Status register: the function has a capabilities list.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Capability IDs (PCI Code and ID Assignment Specification, 2).
pub const CAPABILITY_MSI: u8 = 0x05;
/// Capability ID: vendor-specific (virtio-pci's structures, virtio 1.2, 4.1.4).
pub const CAPABILITY_VENDOR: u8 = 0x09;
/// Capability ID: MSI-X.
pub const CAPABILITY_MSIX: u8 = 0x11;

/// Header type: bit 7 multi-function, bits 6:0 layout (0 device, 1 bridge).
const HEADER_MULTIFUNCTION: u8 = 1 << 7;
const HEADER_LAYOUT_BRIDGE: u8 = 1;
/// No function answers with this vendor ID.
const NO_VENDOR: u16 = 0xffff;

/// One ECAM region (an MCFG "configuration space base address allocation").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EcamRegion {
    /// Physical address of bus `start_bus`'s configuration space.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus the region covers.
    pub start_bus: u8,
    /// Last bus the region covers.
    pub end_bus: u8,
}

impl EcamRegion {
    /// The physical address of `offset` in function `address`'s
    /// configuration space, if this region covers it.
    pub fn address_of(&self, address: PciAddress, offset: u16) -> Option<u64> {
        if address.segment != self.segment || !(self.start_bus..=self.end_bus).contains(&address.bus) {
            return None;
        }
        let bus = u64::from(address.bus - self.start_bus);
        Some(
            self.base
                + bus * ECAM_BUS_BYTES
                + u64::from(address.device) * 8 * ECAM_FUNCTION_BYTES
                + u64::from(address.function) * ECAM_FUNCTION_BYTES
                + u64::from(offset & 0xffc),
        )
    }

    /// Bytes the region spans.
    pub fn size(&self) -> u64 {
        (u64::from(self.end_bus) - u64::from(self.start_bus) + 1) * ECAM_BUS_BYTES
    }
}

/// What the MCFG lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McfgSummary {
    /// `regions[..count]` are the valid regions, in table order.
    pub regions: [EcamRegion; MAX_ECAM_REGIONS],
    /// Valid regions in `regions`.
    pub count: usize,
    /// Entries left out: end bus below start bus, base not 1 MiB aligned,
    /// zero, or past 2^52, a segment/bus range already listed, or beyond
    /// [`MAX_ECAM_REGIONS`].
    pub bad_entries: usize,
    /// Bytes at the end of the table too short for an entry.
    pub trailing_bytes: u32,
}

impl McfgSummary {
    /// The valid regions.
    pub fn regions(&self) -> &[EcamRegion] {
        self.regions.get(..self.count).unwrap_or(&self.regions)
    }

    /// The region covering `address`'s segment and bus.
    pub fn region_for(&self, address: PciAddress) -> Option<&EcamRegion> {
        self.regions().iter().find(|r| r.address_of(address, 0).is_some())
    }
}

/// Highest physical address an ECAM region may reach.
const MAX_ECAM_ADDRESS: u64 = 1 << 52;

/// Parses the MCFG (signature `"MCFG"`) at `address`. A garbled entry is
/// counted in [`McfgSummary::bad_entries`] and left out; an invalid table
/// (signature, length, checksum) is an error.
pub fn parse_mcfg(memory: &impl PhysicalMemory, address: u64) -> Result<McfgSummary, AcpiError> {
    let length = crate::acpi::check_table_header(memory, address, *b"MCFG", MCFG_ENTRIES_OFFSET)?;
    let mut summary =
        McfgSummary { regions: [EcamRegion::default(); MAX_ECAM_REGIONS], count: 0, bad_entries: 0, trailing_bytes: 0 };
    let mut offset = MCFG_ENTRIES_OFFSET;
    // Invariant: offset <= length; each step adds 16.
    while offset < length {
        if length - offset < MCFG_ENTRY_LENGTH {
            summary.trailing_bytes = length - offset;
            break;
        }
        let entry = address.checked_add(u64::from(offset)).ok_or(Unreadable { address, length: 0 })?;
        let region = EcamRegion {
            base: read_u64(memory, entry, 0)?,
            segment: read_u16(memory, entry, 8)?,
            start_bus: read_u8(memory, entry, 10)?,
            end_bus: read_u8(memory, entry, 11)?,
        };
        offset += MCFG_ENTRY_LENGTH;
        let sane = region.end_bus >= region.start_bus
            && region.base != 0
            && region.base.is_multiple_of(ECAM_BUS_BYTES)
            && region.base.checked_add(region.size()).is_some_and(|end| end <= MAX_ECAM_ADDRESS);
        let overlapping = summary.regions().iter().any(|known| {
            known.segment == region.segment && known.start_bus <= region.end_bus && region.start_bus <= known.end_bus
        });
        if !sane || overlapping || summary.count == MAX_ECAM_REGIONS {
            summary.bad_entries += 1;
            continue;
        }
        summary.regions[summary.count] = region;
        summary.count += 1;
    }
    Ok(summary)
}

/// Finds and parses the MCFG; `Ok(None)` if the firmware has none.
pub fn find_mcfg(memory: &impl PhysicalMemory, rsdp: &Rsdp) -> Result<Option<McfgSummary>, AcpiError> {
    match crate::acpi::find_table(memory, rsdp, *b"MCFG")? {
        Some((address, _)) => parse_mcfg(memory, address).map(Some),
        None => Ok(None),
    }
}

/// A function's address: segment, bus, device, function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment group.
    pub segment: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number (0-31).
    pub device: u8,
    /// Function number (0-7).
    pub function: u8,
}

impl PciAddress {
    /// Bus, device and function in segment 0.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self { segment: 0, bus, device, function }
    }

    /// The 0xCF8 configuration address for `offset` (PCI 3.0, 3.2.2.3.2:
    /// enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2).
    pub fn port_address(&self, offset: u16) -> u32 {
        0x8000_0000
            | u32::from(self.bus) << 16
            | u32::from(self.device & 31) << 11
            | u32::from(self.function & 7) << 8
            | u32::from(offset & 0xfc)
    }

    /// Parses `BB:DD.F` or `SSSS:BB:DD.F` (hexadecimal, as `lspci` prints).
    pub fn parse(text: &str) -> Option<Self> {
        let (rest, function) = text.rsplit_once('.')?;
        let mut parts = rest.rsplitn(3, ':');
        let device = u8::from_str_radix(parts.next()?, 16).ok().filter(|&d| d < DEVICES_PER_BUS)?;
        let bus = u8::from_str_radix(parts.next()?, 16).ok()?;
        let segment = match parts.next() {
            Some(segment) => u16::from_str_radix(segment, 16).ok()?,
            None => 0,
        };
        let function = u8::from_str_radix(function, 16).ok().filter(|&f| f < FUNCTIONS_PER_DEVICE)?;
        Some(Self { segment, bus, device, function })
    }
}

impl core::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// Reads and writes configuration space: port I/O or ECAM in the kernel, a
/// fake bus in the tests. 32-bit, aligned accesses.
pub trait ConfigSpace {
    /// The dword at `offset & !3`; all ones if no function answers.
    fn read32(&self, address: PciAddress, offset: u16) -> u32;
    /// Writes the dword at `offset & !3`.
    fn write32(&self, address: PciAddress, offset: u16, value: u32);

    /// The 16 bits at `offset` (2-aligned).
    fn read16(&self, address: PciAddress, offset: u16) -> u16 {
        (self.read32(address, offset) >> ((offset & 2) * 8)) as u16
    }
    /// The byte at `offset`.
    fn read8(&self, address: PciAddress, offset: u16) -> u8 {
        (self.read32(address, offset) >> ((offset & 3) * 8)) as u8
    }
    /// Writes the 16 bits at `offset`, keeping the other half.
    fn write16(&self, address: PciAddress, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(address, offset) & !(0xffff << shift);
        self.write32(address, offset, old | u32::from(value) << shift);
    }
}

/// A decoded base address register (PCI 3.0, 6.2.5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Bar {
    /// Not implemented (or the upper half of a 64-bit BAR).
    #[default]
    None,
    /// Memory space.
    Memory {
        /// Physical address (0: firmware left it unassigned).
        address: u64,
        /// Bytes decoded.
        size: u64,
        /// Prefetchable (no read side effects).
        prefetchable: bool,
        /// A 64-bit BAR (it also takes the next slot).
        wide: bool,
    },
    /// I/O space.
    Io {
        /// First port.
        port: u32,
        /// Ports decoded.
        size: u32,
    },
}

/// A capability in the list: its ID and where it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID (`CAPABILITY_*`).
    pub id: u8,
    /// Offset of its header in configuration space.
    pub offset: u16,
}

/// One function found by [`enumerate`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// Header layout (0 device, 1 PCI-to-PCI bridge, 2 CardBus).
    pub header_layout: u8,
    /// Sized BARs (type 0 headers; bridges have two).
    pub bars: [Bar; 6],
    /// `capabilities[..capability_count]` are its capabilities, in list order.
    pub capabilities: [Capability; MAX_CAPABILITIES],
    /// Capabilities listed.
    pub capability_count: usize,
    /// The capability list was cut short (a loop, a pointer into the
    /// header, more than [`MAX_CAPABILITIES`]).
    pub capabilities_truncated: bool,
    /// INTx pin (1 = INTA#) and the line firmware assigned.
    pub interrupt_pin: u8,
    /// INTx line firmware assigned (255: none).
    pub interrupt_line: u8,
}

impl Function {
    /// The capabilities found.
    pub fn capabilities(&self) -> &[Capability] {
        self.capabilities.get(..self.capability_count).unwrap_or(&self.capabilities)
    }

    /// The first capability with `id`.
    pub fn capability(&self, id: u8) -> Option<Capability> {
        self.capabilities().iter().copied().find(|c| c.id == id)
    }

    /// Every capability with `id` (virtio-pci has several vendor ones).
    pub fn capabilities_with(&self, id: u8) -> impl Iterator<Item = Capability> + '_ {
        self.capabilities().iter().copied().filter(move |c| c.id == id)
    }

    /// Whether it is a PCI-to-PCI bridge.
    pub fn is_bridge(&self) -> bool {
        self.header_layout == HEADER_LAYOUT_BRIDGE
    }
}

/// What [`enumerate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enumeration {
    /// `functions[..count]` are the functions found.
    pub functions: [Function; MAX_FUNCTIONS],
    /// Functions listed.
    pub count: usize,
    /// Functions beyond [`MAX_FUNCTIONS`], not listed.
    pub over_limit: usize,
    /// Bridges whose secondary bus was 0, already scanned or otherwise
    /// impossible (not followed).
    pub bad_bridges: usize,
}

impl Enumeration {
    /// The functions, in scan order.
    pub fn functions(&self) -> &[Function] {
        self.functions.get(..self.count).unwrap_or(&self.functions)
    }
}

/// Walks the capability list of `address`: at most [`MAX_CAPABILITIES`]
/// entries, pointers at or above 0x40 and dword-aligned (the low two bits
/// are reserved and masked), no entry visited twice.
pub fn capabilities(space: &impl ConfigSpace, address: PciAddress, function: &mut Function) {
    if space.read16(address, STATUS) & STATUS_CAPABILITIES == 0 {
        return;
    }
    let mut pointer = u16::from(space.read8(address, CAPABILITIES_POINTER) & 0xfc);
    let mut visited = 0u64; // one bit per dword of 0x40..0x100
    while pointer != 0 {
        let bit = 1u64 << ((pointer.saturating_sub(0x40)) / 4);
        if pointer < 0x40 || visited & bit != 0 || function.capability_count == MAX_CAPABILITIES {
            function.capabilities_truncated = true;
            return;
        }
        visited |= bit;
        let header = space.read16(address, pointer);
        function.capabilities[function.capability_count] = Capability { id: header as u8, offset: pointer };
        function.capability_count += 1;
        pointer = (header >> 8) & 0xfc;
    }
}

/// Sizes the BARs of a type 0 function (or the two of a bridge): writes
/// all ones, reads the mask back, restores the value, with memory and I/O
/// decoding off meanwhile (PCI 3.0, 6.2.5.1).
pub fn size_bars(space: &impl ConfigSpace, address: PciAddress, count: usize) -> [Bar; 6] {
    let mut bars = [Bar::None; 6];
    let command = space.read16(address, COMMAND);
    space.write16(address, COMMAND, command & !(COMMAND_IO_SPACE | COMMAND_MEMORY_SPACE));
    let mut index = 0;
    while index < count.min(6) {
        let offset = BAR0 + 4 * index as u16;
        let original = space.read32(address, offset);
        space.write32(address, offset, u32::MAX);
        let mask = space.read32(address, offset);
        space.write32(address, offset, original);
        if original & 1 == 1 {
            // I/O BAR: bits 31:2 address.
            let size_mask = mask & !0x3;
            let size = (!size_mask).wrapping_add(1);
            if size_mask != 0 {
                bars[index] = Bar::Io { port: original & !0x3, size };
            }
            index += 1;
            continue;
        }
        let wide = (original >> 1) & 0b11 == 0b10;
        let prefetchable = original & (1 << 3) != 0;
        let (address_value, size_mask) = if wide && index + 1 < count.min(6) {
            let high_offset = offset + 4;
            let high = space.read32(address, high_offset);
            space.write32(address, high_offset, u32::MAX);
            let high_mask = space.read32(address, high_offset);
            space.write32(address, high_offset, high);
            (
                (u64::from(high) << 32) | u64::from(original & !0xf),
                (u64::from(high_mask) << 32) | u64::from(mask & !0xf),
            )
        } else {
            (u64::from(original & !0xf), u64::from(mask & !0xf) | 0xffff_ffff_0000_0000)
        };
        if mask & !0xf != 0 {
            let size = (!size_mask).wrapping_add(1);
            if size != 0 {
                bars[index] = Bar::Memory { address: address_value, size, prefetchable, wide };
            }
        }
        index += if wide { 2 } else { 1 };
    }
    space.write16(address, COMMAND, command);
    bars
}

/// Reads one function's header, BARs and capabilities.
fn probe(space: &impl ConfigSpace, address: PciAddress, vendor: u16) -> Function {
    let class = space.read32(address, REVISION_ID);
    let layout = space.read8(address, HEADER_TYPE) & !HEADER_MULTIFUNCTION;
    let bar_count = match layout {
        0 => 6,
        HEADER_LAYOUT_BRIDGE => 2,
        _ => 0,
    };
    let mut function = Function {
        address,
        vendor,
        device: space.read16(address, DEVICE_ID),
        revision: class as u8,
        class: ((class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8),
        header_layout: layout,
        bars: size_bars(space, address, bar_count),
        interrupt_pin: space.read8(address, INTERRUPT_PIN),
        interrupt_line: space.read8(address, INTERRUPT_LINE),
        ..Function::default()
    };
    capabilities(space, address, &mut function);
    function
}

/// Enumerates segment `segment` from bus `first_bus`, following bridges to
/// their secondary buses (each bus scanned once).
pub fn enumerate(space: &impl ConfigSpace, segment: u16, first_bus: u8) -> Enumeration {
    let mut found =
        Enumeration { functions: [Function::default(); MAX_FUNCTIONS], count: 0, over_limit: 0, bad_bridges: 0 };
    let mut scanned = [false; 256];
    let mut pending = [0u8; 256];
    let mut pending_count = 1;
    pending[0] = first_bus;
    scanned[first_bus as usize] = true;
    while pending_count > 0 {
        pending_count -= 1;
        let bus = pending[pending_count];
        for device in 0..DEVICES_PER_BUS {
            for function in 0..FUNCTIONS_PER_DEVICE {
                let address = PciAddress { segment, bus, device, function };
                let vendor = space.read16(address, VENDOR_ID);
                if vendor == NO_VENDOR || vendor == 0 {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let probed = probe(space, address, vendor);
                if probed.is_bridge() {
                    let secondary = space.read8(address, SECONDARY_BUS);
                    if secondary == 0 || secondary <= bus || scanned[secondary as usize] {
                        found.bad_bridges += 1;
                    } else {
                        scanned[secondary as usize] = true;
                        pending[pending_count] = secondary;
                        pending_count += 1;
                    }
                }
                match found.functions.get_mut(found.count) {
                    Some(slot) => {
                        *slot = probed;
                        found.count += 1;
                    }
                    None => found.over_limit += 1,
                }
                if function == 0 && space.read8(address, HEADER_TYPE) & HEADER_MULTIFUNCTION == 0 {
                    break;
                }
            }
        }
    }
    found
}

/// MSI capability layout (PCI 3.0, 6.8.1): message control at +2 (bit 0
/// enable, bit 7 64-bit address), address at +4, then upper address (+8)
/// and data (+0xC) if 64-bit, else data at +8.
pub const MSI_CONTROL_ENABLE: u16 = 1 << 0;
/// MSI control: 64-bit message address.
pub const MSI_CONTROL_64BIT: u16 = 1 << 7;
/// MSI-X (PCI 3.0, 6.8.2): control at +2 (bits 10:0 table size - 1, bit 14
/// function mask, bit 15 enable), table BIR/offset at +4, PBA at +8.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// MSI-X control: all vectors masked.
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// MSI-X table entries: 16 bytes (address low, high, data, vector control).
pub const MSIX_ENTRY_BYTES: u64 = 16;
/// Vector control bit 0: masked.
pub const MSIX_ENTRY_MASKED: u32 = 1;

/// Programs and enables MSI at capability `capability` with one message
/// (`address`, `data`); disables INTx.
pub fn enable_msi(space: &impl ConfigSpace, address: PciAddress, capability: u16, message: (u64, u32)) {
    let control = space.read16(address, capability + 2);
    space.write32(address, capability + 4, message.0 as u32);
    if control & MSI_CONTROL_64BIT != 0 {
        space.write32(address, capability + 8, (message.0 >> 32) as u32);
        space.write16(address, capability + 0xc, message.1 as u16);
    } else {
        space.write16(address, capability + 8, message.1 as u16);
    }
    // One message (multiple message enable, bits 6:4, = 0), enabled.
    space.write16(address, capability + 2, (control & !(0b111 << 4)) | MSI_CONTROL_ENABLE);
    let command = space.read16(address, COMMAND);
    space.write16(address, COMMAND, command | COMMAND_INTERRUPT_DISABLE);
}

/// Where an MSI-X table lives, from its capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixTable {
    /// The BAR holding the table, and the table's offset in it.
    pub bar: u8,
    /// Offset of the table in that BAR.
    pub offset: u32,
    /// Entries in the table.
    pub entries: u16,
}

/// Reads the MSI-X capability at `capability`.
pub fn msix_table(space: &impl ConfigSpace, address: PciAddress, capability: u16) -> MsixTable {
    let control = space.read16(address, capability + 2);
    let table = space.read32(address, capability + 4);
    MsixTable { bar: (table & 0x7) as u8, offset: table & !0x7, entries: (control & 0x7ff) + 1 }
}

/// Sets the MSI-X enable bit (and clears the function mask); disables INTx.
/// Program the table entries (through the BAR) first.
pub fn enable_msix(space: &impl ConfigSpace, address: PciAddress, capability: u16) {
    let control = space.read16(address, capability + 2);
    space.write16(address, capability + 2, (control | MSIX_CONTROL_ENABLE) & !MSIX_CONTROL_FUNCTION_MASK);
    let command = space.read16(address, COMMAND);
    space.write16(address, COMMAND, command | COMMAND_INTERRUPT_DISABLE);
}

/// PCI INTx routing where it is known without evaluating ACPI's `_PRT`
/// (AML): the interrupt line register (0x3c) is the firmware's legacy-PIC
/// choice, or nothing at all when no firmware ran, so it is never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntxRouting {
    /// QEMU's q35 (ICH9 LPC bridge 8086:2918 at 00:1f.0): on bus 0, pin
    /// `P` (1 = INTA#) of slot `S` below 25 goes to PIRQ `(S + P - 1) % 4 +
    /// 4` (E-H; QEMU's `ich9_cc_init`) and PIRQ `n` to GSI `16 + n`,
    /// level-triggered, active high (how QEMU's DSDT declares its GSI link
    /// devices, and how its I/O APIC sees the line).
    Q35,
}

/// Vendor and device of the ICH9 LPC bridge QEMU's q35 has at 00:1f.0.
pub const ICH9_LPC: (u16, u16) = (0x8086, 0x2918);
/// Where the q35 LPC bridge sits.
pub const ICH9_LPC_ADDRESS: PciAddress = PciAddress::new(0, 0x1f, 0);

/// An INTx pin's I/O APIC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntxRoute {
    /// The I/O APIC input.
    pub gsi: u32,
    /// Level-triggered (else edge).
    pub level: bool,
    /// Active low (else high).
    pub active_low: bool,
}

/// Why an INTx pin has no known route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntxError {
    /// The function has no INTx pin (0) or a pin outside INTA#-INTD#.
    NoPin(u8),
    /// A chipset whose routing Toro does not know (it would need `_PRT`).
    UnknownChipset,
    /// Behind a bridge (bus > 0, or another segment): the swizzle through
    /// the bridges is not followed.
    BehindBridge(PciAddress),
    /// A chipset slot (25-31) whose routing the chipset's configuration
    /// registers choose.
    ChipsetSlot(u8),
}

impl core::fmt::Display for IntxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoPin(0) => write!(f, "no INTx pin"),
            Self::NoPin(pin) => write!(f, "interrupt pin {pin} is not INTA#-INTD#"),
            Self::UnknownChipset => write!(f, "INTx routing unknown on this chipset (not QEMU q35)"),
            Self::BehindBridge(address) => write!(f, "{address} is behind a bridge: its INTx routing is not followed"),
            Self::ChipsetSlot(slot) => write!(f, "slot {slot} is a chipset slot: its INTx routing is configurable"),
        }
    }
}

impl IntxRouting {
    /// The chipset's routing, from the functions found: (address, vendor, device).
    pub fn detect(mut functions: impl Iterator<Item = (PciAddress, u16, u16)>) -> Option<Self> {
        functions
            .any(|(address, vendor, device)| address == ICH9_LPC_ADDRESS && (vendor, device) == ICH9_LPC)
            .then_some(Self::Q35)
    }

    /// Where pin `pin` (the function's interrupt pin register: 1 = INTA#)
    /// of the function at `address` arrives.
    pub fn route(self, address: PciAddress, pin: u8) -> Result<IntxRoute, IntxError> {
        if !(1..=4).contains(&pin) {
            return Err(IntxError::NoPin(pin));
        }
        match self {
            Self::Q35 => {
                if address.segment != 0 || address.bus != 0 {
                    return Err(IntxError::BehindBridge(address));
                }
                if address.device >= 25 {
                    return Err(IntxError::ChipsetSlot(address.device));
                }
                let pirq = (u32::from(address.device) + u32::from(pin) - 1) % 4 + 4;
                Ok(IntxRoute { gsi: 16 + pirq, level: true, active_low: false })
            }
        }
    }
}

/// The first memory BAR of `bars` that `check` refuses (a BAR over RAM,
/// firmware memory or the kernel image: the device must be left out), as
/// its index and the reason. Unassigned BARs (address 0) are skipped: they
/// are never mapped.
pub fn bad_bar<E>(bars: &[Bar], check: impl Fn(u64, u64) -> Result<(), E>) -> Option<(usize, E)> {
    bars.iter().enumerate().find_map(|(index, bar)| match *bar {
        Bar::Memory { address, size, .. } if address != 0 => check(address, size).err().map(|error| (index, error)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_memory::{acpi_table, FakeMemory};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn mcfg(entries: &[(u64, u16, u8, u8)]) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        for (base, segment, start, end) in entries {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&segment.to_le_bytes());
            body.push(*start);
            body.push(*end);
            body.extend_from_slice(&[0; 4]);
        }
        acpi_table(b"MCFG", 1, &body)
    }

    #[test]
    fn mcfg_as_qemu_q35_builds_it() {
        let memory = FakeMemory::new().with(0x1000, mcfg(&[(0xb000_0000, 0, 0, 255)]));
        let summary = parse_mcfg(&memory, 0x1000).unwrap();
        assert_eq!(summary.regions(), &[EcamRegion { base: 0xb000_0000, segment: 0, start_bus: 0, end_bus: 255 }]);
        assert_eq!(summary.bad_entries, 0);
        let region = summary.region_for(PciAddress::new(0, 3, 0)).unwrap();
        assert_eq!(region.address_of(PciAddress::new(0, 3, 0), 0x10), Some(0xb000_0000 + 3 * 0x8000 + 0x10));
        assert_eq!(region.address_of(PciAddress::new(1, 0, 2), 0), Some(0xb000_0000 + (1 << 20) + 2 * 4096));
        assert_eq!(region.size(), 256 << 20);
    }

    #[test]
    fn mcfg_garbled_entries_are_left_out() {
        let mut table = mcfg(&[
            (0xb000_0000, 0, 10, 5), // end below start
            (0xb000_1000, 0, 0, 0),  // not 1 MiB aligned
            (0, 0, 0, 0),            // zero base
            (!0xfffff, 0, 0, 255),   // past 2^52
            (0xc000_0000, 0, 0, 63),
            (0xd000_0000, 0, 32, 40), // overlaps buses 0-63 of segment 0
            (0xd000_0000, 1, 0, 0),
        ]);
        // Three stray bytes at the end (the header length says so).
        table.extend_from_slice(&[1, 2, 3]);
        let length = table.len() as u32;
        table[4..8].copy_from_slice(&length.to_le_bytes());
        table[9] = 0;
        let sum = table.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        table[9] = 0u8.wrapping_sub(sum);
        let memory = FakeMemory::new().with(0x1000, table);
        let summary = parse_mcfg(&memory, 0x1000).unwrap();
        assert_eq!(summary.count, 2);
        assert_eq!(summary.bad_entries, 5);
        assert_eq!(summary.trailing_bytes, 3);
        assert!(summary.region_for(PciAddress { segment: 1, bus: 0, device: 0, function: 0 }).is_some());
        assert!(summary.region_for(PciAddress { segment: 1, bus: 1, device: 0, function: 0 }).is_none());
    }

    #[test]
    fn mcfg_bad_tables_are_errors() {
        let mut corrupt = mcfg(&[(0xb000_0000, 0, 0, 255)]);
        corrupt[50] ^= 1;
        let memory = FakeMemory::new()
            .with(0x1000, corrupt)
            .with(0x2000, acpi_table(b"APIC", 1, &[0; 8]))
            .with(0x3000, acpi_table(b"MCFG", 1, &[0; 2]));
        assert!(matches!(parse_mcfg(&memory, 0x1000), Err(AcpiError::TableChecksum { .. })));
        assert!(matches!(parse_mcfg(&memory, 0x2000), Err(AcpiError::TableSignature { .. })));
        assert!(matches!(parse_mcfg(&memory, 0x3000), Err(AcpiError::TableLength { .. })));
        assert!(parse_mcfg(&memory, 0x9000).is_err());
    }

    #[test]
    fn mcfg_flipped_bytes_never_panic() {
        let table = mcfg(&[(0xb000_0000, 0, 0, 255), (0xc000_0000, 1, 0, 7)]);
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..5_000 {
            let mut garbled = table.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = 36 + (state as usize) % (garbled.len() - 36);
                garbled[index] = (state >> 24) as u8;
            }
            garbled[9] = 0;
            let sum = garbled.iter().fold(0u8, |s, &b| s.wrapping_add(b));
            garbled[9] = 0u8.wrapping_sub(sum);
            let memory = FakeMemory::new().with(0x1000, garbled);
            let summary = parse_mcfg(&memory, 0x1000).unwrap();
            for region in summary.regions() {
                assert!(region.end_bus >= region.start_bus && region.base % ECAM_BUS_BYTES == 0);
            }
        }
    }

    #[test]
    fn addresses_parse_and_print() {
        assert_eq!(PciAddress::parse("00:03.0"), Some(PciAddress::new(0, 3, 0)));
        assert_eq!(
            PciAddress::parse("0001:0a:1f.7"),
            Some(PciAddress { segment: 1, bus: 10, device: 31, function: 7 })
        );
        assert_eq!(PciAddress::parse("00:20.0"), None);
        assert_eq!(PciAddress::parse("00:03.8"), None);
        assert_eq!(PciAddress::parse("zz:03.0"), None);
        assert_eq!(PciAddress::parse("03.0"), None);
        assert_eq!(PciAddress::new(0, 3, 1).to_string(), "0000:00:03.1");
        assert_eq!(PciAddress::new(1, 2, 3).port_address(0x11), 0x8001_1300 | 0x10);
    }

    /// A fake bus: functions with header dwords and BAR size masks.
    struct FakeFunction {
        config: [u32; 64],
        /// Writable bits of each BAR (0: not implemented).
        bar_masks: [u32; 6],
    }

    #[derive(Default)]
    struct FakeBus {
        functions: RefCell<BTreeMap<PciAddress, FakeFunction>>,
    }

    impl FakeBus {
        fn add(&self, address: PciAddress, vendor: u16, device: u16, class: u32, header: u8) {
            let mut function = FakeFunction { config: [0; 64], bar_masks: [0; 6] };
            function.config[0] = u32::from(vendor) | u32::from(device) << 16;
            function.config[2] = class;
            function.config[3] = u32::from(header) << 16;
            self.functions.borrow_mut().insert(address, function);
        }
        fn set(&self, address: PciAddress, offset: u16, value: u32) {
            self.functions.borrow_mut().get_mut(&address).unwrap().config[offset as usize / 4] = value;
        }
        fn bar(&self, address: PciAddress, index: usize, value: u32, mask: u32) {
            let mut functions = self.functions.borrow_mut();
            let function = functions.get_mut(&address).unwrap();
            function.config[4 + index] = value;
            function.bar_masks[index] = mask;
        }
    }

    impl ConfigSpace for FakeBus {
        fn read32(&self, address: PciAddress, offset: u16) -> u32 {
            self.functions.borrow().get(&address).map_or(u32::MAX, |f| f.config[(offset as usize & 0xfc) / 4])
        }
        fn write32(&self, address: PciAddress, offset: u16, value: u32) {
            let mut functions = self.functions.borrow_mut();
            let Some(function) = functions.get_mut(&address) else { return };
            let index = (offset as usize & 0xfc) / 4;
            if (4..10).contains(&index) {
                let mask = function.bar_masks[index - 4];
                let low_bits = function.config[index] & !mask;
                function.config[index] = (value & mask) | low_bits;
            } else {
                function.config[index] = value;
            }
        }
    }

    #[test]
    fn enumerates_functions_bridges_bars_and_capabilities() {
        let bus = FakeBus::default();
        let host = PciAddress::new(0, 0, 0);
        bus.add(host, 0x8086, 0x29c0, 0x0600_0000, 0);
        // virtio-rng-pci: an I/O BAR, a 64-bit prefetchable memory BAR of
        // 16 KiB at 0x8_0000_0000, MSI-X and two vendor capabilities.
        let rng = PciAddress::new(0, 3, 0);
        bus.add(rng, 0x1af4, 0x1044, 0x00ff_0001, 0);
        bus.bar(rng, 0, 0xc041, 0xffff_ffe0);
        bus.bar(rng, 4, 0x0000_000c, 0xffff_c000);
        bus.bar(rng, 5, 0x8, 0xffff_ffff);
        bus.set(rng, STATUS, u32::from(STATUS_CAPABILITIES) << 16);
        bus.set(rng, CAPABILITIES_POINTER, 0x98);
        bus.set(rng, 0x98, 0x0000_8411); // MSI-X, next 0x84
        bus.set(rng, 0x84, 0x0000_7009); // vendor, next 0x70
        bus.set(rng, 0x70, 0x0000_0009); // vendor, end
                                         // A multi-function device, function 2 only besides 0.
        bus.add(PciAddress::new(0, 4, 0), 0x1234, 0x1, 0x0200_0000, 0x80);
        bus.add(PciAddress::new(0, 4, 2), 0x1234, 0x2, 0x0200_0000, 0x00);
        // Function 1 of a single-function device must not be scanned.
        bus.add(PciAddress::new(0, 5, 0), 0x1234, 0x3, 0, 0);
        bus.add(PciAddress::new(0, 5, 1), 0x1234, 0x4, 0, 0);
        // A bridge to bus 1, with a device behind it; a bridge looping
        // back to bus 1 again is not followed twice.
        let bridge = PciAddress::new(0, 0x1e, 0);
        bus.add(bridge, 0x8086, 0x244e, 0x0604_0000, 1);
        bus.set(bridge, 0x18, 0x0001_0100);
        bus.add(PciAddress::new(1, 0, 0), 0x1af4, 0x1041, 0x0200_0000, 0);
        let looping = PciAddress::new(1, 1, 0);
        bus.add(looping, 0x8086, 0x244e, 0x0604_0000, 1);
        bus.set(looping, 0x18, 0x0001_0101);

        let found = enumerate(&bus, 0, 0);
        let addresses: Vec<PciAddress> = found.functions().iter().map(|f| f.address).collect();
        assert_eq!(
            addresses,
            vec![
                host,
                rng,
                PciAddress::new(0, 4, 0),
                PciAddress::new(0, 4, 2),
                PciAddress::new(0, 5, 0),
                bridge,
                PciAddress::new(1, 0, 0),
                looping
            ]
        );
        assert_eq!(found.bad_bridges, 1);
        let rng_function = found.functions()[1];
        assert_eq!(rng_function.class, (0x00, 0xff, 0x00));
        assert_eq!(rng_function.bars[0], Bar::Io { port: 0xc040, size: 32 });
        assert_eq!(
            rng_function.bars[4],
            Bar::Memory { address: 0x8_0000_0000, size: 0x4000, prefetchable: true, wide: true }
        );
        assert_eq!(rng_function.bars[5], Bar::None);
        assert_eq!(rng_function.capabilities().iter().map(|c| c.id).collect::<Vec<_>>(), vec![0x11, 0x09, 0x09]);
        assert_eq!(rng_function.capabilities_with(CAPABILITY_VENDOR).count(), 2);
        assert!(!rng_function.capabilities_truncated);
        // BARs were restored after sizing.
        assert_eq!(bus.read32(rng, BAR0 + 16), 0xc);
        assert_eq!(bus.read32(rng, BAR0 + 20), 0x8);
    }

    #[test]
    fn capability_loops_and_bad_pointers_are_cut() {
        let bus = FakeBus::default();
        let looping = PciAddress::new(0, 1, 0);
        bus.add(looping, 0x1af4, 0x1000, 0, 0);
        bus.set(looping, STATUS, u32::from(STATUS_CAPABILITIES) << 16);
        bus.set(looping, CAPABILITIES_POINTER, 0x40);
        bus.set(looping, 0x40, 0x0000_4405);
        bus.set(looping, 0x44, 0x0000_4011); // back to 0x40
        let into_header = PciAddress::new(0, 2, 0);
        bus.add(into_header, 0x1af4, 0x1000, 0, 0);
        bus.set(into_header, STATUS, u32::from(STATUS_CAPABILITIES) << 16);
        bus.set(into_header, CAPABILITIES_POINTER, 0x10);
        let found = enumerate(&bus, 0, 0);
        assert_eq!(found.functions()[0].capability_count, 2);
        assert!(found.functions()[0].capabilities_truncated);
        assert_eq!(found.functions()[1].capability_count, 0);
        assert!(found.functions()[1].capabilities_truncated);
    }

    #[test]
    fn msi_and_msix_programming() {
        let bus = FakeBus::default();
        let device = PciAddress::new(0, 2, 0);
        bus.add(device, 0x1af4, 0x1000, 0, 0);
        bus.set(device, 0x50, u32::from(MSI_CONTROL_64BIT) << 16 | 0x05);
        enable_msi(&bus, device, 0x50, (0xfee0_3000, 0x41));
        assert_eq!(bus.read32(device, 0x54), 0xfee0_3000);
        assert_eq!(bus.read32(device, 0x58), 0);
        assert_eq!(bus.read16(device, 0x5c), 0x41);
        assert_eq!(bus.read16(device, 0x52) & MSI_CONTROL_ENABLE, MSI_CONTROL_ENABLE);
        assert_ne!(bus.read16(device, COMMAND) & COMMAND_INTERRUPT_DISABLE, 0);
        bus.set(device, 0x60, (u32::from(MSIX_CONTROL_FUNCTION_MASK) | 2) << 16 | 0x11);
        bus.set(device, 0x64, 0x2001);
        let table = msix_table(&bus, device, 0x60);
        assert_eq!(table, MsixTable { bar: 1, offset: 0x2000, entries: 3 });
        enable_msix(&bus, device, 0x60);
        let control = bus.read16(device, 0x62);
        assert_eq!(control & (MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK), MSIX_CONTROL_ENABLE);
    }

    fn q35_functions() -> Vec<(PciAddress, u16, u16)> {
        vec![
            (PciAddress::new(0, 0, 0), 0x8086, 0x29c0),
            (PciAddress::new(0, 1, 0), 0x1af4, 0x1044),
            (PciAddress::new(0, 0x1f, 0), 0x8086, 0x2918),
        ]
    }

    #[test]
    fn q35_intx_routes_to_pirq_e_to_h() {
        let routing = IntxRouting::detect(q35_functions().into_iter()).expect("q35");
        assert_eq!(routing, IntxRouting::Q35);
        let gsi = |device: u8, pin: u8| routing.route(PciAddress::new(0, device, 0), pin).map(|r| r.gsi);
        // QEMU's ich9_cc_init: PIRQ (slot + pin - 1) % 4 + 4, GSI 16 + PIRQ.
        assert_eq!(gsi(0, 1), Ok(20));
        assert_eq!(gsi(1, 1), Ok(21));
        assert_eq!(gsi(2, 1), Ok(22));
        assert_eq!(gsi(3, 1), Ok(23));
        assert_eq!(gsi(4, 1), Ok(20));
        assert_eq!(gsi(1, 4), Ok(20));
        assert_eq!(gsi(24, 2), Ok(21));
        let route = routing.route(PciAddress::new(0, 1, 0), 1).unwrap();
        assert!(route.level && !route.active_low, "QEMU's GSI links are level, active high");
    }

    #[test]
    fn intx_without_a_known_route_says_why() {
        assert_eq!(IntxRouting::detect(q35_functions().into_iter().filter(|f| f.0.device != 0x1f)), None);
        // Something else at 00:1f.0 is not the ICH9 LPC bridge.
        let other = [(PciAddress::new(0, 0x1f, 0), 0x8086, 0x7000)];
        assert_eq!(IntxRouting::detect(other.into_iter()), None);
        let q35 = IntxRouting::Q35;
        assert_eq!(q35.route(PciAddress::new(0, 1, 0), 0), Err(IntxError::NoPin(0)));
        assert_eq!(q35.route(PciAddress::new(0, 1, 0), 5), Err(IntxError::NoPin(5)));
        let behind = PciAddress::new(1, 0, 0);
        assert_eq!(q35.route(behind, 1), Err(IntxError::BehindBridge(behind)));
        let segment = PciAddress { segment: 1, ..PciAddress::new(0, 1, 0) };
        assert_eq!(q35.route(segment, 1), Err(IntxError::BehindBridge(segment)));
        assert_eq!(q35.route(PciAddress::new(0, 25, 0), 1), Err(IntxError::ChipsetSlot(25)));
        assert_eq!(IntxError::UnknownChipset.to_string(), "INTx routing unknown on this chipset (not QEMU q35)");
    }
}

/// A BAR over RAM, firmware memory or the image: the decision the kernel's
/// PCI discovery takes (the device is left out), with garbled BARs.
#[cfg(test)]
mod bad_bar_tests {
    use super::*;
    use crate::memory_map::{DeviceMemoryRules, DeviceRangeError, MemoryMap, RegionKind};

    /// QEMU q35 with 128 MiB: RAM below 0x8000000, the image at 1 MiB, the
    /// ECAM window reserved, ACPI tables at the top of RAM.
    fn q35_map() -> MemoryMap {
        let mut map = MemoryMap::new();
        map.push(0, 0x9fc00, RegionKind::Usable).unwrap();
        map.push(0x10_0000, 0x7ee_0000, RegionKind::Usable).unwrap();
        map.push(0x7fe_0000, 0x2_0000, RegionKind::AcpiReclaimable).unwrap();
        map.push(0xb000_0000, 0x1000_0000, RegionKind::Reserved).unwrap();
        map.push(0xfffc_0000, 0x4_0000, RegionKind::Reserved).unwrap();
        map.normalize();
        map
    }

    fn rules(map: &MemoryMap) -> DeviceMemoryRules<'_> {
        DeviceMemoryRules { low_end: 1 << 20, image: (0x10_0000, 0x40_0000), map: Some(map), limit: 1 << 48 }
    }

    fn memory(address: u64, size: u64) -> Bar {
        Bar::Memory { address, size, prefetchable: false, wide: address > u64::from(u32::MAX) }
    }

    fn verdict(bars: &[Bar]) -> Option<(usize, DeviceRangeError)> {
        let map = q35_map();
        let rules = rules(&map);
        bad_bar(bars, |start, size| rules.check(start, size))
    }

    #[test]
    fn bars_where_qemu_puts_them_are_kept() {
        // virtio-rng-pci on q35: BAR 4 (64-bit, prefetchable) at 0xfe000000, 16 KiB.
        let bars =
            [Bar::None, memory(0xfebd_1000, 0x1000), Bar::None, Bar::None, memory(0xfe00_0000, 0x4000), Bar::None];
        assert_eq!(verdict(&bars), None);
        // cloud-hypervisor: above 4 GiB; a reserved range may be mapped.
        assert_eq!(verdict(&[memory(0x2_0000_0000, 0x8_0000)]), None);
        assert_eq!(verdict(&[memory(0xb000_0000, 0x1000)]), None);
        // Unassigned BARs and I/O BARs are never mapped, so never refused.
        assert_eq!(verdict(&[memory(0, 0x1000), Bar::None]), None);
    }

    #[test]
    fn bars_over_ram_firmware_or_the_image_are_refused() {
        let cases: &[(u64, u64, DeviceRangeError)] = &[
            // Over RAM (one page and a range that ends inside it).
            (0x200_0000, 0x1000, DeviceRangeError::Overlaps((0x10_0000, 0x7fe_0000))),
            (0x7f0_0000, 0x20_0000, DeviceRangeError::Overlaps((0x10_0000, 0x7fe_0000))),
            // Over the kernel image, and over low memory.
            (0x20_0000, 0x1000, DeviceRangeError::Overlaps((0x10_0000, 0x40_0000))),
            (0xa_0000, 0x2_0000, DeviceRangeError::Overlaps((0, 1 << 20))),
            // Over the ACPI tables.
            (0x7ff_f000, 0x2000, DeviceRangeError::Overlaps((0x7fe_0000, 0x800_0000))),
            // Garbled: size 0, wrapping, past the physical address width.
            (0xfe00_0000, 0, DeviceRangeError::Empty),
            (0xffff_ffff_ffff_f000, 0x2000, DeviceRangeError::Empty),
            (0xffff_ffff_0000_0000, 0x1000, DeviceRangeError::TooHigh),
            ((1 << 48) - 0x1000, 0x2000, DeviceRangeError::TooHigh),
        ];
        for &(address, size, error) in cases {
            let bars = [memory(0xfebd_1000, 0x1000), Bar::None, memory(address, size)];
            assert_eq!(verdict(&bars), Some((2, error)), "BAR at {address:#x}+{size:#x}");
        }
        // The first bad BAR is the one reported.
        assert_eq!(
            verdict(&[memory(0x20_0000, 0x1000), memory(0x200_0000, 0x1000)]),
            Some((0, DeviceRangeError::Overlaps((0x10_0000, 0x40_0000))))
        );
    }

    #[test]
    fn without_a_memory_map_low_memory_and_the_image_are_still_refused() {
        let rules = DeviceMemoryRules { map: None, ..rules(&q35_map()) };
        assert_eq!(rules.check(0x200_0000, 0x1000), Ok(()));
        assert_eq!(rules.check(0x30_0000, 0x1000), Err(DeviceRangeError::Overlaps((0x10_0000, 0x40_0000))));
        assert_eq!(rules.check(0x1000, 0x1000), Err(DeviceRangeError::Overlaps((0, 1 << 20))));
    }
}
