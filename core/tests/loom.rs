//! Loom models of the cross-CPU paths: the SPSC ring, remote frees handed to their owner, the wake-up hand-shake, a virtqueue shared with a device, and the channel lanes with their order marks.
//!
//! Loom runs each model under every interleaving (and every reordering the
//! C++/Rust memory model allows for the `Acquire`/`Release` accesses) and
//! checks every access to a `loom::cell::UnsafeCell` against the
//! happens-before order, so a missing ordering shows up as a failed model,
//! not as a once-a-week corruption. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p toro-core --release --test loom
//! ```
//!
//! The models are kept small (a few items, rings of 1 and 2 slots) so the
//! whole file runs in seconds.

#![cfg(loom)]

use std::collections::HashMap;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use toro_core::allocator::{CpuHeap, RemoteInbox, RemoteOutbox, RemoteRing, WordMemory};
use toro_core::spsc::Ring;

/// Pushes `0..items` through a ring of `N` slots from one thread to another,
/// retrying on full and empty; checks order and that each item arrives once.
fn pass_items<const N: usize>(items: u32) {
    loom::model(move || {
        let ring = Arc::new(Ring::<u32, N>::new());
        let producer_ring = Arc::clone(&ring);
        let producer = thread::spawn(move || {
            // SAFETY: the only producer of this ring.
            let mut producer = unsafe { producer_ring.producer() };
            for item in 0..items {
                let mut item = item;
                while let Err(back) = producer.push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        // SAFETY: the only consumer of this ring.
        let mut consumer = unsafe { ring.consumer() };
        let mut expected = 0;
        while expected < items {
            match consumer.pop() {
                Some(item) => {
                    assert_eq!(item, expected, "in order, once each");
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(consumer.pop(), None);
        assert!(ring.is_empty());
    });
}

#[test]
fn ring_of_one_slot_is_full_after_every_push() {
    pass_items::<1>(3);
}

#[test]
fn ring_of_two_slots_wraps_around() {
    pass_items::<2>(3);
}

/// Items still in the ring when it is dropped are dropped once, whichever
/// thread pushed them.
#[test]
fn ring_drops_what_is_left() {
    loom::model(|| {
        let item = Arc::new(());
        let ring = Arc::new(Ring::<Arc<()>, 2>::new());
        let producer_ring = Arc::clone(&ring);
        let producer_item = Arc::clone(&item);
        thread::spawn(move || {
            // SAFETY: the only producer of this ring.
            let mut producer = unsafe { producer_ring.producer() };
            assert!(producer.push(Arc::clone(&producer_item)).is_ok());
            assert!(producer.push(producer_item).is_ok());
        })
        .join()
        .unwrap();
        // SAFETY: the only consumer of this ring.
        let popped = unsafe { ring.consumer() }.pop();
        assert!(popped.is_some());
        drop(popped);
        assert_eq!(Arc::strong_count(&item), 2);
        drop(ring);
        assert_eq!(Arc::strong_count(&item), 1);
    });
}

/// The first word of each block in flight, as loom cells: the words the
/// freeing CPU writes (list links) and the owner reads, so loom checks that
/// the ring orders them.
struct BlockWords {
    cells: Vec<(u64, UnsafeCell<u64>)>,
}

/// One CPU's view of memory: the shared block words, and everything else
/// (the owner's heap metadata, which no other CPU touches) in a private map.
struct CpuMemory {
    shared: Arc<BlockWords>,
    private: HashMap<u64, u64>,
}

impl CpuMemory {
    fn cell(&self, address: u64) -> Option<&UnsafeCell<u64>> {
        self.shared.cells.iter().find(|(block, _)| *block == address).map(|(_, cell)| cell)
    }
}

impl WordMemory for CpuMemory {
    fn load(&self, address: u64) -> u64 {
        match self.cell(address) {
            // SAFETY: loom checks that no write to the cell is concurrent
            // with this read, and fails the model if one is.
            Some(cell) => cell.with(|word| unsafe { *word }),
            None => self.private.get(&address).copied().unwrap_or(0),
        }
    }

    fn store(&mut self, address: u64, value: u64) {
        match self.cell(address) {
            // SAFETY: loom checks that no other access to the cell is
            // concurrent with this write, and fails the model if one is.
            Some(cell) => cell.with_mut(|word| unsafe { *word = value }),
            None => {
                self.private.insert(address, value);
            }
        }
    }
}

/// CPU 0 allocates `blocks` blocks; CPU 1 frees them through an outbox that
/// publishes every `batch_blocks` blocks into a ring of `SLOTS` slots to CPU
/// 0, then flushes until everything is out; CPU 0 drains until it has them
/// back. Each block must come back exactly once, CPU 0's heap must end with
/// nothing in use, and no access to a block word may race.
fn hand_off<const SLOTS: usize>(blocks: u64, batch_blocks: u32) {
    const BASE: u64 = 0x10_0000;
    const LENGTH: u64 = 64 * 4096;
    loom::model(move || {
        let mut owner_memory =
            CpuMemory { shared: Arc::new(BlockWords { cells: Vec::new() }), private: HashMap::new() };
        let mut heap = CpuHeap::new(&mut owner_memory, BASE, LENGTH).unwrap();
        let addresses: Vec<u64> = (0..blocks).map(|_| heap.allocate(&mut owner_memory, 64, 8).unwrap()).collect();
        let shared = Arc::new(BlockWords {
            cells: addresses.iter().map(|block| (*block, UnsafeCell::new(owner_memory.load(*block)))).collect(),
        });
        owner_memory.shared = Arc::clone(&shared);
        let ring = Arc::new(RemoteRing::<SLOTS>::new());

        let producer_ring = Arc::clone(&ring);
        let freeing_cpu = thread::spawn(move || {
            let mut memory = CpuMemory { shared, private: HashMap::new() };
            let mut outbox = RemoteOutbox::<2, SLOTS>::new(batch_blocks);
            // SAFETY: the only producer of the ring from CPU 1 to CPU 0.
            outbox.connect(0, unsafe { producer_ring.producer() }).unwrap();
            for block in addresses {
                outbox.free(&mut memory, 0, block, 64).unwrap();
            }
            while outbox.flush() > 0 {
                thread::yield_now();
            }
            assert_eq!(outbox.sent().blocks, blocks);
        });

        let mut inbox = RemoteInbox::<2, SLOTS>::new();
        // SAFETY: the only consumer of the ring from CPU 1 to CPU 0.
        inbox.connect(1, unsafe { ring.consumer() }).unwrap();
        while inbox.received().blocks < blocks {
            if inbox.drain(&mut owner_memory, &mut heap).blocks == 0 {
                thread::yield_now();
            }
        }
        freeing_cpu.join().unwrap();
        inbox.drain(&mut owner_memory, &mut heap);
        assert_eq!(inbox.received().blocks, blocks, "each block once");
        assert_eq!(inbox.refused(), 0);
        let usage = heap.usage();
        assert_eq!((usage.small_blocks, usage.bytes_in_use), (0, 0));
    });
}

/// The kernel's ring size: batches of two, the last one flushed.
#[test]
fn remote_frees_come_back_to_their_owner_exactly_once() {
    hand_off::<{ toro_core::allocator::REMOTE_RING_SLOTS }>(3, 2);
}

/// A one-slot ring, one block per batch: the ring is full at once, blocks
/// pile up in the outbox and go out as one batch when the owner has drained.
#[test]
fn remote_frees_wait_out_a_full_ring() {
    hand_off::<1>(3, 1);
}

// The wake-up hand-shake (`toro_core::wake`): the waiter publishes itself,
// fences and re-checks its condition before blocking; the waker changes the
// condition, fences and reads the waiter. Loom implements `fence(SeqCst)`
// (all SeqCst fences in one order) and lets each load return any store the
// memory model allows, including one still "in the store buffer" of the
// other thread, so leaving out a fence shows up as a lost wake-up.

/// The waiting thread's name in the slot (a control block's address in the
/// kernel).
const WAITING_THREAD: u64 = 0x1000;

/// The fence the kernel makes with `mfence`.
fn full_fence() {
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// A fence left out.
fn no_fence() {}

/// How many executions of a model took each branch (plain `std` atomics:
/// loom runs one execution at a time and does not track these).
#[derive(Default)]
struct Outcomes {
    blocked: std::sync::atomic::AtomicUsize,
    not_blocked: std::sync::atomic::AtomicUsize,
    stale: std::sync::atomic::AtomicUsize,
    current: std::sync::atomic::AtomicUsize,
}

impl Outcomes {
    fn count(counter: &std::sync::atomic::AtomicUsize) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One wait, one wake-up. The waker sets a flag, then reads the slot; its
/// result is the wake-up it sends. The waiter registers, then checks the
/// flag; if the flag is clear it "blocks": it then waits (by joining the
/// waker) for the wake-up token and checks it is for this wait. Returns how
/// often the waiter blocked and how often it did not.
fn one_wait_one_wake(waiter_fence: fn(), waker_fence: fn()) -> std::sync::Arc<Outcomes> {
    use loom::sync::atomic::{AtomicBool, Ordering};
    use toro_core::wake::{WaitEpoch, Waiter, WaiterSlot};

    let outcomes = std::sync::Arc::new(Outcomes::default());
    let counted = std::sync::Arc::clone(&outcomes);
    loom::model(move || {
        let slot = Arc::new(WaiterSlot::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (waker_slot, waker_flag) = (Arc::clone(&slot), Arc::clone(&flag));
        let waker = thread::spawn(move || {
            waker_flag.store(true, Ordering::Release);
            waker_slot.waiter(waker_fence)
        });

        let epoch = WaitEpoch::new();
        let this_wait = epoch.advance();
        slot.publish(WAITING_THREAD, this_wait, waiter_fence);
        let would_block = !flag.load(Ordering::Acquire);
        let wake_up = waker.join().unwrap();
        if would_block {
            Outcomes::count(&counted.blocked);
            assert_eq!(
                wake_up,
                Some(Waiter { thread: WAITING_THREAD, epoch: this_wait }),
                "lost wake-up: the waiter blocked but the waker did not see it"
            );
            assert!(epoch.is_current(this_wait));
        } else {
            Outcomes::count(&counted.not_blocked);
        }
        slot.clear();
    });
    outcomes
}

/// Whenever the waiter blocks, the waker saw it registered (and both
/// orders of the race happen).
#[test]
fn wake_up_is_never_lost() {
    let outcomes = one_wait_one_wake(full_fence, full_fence);
    assert!(Outcomes::get(&outcomes.blocked) > 0, "some execution blocks");
    assert!(Outcomes::get(&outcomes.not_blocked) > 0, "some execution sees the flag");
}

/// Without the waiter's fence, its load of the flag can pass its store to
/// the slot: loom finds an execution where both sides miss each other.
#[test]
#[should_panic(expected = "lost wake-up")]
fn wake_up_is_lost_without_the_waiters_fence() {
    one_wait_one_wake(no_fence, full_fence);
}

/// Without the waker's fence, its load of the slot can pass its store to
/// the flag: the same lost wake-up.
#[test]
#[should_panic(expected = "lost wake-up")]
fn wake_up_is_lost_without_the_wakers_fence() {
    one_wait_one_wake(full_fence, no_fence);
}

/// The epoch rule: the waiter's first wait ends (here without blocking, as
/// when its re-check finds the condition true) and it starts a second wait
/// on the same slot before the waker's wake-up is delivered. A wake-up
/// naming the first wait is recognised as stale; one naming the second is
/// for the current wait (a wake-up the waiter's loop re-checks). A waker
/// that sees the waiter never pairs it with the epoch of no wait (the
/// slot's `Release`/`Acquire` pairing of thread and epoch).
#[test]
fn a_late_wake_up_for_an_ended_wait_is_stale() {
    use toro_core::wake::{WaitEpoch, WaiterSlot};

    let outcomes = std::sync::Arc::new(Outcomes::default());
    let counted = std::sync::Arc::clone(&outcomes);
    loom::model(move || {
        let slot = Arc::new(WaiterSlot::new());
        let waker_slot = Arc::clone(&slot);
        let waker = thread::spawn(move || waker_slot.waiter(full_fence));

        let epoch = WaitEpoch::new();
        let first = epoch.advance();
        slot.publish(WAITING_THREAD, first, full_fence);
        slot.clear();
        let second = epoch.advance();
        slot.publish(WAITING_THREAD, second, full_fence);

        // The wake-up arrives now, during the second wait. `None`: the
        // waker read the slot empty (before the first wait or between
        // the two), and sends nothing.
        if let Some(wake_up) = waker.join().unwrap() {
            assert_eq!(wake_up.thread, WAITING_THREAD);
            assert!(
                wake_up.epoch == first || wake_up.epoch == second,
                "the waiter was read with the epoch of no wait: {wake_up:?}"
            );
            let accepted = epoch.is_current(wake_up.epoch);
            assert_eq!(accepted, wake_up.epoch == second, "only the current wait's wake-up is accepted");
            Outcomes::count(if accepted { &counted.current } else { &counted.stale });
        }
        slot.clear();
    });
    assert!(Outcomes::get(&outcomes.stale) > 0, "some execution delivers a stale wake-up");
    assert!(Outcomes::get(&outcomes.current) > 0, "some execution wakes the second wait");
}

/// A miniature of the channel: the sender publishes two values, waking the
/// receiver after each through a real ring (the CPU-pair message path); the
/// receiver takes values, and when none is there it waits as `recv` does:
/// new epoch, publish, re-check, block. Blocking serves the ring, dropping
/// stale wake-ups, until one for the current wait comes. The sender never
/// waits for the receiver, so a blocked receiver may wait for the sender to
/// finish (join it): every wake-up it will ever send is in the ring then,
/// and if none is for the current wait, the receiver would sleep forever.
/// (Blocking by spinning on the ring would also let a second wait race the
/// sender after a first block, but took ~40 s to explore; this version
/// takes about one. A second wait races the sender here whenever the first
/// re-check found the value.)
#[test]
fn a_receiver_waiting_again_and_again_is_always_woken() {
    use loom::sync::atomic::{AtomicU64, Ordering};
    use toro_core::wake::{WaitEpoch, WaiterSlot};

    const VALUES: u64 = 2;
    let outcomes = std::sync::Arc::new(Outcomes::default());
    let counted = std::sync::Arc::clone(&outcomes);
    loom::model(move || {
        let sent = Arc::new(AtomicU64::new(0));
        let slot = Arc::new(WaiterSlot::new());
        // One wake-up per value at most, so it never fills.
        let wake_ups = Arc::new(Ring::<u64, { VALUES as usize }>::new());
        let sender = {
            let (sent, slot, wake_ups) = (Arc::clone(&sent), Arc::clone(&slot), Arc::clone(&wake_ups));
            thread::spawn(move || {
                // SAFETY: the only producer of the wake-up ring.
                let mut producer = unsafe { wake_ups.producer() };
                for value in 1..=VALUES {
                    sent.store(value, Ordering::Release);
                    if let Some(waiter) = slot.waiter(full_fence) {
                        assert_eq!(waiter.thread, WAITING_THREAD);
                        assert!(producer.push(waiter.epoch).is_ok(), "one ring slot per value");
                    }
                }
            })
        };

        // SAFETY: the only consumer of the wake-up ring.
        let mut consumer = unsafe { wake_ups.consumer() };
        let mut sender = Some(sender);
        let epoch = WaitEpoch::new();
        let mut received = 0;
        while received < VALUES {
            if sent.load(Ordering::Acquire) > received {
                received += 1;
                continue;
            }
            let this_wait = epoch.advance();
            slot.publish(WAITING_THREAD, this_wait, full_fence);
            if sent.load(Ordering::Acquire) > received {
                slot.clear();
                continue;
            }
            // Blocked: only a wake-up for this wait ends it.
            Outcomes::count(&counted.blocked);
            if let Some(sender) = sender.take() {
                sender.join().unwrap();
            }
            let mut woken = false;
            while let Some(wake_up) = consumer.pop() {
                if epoch.is_current(wake_up) {
                    woken = true;
                } else {
                    Outcomes::count(&counted.stale);
                }
            }
            assert!(woken, "lost wake-up: the receiver blocked and no wake-up for its wait came");
            slot.clear();
        }
        if let Some(sender) = sender {
            sender.join().unwrap();
        }
    });
    assert!(Outcomes::get(&outcomes.blocked) > 0, "some execution blocks");
    assert!(Outcomes::get(&outcomes.stale) > 0, "some execution drops a stale wake-up");
}

// A split virtqueue shared between the driver (the owner CPU) and a device
// (the VMM, another host thread). Both sides suppress notifications with
// event-idx: the driver publishes `avail.idx`, fences, reads `avail_event`
// to decide whether to notify; the device publishes `avail_event`, fences,
// re-reads `avail.idx` before it sleeps. The same hand-shake runs the other
// way for interrupts (`used.idx` / `used_event`). Each side sleeps only
// when its re-check says nothing is pending, and wakes only on the other
// side's notification or interrupt. The model checks that every request
// completes (no notification or interrupt lost), that the device reads
// each request's descriptors as the driver wrote them (the `Release` on
// `avail.idx`), and that the driver gets each token back once.

mod virtqueue {
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::sync::Arc;
    use loom::thread;
    use toro_core::virtio::queue::{Buffer, Device, Driver, QueueMemory, Segment};

    use super::{full_fence, no_fence};

    /// Where the model pretends the queue sits.
    const BASE: u64 = 0x10_0000;
    /// Requests the driver sends, one at a time (so each may need a notification).
    const REQUESTS: u32 = 2;

    /// A doorbell rung by one side only (a notification or an interrupt):
    /// a counter its one writer bumps with a `Release` store, as an MMIO
    /// write or an MSI reaches the other side after everything before it.
    struct Doorbell {
        rings: AtomicUsize,
        /// The ringing side will never ring again.
        closed: AtomicBool,
    }

    impl Doorbell {
        fn new() -> Self {
            Self { rings: AtomicUsize::new(0), closed: AtomicBool::new(false) }
        }

        fn ring(&self) {
            self.rings.store(self.rings.load(Ordering::Relaxed) + 1, Ordering::Release);
        }

        fn close(&self) {
            self.closed.store(true, Ordering::Release);
        }

        /// Sleeps until a ring after `seen`; `false` if the ringer closed without ringing.
        fn wait(&self, seen: &mut usize) -> bool {
            loop {
                let closed = self.closed.load(Ordering::Acquire);
                let rings = self.rings.load(Ordering::Acquire);
                if rings != *seen {
                    *seen = rings;
                    return true;
                }
                if closed {
                    return false;
                }
                thread::yield_now();
            }
        }
    }

    /// Context switches loom may force per run. The full search (unbounded)
    /// does not end in minutes with two spinning sides; three preemptions
    /// already find both planted faults below.
    const PREEMPTION_BOUND: usize = 3;

    fn session(driver_fence: fn(), device_fence: fn()) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(PREEMPTION_BOUND);
        builder.check(move || {
            let memory = Arc::new(QueueMemory::<2, 0>::new());
            let mut driver: Driver<_, u32, 2, 0> = Driver::new(Arc::clone(&memory), BASE, true, false);
            let notifications = Arc::new(Doorbell::new());
            let interrupts = Arc::new(Doorbell::new());

            let device_notifications = Arc::clone(&notifications);
            let device_interrupts = Arc::clone(&interrupts);
            let device = thread::spawn(move || {
                let mut device = Device::new(memory, BASE, true);
                let mut seen = 0;
                let mut served = 0;
                loop {
                    while let Some(head) = device.next_available() {
                        let mut segments = [Segment { buffer: Buffer { address: 0, length: 0 }, writable: false }; 2];
                        let count = device.read_chain(head, &mut segments).expect("a chain the driver wrote");
                        assert_eq!(count, 1);
                        // The driver gives request k the buffer at 0x1000 * (k + 1), k + 1 bytes long.
                        let buffer = segments[0].buffer;
                        assert_eq!(buffer.address, 0x1000 * u64::from(buffer.length), "descriptor seen half-written");
                        device.complete(head, buffer.length);
                        served += 1;
                        if device.should_interrupt(device_fence) {
                            device_interrupts.ring();
                        }
                    }
                    if served == REQUESTS {
                        break;
                    }
                    if device.enable_notifications(device_fence) && !device_notifications.wait(&mut seen) {
                        break;
                    }
                }
                device_interrupts.close();
            });

            let mut completed = 0;
            let mut seen = 0;
            for request in 1..=REQUESTS {
                let buffer = Buffer { address: 0x1000 * u64::from(request), length: request };
                driver.add(&[], &[buffer], request).expect("room for the request");
                if driver.should_notify(driver_fence) {
                    notifications.ring();
                }
            }
            notifications.close();
            loop {
                while let Some(done) = driver.pop_used().expect("a well-behaved device") {
                    assert_eq!(done.written, done.token);
                    completed += 1;
                }
                if completed == REQUESTS {
                    break;
                }
                if driver.enable_interrupts(driver_fence) && !interrupts.wait(&mut seen) {
                    break;
                }
            }
            device.join().unwrap();
            assert_eq!(completed, REQUESTS, "lost notification or interrupt: a request never completed");
        });
    }

    #[test]
    fn virtqueue_requests_always_complete() {
        session(full_fence, full_fence);
    }

    /// Without the driver's fence, its read of `avail_event` can pass its
    /// `avail.idx` store (and its read of `used.idx` its `used_event`
    /// store): the device sleeps on a request it was never told of, or the
    /// driver on a completion that never interrupts.
    #[test]
    #[should_panic(expected = "never completed")]
    fn virtqueue_loses_a_request_without_the_drivers_fence() {
        session(no_fence, full_fence);
    }

    /// The same on the device's side.
    #[test]
    #[should_panic(expected = "never completed")]
    fn virtqueue_loses_a_request_without_the_devices_fence() {
        session(full_fence, no_fence);
    }
}

/// A lane of the channel model: two slots of (value, mark), a count of
/// values written (by its producer, `Release` after the slot) and taken
/// (by the receiver) — the kernel's lane (`toro::sync::channel`) shrunk.
struct ModelLane {
    slots: [UnsafeCell<(u64, u64)>; 2],
    written: loom::sync::atomic::AtomicU64,
    taken: loom::sync::atomic::AtomicU64,
}

struct ModelLanes([ModelLane; 2]);

impl ModelLanes {
    fn new() -> Self {
        let lane = || ModelLane {
            slots: [UnsafeCell::new((0, 0)), UnsafeCell::new((0, 0))],
            written: loom::sync::atomic::AtomicU64::new(0),
            taken: loom::sync::atomic::AtomicU64::new(0),
        };
        Self([lane(), lane()])
    }

    /// The lane's producer only.
    fn push(&self, lane: usize, value: u64, mark: u64) -> u64 {
        let lane = &self.0[lane];
        let index = lane.written.load(loom::sync::atomic::Ordering::Relaxed);
        lane.slots[index as usize].with_mut(|slot| {
            // SAFETY: slot `index` is not published yet: only we touch it.
            unsafe { *slot = (value, mark) }
        });
        lane.written.store(index + 1, loom::sync::atomic::Ordering::Release);
        index + 1
    }

    /// The receiver only, on a lane with a value.
    fn pop(&self, lane: usize) -> u64 {
        let lane = &self.0[lane];
        let index = lane.taken.load(loom::sync::atomic::Ordering::Relaxed);
        // SAFETY: below `written` (acquired in `has_value`): published.
        let value = lane.slots[index as usize].with(|slot| unsafe { (*slot).0 });
        lane.taken.store(index + 1, loom::sync::atomic::Ordering::Release);
        value
    }
}

impl toro_core::channel::Lanes for ModelLanes {
    fn count(&self) -> usize {
        2
    }
    fn has_value(&self, lane: usize) -> bool {
        let lane = &self.0[lane];
        lane.written.load(loom::sync::atomic::Ordering::Acquire)
            > lane.taken.load(loom::sync::atomic::Ordering::Relaxed)
    }
    fn front_mark(&self, lane: usize) -> u64 {
        let lane = &self.0[lane];
        let index = lane.taken.load(loom::sync::atomic::Ordering::Relaxed);
        // SAFETY: asked only after `has_value` (acquire): published.
        lane.slots[index as usize].with(|slot| unsafe { (*slot).1 })
    }
    fn taken(&self, lane: usize) -> u64 {
        self.0[lane].taken.load(loom::sync::atomic::Ordering::Relaxed)
    }
}

/// A sender writes two values on CPU 0's lane, moves to CPU 1 (a hand-off
/// with `Release`/`Acquire`, as the migration message is) and writes a
/// third there with its mark; the receiver, looking at lane 1 first,
/// chooses with `toro_core::channel::lane_to_take`. Under every
/// interleaving it takes 0, 1, 2 in order, and every slot read is ordered
/// after its write (loom checks the cells).
#[test]
fn channel_marks_keep_a_moving_senders_order() {
    use loom::sync::atomic::AtomicBool;
    use toro_core::channel::{encode_mark, lane_to_take};

    loom::model(|| {
        let lanes = Arc::new(ModelLanes::new());
        let moved = Arc::new(AtomicBool::new(false));
        let (first_lanes, first_moved) = (Arc::clone(&lanes), Arc::clone(&moved));
        let on_cpu_0 = thread::spawn(move || {
            first_lanes.push(0, 0, 0);
            let count = first_lanes.push(0, 1, 0);
            first_moved.store(true, loom::sync::atomic::Ordering::Release);
            count
        });
        let (second_lanes, second_moved) = (Arc::clone(&lanes), Arc::clone(&moved));
        let on_cpu_1 = thread::spawn(move || {
            while !second_moved.load(loom::sync::atomic::Ordering::Acquire) {
                thread::yield_now();
            }
            // The sender's last value went to lane 0, which then held 2.
            second_lanes.push(1, 2, encode_mark(Some((0, 2)), 1));
        });
        let mut expected = 0;
        while expected < 3 {
            match lane_to_take(&*lanes, 1) {
                Some(lane) => {
                    assert_eq!(lanes.pop(lane), expected, "the moving sender's values in order");
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
        assert_eq!(on_cpu_0.join().unwrap(), 2);
        on_cpu_1.join().unwrap();
    });
}

/// Two writers and a reader of two words, each making one attempt (the
/// spinning `write` and `read` only repeat these, and a spinning model
/// exceeds loom's branch limit): a read that succeeds gives one write's
/// words (the initial ones, or either writer's), never a mix; a write fails
/// only while the other is in progress; afterwards the words are those of a
/// write that succeeded. Planted faults, both found with two forced
/// preemptions per run (0.1 s; the unbounded search takes 20 s): a
/// `Relaxed` compare-exchange in `try_write` leaves the two writers' words
/// mixed; no `Acquire` fence in `try_read` lets a read mix two writes.
#[test]
fn seq_words_are_never_torn() {
    use toro_core::seq_words::SeqWords;
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let words = Arc::new(SeqWords::new([0u64, 0]));
        let writers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|value| {
                let words = Arc::clone(&words);
                thread::spawn(move || words.try_write([value, value]).then_some(value))
            })
            .collect();
        if let Some([first, second]) = words.try_read() {
            assert_eq!(first, second, "a read mixed two writes");
        }
        let written: Vec<u64> = writers.into_iter().filter_map(|writer| writer.join().unwrap()).collect();
        assert!(!written.is_empty(), "both writes failed: one fails only while the other is in progress");
        let [first, second] = words.read();
        assert!(first == second && written.contains(&first), "after the writes {written:?}: {first} {second}");
    });
}
