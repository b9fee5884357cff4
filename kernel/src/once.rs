//! `BootCell`: a value written once during boot and read-only afterwards.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, Ordering};

pub struct BootCell<T> {
    ready: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: written once before `ready` is published (release), read only
// after `ready` is observed (acquire).
unsafe impl<T: Sync> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    pub const fn new() -> Self {
        Self { ready: AtomicBool::new(false), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// Stores the value. Only the boot CPU calls this, once, before any
    /// reader exists; a second call is a kernel bug and panics.
    pub fn set(&self, value: T) {
        assert!(!self.ready.load(Ordering::Relaxed), "BootCell set twice");
        // SAFETY: not yet published, and only the boot CPU runs.
        unsafe { (*self.value.get()).write(value) };
        self.ready.store(true, Ordering::Release);
    }

    /// The value, if set.
    pub fn get(&self) -> Option<&T> {
        if self.ready.load(Ordering::Acquire) {
            // SAFETY: published by `set`, never written again.
            Some(unsafe { (*self.value.get()).assume_init_ref() })
        } else {
            None
        }
    }
}
