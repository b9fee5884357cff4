//! `Mutex` and `Condvar` with a home CPU (see the module docs of `sync`
//! and `docs/sync.md`).
//!
//! # Lifetimes of what messages point to
//!
//! A message to the home CPU may still be in flight when the `Mutex` or
//! `Condvar` it is about has been dropped and its memory reused. So no
//! message points into them: each keeps its home-side state in a block of
//! its own (`RawMutex`, `CondvarBlock`), allocated at first use and freed
//! only by the home CPU, and only once no message for it is in flight:
//!
//! - Messages that wait for an answer (lock, try-lock, wait, install)
//!   come from a thread that borrows the object until the home CPU answered;
//!   the answer is the last thing the home CPU does with the request.
//! - The only fire-and-forget message to a mutex is the unlock from another
//!   CPU, and at most one is in flight: the mutex stays locked at home until
//!   it arrives, so nobody can take it and send another. When the `Mutex`
//!   is dropped, its block is freed at once if it is unlocked at home, or
//!   by that one late unlock.
//! - Notifications are fire-and-forget and several may be in flight from
//!   several CPUs. Each CPU counts those it sent (a counter only it
//!   writes) and the home CPU counts those it ran, per CPU; the block is
//!   freed when the `Condvar` is gone and every count matches. No
//!   read-modify-write is shared between CPUs.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, Ordering};
use core::time::Duration;

use super::on_home;
use crate::arch::percpu;
use crate::thread::scheduler::{self, Control};
use crate::time::Instant;

/// A request not answered yet.
const PENDING: u8 = 0;
/// The lock is the requester's (or the install is done).
const GRANTED: u8 = 1;
/// A try-lock found the mutex held.
const REFUSED: u8 = 2;

/// A thread asking the home CPU for something; lives on its stack while
/// it waits for the answer.
struct Request {
    thread: *mut Control,
    epoch: u64,
    answer: AtomicU8,
    /// A timed condvar wait: the home CPU took it out of the condvar's
    /// queue at its timeout (not notified).
    timed_out: AtomicBool,
    /// A timed condvar wait: the home CPU has handled its cancellation.
    cancel_done: AtomicBool,
}

impl Request {
    fn for_current_thread() -> Self {
        Self {
            thread: scheduler::current(),
            epoch: scheduler::begin_wait(),
            answer: AtomicU8::new(PENDING),
            timed_out: AtomicBool::new(false),
            cancel_done: AtomicBool::new(false),
        }
    }

    /// Blocks until answered; returns the answer.
    fn wait(&self) -> u8 {
        loop {
            let answer = self.answer.load(Ordering::Acquire);
            if answer != PENDING {
                return answer;
            }
            scheduler::block();
        }
    }
}

/// Home CPU: answers `request` (its thread wakes with the answer).
fn answer(request: *const Request, answer: u8) {
    // SAFETY: the requester waits (on its stack) until answered; read its
    // fields before answering, after which the request may be gone.
    unsafe {
        let (thread, epoch) = ((*request).thread, (*request).epoch);
        (*request).answer.store(answer, Ordering::Release);
        scheduler::wake(thread, epoch);
    }
}

/// A mutex's home-side state (see the module docs): made at first use,
/// freed by the home CPU.
struct RawMutex {
    home: usize,
    /// Home CPU only.
    state: UnsafeCell<LockState>,
}

struct LockState {
    locked: bool,
    /// The `Mutex` is gone; free the block when it is unlocked.
    orphaned: bool,
    waiters: VecDeque<*const Request>,
}

impl RawMutex {
    fn new_block(home: usize) -> *mut RawMutex {
        Box::into_raw(Box::new(RawMutex {
            home,
            state: UnsafeCell::new(LockState { locked: false, orphaned: false, waiters: VecDeque::new() }),
        }))
    }

    /// Runs `run((self, argument))` on the home CPU: directly if we are
    /// there.
    ///
    /// # Safety
    /// As for `on_home`: the block and what `argument` points to outlive
    /// the message (docs/sync.md).
    #[inline(never)]
    unsafe fn on_home<A: Copy>(&self, argument: A, run: unsafe fn((*const RawMutex, A))) {
        // SAFETY: the caller's promise.
        unsafe { on_home(self.home, (self as *const Self, argument), run, "mutex") };
    }

    #[inline(never)]
    fn lock(&self) {
        if percpu::current_index() == self.home {
            // SAFETY: on the home CPU; cooperative scheduling means no
            // other thread runs between these statements.
            let state = unsafe { &mut *self.state.get() };
            if !state.locked {
                state.locked = true;
                return;
            }
        }
        let request = Request::for_current_thread();
        // SAFETY: the block outlives the lock; the request lives until
        // answered (we wait for it).
        unsafe { self.on_home(&raw const request, lock_job) };
        request.wait();
    }

    /// Takes the lock if it is free now; from another CPU this asks the
    /// home CPU and waits for its answer (not for the lock).
    #[inline(never)]
    fn try_lock(&self) -> bool {
        if percpu::current_index() == self.home {
            // SAFETY: as in `lock`.
            let state = unsafe { &mut *self.state.get() };
            let free = !state.locked;
            state.locked = true;
            return free;
        }
        let request = Request::for_current_thread();
        // SAFETY: as in `lock`.
        unsafe { self.on_home(&raw const request, try_lock_job) };
        request.wait() == GRANTED
    }

    /// Home CPU: gives the lock to `request` now or queues it.
    fn acquire_for(&self, request: *const Request) {
        // SAFETY: home CPU only.
        let state = unsafe { &mut *self.state.get() };
        if state.locked {
            state.waiters.push_back(request);
        } else {
            state.locked = true;
            answer(request, GRANTED);
        }
    }

    /// Home CPU: passes the lock to the next waiter, or frees it (and the
    /// block itself if its `Mutex` is gone). The last use of `this`.
    ///
    /// # Safety
    /// Home CPU, `this` live.
    unsafe fn release(this: *const RawMutex) {
        // SAFETY: home CPU only, live (the caller's promise).
        let state = unsafe { &mut *(*this).state.get() };
        match state.waiters.pop_front() {
            // Ownership passes straight to the next waiter (FIFO, no barging).
            Some(next) => answer(next, GRANTED),
            None => {
                state.locked = false;
                if state.orphaned {
                    // SAFETY: the `Mutex` is gone and this was the last
                    // message for it (see the module docs).
                    drop(unsafe { Box::from_raw(this as *mut RawMutex) });
                }
            }
        }
    }
}

unsafe fn lock_job((mutex, request): (*const RawMutex, *const Request)) {
    // SAFETY: run on the home CPU; the request lives until answered.
    unsafe { (*mutex).acquire_for(request) };
}

unsafe fn try_lock_job((mutex, request): (*const RawMutex, *const Request)) {
    // SAFETY: home CPU only; the request lives until answered.
    let state = unsafe { &mut *(*mutex).state.get() };
    if state.locked {
        answer(request, REFUSED);
    } else {
        state.locked = true;
        answer(request, GRANTED);
    }
}

unsafe fn unlock_job((mutex, ()): (*const RawMutex, ())) {
    // SAFETY: run on the home CPU; the block lives until this unlock (its
    // `Mutex` cannot be dropped while locked, and an orphaned block is
    // freed by this very release).
    unsafe { RawMutex::release(mutex) };
}

/// Home CPU: the `Mutex` is gone; free its block now, or at the unlock
/// still in flight.
unsafe fn mutex_free_job(block: *mut RawMutex) {
    // SAFETY: home CPU only; nothing else refers to the block but the one
    // unlock that may still be in flight (see the module docs).
    unsafe {
        let state = &mut *(*block).state.get();
        if state.locked {
            state.orphaned = true;
        } else {
            drop(Box::from_raw(block));
        }
    }
}

/// The home of a mutex made by `Mutex::new`: decided at first use.
const UNDECIDED: usize = usize::MAX;
/// The CPU that decides the home of a `Mutex::new` mutex at its first use
/// (the boot CPU, which every application has).
const ARBITER: usize = 0;

/// A request to make a mutex's block, sent to its home (or, for a home
/// decided at first use, to `ARBITER`).
struct Install {
    block: *const AtomicPtr<RawMutex>,
    home: usize,
    request: Request,
}

/// Makes the block if there is none yet; runs on the one CPU that installs
/// blocks for this mutex, so there is no race to lose.
unsafe fn install_job(install: *const Install) {
    // SAFETY: the requester waits for the answer, borrowing the mutex.
    unsafe {
        let slot = &*(*install).block;
        if slot.load(Ordering::Acquire).is_null() {
            slot.store(RawMutex::new_block((*install).home), Ordering::Release);
        }
        answer(&(*install).request, GRANTED);
    }
}

/// A mutual-exclusion lock usable from any CPU, with no locked
/// instruction. Its state is kept by its home CPU: the CPU of its first
/// use (`new`, `const`, usable in a `static`) or the one given to `new_on`.
///
/// No poisoning: a panic ends the whole VM (there is no unwinding), so no
/// thread ever sees a mutex a panicking thread left behind; `lock` returns
/// the guard itself and `try_lock` fails only with `WouldBlock`.
pub struct Mutex<T: ?Sized> {
    home: usize,
    /// The home-side state, made at first use (see the module docs).
    block: AtomicPtr<RawMutex>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, handed to one thread
// at a time by the home CPU; the state is touched only on the home CPU.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

/// Holds the lock; unlocks when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
}

// SAFETY: a guard gives `&T` to whoever holds it, like std's.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

/// Why `try_lock` gave no guard. Like std's, minus `Poisoned` (no
/// poisoning, see `Mutex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryLockError {
    /// The lock is held by another thread.
    WouldBlock,
}

impl core::fmt::Display for TryLockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("try_lock failed because the operation would block")
    }
}

impl core::error::Error for TryLockError {}

/// What `try_lock` returns, like std's.
pub type TryLockResult<Guard> = Result<Guard, TryLockError>;

impl<T> Mutex<T> {
    /// A mutex whose home is the CPU that first locks it (`const`: usable
    /// in a `static`). That first use asks CPU 0, which decides homes
    /// one at a time, unless it runs there.
    pub const fn new(value: T) -> Self {
        Self { home: UNDECIDED, block: AtomicPtr::new(core::ptr::null_mut()), value: UnsafeCell::new(value) }
    }

    /// A mutex homed on CPU `home` (`const`, for statics).
    pub const fn new_on(home: usize, value: T) -> Self {
        Self { home, block: AtomicPtr::new(core::ptr::null_mut()), value: UnsafeCell::new(value) }
    }

    pub fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        this.release_block();
        // SAFETY: read once from a value that is not dropped (ManuallyDrop).
        unsafe { core::ptr::read(&this.value) }.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// The home CPU (deciding it now if this is the first use).
    pub fn home(&self) -> usize {
        self.raw().home
    }

    /// The home-side state, made at first use.
    #[inline]
    fn raw(&self) -> &RawMutex {
        let block = self.block.load(Ordering::Acquire);
        if block.is_null() {
            return self.install();
        }
        // SAFETY: freed only after this `Mutex` is gone.
        unsafe { &*block }
    }

    #[cold]
    #[inline(never)]
    fn install(&self) -> &RawMutex {
        let here = percpu::current_index();
        let (installer, home) = match self.home {
            UNDECIDED => (ARBITER, here),
            home => (home, home),
        };
        let install = Install { block: &self.block, home, request: Request::for_current_thread() };
        // SAFETY: `install` lives until answered (we wait for it).
        unsafe { on_home(installer, &raw const install, install_job, "mutex") };
        install.request.wait();
        // SAFETY: installed (acquire) and freed only after we are gone.
        unsafe { &*self.block.load(Ordering::Acquire) }
    }

    /// Hands the block to its home CPU to free (after any unlock in flight).
    fn release_block(&self) {
        let block = self.block.load(Ordering::Acquire);
        if !block.is_null() {
            // SAFETY: live until the job below runs, which frees it (now
            // or at the unlock in flight).
            unsafe { on_home((*block).home, block, mutex_free_job, "mutex") };
        }
    }

    /// Waits for the lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw().lock();
        MutexGuard { mutex: self }
    }

    /// The lock if it is free now. From a CPU other than the home, the
    /// home CPU answers (a message round trip); the thread waits for that
    /// answer, never for the lock.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        if self.raw().try_lock() {
            Ok(MutexGuard { mutex: self })
        } else {
            Err(TryLockError::WouldBlock)
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T: ?Sized> Drop for Mutex<T> {
    fn drop(&mut self) {
        self.release_block();
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: ?Sized> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mutex").field("home", &self.home).finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // The last use of the mutex by this guard: the block outlives the
        // message (see the module docs).
        // SAFETY: the block outlives the unlock (see the module docs).
        unsafe { self.mutex.raw().on_home((), unlock_job) };
    }
}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

/// A condition variable for one home CPU's mutexes (its waiters are kept
/// by that CPU).
pub struct Condvar {
    /// The home-side state, made by the home CPU at the first wait.
    block: AtomicPtr<CondvarBlock>,
}

/// A waiter and the mutex it takes back when notified.
#[derive(Clone, Copy)]
struct Waiting {
    request: *const Request,
    mutex: *const RawMutex,
}

/// A condition variable's home-side state (see the module docs).
struct CondvarBlock {
    home: usize,
    /// Home CPU only.
    waiters: UnsafeCell<VecDeque<Waiting>>,
    /// Per CPU: notifications that CPU sent here (written by it alone).
    sent: Vec<AtomicU32>,
    /// Home CPU only: per CPU, notifications from it that ran.
    ran: UnsafeCell<Vec<u32>>,
    /// Home CPU only: the `Condvar` is gone.
    orphaned: UnsafeCell<bool>,
}

impl CondvarBlock {
    /// Home CPU: whether no notification for it is in flight.
    ///
    /// # Safety
    /// Home CPU.
    unsafe fn settled(&self) -> bool {
        // SAFETY: home CPU only.
        let ran = unsafe { &*self.ran.get() };
        self.sent.iter().zip(ran).all(|(sent, ran)| sent.load(Ordering::Acquire) == *ran)
    }
}

// SAFETY: the home-only fields are touched only on the home CPU.
unsafe impl Sync for Condvar {}
// SAFETY: as above.
unsafe impl Send for Condvar {}

struct WaitArguments {
    condvar: *const Condvar,
    request: *const Request,
}

impl Condvar {
    pub const fn new() -> Self {
        Self { block: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// Unlocks, waits for a notification, and holds the lock again when it
    /// returns. The unlock and the enqueueing happen together on the home
    /// CPU, so no notification in between is missed.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_until(guard, None).0
    }

    /// Like `wait`, for at most `timeout` (then it takes the mutex back
    /// and says it timed out), like std's.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let deadline = Instant::now().checked_add(timeout).map_or(u64::MAX, Instant::ticks);
        let (guard, timed_out) = self.wait_until(guard, Some(deadline));
        (guard, WaitTimeoutResult(timed_out))
    }

    /// Waits while `condition` holds, for at most `timeout` in all; times
    /// out if it still holds then. Like std's.
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let start = Instant::now();
        loop {
            if !condition(&mut *guard) {
                return (guard, WaitTimeoutResult(false));
            }
            let Some(left) = timeout.checked_sub(start.elapsed()) else {
                return (guard, WaitTimeoutResult(true));
            };
            guard = self.wait_timeout(guard, left).0;
        }
    }

    /// `wait`, ending also at TSC value `deadline`: then the waiter asks
    /// the home CPU to take it out of the queue (unless a notification
    /// moved it already) and waits for that answer and for the mutex.
    /// Returns whether it timed out.
    #[inline(never)]
    fn wait_until<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>, deadline: Option<u64>) -> (MutexGuard<'a, T>, bool) {
        let mutex = guard.mutex;
        let raw = mutex.raw();
        let block = self.block.load(Ordering::Acquire);
        // SAFETY: freed only after this `Condvar` is gone.
        if !block.is_null() && unsafe { (*block).home } != raw.home {
            panic!("a Condvar must be used with mutexes of one home CPU");
        }
        core::mem::forget(guard);
        let request = Request::for_current_thread();
        let arguments = WaitArguments { condvar: self, request: &request };
        // SAFETY: the waiter keeps `arguments`, the request, the condition
        // variable and the mutex alive until it holds the mutex again.
        unsafe { raw.on_home(&raw const arguments, wait_job) };
        let Some(deadline) = deadline else {
            request.wait();
            return (MutexGuard { mutex }, false);
        };
        let mut cancelled = false;
        loop {
            let granted = request.answer.load(Ordering::Acquire) != PENDING;
            if granted && (!cancelled || request.cancel_done.load(Ordering::Acquire)) {
                break;
            }
            if !cancelled && Instant::now().ticks() >= deadline {
                cancelled = true;
                // After `wait_job` in the same ring (or run here directly).
                // SAFETY: the waiter keeps the condition variable and the
                // request alive until `cancel_done` and the mutex answer.
                unsafe { on_home(raw.home, (self as *const Condvar, &raw const request), cancel_job, "condvar") };
                continue;
            }
            if cancelled {
                scheduler::block();
            } else {
                scheduler::block_until(request.epoch, deadline);
            }
        }
        (MutexGuard { mutex }, request.timed_out.load(Ordering::Relaxed))
    }

    /// Waits while `condition` holds, like `std`'s `wait_while`.
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while condition(&mut *guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// Wakes one waiter (which then takes the mutex back).
    pub fn notify_one(&self) {
        self.notify(false);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(true);
    }

    #[inline(never)]
    fn notify(&self, all: bool) {
        let block = self.block.load(Ordering::Acquire);
        if block.is_null() {
            return; // never waited on: nothing to wake
        }
        let here = percpu::current_index();
        // SAFETY: freed only after this `Condvar` is gone (and after every
        // notification counted below has run).
        let shared = unsafe { &*block };
        let home = shared.home;
        if here != home {
            // Only this CPU writes its own counter: a load and a store.
            let sent = &shared.sent[here];
            sent.store(sent.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
        }
        let notify = Notify { block, source: here as u32, all };
        // SAFETY: the block lives until this notification has run (counted
        // in `sent` above; see the module docs).
        unsafe { on_home(home, notify, notify_job, "condvar") };
    }
}

/// Whether a timed wait timed out; like std's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended by its timeout.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Condvar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

impl Drop for Condvar {
    fn drop(&mut self) {
        let block = self.block.load(Ordering::Acquire);
        if !block.is_null() {
            // SAFETY: live until the job below frees it.
            unsafe { on_home((*block).home, block, condvar_free_job, "condvar") };
        }
    }
}

/// Home CPU: a timed wait reached its timeout. If it still waits for a
/// notification, it leaves the queue and queues for the mutex instead.
unsafe fn cancel_job((condvar, request): (*const Condvar, *const Request)) {
    // SAFETY: home CPU; the waiter keeps the condition variable and the
    // request alive until `cancel_done` (and the mutex answer) are set;
    // this runs after its `wait_job` (same ring, or the same CPU), so the
    // block exists.
    unsafe {
        let block = (*condvar).block.load(Ordering::Acquire);
        let waiters = &mut *(*block).waiters.get();
        match waiters.iter().position(|waiting| waiting.request == request) {
            Some(position) => {
                let waiting = waiters.remove(position).expect("found above");
                (*request).timed_out.store(true, Ordering::Relaxed);
                (*request).cancel_done.store(true, Ordering::Release);
                // The last use of the request (it may be answered now).
                (*waiting.mutex).acquire_for(request);
            }
            None => {
                // Notified already: the mutex answer comes (or came).
                let (thread, epoch) = ((*request).thread, (*request).epoch);
                (*request).cancel_done.store(true, Ordering::Release);
                scheduler::wake(thread, epoch);
            }
        }
    }
}

unsafe fn wait_job((mutex, arguments): (*const RawMutex, *const WaitArguments)) {
    // SAFETY: home CPU; the waiter keeps `arguments`, the request, the
    // condition variable and the mutex alive until answered.
    unsafe {
        let arguments = &*arguments;
        let slot = &(*arguments.condvar).block;
        let mut block = slot.load(Ordering::Acquire);
        if block.is_null() {
            let cpus = crate::cpu::count();
            block = Box::into_raw(Box::new(CondvarBlock {
                home: (*mutex).home,
                waiters: UnsafeCell::new(VecDeque::new()),
                sent: (0..cpus).map(|_| AtomicU32::new(0)).collect(),
                ran: UnsafeCell::new(alloc::vec![0; cpus]),
                orphaned: UnsafeCell::new(false),
            }));
            slot.store(block, Ordering::Release);
        }
        (*(*block).waiters.get()).push_back(Waiting { request: arguments.request, mutex });
        RawMutex::release(mutex);
    }
}

/// A notification for a condition variable's home CPU: from CPU `source`,
/// for one waiter or `all`.
#[derive(Clone, Copy)]
struct Notify {
    block: *mut CondvarBlock,
    source: u32,
    all: bool,
}

/// Home CPU: moves waiters from the condvar to their mutex's queue (or
/// gives them the mutex if it is free).
unsafe fn notify_job(Notify { block, source, all }: Notify) {
    #[cfg(feature = "lockcheck-mutation-5")]
    crate::lockcheck_mutation::plant();
    let source = source as usize;
    // SAFETY: home CPU only; the block lives until every notification
    // counted in `sent` has run (see the module docs).
    unsafe {
        let waiters = &mut *(*block).waiters.get();
        let count = if all { waiters.len() } else { waiters.len().min(1) };
        for waiting in waiters.drain(..count) {
            // The mutex outlives its waiters (they hold its guard's lifetime).
            (*waiting.mutex).acquire_for(waiting.request);
        }
        if source != (*block).home {
            let ran = &mut *(*block).ran.get();
            ran[source] = ran[source].wrapping_add(1);
            if *(*block).orphaned.get() && (*block).settled() {
                drop(Box::from_raw(block));
            }
        }
    }
}

/// Home CPU: the `Condvar` is gone; free its block now or when the last
/// notification in flight has run.
unsafe fn condvar_free_job(block: *mut CondvarBlock) {
    // SAFETY: home CPU only.
    unsafe {
        if (*block).settled() {
            drop(Box::from_raw(block));
        } else {
            *(*block).orphaned.get() = true;
        }
    }
}
