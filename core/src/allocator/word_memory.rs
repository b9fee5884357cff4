//! The allocator's one seam to memory: 64-bit words read and written by address.
//!
//! All of the heap's metadata (the page table, the span descriptors, the
//! free lists threaded through free blocks and free page runs, the
//! remote-free lists threaded through blocks in flight) is read and written
//! through a [`WordMemory`], so the bookkeeping itself is safe code:
//!
//! - the kernel implements it with a raw pointer read or write over its
//!   identity-mapped memory (`#[inline]`: it compiles to one `mov`);
//! - tests implement it over a `Vec<u64>` shadow of a fake region, which
//!   also checks that the allocator never reads or writes inside a block
//!   while it is handed out.

/// Reads and writes aligned 64-bit words of physical memory.
///
/// Addresses are byte addresses, always multiples of 8. The allocator only
/// touches words inside regions given to [`CpuHeap::new`] (its own region,
/// or, on a remote free, the first word of a block it was handed), so an
/// implementation over identity-mapped RAM needs no checks of its own.
///
/// [`CpuHeap::new`]: super::CpuHeap::new
pub trait WordMemory {
    /// The word at `address`.
    fn load(&self, address: u64) -> u64;

    /// Writes `value` at `address`.
    fn store(&mut self, address: u64, value: u64);
}

impl<M: WordMemory + ?Sized> WordMemory for &mut M {
    #[inline]
    fn load(&self, address: u64) -> u64 {
        (**self).load(address)
    }

    #[inline]
    fn store(&mut self, address: u64, value: u64) {
        (**self).store(address, value);
    }
}
