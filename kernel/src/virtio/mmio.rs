//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): a register block in device memory.
//!
//! QEMU microvm offers version 2 only with `-global
//! virtio-mmio.force-legacy=false` (its default is the legacy version 1);
//! Firecracker offers version 2. Version 1 (legacy) is refused: no VMM Toro
//! targets needs it.

use crate::devices::DeviceMemory;

use super::VirtioError;

/// `MagicValue` (0x000): "virt" in little-endian.
pub(super) const MAGIC: u32 = 0x7472_6976;
/// The version driven here.
pub(super) const VERSION_MODERN: u32 = 2;

/// Register offsets (section 4.2.2, table "MMIO Device Register Layout").
pub(super) mod register {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// `InterruptStatus` bits (section 4.2.2).
pub(super) const INTERRUPT_USED_BUFFER: u32 = 1;
pub(super) const INTERRUPT_CONFIGURATION_CHANGE: u32 = 2;

/// One virtio-mmio device's registers.
///
/// The mapping is never undone (`ManuallyDrop`): unmapping takes the
/// page-table lock, and a driver's value is dropped on its service thread,
/// a path that must reach no locked instruction (the lock check). An
/// uncached mapping of a device page left in place costs nothing.
pub struct MmioTransport {
    pub(super) registers: core::mem::ManuallyDrop<DeviceMemory>,
}

/// What [`MmioTransport::probe`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioIdentity {
    /// `Version`.
    pub version: u32,
    /// `DeviceID` (0: empty slot).
    pub device_id: u32,
}

impl MmioTransport {
    /// Maps the register block and checks the magic value and version.
    pub fn open(address: u64, size: u64) -> Result<(Self, MmioIdentity), VirtioError> {
        let registers = core::mem::ManuallyDrop::new(DeviceMemory::map(address, size).map_err(VirtioError::Map)?);
        let transport = Self { registers };
        if transport.registers.read::<u32>(register::MAGIC_VALUE) != MAGIC {
            return Err(VirtioError::NotVirtio { address });
        }
        let identity = MmioIdentity {
            version: transport.registers.read(register::VERSION),
            device_id: transport.registers.read(register::DEVICE_ID),
        };
        if identity.version != VERSION_MODERN {
            return Err(VirtioError::UnsupportedVersion(identity.version));
        }
        if identity.device_id == 0 {
            return Err(VirtioError::NoDevice);
        }
        Ok((transport, identity))
    }

    pub(super) fn read_status(&self) -> u8 {
        self.registers.read::<u32>(register::STATUS) as u8
    }

    pub(super) fn write_status(&mut self, status: u8) {
        self.registers.write::<u32>(register::STATUS, u32::from(status));
    }

    pub(super) fn device_features(&mut self) -> u64 {
        self.registers.write::<u32>(register::DEVICE_FEATURES_SEL, 0);
        let low = self.registers.read::<u32>(register::DEVICE_FEATURES);
        self.registers.write::<u32>(register::DEVICE_FEATURES_SEL, 1);
        let high = self.registers.read::<u32>(register::DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    pub(super) fn write_driver_features(&mut self, features: u64) {
        self.registers.write::<u32>(register::DRIVER_FEATURES_SEL, 0);
        self.registers.write::<u32>(register::DRIVER_FEATURES, features as u32);
        self.registers.write::<u32>(register::DRIVER_FEATURES_SEL, 1);
        self.registers.write::<u32>(register::DRIVER_FEATURES, (features >> 32) as u32);
    }

    pub(super) fn queue_maximum(&mut self, queue: u16) -> u32 {
        self.registers.write::<u32>(register::QUEUE_SEL, u32::from(queue));
        self.registers.read::<u32>(register::QUEUE_NUM_MAX)
    }

    /// Gives the device the queue (section 4.2.3.2): size, the three
    /// addresses, then `QueueReady`.
    pub(super) fn enable_queue(&mut self, queue: u16, size: u16, addresses: toro_core::virtio::queue::QueueAddresses) {
        let registers = &mut self.registers;
        registers.write::<u32>(register::QUEUE_SEL, u32::from(queue));
        registers.write::<u32>(register::QUEUE_NUM, u32::from(size));
        for (low, high, value) in [
            (register::QUEUE_DESC_LOW, register::QUEUE_DESC_HIGH, addresses.descriptors),
            (register::QUEUE_DRIVER_LOW, register::QUEUE_DRIVER_HIGH, addresses.driver),
            (register::QUEUE_DEVICE_LOW, register::QUEUE_DEVICE_HIGH, addresses.device),
        ] {
            registers.write::<u32>(low, value as u32);
            registers.write::<u32>(high, (value >> 32) as u32);
        }
        registers.write::<u32>(register::QUEUE_READY, 1);
    }

    /// `QueueNotify`'s address (a [`super::Doorbell`]).
    pub(super) fn notify_address(&self) -> u64 {
        self.registers.address() + register::QUEUE_NOTIFY
    }

    pub(super) fn notify(&mut self, queue: u16) {
        self.registers.write::<u32>(register::QUEUE_NOTIFY, u32::from(queue));
    }

    /// Reads and acknowledges `InterruptStatus` (section 4.2.3.4).
    pub(super) fn take_interrupt(&mut self) -> u32 {
        let status = self.registers.read::<u32>(register::INTERRUPT_STATUS);
        if status != 0 {
            self.registers.write::<u32>(register::INTERRUPT_ACK, status);
        }
        status
    }

    pub(super) fn config_generation(&self) -> u32 {
        self.registers.read(register::CONFIG_GENERATION)
    }

    pub(super) fn config_offset(&self) -> u64 {
        register::CONFIG
    }
}

// The register block is checked against the highest register read above.
const _: () = assert!(register::CONFIG_GENERATION + 4 == toro_core::virtio::mmio::MIN_REGISTER_BLOCK_BYTES);
const _: () = assert!(register::QUEUE_DEVICE_HIGH < register::CONFIG_GENERATION);
