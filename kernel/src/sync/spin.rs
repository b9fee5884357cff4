//! A spin lock for the few kernel paths that are shared by all CPUs and are
//! not performance paths (the console). Hot cross-CPU paths use per-CPU-pair
//! queues instead and never take a lock.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

/// No owner.
const FREE: u32 = 0;

/// A test-and-set lock that records its owner (CPU id + 1), so a CPU that
/// faults while holding it can tell, and a fatal report still gets out.
pub struct SpinLock<T> {
    owner: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `owner`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

pub struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
    /// False when the lock was taken over (see `lock_or_steal`).
    release: bool,
}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self { owner: AtomicU32::new(FREE), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, spinning while another CPU holds it.
    pub fn lock(&self) -> Guard<'_, T> {
        let me = crate::cpu_id() + 1;
        while self.owner.compare_exchange_weak(FREE, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        Guard { lock: self, release: true }
    }

    /// For fatal reports: takes the lock, or uses the value anyway if this
    /// CPU already holds it (a fault inside the locked section) or the holder
    /// does not let go within `spins` attempts (it may be dead).
    pub fn lock_or_steal(&self, spins: u32) -> Guard<'_, T> {
        let me = crate::cpu_id() + 1;
        for _ in 0..spins {
            match self.owner.compare_exchange_weak(FREE, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Guard { lock: self, release: true },
                Err(owner) if owner == me => break,
                Err(_) => core::hint::spin_loop(),
            }
        }
        Guard { lock: self, release: false }
    }
}

impl<T> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard stands for the lock (or for a fatal takeover,
        // after which nothing else runs).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if self.release {
            self.lock.owner.store(FREE, Ordering::Release);
        }
    }
}
