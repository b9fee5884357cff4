//! Scoped threads, as std's `thread::scope`: threads that may borrow from
//! the caller's stack, all joined before `scope` returns.
//!
//! Each scoped thread's result goes into a packet owned by the scope (not
//! into the thread's control block, whose unjoined result would be dropped
//! by the thread later, perhaps after the scope ended: the result may
//! borrow what the scope borrows). The scope counts its running threads
//! under a `toro::sync::Mutex` (message-based across CPUs: no lock
//! instruction) and waits on a `Condvar` until the count is 0; then it
//! drops the packets whose results nobody joined, and returns.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::marker::PhantomData;

use super::{Builder, JoinHandle, SpawnError, Thread};
use crate::sync::{Condvar, Mutex};

/// A scope to spawn scoped threads in (see [`scope`]).
pub struct Scope<'scope, 'env: 'scope> {
    state: Mutex<State>,
    all_finished: Condvar,
    /// Invariance over 'scope, as std's (a handle cannot outlive it).
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// Threads still running, and every packet made (freed at the end).
struct State {
    running: usize,
    packets: Vec<(usize, unsafe fn(usize))>,
}

/// Owns a scoped thread's result; `join` waits for it. Dropping the handle
/// does not detach the thread: the scope still waits for it, and drops its
/// result at the end.
pub struct ScopedJoinHandle<'scope, T> {
    inner: JoinHandle<()>,
    packet: *mut Option<T>,
    _scope: PhantomData<&'scope ()>,
}

// SAFETY: the handle moves a `T: Send` out of the packet; the packet lives
// until the scope ends, which the handle cannot outlive.
unsafe impl<T: Send> Send for ScopedJoinHandle<'_, T> {}
// SAFETY: `&self` methods only read the inner handle.
unsafe impl<T: Send> Sync for ScopedJoinHandle<'_, T> {}

/// Runs `f` with a scope in which threads that borrow non-`'static` data
/// can be spawned; returns once every thread spawned in it has finished
/// (joined or not), with what `f` returned. As std's, except:
/// - a panic in any thread ends the VM (Toro has no unwinding), so there is
///   nothing to propagate and `ScopedJoinHandle::join` returns `T`, not a
///   `Result` (like `JoinHandle::join`);
/// - `Scope::spawn` places threads by the placement policy (spread over
///   the CPUs), `Scope::spawn_on` on a named CPU. A scoped thread on the
///   scope's own CPU runs only when the scope's thread reaches a scheduling
///   point (cooperative scheduling): at the latest when `scope` waits at
///   its end. Threads on other CPUs run at once, in parallel, reading the
///   borrowed data where it is (shared memory: it must be `Sync`, as the
///   borrow rules already require).
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        state: Mutex::new(State { running: 0, packets: Vec::new() }),
        all_finished: Condvar::new(),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = f(&scope);
    let packets = {
        let mut state = scope.state.lock();
        while state.running > 0 {
            state = scope.all_finished.wait(state);
        }
        core::mem::take(&mut state.packets)
    };
    // Every thread finished: the results nobody joined are dropped here,
    // before the borrows they may hold end.
    for (packet, drop_packet) in packets {
        // SAFETY: made by `spawn_scoped_on` with this function; each once.
        unsafe { drop_packet(packet) };
    }
    result
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a scoped thread on a CPU chosen by the placement policy.
    /// Panics if none can be started (`Builder::spawn_scoped` returns the
    /// error instead).
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        Builder::new().spawn_scoped(self, f).unwrap_or_else(|error| panic!("cannot spawn a scoped thread: {error}"))
    }

    /// Spawns a scoped thread on CPU `cpu` (Toro's extension: the
    /// dedicated-CPU model). Panics if it cannot be started.
    pub fn spawn_on<F, T>(&'scope self, cpu: usize, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        Builder::new()
            .spawn_scoped_on(self, cpu, f)
            .unwrap_or_else(|error| panic!("cannot spawn a scoped thread on cpu {cpu}: {error}"))
    }

    /// A scoped thread ended (its result is in its packet): the last one
    /// wakes the scope. Nothing of the scope is used after this.
    fn finished(&self) {
        let mut state = self.state.lock();
        state.running -= 1;
        if state.running == 0 {
            self.all_finished.notify_all();
        }
    }
}

/// Drops a packet made by `spawn_scoped_on` (and any result in it).
///
/// # Safety
/// `packet` is a `Box<Option<T>>` from `Box::into_raw`, dropped once.
unsafe fn drop_packet<T>(packet: usize) {
    // SAFETY: see above.
    drop(unsafe { Box::from_raw(packet as *mut Option<T>) });
}

impl Builder {
    /// Spawns a scoped thread with these options on a CPU chosen by the
    /// placement policy (as std's `Builder::spawn_scoped`; the error is a
    /// `SpawnError`).
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> Result<ScopedJoinHandle<'scope, T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let cpu = super::next_cpu();
        self.spawn_scoped_on(scope, cpu, f)
    }

    /// Spawns a scoped thread with these options on CPU `cpu`.
    pub fn spawn_scoped_on<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        cpu: usize,
        f: F,
    ) -> Result<ScopedJoinHandle<'scope, T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Box::into_raw(Box::new(None::<T>));
        {
            let mut state = scope.state.lock();
            state.running += 1;
            state.packets.push((packet as usize, drop_packet::<T>));
        }
        let (packet_address, scope_address) = (packet as usize, scope as *const Scope<'scope, 'env> as usize);
        let main: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let value = f();
            // SAFETY: the packet lives until the scope ends, which waits
            // for `finished` below; only this thread writes it, and the
            // handle reads it only after this thread ended.
            unsafe { *(packet_address as *mut Option<T>) = Some(value) };
            // SAFETY: the scope lives until every thread called this.
            unsafe { (*(scope_address as *const Scope<'scope, 'env>)).finished() };
        });
        // SAFETY: only the lifetime is erased. The closure (and so
        // everything it borrows for 'scope) is used up before `finished`
        // returns, and `scope` does not return (ending 'scope) before every
        // thread called `finished`; if the spawn fails the closure is
        // dropped here, within 'scope.
        let main: Box<dyn FnOnce() + Send + 'static> = unsafe { core::mem::transmute(main) };
        match self.spawn_on(cpu, main) {
            Ok(inner) => Ok(ScopedJoinHandle { inner, packet, _scope: PhantomData }),
            Err(error) => {
                // Never started: not running (its packet stays, empty, and
                // is freed at the end).
                scope.state.lock().running -= 1;
                Err(error)
            }
        }
    }
}

impl<T> ScopedJoinHandle<'_, T> {
    /// The thread (as std's).
    pub fn thread(&self) -> &Thread {
        self.inner.thread()
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Waits for the thread and returns what its closure returned.
    pub fn join(self) -> T {
        let packet = self.packet;
        self.inner.join();
        // SAFETY: the thread ended, after writing the packet (its `done`
        // flag is stored with release after the closure returned, and
        // `join` loads it with acquire); the packet lives until the scope
        // ends, which this handle cannot outlive.
        unsafe { (*packet).take() }.expect("a finished scoped thread left its result")
    }
}
