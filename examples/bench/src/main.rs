//! The benchmark's Toro side: the allocation workloads (issue 4) and the
//! thread and message workloads (issue 5), each printed as one
//! `BENCH <name> <value> <unit>` line for `cargo xtask bench`, which runs
//! the same workloads in the Linux guest (`bench/linux`) and compares.
//!
//! `bench.quick=1` on the command line shortens every workload (the test
//! suite's mode: it checks that they work, not how fast). Needs 2 CPUs.
//!
//! Placement is explicit everywhere: `main` runs on CPU 0, and every other
//! thread is spawned on the CPU the workload names. Scheduling is
//! cooperative, so a thread spawned on CPU 0 starts only when `main`
//! blocks (in `join` or `recv`).

#![no_std]
#![no_main]

extern crate alloc;

mod common;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

// `self`: the shared code names the ring through `crate::spsc`.
use toro::spsc::{self, Ring};
use toro::sync::channel;
use toro::thread;
use toro::time::{ticks_to_duration, Instant};
use toro::{cpu, println, system};

use common::{Block, Line, Plan, Tenths, Value, RING_SLOTS};

/// The CPU `main` runs on and the one the workloads reach across to.
const HOME: usize = 0;
const OTHER: usize = 1;
/// Spawns (or round trips, or sends) between two looks at the clock.
const SPAWN_BATCH: u64 = 16;
const ROUND_TRIP_BATCH: u64 = 16;
const SEND_BATCH: u64 = 1024;
const YIELD_BATCH: u64 = 64;
/// The value that ends a channel workload.
const END: u64 = u64::MAX;
/// What each sleep asks for.
const SLEEP: Duration = Duration::from_millis(1);

/// The clock the shared code reads: nanoseconds of the TSC since boot.
fn now_ns() -> u64 {
    ticks_to_duration(Instant::now().ticks()).map_or(0, |duration| duration.as_nanos() as u64)
}

fn report(name: &str, value: Value) {
    println!("{}", Line { name, variant: None, value });
}

#[toro::main]
fn main() -> i32 {
    if cpu::count() < 2 {
        println!("bench: needs 2 CPUs, has {}", cpu::count());
        return 2;
    }
    if toro::time::tsc_hz().is_none() {
        println!("bench: the TSC frequency is unknown: nothing can be timed");
        return 3;
    }
    let quick = system::argument("bench.quick").is_some_and(|value| value != "0");
    let plan = if quick { Plan::QUICK } else { Plan::FULL };
    println!("bench: toro, {} cpus, {} ms per workload", cpu::count(), plan.target_ns / 1_000_000);

    // `bench.only=a,b`: only those workloads (`cargo xtask bench --only`).
    let only = common::Selection::new(system::argument("bench.only"));

    // Allocation (issue 4).
    if only.wants("alloc-1cpu") {
        let (pairs, nanoseconds) = common::alloc_free_pairs(now_ns, plan.target_ns, seed(HOME));
        report("alloc-1cpu", Value::PerSecond(common::per_second(pairs, nanoseconds)));
    }
    if only.wants("alloc-2cpu") {
        report("alloc-2cpu", Value::PerSecond(alloc_on_both(plan)));
    }
    if only.wants("alloc-remote") {
        report("alloc-remote", Value::PerSecond(remote_free(plan)));
    }
    if only.wants("alloc-borrowed") {
        match borrowed_allocation(plan) {
            Ok(time) => report("alloc-borrowed", Value::Nanoseconds(time)),
            Err(why) => {
                println!("bench: alloc-borrowed: {why}");
                return 4;
            }
        }
    }

    // Threads and messages (issue 5).
    if only.wants("yield") {
        report("yield", Value::Nanoseconds(yield_switch(plan)));
    }
    // The same yield workload in a boot with `toro.watchdog=off` (xtask
    // boots one for it): what the watchdog costs on the yield path.
    if only.wants("yield-watchdog-off") && system::argument("toro.watchdog") == Some("off") {
        report("yield-watchdog-off", Value::Nanoseconds(yield_switch(plan)));
    }
    if only.wants("spawn-join-same") {
        report("spawn-join-same", Value::Nanoseconds(spawn_join(HOME, plan)));
    }
    if only.wants("spawn-join-other") {
        report("spawn-join-other", Value::Nanoseconds(spawn_join(OTHER, plan)));
    }
    if only.wants("message-latency") {
        report("message-latency", Value::Nanoseconds(message_latency(plan)));
    }
    if only.wants("service-call-other") {
        report("service-call-other", Value::Nanoseconds(service_call(OTHER, plan)));
    }
    if only.wants("service-call-same") {
        report("service-call-same", Value::Nanoseconds(service_call(HOME, plan)));
    }
    if only.wants("interrupt-to-thread") {
        report("interrupt-to-thread", Value::Nanoseconds(interrupt_to_thread(plan)));
    }
    if only.wants("channel-throughput") {
        report("channel-throughput", Value::PerSecond(channel_throughput(plan)));
    }
    if only.wants("channel-4-producers") {
        report("channel-4-producers", Value::PerSecond(channel_producers(plan)));
    }
    if only.wants_any(&["sleep-late-p50", "sleep-late-p99"]) {
        let (median, p99) = sleep_lateness(plan);
        report("sleep-late-p50", Value::Microseconds(median));
        report("sleep-late-p99", Value::Microseconds(p99));
    }
    println!("bench: done");
    0
}

fn seed(cpu: usize) -> u64 {
    0x5eed_0000 + cpu as u64
}

/// Alloc+free pairs per second per CPU, both CPUs busy at once (each its
/// own thread and its own size sequence): the mean of the two rates.
fn alloc_on_both(plan: Plan) -> u64 {
    let target = plan.target_ns;
    let workers: Vec<_> = [HOME, OTHER]
        .into_iter()
        .map(|cpu| thread::spawn_on(cpu, move || common::alloc_free_pairs(now_ns, target, seed(cpu))))
        .collect();
    let rates: Vec<u64> = workers
        .into_iter()
        .map(|worker| {
            let (pairs, nanoseconds) = worker.join();
            common::per_second(pairs, nanoseconds)
        })
        .collect();
    rates.iter().sum::<u64>() / rates.len() as u64
}

/// Blocks per second allocated by a producer on CPU 1 and freed by `main`
/// on CPU 0 (each free a remote free back to CPU 1's heap).
fn remote_free(plan: Plan) -> u64 {
    let ring: &'static mut Ring<Option<Block>, RING_SLOTS> = Box::leak(Box::new(Ring::new()));
    let (mut producer, mut consumer) = ring.split();
    let target = plan.target_ns;
    let sending = thread::spawn_on(OTHER, move || common::produce_blocks(&mut producer, now_ns, target));
    let (blocks, nanoseconds) = common::consume_blocks(&mut consumer, now_ns);
    sending.join();
    common::per_second(blocks, nanoseconds)
}

/// Nanoseconds per cycle of a large block borrowed from CPU 1's share:
/// allocated on CPU 0 (whose share is first filled to below the block's
/// size, so it cannot serve it), written once per page, freed (back to
/// CPU 1). Checks that it did borrow.
fn borrowed_allocation(plan: Plan) -> Result<Tenths, &'static str> {
    // Ballast in 1 MiB blocks until CPU 0 has less free than the block.
    const BALLAST_BLOCK: usize = 1 << 20;
    let mut ballast = Vec::new();
    while toro::memory::usage_here().free >= common::LARGE_BLOCK as u64 {
        ballast.push(Block::new(BALLAST_BLOCK));
    }
    let before = toro::memory::usage_here().borrowed;
    let (cycles, nanoseconds) = common::large_block_cycles(now_ns, plan.target_ns);
    let borrowed = toro::memory::usage_here().borrowed - before;
    drop(ballast);
    if borrowed != (cycles + common::LARGE_WARM_UP_CYCLES) * common::LARGE_BLOCK as u64 {
        return Err("the large blocks were not all borrowed from another CPU");
    }
    Ok(Tenths::ratio(nanoseconds, cycles))
}

/// Nanoseconds per switch between two threads on CPU 0 that only yield.
fn yield_switch(plan: Plan) -> Tenths {
    let arrived = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let target = plan.target_ns;
    // Each thread waits (yielding) until both run, so neither yields alone.
    let arrive = |arrived: &AtomicUsize| {
        arrived.fetch_add(1, Ordering::Relaxed);
        while arrived.load(Ordering::Relaxed) < 2 {
            thread::yield_now();
        }
    };
    let timer = {
        let (arrived, stop) = (arrived.clone(), stop.clone());
        thread::spawn_on(HOME, move || {
            arrive(&arrived);
            let start = now_ns();
            let mut yields = 0u64;
            loop {
                for _ in 0..YIELD_BATCH {
                    thread::yield_now();
                }
                yields += YIELD_BATCH;
                let elapsed = now_ns().saturating_sub(start);
                if elapsed >= target {
                    stop.store(true, Ordering::Relaxed);
                    return (yields, elapsed);
                }
            }
        })
    };
    let partner = thread::spawn_on(HOME, move || {
        arrive(&arrived);
        let mut yields = 0u64;
        while !stop.load(Ordering::Relaxed) {
            thread::yield_now();
            yields += 1;
        }
        yields
    });
    let (timer_yields, elapsed) = timer.join();
    let partner_yields = partner.join();
    Tenths::ratio(elapsed, timer_yields + partner_yields)
}

/// Nanoseconds per `spawn_on(cpu, ..)` + `join` from `main` on CPU 0.
fn spawn_join(cpu: usize, plan: Plan) -> Tenths {
    let start = now_ns();
    let mut threads = 0u64;
    loop {
        for _ in 0..SPAWN_BATCH {
            black_box(thread::spawn_on(cpu, || black_box(1u64)).join());
        }
        threads += SPAWN_BATCH;
        let elapsed = now_ns().saturating_sub(start);
        if elapsed >= plan.target_ns {
            return Tenths::ratio(elapsed, threads);
        }
    }
}

/// One-way latency of a `u64` message between CPU 0 and CPU 1: ping-pong
/// over two channels, round trip / 2.
fn message_latency(plan: Plan) -> Tenths {
    let (to_partner, partner_inbox) = channel::<u64>();
    let (partner_outbox, from_partner) = channel::<u64>();
    let partner = thread::spawn_on(OTHER, move || {
        while let Ok(value) = partner_inbox.recv() {
            if value == END {
                break;
            }
            if partner_outbox.send(value).is_err() {
                break;
            }
        }
    });
    let round_trip = |value: u64| {
        to_partner.send(value).expect("partner alive");
        from_partner.recv().expect("partner alive")
    };
    round_trip(0); // the partner is running from here on
    let start = now_ns();
    let mut trips = 0u64;
    let elapsed = loop {
        for value in 0..ROUND_TRIP_BATCH {
            black_box(round_trip(value));
        }
        trips += ROUND_TRIP_BATCH;
        let elapsed = now_ns().saturating_sub(start);
        if elapsed >= plan.target_ns {
            break elapsed;
        }
    };
    to_partner.send(END).expect("partner alive");
    partner.join();
    Tenths::ratio(elapsed, 2 * trips)
}

/// Nanoseconds per `call` from `main` on CPU 0 to a service (a counter)
/// owned by CPU `owner`: from another CPU a request, run on the owner's
/// service thread, reply; on the owner CPU itself a direct call on
/// `main`'s thread (no message, no switch).
fn service_call(owner: usize, plan: Plan) -> Tenths {
    let counter = toro::service::Builder::new("bench-counter").cpu(owner).start(|| 0u64).expect("service starts");
    counter.call(|n| *n += 1); // the service thread is running from here on
    let start = now_ns();
    let mut calls = 0u64;
    let elapsed = loop {
        for _ in 0..ROUND_TRIP_BATCH {
            black_box(counter.call(|n| {
                *n += 1;
                *n
            }));
        }
        calls += ROUND_TRIP_BATCH;
        let elapsed = now_ns().saturating_sub(start);
        if elapsed >= plan.target_ns {
            break elapsed;
        }
    };
    let _ = counter.stop();
    Tenths::ratio(elapsed, calls)
}

/// Median nanoseconds from an IPI that `main` (CPU 0) sends to a vector
/// bound to a service on CPU 1 (idle, halted) to the service's interrupt
/// hook running on its thread there: the interrupt, the handler marking
/// the source, the wake-up, the switch. `plan.sleeps` samples, a 20 us
/// pause before each so the owner is halted again.
fn interrupt_to_thread(plan: Plan) -> Tenths {
    static HOOK_RAN_NS: AtomicU64 = AtomicU64::new(0);
    let service = toro::service::Builder::new("bench-interrupt")
        .cpu(OTHER)
        .on_interrupt(|_: &mut (), _| HOOK_RAN_NS.store(now_ns(), Ordering::Release))
        .start(|| ())
        .expect("service starts");
    let bound = service.bind_interrupt(toro::service::InterruptSource::Vector).expect("a vector on CPU 1");
    let mut samples: Vec<u64> = (0..plan.sleeps)
        .map(|_| {
            pause_ns(20_000);
            let before = HOOK_RAN_NS.load(Ordering::Acquire);
            let sent = now_ns();
            toro::interrupts::send_ipi(OTHER, bound.vector).expect("CPU 1 runs");
            loop {
                let ran = HOOK_RAN_NS.load(Ordering::Acquire);
                if ran != before {
                    break ran.saturating_sub(sent);
                }
                core::hint::spin_loop();
            }
        })
        .collect();
    let _ = service.stop();
    samples.sort_unstable();
    Tenths::ratio(samples[samples.len() / 2], 1)
}

/// Spins for `nanoseconds`.
fn pause_ns(nanoseconds: u64) {
    let start = now_ns();
    while now_ns().saturating_sub(start) < nanoseconds {
        core::hint::spin_loop();
    }
}

/// `u64` messages per second from a sender on CPU 1 to `main` on CPU 0,
/// from the first message received to the last.
fn channel_throughput(plan: Plan) -> u64 {
    let (sender, receiver) = channel::<u64>();
    let target = plan.target_ns;
    let progress = Arc::new(common::Progress::new());
    let producer = thread::spawn_on(OTHER, {
        let progress = progress.clone();
        move || {
            let start = now_ns();
            let mut value = 0u64;
            loop {
                for _ in 0..SEND_BATCH {
                    sender.send(value).expect("receiver alive");
                    value += 1;
                }
                if now_ns().saturating_sub(start) >= target {
                    break;
                }
                while !progress.room(value) {
                    thread::yield_now();
                }
            }
            sender.send(END).expect("receiver alive");
        }
    });
    let mut start = None;
    let mut received = 0u64;
    while let Ok(value) = receiver.recv() {
        start.get_or_insert_with(now_ns);
        if value == END {
            break;
        }
        received += 1;
        if received % SEND_BATCH == 0 {
            progress.received(received);
        }
    }
    let elapsed = start.map_or(0, |start| now_ns().saturating_sub(start));
    producer.join();
    common::per_second(received, elapsed)
}

/// `u64` messages per second from `PRODUCERS` clones of one sender, spread
/// over the CPUs, to `main` on CPU 0, from the first message received to the
/// last sender's end. The senders yield after each batch (scheduling is
/// cooperative: on CPU 0 the receiver runs only then).
fn channel_producers(plan: Plan) -> u64 {
    let (sender, receiver) = channel::<u64>();
    let count = common::values_per_producer(plan);
    let progress = Arc::new(common::Progress::new());
    let producers: Vec<_> = (0..common::PRODUCERS)
        .map(|k| {
            let (sender, progress) = (sender.clone(), progress.clone());
            thread::spawn_on(common::producer_cpu(k, cpu::count()), move || {
                let mut value = 0u64;
                while value < count {
                    for _ in 0..SEND_BATCH.min(count - value) {
                        sender.send(value).expect("receiver alive");
                        value += 1;
                    }
                    thread::yield_now();
                    while !progress.room(value * common::PRODUCERS as u64) {
                        thread::yield_now();
                    }
                }
                sender.send(END).expect("receiver alive");
            })
        })
        .collect();
    drop(sender);
    let (mut start, mut received, mut ended) = (None, 0u64, 0);
    while let Ok(value) = receiver.recv() {
        start.get_or_insert_with(now_ns);
        if value == END {
            ended += 1;
            if ended == common::PRODUCERS {
                break;
            }
        } else {
            received += 1;
            if received % SEND_BATCH == 0 {
                progress.received(received);
            }
        }
    }
    let elapsed = start.map_or(0, |start| now_ns().saturating_sub(start));
    producers.into_iter().for_each(|producer| producer.join());
    common::per_second(received, elapsed)
}

/// How late `sleep(1 ms)` wakes on CPU 0: median and 99th percentile, in
/// microseconds.
fn sleep_lateness(plan: Plan) -> (Tenths, Tenths) {
    let asked = SLEEP.as_nanos() as u64;
    let mut late: Vec<u64> = (0..plan.sleeps)
        .map(|_| {
            let start = now_ns();
            thread::sleep(SLEEP);
            (now_ns().saturating_sub(start)).saturating_sub(asked)
        })
        .collect();
    late.sort_unstable();
    let microseconds = |nanoseconds: u64| Tenths::ratio(nanoseconds, 1000);
    (microseconds(common::percentile(&late, 50)), microseconds(common::percentile(&late, 99)))
}
