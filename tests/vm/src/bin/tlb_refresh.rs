//! TLB refreshes (docs/memory.md, "The TLB under TCG"): a CPU that keeps
//! putting new memory to use refreshes its TLB every 20 ms, and a CPU
//! that stops backs off (the interval doubles at each refresh, up to
//! 1.28 s). On each CPU at once:
//! - 200 ms of allocating, touching and freeing 1 MiB blocks, yielding
//!   between them: 5 to 13 refreshes (10 nominal; each end allows for a
//!   slow host and for the first one being due at once);
//! - then 400 ms of yielding only: 1 to 6 (the first refresh still sees
//!   the last allocations; then the gaps are 20, 40, 80, 160 ms: about 5;
//!   at the base rate it would be 20).
//!
//! Booted with `toro.tlb_refresh=off`: no refreshes at all.

#![no_std]
#![no_main]

use core::ops::RangeInclusive;
use core::time::Duration;

use toro::alloc::format;
use toro::alloc::string::String;
use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::time::Instant;
use toro::{println, system, thread};

const GROWING: Duration = Duration::from_millis(200);
const QUIET: Duration = Duration::from_millis(400);
const BLOCK: usize = 1 << 20;

/// Refreshes CPU `cpu` makes while `work` runs repeatedly for `spell`.
fn refreshes_during(cpu: usize, spell: Duration, mut work: impl FnMut()) -> u64 {
    let before = thread::tlb_refreshes(cpu).expect("a running CPU counts its refreshes");
    let start = Instant::now();
    while start.elapsed() < spell {
        work();
        thread::yield_now();
    }
    thread::tlb_refreshes(cpu).expect("still running") - before
}

#[toro::main]
fn main() -> i32 {
    let off = system::argument("toro.tlb_refresh") == Some("off");
    let (want_growing, want_quiet): (RangeInclusive<u64>, RangeInclusive<u64>) =
        if off { (0..=0, 0..=0) } else { (5..=13, 1..=6) };
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let handles: Vec<_> = (0..cpus)
        .map(|cpu| {
            thread::spawn_on(cpu, move || {
                let growing = refreshes_during(cpu, GROWING, || {
                    let mut block = vec![0u8; BLOCK];
                    for page in block.chunks_mut(4096) {
                        page[0] = 1;
                    }
                    core::hint::black_box(&block);
                });
                let quiet = refreshes_during(cpu, QUIET, || {});
                (growing, quiet)
            })
        })
        .collect();
    let mut failed = false;
    for (cpu, handle) in handles.into_iter().enumerate() {
        let (growing, quiet) = handle.join();
        let ok = want_growing.contains(&growing) && want_quiet.contains(&quiet);
        println!(
            "cpu {cpu}: {growing} TLB refreshes in {} ms of allocating, {quiet} in {} ms of yielding only{}",
            GROWING.as_millis(),
            QUIET.as_millis(),
            if ok { String::new() } else { format!(" (FAILED: want {want_growing:?} and {want_quiet:?})") }
        );
        failed |= !ok;
    }
    if failed {
        1
    } else {
        println!("tlb_refresh: every CPU refreshed its TLB at the set rate");
        0
    }
}
