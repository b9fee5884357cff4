//! The Linux side of `cargo xtask bench`: the workloads of Toro's
//! `examples/bench`, on Linux's own means, printed as the same
//! `BENCH <name>:<yardstick> <value> <unit>` lines.
//!
//! The allocation loops and the remote-free hand-off are Toro's own text
//! (`examples/bench/src/common.rs`, included below) running over this
//! program's global allocator (glibc malloc or mimalloc: one binary each).
//! The thread workloads use what a Linux program would: `std::thread`,
//! `sched_yield`, `std::sync::mpsc`, `crossbeam-channel`,
//! `std::thread::sleep`. Every thread is pinned with `sched_setaffinity` to
//! the CPU Toro's side uses: the measuring thread to CPU 0, its partner to
//! CPU 0 (same-CPU workloads) or CPU 1.
//!
//! `quick` as the first argument shortens every workload, as
//! `bench.quick=1` does for Toro.

extern crate alloc;

#[path = "../../../examples/bench/src/common.rs"]
#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

// The shared code names the ring through `crate::spsc`.
use toro_core::spsc::{self, Ring};

use common::{Block, Line, Plan, Tenths, Value, RING_SLOTS};

/// The CPU the measuring thread runs on and the one it reaches across to.
const HOME: usize = 0;
const OTHER: usize = 1;
const SPAWN_BATCH: u64 = 16;
const ROUND_TRIP_BATCH: u64 = 16;
const SEND_BATCH: u64 = 1024;
const YIELD_BATCH: u64 = 64;
const END: u64 = u64::MAX;
const SLEEP: Duration = Duration::from_millis(1);

/// `quick` as the first argument: the short plan.
pub fn plan_from_arguments() -> Plan {
    match std::env::args().nth(1).as_deref() {
        Some("quick") => Plan::QUICK,
        _ => Plan::FULL,
    }
}

/// The second argument: the workloads to run (a comma-separated list;
/// missing, empty or `all`: every one). `/init` passes `toro_bench_only=`
/// from the kernel command line (`cargo xtask bench --only`).
pub fn selection_from_arguments() -> common::Selection<'static> {
    let list: &'static str = std::env::args().nth(2).map_or("", |list| Box::leak(list.into_boxed_str()));
    common::Selection::new(Some(list))
}

/// CLOCK_MONOTONIC in nanoseconds (the TSC underneath, as for Toro).
fn now_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid timespec to write to.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    assert_eq!(status, 0, "clock_gettime failed");
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it;
    // sched_setaffinity reads `size` bytes of it. Pid 0 is the caller.
    let status = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if status != 0 {
        panic!("sched_setaffinity to cpu {cpu}: {}", std::io::Error::last_os_error());
    }
}

fn report(name: &str, variant: &str, value: Value) {
    println!("{}", Line { name, variant: Some(variant), value });
}

fn seed(cpu: usize) -> u64 {
    0x5eed_0000 + cpu as u64
}

/// The allocation workloads over this binary's global allocator, reported
/// under `allocator`'s name.
pub fn allocation(plan: Plan, only: common::Selection<'_>, allocator: &str) {
    pin_to(HOME);
    if only.wants("alloc-1cpu") {
        let (pairs, nanoseconds) = common::alloc_free_pairs(now_ns, plan.target_ns, seed(HOME));
        report("alloc-1cpu", allocator, Value::PerSecond(common::per_second(pairs, nanoseconds)));
    }

    let target = plan.target_ns;
    if only.wants("alloc-2cpu") {
        let workers: Vec<_> = [HOME, OTHER]
            .into_iter()
            .map(|cpu| {
                std::thread::spawn(move || {
                    pin_to(cpu);
                    common::alloc_free_pairs(now_ns, target, seed(cpu))
                })
            })
            .collect();
        let rates: Vec<u64> = workers
            .into_iter()
            .map(|worker| {
                let (pairs, nanoseconds) = worker.join().expect("worker");
                common::per_second(pairs, nanoseconds)
            })
            .collect();
        report("alloc-2cpu", allocator, Value::PerSecond(rates.iter().sum::<u64>() / rates.len() as u64));
    }

    if only.wants("alloc-remote") {
        let ring: &'static mut Ring<Option<Block>, RING_SLOTS> = Box::leak(Box::new(Ring::new()));
        let (mut producer, mut consumer) = ring.split();
        let sending = std::thread::spawn(move || {
            pin_to(OTHER);
            common::produce_blocks(&mut producer, now_ns, target)
        });
        let (blocks, nanoseconds) = common::consume_blocks(&mut consumer, now_ns);
        sending.join().expect("producer");
        report("alloc-remote", allocator, Value::PerSecond(common::per_second(blocks, nanoseconds)));
    }

    // The same large block as Toro's borrowed one: malloc, a write per
    // page, free (Linux has one heap for all CPUs, so nothing to borrow).
    if only.wants("alloc-borrowed") {
        let (cycles, nanoseconds) = common::large_block_cycles(now_ns, target);
        report("alloc-borrowed", allocator, Value::Nanoseconds(Tenths::ratio(nanoseconds, cycles)));
    }
}

/// The thread and message workloads.
pub fn threads(plan: Plan, only: common::Selection<'_>) {
    pin_to(HOME);
    let run = |name: &str, variant: &str, measure: &mut dyn FnMut() -> Value| {
        if only.wants(name) {
            report(name, variant, measure());
            // Untimed: give back what the workload's threads left in
            // glibc's arenas (each thread may get an arena of its own, and
            // freed memory stays there), so that one program running every
            // workload in a 128 MiB guest does not grow until the OOM
            // killer ends it (seen after channel-throughput).
            // SAFETY: no arguments beyond the pad; glibc's own call.
            unsafe { libc::malloc_trim(0) };
        }
    };
    run("yield", "sched_yield", &mut || Value::Nanoseconds(yield_switch(plan)));
    // Toro's watchdog-off boot is compared with the same sched_yield
    // workload, measured again.
    run("yield-watchdog-off", "sched_yield", &mut || Value::Nanoseconds(yield_switch(plan)));
    run("spawn-join-same", "std", &mut || Value::Nanoseconds(spawn_join(false, plan)));
    run("spawn-join-other", "std", &mut || Value::Nanoseconds(spawn_join(true, plan)));
    run("message-latency", "mpsc", &mut || Value::Nanoseconds(message_latency::<Mpsc>(plan, 2)));
    run("message-latency", "crossbeam", &mut || Value::Nanoseconds(message_latency::<Crossbeam>(plan, 2)));
    // A request to a thread that owns a resource on the other CPU and its
    // reply: Toro's service call from another CPU.
    run("service-call-other", "mpsc", &mut || Value::Nanoseconds(message_latency::<Mpsc>(plan, 1)));
    run("service-call-other", "crossbeam", &mut || Value::Nanoseconds(message_latency::<Crossbeam>(plan, 1)));
    run("service-call-other", "pipe", &mut || Value::Nanoseconds(message_latency::<Pipe>(plan, 1)));
    // The owner calling its own resource: Toro's direct call; on Linux a
    // resource shared by threads sits behind a mutex.
    run("service-call-same", "mutex", &mut || Value::Nanoseconds(mutex_call(plan)));
    run("interrupt-to-thread", "pipe", &mut || Value::Nanoseconds(wake_other_cpu(plan)));
    run("channel-throughput", "mpsc", &mut || Value::PerSecond(channel_throughput::<Mpsc>(plan)));
    run("channel-throughput", "crossbeam", &mut || Value::PerSecond(channel_throughput::<Crossbeam>(plan)));
    run("channel-4-producers", "mpsc", &mut || Value::PerSecond(channel_producers::<Mpsc>(plan)));
    run("channel-4-producers", "crossbeam", &mut || Value::PerSecond(channel_producers::<Crossbeam>(plan)));
    if only.wants_any(&["sleep-late-p50", "sleep-late-p99"]) {
        let (median, p99) = sleep_lateness(plan);
        report("sleep-late-p50", "std", Value::Microseconds(median));
        report("sleep-late-p99", "std", Value::Microseconds(p99));
    }
}

/// Nanoseconds per switch between two threads pinned to CPU 0 that only
/// call `sched_yield` (the measuring thread waits in `join` meanwhile).
fn yield_switch(plan: Plan) -> Tenths {
    let arrived = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let target = plan.target_ns;
    let arrive = |arrived: &AtomicUsize| {
        pin_to(HOME);
        arrived.fetch_add(1, Ordering::Relaxed);
        while arrived.load(Ordering::Relaxed) < 2 {
            // SAFETY: no arguments, no memory.
            unsafe { libc::sched_yield() };
        }
    };
    let timer = {
        let (arrived, stop) = (arrived.clone(), stop.clone());
        std::thread::spawn(move || {
            arrive(&arrived);
            let start = now_ns();
            let mut yields = 0u64;
            loop {
                for _ in 0..YIELD_BATCH {
                    // SAFETY: as above.
                    unsafe { libc::sched_yield() };
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
    let partner = std::thread::spawn(move || {
        arrive(&arrived);
        let mut yields = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: as above.
            unsafe { libc::sched_yield() };
            yields += 1;
        }
        yields
    });
    let (timer_yields, elapsed) = timer.join().expect("yielder");
    let partner_yields = partner.join().expect("yielder");
    Tenths::ratio(elapsed, timer_yields + partner_yields)
}

/// Nanoseconds per `std::thread::spawn` + `join` from a thread pinned to
/// CPU 0. The new thread inherits that pinning (same CPU); with `other` it
/// first pins itself to CPU 1, the one way std offers to start a thread
/// on a given CPU.
fn spawn_join(other: bool, plan: Plan) -> Tenths {
    let start = now_ns();
    let mut threads = 0u64;
    loop {
        for _ in 0..SPAWN_BATCH {
            let handle = if other {
                std::thread::spawn(|| {
                    pin_to(OTHER);
                    black_box(1u64)
                })
            } else {
                std::thread::spawn(|| black_box(1u64))
            };
            black_box(handle.join().expect("thread"));
        }
        threads += SPAWN_BATCH;
        let elapsed = now_ns().saturating_sub(start);
        if elapsed >= plan.target_ns {
            return Tenths::ratio(elapsed, threads);
        }
    }
}

/// An unbounded channel of `u64` (Toro's `channel()` is unbounded too).
trait Channel {
    type Sender: Clone + Send + 'static;
    type Receiver: Send + 'static;
    fn new() -> (Self::Sender, Self::Receiver);
    fn send(sender: &Self::Sender, value: u64);
    /// `None` once the sender is gone.
    fn recv(receiver: &Self::Receiver) -> Option<u64>;
}

struct Mpsc;

impl Channel for Mpsc {
    type Sender = std::sync::mpsc::Sender<u64>;
    type Receiver = std::sync::mpsc::Receiver<u64>;
    fn new() -> (Self::Sender, Self::Receiver) {
        std::sync::mpsc::channel()
    }
    fn send(sender: &Self::Sender, value: u64) {
        sender.send(value).expect("receiver alive");
    }
    fn recv(receiver: &Self::Receiver) -> Option<u64> {
        receiver.recv().ok()
    }
}

struct Crossbeam;

impl Channel for Crossbeam {
    type Sender = crossbeam_channel::Sender<u64>;
    type Receiver = crossbeam_channel::Receiver<u64>;
    fn new() -> (Self::Sender, Self::Receiver) {
        crossbeam_channel::unbounded()
    }
    fn send(sender: &Self::Sender, value: u64) {
        sender.send(value).expect("receiver alive");
    }
    fn recv(receiver: &Self::Receiver) -> Option<u64> {
        receiver.recv().ok()
    }
}

/// A pipe per direction: a request or reply is 8 bytes written and read
/// (`write`/`read` system calls, the reader blocking in the kernel).
struct Pipe;

impl Channel for Pipe {
    type Sender = Arc<std::fs::File>;
    type Receiver = std::fs::File;
    fn new() -> (Self::Sender, Self::Receiver) {
        use std::os::fd::FromRawFd;
        let mut ends = [0; 2];
        // SAFETY: `ends` has room for the two descriptors `pipe` writes.
        let status = unsafe { libc::pipe(ends.as_mut_ptr()) };
        assert_eq!(status, 0, "pipe: {}", std::io::Error::last_os_error());
        // SAFETY: two fresh descriptors, each owned by one `File` from here.
        unsafe { (Arc::new(std::fs::File::from_raw_fd(ends[1])), std::fs::File::from_raw_fd(ends[0])) }
    }
    fn send(sender: &Self::Sender, value: u64) {
        use std::io::Write;
        (&**sender).write_all(&value.to_ne_bytes()).expect("pipe reader alive");
    }
    fn recv(receiver: &Self::Receiver) -> Option<u64> {
        use std::io::Read;
        let mut bytes = [0; 8];
        (&*receiver).read_exact(&mut bytes).ok()?;
        Some(u64::from_ne_bytes(bytes))
    }
}

/// Median nanoseconds from a write to a pipe on CPU 0 to its reader,
/// blocked in `read` on CPU 1, running again: waking a blocked thread on
/// another CPU, the nearest a program gets to a device interrupt reaching
/// its thread (Toro's `interrupt-to-thread`). `plan.sleeps` samples, a
/// 20 us pause before each so the reader is blocked again.
fn wake_other_cpu(plan: Plan) -> Tenths {
    let woke = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (sender, receiver) = Pipe::new();
    let partner = {
        let woke = woke.clone();
        std::thread::spawn(move || {
            pin_to(OTHER);
            while let Some(value) = Pipe::recv(&receiver) {
                if value == END {
                    break;
                }
                woke.store(now_ns(), Ordering::Release);
            }
        })
    };
    let mut samples: Vec<u64> = (0..plan.sleeps)
        .map(|_| {
            let start = now_ns();
            while now_ns().saturating_sub(start) < 20_000 {
                std::hint::spin_loop();
            }
            let before = woke.load(Ordering::Acquire);
            let sent = now_ns();
            Pipe::send(&sender, 1);
            loop {
                let ran = woke.load(Ordering::Acquire);
                if ran != before {
                    break ran.saturating_sub(sent);
                }
                std::hint::spin_loop();
            }
        })
        .collect();
    Pipe::send(&sender, END);
    partner.join().expect("reader");
    samples.sort_unstable();
    Tenths::ratio(samples[samples.len() / 2], 1)
}

/// Nanoseconds per lock, increment, unlock of an uncontended
/// `std::sync::Mutex<u64>` on the measuring thread: a resource's owner
/// using it, Linux-style.
fn mutex_call(plan: Plan) -> Tenths {
    let counter = std::sync::Mutex::new(0u64);
    let start = now_ns();
    let mut calls = 0u64;
    let elapsed = loop {
        for _ in 0..ROUND_TRIP_BATCH {
            let mut guard = black_box(&counter).lock().expect("not poisoned");
            *guard += 1;
            black_box(*guard);
        }
        calls += ROUND_TRIP_BATCH;
        let elapsed = now_ns().saturating_sub(start);
        if elapsed >= plan.target_ns {
            break elapsed;
        }
    };
    Tenths::ratio(elapsed, calls)
}

/// One-way latency of a `u64` message between threads pinned to CPU 0 and
/// CPU 1: ping-pong over two channels, round trip / 2.
fn message_latency<C: Channel>(plan: Plan, legs: u64) -> Tenths {
    let (to_partner, partner_inbox) = C::new();
    let (partner_outbox, from_partner) = C::new();
    let partner = std::thread::spawn(move || {
        pin_to(OTHER);
        while let Some(value) = C::recv(&partner_inbox) {
            if value == END {
                break;
            }
            C::send(&partner_outbox, value);
        }
    });
    let round_trip = |value: u64| {
        C::send(&to_partner, value);
        C::recv(&from_partner).expect("partner alive")
    };
    round_trip(0); // the partner is running, on CPU 1, from here on
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
    C::send(&to_partner, END);
    partner.join().expect("partner");
    Tenths::ratio(elapsed, legs * trips)
}

/// `u64` messages per second from a sender pinned to CPU 1 to the
/// measuring thread on CPU 0, from the first message received to the last.
fn channel_throughput<C: Channel>(plan: Plan) -> u64 {
    let (sender, receiver) = C::new();
    let target = plan.target_ns;
    let progress = Arc::new(common::Progress::new());
    let producer = std::thread::spawn({
        let progress = progress.clone();
        move || {
            pin_to(OTHER);
            let start = now_ns();
            let mut value = 0u64;
            loop {
                for _ in 0..SEND_BATCH {
                    C::send(&sender, value);
                    value += 1;
                }
                if now_ns().saturating_sub(start) >= target {
                    break;
                }
                while !progress.room(value) {
                    std::thread::yield_now();
                }
            }
            C::send(&sender, END);
        }
    });
    let mut start = None;
    let mut received = 0u64;
    while let Some(value) = C::recv(&receiver) {
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
    producer.join().expect("producer");
    common::per_second(received, elapsed)
}

/// `u64` messages per second from `PRODUCERS` clones of one sender, each
/// pinned to its CPU (spread over all, CPU 0 last), to the measuring thread
/// on CPU 0, from the first message received to the last sender's end.
fn channel_producers<C: Channel>(plan: Plan) -> u64 {
    let (sender, receiver) = C::new();
    let count = common::values_per_producer(plan);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let progress = Arc::new(common::Progress::new());
    let producers: Vec<_> = (0..common::PRODUCERS)
        .map(|k| {
            let (sender, progress) = (sender.clone(), progress.clone());
            std::thread::spawn(move || {
                pin_to(common::producer_cpu(k, cpus));
                for value in 0..count {
                    if value % SEND_BATCH == 0 {
                        while !progress.room(value * common::PRODUCERS as u64) {
                            std::thread::yield_now();
                        }
                    }
                    C::send(&sender, value);
                }
                C::send(&sender, END);
            })
        })
        .collect();
    drop(sender);
    let (mut start, mut received, mut ended) = (None, 0u64, 0);
    while let Some(value) = C::recv(&receiver) {
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
    producers.into_iter().for_each(|producer| producer.join().expect("producer"));
    common::per_second(received, elapsed)
}

/// How late `std::thread::sleep(1 ms)` wakes on CPU 0 (default timer slack,
/// 50 µs, as any program has): median and 99th percentile in microseconds.
fn sleep_lateness(plan: Plan) -> (Tenths, Tenths) {
    let asked = SLEEP.as_nanos() as u64;
    let mut late: Vec<u64> = (0..plan.sleeps)
        .map(|_| {
            let start = now_ns();
            std::thread::sleep(SLEEP);
            now_ns().saturating_sub(start).saturating_sub(asked)
        })
        .collect();
    late.sort_unstable();
    let microseconds = |nanoseconds: u64| Tenths::ratio(nanoseconds, 1000);
    (microseconds(common::percentile(&late, 50)), microseconds(common::percentile(&late, 99)))
}
