//! `OnceLock` and `LazyLock`, shaped like std's, for any CPU.
//!
//! A value is set at most once. Deciding which of two CPUs sets it would
//! take a compare-and-swap; instead the first users serialise on a `Mutex`
//! (whose home decides, by messages), and everyone afterwards reads a flag
//! published with `Release` after the value: `get` on an initialised cell
//! is one `Acquire` load.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ops::Deref;
use core::sync::atomic::{AtomicBool, Ordering};

use super::Mutex;

/// A cell written once, from any CPU; like `std::sync::OnceLock`.
pub struct OnceLock<T> {
    /// Set (`Release`) once `value` is written.
    ready: AtomicBool,
    /// Serialises the first writers.
    writers: Mutex<()>,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, under `writers`, before `ready` is
// published; afterwards it is only read (`&T`) or moved out through `&mut`.
unsafe impl<T: Sync + Send> Sync for OnceLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for OnceLock<T> {}

impl<T> OnceLock<T> {
    pub const fn new() -> Self {
        Self { ready: AtomicBool::new(false), writers: Mutex::new(()), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// The value, if set.
    pub fn get(&self) -> Option<&T> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: written before `ready` (acquired), never again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        if *self.ready.get_mut() {
            // SAFETY: set, and we have the only reference.
            Some(unsafe { self.value.get_mut().assume_init_mut() })
        } else {
            None
        }
    }

    /// Sets the value if none is set; else gives `value` back.
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        self.get_or_init(|| value.take().expect("taken once"));
        match value {
            None => Ok(()),
            Some(value) => Err(value),
        }
    }

    /// The value, made by `init` if none is set yet (by exactly one
    /// caller; the others wait for it).
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        if let Some(value) = self.get() {
            return value;
        }
        let writers = self.writers.lock();
        if !self.ready.load(Ordering::Acquire) {
            let value = init();
            // SAFETY: not yet set, and only the holder of `writers` sets it.
            unsafe { (*self.value.get()).write(value) };
            self.ready.store(true, Ordering::Release);
        }
        drop(writers);
        self.get().expect("set above or by an earlier writer")
    }

    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// Takes the value out, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        if !*self.ready.get_mut() {
            return None;
        }
        *self.ready.get_mut() = false;
        // SAFETY: it was set; `ready` is cleared so it is read once.
        Some(unsafe { self.value.get_mut().assume_init_read() })
    }
}

impl<T> Default for OnceLock<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> Self {
        let cell = Self::new();
        let _ = cell.set(value);
        cell
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.get() {
            Some(value) => f.debug_tuple("OnceLock").field(value).finish(),
            None => f.write_str("OnceLock(<uninit>)"),
        }
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// A value made at first use, from any CPU; like `std::sync::LazyLock`.
pub struct LazyLock<T, F = fn() -> T> {
    cell: OnceLock<T>,
    /// Taken by the one caller that makes the value (under the cell's lock).
    init: UnsafeCell<Option<F>>,
}

// SAFETY: `init` is taken once, by the caller holding the cell's lock.
unsafe impl<T: Sync + Send, F: Send> Sync for LazyLock<T, F> {}

impl<T, F: FnOnce() -> T> LazyLock<T, F> {
    pub const fn new(init: F) -> Self {
        Self { cell: OnceLock::new(), init: UnsafeCell::new(Some(init)) }
    }

    /// Makes the value if it is not made yet; returns it.
    pub fn force(this: &Self) -> &T {
        this.cell.get_or_init(|| {
            // SAFETY: runs once, under the cell's lock.
            let init = unsafe { (*this.init.get()).take() };
            init.expect("LazyLock instance has previously been poisoned")()
        })
    }
}

impl<T, F: FnOnce() -> T> Deref for LazyLock<T, F> {
    type Target = T;
    fn deref(&self) -> &T {
        Self::force(self)
    }
}

impl<T: core::fmt::Debug, F> core::fmt::Debug for LazyLock<T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.cell.get() {
            Some(value) => f.debug_tuple("LazyLock").field(value).finish(),
            None => f.write_str("LazyLock(<uninit>)"),
        }
    }
}
