//! No message outlives what it points to: a `Mutex`, a `Condvar` and both
//! ends of a channel are dropped while their messages to a busy home CPU
//! are still in flight; their memory is reused at once with a pattern,
//! which must still be intact after the home CPU has run every message.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use toro::alloc::boxed::Box;
use toro::alloc::sync::Arc;
use toro::alloc::vec::Vec;
use toro::sync::{channel, Condvar, Mutex};
use toro::thread;
use toro::time::Instant;
use toro::{cpu, println};

/// The CPU every object is homed on; kept busy while messages wait for it.
const HOME: usize = 1;
/// How long the home CPU runs without a scheduling point.
const BUSY: Duration = Duration::from_millis(20);
/// Blocks of the freed object's size allocated with the pattern (the freed
/// block is among them: per-CPU size-class free lists reuse at once).
const REUSES: usize = 16;
const PATTERN: u8 = 0xa5;
/// Rounds per object.
const ROUNDS: usize = 8;

/// Keeps `HOME` busy (no scheduling point, so no message runs there) for
/// `BUSY`; returns once it has started.
fn occupy_home() -> thread::JoinHandle<()> {
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let handle = thread::spawn_on(HOME, move || {
        flag.store(true, Ordering::Release);
        let start = Instant::now();
        while start.elapsed() < BUSY {
            core::hint::spin_loop();
        }
    });
    while !started.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    handle
}

/// Allocates `REUSES` blocks of `size` bytes filled with the pattern;
/// returns them and whether one sits at `freed`.
fn reuse(size: usize, freed: usize) -> (Vec<Box<[u8]>>, bool) {
    let blocks: Vec<Box<[u8]>> = (0..REUSES).map(|_| toro::alloc::vec![PATTERN; size].into_boxed_slice()).collect();
    let hit = blocks.iter().any(|block| block.as_ptr() as usize == freed);
    (blocks, hit)
}

fn intact(blocks: &[Box<[u8]>]) -> bool {
    blocks.iter().all(|block| block.iter().all(|&byte| byte == PATTERN))
}

/// Lets the home CPU run what is queued for it (a thread there returns
/// only after its CPU has passed a scheduling point).
fn settle() {
    thread::spawn_on(HOME, || ()).join();
    thread::sleep(Duration::from_millis(1));
}

#[toro::main]
fn main() -> i32 {
    if cpu::count() < 2 {
        println!("sync_lifetime: needs 2 CPUs");
        return 1;
    }
    let mut ok = true;
    let mut hits = 0;

    // Mutex: the unlock from this CPU travels to the busy home CPU.
    for _ in 0..ROUNDS {
        let mutex = Box::new(Mutex::new_on(HOME, [0u64; 4]));
        let mut guard = mutex.lock(); // granted while the home CPU is free
        let busy = occupy_home();
        guard[0] = 1;
        drop(guard); // the unlock waits for the busy home CPU
        let (size, address) = (core::mem::size_of_val(&*mutex), &*mutex as *const _ as usize);
        drop(mutex);
        let (blocks, hit) = reuse(size, address);
        hits += hit as usize;
        busy.join();
        settle();
        ok &= intact(&blocks);
    }
    println!("mutex: pattern intact {ok}");

    // Condvar: a notification travels to the busy home CPU.
    for _ in 0..ROUNDS {
        let pair = Arc::new((Mutex::new_on(HOME, false), Condvar::new()));
        let waiting = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (pair, waiting) = (pair.clone(), waiting.clone());
            thread::spawn_on(HOME, move || {
                let (flag, ready) = &*pair;
                let guard = flag.lock();
                // Set under the lock: whoever locks next does so after the
                // wait below has enqueued this thread.
                waiting.store(true, Ordering::Release);
                drop(ready.wait_while(guard, |set| !*set));
            })
        };
        while !waiting.load(Ordering::Acquire) {
            thread::yield_now();
        }
        {
            let (flag, ready) = &*pair;
            *flag.lock() = true;
            ready.notify_all();
        }
        waiter.join();
        let busy = occupy_home();
        let pair = Arc::into_inner(pair).expect("the waiter is gone");
        let condvar = Box::new(pair.1);
        condvar.notify_one();
        condvar.notify_all();
        let (size, address) = (core::mem::size_of_val(&*condvar), &*condvar as *const _ as usize);
        drop(condvar);
        let (blocks, hit) = reuse(size, address);
        hits += hit as usize;
        busy.join();
        settle();
        ok &= intact(&blocks);
    }
    println!("condvar: pattern intact {ok}");

    // Channel: made on the home CPU, both ends dropped here, their drop
    // reports in flight to the busy home.
    for _ in 0..ROUNDS {
        let (sender, receiver) = thread::spawn_on(HOME, channel::<Box<u64>>).join();
        sender.send(Box::new(7)).expect("receiver alive");
        let ends = Box::new((sender, receiver));
        let busy = occupy_home();
        let (size, address) = (core::mem::size_of_val(&*ends), &*ends as *const _ as usize);
        drop(ends);
        let (blocks, hit) = reuse(size, address);
        hits += hit as usize;
        busy.join();
        settle();
        ok &= intact(&blocks);
    }
    println!("channel: pattern intact {ok}");
    println!("freed blocks reused at once: {hits} of {}", 3 * ROUNDS);
    ok &= hits > 0;

    if ok {
        println!("sync_lifetime: all checks passed");
        0
    } else {
        println!("sync_lifetime: FAILED");
        1
    }
}
