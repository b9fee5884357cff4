//! Threads: spawn on every CPU and join, thousands of threads, yield,
//! sleep ordering, migration, thread-local values.

#![no_std]
#![no_main]

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;

use toro::alloc::vec::Vec;
use toro::thread::{self, Builder};
use toro::time::Instant;
use toro::{cpu, println};

toro::thread_local!(static COUNTER: Cell<u32> = Cell::new(0));

/// Results dropped in the thread that made them, and anywhere else.
static DROPPED_IN_THREAD: AtomicU32 = AtomicU32::new(0);
static DROPPED_ELSEWHERE: AtomicU32 = AtomicU32::new(0);
/// Set before the parked thread is unparked.
static UNPARKED: AtomicBool = AtomicBool::new(false);

/// A result whose `Drop` is application code that needs a thread: it
/// sleeps, and it checks which thread runs it.
struct Noisy {
    maker: thread::ThreadId,
}

impl Drop for Noisy {
    fn drop(&mut self) {
        thread::sleep(Duration::from_millis(1));
        let counter = if thread::current().id() == self.maker { &DROPPED_IN_THREAD } else { &DROPPED_ELSEWHERE };
        // Threads on several CPUs drop at once: a load-then-store lost a
        // count now and then (threads-8 failed with "19 by their threads").
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut ok = true;

    // One thread per CPU, each reporting where it ran.
    let handles: Vec<_> = (0..cpus)
        .map(|target| Builder::new().name("probe").spawn_on(target, move || (target, thread::current().cpu())).unwrap())
        .collect();
    for handle in handles {
        let (asked, ran) = handle.join();
        ok &= check(asked == ran, "a thread ran on the CPU it was spawned on");
    }
    println!("spawn_on: {cpus} cpus ok");

    // Thousands of threads spread by `spawn`, in waves.
    let start = Instant::now();
    let mut total = 0u64;
    let mut per_cpu = [0u32; 8];
    for wave in 0..10u64 {
        let handles: Vec<_> =
            (0..200u64).map(|i| thread::spawn(move || (wave * 200 + i, thread::current().cpu()))).collect();
        for handle in handles {
            let (value, ran) = handle.join();
            total += value;
            if ran < per_cpu.len() {
                per_cpu[ran] += 1;
            }
        }
    }
    ok &= check(total == (0..2000u64).sum::<u64>(), "2000 threads returned their values");
    let used = per_cpu.iter().filter(|&&n| n > 0).count();
    ok &= check(used == cpus.min(8), "spawn used every CPU");
    println!(
        "2000 threads spawned and joined in {} ms, per cpu {:?}",
        start.elapsed().as_millis(),
        &per_cpu[..cpus.min(8)]
    );

    // Yield: two threads on one CPU alternate.
    let a = thread::spawn_on(0, || {
        for _ in 0..1000 {
            thread::yield_now();
        }
        1
    });
    let b = thread::spawn_on(0, || {
        for _ in 0..1000 {
            thread::yield_now();
        }
        2
    });
    ok &= check(a.join() + b.join() == 3, "yielding threads finished");
    println!("yield ok");

    // Sleep ordering: later deadlines wake later, never early.
    let start = Instant::now();
    let sleepers: Vec<_> = [30u64, 10, 20, 5]
        .iter()
        .map(|&ms| {
            thread::spawn_on(cpus - 1, move || {
                thread::sleep(Duration::from_millis(ms));
                (ms, Instant::now())
            })
        })
        .collect();
    let mut woke: Vec<(u64, Instant)> = sleepers.into_iter().map(|h| h.join()).collect();
    for &(ms, at) in &woke {
        ok &= check(at.duration_since(start) >= Duration::from_millis(ms), "no sleep ends early");
    }
    woke.sort_by_key(|&(_, at)| at);
    let order: Vec<u64> = woke.iter().map(|&(ms, _)| ms).collect();
    ok &= check(order == [5, 10, 20, 30], "sleepers wake in deadline order");
    println!("sleep order {order:?}");

    // Migration: one thread visits every CPU.
    let visited = thread::spawn(move || {
        let mut seen = Vec::new();
        for target in (0..cpus).rev() {
            thread::migrate_to(target).unwrap();
            seen.push(thread::current().cpu());
        }
        seen
    })
    .join();
    ok &= check(visited == (0..cpus).rev().collect::<Vec<_>>(), "migrate_to moved the thread");
    println!("migration {visited:?}");

    // Thread-local values are per thread.
    let counts: Vec<u32> = (0..4)
        .map(|n| {
            thread::spawn(move || {
                for _ in 0..=n {
                    COUNTER.with(|c| c.set(c.get() + 1));
                }
                COUNTER.with(|c| c.get())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join())
        .collect();
    ok &= check(counts == [1, 2, 3, 4], "thread-locals are separate");
    COUNTER.with(|c| ok &= check(c.get() == 0, "main's thread-local untouched"));
    println!("thread-locals {counts:?}");

    // Detached threads' results are dropped in thread context (the thread's
    // own), never in the scheduler: their `Drop` may sleep.
    const DETACHED: u32 = 20;
    for i in 0..DETACHED {
        drop(thread::spawn_on(i as usize % cpus, || Noisy { maker: thread::current().id() }));
    }
    let start = Instant::now();
    while DROPPED_IN_THREAD.load(Ordering::Relaxed) + DROPPED_ELSEWHERE.load(Ordering::Relaxed) < DETACHED
        && start.elapsed() < Duration::from_secs(5)
    {
        thread::sleep(Duration::from_millis(1));
    }
    let (here, elsewhere) = (DROPPED_IN_THREAD.load(Ordering::Relaxed), DROPPED_ELSEWHERE.load(Ordering::Relaxed));
    ok &= check(here == DETACHED && elsewhere == 0, "detached results dropped by their own threads");
    println!("detached results dropped: {here} by their threads, {elsewhere} elsewhere");

    // std's park/unpark, across CPUs: the token is kept if unpark comes
    // first; park_timeout ends on time; sleep_until; the handle's Thread.
    let parked = Builder::new()
        .name("parker")
        .spawn_on(cpus - 1, || {
            let mut rounds = 0;
            while !UNPARKED.load(Ordering::Acquire) {
                thread::park();
                rounds += 1;
            }
            rounds
        })
        .unwrap();
    ok &= check(parked.thread().name() == Some("parker"), "JoinHandle::thread names the thread");
    thread::sleep(Duration::from_millis(5));
    UNPARKED.store(true, Ordering::Release);
    parked.thread().unpark();
    ok &= check(parked.join() >= 1, "an unparked thread returns from park");
    thread::current().unpark();
    let start = Instant::now();
    thread::park(); // the token from the unpark above: returns at once
    thread::park_timeout(Duration::from_millis(10));
    ok &= check(start.elapsed() >= Duration::from_millis(10), "park_timeout waits for its timeout");
    let deadline = Instant::now().checked_add(Duration::from_millis(3)).unwrap();
    thread::sleep_until(deadline);
    ok &= check(Instant::now() >= deadline, "sleep_until sleeps until its deadline");
    ok &=
        check(thread::available_parallelism().is_ok_and(|n| n.get() == cpus), "available_parallelism is the CPU count");
    println!("park/unpark, park_timeout, sleep_until, available_parallelism ok");

    if ok {
        println!("threads: all checks passed");
        0
    } else {
        1
    }
}
