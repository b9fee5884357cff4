//! The watchdog: a thread that runs too long without reaching a scheduling
//! point is reported with its name, CPU and backtrace.
//!
//! Scheduling is cooperative: a thread that never yields, blocks or sleeps
//! keeps its CPU (and every other thread queued there) forever. Every CPU
//! stamps the TSC at each scheduling point (`switch_away`: one plain store
//! to its own cache line, no lock; 0 while it halts idle). Every CPU also
//! watches its neighbour (CPU c watches CPU c + 1 mod n): at its own
//! scheduling points, at most every quarter of the limit, it reads the
//! neighbour's stamp (an idle CPU's timer wakes it for that). When the
//! stamp is older than the limit, it sends the neighbour an NMI, which gets
//! through even though threads run with interrupts off; the stuck CPU's NMI
//! handler reports the thread it interrupted, with a backtrace from the
//! interrupted frame, and then returns (`report`, the default: the thread
//! goes on) or ends the VM with [`EXIT_WATCHDOG`] (`stop`). One report per
//! stuck stretch: a new report needs a new scheduling point first.
//!
//! `toro.watchdog=SECONDS|off` (default 2), `toro.watchdog_action=report|stop`.
//! With one CPU nothing watches (no other CPU to notice).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use toro_core::command_line::{self, Watchdog, WatchdogAction};

use crate::arch::interrupts::InterruptFrame;
use crate::arch::percpu::{self, MAX_CPUS};

/// Exit status of the VM when the watchdog stops it.
pub const EXIT_WATCHDOG: u32 = 104;

/// The default limit: two seconds.
const DEFAULT_MILLISECONDS: u64 = 2000;

/// One CPU's stamp on a cache line of its own (the owner writes it at
/// every scheduling point; its watcher reads it rarely).
#[repr(align(64))]
struct Stamp {
    /// TSC at the CPU's last scheduling point; 0 while it halts idle (or
    /// before its scheduler runs).
    last: AtomicU64,
    /// Written by the watcher before its NMI: the stamp it found too old
    /// (0: no request). Read and cleared by the stuck CPU's NMI handler.
    request: AtomicU64,
    /// Reports made by this CPU's NMI handler (written by it only).
    reports: AtomicU64,
}

static STAMPS: [Stamp; MAX_CPUS] =
    [const { Stamp { last: AtomicU64::new(0), request: AtomicU64::new(0), reports: AtomicU64::new(0) } }; MAX_CPUS];

/// The limit in TSC ticks (0: off), and the action; set once at boot.
static LIMIT_TICKS: AtomicU64 = AtomicU64::new(0);
static LIMIT_MILLISECONDS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// Reads `toro.watchdog=` and `toro.watchdog_action=` (boot CPU, after the
/// TSC is calibrated, before any scheduler starts).
pub(crate) fn init() {
    let milliseconds = match crate::system::argument("toro.watchdog").map(command_line::parse_watchdog) {
        None => DEFAULT_MILLISECONDS,
        Some(Ok(Watchdog::Off)) => 0,
        Some(Ok(Watchdog::AfterMilliseconds(milliseconds))) => milliseconds,
        Some(Err(error)) => {
            crate::println!("toro: warning: {error}; the watchdog keeps its default (2 s)");
            DEFAULT_MILLISECONDS
        }
    };
    match crate::system::argument("toro.watchdog_action").map(command_line::parse_watchdog_action) {
        None | Some(Ok(WatchdogAction::Report)) => {}
        Some(Ok(WatchdogAction::Stop)) => STOP.store(true, Ordering::Relaxed),
        Some(Err(error)) => crate::println!("toro: warning: {error}; the watchdog only reports"),
    }
    let Some(hz) = crate::time::tsc_hz() else {
        if milliseconds != 0 {
            log::warn!("watchdog off: the TSC frequency is unknown");
        }
        return;
    };
    let ticks = (hz as u128 * milliseconds as u128 / 1000).min(u64::MAX as u128) as u64;
    LIMIT_MILLISECONDS.store(milliseconds, Ordering::Relaxed);
    LIMIT_TICKS.store(ticks, Ordering::Relaxed);
    if ticks != 0 {
        log::info!("watchdog: {milliseconds} ms without a scheduling point is reported");
    }
}

/// Ticks between two looks at the neighbour (`u64::MAX`: never).
pub(crate) fn check_interval() -> u64 {
    match LIMIT_TICKS.load(Ordering::Relaxed) {
        0 => u64::MAX,
        ticks => (ticks / 4).max(1),
    }
}

/// The scheduling point's stamp: `now` (a TSC value) on CPU `cpu`. One
/// plain store; this is all the watchdog costs on the yield path.
#[inline(always)]
pub(crate) fn stamp(cpu: usize, now: u64) {
    STAMPS[cpu].last.store(now, Ordering::Relaxed);
}

/// CPU `cpu` is about to halt idle: nothing runs there to watch.
#[inline(always)]
pub(crate) fn stamp_idle(cpu: usize) {
    STAMPS[cpu].last.store(0, Ordering::Relaxed);
}

/// Looks at the neighbour of CPU `me` at TSC `now`; `reported` is the
/// stamp this CPU last reported for it (updated). Sends the NMI if the
/// neighbour is stuck. Plain loads and stores, an ICR write: no lock.
/// (CPUs come online during boot: a CPU alone now may have a neighbour
/// at its next look.)
#[cold]
#[inline(never)]
pub(crate) fn check(me: usize, now: u64, reported: &mut u64) {
    let count = crate::cpu::count();
    let victim = (me + 1) % count.max(1);
    if victim == me {
        return;
    }
    let last = STAMPS[victim].last.load(Ordering::Relaxed);
    let limit = LIMIT_TICKS.load(Ordering::Relaxed);
    if last == 0 || limit == 0 || now.saturating_sub(last) <= limit || last == *reported {
        return;
    }
    let Some(block) = percpu::by_index(victim) else { return };
    *reported = last;
    STAMPS[victim].request.store(last, Ordering::Release);
    crate::arch::apic::send_nmi(block.apic_id);
}

/// The NMI handler's part (this CPU): if a watcher asked, report the
/// interrupted thread and return true (then stop the VM if so configured).
pub(crate) fn on_nmi(frame: &InterruptFrame) -> bool {
    let me = percpu::current_index();
    let stamp = &STAMPS[me];
    let requested = stamp.request.load(Ordering::Acquire);
    if requested == 0 {
        return false;
    }
    stamp.request.store(0, Ordering::Relaxed);
    if stamp.last.load(Ordering::Relaxed) != requested {
        // It reached a scheduling point since: not stuck after all.
        return true;
    }
    stamp.reports.store(stamp.reports.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let stuck = crate::arch::cpu::rdtsc().saturating_sub(requested);
    let stuck_ms = crate::time::ticks_to_duration(stuck).map_or(0, |d| d.as_millis());
    let stop = STOP.load(Ordering::Relaxed);
    {
        let mut out = crate::console::Emergency::lock();
        let _ = write!(out, "\n!!! watchdog: ");
        super::scheduler::describe_current(&mut out);
        let _ = writeln!(
            out,
            " on cpu {me} has run {stuck_ms} ms without reaching a scheduling point (limit {} ms; {})",
            LIMIT_MILLISECONDS.load(Ordering::Relaxed),
            if stop { "stopping the VM" } else { "it goes on" }
        );
        let _ = writeln!(out, "    rip {:#018x} rsp {:#018x}", frame.rip, frame.rsp);
        crate::backtrace::write(&mut out, frame.rip, frame.rbp);
    }
    if stop {
        crate::arch::exit::fail(EXIT_WATCHDOG);
    }
    true
}

/// Watchdog reports made so far (every CPU's).
pub fn reports() -> u64 {
    STAMPS.iter().map(|stamp| stamp.reports.load(Ordering::Relaxed)).sum()
}
