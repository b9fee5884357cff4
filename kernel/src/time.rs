//! Time from the TSC: its frequency, and durations since boot.
//!
//! The frequency comes from CPUID (leaf 15h, else the hypervisor leaf
//! 4000_0010h that KVM and VMware fill in) and otherwise from a calibration
//! against the PIT (channel 0 read back, 1.193182 MHz). The boot CPU
//! calibrates while the other CPUs start (`calibrate`), so the wait costs
//! nothing when there are several CPUs; afterwards the frequency is a
//! read-only value every CPU reads without synchronisation.
//!
//! `Instant` is a TSC reading: monotonic and consistent across CPUs on
//! machines with an invariant TSC (every VMM we target provides one).

use core::sync::atomic::{AtomicU64, Ordering};
pub use core::time::Duration;

use crate::arch::cpu::{cpuid, rdtsc};
use crate::arch::pit::{self, PIT_HZ};

/// 0 = not yet known; u64::MAX = could not be determined.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// PIT ticks to calibrate over (about 2 ms). One tick of the PIT is 838 ns;
/// the count is read within a few ticks' uncertainty at each end, so 2 ms
/// gives about 0.2% accuracy.
const CALIBRATION_TICKS: u64 = 2_386;

fn from_cpuid() -> Option<u64> {
    let (max_leaf, ..) = cpuid(0);
    if max_leaf >= 0x15 {
        let (denominator, numerator, crystal_hz, _) = cpuid(0x15);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            return Some(crystal_hz as u64 * numerator as u64 / denominator as u64);
        }
    }
    let (_, _, features, _) = cpuid(1);
    let hypervisor_present = features & (1 << 31) != 0;
    if hypervisor_present && cpuid(0x4000_0000).0 >= 0x4000_0010 {
        let (tsc_khz, ..) = cpuid(0x4000_0010);
        if tsc_khz != 0 {
            return Some(tsc_khz as u64 * 1000);
        }
    }
    None
}

fn from_pit() -> Option<u64> {
    pit::start_free_running();
    let start_count = pit::count();
    let start_tsc = rdtsc();
    let mut previous = start_count;
    let mut elapsed: u64 = 0;
    let mut unchanged_reads = 0u32;
    while elapsed < CALIBRATION_TICKS {
        let count = pit::count();
        if count == previous {
            unchanged_reads += 1;
            if unchanged_reads > 100_000 {
                return None; // no PIT
            }
            continue;
        }
        unchanged_reads = 0;
        // The counter counts down and wraps at 0 (reload 0 = 65536).
        elapsed += previous.wrapping_sub(count) as u64;
        previous = count;
    }
    let cycles = rdtsc() - start_tsc;
    Some(cycles * PIT_HZ / elapsed)
}

/// Finds the TSC frequency. Boot CPU only, once, before `main` (the PIT
/// is programmed here, so this must not run on two CPUs at once).
pub(crate) fn calibrate() {
    let hz = from_cpuid().or_else(from_pit).unwrap_or(u64::MAX);
    if hz == u64::MAX {
        log::warn!("TSC frequency unknown (no CPUID leaf, no PIT): durations unavailable");
    }
    TSC_HZ.store(hz, Ordering::Release);
}

/// TSC ticks per second, if known.
pub fn tsc_hz() -> Option<u64> {
    match TSC_HZ.load(Ordering::Acquire) {
        0 | u64::MAX => None,
        hz => Some(hz),
    }
}

/// Converts TSC ticks to a duration (None if the frequency is unknown).
pub fn ticks_to_duration(ticks: u64) -> Option<Duration> {
    let hz = tsc_hz()?;
    let nanoseconds = ticks as u128 * 1_000_000_000 / hz as u128;
    Some(Duration::from_nanos(nanoseconds as u64))
}

/// A point in time: a TSC reading. Monotonic; comparable across CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// Now.
    #[inline]
    pub fn now() -> Self {
        Self(rdtsc())
    }

    /// The raw TSC value.
    pub fn ticks(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        ticks_to_duration(self.0.saturating_sub(earlier.0)).unwrap_or(Duration::ZERO)
    }

    /// Time since `self`.
    pub fn elapsed(self) -> Duration {
        Self::now().duration_since(self)
    }

    /// `self + duration`, if the TSC frequency is known and it fits.
    pub fn checked_add(self, duration: Duration) -> Option<Instant> {
        let hz = tsc_hz()? as u128;
        let ticks = duration.as_nanos().checked_mul(hz)? / 1_000_000_000;
        Some(Self(self.0.checked_add(u64::try_from(ticks).ok()?)?))
    }
}

impl core::ops::Sub for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    /// Panics if the TSC frequency is unknown or the result overflows, like
    /// `std::time::Instant`.
    fn add(self, duration: Duration) -> Instant {
        self.checked_add(duration).expect("overflow when adding a duration to an instant")
    }
}
