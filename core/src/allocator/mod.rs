//! The per-CPU allocator's bookkeeping: size classes, spans, page runs and remote frees, in safe code.
//!
//! Each CPU owns one region of physical memory and one [`CpuHeap`] over it.
//! A thread allocates from the heap of the CPU it runs on, touching only
//! that CPU's memory and metadata: no lock, no atomic read-modify-write. A
//! block freed on another CPU goes back to its owner through the
//! single-producer single-consumer ring of that CPU pair ([`remote`]), and
//! the owner frees it when it drains its rings.
//!
//! - [`size_class`]: 36 classes from 16 B to 16 KiB, O(1) lookup.
//! - `page_runs`: runs of 4 KiB pages with boundary tags,
//!   segregated free lists and O(1) coalescing with both neighbours.
//! - [`cpu_heap`]: spans of one class each for small
//!   blocks (no per-block header), page runs for large ones.
//! - [`remote`]: the outbox and inbox of remote frees.
//! - [`cpu_allocator`]: one CPU's heap and rings together, and when to drain.
//! - [`WordMemory`]: the only way any of this touches memory, so the kernel
//!   plugs in raw pointers and the tests a checked shadow.
//!
//! # Running low
//!
//! A CPU allocates only from its own region. When it has no room left for a
//! request, after returning its empty spans to the page runs
//! ([`CpuHeap::trim`]) and taking back the blocks other CPUs freed
//! ([`RemoteInbox::drain`]), [`CpuAllocator::allocate`] returns `None`. It
//! never waits and never takes memory from another CPU behind its back. The
//! kernel then asks the other CPUs to hand over what they owe it (their
//! outboxes) and retries for a bounded time; after that it turns `None`
//! into a report (which CPU, which size, every CPU's
//! [`Usage`]) and a failed allocation that applications see through their
//! fallible paths (`try_reserve`, a `try_` allocation API).
//!
//! Borrowing is left for later, and the heap is shaped for it: everything a
//! heap knows about a region is in the region's own metadata plus a
//! `PageRuns` value, so a CPU could adopt a chunk lent by
//! another CPU (handed over by message, the lender never touching it again)
//! as a second region with its own table, searched after the first.
//!
//! # Checking it
//!
//! Plain `cargo test -p toro-core` runs the unit tests and the property
//! tests (random allocate/free sequences against a shadow memory that fails
//! on any overlap or any access to a live block). The cross-CPU hand-off is
//! model-checked with loom:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p toro-core --release --test loom
//! ```

pub mod cpu_allocator;
pub mod cpu_heap;
pub(crate) mod page_runs;
pub mod remote;
pub mod size_class;
mod word_memory;

#[cfg(test)]
#[cfg_attr(loom, allow(dead_code))] // the property tests using all of it do not run under loom
pub(crate) mod shadow;
#[cfg(all(test, not(loom)))]
mod tests;

pub use cpu_allocator::{Bytes, CpuAllocator, Usage, DRAIN_INTERVAL};
pub use cpu_heap::{CpuHeap, FreeError, HeapError, HeapUsage};
pub use remote::{
    RemoteBatch, RemoteConsumer, RemoteCounters, RemoteError, RemoteInbox, RemoteOutbox, RemoteProducer, RemoteRing,
    DEFAULT_BATCH_BLOCKS, REMOTE_RING_SLOTS,
};
pub use size_class::{SizeClass, CLASS_COUNT, MAX_SMALL_SIZE, PAGE_SIZE};
pub use word_memory::WordMemory;
