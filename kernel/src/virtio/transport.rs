//! One virtio device's transport, whatever the bus: status, feature negotiation, queues, notifications, interrupts.
//!
//! The device-initialisation sequence is the spec's (virtio 1.2, section
//! 3.1.1): reset, `ACKNOWLEDGE`, `DRIVER`, features, `FEATURES_OK` (and
//! check it stayed), queues, `DRIVER_OK`. A driver calls
//! [`Transport::negotiate`], then [`Transport::setup_queue`] for each queue,
//! then [`Transport::driver_ok`].

use crate::time::Instant;

use super::mmio::{self, MmioTransport};
use super::pci::PciTransport;
use super::queue::VirtQueue;
use super::{feature, status, VirtioError};
use crate::interrupts::MsiMessage;
use toro_core::virtio::queue::QueueAddresses;

/// Where a queue made on one CPU lives, for the transport's owner to give
/// to the device ([`Transport::attach_queue`]); from [`VirtQueue::placement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlacement {
    /// The queue's index on its device.
    pub queue: u16,
    /// Its entries.
    pub size: u16,
    /// Its three rings' physical addresses.
    pub addresses: QueueAddresses,
}

/// A queue's notify register as a plain address: lets the CPU that owns a
/// queue notify the device while another CPU owns the transport (each
/// queue pair of a multi-queue virtio-net card rings its own doorbells;
/// status, features and the control queue stay with the transport's
/// owner). A doorbell is a device register written with the queue's
/// index, so rings from several CPUs need no coordination. Valid while
/// the transport lives (transports never undo their mappings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doorbell {
    address: u64,
    queue: u16,
    /// A 32-bit register (virtio-mmio `QueueNotify`), else 16-bit (PCI).
    wide: bool,
}

impl Doorbell {
    /// Notifies the device of new buffers in the queue (queues decide
    /// when: [`VirtQueue::kick_doorbell`]; a driver may also ring once to
    /// have the device look again).
    pub fn ring(&self) {
        // SAFETY: the address is inside a mapped, uncached register block
        // that is never unmapped (see the type's docs), naturally aligned.
        unsafe {
            if self.wide {
                core::ptr::write_volatile(self.address as *mut u32, u32::from(self.queue));
            } else {
                core::ptr::write_volatile(self.address as *mut u16, self.queue);
            }
        }
    }
}

/// How long a reset may take before the device is given up (section 2.4:
/// the driver waits for status to read 0).
const RESET_TIMEOUT: core::time::Duration = core::time::Duration::from_millis(100);

/// How the device interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptLine {
    /// An I/O APIC input (virtio-mmio): all of the device's queues share it.
    Gsi {
        /// The GSI.
        gsi: u32,
        /// Level-triggered (else edge).
        level: bool,
        /// Active low (else high).
        active_low: bool,
    },
    /// (virtio-pci without MSI-X uses `Gsi` too: its INTx pin's I/O APIC
    /// input, `devices::pci::PciDevice::intx_route`.)
    ///
    /// MSI-X (virtio-pci): each queue may have its own vector
    /// ([`Transport::set_queue_interrupt`]); `entries` table entries.
    Msix {
        /// Entries in the function's MSI-X table.
        entries: u16,
    },
}

/// What an interrupt was for (the mmio `InterruptStatus`, the PCI ISR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterruptCause {
    /// A queue has used buffers.
    pub used_buffers: bool,
    /// The device configuration changed.
    pub configuration: bool,
}

/// The bus a device sits on.
enum Bus {
    Mmio(MmioTransport),
    Pci(PciTransport),
}

/// One device's transport. Owned by the device's owner CPU.
pub struct Transport {
    bus: Bus,
    device_type: u32,
    interrupt: InterruptLine,
    /// What negotiation settled on (0 before).
    features: u64,
    /// Where the device's registers are, for logs.
    address: u64,
}

impl Drop for Transport {
    /// A driver that goes away resets its device first, so the device stops
    /// using queue memory and buffers about to be freed (a driver declares
    /// its transport before its queues, so it drops first).
    fn drop(&mut self) {
        let _ = self.reset();
    }
}

impl Transport {
    /// A virtio-mmio device at `address` (`size` bytes of registers) with interrupt `interrupt`.
    pub fn mmio(address: u64, size: u64, interrupt: InterruptLine) -> Result<Self, VirtioError> {
        let (transport, identity) = MmioTransport::open(address, size)?;
        Ok(Self { bus: Bus::Mmio(transport), device_type: identity.device_id, interrupt, features: 0, address })
    }

    /// A modern virtio-pci function (found at boot); `address` (for logs)
    /// is its common configuration's physical address. Interrupts: MSI-X
    /// if the function has it, else its INTx pin through the I/O APIC
    /// where the chipset's routing is known (QEMU's q35; the ISR is then
    /// read to acknowledge), else the device is left out.
    pub fn pci(device: &'static crate::devices::pci::PciDevice) -> Result<Self, VirtioError> {
        let device_type = toro_core::virtio::pci::device_type(device.device()).ok_or(VirtioError::NoDevice)?;
        let interrupt = match device.msix_table().map(|table| table.entries).unwrap_or(0) {
            0 => {
                let route = device.intx_route().map_err(VirtioError::NoInterrupt)?;
                InterruptLine::Gsi { gsi: route.gsi, level: route.level, active_low: route.active_low }
            }
            entries => InterruptLine::Msix { entries },
        };
        let transport = PciTransport::open(device)?;
        if let InterruptLine::Gsi { .. } = interrupt {
            device.enable_intx();
        }
        let address = transport.layout().common.address;
        Ok(Self { bus: Bus::Pci(transport), device_type, interrupt, features: 0, address })
    }

    /// The PCI function, on virtio-pci.
    pub fn pci_address(&self) -> Option<toro_core::pci::PciAddress> {
        match &self.bus {
            Bus::Mmio(_) => None,
            Bus::Pci(pci) => Some(pci.pci_address()),
        }
    }

    /// Makes `queue` interrupt with `message` (virtio-pci: an MSI-X table
    /// entry, shared by queues with the same message); takes effect when the
    /// queue is set up ([`Self::setup_queue`] checks the device accepted it).
    /// virtio-mmio: `Unsupported` (its one line is an I/O APIC GSI).
    pub fn set_queue_interrupt(&mut self, queue: u16, message: MsiMessage) -> Result<(), VirtioError> {
        match &mut self.bus {
            Bus::Mmio(_) => Err(VirtioError::Unsupported),
            Bus::Pci(pci) => pci.set_queue_interrupt(queue, message),
        }
    }

    /// Makes configuration changes interrupt with `message` (virtio-pci;
    /// checked at once and kept across resets). virtio-mmio: `Unsupported`.
    pub fn set_config_interrupt(&mut self, message: MsiMessage) -> Result<(), VirtioError> {
        match &mut self.bus {
            Bus::Mmio(_) => Err(VirtioError::Unsupported),
            Bus::Pci(pci) => pci.set_config_interrupt(message),
        }
    }

    /// Bytes of device configuration (read only within them in [`Self::read_config`]).
    pub fn config_length(&self) -> u64 {
        match &self.bus {
            Bus::Mmio(mmio) => mmio.registers.size().saturating_sub(mmio.config_offset()),
            Bus::Pci(pci) => pci.config().2,
        }
    }

    /// The device type (`super::device_type`).
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The register block's address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> InterruptLine {
        self.interrupt
    }

    /// The negotiated features.
    pub fn features(&self) -> u64 {
        self.features
    }

    fn read_status(&self) -> u8 {
        match &self.bus {
            Bus::Mmio(mmio) => mmio.read_status(),
            Bus::Pci(pci) => pci.read_status(),
        }
    }

    fn write_status(&mut self, value: u8) {
        match &mut self.bus {
            Bus::Mmio(mmio) => mmio.write_status(value),
            Bus::Pci(pci) => pci.write_status(value),
        }
    }

    fn add_status(&mut self, bits: u8) {
        let current = self.read_status();
        self.write_status(current | bits);
    }

    /// Resets the device (status 0) and waits for it to finish: after
    /// this the device touches no queue memory.
    pub fn reset(&mut self) -> Result<(), VirtioError> {
        self.write_status(0);
        let deadline = Instant::now() + RESET_TIMEOUT;
        while self.read_status() != 0 {
            if Instant::now() > deadline {
                return Err(VirtioError::ResetTimeout);
            }
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Marks the device `FAILED` (the driver gave up on it).
    pub fn fail(&mut self) {
        self.add_status(status::FAILED);
    }

    /// Whether the device set `DEVICE_NEEDS_RESET`.
    pub fn needs_reset(&self) -> bool {
        self.read_status() & status::DEVICE_NEEDS_RESET != 0
    }

    /// Resets the device and negotiates features: the result is `wanted`
    /// ∩ offered, plus `VIRTIO_F_VERSION_1` (required: legacy devices are
    /// refused). Drivers state exactly what they can use; bits they do not
    /// name are never accepted.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, VirtioError> {
        self.negotiate_with(|_| wanted)
    }

    /// [`Self::negotiate`] with the wanted bits chosen from what the
    /// device offers (for features that depend on each other: the result
    /// is still `choose(offered)` ∩ offered, plus `VERSION_1`).
    pub fn negotiate_with(&mut self, choose: impl FnOnce(u64) -> u64) -> Result<u64, VirtioError> {
        self.reset()?;
        self.add_status(status::ACKNOWLEDGE);
        self.add_status(status::DRIVER);
        let offered = match &mut self.bus {
            Bus::Mmio(mmio) => mmio.device_features(),
            Bus::Pci(pci) => pci.device_features(),
        };
        if offered & feature::VERSION_1 == 0 {
            self.fail();
            return Err(VirtioError::Legacy);
        }
        let accepted = (choose(offered) | feature::VERSION_1) & offered;
        match &mut self.bus {
            Bus::Mmio(mmio) => mmio.write_driver_features(accepted),
            Bus::Pci(pci) => pci.write_driver_features(accepted),
        }
        self.add_status(status::FEATURES_OK);
        if self.read_status() & status::FEATURES_OK == 0 {
            self.fail();
            return Err(VirtioError::FeaturesRefused { wanted: accepted });
        }
        // The reset cleared the configuration-change vector.
        if let Bus::Pci(pci) = &mut self.bus {
            pci.apply_config_interrupt()?;
        }
        self.features = accepted;
        Ok(accepted)
    }

    /// The device's maximum size for `queue` (0: no such queue).
    pub fn queue_maximum(&mut self, queue: u16) -> u32 {
        match &mut self.bus {
            Bus::Mmio(mmio) => mmio.queue_maximum(queue),
            Bus::Pci(pci) => pci.queue_maximum(queue),
        }
    }

    /// Sets up `queue` with `N` entries and `I`-entry indirect tables, in
    /// this CPU's memory, and gives it to the device. Event-idx and
    /// indirect descriptors are used if negotiated.
    pub fn setup_queue<T, const N: usize, const I: usize>(
        &mut self,
        queue: u16,
    ) -> Result<alloc::boxed::Box<VirtQueue<T, N, I>>, VirtioError> {
        self.check_queue_size(queue, N)?;
        let virtqueue = Self::new_queue(queue, self.features);
        self.enable_queue(queue, N as u16, virtqueue.addresses())?;
        Ok(virtqueue)
    }

    fn check_queue_size(&mut self, queue: u16, needed: usize) -> Result<(), VirtioError> {
        use toro_core::virtio::queue::{check_queue_size, QueueSizeError};
        let maximum = self.queue_maximum(queue);
        match check_queue_size(maximum, needed) {
            Ok(()) => Ok(()),
            Err(QueueSizeError::Unavailable) => Err(VirtioError::QueueUnavailable(queue)),
            // N <= 32768 (checked by the queue), so it fits.
            Err(QueueSizeError::Impossible | QueueSizeError::TooSmall) => {
                Err(VirtioError::QueueSize { queue, maximum, needed: needed as u16 })
            }
        }
    }

    fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<(), VirtioError> {
        match &mut self.bus {
            Bus::Mmio(mmio) => mmio.enable_queue(queue, size, addresses),
            Bus::Pci(pci) => pci.enable_queue(queue, size, addresses)?,
        }
        Ok(())
    }

    /// A queue for a device whose transport another CPU owns (the queue
    /// pairs of a multi-queue virtio-net card): made on the CPU that will
    /// use it, so its memory is that CPU's, with the negotiated `features`
    /// (event-idx, indirect descriptors); the transport's owner gives it to
    /// the device with [`Self::attach_queue`].
    pub fn new_queue<T, const N: usize, const I: usize>(
        queue: u16,
        features: u64,
    ) -> alloc::boxed::Box<VirtQueue<T, N, I>> {
        VirtQueue::new(queue, features & feature::EVENT_IDX != 0, features & feature::INDIRECT_DESC != 0)
    }

    /// Gives the device a queue made by [`Self::new_queue`] (checked
    /// against the device's maximum, its MSI-X vector as set with
    /// [`Self::set_queue_interrupt`]) and returns the doorbell the queue's
    /// CPU rings ([`VirtQueue::kick_doorbell`]).
    pub fn attach_queue(&mut self, placement: QueuePlacement) -> Result<Doorbell, VirtioError> {
        self.check_queue_size(placement.queue, usize::from(placement.size))?;
        self.enable_queue(placement.queue, placement.size, placement.addresses)?;
        self.doorbell(placement.queue).ok_or(VirtioError::Doorbell(placement.queue))
    }

    /// `queue`'s notify register as a plain address (known once the queue
    /// is set up on PCI).
    pub fn doorbell(&self, queue: u16) -> Option<Doorbell> {
        match &self.bus {
            Bus::Mmio(mmio) => Some(Doorbell { address: mmio.notify_address(), queue, wide: true }),
            Bus::Pci(pci) => pci.notify_address(queue).map(|address| Doorbell { address, queue, wide: false }),
        }
    }

    /// Tells the device the driver is ready (`DRIVER_OK`).
    pub fn driver_ok(&mut self) {
        self.add_status(status::DRIVER_OK);
    }

    /// Notifies the device of new buffers in `queue` (the queue decides when: [`VirtQueue::kick`]).
    pub(super) fn notify(&mut self, queue: u16) {
        match &mut self.bus {
            Bus::Mmio(mmio) => mmio.notify(queue),
            Bus::Pci(pci) => pci.notify(queue),
        }
    }

    /// Reads and acknowledges the interrupt status: call first in the interrupt hook.
    pub fn take_interrupt(&mut self) -> InterruptCause {
        match &mut self.bus {
            Bus::Mmio(mmio) => {
                let status = mmio.take_interrupt();
                InterruptCause {
                    used_buffers: status & mmio::INTERRUPT_USED_BUFFER != 0,
                    configuration: status & mmio::INTERRUPT_CONFIGURATION_CHANGE != 0,
                }
            }
            // With MSI-X the vector says what happened and the ISR is not
            // set for queues (section 4.1.5.3); the driver looks at its queues.
            Bus::Pci(pci) if pci.uses_msix() => InterruptCause { used_buffers: true, configuration: false },
            Bus::Pci(pci) => {
                let isr = pci.take_interrupt();
                InterruptCause { used_buffers: isr & 1 != 0, configuration: isr & 2 != 0 }
            }
        }
    }

    /// Reads the device configuration with `read(registers, offset)` (read
    /// only within [`Self::config_length`] bytes from `offset`) until the
    /// configuration generation is the same before and after (section 2.5.1).
    pub fn read_config<R>(&self, mut read: impl FnMut(&crate::devices::DeviceMemory, u64) -> R) -> R {
        match &self.bus {
            Bus::Mmio(mmio) => loop {
                let before = mmio.config_generation();
                let value = read(&mmio.registers, mmio.config_offset());
                if mmio.config_generation() == before {
                    return value;
                }
            },
            Bus::Pci(pci) => loop {
                let before = pci.config_generation();
                let (memory, offset, _) = pci.config();
                let value = read(memory, offset);
                if pci.config_generation() == before {
                    return value;
                }
            },
        }
    }
}
