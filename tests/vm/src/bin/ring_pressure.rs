//! Full job rings: every CPU busy-waits, then floods the next (and then the
//! previous) CPU with threads and joins them all. The rings between CPU
//! pairs fill in both directions; every thread must still be joined, and
//! the per-CPU statistics must show the full rings.

#![no_std]
#![no_main]

use core::time::Duration;

use toro::alloc::vec::Vec;
use toro::thread;
use toro::time::Instant;
use toro::{cpu, println};

/// How long each CPU stays away from its scheduler before flooding.
const BUSY: Duration = Duration::from_millis(20);
/// Rounds per CPU (alternating next / previous CPU) and threads per round.
const ROUNDS: usize = 4;
const THREADS_PER_ROUND: usize = 300;

fn busy_wait(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        core::hint::spin_loop();
    }
}

/// One CPU's part: busy-wait, spawn a round of threads onto a neighbour,
/// join them all; returns the sum of what they returned.
fn flood(me: usize, cpus: usize) -> u64 {
    let mut sum = 0;
    for round in 0..ROUNDS {
        busy_wait(BUSY);
        let target = if round % 2 == 0 { (me + 1) % cpus } else { (me + cpus - 1) % cpus };
        let handles: Vec<_> = (0..THREADS_PER_ROUND as u64)
            .map(|i| {
                // One 28 KiB slot each: 300 live threads fit the zone of a
                // CPU with 64 MiB of RAM (default stacks take two slots).
                let builder = thread::Builder::new().stack_size(16 << 10);
                builder.spawn_on(target, move || i + 1).expect("spawn")
            })
            .collect();
        sum += handles.into_iter().map(|handle| handle.join()).sum::<u64>();
    }
    sum
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let start = Instant::now();
    let drivers: Vec<_> = (0..cpus).map(|me| thread::spawn_on(me, move || flood(me, cpus))).collect();
    let total: u64 = drivers.into_iter().map(|driver| driver.join()).sum();
    let per_round = (THREADS_PER_ROUND as u64) * (THREADS_PER_ROUND as u64 + 1) / 2;
    let expected = per_round * (ROUNDS * cpus) as u64;
    println!(
        "ring_pressure: {} threads on {cpus} cpus joined in {} ms",
        ROUNDS * THREADS_PER_ROUND * cpus,
        start.elapsed().as_millis()
    );
    let mut ok = total == expected;
    if !ok {
        println!("FAILED: threads returned {total}, expected {expected}");
    }
    if cpus > 1 {
        for index in 0..cpus {
            let stats = cpu::stats(index).expect("a running CPU has statistics");
            println!("cpu {index}: {stats}");
            if stats.ring_full == 0 {
                println!("FAILED: cpu {index} never found a ring full");
                ok = false;
            }
        }
    }
    if ok {
        println!("ring_pressure: all checks passed");
        0
    } else {
        1
    }
}
