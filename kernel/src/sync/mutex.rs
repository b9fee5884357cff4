//! `Mutex` and `Condvar` with a home CPU (see the module docs of `sync`).

use alloc::collections::VecDeque;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch::percpu;
use crate::cpu::{self as messages, Job};
use crate::thread::scheduler::{self, Control};

/// A thread asking for the lock; lives on its stack while it waits.
struct Request {
    thread: *mut Control,
    epoch: u64,
    granted: AtomicBool,
}

impl Request {
    fn for_current_thread() -> Self {
        Self { thread: scheduler::current(), epoch: scheduler::begin_wait(), granted: AtomicBool::new(false) }
    }

    fn wait(&self) {
        while !self.granted.load(Ordering::Acquire) {
            scheduler::block();
        }
    }
}

/// The lock itself, apart from the value (so the jobs need no type).
struct RawMutex {
    home: usize,
    /// Home CPU only.
    state: UnsafeCell<LockState>,
}

struct LockState {
    locked: bool,
    waiters: VecDeque<*const Request>,
}

impl RawMutex {
    /// Runs `run(self, argument)` on the home CPU: directly if we are there.
    #[inline(never)]
    fn on_home(&self, run: unsafe fn(*mut u8, u64), argument: u64) {
        let data = self as *const Self as *mut u8;
        if percpu::current_index() == self.home {
            // SAFETY: a job function, run on its CPU.
            unsafe { run(data, argument) };
        } else if let Err(error) = messages::send(self.home, Job { run, data, extra: argument }) {
            panic!("mutex: cannot reach its home cpu {}: {error}", self.home);
        }
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
        self.on_home(lock_job, &request as *const Request as u64);
        request.wait();
    }

    /// Home CPU: gives the lock to `request` now or queues it.
    fn acquire_for(&self, request: *const Request) {
        // SAFETY: home CPU only.
        let state = unsafe { &mut *self.state.get() };
        if state.locked {
            state.waiters.push_back(request);
        } else {
            state.locked = true;
            grant(request);
        }
    }

    /// Home CPU: passes the lock to the next waiter, or frees it.
    fn release(&self) {
        // SAFETY: home CPU only.
        let state = unsafe { &mut *self.state.get() };
        match state.waiters.pop_front() {
            // Ownership passes straight to the next waiter (FIFO, no barging).
            Some(next) => grant(next),
            None => state.locked = false,
        }
    }
}

/// Home CPU: hands the lock to `request` (its thread wakes holding it).
fn grant(request: *const Request) {
    // SAFETY: the requester waits (on its stack) until `granted`; read its
    // fields before setting it, after which the request may be gone.
    unsafe {
        let (thread, epoch) = ((*request).thread, (*request).epoch);
        (*request).granted.store(true, Ordering::Release);
        scheduler::wake(thread, epoch);
    }
}

unsafe fn lock_job(data: *mut u8, request: u64) {
    // SAFETY: run on the home CPU; the request lives until granted.
    unsafe { (*(data as *const RawMutex)).acquire_for(request as *const Request) };
}

unsafe fn unlock_job(data: *mut u8, _: u64) {
    // SAFETY: run on the home CPU.
    unsafe { (*(data as *const RawMutex)).release() };
}

/// A mutual-exclusion lock usable from any CPU, with no locked
/// instruction. Its state is kept by its home CPU (where `new` ran, or the
/// one given to `new_on`).
pub struct Mutex<T> {
    raw: RawMutex,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, handed to one thread
// at a time by the home CPU; the state is touched only on the home CPU.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Holds the lock; unlocks when dropped.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    /// A mutex homed on the calling CPU.
    pub fn new(value: T) -> Self {
        Self::new_on(percpu::current_index(), value)
    }

    /// A mutex homed on CPU `home` (`const`, for statics).
    pub const fn new_on(home: usize, value: T) -> Self {
        Self {
            raw: RawMutex { home, state: UnsafeCell::new(LockState { locked: false, waiters: VecDeque::new() }) },
            value: UnsafeCell::new(value),
        }
    }

    /// The home CPU.
    pub fn home(&self) -> usize {
        self.raw.home
    }

    /// Waits for the lock.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { mutex: self }
    }

    /// The lock if it is free now, on the home CPU; `None` elsewhere or if
    /// it is held (asking the home CPU would mean waiting).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        if percpu::current_index() != self.raw.home {
            return None;
        }
        // SAFETY: on the home CPU, see `RawMutex::lock`.
        let state = unsafe { &mut *self.raw.state.get() };
        if state.locked {
            return None;
        }
        state.locked = true;
        Some(MutexGuard { mutex: self })
    }

    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.raw.on_home(unlock_job, 0);
    }
}

/// A condition variable for one `Mutex` (its waiters are kept by that
/// mutex's home CPU).
pub struct Condvar {
    /// The home CPU of the mutex it is used with (set at first use).
    home: AtomicUsize,
    /// Home CPU only: waiters and the mutex each will take back.
    waiters: UnsafeCell<VecDeque<(*const Request, *const RawMutex)>>,
}

// SAFETY: `waiters` is touched only on the home CPU.
unsafe impl Sync for Condvar {}
// SAFETY: as above.
unsafe impl Send for Condvar {}

const NO_HOME: usize = usize::MAX;

struct WaitArguments {
    condvar: *const Condvar,
    request: *const Request,
}

impl Condvar {
    pub const fn new() -> Self {
        Self { home: AtomicUsize::new(NO_HOME), waiters: UnsafeCell::new(VecDeque::new()) }
    }

    /// Unlocks, waits for a notification, and holds the lock again when it
    /// returns. The unlock and the enqueueing happen together on the home
    /// CPU, so no notification in between is missed.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let mutex = guard.mutex;
        self.bind(mutex.raw.home);
        core::mem::forget(guard);
        let request = Request::for_current_thread();
        let arguments = WaitArguments { condvar: self, request: &request };
        mutex.raw.on_home(wait_job, &arguments as *const WaitArguments as u64);
        request.wait();
        MutexGuard { mutex }
    }

    /// Waits while `condition` holds, like `std`'s `wait_while`.
    pub fn wait_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while condition(&mut *guard) {
            guard = self.wait(guard);
        }
        guard
    }

    fn bind(&self, home: usize) {
        let bound = self.home.load(Ordering::Relaxed);
        if bound == NO_HOME {
            // Every first user stores the same value: no race to lose.
            self.home.store(home, Ordering::Relaxed);
        } else {
            assert_eq!(bound, home, "a Condvar must be used with mutexes of one home CPU");
        }
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
        let home = self.home.load(Ordering::Relaxed);
        if home == NO_HOME {
            return; // never waited on: nothing to wake
        }
        let data = self as *const Self as *mut u8;
        if home == percpu::current_index() {
            // SAFETY: a job function, run on its CPU.
            unsafe { notify_job(data, all as u64) };
        } else if let Err(error) = messages::send(home, Job { run: notify_job, data, extra: all as u64 }) {
            panic!("condvar: cannot reach its home cpu {home}: {error}");
        }
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

unsafe fn wait_job(data: *mut u8, arguments: u64) {
    // SAFETY: home CPU; the waiter keeps `arguments` and the request alive
    // until granted.
    unsafe {
        let mutex = data as *const RawMutex;
        let arguments = &*(arguments as *const WaitArguments);
        (*(*arguments.condvar).waiters.get()).push_back((arguments.request, mutex));
        (*mutex).release();
    }
}

/// Home CPU: moves waiters from the condvar to their mutex's queue (or
/// gives them the mutex if it is free).
unsafe fn notify_job(data: *mut u8, all: u64) {
    // SAFETY: home CPU only.
    let condvar = unsafe { &*(data as *const Condvar) };
    // SAFETY: as above.
    let waiters = unsafe { &mut *condvar.waiters.get() };
    let count = if all != 0 { waiters.len() } else { waiters.len().min(1) };
    for _ in 0..count {
        if let Some((request, mutex)) = waiters.pop_front() {
            // SAFETY: the mutex outlives its waiters (they hold its guard's
            // lifetime); home CPU.
            unsafe { (*mutex).acquire_for(request) };
        }
    }
}
