//! Channels, migration storms, mutex and condition variable across CPUs.

#![no_std]
#![no_main]

use toro::alloc::boxed::Box;
use toro::alloc::collections::VecDeque;
use toro::alloc::sync::Arc;
use toro::alloc::vec::Vec;
use toro::sync::{channel, Condvar, Mutex, TryLockError};
use toro::thread;
use toro::{cpu, println};

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

/// xorshift, for hop targets.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut ok = true;

    // Boxes across CPUs: values arrive in order, payloads not copied.
    let (mut sender, mut receiver) = channel::<Box<u64>>();
    let producer = thread::spawn_on(cpus - 1, move || {
        for value in 0..100_000u64 {
            sender.send(Box::new(value)).expect("receiver alive");
        }
    });
    let mut expected = 0u64;
    while let Ok(value) = receiver.recv() {
        ok &= check(*value == expected, "channel values arrive in order");
        expected += 1;
    }
    producer.join();
    ok &= check(expected == 100_000, "every value arrived, then disconnect");
    println!("channel: 100000 boxes from cpu {} to cpu 0", cpus - 1);

    // Migration storm: senders hop CPUs between messages.
    const SENDERS: usize = 8;
    const MESSAGES: u64 = 2_000;
    let mut collectors = Vec::new();
    let mut senders = Vec::new();
    for id in 0..SENDERS {
        let (mut tx, mut rx) = channel::<(usize, u64)>();
        collectors.push(thread::spawn_on(id % cpus, move || {
            let mut next_sequence = 0u64;
            let mut in_order = true;
            while let Ok((sender, sequence)) = rx.recv() {
                in_order &= sender == id && sequence == next_sequence;
                next_sequence += 1;
            }
            (next_sequence, in_order)
        }));
        senders.push(thread::spawn(move || {
            let mut state = id as u64 * 7919 + 1;
            let mut hops = 0u64;
            for sequence in 0..MESSAGES {
                if sequence % 10 == 0 {
                    let target = (next(&mut state) % cpus as u64) as usize;
                    thread::migrate_to(target).expect("cpu exists");
                    hops += (thread::current().cpu() == target) as u64;
                }
                tx.send((id, sequence)).expect("collector alive");
            }
            hops
        }));
    }
    let hops: u64 = senders.into_iter().map(|h| h.join()).sum();
    for collector in collectors {
        let (count, in_order) = collector.join();
        ok &= check(count == MESSAGES, "every message received exactly once");
        ok &= check(in_order, "messages in order per sender");
    }
    ok &= check(hops == SENDERS as u64 * MESSAGES / 10, "every hop landed on its CPU");
    println!("migration storm: {SENDERS} senders x {MESSAGES} messages, {hops} hops");

    // Mutex: increments from every CPU.
    let counter = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = (0..2 * cpus)
        .map(|n| {
            let counter = counter.clone();
            thread::spawn_on(n % cpus, move || {
                for _ in 0..500 {
                    *counter.lock() += 1;
                    if n % 2 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join());
    ok &= check(*counter.lock() == 2 * cpus as u64 * 500, "mutex increments all counted");
    println!("mutex: {} increments from {} threads", *counter.lock(), 2 * cpus);

    // A static mutex (const `new`), homed where it is first used.
    static TOTAL: Mutex<u64> = Mutex::new(0);
    let adders: Vec<_> = (0..cpus).map(|n| thread::spawn_on(n, move || *TOTAL.lock() += n as u64 + 1)).collect();
    adders.into_iter().for_each(|a| a.join());
    ok &= check(*TOTAL.lock() == (cpus * (cpus + 1) / 2) as u64, "static mutex sums every CPU's share");
    println!("static mutex: homed on cpu {}", TOTAL.home());

    // try_lock from every CPU: refused while held, granted once free.
    let held = Arc::new(Mutex::new_on(0, 0u32));
    let guard = held.lock();
    let refused = (0..cpus)
        .map(|n| {
            let held = held.clone();
            thread::spawn_on(n, move || matches!(held.try_lock(), Err(TryLockError::WouldBlock))).join()
        })
        .all(|refused| refused);
    drop(guard);
    let granted = (0..cpus)
        .map(|n| {
            let held = held.clone();
            thread::spawn_on(n, move || held.try_lock().map(|mut g| *g += 1).is_ok()).join()
        })
        .all(|granted| granted);
    ok &= check(refused && granted && *held.lock() == cpus as u32, "try_lock refused while held, granted when free");
    println!("try_lock: from {cpus} cpus");

    // Condvar: a queue fed from one CPU, drained on another.
    let queue = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
    let consumer = {
        let queue = queue.clone();
        thread::spawn_on(cpus - 1, move || {
            let (items, ready) = &*queue;
            let mut sum = 0u64;
            loop {
                let mut guard = ready.wait_while(items.lock(), |q: &mut VecDeque<u64>| q.is_empty());
                let item = guard.pop_front().expect("not empty");
                drop(guard);
                if item == u64::MAX {
                    return sum;
                }
                sum += item;
            }
        })
    };
    for item in 1..=1000u64 {
        let (items, ready) = &*queue;
        items.lock().push_back(item);
        ready.notify_one();
    }
    {
        let (items, ready) = &*queue;
        items.lock().push_back(u64::MAX);
        ready.notify_all();
    }
    ok &= check(consumer.join() == 500_500, "condvar consumer saw every item");
    println!("condvar: 1000 items handed over");

    if ok {
        println!("sync: all checks passed");
        0
    } else {
        1
    }
}
