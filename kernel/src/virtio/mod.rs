//! virtio: transports (virtio-mmio v2, virtio-pci modern), feature negotiation, split virtqueues, and device discovery.
//!
//! The layer device drivers (rng here; net and blk elsewhere) build on:
//!
//! - [`Transport`]: one device's registers, whatever the bus: reset,
//!   [`Transport::negotiate`] (each driver states the features it wants;
//!   `VIRTIO_F_VERSION_1` is always required, legacy devices are refused),
//!   queue set-up ([`Transport::setup_queue`], with an MSI-X vector per queue
//!   on PCI), notifications, interrupt acknowledgement, device configuration.
//! - [`VirtQueue`]: a split queue in the owner CPU's memory, the
//!   bookkeeping of `toro_core::virtio::queue` plus its notify register.
//! - [`discovery`]: virtio-mmio devices from the ACPI DSDT and the
//!   `virtio_mmio.device=` command line, and virtio-pci functions from the
//!   PCI enumeration, probed and listed at boot.
//! - [`bind_interrupts`]: a driver's interrupts bound to its service while
//!   it starts (the GSI of a virtio-mmio device; MSI-X vectors on PCI, to
//!   give to [`Transport::set_queue_interrupt`] before the queues are set up).
//! - [`rng`]: virtio-rng as a service on its owner CPU.
//! - [`blk`]: virtio-blk as a service on its owner CPU (the disk under `toro::fs`).
//! - [`fs`]: virtio-fs as a service on its owner CPU (a host folder under `toro::fs`).
//!
//! Why not `virtio-drivers` 0.13: its queue and transports own memory
//! through a global `Hal`, never write an MSI-X vector (cloud-hypervisor
//! offers only MSI-X), set up queues 0 and 1 only (no multi-queue) and its
//! net driver negotiates no offloads and spins in `send`. A dedicated CPU
//! needs the queue to be a value its owner holds, in its own memory, with
//! completions by token and the notification decision batched; see
//! `toro_core::virtio::queue` and docs/virtio.md.
//!
//! Ownership: a [`Transport`] and its queues belong to the device's owner
//! CPU (they live inside the driver's service value, `!Sync` by `&mut`
//! access); other CPUs reach the device only through the service handle.

pub mod blk;
pub mod discovery;
pub mod fs;
mod mmio;
mod pci;
mod queue;
pub mod rng;
mod transport;

use core::fmt;

pub use queue::VirtQueue;
pub use toro_core::virtio::queue::{Buffer, Completion, QueueError};
pub use transport::{Doorbell, InterruptCause, InterruptLine, QueuePlacement, Transport};

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    /// `ACKNOWLEDGE`: the guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// `DRIVER`: the guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// `DRIVER_OK`: the driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// `FEATURES_OK`: feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// `DEVICE_NEEDS_RESET`: the device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// `FAILED`: the guest gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Device-independent feature bits (virtio 1.2, section 6); device drivers add their own.
pub mod feature {
    /// `VIRTIO_F_INDIRECT_DESC` (28): indirect descriptor tables.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `VIRTIO_F_EVENT_IDX` (29): `used_event` / `avail_event` suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// `VIRTIO_F_VERSION_1` (32): a modern (1.0+) device; always required.
    pub const VERSION_1: u64 = 1 << 32;
    /// `VIRTIO_F_ACCESS_PLATFORM` (33): the device sits behind an IOMMU; not offered by Toro.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// `VIRTIO_F_RING_PACKED` (34): packed rings; Toro uses split rings.
    pub const RING_PACKED: u64 = 1 << 34;
}

/// Device types (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const ENTROPY: u32 = 4;
    /// Socket (vsock).
    pub const SOCKET: u32 = 19;
    /// File system (virtio-fs).
    pub const FS: u32 = 26;

    /// A short name for logs.
    pub fn name(id: u32) -> &'static str {
        match id {
            NET => "net",
            BLOCK => "blk",
            CONSOLE => "console",
            ENTROPY => "rng",
            SOCKET => "vsock",
            FS => "fs",
            _ => "other",
        }
    }
}

/// What went wrong with a virtio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// Its registers could not be mapped.
    Map(crate::devices::MapError),
    /// No virtio-mmio magic value (`0x74726976`) at the address.
    NotVirtio {
        /// The register block.
        address: u64,
    },
    /// A virtio-mmio version other than 2 (1 is legacy; QEMU needs
    /// `-global virtio-mmio.force-legacy=false` to offer 2).
    UnsupportedVersion(u32),
    /// The slot holds no device (device id 0).
    NoDevice,
    /// The device does not offer `VIRTIO_F_VERSION_1` (a legacy device).
    Legacy,
    /// The device did not accept the features (`FEATURES_OK` did not stay set).
    FeaturesRefused {
        /// What the driver asked for.
        wanted: u64,
    },
    /// A reset did not complete (status did not read 0) in time.
    ResetTimeout,
    /// The queue does not exist (its maximum size is 0).
    QueueUnavailable(u16),
    /// The device's maximum queue size is impossible (above 32768) or below what the driver needs.
    QueueSize {
        /// The queue.
        queue: u16,
        /// The device's maximum.
        maximum: u32,
        /// What the driver needs.
        needed: u16,
    },
    /// The device says it needs a reset, or broke the queue protocol.
    DeviceBroken(QueueError),
    /// The device did not complete a request in time; it was reset and left out.
    Timeout,
    /// The device was left out after an earlier failure.
    LeftOut,
    /// The service owning the device could not be reached or started.
    Service(crate::service::ServiceError),
    /// The interrupt could not be bound (vector, routing, MSI-X table).
    Interrupt,
    /// The transport lacks what was asked (an MSI-X vector on virtio-mmio, say).
    Unsupported,
    /// virtio-pci: the vendor capabilities name no usable structures.
    Layout(toro_core::virtio::pci::LayoutError),
    /// virtio-pci: a BAR or the MSI-X capability could not be used.
    Pci(crate::devices::pci::PciError),
    /// virtio-pci: the queue's doorbell lies outside the notify structure.
    Doorbell(u16),
    /// virtio-pci: no MSI-X, and no known route for its INTx pin.
    NoInterrupt(toro_core::pci::IntxError),
}

impl fmt::Display for VirtioError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Map(error) => write!(formatter, "cannot map its registers: {error:?}"),
            Self::NotVirtio { address } => write!(formatter, "no virtio-mmio magic value at {address:#x}"),
            Self::UnsupportedVersion(version) => write!(
                formatter,
                "virtio-mmio version {version} (only 2 is driven; QEMU: -global virtio-mmio.force-legacy=false)"
            ),
            Self::NoDevice => formatter.write_str("empty virtio-mmio slot"),
            Self::Legacy => formatter.write_str("legacy device (no VIRTIO_F_VERSION_1)"),
            Self::FeaturesRefused { wanted } => write!(formatter, "device refused features {wanted:#x}"),
            Self::ResetTimeout => formatter.write_str("device reset did not complete"),
            Self::QueueUnavailable(queue) => write!(formatter, "queue {queue} does not exist"),
            Self::QueueSize { queue, maximum, needed } => {
                write!(formatter, "queue {queue}: device maximum size {maximum}, driver needs {needed}")
            }
            Self::DeviceBroken(error) => write!(formatter, "device broke the queue protocol: {error}"),
            Self::Timeout => formatter.write_str("device did not complete a request in time; reset and left out"),
            Self::LeftOut => formatter.write_str("device left out after an earlier failure"),
            Self::Service(error) => write!(formatter, "device service: {error:?}"),
            Self::Interrupt => formatter.write_str("cannot bind the device's interrupt"),
            Self::Unsupported => formatter.write_str("not supported by this transport"),
            Self::Layout(error) => write!(formatter, "{error}"),
            Self::Pci(error) => write!(formatter, "{error}"),
            Self::Doorbell(queue) => write!(formatter, "queue {queue}: doorbell outside the notify structure"),
            Self::NoInterrupt(error) => write!(formatter, "no MSI-X, and no INTx route: {error}"),
        }
    }
}

impl core::error::Error for VirtioError {}

/// Binds the interrupts of a device on `line` to the service being
/// started (from its `init`, on the owner CPU, before the queues are set
/// up): the one GSI of a virtio-mmio device (routed to the owner at the
/// I/O APIC), or up to `vectors` MSI-X vectors (at most the table's
/// entries; at least one). The returned sources' numbers are what the
/// service's interrupt hook receives; for MSI-X, pass each `Bound::msi`
/// to [`Transport::set_queue_interrupt`].
pub fn bind_interrupts<S>(
    starting: &crate::service::Starting<S>,
    line: InterruptLine,
    vectors: u16,
) -> Result<alloc::vec::Vec<crate::service::Bound>, VirtioError> {
    use crate::service::InterruptSource;
    let sources = match line {
        InterruptLine::Gsi { gsi, level, active_low } => {
            alloc::vec![InterruptSource::Gsi { gsi, level, active_low }]
        }
        InterruptLine::Msix { entries } => {
            alloc::vec![InterruptSource::Msi; usize::from(vectors.clamp(1, entries.max(1)))]
        }
    };
    let mut bound = alloc::vec::Vec::new();
    for source in sources {
        match starting.bind_interrupt(source) {
            Ok(one) => bound.push(one),
            Err(error) => {
                log::warn!("virtio: interrupt {line:?} not bound: {error}");
                return Err(VirtioError::Interrupt);
            }
        }
    }
    Ok(bound)
}

/// The physical address of memory the kernel allocated (RAM is identity mapped).
pub(crate) fn physical_address<T: ?Sized>(pointer: *const T) -> u64 {
    pointer as *const u8 as u64
}

/// A full fence for the virtqueue hand-shakes: `mfence`, not a locked
/// instruction (see `toro_core::wake` on why it is passed in).
pub(crate) fn full_fence() {
    crate::arch::cpu::full_fence();
}
