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
//!
//! `SystemTime` is the wall clock: the CMOS RTC read once at boot (where
//! the VMM has one), advanced by the TSC; where there is none,
//! `SystemTime::try_now` says `NoWallClock` and `now` panics (see
//! `docs/time.md`).

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

/// `toro.tsc_khz=`: the frequency as the VMM's host knows it. It comes
/// first: a VMM that offers no CPUID leaf for it (QEMU's TCG passes the
/// host's TSC through and says nothing of its rate) otherwise leaves a
/// 2 ms PIT calibration, whose I/O-port reads under emulation put it
/// 0.5-2% off (2.61-2.65 GHz measured for a host TSC of 2.596 GHz).
/// `cargo xtask` passes the host's value under TCG, as it passes
/// `tsc_early_khz=` to the Linux guest.
fn from_command_line() -> Option<u64> {
    match crate::system::argument("toro.tsc_khz").map(toro_core::command_line::parse_tsc_khz)? {
        Ok(khz) => Some(khz * 1000),
        Err(error) => {
            crate::println!("toro: warning: {error}; the TSC frequency is measured instead");
            None
        }
    }
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
    let hz = from_command_line().or_else(from_cpuid).or_else(from_pit).unwrap_or(u64::MAX);
    if hz == u64::MAX {
        log::warn!("TSC frequency unknown (no CPUID leaf, no PIT): durations unavailable");
    }
    TSC_HZ.store(hz, Ordering::Release);
    read_wall_clock();
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

/// Converts a duration to TSC ticks (None if the frequency is unknown or
/// it does not fit).
fn duration_to_ticks(duration: Duration) -> Option<u64> {
    let hz = tsc_hz()? as u128;
    u64::try_from(duration.as_nanos().checked_mul(hz)? / NANOS_PER_SECOND).ok()
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A point in time: a TSC reading. Monotonic; comparable across CPUs.
/// Shaped like `std::time::Instant`.
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

    /// The instant at raw TSC value `ticks`.
    pub(crate) fn from_ticks(ticks: u64) -> Self {
        Self(ticks)
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later, as std
    /// does since Rust 1.60).
    pub fn duration_since(&self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }

    /// Time from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn checked_duration_since(&self, earlier: Instant) -> Option<Duration> {
        ticks_to_duration(self.0.checked_sub(earlier.0)?)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        ticks_to_duration(self.0.saturating_sub(earlier.0)).unwrap_or(Duration::ZERO)
    }

    /// Time since `self`.
    pub fn elapsed(&self) -> Duration {
        Self::now().duration_since(*self)
    }

    /// `self + duration`, if the TSC frequency is known and it fits.
    pub fn checked_add(&self, duration: Duration) -> Option<Instant> {
        Some(Self(self.0.checked_add(duration_to_ticks(duration)?)?))
    }

    /// `self - duration`, if the TSC frequency is known and the result is
    /// not before the TSC's zero (about when the VM started).
    pub fn checked_sub(&self, duration: Duration) -> Option<Instant> {
        Some(Self(self.0.checked_sub(duration_to_ticks(duration)?)?))
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
        self.checked_add(duration).expect("overflow when adding duration to instant")
    }
}

impl core::ops::Sub<Duration> for Instant {
    type Output = Instant;
    /// Panics if the result would be before the TSC's zero, like std.
    fn sub(self, duration: Duration) -> Instant {
        self.checked_sub(duration).expect("overflow when subtracting duration from instant")
    }
}

impl core::ops::AddAssign<Duration> for Instant {
    fn add_assign(&mut self, duration: Duration) {
        *self = *self + duration;
    }
}

impl core::ops::SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, duration: Duration) {
        *self = *self - duration;
    }
}

/// Where the wall clock comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WallClock {
    /// The CMOS RTC, read once at boot (whole seconds), then advanced by
    /// the TSC.
    Rtc,
}

/// No wall clock: the VMM offers none that Toro reads (no CMOS RTC, e.g.
/// QEMU microvm with `rtc=off` or Firecracker; kvmclock is not read yet),
/// or the RTC held no valid date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoWallClock;

impl core::fmt::Display for NoWallClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no wall clock: the VMM offers no CMOS RTC (see docs/time.md)")
    }
}

impl core::error::Error for NoWallClock {}

/// Unix time in nanoseconds at TSC value `WALL_TSC`; 0 = no wall clock.
static WALL_NANOS: AtomicU64 = AtomicU64::new(0);
static WALL_TSC: AtomicU64 = AtomicU64::new(0);

/// Reads the RTC once (boot CPU, at boot, after the TSC frequency).
fn read_wall_clock() {
    let Some(registers) = crate::arch::rtc::read_registers() else {
        log::info!("wall clock: absent (no CMOS RTC)");
        return;
    };
    let tsc = rdtsc();
    // Platforms without a century register read garbage there: try
    // without it before giving up.
    let seconds =
        registers.unix_seconds().or_else(|_| toro_core::rtc::Registers { century: None, ..registers }.unix_seconds());
    match seconds {
        Ok(seconds) => {
            WALL_TSC.store(tsc, Ordering::Relaxed);
            WALL_NANOS.store(seconds.saturating_mul(1_000_000_000).max(1), Ordering::Release);
        }
        Err(error) => log::warn!("wall clock: absent ({error})"),
    }
}

/// The wall clock's source, if there is one.
pub fn wall_clock() -> Option<WallClock> {
    (WALL_NANOS.load(Ordering::Acquire) != 0).then_some(WallClock::Rtc)
}

/// A point in wall-clock time (UTC), shaped like `std::time::SystemTime`.
/// Not monotonic in general; here it advances with the TSC from one RTC
/// reading at boot (so it is, but do not rely on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemTime(Duration);

/// 1970-01-01 00:00:00 UTC.
pub const UNIX_EPOCH: SystemTime = SystemTime(Duration::ZERO);

/// `duration_since` got a later time; the error holds by how much.
#[derive(Clone, Debug)]
pub struct SystemTimeError(Duration);

impl SystemTimeError {
    /// How much later the argument was.
    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl core::fmt::Display for SystemTimeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("second time provided was later than self")
    }
}

impl core::error::Error for SystemTimeError {}

impl SystemTime {
    /// 1970-01-01 00:00:00 UTC.
    pub const UNIX_EPOCH: SystemTime = UNIX_EPOCH;

    /// Now. Panics where there is no wall clock (see `wall_clock` and
    /// `try_now`): std's `now` cannot fail, and a made-up date would be
    /// worse than a clear stop.
    pub fn now() -> SystemTime {
        match Self::try_now() {
            Ok(now) => now,
            Err(error) => panic!("SystemTime::now: {error}"),
        }
    }

    /// Now, or `NoWallClock` where the VMM offers none.
    pub fn try_now() -> Result<SystemTime, NoWallClock> {
        let base = WALL_NANOS.load(Ordering::Acquire);
        if base == 0 {
            return Err(NoWallClock);
        }
        let since = ticks_to_duration(rdtsc().saturating_sub(WALL_TSC.load(Ordering::Relaxed))).ok_or(NoWallClock)?;
        Ok(SystemTime(Duration::from_nanos(base) + since))
    }

    /// Time from `earlier` to `self`, or by how much `earlier` is later.
    pub fn duration_since(&self, earlier: SystemTime) -> Result<Duration, SystemTimeError> {
        self.0.checked_sub(earlier.0).ok_or_else(|| SystemTimeError(earlier.0 - self.0))
    }

    /// Time since `self` (panics without a wall clock, like `now`).
    pub fn elapsed(&self) -> Result<Duration, SystemTimeError> {
        SystemTime::now().duration_since(*self)
    }

    pub fn checked_add(&self, duration: Duration) -> Option<SystemTime> {
        self.0.checked_add(duration).map(SystemTime)
    }

    /// `self - duration`, if not before the epoch (this `SystemTime` does
    /// not represent earlier times).
    pub fn checked_sub(&self, duration: Duration) -> Option<SystemTime> {
        self.0.checked_sub(duration).map(SystemTime)
    }
}

impl core::ops::Add<Duration> for SystemTime {
    type Output = SystemTime;
    fn add(self, duration: Duration) -> SystemTime {
        self.checked_add(duration).expect("overflow when adding duration to instant")
    }
}

impl core::ops::Sub<Duration> for SystemTime {
    type Output = SystemTime;
    fn sub(self, duration: Duration) -> SystemTime {
        self.checked_sub(duration).expect("overflow when subtracting duration from instant")
    }
}

impl core::ops::AddAssign<Duration> for SystemTime {
    fn add_assign(&mut self, duration: Duration) {
        *self = *self + duration;
    }
}

impl core::ops::SubAssign<Duration> for SystemTime {
    fn sub_assign(&mut self, duration: Duration) {
        *self = *self - duration;
    }
}
