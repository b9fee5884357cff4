//! Everything specific to x86_64: boot entry, descriptor tables, paging,
//! interrupts, the serial port and VM exit. The rest of the kernel reaches
//! the hardware only through this module.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod exit;
pub mod gdt;
pub mod interrupts;
pub mod ioapic;
pub mod irq;
pub mod paging;
pub mod pci_port;
pub mod percpu;
pub mod pit;
pub mod rng;
pub mod rtc;
pub mod sections;
pub mod serial;
pub mod smp;
