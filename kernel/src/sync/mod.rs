//! Synchronisation between threads, on one CPU or across CPUs, without
//! locked instructions: channels, a mutex and a condition variable.
//!
//! - `channel()` and `sync_channel(bound)`, shaped like `std::sync::mpsc`:
//!   many senders on any CPUs (each sending CPU writes a lane of its own),
//!   one receiver; `recv` blocks cooperatively; `Select` waits on several
//!   receivers.
//! - `Mutex` and `Condvar`: each mutex has a home CPU, which alone keeps its
//!   state (locked, who waits). A thread on the home CPU locks with plain
//!   memory operations (scheduling is cooperative, so nothing interleaves);
//!   a thread elsewhere sends a request through the CPU-pair ring to the
//!   home CPU and blocks until the home CPU grants it the lock. No lock
//!   instruction is needed anywhere; the price is a message round trip for
//!   a lock taken away from home, and lock requests wait for the home CPU's
//!   next scheduling point.
//!
//! - `OnceLock`, `LazyLock`, `RwLock` and `Barrier`, shaped like std's,
//!   built on the home-CPU `Mutex` and `Condvar`.
//!
//! Waking a thread on another CPU: the waker sends a wake-up (thread,
//! wait epoch) to the CPU the thread is on; the waiter publishes itself,
//! fences, and re-checks before blocking (and the waker publishes its
//! change, fences, then reads the waiter), so a wake-up is never lost.

mod barrier;
mod channel;
mod mutex;
mod once;
mod rwlock;
pub(crate) mod spin;

pub use barrier::{Barrier, BarrierWaitResult};
pub use channel::{
    channel, sync_channel, IntoIter, Iter, ReadyTimeoutError, Receiver, RecvError, RecvTimeoutError, Select, SendError,
    Sender, SyncSender, TryIter, TryReadyError, TryRecvError, TrySendError,
};
pub use mutex::{Condvar, Mutex, MutexGuard, TryLockError, TryLockResult, WaitTimeoutResult};
pub use once::{LazyLock, OnceLock};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::cpu as messages;

/// Runs `run(message)` on CPU `home` (`cpu::on_cpu`: directly if we are
/// there, else as a message); `what` names the object for the panic when
/// `home` cannot be reached.
///
/// # Safety
/// As for `cpu::on_cpu`: what `message` points to outlives it (the table
/// in docs/sync.md says why for each message of this module).
#[inline(never)]
unsafe fn on_home<T: Copy>(home: usize, message: T, run: unsafe fn(T), what: &str) {
    // SAFETY: the caller's promise.
    if let Err(error) = unsafe { messages::on_cpu(home, message, run) } {
        panic!("{what}: cannot reach its home cpu {home}: {error}");
    }
}
