//! Channels, migration storms, mutex and condition variable across CPUs.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;
use toro::alloc::boxed::Box;
use toro::alloc::collections::VecDeque;
use toro::alloc::sync::Arc;
use toro::alloc::vec::Vec;
use vm_tests::check;

use toro::sync::{
    channel, sync_channel, Barrier, Condvar, LazyLock, Mutex, OnceLock, RecvTimeoutError, RwLock, Select, TryLockError,
    TryRecvError, TrySendError,
};
use toro::thread;
use toro::time::Instant;
use toro::{cpu, println};

/// xorshift, for hop targets.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The parties of the barrier in the test (every CPU and main).
fn barrier_parties(_: &Barrier) -> usize {
    cpu::count() + 1
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut ok = true;

    // Boxes across CPUs: values arrive in order, payloads not copied.
    let (sender, receiver) = channel::<Box<u64>>();
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
        let (tx, rx) = channel::<(usize, u64)>();
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

    // Many producers: clones of one sender on every CPU (some hopping
    // CPUs), one receiver; every value once, in order per sender.
    const PRODUCERS: usize = 12;
    const EACH: u64 = 3_000;
    let (tx, rx) = channel::<(usize, u64)>();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let tx = tx.clone();
            thread::spawn_on(id % cpus, move || {
                let mut state = id as u64 + 17;
                for sequence in 0..EACH {
                    if id % 3 == 0 && sequence % 100 == 0 {
                        thread::migrate_to((next(&mut state) % cpus as u64) as usize).expect("cpu exists");
                    }
                    // Clones of clones: weight is split further.
                    if sequence % 1000 == 999 {
                        let extra = tx.clone();
                        extra.send((usize::MAX, 0)).expect("receiver alive");
                    }
                    tx.send((id, sequence)).expect("receiver alive");
                }
            })
        })
        .collect();
    drop(tx);
    let mut next_sequence = [0u64; PRODUCERS];
    let (mut in_order, mut extras) = (true, 0);
    for (id, sequence) in rx.iter() {
        if id == usize::MAX {
            extras += 1;
            continue;
        }
        in_order &= next_sequence[id] == sequence;
        next_sequence[id] += 1;
    }
    producers.into_iter().for_each(|p| p.join());
    ok &= check(in_order, "multi-producer: in order per sender");
    ok &= check(next_sequence.iter().all(|&n| n == EACH), "multi-producer: every value once");
    ok &= check(extras == PRODUCERS * (EACH as usize / 1000), "multi-producer: values of short-lived clones");
    ok &= check(rx.try_recv() == Err(TryRecvError::Disconnected), "multi-producer: disconnected at the end");
    println!("mpsc: {PRODUCERS} senders x {EACH} values on {cpus} cpus");

    // A chain of 100 clones each from the previous one (weight runs out
    // and is topped up by the home CPU), dropped on other CPUs.
    let (tx, rx) = channel::<u32>();
    let mut chain = Vec::new();
    let mut last = tx;
    for n in 0..100u32 {
        let clone = last.clone();
        chain.push(core::mem::replace(&mut last, clone));
        chain.last().expect("pushed").send(n).expect("receiver alive");
    }
    let droppers: Vec<_> =
        chain.into_iter().enumerate().map(|(n, tx)| thread::spawn_on(n % cpus, move || drop(tx))).collect();
    droppers.into_iter().for_each(|d| d.join());
    ok &= check(rx.try_iter().count() == 100, "clone chain: all values there");
    ok &= check(rx.try_recv() == Err(TryRecvError::Empty), "clone chain: one sender left, so not disconnected");
    drop(last);
    ok &= check(rx.recv().is_err(), "clone chain: disconnected after the last drop");
    println!("clone chain: 100 clones");

    // recv_timeout: times out, then gets a value sent from another CPU.
    let (tx, rx) = channel::<u32>();
    let start = Instant::now();
    ok &= check(rx.recv_timeout(Duration::from_millis(5)) == Err(RecvTimeoutError::Timeout), "recv_timeout times out");
    ok &= check(start.elapsed() >= Duration::from_millis(5), "recv_timeout waited its time");
    let late = thread::spawn_on(cpus - 1, move || {
        thread::sleep(Duration::from_millis(2));
        tx.send(9).expect("receiver alive");
    });
    ok &= check(rx.recv_timeout(Duration::from_secs(5)) == Ok(9), "recv_timeout gets a late value");
    late.join();
    ok &= check(
        rx.recv_timeout(Duration::from_secs(5)) == Err(RecvTimeoutError::Disconnected),
        "recv_timeout sees disconnect",
    );
    println!("recv_timeout: ok");

    // Timed waits that end early leave nothing in the deadline heap: 1000
    // recv_timeout(15 s), park_timeout(15 s) and Condvar::wait_timeout
    // (15 s) each answered at once by a thread on this CPU (so each one
    // blocks first). The heap used to keep every one until its deadline.
    let here = cpu::current();
    let before = thread::sleepers(here).expect("this CPU runs");
    let (ask, asked) = channel::<u32>();
    let (answer, answers) = channel::<u32>();
    let main_thread = thread::current();
    let flag = Arc::new((Mutex::new(0u32), Condvar::new()));
    let echo = {
        let flag = flag.clone();
        thread::spawn_on(here, move || {
            while let Ok(value) = asked.recv() {
                match value % 3 {
                    0 => answer.send(value).expect("asker alive"),
                    1 => main_thread.unpark(),
                    _ => {
                        *flag.0.lock() = value;
                        flag.1.notify_one();
                    }
                }
            }
        })
    };
    let mut answered = 0;
    for value in 0..1000u32 {
        ask.send(value).expect("echo alive");
        match value % 3 {
            0 => answered += (answers.recv_timeout(Duration::from_secs(15)) == Ok(value)) as u32,
            1 => {
                thread::park_timeout(Duration::from_secs(15));
                answered += 1;
            }
            _ => {
                let (guard, result) =
                    flag.1.wait_timeout_while(flag.0.lock(), Duration::from_secs(15), |seen| *seen != value);
                answered += (!result.timed_out() && *guard == value) as u32;
            }
        }
    }
    drop(ask);
    echo.join();
    let after = thread::sleepers(here).expect("this CPU runs");
    ok &= check(answered == 1000, "timed waits answered early");
    ok &= check(after <= before + 2, "timed waits that ended early left no entries in the deadline heap");
    println!("timed waits ended early: {answered} answered, deadline heap {before} entries before, {after} after");

    // Select over three receivers fed from different CPUs.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| channel::<usize>()).unzip();
    let feeders: Vec<_> = txs
        .into_iter()
        .enumerate()
        .map(|(n, tx)| {
            thread::spawn_on((n + 1) % cpus, move || {
                for k in 0..200 {
                    tx.send(n * 1000 + k).expect("receiver alive");
                    if k % 50 == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    let (mut got, mut closed) = ([0usize; 3], [false; 3]);
    while closed.iter().any(|c| !c) {
        let mut select = Select::new();
        let indices: Vec<_> =
            rxs.iter().enumerate().filter(|(n, _)| !closed[*n]).map(|(n, r)| (select.recv(r), n)).collect();
        let ready = select.ready();
        let n = indices.iter().find(|(index, _)| *index == ready).expect("an index we added").1;
        match rxs[n].try_recv() {
            Ok(value) => {
                in_order &= value == n * 1000 + got[n];
                got[n] += 1;
            }
            Err(TryRecvError::Disconnected) => closed[n] = true,
            Err(TryRecvError::Empty) => ok &= check(false, "select: a ready receiver is not empty"),
        }
    }
    feeders.into_iter().for_each(|f| f.join());
    ok &= check(got == [200; 3] && in_order, "select: every value of every receiver, in order");
    let mut select = Select::new();
    let (_tx, idle) = channel::<u8>();
    select.recv(&idle);
    ok &= check(select.ready_timeout(Duration::from_millis(2)).is_err(), "select: ready_timeout times out");
    println!("select: 3 receivers");

    // sync_channel: bounded lanes make senders wait; rendezvous.
    let (tx, rx) = sync_channel::<u32>(4);
    for n in 0..4 {
        tx.try_send(n).expect("room for 4");
    }
    ok &= check(matches!(tx.try_send(4), Err(TrySendError::Full(4))), "sync_channel: full at its bound");
    let filler = {
        let tx = tx.clone();
        thread::spawn(move || (4..1000u32).for_each(|n| tx.send(n).expect("receiver alive")))
    };
    drop(tx);
    let mut all_in_order = true;
    for (expected, value) in rx.iter().enumerate() {
        all_in_order &= value == expected as u32;
        if expected % 100 == 0 {
            thread::sleep(Duration::from_micros(100));
        }
    }
    filler.join();
    ok &= check(all_in_order, "sync_channel: 1000 values through a bound of 4");
    let (tx, rx) = sync_channel::<u32>(0);
    let sent = Arc::new(AtomicBool::new(false));
    let meeting = {
        let sent = sent.clone();
        thread::spawn_on(cpus - 1, move || {
            tx.send(1).expect("receiver alive");
            sent.store(true, Ordering::Release);
        })
    };
    thread::sleep(Duration::from_millis(3));
    // Nobody has received yet, so the send cannot have returned.
    ok &= check(!sent.load(Ordering::Acquire), "rendezvous: send waits for recv");
    ok &= check(rx.recv() == Ok(1), "rendezvous: value arrives");
    meeting.join();
    ok &= check(sent.load(Ordering::Acquire), "rendezvous: send returned after recv");
    let (tx, rx) = sync_channel::<Box<u32>>(2);
    drop(rx);
    ok &=
        check(tx.send(Box::new(1)).map_err(|e| *e.0) == Err(1), "send after the receiver is gone gives the value back");
    println!("sync_channel: ok");

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
    let refused = (0..cpus).all(|n| {
        let held = held.clone();
        thread::spawn_on(n, move || matches!(held.try_lock(), Err(TryLockError::WouldBlock))).join()
    });
    drop(guard);
    let granted = (0..cpus).all(|n| {
        let held = held.clone();
        thread::spawn_on(n, move || held.try_lock().map(|mut g| *g += 1).is_ok()).join()
    });
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

    // Condvar::wait_timeout: times out with nobody notifying (waiter on
    // another CPU than the mutex's home), then is notified in time.
    let pair = Arc::new((Mutex::new_on(0, 0u32), Condvar::new()));
    let first_done = Arc::new(AtomicBool::new(false));
    let timed = {
        let (pair, first_done) = (pair.clone(), first_done.clone());
        thread::spawn_on(cpus - 1, move || {
            let (value, changed) = &*pair;
            let start = Instant::now();
            let (guard, result) = changed.wait_timeout(value.lock(), Duration::from_millis(5));
            let first = (result.timed_out(), start.elapsed() >= Duration::from_millis(5), *guard);
            drop(guard);
            first_done.store(true, Ordering::Release);
            let (guard, result) = changed.wait_timeout_while(value.lock(), Duration::from_secs(10), |v| *v == 0);
            (first, result.timed_out(), *guard)
        })
    };
    while !first_done.load(Ordering::Acquire) {
        thread::sleep(Duration::from_millis(1));
    }
    {
        let (value, changed) = &*pair;
        *value.lock() = 5;
        changed.notify_all();
    }
    let ((timed_out, waited, seen), second_timed_out, last) = timed.join();
    ok &= check(timed_out && waited && seen == 0, "wait_timeout times out after its time");
    ok &= check(!second_timed_out && last == 5, "wait_timeout_while ends when notified");
    let (value, changed) = &*pair;
    let (_, result) = changed.wait_timeout_while(value.lock(), Duration::from_millis(2), |v| *v == 5);
    ok &= check(result.timed_out(), "wait_timeout_while times out while the condition holds");
    println!("condvar timeouts: ok");

    // OnceLock and LazyLock: set once, seen by every CPU.
    static ONCE: OnceLock<usize> = OnceLock::new();
    static CALLS: Mutex<u32> = Mutex::new(0);
    static LAZY: LazyLock<Vec<u64>> = LazyLock::new(|| {
        *CALLS.lock() += 1;
        (0..100).collect()
    });
    let racers: Vec<_> = (0..2 * cpus)
        .map(|n| {
            thread::spawn_on(n % cpus, move || {
                let winner = *ONCE.get_or_init(|| n);
                (winner, LAZY.iter().sum::<u64>())
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join()).collect();
    let winner = results[0].0;
    ok &= check(results.iter().all(|&(w, sum)| w == winner && sum == 4950), "OnceLock/LazyLock: one value for all");
    ok &= check(*CALLS.lock() == 1 && ONCE.set(99) == Err(99), "LazyLock made once; OnceLock set once");
    println!("once: winner {winner}");

    // RwLock: readers on every CPU at once, writers exclusive.
    let table = Arc::new(RwLock::new(Vec::<u64>::new()));
    let users: Vec<_> = (0..2 * cpus)
        .map(|n| {
            let table = table.clone();
            thread::spawn_on(n % cpus, move || {
                let mut consistent = true;
                for k in 0..50u64 {
                    if n % 2 == 0 {
                        let mut writer = table.write();
                        writer.push(k);
                        writer.push(k);
                    } else {
                        let reader = table.read();
                        consistent &= reader.len().is_multiple_of(2);
                    }
                }
                consistent
            })
        })
        .collect();
    let consistent = users.into_iter().all(|u| u.join());
    ok &= check(consistent && table.read().len() == 2 * 50 * cpus, "RwLock: readers never see half a write");
    let reader = table.read();
    ok &= check(table.try_write().is_err() && table.try_read().is_ok(), "RwLock: try_write refused while read");
    drop(reader);
    println!("rwlock: ok");

    // Barrier: rounds over every CPU; one leader per round.
    let barrier = Arc::new(Barrier::new(cpus + 1));
    let arrivals = Arc::new(Mutex::new(0usize));
    let parties: Vec<_> = (0..cpus)
        .map(|n| {
            let (barrier, arrivals) = (barrier.clone(), arrivals.clone());
            thread::spawn_on(n, move || {
                let mut leaders = 0;
                let mut counted = true;
                for round in 1..=20usize {
                    *arrivals.lock() += 1;
                    leaders += barrier.wait().is_leader() as usize;
                    counted &= *arrivals.lock() >= round * (barrier_parties(&barrier));
                    leaders += barrier.wait().is_leader() as usize;
                }
                (leaders, counted)
            })
        })
        .collect();
    let mut leaders = 0;
    for _ in 1..=20usize {
        *arrivals.lock() += 1;
        leaders += barrier.wait().is_leader() as usize;
        leaders += barrier.wait().is_leader() as usize;
    }
    let mut counted = true;
    for party in parties {
        let (l, c) = party.join();
        leaders += l;
        counted &= c;
    }
    ok &= check(leaders == 40 && counted, "Barrier: one leader per round, nobody passes early");
    println!("barrier: {} parties x 20 rounds", cpus + 1);

    if ok {
        println!("sync: all checks passed");
        0
    } else {
        1
    }
}
