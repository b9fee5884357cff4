//! PCI on this machine: configuration space through ECAM (regions from the
//! ACPI MCFG) or, without one, port I/O 0xCF8/0xCFC; enumeration at boot;
//! BARs checked against RAM and mapped through [`DeviceMemory`]; MSI and
//! MSI-X programmed to deliver to a CPU.
//!
//! The walk itself (enumeration, BAR sizing, capabilities, MSI layout) is
//! `toro_core::pci`, host-tested; this file is the machine side.
//!
//! Who may touch what: ECAM is memory-mapped, so any CPU may read or write
//! a function's configuration space (a driver does so on its owner CPU).
//! Port I/O is an address/data pair shared by all CPUs, so without ECAM
//! every access runs on the boot CPU (a message from other CPUs; thread
//! context only there). The ECAM mappings and the list of functions are
//! made once at boot and read-only afterwards.

use alloc::vec::Vec;
use core::cell::RefCell;

use toro_core::pci::{self, Bar, ConfigSpace, Function, McfgSummary, MsixTable, PciAddress};

use super::memory::{self, DeviceMemory, MapError};
use crate::arch::{pci_port, percpu};
use crate::interrupts::MsiMessage;
use crate::once::BootCell;

pub use toro_core::pci::{
    Capability, IntxError, IntxRoute, IntxRouting, CAPABILITY_MSI, CAPABILITY_MSIX, CAPABILITY_VENDOR,
};

/// Why a PCI operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// The BAR index is past 5, not implemented, or the upper half of a
    /// 64-bit BAR.
    NoSuchBar(u8),
    /// The BAR is I/O space (map only memory BARs).
    IoBar(u8),
    /// Firmware left the BAR unassigned (address 0).
    Unassigned(u8),
    /// Mapping the BAR failed.
    Map(MapError),
    /// The function has no such capability.
    NoCapability(u8),
    /// Port I/O config access from another CPU could not reach the boot CPU.
    Unreachable,
}

impl core::fmt::Display for PciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchBar(bar) => write!(f, "no BAR {bar}"),
            Self::IoBar(bar) => write!(f, "BAR {bar} is I/O space"),
            Self::Unassigned(bar) => write!(f, "BAR {bar} is unassigned"),
            Self::Map(error) => write!(f, "{error}"),
            Self::NoCapability(id) => write!(f, "no capability {id:#x}"),
            Self::Unreachable => write!(f, "the boot CPU (port I/O configuration access) is unreachable"),
        }
    }
}

/// ECAM mappings made at boot: one per scanned bus.
struct EcamBus {
    segment: u16,
    bus: u8,
    memory: DeviceMemory,
}

/// What boot found.
struct Pci {
    mcfg: Option<McfgSummary>,
    ecam: Vec<EcamBus>,
    functions: Vec<PciDevice>,
}

static MCFG: BootCell<Option<McfgSummary>> = BootCell::new();
static PCI: BootCell<Pci> = BootCell::new();

/// Keeps the firmware's MCFG (boot, while ACPI is read).
pub(crate) fn set_mcfg(mcfg: Option<McfgSummary>) {
    if let Some(mcfg) = &mcfg {
        if mcfg.bad_entries > 0 || mcfg.trailing_bytes > 0 {
            log::warn!(
                "ACPI MCFG: {} garbled entries left out ({} stray bytes at the end)",
                mcfg.bad_entries,
                mcfg.trailing_bytes
            );
        }
        for region in mcfg.regions() {
            log::info!(
                "ACPI MCFG: ECAM at {:#x}, segment {}, buses {}..={}",
                region.base,
                region.segment,
                region.start_bus,
                region.end_bus
            );
        }
    }
    MCFG.set(mcfg);
}

/// Port I/O configuration access (boot CPU).
struct PortIo;

impl ConfigSpace for PortIo {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        if address.segment != 0 {
            return u32::MAX;
        }
        pci_port::read(address.port_address(offset))
    }
    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        if address.segment == 0 {
            pci_port::write(address.port_address(offset), value);
        }
    }
}

/// Configuration access at boot: ECAM where the MCFG covers the bus
/// (mapping each bus when first touched), else port I/O.
struct BootAccess<'a> {
    mcfg: Option<&'a McfgSummary>,
    ecam: RefCell<Vec<EcamBus>>,
}

fn ecam_address(ecam: &[EcamBus], address: PciAddress, offset: u16) -> Option<u64> {
    let bus = ecam.iter().find(|b| b.segment == address.segment && b.bus == address.bus)?;
    Some(
        bus.memory.address()
            + u64::from(address.device) * 8 * pci::ECAM_FUNCTION_BYTES
            + u64::from(address.function) * pci::ECAM_FUNCTION_BYTES
            + u64::from(offset & 0xffc),
    )
}

impl BootAccess<'_> {
    fn address(&self, address: PciAddress, offset: u16) -> Option<u64> {
        let region = self.mcfg?.region_for(address)?;
        if let Some(found) = ecam_address(&self.ecam.borrow(), address, offset) {
            return Some(found);
        }
        let base = region.address_of(PciAddress { device: 0, function: 0, ..address }, 0)?;
        match DeviceMemory::map(base, pci::ECAM_BUS_BYTES) {
            Ok(memory) => {
                self.ecam.borrow_mut().push(EcamBus { segment: address.segment, bus: address.bus, memory });
                ecam_address(&self.ecam.borrow(), address, offset)
            }
            Err(error) => {
                log::warn!("PCI: cannot map ECAM of bus {:02x} at {base:#x}: {error}; using port I/O", address.bus);
                None
            }
        }
    }
}

impl ConfigSpace for BootAccess<'_> {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        match self.address(address, offset) {
            // SAFETY: inside an ECAM bus mapping made above (uncached),
            // aligned to 4.
            Some(at) => unsafe { core::ptr::read_volatile(at as *const u32) },
            None => PortIo.read32(address, offset),
        }
    }
    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        match self.address(address, offset) {
            // SAFETY: as in `read32`.
            Some(at) => unsafe { core::ptr::write_volatile(at as *mut u32, value) },
            None => PortIo.write32(address, offset, value),
        }
    }
}

/// Configuration access after boot, from any CPU (see the module docs).
struct Access;

impl ConfigSpace for Access {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        if let Some(at) = PCI.get().and_then(|pci| ecam_address(&pci.ecam, address, offset)) {
            // SAFETY: an ECAM mapping made at boot and kept forever.
            return unsafe { core::ptr::read_volatile(at as *const u32) };
        }
        if percpu::current_index() == 0 {
            return PortIo.read32(address, offset);
        }
        crate::service::run_on(0, move || PortIo.read32(address, offset)).unwrap_or(u32::MAX)
    }
    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        if let Some(at) = PCI.get().and_then(|pci| ecam_address(&pci.ecam, address, offset)) {
            // SAFETY: as in `read32`.
            unsafe { core::ptr::write_volatile(at as *mut u32, value) };
            return;
        }
        if percpu::current_index() == 0 {
            PortIo.write32(address, offset, value);
        } else {
            let _ = crate::service::run_on(0, move || PortIo.write32(address, offset, value));
        }
    }
}

/// A PCI function found at boot: its header, sized BARs and capabilities,
/// and configuration access for its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciDevice {
    pub function: Function,
}

impl PciDevice {
    pub fn address(&self) -> PciAddress {
        self.function.address
    }
    pub fn vendor(&self) -> u16 {
        self.function.vendor
    }
    pub fn device(&self) -> u16 {
        self.function.device
    }
    /// Class, subclass, programming interface.
    pub fn class(&self) -> (u8, u8, u8) {
        self.function.class
    }
    /// The sized BAR `index`.
    pub fn bar(&self, index: u8) -> Bar {
        self.function.bars.get(index as usize).copied().unwrap_or(Bar::None)
    }
    /// Capabilities with `id` (virtio-pci: several `CAPABILITY_VENDOR`).
    pub fn capabilities_with(&self, id: u8) -> impl Iterator<Item = Capability> + '_ {
        self.function.capabilities_with(id)
    }
    pub fn capabilities(&self) -> &[Capability] {
        self.function.capabilities()
    }

    pub fn read32(&self, offset: u16) -> u32 {
        Access.read32(self.address(), offset)
    }
    pub fn read16(&self, offset: u16) -> u16 {
        Access.read16(self.address(), offset)
    }
    pub fn read8(&self, offset: u16) -> u8 {
        Access.read8(self.address(), offset)
    }
    pub fn write32(&self, offset: u16, value: u32) {
        Access.write32(self.address(), offset, value)
    }
    pub fn write16(&self, offset: u16, value: u16) {
        Access.write16(self.address(), offset, value)
    }

    /// Where this function's INTx pin arrives at the I/O APIC, on a
    /// chipset whose routing is known without ACPI's `_PRT` (QEMU's q35:
    /// `toro_core::pci::IntxRouting`).
    pub fn intx_route(&self) -> Result<IntxRoute, IntxError> {
        let functions = devices().iter().map(|d| (d.address(), d.vendor(), d.device()));
        let routing = IntxRouting::detect(functions).ok_or(IntxError::UnknownChipset)?;
        routing.route(self.address(), self.function.interrupt_pin)
    }

    /// Lets the function assert INTx (clears the command register's
    /// interrupt-disable bit).
    pub fn enable_intx(&self) {
        let command = self.read16(pci::COMMAND);
        self.write16(pci::COMMAND, command & !pci::COMMAND_INTERRUPT_DISABLE);
    }

    /// Turns on memory decoding and bus mastering (DMA) for the device.
    pub fn enable(&self) {
        let command = self.read16(pci::COMMAND);
        self.write16(pci::COMMAND, command | pci::COMMAND_MEMORY_SPACE | pci::COMMAND_BUS_MASTER);
    }

    /// Maps memory BAR `index` (uncached; dropping it unmaps it).
    pub fn map_bar(&self, index: u8) -> Result<DeviceMemory, PciError> {
        match self.bar(index) {
            Bar::None => Err(PciError::NoSuchBar(index)),
            Bar::Io { .. } => Err(PciError::IoBar(index)),
            Bar::Memory { address: 0, .. } => Err(PciError::Unassigned(index)),
            Bar::Memory { address, size, .. } => DeviceMemory::map(address, size).map_err(PciError::Map),
        }
    }

    /// Programs and enables MSI with `message` (INTx off). If `message`
    /// is for this CPU, a storm on its vector also turns this function's
    /// MSI off (`set_source_mask`).
    pub fn enable_msi(&self, message: MsiMessage) -> Result<(), PciError> {
        let capability = self.function.capability(CAPABILITY_MSI).ok_or(PciError::NoCapability(CAPABILITY_MSI))?;
        pci::enable_msi(&Access, self.address(), capability.offset, (message.address, message.data));
        self.mask_on_storm(message, SourceKind::Msi, capability.offset);
        Ok(())
    }

    /// Writes MSI-X table entry `entry` (in the BAR mapped as `bar`, table
    /// at `table.offset`) with `message`, unmasked (PCI 3.0, 6.8.2.6-9).
    /// If `message` is for this CPU, a storm on its vector also masks this
    /// function's MSI-X (its function mask: every vector of the function,
    /// the device is left out).
    pub fn write_msix_entry(&self, bar: &mut DeviceMemory, table: &MsixTable, entry: u16, message: MsiMessage) {
        let base = u64::from(table.offset) + u64::from(entry) * pci::MSIX_ENTRY_BYTES;
        bar.write::<u32>(base + 12, pci::MSIX_ENTRY_MASKED);
        bar.write::<u32>(base, message.address as u32);
        bar.write::<u32>(base + 4, (message.address >> 32) as u32);
        bar.write::<u32>(base + 8, message.data);
        bar.write::<u32>(base + 12, 0);
        if let Some(capability) = self.function.capability(CAPABILITY_MSIX) {
            self.mask_on_storm(message, SourceKind::Msix, capability.offset);
        }
    }

    /// Records, in this CPU's interrupt table, how to silence this
    /// function if `message`'s vector storms (only for a message to this
    /// CPU: the table is per CPU, and drivers program their messages on
    /// the owner CPU).
    fn mask_on_storm(&self, message: MsiMessage, kind: SourceKind, capability: u16) {
        let (apic_id, vector) = (((message.address >> 12) & 0xff) as u32, message.data as u8);
        if percpu::current().apic_id != apic_id {
            return;
        }
        let data = StormSource { address: self.address(), kind, capability }.pack();
        let _ = crate::arch::irq::set_source_mask(vector, mask_storming_source, data);
    }

    /// Where the MSI-X table is.
    pub fn msix_table(&self) -> Result<MsixTable, PciError> {
        let capability = self.function.capability(CAPABILITY_MSIX).ok_or(PciError::NoCapability(CAPABILITY_MSIX))?;
        Ok(pci::msix_table(&Access, self.address(), capability.offset))
    }

    /// Enables MSI-X (INTx off). Program the entries first
    /// ([`Self::write_msix_entry`]).
    pub fn enable_msix(&self) -> Result<(), PciError> {
        let capability = self.function.capability(CAPABILITY_MSIX).ok_or(PciError::NoCapability(CAPABILITY_MSIX))?;
        pci::enable_msix(&Access, self.address(), capability.offset);
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceKind {
    Msi,
    Msix,
}

/// A function whose MSI or MSI-X vector may storm, packed into a word for
/// the interrupt table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StormSource {
    address: PciAddress,
    kind: SourceKind,
    capability: u16,
}

impl StormSource {
    /// Bits 0-11 capability offset, 12 MSI-X, 16-18 function, 19-23
    /// device, 24-31 bus, 32-47 segment.
    fn pack(self) -> usize {
        let address = self.address;
        (usize::from(self.capability) & 0xfff)
            | usize::from(self.kind == SourceKind::Msix) << 12
            | usize::from(address.function & 7) << 16
            | usize::from(address.device & 31) << 19
            | usize::from(address.bus) << 24
            | usize::from(address.segment) << 32
    }

    fn unpack(data: usize) -> Self {
        Self {
            address: PciAddress {
                segment: (data >> 32) as u16,
                bus: (data >> 24) as u8,
                device: ((data >> 19) & 31) as u8,
                function: ((data >> 16) & 7) as u8,
            },
            kind: if data & 1 << 12 != 0 { SourceKind::Msix } else { SourceKind::Msi },
            capability: (data & 0xfff) as u16,
        }
    }

    /// Stops the function's messages: MSI-X function mask, or MSI off
    /// (INTx stays disabled: `enable_msi` set the command register's bit).
    fn silence(self) {
        let control = Access.read16(self.address, self.capability + 2);
        let quiet = match self.kind {
            SourceKind::Msix => control | pci::MSIX_CONTROL_FUNCTION_MASK,
            SourceKind::Msi => control & !pci::MSI_CONTROL_ENABLE,
        };
        Access.write16(self.address, self.capability + 2, quiet);
    }
}

/// After a storm on an MSI or MSI-X vector (scheduler context, the owner
/// CPU): the function that sends it is silenced and left out. Config
/// space through ECAM is written here; by port I/O it belongs to the boot
/// CPU, so the write travels there as a message (no waiting here).
fn mask_storming_source(data: usize) {
    let source = StormSource::unpack(data);
    log::warn!(
        "interrupt storm: PCI {} {} masked at the function ({}); device left out",
        source.address,
        match source.kind {
            SourceKind::Msix => "MSI-X",
            SourceKind::Msi => "MSI",
        },
        match source.kind {
            SourceKind::Msix => "function mask",
            SourceKind::Msi => "MSI disabled",
        }
    );
    if has_ecam() || percpu::current_index() == 0 {
        source.silence();
    } else {
        // SAFETY: the message carries the packed word, points to nothing.
        let _ = unsafe { crate::cpu::on_cpu(0, data, silence_job) };
    }
}

unsafe fn silence_job(data: usize) {
    StormSource::unpack(data).silence();
}

/// The functions found at boot (empty before discovery).
pub fn devices() -> &'static [PciDevice] {
    PCI.get().map_or(&[], |pci| &pci.functions)
}

/// The function at `address`, if found at boot.
pub fn device(address: PciAddress) -> Option<&'static PciDevice> {
    devices().iter().find(|d| d.address() == address)
}

/// Whether the machine had an MCFG (ECAM) at boot.
pub fn has_ecam() -> bool {
    PCI.get().is_some_and(|pci| pci.mcfg.is_some())
}

/// Enumerates every segment the MCFG lists (segment 0 by port I/O without
/// one). Functions whose memory BARs overlap RAM or the kernel image are
/// left out with a log line. Boot CPU, once, before `main`.
pub(crate) fn discover() -> &'static [PciDevice] {
    let mcfg = MCFG.get().copied().flatten();
    let access = BootAccess { mcfg: mcfg.as_ref(), ecam: RefCell::new(Vec::new()) };
    let mut segments: Vec<(u16, u8)> = match &mcfg {
        Some(mcfg) => mcfg.regions().iter().map(|r| (r.segment, r.start_bus)).collect(),
        None => alloc::vec![(0, 0)],
    };
    segments.dedup_by_key(|s| s.0);
    let mut functions = Vec::new();
    for (segment, first_bus) in segments {
        let found = pci::enumerate(&access, segment, first_bus);
        if found.over_limit > 0 || found.bad_bridges > 0 {
            log::warn!(
                "PCI segment {segment}: {} functions over the limit, {} bridges with impossible bus numbers (not followed)",
                found.over_limit,
                found.bad_bridges
            );
        }
        for function in found.functions() {
            if let Some(reason) = bad_bars(function) {
                log::warn!(
                    "PCI {} {:04x}:{:04x}: {reason}; device left out",
                    function.address,
                    function.vendor,
                    function.device
                );
                continue;
            }
            if function.capabilities_truncated {
                log::warn!("PCI {}: capability list cut short (a loop or a bad pointer)", function.address);
            }
            functions.push(PciDevice { function: *function });
        }
    }
    PCI.set(Pci { mcfg, ecam: access.ecam.into_inner(), functions });
    devices()
}

/// Why a function's BARs make it unusable: a memory BAR over RAM, firmware
/// memory or the image.
fn bad_bars(function: &Function) -> Option<alloc::string::String> {
    pci::bad_bar(&function.bars, memory::check_range).map(|(index, error)| alloc::format!("BAR {index}: {error}"))
}
