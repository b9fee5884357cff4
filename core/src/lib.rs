//! Toro's host-testable core: the parsers early boot runs on what the VMM
//! hands over, and the bookkeeping of the allocator and the scheduler.
//!
//! Much of this reads firmware or VMM data that the kernel cannot trust,
//! so the rules are strict: no heap (the heap does not exist yet when these
//! run), no `unsafe` outside [`spsc`] (the lock-free cell between two CPUs)
//! and [`run_queue`] (an intrusive list), and no panic on any input — bad
//! data gives an error or a count in a report, never a fault. The same code runs under plain
//! `cargo test` on the host, where the tests feed it the layouts QEMU and
//! Firecracker produce, and malformed ones.
//!
//! - [`pvh`]: the Xen PVH `hvm_start_info` structure (entry point of the boot).
//! - [`memory_map`]: a fixed-capacity, normalised map of physical memory.
//! - [`command_line`]: the kernel command line, sanitised and split.
//! - [`acpi`]: just enough ACPI to find the tables and count the CPUs.
//! - [`fadt`]: the FADT and how to power off; [`s5`]: the DSDT's `\_S5` sleep type.
//! - [`physical_memory`]: the one seam to the machine, [`PhysicalMemory`].
//! - [`spsc`]: the single-producer single-consumer ring between two CPUs.
//! - [`allocator`]: the per-CPU heap (size classes, spans, page runs) and the
//!   remote-free hand-off, written against [`allocator::WordMemory`].
//! - [`dedicate`]: `toro.dedicate=...`, which CPU owns which device.
//! - [`pci`]: the ACPI MCFG, PCI enumeration, BAR sizing, capabilities, MSI.
//! - [`numa`]: the ACPI SRAT (NUMA nodes); [`memory_split`]: RAM split into
//!   one share per CPU.
//! - [`channel`]: the many-producer channels' bookkeeping (sender weights,
//!   per-sender order marks).
//! - [`rtc`]: the CMOS real-time clock's date registers (BCD, 12-hour,
//!   century) to Unix time.
//! - [`virtio`]: split virtqueues (both sides' bookkeeping) and virtio-mmio
//!   discovery from the command line and the ACPI DSDT.
//! - [`seq_words`]: a few words read from any CPU without a lock, written
//!   rarely (a sequence lock of atomics).
//! - [`run_queue`]: the scheduler's O(1) FIFO; [`wake`]: the wake-up
//!   hand-shake (waiter slot, fences, wait epochs) between CPUs;
//!   [`timer_heap`]: each CPU's sleepers, a deadline heap whose entries
//!   can be cancelled.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

// `timer_heap` grows with `Vec` (the kernel's global allocator); every
// other module allocates nothing.
extern crate alloc;

pub mod acpi;
pub mod allocator;
pub mod channel;
pub mod command_line;
pub mod dedicate;
pub mod fadt;
pub mod memory_map;
pub mod memory_split;
pub mod mount;
pub mod numa;
pub mod pci;
pub mod physical_memory;
pub mod pvh;
pub mod rtc;
pub mod run_queue;
pub mod s5;
pub mod seq_words;
pub mod spsc;
pub mod timer_heap;
pub mod tlb_pacing;
pub mod virtio;
pub mod wake;

#[cfg(test)]
pub(crate) mod test_memory;

pub use physical_memory::{PhysicalMemory, SliceMemory, Unreadable};
