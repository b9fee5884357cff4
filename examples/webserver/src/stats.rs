//! Per-CPU counters of the server. Each CPU's counters are written only by
//! threads on that CPU (a connection is served on the CPU that accepted
//! it), and scheduling is cooperative, so an increment is a plain load and
//! store: no read-modify-write, no lock. Readers on other CPUs may see a
//! value a moment old.

use core::sync::atomic::{AtomicU64, Ordering};

/// CPUs with counters (more are counted in the last slot).
pub const MAX_CPUS: usize = 64;

/// One CPU's counters.
pub struct CpuCounters {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Responses sent gzip-coded.
    pub gzipped: AtomicU64,
}

impl CpuCounters {
    const fn new() -> Self {
        Self {
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            gzipped: AtomicU64::new(0),
        }
    }
}

static COUNTERS: [CpuCounters; MAX_CPUS] = [const { CpuCounters::new() }; MAX_CPUS];

/// The running CPU's counters.
fn mine() -> &'static CpuCounters {
    &COUNTERS[toro::cpu::current().min(MAX_CPUS - 1)]
}

/// CPU `cpu`'s counters.
pub fn of(cpu: usize) -> &'static CpuCounters {
    &COUNTERS[cpu.min(MAX_CPUS - 1)]
}

/// Adds `amount` (single writer: this CPU).
fn add(counter: &AtomicU64, amount: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
}

pub fn connection_opened() {
    add(&mine().accepted, 1);
    add(&mine().open, 1);
}

pub fn connection_closed() {
    add(&mine().open, u64::MAX);
}

pub fn requests(count: u64) {
    add(&mine().requests, count);
}

pub fn rejected(count: u64) {
    add(&mine().rejected, count);
}

pub fn timed_out() {
    add(&mine().timed_out, 1);
}

pub fn refused() {
    add(&mine().refused, 1);
}

pub fn bytes_in(count: usize) {
    add(&mine().bytes_in, count as u64);
}

pub fn bytes_out(count: usize) {
    add(&mine().bytes_out, count as u64);
}

pub fn gzipped() {
    add(&mine().gzipped, 1);
}
