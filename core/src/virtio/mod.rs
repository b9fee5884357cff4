//! The host-testable half of Toro's virtio layer: split virtqueues and virtio-mmio discovery.
//!
//! - [`queue`]: the split virtqueue (virtio 1.2, section 2.7) as both sides
//!   see it: [`queue::Driver`] (the kernel's bookkeeping: free list, tokens,
//!   indirect tables, event-idx notification suppression) and
//!   [`queue::Device`] (what a device does with the same memory, used by the
//!   host tests as a fake device and by the loom models).
//! - [`mmio`]: virtio-mmio devices named on the kernel command line
//!   (`virtio_mmio.device=SIZE@ADDR:IRQ[:ID]`, as Firecracker passes them).
//! - [`pci`]: the virtio-pci modern capabilities (where the common,
//!   notify, ISR and device structures are), checked against the BARs.
//! - [`dsdt`]: virtio-mmio devices described in the ACPI DSDT (`LNRO0005`
//!   devices, as QEMU microvm and Firecracker describe them), read by a small
//!   AML reader that understands just those objects.
//!
//! The kernel's transports (virtio-mmio v2, virtio-pci modern) and device
//! drivers live in `kernel/src/virtio/`; see `docs/virtio.md`.

pub mod dsdt;
pub mod mmio;
pub mod pci;
pub mod queue;

/// Where a virtio-mmio device is, however it was found (command line or DSDT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Physical address of its register block.
    pub address: u64,
    /// Size of its register block, in bytes.
    pub size: u64,
    /// Its interrupt: a GSI (an IOAPIC input).
    pub gsi: u32,
    /// Level-triggered (else edge), as the firmware describes the line.
    pub level: bool,
    /// Active low (else active high).
    pub active_low: bool,
}

/// The most virtio-mmio devices [`MmioDevices`] keeps (QEMU microvm has 24 slots).
pub const MAX_MMIO_DEVICES: usize = 32;

/// A fixed-capacity list of virtio-mmio devices, in the order found, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmioDevices {
    devices: [MmioDevice; MAX_MMIO_DEVICES],
    /// Invariant: `count <= MAX_MMIO_DEVICES`.
    count: usize,
    /// Devices found beyond [`MAX_MMIO_DEVICES`], not kept.
    pub dropped: usize,
}

impl MmioDevices {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            devices: [MmioDevice { address: 0, size: 0, gsi: 0, level: false, active_low: false }; MAX_MMIO_DEVICES],
            count: 0,
            dropped: 0,
        }
    }

    /// Adds `device` unless one at the same address is listed; returns whether it was added.
    pub fn push(&mut self, device: MmioDevice) -> bool {
        if self.as_slice().iter().any(|known| known.address == device.address) {
            return false;
        }
        match self.devices.get_mut(self.count) {
            Some(slot) => {
                *slot = device;
                self.count += 1;
                true
            }
            None => {
                self.dropped += 1;
                false
            }
        }
    }

    /// The devices, in the order found.
    pub fn as_slice(&self) -> &[MmioDevice] {
        self.devices.get(..self.count).unwrap_or(&[])
    }
}

impl Default for MmioDevices {
    fn default() -> Self {
        Self::new()
    }
}
