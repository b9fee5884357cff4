//! Devices: device memory, discovery (PCI), who owns what, the boot report.
//!
//! Every device is owned by one CPU (docs/devices.md): its driver runs as a
//! service there (`crate::service`), its interrupts are routed there
//! (`crate::interrupts`), its registers are mapped by a [`DeviceMemory`]
//! the service keeps. The list of devices is made at boot, on the boot CPU,
//! before `main` ([`add`]; PCI adds its functions, the virtio-mmio
//! discovery its devices); owners come from `toro.dedicate=...` on the
//! command line, else virtio devices are spread over the CPUs (network
//! cards by their own count, so each lands on its own CPU; chipset functions
//! with no driver are listed on the boot CPU). After boot the
//! list is read-only: [`list`], [`owner`].

pub mod memory;
pub mod pci;

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use toro_core::command_line::CommandLine;
use toro_core::dedicate::{self, DeviceKey};
use toro_core::pci::PciAddress;

pub use memory::{DeviceMemory, MapError, Mmio};

/// How a device is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A PCI function.
    Pci(PciAddress),
    /// A virtio-mmio device: its register window.
    Mmio { address: u64, size: u64 },
}

/// How a device interrupts (as discovered; its driver may switch to MSI-X).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptLine {
    /// None known.
    None,
    /// An I/O APIC line.
    Gsi(u32),
    /// PCI INTx pin (1 = INTA#), and MSI / MSI-X (table entries) capability.
    Pci { pin: u8, msi: bool, msix_entries: u16 },
}

/// A device in the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub transport: Transport,
    /// What it is: a virtio kind (`net`, `blk`, `rng`, `console`, `fs`,
    /// `vsock`, ...) or a PCI class name (`host-bridge`, `pci-bridge`, ...).
    pub kind: &'static str,
    pub interrupt: InterruptLine,
    /// The CPU whose service drives it.
    pub owner: usize,
}

/// Why a device could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The list is closed (after boot) or this is not the boot CPU.
    Closed,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Closed => write!(f, "devices are added on the boot CPU, before main"),
        }
    }
}

/// The list: written by the boot CPU until `close`, read-only afterwards.
struct List(UnsafeCell<Vec<DeviceInfo>>);
// SAFETY: written only by the boot CPU before `CLOSED` is set (release);
// read by others only after they see it set (acquire), or by the boot CPU.
unsafe impl Sync for List {}

static LIST: List = List(UnsafeCell::new(Vec::new()));
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Adds a device found at boot; returns its owner CPU (chosen by
/// `toro.dedicate`, else spread over the CPUs).
pub fn add(transport: Transport, kind: &'static str, interrupt: InterruptLine) -> Result<usize, DeviceError> {
    if CLOSED.load(Ordering::Acquire) || crate::cpu::current() != 0 {
        return Err(DeviceError::Closed);
    }
    // SAFETY: boot CPU, before `close`: the only writer, no reader elsewhere.
    let list = unsafe { &mut *LIST.0.get() };
    let kind_index = list.iter().filter(|d| d.kind == kind).count();
    let key = DeviceKey {
        pci: match transport {
            Transport::Pci(address) => Some(address),
            Transport::Mmio { .. } => None,
        },
        mmio: match transport {
            Transport::Mmio { address, .. } => Some(address),
            Transport::Pci(_) => None,
        },
        kind,
        kind_index,
    };
    let cpus = crate::cpu::count();
    let rule = CommandLine::new(crate::system::command_line()).get("toro.dedicate").unwrap_or("");
    // Spread only what Toro drives (virtio devices); chipset functions
    // with no driver (bridges, SATA, SMBus) are listed on the boot CPU.
    let driven = list.iter().filter(|d| is_driven(d.kind)).count();
    let owner = dedicate::owner(rule, &key, cpus).unwrap_or_else(|| {
        if is_driven(kind) {
            dedicate::default_owner(&key, driven, cpus)
        } else {
            0
        }
    });
    list.push(DeviceInfo { transport, kind, interrupt, owner });
    Ok(owner)
}

/// Every device found (read-only after boot).
pub fn list() -> &'static [DeviceInfo] {
    if CLOSED.load(Ordering::Acquire) || crate::cpu::current() == 0 {
        // SAFETY: see `List`.
        unsafe { &*LIST.0.get() }
    } else {
        &[]
    }
}

/// The owner CPU of the device reached by `transport`.
pub fn owner(transport: Transport) -> Option<usize> {
    list().iter().find(|d| d.transport == transport).map(|d| d.owner)
}

/// The devices of `kind`, in discovery order.
pub fn of_kind(kind: &str) -> impl Iterator<Item = &'static DeviceInfo> + '_ {
    list().iter().filter(move |d| d.kind == kind)
}

/// Whether Toro has (or is meant to have) a driver for `kind`: the virtio
/// kinds.
fn is_driven(kind: &str) -> bool {
    VIRTIO_KINDS.contains(&kind)
}

/// The kinds `virtio_kind` names.
const VIRTIO_KINDS: &[&str] =
    &["net", "blk", "console", "rng", "balloon", "9p", "gpu", "input", "vsock", "fs", "virtio"];

/// The virtio device kind of a virtio-pci device ID (virtio 1.2, 4.1.2.1:
/// transitional 0x1000 + n, modern 0x1040 + device type), else `None`.
pub fn virtio_pci_kind(device: u16) -> Option<&'static str> {
    toro_core::virtio::pci::device_type(device).map(|device_type| virtio_kind(device_type as u16))
}

/// The name of virtio device type `device_type` (virtio 1.2, 5).
pub fn virtio_kind(device_type: u16) -> &'static str {
    match device_type {
        1 => "net",
        2 => "blk",
        3 => "console",
        4 => "rng",
        5 => "balloon",
        9 => "9p",
        16 => "gpu",
        18 => "input",
        19 => "vsock",
        26 => "fs",
        _ => "virtio",
    }
}

/// A name for PCI class `class`/`subclass` (PCI Code and ID Assignment
/// Specification, 1).
fn pci_class_kind(class: u8, subclass: u8) -> &'static str {
    match (class, subclass) {
        (0x01, 0x06) => "sata",
        (0x01, _) => "storage",
        (0x02, _) => "network",
        (0x03, _) => "display",
        (0x06, 0x00) => "host-bridge",
        (0x06, 0x01) => "isa-bridge",
        (0x06, 0x04) => "pci-bridge",
        (0x06, _) => "bridge",
        (0x0c, 0x05) => "smbus",
        (0x0c, 0x03) => "usb",
        _ => "pci",
    }
}

/// The virtio vendor ID.
const VIRTIO_VENDOR: u16 = 0x1af4;

/// Finds the machine's devices: PCI now (virtio-mmio adds its own through
/// [`add`]). Boot CPU, after every CPU runs, before `main`.
pub(crate) fn discover() {
    let rule = CommandLine::new(crate::system::command_line()).get("toro.dedicate").unwrap_or("");
    for error in dedicate::entries(rule).filter_map(Result::err) {
        log::warn!("{error}; ignored");
    }
    for device in pci::discover() {
        let function = device.function;
        let kind = if function.vendor == VIRTIO_VENDOR {
            virtio_pci_kind(function.device).unwrap_or("virtio")
        } else {
            pci_class_kind(function.class.0, function.class.1)
        };
        let interrupt = InterruptLine::Pci {
            pin: function.interrupt_pin,
            msi: function.capability(pci::CAPABILITY_MSI).is_some(),
            msix_entries: device.msix_table().map_or(0, |t| t.entries),
        };
        let _ = add(Transport::Pci(function.address), kind, interrupt);
    }
}

/// Logs every device: transport, address, interrupt, owner (at
/// `toro.log=info`), and closes the list. Boot CPU, just before `main`.
pub(crate) fn report_and_close() {
    for device in list() {
        let interrupt = match device.interrupt {
            InterruptLine::None => alloc::string::String::from("none"),
            InterruptLine::Gsi(gsi) => alloc::format!("GSI {gsi}"),
            InterruptLine::Pci { pin, msi, msix_entries } => {
                let mut text = match pin {
                    1..=4 => alloc::format!("INT{}", (b'A' + pin - 1) as char),
                    _ => alloc::string::String::from("no INTx"),
                };
                if msi {
                    text.push_str(", MSI");
                }
                if msix_entries > 0 {
                    text.push_str(&alloc::format!(", MSI-X x{msix_entries}"));
                }
                text
            }
        };
        match device.transport {
            Transport::Pci(address) => {
                let ids = pci::device(address).map_or((0, 0), |d| (d.vendor(), d.device()));
                log::info!(
                    "device: pci {address} {:04x}:{:04x} {} interrupt {interrupt}, owner cpu {}",
                    ids.0,
                    ids.1,
                    device.kind,
                    device.owner
                );
            }
            Transport::Mmio { address, size } => log::info!(
                "device: virtio-mmio {address:#x}+{size:#x} {} interrupt {interrupt}, owner cpu {}",
                device.kind,
                device.owner
            ),
        }
    }
    log::info!("devices: {} found", list().len());
    CLOSED.store(true, Ordering::Release);
}
