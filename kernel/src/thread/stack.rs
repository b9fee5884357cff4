//! Thread stack sizes: slots of the stack zone, the default size and
//! `toro.stack=`.
//!
//! Each CPU's stack zone is cut at boot into 32 KiB slots, each starting
//! with an unmapped guard page. A stack of n bytes takes the smallest run
//! of consecutive slots whose memory, less the first slot's guard page,
//! holds n bytes: the guards inside the run are mapped when the run is cut
//! (`paging::map_zone_guard`; no TLB shoot-down: the pages were not
//! present). Runs are cut from the zone's untouched part, from its top
//! down (next to the CPU's heap, whose first blocks sit just past its
//! metadata: few 2 MiB pages of host memory touched), and recycled whole
//! with their control blocks (see `scheduler::Scheduler::new_control`).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::paging::PAGE_SIZE;

/// Thread-stack slot: a guard page and 28 KiB (boot sizes each CPU's
/// stack zone in whole slots).
pub(crate) const STACK_SLOT: u64 = 32 * 1024;

/// Slots of a default stack: 64 KiB of zone, 60 KiB of stack (see
/// docs/threads.md for why).
const DEFAULT_SLOTS: u64 = 2;

/// The default stack's slots, as `toro.stack=` set it (0: not read yet).
static DEFAULT: AtomicU64 = AtomicU64::new(0);

/// Slots a stack of `bytes` takes (at least one).
pub(crate) fn slots_for(bytes: usize) -> u64 {
    (bytes as u64).saturating_add(PAGE_SIZE as u64).div_ceil(STACK_SLOT).max(1)
}

/// Usable bytes of a stack of `slots` slots (one guard page less).
pub(crate) fn usable_bytes(slots: u64) -> usize {
    (slots * STACK_SLOT).saturating_sub(PAGE_SIZE as u64) as usize
}

/// Reads `toro.stack=` (boot CPU, before any scheduler starts).
pub(crate) fn init() {
    let slots = match crate::system::argument("toro.stack") {
        None => DEFAULT_SLOTS,
        Some(value) => match toro_core::command_line::parse_size(value) {
            Ok(bytes) if bytes > 0 => slots_for(bytes.min(usize::MAX as u64) as usize),
            Ok(_) => {
                crate::println!("toro: warning: toro.stack=0: a stack needs bytes; using the default");
                DEFAULT_SLOTS
            }
            Err(error) => {
                crate::println!("toro: warning: toro.stack: {error}; using the default");
                DEFAULT_SLOTS
            }
        },
    };
    DEFAULT.store(slots, Ordering::Relaxed);
}

/// Slots of a default-size stack.
pub(crate) fn default_slots() -> u64 {
    match DEFAULT.load(Ordering::Relaxed) {
        0 => DEFAULT_SLOTS,
        slots => slots,
    }
}
