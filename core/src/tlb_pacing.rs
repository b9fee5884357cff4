//! How often a CPU refreshes its TLB (the scheduler's `refresh_tlb`; why
//! at all: docs/memory.md, "The TLB under TCG").
//!
//! A refresh lets QEMU's TCG grow its software TLB to the working set, but
//! each one also empties it, and refilling costs: measured under TCG,
//! spawn + join on one CPU took 13% longer with a refresh every 20 ms
//! than with none (medians of 8 boots; 3.5% with this pacing). The
//! table only needs to grow when the working set does, and a working set
//! grows when the CPU puts new memory to use. So the pace follows the
//! CPU's allocator: while it keeps handing out pages (at least
//! `GROWTH_PAGES` since the last refresh), the CPU refreshes at the base
//! interval; when it does not, the interval doubles at each refresh, up to
//! `MAX_BACKOFF` times the base (a working set that grows without new
//! allocations is still caught, more slowly; shrinking is QEMU's own).

/// Pages (4 KiB) put to use since the last refresh that keep the pace at
/// the base interval: 256 KiB, a quarter of the first 256-entry table.
pub const GROWTH_PAGES: u64 = 64;

/// The longest interval, as a multiple of the base (20 ms: 1.28 s).
pub const MAX_BACKOFF: u64 = 64;

/// The interval after a refresh: `base` when at least `GROWTH_PAGES`
/// pages were put to use since the previous one (`pages_taken`), else
/// `current` doubled, at most `MAX_BACKOFF * base`. All in the same unit
/// (TSC ticks); `base` of `u64::MAX` means never and stays so.
pub fn next_interval(current: u64, base: u64, pages_taken: u64) -> u64 {
    if base == u64::MAX {
        return u64::MAX;
    }
    if pages_taken >= GROWTH_PAGES {
        return base;
    }
    let longest = base.saturating_mul(MAX_BACKOFF);
    current.max(base).saturating_mul(2).min(longest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn growth_keeps_the_base_and_quiet_doubles_up_to_the_cap() {
        let base = 20;
        assert_eq!(next_interval(base, base, GROWTH_PAGES), base);
        assert_eq!(next_interval(640, base, 1000), base, "new memory resets the backoff");
        let mut interval = base;
        let mut seen = Vec::new();
        for _ in 0..10 {
            interval = next_interval(interval, base, GROWTH_PAGES - 1);
            seen.push(interval);
        }
        assert_eq!(seen, [40, 80, 160, 320, 640, 1280, 1280, 1280, 1280, 1280]);
    }

    #[test]
    fn never_stays_never() {
        assert_eq!(next_interval(u64::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(next_interval(u64::MAX, u64::MAX, 1 << 40), u64::MAX);
    }

    proptest! {
        #[test]
        fn always_between_base_and_the_cap(current in 0u64..1 << 50, base in 1u64..1 << 40, pages in 0u64..1000) {
            let next = next_interval(current, base, pages);
            prop_assert!(next >= base && next <= base * MAX_BACKOFF);
            // Back at the base exactly when new memory was put to use;
            // otherwise never shorter than twice the base, nor than before.
            prop_assert_eq!(next == base, pages >= GROWTH_PAGES);
            if pages < GROWTH_PAGES {
                prop_assert!(next >= (current.max(base) * 2).min(base * MAX_BACKOFF));
            }
        }
    }
}
