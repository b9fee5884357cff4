//! The kernel heap behind `#[global_allocator]`: `Box`, `Vec`, `String` and
//! the rest of `alloc` work from here on.
//!
//! For now one heap over the largest usable RAM region, from the
//! `linked_list_allocator` crate (first fit, coalescing, behind a spin
//! lock). The per-CPU allocator with lock-free remote frees replaces it.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives `[start, end)` to the heap.
///
/// # Safety
/// The range must be mapped, usable RAM that nothing else uses, ever.
pub unsafe fn init(start: u64, end: u64) {
    // SAFETY: the caller hands over exclusive use of the range.
    unsafe { HEAP.lock().init(start as *mut u8, (end - start) as usize) };
}

/// Bytes currently allocated and bytes free in the heap.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}
