//! `thread::scope`: scoped threads borrow the caller's stack (shared and
//! mutable borrows), run on every CPU (`spawn` and `spawn_on`), spawn
//! further scoped threads from other CPUs, and are all finished when
//! `scope` returns, joined or not; results nobody joined are dropped before
//! it returns.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use toro::alloc::vec::Vec;
use toro::sync::Mutex;
use toro::thread::{self, Builder};
use toro::time::Instant;
use toro::{cpu, println};

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

/// A result that counts its drop in a counter borrowed from `main`'s stack.
struct Borrowing<'a> {
    dropped: &'a Mutex<u32>,
}

impl Drop for Borrowing<'_> {
    fn drop(&mut self) {
        *self.dropped.lock() += 1;
    }
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut ok = true;

    // Shared borrows: sum chunks of a local vector on every CPU.
    let numbers: Vec<u64> = (1..=10_000).collect();
    let chunks = cpus * 3;
    let chunk = numbers.len().div_ceil(chunks);
    let mut ran_on = Vec::new();
    let total: u64 = thread::scope(|s| {
        let handles: Vec<_> = numbers
            .chunks(chunk)
            .map(|part| s.spawn(move || (part.iter().sum::<u64>(), thread::current().cpu())))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                let (sum, cpu) = handle.join();
                ran_on.push(cpu);
                sum
            })
            .sum()
    });
    ok &= check(total == 10_000 * 10_001 / 2, "the scoped sums add up");
    ran_on.sort_unstable();
    ran_on.dedup();
    ok &= check(ran_on.len() == cpus, "scope.spawn used every CPU");

    // Mutable borrows, one slot per thread, `spawn_on` each CPU; handles
    // dropped without joining: `scope` must still wait for them all.
    let mut slots = [(usize::MAX, 0u64); 16];
    let start = Instant::now();
    thread::scope(|s| {
        for (index, slot) in slots.iter_mut().enumerate() {
            let cpu = index % cpus;
            s.spawn_on(cpu, move || {
                thread::sleep(Duration::from_millis(20));
                *slot = (thread::current().cpu(), index as u64 * 7);
            });
        }
    });
    ok &= check(start.elapsed() >= Duration::from_millis(20), "scope waited for unjoined threads");
    for (index, &(cpu, value)) in slots.iter().enumerate() {
        ok &= check(cpu == index % cpus, "spawn_on ran the scoped thread on its CPU");
        ok &= check(value == index as u64 * 7, "every unjoined scoped thread finished before scope returned");
    }

    // Nested: scoped threads on other CPUs spawn scoped threads themselves;
    // a builder with a name and a stack size; results borrowing `main`'s
    // stack, not joined, dropped before `scope` returns.
    let dropped = Mutex::new(0u32);
    let spawned = Mutex::new(0u32);
    let inner_done = AtomicBool::new(false);
    let name_seen = thread::scope(|s| {
        for cpu in 0..cpus {
            let (spawned, dropped, inner_done) = (&spawned, &dropped, &inner_done);
            s.spawn_on(cpu, move || {
                for _ in 0..3 {
                    *spawned.lock() += 1;
                    // Dropped handle: the result is dropped at the scope's end.
                    let _ = s.spawn(move || Borrowing { dropped });
                }
                if cpu == cpus - 1 {
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(30));
                        inner_done.store(true, Ordering::Release);
                    });
                }
            });
        }
        let named = Builder::new().name("scoped-worker").stack_size(200 << 10);
        let handle = named.spawn_scoped_on(s, cpus - 1, || {
            let big = [7u8; 150 << 10];
            (thread::current().name().map(|n| n == "scoped-worker"), core::hint::black_box(&big)[1000])
        });
        handle.expect("spawn a named scoped thread with a big stack").join()
    });
    ok &= check(name_seen == (Some(true), 7), "a named scoped thread with a 200 KiB stack");
    ok &= check(inner_done.load(Ordering::Acquire), "a nested scoped thread finished before scope returned");
    let expected = *spawned.lock();
    ok &= check(expected == 3 * cpus as u32, "every CPU spawned nested scoped threads");
    ok &= check(*dropped.lock() == expected, "unjoined results were dropped before scope returned");

    // An error, not a panic, for a CPU that does not run.
    let error = thread::scope(|s| Builder::new().spawn_scoped_on(s, cpus + 5, || 0).err());
    ok &= check(error == Some(thread::SpawnError::NoSuchCpu(cpus + 5)), "NoSuchCpu from spawn_scoped_on");

    if !ok {
        return 1;
    }
    println!("thread_scope: {cpus} cpus, all checks passed");
    0
}
