//! Threads: spawn them on any CPU, join them, move them, let them sleep.
//!
//! # Cooperative scheduling: the contract
//!
//! Scheduling is cooperative and per CPU (`scheduler`): a thread keeps its
//! CPU until it reaches a scheduling point: [`yield_now`], [`sleep`],
//! [`park`], `join`, [`migrate_to`], a blocking receive, lock or wait that
//! has to wait, or its end. Nothing preempts it, and threads run with
//! interrupts off. A loop that computes for long must call [`yield_now`]
//! now and then (about every millisecond keeps the other threads of its
//! CPU responsive); spinning on a flag that another thread of the *same*
//! CPU sets never ends. In exchange, code between two scheduling points is
//! never interrupted by another thread of its CPU.
//!
//! The watchdog reports a thread that runs `toro.watchdog=SECONDS`
//! (default 2, `off` to disable) without reaching a scheduling point, with
//! its name, CPU and backtrace, and then lets it go on
//! (`toro.watchdog_action=report`) or ends the VM with [`EXIT_WATCHDOG`]
//! (`toro.watchdog_action=stop`). Another CPU notices (it reads the stuck
//! CPU's last-scheduling-point stamp) and sends it an NMI; it needs at
//! least 2 CPUs. See docs/threads.md.
//!
//! # Placement, stacks
//!
//! Threads cross CPUs (spawned on
//! another CPU, moved with `migrate_to`, woken from another CPU) only as
//! messages through the per-CPU-pair rings: no lock and no locked
//! instruction (`cargo xtask test` checks the disassembly).
//!
//! Placement: `spawn` puts the k-th thread spawned from CPU c on CPU
//! (c + 1 + k) mod n, so every CPU spawning spreads its threads evenly over
//! all CPUs (itself last) without any shared counter. `spawn_on` names
//! the CPU.
//!
//! Scoped threads: [`scope`] as std's (borrowing the caller's data, all
//! finished when it returns), with [`Scope::spawn_on`] for a named CPU; a
//! panic ends the VM, so `ScopedJoinHandle::join` returns `T`.
//!
//! Stacks: each thread has a stack in its spawning CPU's stack zone with an
//! unmapped guard page below it; an overflow is reported with the thread's
//! name and CPU. The default is 60 KiB (`toro.stack=SIZE` changes it);
//! `Builder::stack_size` asks for any size, rounded up to the zone's 32 KiB
//! slots less the guard page (60, 92, 124 KiB, ...). Stacks are memory of
//! the spawning CPU's share, committed up front (no demand paging), and
//! recycled with their control blocks.

pub(crate) mod scheduler;
mod scope;
mod stack;
pub(crate) mod watchdog;

pub use scope::{scope, Scope, ScopedJoinHandle};
pub use watchdog::{reports as watchdog_reports, EXIT_WATCHDOG};

pub(crate) use stack::STACK_SLOT;

use alloc::boxed::Box;
use alloc::string::String;
use core::marker::PhantomData;
use core::sync::atomic::Ordering;
use core::time::Duration;

use crate::arch::percpu;
use crate::cpu as messages;
use scheduler::Control;

/// Why a thread could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnError {
    /// No running CPU has this index.
    NoSuchCpu(usize),
    /// The spawning CPU's stack zone has no free slots for the stack (too
    /// many live threads were created from it).
    NoStack,
    /// The stack asked for is larger than the spawning CPU's whole stack
    /// zone; `largest` is the largest stack it can hold.
    StackTooLarge { largest: usize },
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSuchCpu(cpu) => write!(f, "no running CPU {cpu}"),
            Self::NoStack => write!(f, "no free thread stack on this CPU"),
            Self::StackTooLarge { largest } => {
                write!(f, "stack larger than this CPU's stack zone (at most {} KiB)", largest >> 10)
            }
        }
    }
}

/// A thread's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ThreadId(u64);

impl ThreadId {
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// A handle to a thread, as std's `Thread`: its id and name, and
/// `unpark`. Valid after the thread ends (unpark is then ignored).
#[derive(Debug, Clone)]
pub struct Thread {
    id: ThreadId,
    name: Option<String>,
    cpu: usize,
    control: *mut Control,
}

// SAFETY: `control` is only used through `scheduler::unpark`, which checks
// the id and reaches the thread's owner CPU by message.
unsafe impl Send for Thread {}
// SAFETY: as above; all methods take `&self` and read plain fields.
unsafe impl Sync for Thread {}

impl Thread {
    pub fn id(&self) -> ThreadId {
        self.id
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// The CPU it ran on when this handle was made (Toro's extension).
    pub fn cpu(&self) -> usize {
        self.cpu
    }
    /// Wakes the thread from `park` (or makes its next `park` return at
    /// once), from any CPU.
    pub fn unpark(&self) {
        scheduler::unpark(self.control, self.id.0);
    }
}

/// The running thread.
pub fn current() -> Thread {
    let control = scheduler::current();
    // SAFETY: ours (the running thread).
    unsafe {
        Thread {
            id: ThreadId((*control).id.load(Ordering::Relaxed)),
            name: (*control).name.clone(),
            cpu: percpu::current_index(),
            control,
        }
    }
}

/// Blocks until another thread calls `unpark` on this one (returns at once
/// if that already happened since the last `park`). Like std's, it may
/// return spuriously: check the condition in a loop.
pub fn park() {
    scheduler::park(None);
}

/// Timed waits in CPU `cpu`'s deadline heap (sleeps and waits with a
/// timeout still on): Toro's addition, for `/stats` and tests. `None` for
/// a CPU that does not run.
pub fn sleepers(cpu: usize) -> Option<usize> {
    scheduler::sleepers(cpu)
}

/// TLB refreshes CPU `cpu` has made: a CPU that reaches scheduling points
/// reloads its page-table root every 20 ms while it puts new memory to use,
/// less often when not (`toro.tlb_refresh=MS|off`), so that QEMU's TCG can size its
/// software TLB (docs/memory.md, "The TLB under TCG"): Toro's addition,
/// for `/stats` and tests. `None` for a CPU that does not run.
pub fn tlb_refreshes(cpu: usize) -> Option<u64> {
    scheduler::tlb_refreshes(cpu)
}

/// `park`, returning after `timeout` at the latest.
pub fn park_timeout(timeout: Duration) {
    let deadline = crate::time::Instant::now().checked_add(timeout).map_or(u64::MAX, |d| d.ticks());
    scheduler::park(Some(deadline));
}

/// Sleeps until `deadline` (at once if it passed).
pub fn sleep_until(deadline: crate::time::Instant) {
    if deadline > crate::time::Instant::now() {
        scheduler::sleep_until(deadline.ticks());
    }
}

/// How many threads can run at once: the CPUs running (as std's; never an
/// error here).
pub fn available_parallelism() -> crate::io::Result<core::num::NonZeroUsize> {
    Ok(core::num::NonZeroUsize::new(messages::count()).unwrap_or(core::num::NonZeroUsize::MIN))
}

/// Lets the other ready threads of this CPU run.
pub fn yield_now() {
    scheduler::yield_now();
}

/// Sleeps for at least `duration` (the LAPIC timer wakes the CPU; no
/// polling).
pub fn sleep(duration: Duration) {
    let now = crate::time::Instant::now();
    match now.checked_add(duration) {
        Some(deadline) => scheduler::sleep_until(deadline.ticks()),
        None => scheduler::sleep_until(u64::MAX),
    }
}

/// Moves the running thread to CPU `cpu`; it continues there.
pub fn migrate_to(cpu: usize) -> Result<(), SpawnError> {
    if cpu >= messages::count() || !crate::arch::smp::is_up(cpu) {
        return Err(SpawnError::NoSuchCpu(cpu));
    }
    scheduler::migrate(cpu);
    Ok(())
}

/// Options for a new thread.
#[derive(Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The new thread's stack size in bytes, as std's: rounded up (to the
    /// stack zone's 32 KiB slots less the guard page), with a guard page
    /// below it. Without it a thread gets the default (60 KiB, or what
    /// `toro.stack=` says). The stack is memory of the spawning CPU's
    /// stack zone; `spawn_on` fails with `StackTooLarge` if the zone could
    /// never hold it, `NoStack` if it is used up.
    pub fn stack_size(mut self, size: usize) -> Self {
        self.stack_size = Some(size);
        self
    }

    /// Starts `function` on `cpu`.
    pub fn spawn_on<F, T>(self, cpu: usize, function: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if cpu >= messages::count() || !crate::arch::smp::is_up(cpu) {
            return Err(SpawnError::NoSuchCpu(cpu));
        }
        let slots = self.stack_size.map_or_else(stack::default_slots, stack::slots_for);
        let control = scheduler::new_thread_control(slots)?;
        unsafe fn drop_result<T>(result: *mut u8) {
            // SAFETY: made by `Box::into_raw` of a `Box<T>` below.
            drop(unsafe { Box::from_raw(result as *mut T) });
        }
        let thread = Thread {
            // SAFETY: written by this CPU in `new_thread_control`.
            id: ThreadId(unsafe { (*control).id.load(Ordering::Relaxed) }),
            name: self.name.clone(),
            cpu,
            control,
        };
        // SAFETY: a fresh control block of this CPU, not yet handed over.
        unsafe {
            (*control).name = self.name;
            (*control).result_drop = Some(drop_result::<T>);
            (*control).entry = Some(Box::new(move || {
                let value = Box::into_raw(Box::new(function()));
                let me = scheduler::current();
                (*me).result.store(value as u64, Ordering::Release);
            }));
            scheduler::prepare(control);
            (*control).cpu.store(cpu, Ordering::Release);
        }
        // SAFETY: control blocks are never freed; `id` is atomic and was
        // written by this CPU in `new_thread_control`.
        let id = ThreadId(unsafe { (*control).id.load(Ordering::Relaxed) });
        scheduler::hand_over(cpu, control);
        Ok(JoinHandle { thread: control, id, handle: thread, joined: false, _result: PhantomData })
    }

    /// Starts `function` on the next CPU by the placement policy.
    pub fn spawn<F, T>(self, function: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let cpu = next_cpu();
        self.spawn_on(cpu, function)
    }
}

/// The CPU the next `spawn` from this CPU goes to (see the module docs).
fn next_cpu() -> usize {
    let count = messages::count().max(1);
    let me = percpu::current_index();
    let spawned = scheduler::with_scheduler(|scheduler| {
        scheduler.spawned += 1;
        scheduler.spawned
    });
    let mut cpu = (me + spawned as usize) % count;
    // Skip CPUs that failed to start.
    for _ in 0..count {
        if crate::arch::smp::is_up(cpu) {
            break;
        }
        cpu = (cpu + 1) % count;
    }
    cpu
}

/// Starts `function` on CPU `cpu`. Panics if that CPU does not run or no
/// stack is free (`Builder::spawn_on` returns the error instead).
pub fn spawn_on<F, T>(cpu: usize, function: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().spawn_on(cpu, function) {
        Ok(handle) => handle,
        Err(error) => panic!("cannot spawn a thread on cpu {cpu}: {error}"),
    }
}

/// Starts `function` on a CPU chosen by the placement policy.
pub fn spawn<F, T>(function: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Builder::new().spawn(function) {
        Ok(handle) => handle,
        Err(error) => panic!("cannot spawn a thread: {error}"),
    }
}

/// Owns a thread's result. `join` waits for it; dropping the handle
/// detaches the thread.
pub struct JoinHandle<T> {
    thread: *mut Control,
    id: ThreadId,
    handle: Thread,
    joined: bool,
    _result: PhantomData<T>,
}

// SAFETY: the handle only reads atomics of the control block and moves a
// `T: Send` out of it.
unsafe impl<T: Send> Send for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub fn id(&self) -> ThreadId {
        self.id
    }

    /// The thread (as std's `JoinHandle::thread`).
    pub fn thread(&self) -> &Thread {
        &self.handle
    }

    /// Whether the thread has finished.
    pub fn is_finished(&self) -> bool {
        // SAFETY: control blocks are never freed; held until released.
        unsafe { (*self.thread).done.load(Ordering::Acquire) }
    }

    /// Waits for the thread and returns what its closure returned.
    pub fn join(mut self) -> T {
        let thread = self.thread;
        // SAFETY: held (not released) until the end of this function; the
        // waiter slot is the hand-shake with the exiting thread (see
        // `scheduler::exit_current` and `toro_core::wake`): each side
        // stores, fences, then loads.
        unsafe {
            while !(*thread).done.load(Ordering::Acquire) {
                // Nothing else to run here: poll a little before blocking.
                if scheduler::nothing_else_ready() && poll_done(thread) {
                    break;
                }
                let epoch = scheduler::begin_wait();
                (*thread).waiter.publish(scheduler::current() as u64, epoch, messages::full_fence);
                if (*thread).done.load(Ordering::Acquire) {
                    break;
                }
                scheduler::block();
            }
            let result = (*thread).result.load(Ordering::Acquire) as *mut T;
            (*thread).result.store(0, Ordering::Relaxed);
            (*thread).waiter.clear();
            self.joined = true;
            scheduler::release(thread);
            *Box::from_raw(result)
        }
    }
}

/// How long `join` polls before blocking when its CPU has nothing else to
/// run (about 10-20 us at 2-3 GHz).
const JOIN_SPIN_TICKS: u64 = 40_000;

/// Polls `thread`'s `done` flag for up to `JOIN_SPIN_TICKS`.
fn poll_done(thread: *mut Control) -> bool {
    let start = crate::time::Instant::now().ticks();
    while crate::time::Instant::now().ticks() - start < JOIN_SPIN_TICKS {
        // SAFETY: control blocks are never freed; `done` is atomic.
        if unsafe { (*thread).done.load(Ordering::Acquire) } {
            return true;
        }
        // Keep serving messages (threads handed back, wake-ups): other CPUs
        // may be waiting for this one.
        messages::poll_turn();
    }
    false
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if !self.joined {
            scheduler::release(self.thread);
        }
    }
}

/// A thread-local value: each thread sees its own, made by `init` on first
/// use and dropped when the thread exits. Declare with `toro::thread_local!`.
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> Self {
        Self { init }
    }

    /// Runs `f` with this thread's value.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let key = self as *const Self as usize;
        let thread = scheduler::current();
        // SAFETY: the running thread's own locals; the reference handed to
        // `f` points into a Box, which stays put while the thread lives even
        // if `locals` grows (another key's first use inside `f`).
        let value: *const T = unsafe {
            let locals = &mut (*thread).locals;
            let index = match locals.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    let value = (self.init)();
                    let locals = &mut (*thread).locals;
                    locals.push((key, Box::new(value)));
                    locals.len() - 1
                }
            };
            let locals = &(*thread).locals;
            locals[index].1.downcast_ref::<T>().expect("a key holds values of its type") as *const T
        };
        // SAFETY: see above.
        f(unsafe { &*value })
    }
}

/// Declares thread-local values, like `std::thread_local!`:
/// `toro::thread_local!(static COUNTER: Cell<u32> = Cell::new(0));`
#[macro_export]
macro_rules! thread_local {
    ($(#[$attribute:meta])* $visibility:vis static $name:ident: $type:ty = $init:expr $(;)?) => {
        $(#[$attribute])* $visibility static $name: $crate::thread::LocalKey<$type> =
            $crate::thread::LocalKey::new({
                fn init() -> $type {
                    $init
                }
                init
            });
    };
}

/// Thread-stack zones of the other CPUs, published by the boot CPU; each
/// CPU starts its own scheduler once it sees its zone.
static ZONES: [(core::sync::atomic::AtomicU64, core::sync::atomic::AtomicU64); percpu::MAX_CPUS] =
    [const { (core::sync::atomic::AtomicU64::new(0), core::sync::atomic::AtomicU64::new(0)) }; percpu::MAX_CPUS];

/// Sets up threads: the boot CPU's context becomes `main` (with an idle
/// thread of its own); every other CPU gets its stack zone and starts its
/// scheduler when woken (`wake_application_processors`). Boot CPU, after
/// memory and messages. `zones[i]` belongs to CPU `i`.
pub(crate) fn init(zones: &[crate::arch::paging::StackZone]) {
    let me = percpu::current_index();
    stack::init();
    watchdog::init();
    scheduler::tlb_init();
    for (cpu, zone) in zones.iter().enumerate() {
        if cpu == me {
            continue;
        }
        ZONES[cpu].1.store(zone.end, Ordering::Relaxed);
        ZONES[cpu].0.store(zone.start, Ordering::Release);
    }
    scheduler::init_cpu(zones[me], "main");
    scheduler::make_idle_thread();
}

/// Wakes every other running CPU so it starts its scheduler.
pub(crate) fn wake_application_processors() {
    for cpu in 1..messages::count() {
        if let Some(block) = percpu::by_index(cpu) {
            crate::arch::apic::send_fixed(block.apic_id, messages::WAKE_VECTOR);
        }
    }
}

/// What a CPU does once started: wait (halted) for its stack zone, start
/// its scheduler, then be its idle thread. Messages sent to it meanwhile
/// wait in its rings.
pub(crate) fn early_idle_loop() -> ! {
    let me = percpu::current_index();
    loop {
        let start = ZONES[me].0.load(Ordering::Acquire);
        if start != 0 {
            let zone =
                crate::arch::paging::StackZone { start, end: ZONES[me].1.load(Ordering::Relaxed), slot: STACK_SLOT };
            scheduler::init_cpu(zone, "idle");
            scheduler::idle_loop();
        }
        // The boot CPU's wake-up IPI ends the halt.
        crate::arch::cpu::halt_until_interrupt();
    }
}
