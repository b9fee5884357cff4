//! Channels shaped like `std::sync::mpsc`: `channel()` (unbounded) and
//! `sync_channel(bound)`, many senders on many CPUs, one receiver, with no
//! locked instruction anywhere.
//!
//! # Lanes
//!
//! Each CPU that sends on a channel has a lane of its own: a queue of
//! segments of `SEGMENT` slots written only by that CPU and read only by
//! the receiver (single producer, single consumer). Every sender running on
//! a CPU writes that CPU's lane; scheduling is cooperative and `send` does
//! not yield between claiming a slot and publishing it, so the senders of
//! one CPU never interleave. A lane counts the values written (by its CPU,
//! `Release` after the value) and taken (by the receiver); the receiver
//! reads a slot only below `written`. A value moves into its slot and out
//! again: a `Box` payload is never copied, only its pointer.
//!
//! # Order per sender
//!
//! A sender that moved to another CPU since its last value writes to a new
//! lane; its earlier values may still wait in the old one. So a value whose
//! sender changed lanes carries a mark (the old lane, how many values that
//! lane held when the sender wrote the marked one: at least up to its own
//! last value there); the receiver takes it only once it has taken that
//! many from the old lane, and turns to the old lane first. Marks cannot
//! form a cycle: each one points to values written before (in
//! happens-before order) the value that carries it.
//!
//! # The short paths
//!
//! `send` and `recv` run once per value, so each has a short path that
//! does only what the common case needs (an unbounded channel; the same
//! CPU, lane and segment as the last value; no mark): the sender keeps its
//! lane and that lane's CPU, the receiver the lane it reads. Anything else
//! (a first value, a move, a full or read-up segment, a mark, a bound, a
//! wait) goes out of line. A read-up segment goes back to its sender
//! through the lane's spare slots instead of being freed remotely.
//!
//! # Disconnection without a shared counter
//!
//! Counting senders would take a read-modify-write between CPUs. Instead
//! senders hold weights (weighted reference counting): the first has
//! `FULL_WEIGHT`; a clone takes half of its parent's (no message); a
//! sender with weight 1 asks the home CPU (where the channel was made) for
//! more and waits for the answer. A dropped sender sends its weight back
//! to the home CPU, which alone keeps the weight still out; when it
//! reaches zero every sender is gone. A clone dropped on another CPU may
//! report before its parent: its weight was part of what is out, so the
//! count never reaches zero early. The home CPU frees the channel once the
//! receiver has reported its drop too; each end's report is its last use.
//!
//! The weights and the marks are `toro_core::channel` (host-tested with
//! random senders, clones, moves and drops).
//!
//! # Bounds
//!
//! `sync_channel(bound)` bounds each lane: a sender waits while its CPU's
//! lane holds `bound` values (so at most `bound` per sending CPU are
//! buffered: an exact bound over all CPUs would need the CPUs to agree,
//! which takes a read-modify-write or a round trip per value). With bound 0
//! a send waits until the receiver has taken its value (a rendezvous).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use core::time::Duration;

use toro_core::channel::{encode_mark, lane_to_take, split_weight, Lanes, WeightLedger, FULL_WEIGHT};
use toro_core::wake::WaiterSlot;

use super::on_home;
use crate::arch::percpu;
use crate::cpu::{self as messages, full_fence};
use crate::thread::scheduler;
use crate::time::Instant;

/// Values per segment.
const SEGMENT: usize = 32;
/// Read-up segments a lane keeps for its sender to reuse (`Lane::spares`).
const SPARES: usize = 4;
/// How long `recv` polls before blocking when its CPU has nothing else to
/// run (about 10-20 us at 2-3 GHz).
const RECEIVE_SPIN_TICKS: u64 = 40_000;

/// `SEGMENT` values, and their marks (`toro_core::channel::encode_mark`)
/// apart from them: marks are rare (a sender's first value after it moved
/// to another CPU), so a slot is just its value, and a stream of them
/// moves half as many cache lines from the sending CPU to the receiving
/// one as it would with a mark beside each value.
struct Segment<T> {
    slots: [UnsafeCell<MaybeUninit<T>>; SEGMENT],
    /// The marks of this segment's values, made by the sender at its first
    /// marked value here (null: none is marked); written before the count
    /// that publishes the value (`Release`), like the value.
    marks: UnsafeCell<*mut [u64; SEGMENT]>,
    next: AtomicPtr<Segment<T>>,
}

impl<T> Segment<T> {
    fn new() -> *mut Self {
        Box::into_raw(Box::new(Self {
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; SEGMENT],
            marks: UnsafeCell::new(core::ptr::null_mut()),
            next: AtomicPtr::new(core::ptr::null_mut()),
        }))
    }

    /// The mark of the value in slot `index` (0: none).
    ///
    /// # Safety
    /// The value is published and the caller has acquired its count.
    #[inline(always)]
    unsafe fn mark(segment: *const Self, index: usize) -> u64 {
        // SAFETY: the caller's promise; the marks were written before it.
        unsafe {
            let marks = *(*segment).marks.get();
            if marks.is_null() {
                0
            } else {
                (*marks)[index]
            }
        }
    }

    /// Sender only: gives the value in slot `index` (not published yet)
    /// `mark` (not 0).
    ///
    /// # Safety
    /// The lane's CPU; the slot is not published.
    #[cold]
    unsafe fn set_mark(segment: *mut Self, index: usize, mark: u64) {
        // SAFETY: the caller's promise: no one reads the marks of values
        // not yet published.
        unsafe {
            let marks = &mut *(*segment).marks.get();
            if marks.is_null() {
                *marks = Box::into_raw(Box::new([0; SEGMENT]));
            }
            (**marks)[index] = mark;
        }
    }

    /// Drops the segment's marks, if any, making it like new.
    ///
    /// # Safety
    /// Nothing reads the marks any more.
    unsafe fn clear_marks(segment: *mut Self) {
        // SAFETY: the caller's promise.
        unsafe {
            let marks = &mut *(*segment).marks.get();
            if !marks.is_null() {
                drop(Box::from_raw(*marks));
                *marks = core::ptr::null_mut();
            }
        }
    }

    /// Frees the segment and its marks (not the values in it).
    ///
    /// # Safety
    /// Nothing refers to the segment any more.
    unsafe fn free(segment: *mut Self) {
        // SAFETY: the caller's promise.
        unsafe {
            Self::clear_marks(segment);
            drop(Box::from_raw(segment));
        }
    }
}

/// A field alone on its cache line: the sender's and the receiver's
/// per-value writes must not invalidate each other's lines.
#[repr(align(64))]
struct Padded<T>(T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the receiver and `Select` need of a lane, whatever its type.
struct LaneHeader {
    /// Values written (by the lane's CPU; `Release` after the value).
    written: Padded<AtomicU64>,
    /// Values taken, published by the receiver (`Release` after the slot
    /// is read) for the senders of a bounded channel only: an unbounded
    /// channel's senders never look, so the receiver does not store it.
    taken: Padded<AtomicU64>,
    /// Receiver only: its own counts.
    counts: Padded<UnsafeCell<ReceiverCounts>>,
    /// A sender of this lane's CPU waiting for room (bounded channels):
    /// it publishes, the receiver reads after taking (`toro_core::wake`).
    room_waiter: WaiterSlot,
    /// Lane CPU only: `room_waiter` is taken by one of its threads.
    room_waiter_busy: UnsafeCell<bool>,
    /// Lane CPU only: its other threads waiting for room, woken one by one.
    room_queue: UnsafeCell<VecDeque<(u64, u64)>>,
}

impl LaneHeader {
    /// Receiver only: whether a value it has not taken is published.
    #[inline(always)]
    fn has_value(&self) -> bool {
        // SAFETY: the receiver's own field.
        let counts = unsafe { &mut *self.counts.get() };
        if counts.ready > 0 {
            return true;
        }
        let written = self.written.load(Ordering::Acquire);
        counts.ready = written - counts.seen_written;
        counts.seen_written = written;
        counts.ready > 0
    }

    /// Receiver only: values taken so far.
    #[inline(always)]
    fn taken_here(&self) -> u64 {
        // SAFETY: the receiver's own field.
        let counts = unsafe { &*self.counts.get() };
        counts.seen_written - counts.ready
    }

    /// Receiver only: one more value taken (`has_value` said there was one).
    #[inline(always)]
    fn count_taken(&self) {
        // SAFETY: the receiver's own field.
        unsafe { (*self.counts.get()).ready -= 1 };
    }
}

/// A lane's counts that only the receiver uses.
struct ReceiverCounts {
    /// `written` as the receiver last read it (`Acquire`), so it reads the
    /// sender's line again only once it has caught up.
    seen_written: u64,
    /// Of those, the values not yet taken (taken: the difference).
    ready: u64,
}

/// One CPU's lane (see the module docs). The header comes first, so a
/// pointer to the lane is one to its header.
#[repr(C)]
struct Lane<T> {
    header: LaneHeader,
    /// Lane CPU only: the segment being filled and its next free slot.
    tail: Padded<UnsafeCell<*mut Segment<T>>>,
    tail_index: UnsafeCell<usize>,
    /// Receiver only: the segment being read and its next slot.
    head: Padded<UnsafeCell<*mut Segment<T>>>,
    head_index: UnsafeCell<usize>,
    /// Read-up segments handed back for reuse. Each slot passes one
    /// segment at a time: the receiver stores one in a slot it finds empty
    /// (null), the lane's CPU takes one from a slot it finds full and
    /// stores null. Each side writes a slot only in the state the other
    /// leaves it in, so a load and a store suffice (no read-modify-write).
    /// In a steady stream the sender reuses its segments instead of
    /// allocating one every `SEGMENT` values that the receiver then frees
    /// remotely; `SPARES` slots absorb the jitter between the two sides.
    spares: Padded<[AtomicPtr<Segment<T>>; SPARES]>,
}

impl<T> Lane<T> {
    /// Lane CPU only: an empty segment, a spare if there is one.
    fn fresh_segment(&self) -> *mut Segment<T> {
        for slot in self.spares.iter() {
            let spare = slot.load(Ordering::Acquire);
            if !spare.is_null() {
                slot.store(core::ptr::null_mut(), Ordering::Relaxed);
                return spare;
            }
        }
        Segment::new()
    }

    /// Receiver only: `segment` is read up: keep it as a spare if a slot is
    /// empty, else free it.
    ///
    /// # Safety
    /// Receiver only; nothing refers to `segment` any more.
    unsafe fn retire(&self, segment: *mut Segment<T>) {
        match self.spares.iter().find(|slot| slot.load(Ordering::Relaxed).is_null()) {
            Some(slot) => {
                // SAFETY: the caller's promise. `Release`: the receiver's
                // reads of the segment happen before the sender's writes.
                unsafe {
                    Segment::clear_marks(segment);
                    (*segment).next.store(core::ptr::null_mut(), Ordering::Relaxed);
                }
                slot.store(segment, Ordering::Release);
            }
            // SAFETY: the caller's promise.
            None => unsafe { Segment::free(segment) },
        }
    }
}

/// What the receiver, `Select` and the home CPU need, whatever the type.
struct SharedHeader {
    /// The CPU that keeps the weights and frees the channel.
    home: usize,
    /// Values a lane may hold (`None`: unbounded; 0: rendezvous).
    bound: Option<usize>,
    /// Per CPU: its lane, made by that CPU at its first send.
    lanes: Box<[AtomicPtr<LaneHeader>]>,
    /// The receiver (or its `Select`) while it waits.
    waiter: WaiterSlot,
    /// Set by the home CPU when the last sender's weight came back.
    senders_gone: AtomicBool,
    receiver_gone: AtomicBool,
    /// Home CPU only: sender weight not yet returned.
    weight_out: UnsafeCell<WeightLedger>,
    /// Home CPU only: the receiver reported its drop.
    receiver_reported: UnsafeCell<bool>,
}

impl SharedHeader {
    /// Whether the receiver would get something now (a value, or the news
    /// that every sender is gone).
    fn ready(&self) -> bool {
        self.senders_gone.load(Ordering::Acquire)
            || self.lanes.iter().any(|lane| {
                let lane = lane.load(Ordering::Acquire);
                // SAFETY: lanes live as long as the channel; `taken` is the
                // receiver's own counter.
                !lane.is_null() && unsafe { (*lane).has_value() }
            })
    }
}

#[repr(C)]
struct Shared<T> {
    header: SharedHeader,
    _values: PhantomData<T>,
}

/// The sending half of `channel()`: `Clone` for more producers, on any
/// CPU. Not `Sync` (a sender's state is its own): clone it per thread.
pub struct Sender<T> {
    inner: SenderInner<T>,
}

/// The sending half of `sync_channel(bound)`.
pub struct SyncSender<T> {
    inner: SenderInner<T>,
}

struct SenderInner<T> {
    shared: *const Shared<T>,
    /// This sender's share of the weight (see the module docs).
    weight: Cell<u64>,
    /// The lane of this sender's last value (null: no value yet) and its
    /// CPU; a value sent from another CPU carries a mark for that lane.
    lane: Cell<*mut Lane<T>>,
    lane_cpu: Cell<usize>,
    /// `lane_cpu` if `send` may take its short path there (an unbounded
    /// channel), else `usize::MAX`.
    fast_cpu: Cell<usize>,
    /// The receiver's wait (thread, epoch) this sender last woke.
    last_woken: Cell<Option<(u64, u64)>>,
}

/// The receiving half; one per channel. Not `Sync`, like std's.
pub struct Receiver<T> {
    shared: *const Shared<T>,
    /// The lane to look at first: the one read last, until its head
    /// segment is read up; then the receiver looks at the next lane first,
    /// so a busy lane cannot hold back the others for more than `SEGMENT`
    /// values in a row.
    next_lane: Cell<usize>,
    /// `next_lane`'s lane if `pop` may take its short path there (it
    /// exists and the channel is unbounded), else null.
    lane: Cell<*mut Lane<T>>,
}

// SAFETY: each end's state is used by one thread at a time (they are not
// `Sync`); values are `Send`.
unsafe impl<T: Send> Send for Sender<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SyncSender<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Receiver<T> {}

/// The receiver is gone; the value comes back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// Every sender is gone and every value was received.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RecvError;

/// Why `try_recv` returned nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// Nothing yet.
    Empty,
    /// Every sender is gone and every value was received.
    Disconnected,
}

/// Why `recv_timeout` returned nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    Timeout,
    /// Every sender is gone and every value was received.
    Disconnected,
}

/// Why `try_send` gave the value back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The sending CPU's lane is full (see the module docs on bounds).
    Full(T),
    /// The receiver is gone.
    Disconnected(T),
}

impl<T> core::fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> core::fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("sending on a closed channel")
    }
}

impl<T> core::error::Error for SendError<T> {}

impl<T> core::fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> core::fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full(_) => f.write_str("sending on a full channel"),
            Self::Disconnected(_) => f.write_str("sending on a closed channel"),
        }
    }
}

impl<T> core::error::Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(error: SendError<T>) -> Self {
        Self::Disconnected(error.0)
    }
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("receiving on a closed channel")
    }
}

impl core::error::Error for RecvError {}

impl core::fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty channel"),
            Self::Disconnected => f.write_str("receiving on an empty and disconnected channel"),
        }
    }
}

impl core::error::Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}

impl core::fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting on channel"),
            Self::Disconnected => f.write_str("channel is empty and sending half is closed"),
        }
    }
}

impl core::error::Error for RecvTimeoutError {}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}

fn new_shared<T>(bound: Option<usize>) -> *const Shared<T> {
    Box::into_raw(Box::new(Shared::<T> {
        header: SharedHeader {
            home: percpu::current_index(),
            bound,
            lanes: (0..messages::count().max(1)).map(|_| AtomicPtr::new(core::ptr::null_mut())).collect(),
            waiter: WaiterSlot::new(),
            senders_gone: AtomicBool::new(false),
            receiver_gone: AtomicBool::new(false),
            weight_out: UnsafeCell::new(WeightLedger::new()),
            receiver_reported: UnsafeCell::new(false),
        },
        _values: PhantomData,
    }))
}

fn ends<T>(shared: *const Shared<T>) -> (SenderInner<T>, Receiver<T>) {
    (
        SenderInner {
            shared,
            weight: Cell::new(FULL_WEIGHT),
            lane: Cell::new(core::ptr::null_mut()),
            lane_cpu: Cell::new(usize::MAX),
            fast_cpu: Cell::new(usize::MAX),
            last_woken: Cell::new(None),
        },
        Receiver { shared, next_lane: Cell::new(0), lane: Cell::new(core::ptr::null_mut()) },
    )
}

/// A new unbounded channel, kept by the calling CPU (see the module docs).
pub fn channel<T: Send>() -> (Sender<T>, Receiver<T>) {
    let (inner, receiver) = ends(new_shared::<T>(None));
    (Sender { inner }, receiver)
}

/// A new bounded channel: each sending CPU's lane holds up to `bound`
/// values (0: every send waits for its value to be received).
pub fn sync_channel<T: Send>(bound: usize) -> (SyncSender<T>, Receiver<T>) {
    let (inner, receiver) = ends(new_shared::<T>(Some(bound)));
    (SyncSender { inner }, receiver)
}

impl<T> Sender<T> {
    /// Sends `value` (never waits); fails only if the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.inner.send(value, true).map_err(|error| match error {
            TrySendError::Full(value) | TrySendError::Disconnected(value) => SendError(value),
        })
    }
}

impl<T> SyncSender<T> {
    /// Sends `value`, waiting while this CPU's lane is full (and, for a
    /// rendezvous channel, until the value is received).
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.inner.send(value, true).map_err(|error| match error {
            TrySendError::Full(value) | TrySendError::Disconnected(value) => SendError(value),
        })
    }

    /// Sends `value` if this CPU's lane has room now (a rendezvous channel
    /// has room when the receiver has taken every earlier value).
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.inner.send(value, false)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.split() }
    }
}

impl<T> Clone for SyncSender<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.split() }
    }
}

impl<T> core::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sender { .. }")
    }
}

impl<T> core::fmt::Debug for SyncSender<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SyncSender { .. }")
    }
}

impl<T> core::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Receiver { .. }")
    }
}

impl<T> SenderInner<T> {
    #[inline(always)]
    fn header(&self) -> &SharedHeader {
        // SAFETY: the channel lives until every sender returned its weight.
        unsafe { &(*self.shared).header }
    }

    /// This CPU's lane, made at its first send here.
    #[inline(always)]
    fn lane(&self, cpu: usize) -> *mut Lane<T> {
        let slot = &self.header().lanes[cpu];
        let lane = slot.load(Ordering::Relaxed) as *mut Lane<T>;
        if !lane.is_null() {
            return lane;
        }
        let segment = Segment::<T>::new();
        let lane = Box::into_raw(Box::new(Lane {
            header: LaneHeader {
                written: Padded(AtomicU64::new(0)),
                taken: Padded(AtomicU64::new(0)),
                counts: Padded(UnsafeCell::new(ReceiverCounts { seen_written: 0, ready: 0 })),
                room_waiter: WaiterSlot::new(),
                room_waiter_busy: UnsafeCell::new(false),
                room_queue: UnsafeCell::new(VecDeque::new()),
            },
            tail: Padded(UnsafeCell::new(segment)),
            tail_index: UnsafeCell::new(0),
            head: Padded(UnsafeCell::new(segment)),
            head_index: UnsafeCell::new(0),
            spares: Padded([const { AtomicPtr::new(core::ptr::null_mut()) }; SPARES]),
        }));
        // Only this CPU writes its lane pointer, and nothing interleaves
        // with this code on it (cooperative scheduling).
        slot.store(lane as *mut LaneHeader, Ordering::Release);
        lane
    }

    /// Sends `value`. The common case is kept short (it runs once per
    /// value): an unbounded channel, the same CPU as the last value, room
    /// in the lane's tail segment. Everything else is `send_slow`.
    #[inline(never)]
    fn send(&self, value: T, wait: bool) -> Result<(), TrySendError<T>> {
        if percpu::current_index() == self.fast_cpu.get() && !self.header().receiver_gone.load(Ordering::Acquire) {
            let lane = self.lane.get();
            // SAFETY: this CPU alone writes its lane's tail; the lane lives
            // as long as the channel.
            let index = unsafe { *(*lane).tail_index.get() };
            if index < SEGMENT {
                // SAFETY: as above; the same lane as the last value: no mark.
                unsafe { self.publish(lane, index, value, 0) };
                return Ok(());
            }
        }
        self.send_slow(value, wait)
    }

    /// Writes `value` with `mark` into slot `index` (< `SEGMENT`) of the
    /// lane's tail segment, publishes it and wakes the receiver if it
    /// waits; the lane's count after it.
    ///
    /// # Safety
    /// On the lane's CPU (which alone writes it; nothing interleaves with
    /// this code on it); slot `index` is the tail's next free one.
    #[inline(always)]
    unsafe fn publish(&self, lane: *mut Lane<T>, index: usize, value: T, mark: u64) -> u64 {
        // SAFETY: the caller's promise: the slot is not published yet.
        let written = unsafe {
            let tail = *(*lane).tail.get();
            (*(*tail).slots[index].get()).write(value);
            if mark != 0 {
                Segment::set_mark(tail, index, mark);
            }
            *(*lane).tail_index.get() = index + 1;
            let counter = &(*lane).header.written;
            let written = counter.load(Ordering::Relaxed) + 1;
            counter.store(written, Ordering::Release);
            written
        };
        wake_receiver(self.header(), &self.last_woken);
        written
    }

    /// `send` for the rest: the receiver gone, a first value from this CPU
    /// (its lane is made if need be, and the value marked for the lane of
    /// the sender's last one), a full tail segment (a new one is linked), a
    /// bounded channel (wait for room, and for a rendezvous, for the
    /// receiver).
    #[cold]
    #[inline(never)]
    fn send_slow(&self, value: T, wait: bool) -> Result<(), TrySendError<T>> {
        let header = self.header();
        if header.receiver_gone.load(Ordering::Acquire) {
            return Err(TrySendError::Disconnected(value));
        }
        let cpu = percpu::current_index();
        let lane = self.lane(cpu);
        // SAFETY: lanes live as long as the channel.
        let lane_header = unsafe { &(*lane).header };
        if let Some(bound) = header.bound {
            let room = |header: &SharedHeader| {
                let written = lane_header.written.load(Ordering::Relaxed);
                header.receiver_gone.load(Ordering::Acquire)
                    || written - lane_header.taken.load(Ordering::Acquire) < bound.max(1) as u64
            };
            if !room(header) {
                if !wait {
                    return Err(TrySendError::Full(value));
                }
                wait_for_room(lane_header, || room(header));
            }
            if header.receiver_gone.load(Ordering::Acquire) {
                return Err(TrySendError::Disconnected(value));
            }
            // Threads never move while blocked: the lane is still this CPU's.
        }
        // A first value here: it goes after every value the last lane holds
        // now (at least this sender's own there; all written before this
        // one, so marks never cycle).
        let last = self.lane.get();
        let mark = if last.is_null() || last == lane {
            0
        } else {
            // SAFETY: lanes live as long as the channel.
            let count = unsafe { (*last).header.written.load(Ordering::Acquire) };
            encode_mark(Some((self.lane_cpu.get(), count)), cpu)
        };
        // SAFETY: this CPU alone writes its lane, and nothing interleaves
        // with this code on it.
        let written = unsafe {
            let tail = &mut *(*lane).tail.get();
            let index = &mut *(*lane).tail_index.get();
            if *index == SEGMENT {
                let next = (*lane).fresh_segment();
                // The receiver follows `next` only after seeing a count
                // past this segment (published in `publish`, `Release`).
                (**tail).next.store(next, Ordering::Relaxed);
                *tail = next;
                *index = 0;
            }
            self.publish(lane, *index, value, mark)
        };
        self.lane.set(lane);
        self.lane_cpu.set(cpu);
        self.fast_cpu.set(if header.bound.is_none() { cpu } else { usize::MAX });
        if header.bound == Some(0) && wait {
            // A rendezvous: wait until the receiver took this value.
            wait_for_room(lane_header, || {
                header.receiver_gone.load(Ordering::Acquire) || lane_header.taken.load(Ordering::Acquire) >= written
            });
        }
        Ok(())
    }

    /// A new sender with half of this one's weight (more from the home CPU
    /// first if this one has only 1).
    fn split(&self) -> Self {
        let mut weight = self.weight.get();
        if split_weight(weight).is_none() {
            let request = WeightRequest {
                thread: scheduler::current(),
                epoch: scheduler::begin_wait(),
                done: AtomicBool::new(false),
            };
            let header = self.header() as *const SharedHeader;
            // SAFETY: the channel lives (we hold weight) and the request
            // lives until `done` (we wait for it).
            unsafe { on_home(self.header().home, (header, &raw const request), more_weight_job, "channel") };
            while !request.done.load(Ordering::Acquire) {
                scheduler::block();
            }
            weight += FULL_WEIGHT;
        }
        let (kept, given) = split_weight(weight).expect("topped up");
        self.weight.set(kept);
        Self {
            shared: self.shared,
            weight: Cell::new(given),
            lane: Cell::new(self.lane.get()),
            lane_cpu: Cell::new(self.lane_cpu.get()),
            fast_cpu: Cell::new(self.fast_cpu.get()),
            last_woken: Cell::new(None),
        }
    }
}

/// A sender waiting for the home CPU to hand out more weight.
struct WeightRequest {
    thread: *mut scheduler::Control,
    epoch: u64,
    done: AtomicBool,
}

unsafe fn more_weight_job((header, request): (*const SharedHeader, *const WeightRequest)) {
    // SAFETY: home CPU only; the channel lives (the requester still holds
    // weight) and the request lives until `done`.
    unsafe {
        (*(*header).weight_out.get()).top_up();
        let (thread, epoch) = ((*request).thread, (*request).epoch);
        (*request).done.store(true, Ordering::Release);
        scheduler::wake(thread, epoch);
    }
}

/// Waits (blocking this thread) until `room()`: the first waiting thread of
/// this CPU publishes itself in the lane's slot for the receiver; the
/// others queue behind it on this CPU and are woken one by one.
#[inline(never)]
fn wait_for_room(lane: &LaneHeader, room: impl Fn() -> bool) {
    let me = scheduler::current() as u64;
    loop {
        if room() {
            return;
        }
        let epoch = scheduler::begin_wait();
        // SAFETY: this CPU's own fields of its lane; nothing interleaves.
        let busy = unsafe { &mut *lane.room_waiter_busy.get() };
        if *busy {
            // SAFETY: as above.
            unsafe { (*lane.room_queue.get()).push_back((me, epoch)) };
            scheduler::block();
            continue;
        }
        *busy = true;
        lane.room_waiter.publish(me, epoch, full_fence);
        if !room() {
            scheduler::block();
        }
        lane.room_waiter.clear();
        // SAFETY: as above (re-borrowed after the switch).
        unsafe {
            *lane.room_waiter_busy.get() = false;
            if let Some((thread, epoch)) = (*lane.room_queue.get()).pop_front() {
                scheduler::wake(thread as *mut scheduler::Control, epoch);
            }
        }
    }
}

/// Wakes the receiver if it waits, once per wait: a burst of sends to a
/// blocked receiver sends one wake-up, not one per value. Inlined in
/// `send` (a call and return per value cost a lot under emulation).
#[inline(always)]
fn wake_receiver(header: &SharedHeader, last_woken: &Cell<Option<(u64, u64)>>) {
    if let Some(waiter) = header.waiter.waiter(full_fence) {
        let this_wait = Some((waiter.thread, waiter.epoch));
        if last_woken.get() != this_wait {
            last_woken.set(this_wait);
            scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
        }
    }
}

impl<T> Drop for SenderInner<T> {
    fn drop(&mut self) {
        // The last use of the channel by this sender: its weight goes home.
        // SAFETY: the channel lives until its home has every sender's
        // weight and the receiver's report; this is our last use of it.
        unsafe { on_home(self.header().home, (self.shared, self.weight.get()), weight_back_job::<T>, "channel") };
    }
}

/// Home CPU: a sender's weight came back; the last one tells the receiver.
unsafe fn weight_back_job<T>((shared, weight): (*const Shared<T>, u64)) {
    // SAFETY: home CPU only; the channel lives until both the weight and
    // the receiver's report are in.
    unsafe {
        let header = &(*shared).header;
        if !(*header.weight_out.get()).give_back(weight) {
            return;
        }
        header.senders_gone.store(true, Ordering::Release);
        if let Some(waiter) = header.waiter.waiter(full_fence) {
            scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
        }
        if *header.receiver_reported.get() {
            free::<T>(shared as *mut Shared<T>);
        }
    }
}

/// Home CPU: the receiver is gone.
unsafe fn receiver_gone_job<T>(shared: *const Shared<T>) {
    // SAFETY: home CPU only; see `weight_back_job`.
    unsafe {
        let header = &(*shared).header;
        *header.receiver_reported.get() = true;
        if (*header.weight_out.get()).all_returned() {
            free::<T>(shared as *mut Shared<T>);
        }
    }
}

/// Home CPU, both ends gone: drops what was never received and frees the
/// lanes and the channel.
///
/// # Safety
/// Home CPU; every sender and the receiver have reported.
unsafe fn free<T>(shared: *mut Shared<T>) {
    // SAFETY: nothing else refers to the channel any more; the receiver's
    // positions and the lanes' counts were published before the reports
    // (release through the rings).
    unsafe {
        for lane in (*shared).header.lanes.iter() {
            let lane = lane.load(Ordering::Acquire) as *mut Lane<T>;
            if lane.is_null() {
                continue;
            }
            let written = (*lane).header.written.load(Ordering::Acquire);
            let mut taken = (*lane).header.taken_here();
            let mut segment = *(*lane).head.get();
            let mut index = *(*lane).head_index.get();
            while taken < written {
                if index == SEGMENT {
                    let next = (*segment).next.load(Ordering::Acquire);
                    Segment::free(segment);
                    segment = next;
                    index = 0;
                }
                (*(*segment).slots[index].get()).assume_init_drop();
                index += 1;
                taken += 1;
            }
            while !segment.is_null() {
                let next = (*segment).next.load(Ordering::Acquire);
                Segment::free(segment);
                segment = next;
            }
            for slot in (*lane).spares.iter() {
                let spare = slot.load(Ordering::Acquire);
                if !spare.is_null() {
                    Segment::free(spare);
                }
            }
            drop(Box::from_raw(lane));
        }
        drop(Box::from_raw(shared));
    }
}

impl<T> Receiver<T> {
    #[inline(always)]
    fn header(&self) -> &SharedHeader {
        // SAFETY: the channel lives until the receiver reported its drop.
        unsafe { &(*self.shared).header }
    }

    /// Takes the next value if one is there, honouring marks (see the
    /// module docs and `toro_core::channel::lane_to_take`). The common case
    /// is kept short (it runs once per value): an unbounded channel whose
    /// lane read last has an unmarked value in its head segment.
    /// Everything else is `pop_slow`.
    #[inline(never)]
    fn pop(&self) -> Option<T> {
        let lane = self.lane.get();
        if !lane.is_null() {
            // SAFETY: lanes live as long as the channel; the receiver alone
            // reads them and writes `head_index` and its counts; the slot
            // is below `written` (acquired in `has_value`) and read once.
            unsafe {
                let index = *(*lane).head_index.get();
                if index < SEGMENT && (*lane).header.has_value() {
                    let head = *(*lane).head.get();
                    if Segment::mark(head, index) == 0 {
                        *(*lane).head_index.get() = index + 1;
                        (*lane).header.count_taken();
                        return Some((*(*head).slots[index].get()).assume_init_read());
                    }
                }
            }
        }
        self.pop_slow()
    }

    /// `pop` when the lane read last is empty, read up to the end of its
    /// head segment (then the next lane comes first), its value is marked,
    /// or the channel is bounded: look at every lane and follow marks.
    #[cold]
    #[inline(never)]
    fn pop_slow(&self) -> Option<T> {
        let header = self.header();
        let lanes = &header.lanes;
        let view = LaneView::<T> { lanes, _values: PhantomData };
        let mut start = self.next_lane.get();
        let lane = view.lane(start);
        // SAFETY: receiver only.
        if !lane.is_null() && unsafe { *(*lane).head_index.get() } == SEGMENT {
            start = (start + 1) % lanes.len();
        }
        let cpu = lane_to_take(&view, start)?;
        let lane = view.lane(cpu);
        self.next_lane.set(cpu);
        self.lane.set(if header.bound.is_none() { lane } else { core::ptr::null_mut() });
        // SAFETY: the chosen lane has a value below `written` (acquired in
        // `has_value`); receiver only.
        unsafe {
            let (segment, index) = Self::front(lane);
            *(*lane).head_index.get() += 1;
            (*lane).header.count_taken();
            let value = (*(*segment).slots[index].get()).assume_init_read();
            if header.bound.is_some() {
                // The lane's senders wait for room.
                (*lane).header.taken.store((*lane).header.taken_here(), Ordering::Release);
                if let Some(waiter) = (*lane).header.room_waiter.waiter(full_fence) {
                    scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
                }
            }
            Some(value)
        }
    }

    /// The lane's next unread slot, as its segment and index (moving to
    /// the next segment, and retiring the one read up, if needed).
    ///
    /// # Safety
    /// Receiver only; the lane has a value (`written > taken`, acquired).
    #[inline(always)]
    unsafe fn front(lane: *mut Lane<T>) -> (*mut Segment<T>, usize) {
        // SAFETY: the caller's promise: the segments up to the value are
        // linked (the sender stored `next` before publishing the count).
        unsafe {
            let head = &mut *(*lane).head.get();
            let index = &mut *(*lane).head_index.get();
            if *index == SEGMENT {
                let next = (**head).next.load(Ordering::Acquire);
                (*lane).retire(*head);
                *head = next;
                *index = 0;
            }
            (*head, *index)
        }
    }

    /// A value if one is there.
    #[inline(always)]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if let Some(value) = self.pop() {
            return Ok(value);
        }
        if self.header().senders_gone.load(Ordering::Acquire) {
            // Values sent before the last sender left are visible now.
            return self.pop().ok_or(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    /// Waits for a value (blocking this thread, not the CPU). Inlined into
    /// the caller (a call and return per value cost a lot under
    /// emulation); its cross-CPU parts stay out of line (`receive`).
    #[inline(always)]
    pub fn recv(&self) -> Result<T, RecvError> {
        #[cfg(feature = "lockcheck-mutation-3")]
        crate::lockcheck_mutation::plant();
        if let Some(value) = self.pop() {
            return Ok(value);
        }
        self.receive(None).map_err(|_| RecvError)
    }

    /// Waits for a value for up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout).map_or(u64::MAX, Instant::ticks);
        self.receive(Some(deadline))
    }

    /// Waits for a value until TSC value `deadline`, if given (out of line:
    /// `recv` calls it only when it found nothing).
    #[inline(never)]
    fn receive(&self, deadline: Option<u64>) -> Result<T, RecvTimeoutError> {
        loop {
            match self.try_recv() {
                Ok(value) => return Ok(value),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if deadline.is_some_and(|deadline| Instant::now().ticks() >= deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
            // Nothing else to run here: poll a little before blocking (a
            // value is often on its way; blocking and waking cost far more).
            if scheduler::nothing_else_ready() && poll(&[self.header()], RECEIVE_SPIN_TICKS).is_some() {
                continue;
            }
            wait_ready(&[self.header()], deadline);
        }
    }

    /// Values as they come, until every sender is gone.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }

    /// The values there now, without waiting.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { receiver: self }
    }
}

/// The receiver's view of its lanes for `lane_to_take`.
struct LaneView<'a, T> {
    lanes: &'a [AtomicPtr<LaneHeader>],
    _values: PhantomData<T>,
}

impl<T> LaneView<'_, T> {
    #[inline(always)]
    fn lane(&self, cpu: usize) -> *mut Lane<T> {
        self.lanes[cpu].load(Ordering::Acquire) as *mut Lane<T>
    }
}

impl<T> Lanes for LaneView<'_, T> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.lanes.len()
    }

    #[inline(always)]
    fn has_value(&self, lane: usize) -> bool {
        let lane = self.lanes[lane].load(Ordering::Acquire);
        // SAFETY: lanes live as long as the channel; `taken` is the
        // receiver's own counter.
        !lane.is_null() && unsafe { (*lane).has_value() }
    }

    #[inline(always)]
    fn front_mark(&self, lane: usize) -> u64 {
        // SAFETY: asked only for a lane with a value (acquired in
        // `has_value`); receiver only.
        unsafe {
            let (segment, index) = Receiver::<T>::front(self.lane(lane));
            Segment::mark(segment, index)
        }
    }

    #[inline(always)]
    fn taken(&self, lane: usize) -> u64 {
        let lane = self.lanes[lane].load(Ordering::Acquire);
        if lane.is_null() {
            0
        } else {
            // SAFETY: as in `has_value`.
            unsafe { (*lane).taken_here() }
        }
    }
}

/// Polls `headers` for up to `ticks` TSC ticks, serving this CPU's
/// messages meanwhile; the index of one that is ready.
fn poll(headers: &[&SharedHeader], ticks: u64) -> Option<usize> {
    let start = Instant::now().ticks();
    while Instant::now().ticks() - start < ticks {
        if let Some(index) = headers.iter().position(|header| header.ready()) {
            return Some(index);
        }
        // Keep serving messages: other CPUs may be waiting for this one.
        messages::poll_turn();
    }
    None
}

/// Blocks the current thread until one of `headers` may be ready (or TSC
/// `deadline` passes): it publishes itself in each, fences, re-checks, and
/// blocks (`toro_core::wake`).
#[inline(never)]
fn wait_ready(headers: &[&SharedHeader], deadline: Option<u64>) {
    let me = scheduler::current() as u64;
    let epoch = scheduler::begin_wait();
    for header in headers {
        header.waiter.publish(me, epoch, full_fence);
    }
    if !headers.iter().any(|header| header.ready()) {
        match deadline {
            Some(deadline) => scheduler::block_until(epoch, deadline),
            None => scheduler::block(),
        }
    }
    for header in headers {
        header.waiter.clear();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let header = self.header();
        header.receiver_gone.store(true, Ordering::Release);
        // Senders waiting for room learn it now.
        for lane in header.lanes.iter() {
            let lane = lane.load(Ordering::Acquire);
            // SAFETY: lanes live as long as the channel.
            if let Some(waiter) = (!lane.is_null()).then(|| unsafe { (*lane).room_waiter.waiter(full_fence) }).flatten()
            {
                scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
            }
        }
        // The receiver's positions are in the lanes; the report (release
        // through the ring) is its last use of the channel.
        // SAFETY: as for a sender's weight (`SenderInner::drop`).
        unsafe { on_home(header.home, self.shared, receiver_gone_job::<T>, "channel") };
    }
}

/// `Receiver::iter`: waits for each value; ends when every sender is gone.
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
}

/// `Receiver::try_iter`: the values there now.
pub struct TryIter<'a, T> {
    receiver: &'a Receiver<T>,
}

/// `Receiver::into_iter`: like `Iter`, owning the receiver.
pub struct IntoIter<T> {
    receiver: Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.try_recv().ok()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { receiver: self }
    }
}

/// Waits on several receivers at once (std has no such type; this one is
/// shaped like `crossbeam_channel::Select`, receive side only).
///
/// ```ignore
/// let mut select = Select::new();
/// let first = select.recv(&numbers);
/// let second = select.recv(&words);
/// match select.ready() {
///     index if index == first => println!("{:?}", numbers.try_recv()),
///     _ => println!("{:?}", words.try_recv()),
/// }
/// ```
///
/// `ready` returns the index of a receiver that has a value or whose
/// senders are all gone (so its `try_recv` does not say `Empty`), blocking
/// the thread until there is one. It publishes the thread in every
/// receiver's waiter slot, so a value sent to any of them wakes it.
#[derive(Default)]
pub struct Select<'a> {
    headers: Vec<&'a SharedHeader>,
}

/// `Select::try_ready` found no receiver ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryReadyError;

/// `Select::ready_timeout` found no receiver ready in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyTimeoutError;

impl core::fmt::Display for TryReadyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no operation is ready")
    }
}

impl core::error::Error for TryReadyError {}

impl core::fmt::Display for ReadyTimeoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("timed out waiting for an operation to become ready")
    }
}

impl core::error::Error for ReadyTimeoutError {}

impl<'a> Select<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `receiver`; returns its index.
    pub fn recv<T>(&mut self, receiver: &'a Receiver<T>) -> usize {
        self.headers.push(receiver.header());
        self.headers.len() - 1
    }

    /// The index of a ready receiver, if one is ready now.
    pub fn try_ready(&mut self) -> Result<usize, TryReadyError> {
        self.headers.iter().position(|header| header.ready()).ok_or(TryReadyError)
    }

    /// Waits for a ready receiver; its index.
    pub fn ready(&mut self) -> usize {
        loop {
            if let Ok(index) = self.ready_until(None) {
                return index;
            }
        }
    }

    /// Waits up to `timeout` for a ready receiver.
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, ReadyTimeoutError> {
        let deadline = Instant::now().checked_add(timeout).map_or(u64::MAX, Instant::ticks);
        self.ready_until(Some(deadline))
    }

    #[inline(never)]
    fn ready_until(&mut self, deadline: Option<u64>) -> Result<usize, ReadyTimeoutError> {
        loop {
            if let Ok(index) = self.try_ready() {
                return Ok(index);
            }
            if deadline.is_some_and(|deadline| Instant::now().ticks() >= deadline) {
                return Err(ReadyTimeoutError);
            }
            if scheduler::nothing_else_ready() {
                if let Some(index) = poll(&self.headers, RECEIVE_SPIN_TICKS) {
                    return Ok(index);
                }
            }
            wait_ready(&self.headers, deadline);
        }
    }
}
