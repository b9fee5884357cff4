//! `channel()`: one sender, one receiver, unbounded, across CPUs.
//!
//! Values live in segments of `SEGMENT` slots linked in a list: the sender
//! fills the tail segment and publishes how many slots are written
//! (release); the receiver reads up to that count (acquire) and frees a
//! segment once past it. A value moves into its slot and out again: a
//! `Box` or `Vec` payload is never copied, only its pointer.
//!
//! The shared part is freed when both ends are gone. Deciding "the other
//! end is gone too" takes one read-modify-write between two CPUs, which
//! Toro avoids: instead both ends report their drop to the channel's home
//! CPU (where it was made) by message, and that CPU, counting alone,
//! frees it.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use toro_core::wake::WaiterSlot;

use crate::arch::percpu;
use crate::cpu::{self as messages, full_fence, Job};
use crate::thread::scheduler;

/// Values per segment.
const SEGMENT: usize = 32;
/// How long `recv` polls before blocking when its CPU has nothing else to
/// run (about 10-20 us at 2-3 GHz).
const RECEIVE_SPIN_TICKS: u64 = 40_000;

struct Segment<T> {
    slots: [UnsafeCell<MaybeUninit<T>>; SEGMENT],
    /// Slots written, published by the sender.
    written: AtomicUsize,
    next: AtomicPtr<Segment<T>>,
}

impl<T> Segment<T> {
    fn new() -> *mut Self {
        Box::into_raw(Box::new(Self {
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; SEGMENT],
            written: AtomicUsize::new(0),
            next: AtomicPtr::new(core::ptr::null_mut()),
        }))
    }
}

struct Shared<T> {
    /// The CPU that frees this (see the module docs).
    home: usize,
    /// Home CPU only: ends dropped so far.
    dropped: UnsafeCell<u8>,
    sender_gone: AtomicBool,
    receiver_gone: AtomicBool,
    /// The receiver (its control block) and its wait's epoch while it
    /// waits (`toro_core::wake`: it publishes, the sender reads).
    waiter: WaiterSlot,
    /// Where the receiver stopped (written by it before it reports its
    /// drop), for the final clean-up.
    receiver_segment: UnsafeCell<*mut Segment<T>>,
    receiver_index: UnsafeCell<usize>,
}

/// The sending end. Moving it to another thread or CPU is fine; there is
/// one per channel.
pub struct Sender<T> {
    shared: *mut Shared<T>,
    tail: *mut Segment<T>,
    index: usize,
    /// The receiver's wait (thread, epoch) this sender last woke.
    last_woken: Option<(u64, u64)>,
}

/// The receiving end; one per channel.
pub struct Receiver<T> {
    shared: *mut Shared<T>,
    head: *mut Segment<T>,
    index: usize,
}

// SAFETY: each end is used by one thread at a time; values are `Send`.
unsafe impl<T: Send> Send for Sender<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Receiver<T> {}

/// The receiver is gone; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// The sender is gone and every value was received.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RecvError;

/// Why `try_recv` returned nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// Nothing yet.
    Empty,
    /// The sender is gone and every value was received.
    Disconnected,
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the sender is gone and the channel is empty")
    }
}

/// A new channel, homed on the calling CPU.
pub fn channel<T: Send>() -> (Sender<T>, Receiver<T>) {
    let segment = Segment::<T>::new();
    let shared = Box::into_raw(Box::new(Shared {
        home: percpu::current_index(),
        dropped: UnsafeCell::new(0),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
        waiter: WaiterSlot::new(),
        receiver_segment: UnsafeCell::new(core::ptr::null_mut()),
        receiver_index: UnsafeCell::new(0),
    }));
    (Sender { shared, tail: segment, index: 0, last_woken: None }, Receiver { shared, head: segment, index: 0 })
}

impl<T> Sender<T> {
    /// Sends `value`; fails only if the receiver is gone.
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        // SAFETY: `shared` lives until both ends reported their drop.
        let shared = unsafe { &*self.shared };
        if shared.receiver_gone.load(Ordering::Acquire) {
            return Err(SendError(value));
        }
        if self.index == SEGMENT {
            let next = Segment::new();
            // SAFETY: the tail segment is ours to link; the receiver frees
            // it only after seeing `next`.
            unsafe { (*self.tail).next.store(next, Ordering::Release) };
            self.tail = next;
            self.index = 0;
        }
        // SAFETY: slot `index` of the tail is not yet published, so only we
        // touch it.
        unsafe {
            (*(*self.tail).slots[self.index].get()).write(value);
            self.index += 1;
            (*self.tail).written.store(self.index, Ordering::Release);
        }
        wake_receiver(shared, &mut self.last_woken);
        Ok(())
    }
}

/// Wakes the receiver if it waits, once per wait: a burst of sends to a
/// blocked receiver sends one wake-up, not one per value.
#[inline(never)]
fn wake_receiver<T>(shared: &Shared<T>, last_woken: &mut Option<(u64, u64)>) {
    if let Some(waiter) = shared.waiter.waiter(full_fence) {
        let this_wait = Some((waiter.thread, waiter.epoch));
        if *last_woken != this_wait {
            *last_woken = this_wait;
            scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
        }
    }
}

impl<T> Receiver<T> {
    /// A value if one is there.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if let Some(value) = self.pop() {
            return Ok(value);
        }
        // SAFETY: `shared` lives until both ends reported their drop.
        if unsafe { &*self.shared }.sender_gone.load(Ordering::Acquire) {
            // Values sent before the sender left are visible now.
            return self.pop().ok_or(TryRecvError::Disconnected);
        }
        Err(TryRecvError::Empty)
    }

    /// Waits for a value (blocking this thread, not the CPU).
    pub fn recv(&mut self) -> Result<T, RecvError> {
        loop {
            match self.try_recv() {
                Ok(value) => return Ok(value),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => {}
            }
            // Nothing else to run here: poll a little before blocking (a
            // value is often on its way; blocking and waking cost far more).
            if scheduler::nothing_else_ready() && self.poll(RECEIVE_SPIN_TICKS) {
                continue;
            }
            // SAFETY: as above.
            let shared = unsafe { &*self.shared };
            let epoch = scheduler::begin_wait();
            shared.waiter.publish(scheduler::current() as u64, epoch, full_fence);
            if self.has_value() || shared.sender_gone.load(Ordering::Acquire) {
                shared.waiter.clear();
                continue;
            }
            scheduler::block();
            shared.waiter.clear();
        }
    }

    /// Polls for a value (or a gone sender) for up to `ticks` TSC ticks.
    fn poll(&self, ticks: u64) -> bool {
        let start = crate::time::Instant::now().ticks();
        while crate::time::Instant::now().ticks() - start < ticks {
            // SAFETY: as in `recv`.
            if self.has_value() || unsafe { &*self.shared }.sender_gone.load(Ordering::Acquire) {
                return true;
            }
            // Keep serving messages: other CPUs may be waiting for this one.
            if messages::run_incoming() == 0 {
                core::hint::spin_loop();
            }
        }
        false
    }

    fn has_value(&self) -> bool {
        // SAFETY: segments stay until we free them.
        unsafe {
            self.index < (*self.head).written.load(Ordering::Acquire)
                || (self.index == SEGMENT && !(*self.head).next.load(Ordering::Acquire).is_null())
        }
    }

    fn pop(&mut self) -> Option<T> {
        // SAFETY: the head segment is ours; slots below `written` were
        // published by the sender (acquire) and are read once.
        unsafe {
            if self.index == SEGMENT {
                let next = (*self.head).next.load(Ordering::Acquire);
                if next.is_null() {
                    return None;
                }
                drop(Box::from_raw(self.head));
                self.head = next;
                self.index = 0;
            }
            if self.index < (*self.head).written.load(Ordering::Acquire) {
                let value = (*(*self.head).slots[self.index].get()).assume_init_read();
                self.index += 1;
                Some(value)
            } else {
                None
            }
        }
    }
}

impl<T> Iterator for Receiver<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.recv().ok()
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // SAFETY: alive until reported.
        let shared = unsafe { &*self.shared };
        shared.sender_gone.store(true, Ordering::Release);
        wake_receiver(shared, &mut None);
        report_drop::<T>(self.shared);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // SAFETY: alive until reported; the position is read by the home
        // CPU only after our report (release through the ring).
        unsafe {
            *(*self.shared).receiver_segment.get() = self.head;
            *(*self.shared).receiver_index.get() = self.index;
            (*self.shared).receiver_gone.store(true, Ordering::Release);
        }
        report_drop::<T>(self.shared);
    }
}

fn report_drop<T>(shared: *mut Shared<T>) {
    // SAFETY: alive until both reports arrived.
    let home = unsafe { (*shared).home };
    if home == percpu::current_index() {
        // SAFETY: job run directly on the home CPU.
        unsafe { dropped_job::<T>(shared as *mut u8, 0) };
    } else if messages::send(home, Job { run: dropped_job::<T>, data: shared as *mut u8, extra: 0 }).is_err() {
        // The home CPU is unreachable: leak the channel rather than free it
        // from the wrong CPU.
    }
}

unsafe fn dropped_job<T>(data: *mut u8, _: u64) {
    let shared = data as *mut Shared<T>;
    // SAFETY: runs on the home CPU, the only one to touch `dropped`.
    unsafe {
        *(*shared).dropped.get() += 1;
        if *(*shared).dropped.get() < 2 {
            return;
        }
        // Both ends are gone: drop what was never received, free segments.
        let mut segment = *(*shared).receiver_segment.get();
        let mut index = *(*shared).receiver_index.get();
        while !segment.is_null() {
            let written = (*segment).written.load(Ordering::Acquire);
            while index < written {
                (*(*segment).slots[index].get()).assume_init_drop();
                index += 1;
            }
            let next = (*segment).next.load(Ordering::Acquire);
            drop(Box::from_raw(segment));
            segment = next;
            index = 0;
        }
        drop(Box::from_raw(shared));
    }
}
