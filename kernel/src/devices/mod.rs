//! Devices: device memory, discovery (PCI), owners, the boot report.
//!
//! Every device is owned by one CPU (docs/devices.md): its driver runs as a
//! service there (`crate::service`), its interrupts are routed there
//! (`crate::interrupts`), its registers are mapped by a [`DeviceMemory`]
//! the service keeps.

pub mod memory;

pub use memory::{DeviceMemory, MapError, Mmio};
