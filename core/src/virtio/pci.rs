//! virtio-pci modern (virtio 1.2, section 4.1): where a device's structures are, from its vendor capabilities.
//!
//! A modern virtio-pci function lists its structures as vendor-specific
//! capabilities (`virtio_pci_cap`, section 4.1.4): each names a
//! `cfg_type` (common configuration, notifications, ISR status, device
//! configuration, ...), a BAR, an offset and a length. The notification
//! capability adds `notify_off_multiplier` (section 4.1.4.4): queue `q`'s
//! doorbell is at `cap.offset + queue_notify_off(q) * multiplier`.
//!
//! [`parse_layout`] reads them through a [`ConfigSpace`] and checks each
//! against the function's sized BARs: a capability that is too short,
//! names no BAR, an I/O BAR, an unassigned BAR, or reaches past its BAR is
//! reported to `problem` and skipped, and the next one of the same type is
//! used (the spec lets a device offer several; the driver uses the first
//! it can). Without a usable common, notify and ISR structure the device is
//! refused. The register offsets inside the common configuration are in
//! [`common`].

use crate::pci::{Bar, ConfigSpace, Function, PciAddress, CAPABILITY_VENDOR};

/// `cfg_type` values (section 4.1.4).
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications (doorbells).
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
    /// PCI configuration access (a window through configuration space); not used.
    pub const PCI: u8 = 5;
    /// Shared memory regions; not used.
    pub const SHARED_MEMORY: u8 = 8;
    /// Vendor data; not used.
    pub const VENDOR: u8 = 9;
}

/// Byte offsets inside the common configuration structure (section 4.1.4.3).
pub mod common {
    /// Which 32 bits of the device's features `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// 32 bits of the device's features.
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// Which 32 bits of the driver's features `DRIVER_FEATURE` takes.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// 32 bits of the driver's features.
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// The MSI-X entry of configuration-change interrupts (`u16`).
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    /// How many queues the device has (`u16`).
    pub const NUM_QUEUES: u64 = 0x12;
    /// Device status (`u8`).
    pub const DEVICE_STATUS: u64 = 0x14;
    /// Configuration generation (`u8`).
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// The queue the `QUEUE_*` fields show (`u16`).
    pub const QUEUE_SELECT: u64 = 0x16;
    /// The selected queue's size (`u16`; the maximum on reset).
    pub const QUEUE_SIZE: u64 = 0x18;
    /// The selected queue's MSI-X entry (`u16`).
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    /// The selected queue is enabled (`u16`).
    pub const QUEUE_ENABLE: u64 = 0x1c;
    /// The selected queue's doorbell index (`u16`, times the multiplier).
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    /// The selected queue's descriptor table (`u64`).
    pub const QUEUE_DESC: u64 = 0x20;
    /// The selected queue's driver (available) ring (`u64`).
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// The selected queue's device (used) ring (`u64`).
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The structure up to `queue_device` (virtio 1.0); 1.2 adds two optional fields after it.
    pub const MIN_BYTES: u64 = 0x38;
}

/// `VIRTIO_MSI_NO_VECTOR`: no MSI-X vector (what a device reads back when it refused one).
pub const NO_VECTOR: u16 = 0xffff;
/// Bytes of `virtio_pci_cap`.
pub const CAP_BYTES: u8 = 16;
/// Bytes of `virtio_pci_notify_cap` (`virtio_pci_cap` plus the multiplier).
pub const NOTIFY_CAP_BYTES: u8 = 20;
/// Bytes a doorbell write takes (a 16-bit queue index; `VIRTIO_F_NOTIFICATION_DATA` is not negotiated).
pub const NOTIFY_BYTES: u64 = 2;

/// One structure: a range of a memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The BAR (0-5).
    pub bar: u8,
    /// Offset of the structure in the BAR.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u64,
    /// Its physical address (BAR address + offset).
    pub address: u64,
}

/// Where a modern virtio-pci device's structures are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Common configuration (at least [`common::MIN_BYTES`]).
    pub common: Region,
    /// The doorbells.
    pub notify: Region,
    /// `notify_off_multiplier` (0: every queue shares one doorbell).
    pub notify_off_multiplier: u32,
    /// ISR status (at least one byte).
    pub isr: Region,
    /// Device-specific configuration, if the device has one.
    pub device: Option<Region>,
}

impl Layout {
    /// The offset, in the notify region, of the doorbell of a queue whose
    /// `queue_notify_off` is `queue_notify_off`; `None` if it lies outside the region.
    pub fn doorbell(&self, queue_notify_off: u16) -> Option<u64> {
        let offset = u64::from(queue_notify_off).checked_mul(u64::from(self.notify_off_multiplier))?;
        (offset.checked_add(NOTIFY_BYTES)? <= self.notify.length).then_some(offset)
    }

    /// The BARs the structures use (each once, in order).
    pub fn bars(&self) -> impl Iterator<Item = u8> {
        let mut used = [false; 6];
        for region in [Some(self.common), Some(self.notify), Some(self.isr), self.device].into_iter().flatten() {
            used[usize::from(region.bar)] = true;
        }
        (0..6u8).filter(move |&bar| used[usize::from(bar)])
    }
}

/// A capability that was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// `cap_len` is shorter than its structure.
    Short {
        /// The capability's offset in configuration space.
        at: u16,
        /// Its `cap_len`.
        length: u8,
    },
    /// It names BAR 6 or 7.
    NoSuchBar {
        /// The capability's offset in configuration space.
        at: u16,
        /// The BAR named.
        bar: u8,
    },
    /// The BAR is not implemented, is I/O space, or unassigned.
    UnusableBar {
        /// The capability's offset in configuration space.
        at: u16,
        /// The BAR named.
        bar: u8,
    },
    /// The range reaches past the end of its BAR (or overflows).
    OutsideBar {
        /// The capability's offset in configuration space.
        at: u16,
        /// Its `cfg_type`.
        cfg_type: u8,
    },
    /// The structure is shorter than the spec's minimum for its type.
    TooSmall {
        /// The capability's offset in configuration space.
        at: u16,
        /// Its `cfg_type`.
        cfg_type: u8,
        /// Its length.
        length: u64,
    },
    /// `notify_off_multiplier` is odd (the spec says a multiple of 2, or 0).
    OddMultiplier {
        /// The capability's offset in configuration space.
        at: u16,
        /// The multiplier.
        multiplier: u32,
    },
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Short { at, length } => write!(f, "virtio capability at {at:#x}: cap_len {length} too short"),
            Self::NoSuchBar { at, bar } => write!(f, "virtio capability at {at:#x}: BAR {bar} does not exist"),
            Self::UnusableBar { at, bar } => {
                write!(f, "virtio capability at {at:#x}: BAR {bar} is not an assigned memory BAR")
            }
            Self::OutsideBar { at, cfg_type } => {
                write!(f, "virtio capability at {at:#x} (type {cfg_type}): range reaches past its BAR")
            }
            Self::TooSmall { at, cfg_type, length } => {
                write!(f, "virtio capability at {at:#x} (type {cfg_type}): {length} bytes is too small")
            }
            Self::OddMultiplier { at, multiplier } => {
                write!(f, "virtio capability at {at:#x}: notify_off_multiplier {multiplier} is odd")
            }
        }
    }
}

/// Why a device has no usable layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// No usable structure of this `cfg_type` (a legacy-only device has none at all).
    Missing(u8),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Missing(cfg_type::COMMON) => write!(f, "no usable common configuration capability"),
            Self::Missing(cfg_type::NOTIFY) => write!(f, "no usable notification capability"),
            Self::Missing(cfg_type::ISR) => write!(f, "no usable ISR capability"),
            Self::Missing(other) => write!(f, "no usable capability of type {other}"),
        }
    }
}

/// Reads the virtio vendor capabilities of `function` (at `address`) and
/// checks them against its BARs; skipped ones go to `problem`.
pub fn parse_layout(
    space: &impl ConfigSpace,
    address: PciAddress,
    function: &Function,
    mut problem: impl FnMut(Problem),
) -> Result<Layout, LayoutError> {
    let (mut common, mut notify, mut isr, mut device) = (None, None, None, None);
    for capability in function.capabilities_with(CAPABILITY_VENDOR) {
        let at = capability.offset;
        let length = space.read8(address, at + 2);
        let kind = space.read8(address, at + 3);
        if !matches!(kind, cfg_type::COMMON | cfg_type::NOTIFY | cfg_type::ISR | cfg_type::DEVICE) {
            continue;
        }
        let already = match kind {
            cfg_type::COMMON => common.is_some(),
            cfg_type::NOTIFY => notify.is_some(),
            cfg_type::ISR => isr.is_some(),
            _ => device.is_some(),
        };
        if already {
            continue;
        }
        let needed = if kind == cfg_type::NOTIFY { NOTIFY_CAP_BYTES } else { CAP_BYTES };
        if length < needed {
            problem(Problem::Short { at, length });
            continue;
        }
        let bar = space.read8(address, at + 4);
        let offset = u64::from(space.read32(address, at + 8));
        let size = u64::from(space.read32(address, at + 12));
        let Some(&slot) = function.bars.get(usize::from(bar)) else {
            problem(Problem::NoSuchBar { at, bar });
            continue;
        };
        let (base, bar_size) = match slot {
            Bar::Memory { address, size, .. } if address != 0 => (address, size),
            _ => {
                problem(Problem::UnusableBar { at, bar });
                continue;
            }
        };
        if offset.checked_add(size).is_none_or(|end| end > bar_size) {
            problem(Problem::OutsideBar { at, cfg_type: kind });
            continue;
        }
        let minimum = match kind {
            cfg_type::COMMON => common::MIN_BYTES,
            cfg_type::NOTIFY => NOTIFY_BYTES,
            cfg_type::ISR => 1,
            _ => 0,
        };
        if size < minimum {
            problem(Problem::TooSmall { at, cfg_type: kind, length: size });
            continue;
        }
        let region = Region { bar, offset, length: size, address: base + offset };
        match kind {
            cfg_type::COMMON => common = Some(region),
            cfg_type::NOTIFY => {
                let multiplier = space.read32(address, at + 16);
                if !multiplier.is_multiple_of(2) {
                    problem(Problem::OddMultiplier { at, multiplier });
                    continue;
                }
                notify = Some((region, multiplier));
            }
            cfg_type::ISR => isr = Some(region),
            _ => device = Some(region),
        }
    }
    let common = common.ok_or(LayoutError::Missing(cfg_type::COMMON))?;
    let (notify, notify_off_multiplier) = notify.ok_or(LayoutError::Missing(cfg_type::NOTIFY))?;
    let isr = isr.ok_or(LayoutError::Missing(cfg_type::ISR))?;
    Ok(Layout { common, notify, notify_off_multiplier, isr, device })
}

/// The virtio device type of a virtio-pci device ID (section 4.1.2.1:
/// modern `0x1040 + type`; transitional `0x1000..=0x103f` by its table), else `None`.
pub fn device_type(device_id: u16) -> Option<u32> {
    match device_id {
        0x1000 => Some(1),
        0x1001 => Some(2),
        0x1002 => Some(5),
        0x1003 => Some(3),
        0x1004 => Some(8),
        0x1005 => Some(4),
        0x1009 => Some(9),
        0x1041..=0x107f => Some(u32::from(device_id - 0x1040)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{Capability, MAX_CAPABILITIES};
    use std::vec::Vec;

    /// One function's configuration space, 256 bytes, read-only.
    struct Space([u8; 256]);

    impl ConfigSpace for Space {
        fn read32(&self, _: PciAddress, offset: u16) -> u32 {
            let at = usize::from(offset & 0xfc);
            u32::from_le_bytes(self.0[at..at + 4].try_into().unwrap())
        }
        fn write32(&self, _: PciAddress, _: u16, _: u32) {}
    }

    /// `(offset, cfg_type, cap_len, bar, structure offset, length, multiplier)`.
    type Cap = (u16, u8, u8, u8, u32, u32, u32);

    /// QEMU's virtio-rng-pci: four structures in the 16 KiB BAR 4 at 0x8_0000_0000.
    const QEMU: [Cap; 4] = [
        (0x84, cfg_type::COMMON, 16, 4, 0x0000, 0x1000, 0),
        (0x70, cfg_type::ISR, 16, 4, 0x1000, 0x1000, 0),
        (0x60, cfg_type::DEVICE, 16, 4, 0x2000, 0x1000, 0),
        (0x4c, cfg_type::NOTIFY, 20, 4, 0x3000, 0x1000, 4),
    ];

    fn function(caps: &[Cap]) -> (Space, Function) {
        let mut space = [0u8; 256];
        let mut function = Function::default();
        function.bars[0] = Bar::Io { port: 0xc040, size: 32 };
        function.bars[1] = Bar::Memory { address: 0xfebf_1000, size: 0x1000, prefetchable: false, wide: false };
        function.bars[4] = Bar::Memory { address: 0x8_0000_0000, size: 0x4000, prefetchable: true, wide: true };
        function.bars[3] = Bar::Memory { address: 0, size: 0x4000, prefetchable: false, wide: false };
        for (index, &(at, kind, length, bar, offset, size, multiplier)) in caps.iter().enumerate() {
            let at = usize::from(at);
            space[at] = CAPABILITY_VENDOR;
            space[at + 2] = length;
            space[at + 3] = kind;
            space[at + 4] = bar;
            space[at + 8..at + 12].copy_from_slice(&offset.to_le_bytes());
            space[at + 12..at + 16].copy_from_slice(&size.to_le_bytes());
            if kind == cfg_type::NOTIFY {
                space[at + 16..at + 20].copy_from_slice(&multiplier.to_le_bytes());
            }
            function.capabilities[index] = Capability { id: CAPABILITY_VENDOR, offset: at as u16 };
        }
        function.capability_count = caps.len().min(MAX_CAPABILITIES);
        (Space(space), function)
    }

    fn parse(caps: &[Cap]) -> (Result<Layout, LayoutError>, Vec<Problem>) {
        let (space, function) = function(caps);
        let mut problems = Vec::new();
        let layout = parse_layout(&space, PciAddress::new(0, 3, 0), &function, |p| problems.push(p));
        (layout, problems)
    }

    #[test]
    fn qemu_layout() {
        let (layout, problems) = parse(&QEMU);
        let layout = layout.unwrap();
        assert!(problems.is_empty());
        assert_eq!(layout.common, Region { bar: 4, offset: 0, length: 0x1000, address: 0x8_0000_0000 });
        assert_eq!(layout.isr.address, 0x8_0000_1000);
        assert_eq!(layout.device.unwrap().address, 0x8_0000_2000);
        assert_eq!(layout.notify.address, 0x8_0000_3000);
        assert_eq!(layout.notify_off_multiplier, 4);
        assert_eq!(layout.doorbell(0), Some(0));
        assert_eq!(layout.doorbell(3), Some(12));
        assert_eq!(layout.doorbell(1023), Some(4092));
        assert_eq!(layout.doorbell(1024), None, "past the notify region");
        assert_eq!(layout.bars().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn zero_multiplier_shares_one_doorbell() {
        let mut caps = QEMU;
        caps[3].6 = 0;
        let layout = parse(&caps).0.unwrap();
        assert_eq!(layout.doorbell(0), Some(0));
        assert_eq!(layout.doorbell(u16::MAX), Some(0));
    }

    #[test]
    fn garbled_capabilities_are_skipped_and_the_next_one_used() {
        let caps = [
            // Too short, a BAR that does not exist, an I/O BAR, an
            // unassigned BAR, past the end of its BAR, an overflowing
            // range, a too-small common structure, an odd multiplier:
            // each skipped with a reason.
            (0x40, cfg_type::COMMON, 8, 4, 0, 0x1000, 0),
            (0x50, cfg_type::COMMON, 16, 7, 0, 0x1000, 0),
            (0x60, cfg_type::COMMON, 16, 0, 0, 0x10, 0),
            (0x70, cfg_type::COMMON, 16, 3, 0, 0x1000, 0),
            (0x80, cfg_type::ISR, 16, 4, 0x3fff, 2, 0),
            (0x90, cfg_type::ISR, 16, 4, 0xffff_ffff, 0xffff_ffff, 0),
            (0xa0, cfg_type::COMMON, 16, 4, 0, 0x20, 0),
            (0xb0, cfg_type::NOTIFY, 20, 4, 0x3000, 0x1000, 3),
            (0xc4, cfg_type::NOTIFY, 16, 4, 0x3000, 0x1000, 4),
            // Then good ones; unknown and unused types are passed over.
            (0xd8, cfg_type::COMMON, 16, 4, 0, 0x38, 0),
            (0xe8, cfg_type::PCI, 20, 0, 0, 0, 0),
            (0x18, cfg_type::ISR, 16, 1, 0x10, 1, 0),
            (0x28, cfg_type::NOTIFY, 20, 4, 0x3000, 0x10, 2),
            (0xec, 0xee, 16, 9, 0, 0, 0),
        ];
        let (layout, problems) = parse(&caps);
        let layout = layout.unwrap();
        assert_eq!(
            problems,
            vec![
                Problem::Short { at: 0x40, length: 8 },
                Problem::NoSuchBar { at: 0x50, bar: 7 },
                Problem::UnusableBar { at: 0x60, bar: 0 },
                Problem::UnusableBar { at: 0x70, bar: 3 },
                Problem::OutsideBar { at: 0x80, cfg_type: cfg_type::ISR },
                Problem::OutsideBar { at: 0x90, cfg_type: cfg_type::ISR },
                Problem::TooSmall { at: 0xa0, cfg_type: cfg_type::COMMON, length: 0x20 },
                Problem::OddMultiplier { at: 0xb0, multiplier: 3 },
                Problem::Short { at: 0xc4, length: 16 },
            ]
        );
        assert_eq!(layout.common.offset, 0);
        assert_eq!(layout.common.length, 0x38);
        assert_eq!(layout.isr, Region { bar: 1, offset: 0x10, length: 1, address: 0xfebf_1010 });
        assert_eq!(layout.notify_off_multiplier, 2);
        assert_eq!(layout.doorbell(7), Some(14));
        assert_eq!(layout.doorbell(8), None);
        assert_eq!(layout.device, None);
        assert_eq!(layout.bars().collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn missing_structures_refuse_the_device() {
        assert_eq!(parse(&[]).0, Err(LayoutError::Missing(cfg_type::COMMON)));
        assert_eq!(parse(&QEMU[..2]).0, Err(LayoutError::Missing(cfg_type::NOTIFY)));
        let no_isr = [QEMU[0], QEMU[2], QEMU[3]];
        assert_eq!(parse(&no_isr).0, Err(LayoutError::Missing(cfg_type::ISR)));
        assert!(parse(&[QEMU[0], QEMU[1], QEMU[3]]).0.unwrap().device.is_none());
    }

    #[test]
    fn random_capability_bytes_never_panic() {
        // A small xorshift: every byte of the capability area random.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut space = [0u8; 256];
            for byte in space.iter_mut().skip(0x40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            let (_, mut function) = function(&[]);
            for (index, capability) in function.capabilities.iter_mut().enumerate() {
                *capability = Capability { id: CAPABILITY_VENDOR, offset: 0x40 + 8 * index as u16 };
            }
            function.capability_count = MAX_CAPABILITIES;
            let space = Space(space);
            if let Ok(layout) = parse_layout(&space, PciAddress::new(0, 1, 0), &function, |_| {}) {
                for region in [layout.common, layout.notify, layout.isr] {
                    let Bar::Memory { size, .. } = function.bars[usize::from(region.bar)] else { panic!() };
                    assert!(region.offset + region.length <= size);
                }
                assert!(layout.common.length >= common::MIN_BYTES);
                let _ = layout.doorbell(u16::MAX);
            }
        }
    }

    #[test]
    fn device_ids() {
        assert_eq!(device_type(0x1044), Some(4));
        assert_eq!(device_type(0x1041), Some(1));
        assert_eq!(device_type(0x1005), Some(4));
        assert_eq!(device_type(0x1000), Some(1));
        assert_eq!(device_type(0x1040), None);
        assert_eq!(device_type(0x1080), None);
        assert_eq!(device_type(0x10f0), None);
    }
}
