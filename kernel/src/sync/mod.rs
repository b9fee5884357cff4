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

use crate::arch::percpu;
use crate::cpu::{self as messages, Job};

/// Runs the job `run(data, extra)` on CPU `home`: directly if we are
/// there, else as a message (`what` names the object for the panic when
/// `home` cannot be reached).
#[inline(never)]
fn on_home(home: usize, run: unsafe fn(*mut u8, u64), data: *mut u8, extra: u64, what: &str) {
    if percpu::current_index() == home {
        // SAFETY: a job function, run on its CPU.
        unsafe { run(data, extra) };
    } else if let Err(error) = messages::send(home, Job { run, data, extra }) {
        panic!("{what}: cannot reach its home cpu {home}: {error}");
    }
}
