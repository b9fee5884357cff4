//! Every CPU allocates and frees mixed sizes at once, checking each block's
//! contents; afterwards every CPU's bytes in use are back at their baseline.

#![no_std]
#![no_main]

use toro::alloc::boxed::Box;
use toro::alloc::vec::Vec;
use toro::{cpu, memory, println};

const ROUNDS: usize = 100_000;
const LIVE: usize = 256;

/// xorshift64*: a small, deterministic source of sizes.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Allocates and frees `ROUNDS` blocks of 16 B-4 KiB (and some up to 64
/// KiB), keeping up to `LIVE` alive; returns the number of corrupted blocks.
fn churn(seed: u64, rounds: usize) -> u64 {
    let mut state = seed | 1;
    let mut live: Vec<Box<[u8]>> = Vec::with_capacity(LIVE);
    let mut corrupted = 0;
    for round in 0..rounds {
        let random = next(&mut state);
        let size =
            if random % 64 == 0 { 4096 + (random >> 8) as usize % 61_440 } else { 16 + (random >> 8) as usize % 4081 };
        let tag = (round as u8) ^ (seed as u8);
        let block = toro::alloc::vec![tag; size].into_boxed_slice();
        if live.len() == LIVE {
            let victim = live.swap_remove((random >> 32) as usize % LIVE);
            if !intact(&victim) {
                corrupted += 1;
            }
        }
        live.push(block);
    }
    corrupted += live.iter().filter(|block| !intact(block)).count() as u64;
    corrupted
}

/// Whether a block still holds its fill byte: every 64th byte and the last
/// (a full scan would dominate the run under emulation).
fn intact(block: &[u8]) -> bool {
    let expected = block[0];
    block.iter().step_by(64).all(|&byte| byte == expected) && block[block.len() - 1] == expected
}

fn in_use_by_cpu(into: &mut Vec<u64>) {
    into.clear();
    for target in 0..cpu::count() {
        let in_use = toro::thread::spawn_on(target, || memory::usage_here().in_use).join();
        into.push(in_use);
    }
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut baseline = Vec::with_capacity(cpus);
    let mut after = Vec::with_capacity(cpus);
    // Warm up with a short pass of the same work: the kernel keeps thread
    // control blocks for reuse and its queues keep their capacity, so the
    // baseline is taken once those have reached their working size.
    let warm: Vec<_> = (0..8 * cpus).map(|n| toro::thread::spawn_on(n % cpus, move || churn(n as u64, 1000))).collect();
    warm.into_iter().for_each(|job| {
        job.join();
    });
    in_use_by_cpu(&mut baseline);
    in_use_by_cpu(&mut baseline);
    let start = toro::time::Instant::now();
    let jobs: Vec<_> =
        (0..cpus).map(|target| toro::thread::spawn_on(target, move || churn(target as u64 + 1, ROUNDS))).collect();
    let corrupted: u64 = jobs.into_iter().map(|job| job.join()).sum();
    let elapsed = start.elapsed();
    // Remote frees are handed back asynchronously (a CPU flushes its
    // batches when it idles): give them a moment to arrive.
    for _ in 0..50 {
        in_use_by_cpu(&mut after);
        if after == baseline {
            break;
        }
        toro::thread::yield_now();
    }
    println!("{cpus} cpus x {ROUNDS} alloc+free pairs in {} ms, {corrupted} corrupted blocks", elapsed.as_millis());
    for target in 0..cpus {
        println!("cpu {target}: in use {} bytes before, {} after", baseline[target], after[target]);
    }
    if corrupted == 0 && baseline == after {
        println!("no corruption, no leak");
        0
    } else {
        1
    }
}
