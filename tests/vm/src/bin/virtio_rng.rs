//! virtio-rng end to end: discovery lists the device, its service answers
//! thousands of concurrent calls from every CPU, its interrupts arrive on the
//! owner CPU only, calls on the owner CPU are direct. With `stuck` on the
//! command line the device never answers (QEMU's rng-egd backend on a socket
//! nobody serves): the request times out, the device is reset and left out,
//! and the system goes on.

#![no_std]
#![no_main]

use toro::alloc::vec::Vec;
use toro::virtio::{self, rng, VirtioError};
use toro::{cpu, interrupts, println, thread};

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

/// Threads per CPU calling at once, and calls each makes.
const THREADS_PER_CPU: usize = 4;
/// (`calls=N` on the command line: fewer, for slow VMMs; 50 still gives
/// 6400+ bytes, enough to see every byte value.)
const CALLS: usize = 250;
/// Bytes per call.
const BYTES: usize = 16;

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    for device in virtio::discovery::devices() {
        println!(
            "virtio device: {} at {:#x}, {:?}, owner cpu {}",
            virtio::device_type::name(device.device_type),
            device.address,
            device.interrupt,
            device.owner
        );
    }
    let Some(rng) = rng::device() else {
        println!("FAILED: no virtio-rng device started");
        return 1;
    };
    println!("virtio-rng: owner cpu {}, vector {:#x}", rng.cpu(), rng.vector());

    if toro::system::argument("stuck").is_some() {
        return stuck(rng);
    }

    let mut ok = true;
    // One call from the owner CPU itself: direct, no message.
    let owner = rng.cpu();
    let before = rng.handle().stats().expect("stats");
    let direct = thread::spawn_on(owner, move || {
        let mut bytes = [0u8; BYTES];
        rng.fill(&mut bytes).map(|()| bytes)
    })
    .join();
    let after = rng.handle().stats().expect("stats");
    ok &= check(direct.is_ok(), "a call on the owner CPU is answered");
    ok &= check(after.direct > before.direct, "a call on the owner CPU is direct");

    // Thousands of calls from every CPU at once.
    let calls_per_thread =
        toro::system::argument("calls").and_then(|v| v.parse::<usize>().ok()).unwrap_or(CALLS).max(50);
    let mut workers = Vec::new();
    for cpu in 0..cpus {
        for _ in 0..THREADS_PER_CPU {
            workers.push(thread::spawn_on(cpu, move || {
                let mut seen = [0u64; 256];
                for _ in 0..calls_per_thread {
                    let mut bytes = [0u8; BYTES];
                    if rng.fill(&mut bytes).is_err() {
                        return None;
                    }
                    for byte in bytes {
                        seen[usize::from(byte)] += 1;
                    }
                }
                Some(seen)
            }));
        }
    }
    let mut histogram = [0u64; 256];
    let mut answered = 0;
    for worker in workers {
        if let Some(seen) = worker.join() {
            answered += 1;
            for (total, count) in histogram.iter_mut().zip(seen) {
                *total += count;
            }
        }
    }
    let calls = cpus * THREADS_PER_CPU * calls_per_thread;
    ok &= check(answered == cpus * THREADS_PER_CPU, "every thread on every CPU got all its bytes");
    // 16 bytes x 1000+ calls: every byte value shows up (a stuck or zeroed
    // buffer would not).
    let distinct = histogram.iter().filter(|&&count| count > 0).count();
    ok &= check(distinct == 256, "the bytes look random (every value seen)");
    println!("virtio-rng: {calls} calls from {cpus} CPUs answered, {distinct} distinct byte values");

    // Interrupts: counted per CPU at the vector; only the owner takes them.
    let stats = rng.stats().expect("stats");
    let per_cpu: Vec<u64> = (0..cpus).map(|cpu| interrupts::count_on(cpu, rng.vector()).unwrap_or(0)).collect();
    let elsewhere: u64 = per_cpu.iter().enumerate().filter(|&(cpu, _)| cpu != owner).map(|(_, &count)| count).sum();
    ok &= check(per_cpu[owner] > 0, "the owner CPU took the device's interrupts");
    ok &= check(elsewhere == 0, "no other CPU took them");
    ok &= check(stats.completed as usize > calls, "every call completed on the device");
    println!(
        "virtio-rng interrupts: {} on cpu {owner}, {elsewhere} elsewhere ({} taken by the driver, {} completions)",
        per_cpu[owner], stats.interrupts, stats.completed
    );

    // The same through toro::random's fallback shape.
    let mut bytes = [0u8; 64];
    ok &= check(rng::fill_from_device(&mut bytes).is_ok(), "fill_from_device works");

    if ok {
        println!("virtio-rng: all checks passed");
        0
    } else {
        1
    }
}

/// The device never answers: the first call times out, later ones are refused, the system goes on.
fn stuck(rng: rng::Rng) -> i32 {
    let mut bytes = [0u8; BYTES];
    let first = rng.fill(&mut bytes);
    println!("virtio-rng stuck: first call: {first:?}");
    let second = rng.fill(&mut bytes);
    println!("virtio-rng stuck: second call: {second:?}");
    let other_cpu = thread::spawn_on(cpu::count() - 1, || 7).join();
    let left_out = rng.stats().map(|stats| stats.left_out).unwrap_or(false);
    if first == Err(VirtioError::Timeout) && second == Err(VirtioError::LeftOut) && left_out && other_cpu == 7 {
        println!("virtio-rng stuck: timed out, left out, system goes on");
        0
    } else {
        println!("FAILED: a stuck device was not timed out and left out");
        1
    }
}
