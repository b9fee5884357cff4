//! The virtio-pci modern transport (virtio 1.2, section 4.1): structures found through vendor capabilities, in memory BARs, interrupts by MSI-X.
//!
//! Where the structures are is `toro_core::virtio::pci::parse_layout`
//! (host-tested with garbled capabilities); this file maps the BARs the
//! structures use ([`DeviceMemory`], uncached) and drives the registers.
//! Interrupts: one MSI-X table entry per distinct message
//! ([`PciTransport::set_queue_interrupt`]), each queue's
//! `queue_msix_vector` written when the queue is set up and read back (a
//! device that refuses reads `NO_VECTOR`, and the setup fails). INTx is
//! not driven: cloud-hypervisor offers none, and QEMU's q35 has MSI-X on
//! every virtio-pci device.
//!
//! Why not `virtio-drivers`' PCI transport: it has no MSI-X (its
//! interrupts are INTx with the ISR), and its mapping is not the kernel's
//! `DeviceMemory` (RAM and the image refused, above 4 GiB).

use alloc::vec::Vec;
use core::mem::ManuallyDrop;

use toro_core::pci::{ConfigSpace, MsixTable, PciAddress};
use toro_core::virtio::pci::{common, parse_layout, Layout, Region, NO_VECTOR};
use toro_core::virtio::queue::QueueAddresses;

use crate::devices::pci::PciDevice;
use crate::devices::DeviceMemory;
use crate::interrupts::MsiMessage;

use super::VirtioError;

/// Configuration space access through the function's own methods (ECAM, or port I/O on the boot CPU).
struct FunctionSpace<'a>(&'a PciDevice);

impl ConfigSpace for FunctionSpace<'_> {
    fn read32(&self, _: PciAddress, offset: u16) -> u32 {
        self.0.read32(offset)
    }
    fn write32(&self, _: PciAddress, offset: u16, value: u32) {
        self.0.write32(offset, value)
    }
}

/// The MSI-X table and what is programmed in it.
struct Msix {
    table: MsixTable,
    /// Entry `i` holds `messages[i]`.
    messages: Vec<MsiMessage>,
}

/// One modern virtio-pci function's registers.
///
/// The BAR mappings are never undone (`ManuallyDrop`), as for virtio-mmio:
/// unmapping takes the page-table lock, and a driver's value is dropped on
/// its service thread, a path that must reach no locked instruction.
pub struct PciTransport {
    device: &'static PciDevice,
    layout: Layout,
    bars: [Option<ManuallyDrop<DeviceMemory>>; 6],
    msix: Option<Msix>,
    /// The MSI-X entry each queue's interrupts use, by queue.
    queue_entries: Vec<(u16, u16)>,
    /// The MSI-X entry of configuration-change interrupts.
    config_entry: Option<u16>,
    /// Doorbell offsets in the notify region, by queue (known once set up).
    doorbells: Vec<(u16, u64)>,
}

impl PciTransport {
    /// Finds the structures of `device`, maps the BARs they use and turns
    /// on memory decoding and bus mastering. Skipped capabilities are
    /// logged.
    pub fn open(device: &'static PciDevice) -> Result<Self, VirtioError> {
        let space = FunctionSpace(device);
        let layout = parse_layout(&space, device.address(), &device.function, |problem| {
            log::warn!("virtio: pci {}: {problem}; skipped", device.address())
        })
        .map_err(VirtioError::Layout)?;
        let mut bars: [Option<ManuallyDrop<DeviceMemory>>; 6] = Default::default();
        for bar in layout.bars() {
            bars[usize::from(bar)] = Some(ManuallyDrop::new(device.map_bar(bar).map_err(VirtioError::Pci)?));
        }
        device.enable();
        Ok(Self {
            device,
            layout,
            bars,
            msix: None,
            queue_entries: Vec::new(),
            config_entry: None,
            doorbells: Vec::new(),
        })
    }

    /// The function's address.
    pub fn pci_address(&self) -> PciAddress {
        self.device.address()
    }

    /// Where the structures are.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn memory(&self, region: Region) -> &DeviceMemory {
        // Every region's BAR was mapped in `open`.
        self.bars[usize::from(region.bar)].as_ref().expect("a structure's BAR is mapped")
    }

    fn memory_mut(&mut self, bar: u8) -> &mut DeviceMemory {
        self.bars[usize::from(bar)].as_mut().expect("a structure's BAR is mapped")
    }

    fn read_common<T: crate::devices::memory::Register>(&self, offset: u64) -> T {
        self.memory(self.layout.common).read(self.layout.common.offset + offset)
    }

    fn write_common<T: crate::devices::memory::Register>(&mut self, offset: u64, value: T) {
        let at = self.layout.common.offset + offset;
        self.memory_mut(self.layout.common.bar).write(at, value);
    }

    pub(super) fn read_status(&self) -> u8 {
        self.read_common(common::DEVICE_STATUS)
    }

    pub(super) fn write_status(&mut self, status: u8) {
        self.write_common(common::DEVICE_STATUS, status);
    }

    pub(super) fn device_features(&mut self) -> u64 {
        self.write_common::<u32>(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.read_common::<u32>(common::DEVICE_FEATURE);
        self.write_common::<u32>(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.read_common::<u32>(common::DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    pub(super) fn write_driver_features(&mut self, features: u64) {
        self.write_common::<u32>(common::DRIVER_FEATURE_SELECT, 0);
        self.write_common::<u32>(common::DRIVER_FEATURE, features as u32);
        self.write_common::<u32>(common::DRIVER_FEATURE_SELECT, 1);
        self.write_common::<u32>(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    pub(super) fn queue_maximum(&mut self, queue: u16) -> u32 {
        if queue >= self.read_common::<u16>(common::NUM_QUEUES) {
            return 0;
        }
        self.write_common::<u16>(common::QUEUE_SELECT, queue);
        u32::from(self.read_common::<u16>(common::QUEUE_SIZE))
    }

    /// Gives the device the queue (section 4.1.5.1.3): size, MSI-X vector
    /// (read back: `NO_VECTOR` means refused), the three addresses, the
    /// doorbell, then `queue_enable`.
    pub(super) fn enable_queue(&mut self, queue: u16, size: u16, addresses: QueueAddresses) -> Result<(), VirtioError> {
        self.write_common::<u16>(common::QUEUE_SELECT, queue);
        self.write_common::<u16>(common::QUEUE_SIZE, size);
        let entry = self.queue_entries.iter().find(|(q, _)| *q == queue).map(|&(_, entry)| entry);
        self.write_common::<u16>(common::QUEUE_MSIX_VECTOR, entry.unwrap_or(NO_VECTOR));
        if let Some(entry) = entry {
            let read = self.read_common::<u16>(common::QUEUE_MSIX_VECTOR);
            if read != entry {
                log::warn!(
                    "virtio: pci {}: queue {queue} refused MSI-X entry {entry} (reads {read:#x})",
                    self.device.address()
                );
                return Err(VirtioError::Interrupt);
            }
        }
        for (offset, value) in [
            (common::QUEUE_DESC, addresses.descriptors),
            (common::QUEUE_DRIVER, addresses.driver),
            (common::QUEUE_DEVICE, addresses.device),
        ] {
            // 64-bit fields as two 32-bit halves (section 4.1.3.1 allows it).
            self.write_common::<u32>(offset, value as u32);
            self.write_common::<u32>(offset + 4, (value >> 32) as u32);
        }
        let notify_off = self.read_common::<u16>(common::QUEUE_NOTIFY_OFF);
        let doorbell = self.layout.doorbell(notify_off).ok_or(VirtioError::Doorbell(queue))?;
        self.doorbells.retain(|(q, _)| *q != queue);
        self.doorbells.push((queue, doorbell));
        self.write_common::<u16>(common::QUEUE_ENABLE, 1);
        Ok(())
    }

    pub(super) fn notify(&mut self, queue: u16) {
        let Some(&(_, doorbell)) = self.doorbells.iter().find(|(q, _)| *q == queue) else { return };
        let notify = self.layout.notify;
        self.memory_mut(notify.bar).write::<u16>(notify.offset + doorbell, queue);
    }

    /// `queue`'s doorbell as an address (once the queue is set up).
    pub(super) fn notify_address(&self, queue: u16) -> Option<u64> {
        let &(_, doorbell) = self.doorbells.iter().find(|(q, _)| *q == queue)?;
        let notify = self.layout.notify;
        Some(self.memory(notify).address() + notify.offset + doorbell)
    }

    /// Whether interrupts come by MSI-X (then the ISR is not read: the vector says which queue).
    pub(super) fn uses_msix(&self) -> bool {
        self.msix.is_some()
    }

    /// Reads (and so clears) the ISR status (section 4.1.4.5): bit 0 a
    /// queue, bit 1 the configuration.
    pub(super) fn take_interrupt(&mut self) -> u8 {
        let isr = self.layout.isr;
        self.memory(isr).read::<u8>(isr.offset)
    }

    pub(super) fn config_generation(&self) -> u8 {
        self.read_common(common::CONFIG_GENERATION)
    }

    /// The device configuration: its memory and offset, and its length (0: none).
    pub(super) fn config(&self) -> (&DeviceMemory, u64, u64) {
        match self.layout.device {
            Some(region) => (self.memory(region), region.offset, region.length),
            None => (self.memory(self.layout.common), self.layout.common.offset, 0),
        }
    }

    /// The MSI-X table entry holding `message`, programming a free one if
    /// none does; enables MSI-X on first use.
    fn msix_entry(&mut self, message: MsiMessage) -> Result<u16, VirtioError> {
        if self.msix.is_none() {
            let table = self.device.msix_table().map_err(VirtioError::Pci)?;
            if self.bars[usize::from(table.bar)].is_none() {
                let memory = self.device.map_bar(table.bar).map_err(VirtioError::Pci)?;
                self.bars[usize::from(table.bar)] = Some(ManuallyDrop::new(memory));
            }
            self.msix = Some(Msix { table, messages: Vec::new() });
        }
        let msix = self.msix.as_mut().expect("set above");
        if let Some(entry) = msix.messages.iter().position(|m| *m == message) {
            return Ok(entry as u16);
        }
        let entry = msix.messages.len() as u16;
        if entry >= msix.table.entries {
            return Err(VirtioError::Interrupt);
        }
        let table = msix.table;
        let first = msix.messages.is_empty();
        let memory = self.bars[usize::from(table.bar)].as_mut().expect("mapped above");
        if u64::from(table.offset) + (u64::from(entry) + 1) * toro_core::pci::MSIX_ENTRY_BYTES > memory.size() {
            log::warn!("virtio: pci {}: MSI-X table reaches past BAR {}", self.device.address(), table.bar);
            return Err(VirtioError::Interrupt);
        }
        self.device.write_msix_entry(memory, &table, entry, message);
        if let Some(msix) = self.msix.as_mut() {
            msix.messages.push(message);
        }
        if first {
            self.device.enable_msix().map_err(VirtioError::Pci)?;
        }
        Ok(entry)
    }

    /// Makes `queue` interrupt with `message` (an MSI-X entry), from its next setup on.
    pub(super) fn set_queue_interrupt(&mut self, queue: u16, message: MsiMessage) -> Result<(), VirtioError> {
        let entry = self.msix_entry(message)?;
        self.queue_entries.retain(|(q, _)| *q != queue);
        self.queue_entries.push((queue, entry));
        Ok(())
    }

    /// Makes configuration changes interrupt with `message`; the device
    /// must read the entry back (else `Interrupt`). Applied again after
    /// each reset by [`Self::apply_config_interrupt`].
    pub(super) fn set_config_interrupt(&mut self, message: MsiMessage) -> Result<(), VirtioError> {
        let entry = self.msix_entry(message)?;
        self.config_entry = Some(entry);
        self.apply_config_interrupt()
    }

    /// Writes `config_msix_vector` (a reset clears it) and checks it stayed.
    pub(super) fn apply_config_interrupt(&mut self) -> Result<(), VirtioError> {
        let Some(entry) = self.config_entry else { return Ok(()) };
        self.write_common::<u16>(common::CONFIG_MSIX_VECTOR, entry);
        let read = self.read_common::<u16>(common::CONFIG_MSIX_VECTOR);
        if read != entry {
            log::warn!("virtio: pci {}: config refused MSI-X entry {entry} (reads {read:#x})", self.device.address());
            return Err(VirtioError::Interrupt);
        }
        Ok(())
    }
}
