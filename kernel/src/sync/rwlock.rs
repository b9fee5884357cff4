//! `RwLock`, shaped like std's (minus poisoning, as `Mutex`), built on the
//! home-CPU `Mutex` and `Condvar`: readers on many CPUs hold it at once;
//! taking or giving it back away from the home CPU is a message round trip.
//!
//! For data read on every CPU and rarely written, an owner-CPU design is
//! usually better than any lock: a copy per CPU (each refreshed by a
//! message from the writer) reads with no message at all. `RwLock` is here
//! for code written against std's.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use super::{Condvar, Mutex, TryLockError, TryLockResult};

/// A reader-writer lock; writers wait for readers to leave, and readers
/// arriving while a writer waits queue behind it (no writer starvation).
pub struct RwLock<T: ?Sized> {
    state: Mutex<RwState>,
    changed: Condvar,
    value: UnsafeCell<T>,
}

struct RwState {
    readers: usize,
    writer: bool,
    writers_waiting: usize,
}

// SAFETY: the value is reached through guards the state hands out: many
// `&T` (needs `T: Sync`) or one `&mut T` (needs `T: Send`).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}

/// Shared access; gives it back when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
}

/// Exclusive access; gives it back when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
}

impl<T> RwLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            state: Mutex::new(RwState { readers: 0, writer: false, writers_waiting: 0 }),
            changed: Condvar::new(),
            value: UnsafeCell::new(value),
        }
    }

    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Waits for shared access.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        let state = self.state.lock();
        let mut state = self.changed.wait_while(state, |s| s.writer || s.writers_waiting > 0);
        state.readers += 1;
        RwLockReadGuard { lock: self }
    }

    /// Waits for exclusive access.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        let mut state = self.state.lock();
        state.writers_waiting += 1;
        let mut state = self.changed.wait_while(state, |s| s.writer || s.readers > 0);
        state.writers_waiting -= 1;
        state.writer = true;
        RwLockWriteGuard { lock: self }
    }

    /// Shared access if no writer holds or waits for it now.
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        let mut state = self.state.lock();
        if state.writer || state.writers_waiting > 0 {
            return Err(TryLockError::WouldBlock);
        }
        state.readers += 1;
        Ok(RwLockReadGuard { lock: self })
    }

    /// Exclusive access if nobody holds it now.
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        let mut state = self.state.lock();
        if state.writer || state.readers > 0 {
            return Err(TryLockError::WouldBlock);
        }
        state.writer = true;
        Ok(RwLockWriteGuard { lock: self })
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> core::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RwLock").finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a reader: no writer holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the only holder.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the only holder.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        let mut state = self.lock.state.lock();
        state.readers -= 1;
        let last = state.readers == 0;
        drop(state);
        if last {
            self.lock.changed.notify_all();
        }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.state.lock().writer = false;
        self.lock.changed.notify_all();
    }
}
