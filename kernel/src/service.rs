//! Services: the kernel's one way to own a resource. A value lives on its
//! owner CPU; a [`Handle`] reaches it from any CPU.
//!
//! ```ignore
//! let counter = toro::service::Builder::new("counter").cpu(1).start(|| 0u64)?;
//! let other = counter.clone(); // Clone + Send + Sync
//! toro::thread::spawn_on(2, move || other.call(|n| { *n += 1; *n }));
//! counter.post(|n| *n = 0); // fire and forget
//! ```
//!
//! # The model
//!
//! - The value `S` is made on its owner CPU (by the closure given to
//!   `start`, so its memory is the owner's) and never leaves it: `S` need
//!   not be `Send`. Only the owner CPU ever touches it.
//! - `call(|s| ...)` from a thread on another CPU is a message (a typed
//!   `cpu::send_to` through the per-CPU-pair ring) carrying a pointer to a
//!   request frame on the caller's stack; the caller's thread blocks (its
//!   CPU runs other threads), the owner's service thread runs the closure
//!   with `&mut S` and wakes the caller. No allocation, no lock, no
//!   lock-prefixed instruction anywhere on the way (the lock check covers
//!   `deliver_job`, `Inbox::notify`, `Completion::complete` and
//!   `Completion::wait`).
//! - On the owner CPU, `call` is a direct call on the caller's thread: no
//!   message, no switch. Only if the value is in use (a request that
//!   blocked inside, or the service thread mid-request) does the call
//!   queue behind it.
//! - Requests run in thread context (the service thread on the owner, or
//!   the direct caller), not in the scheduler: they may block, sleep,
//!   yield or call other services. At most one runs at a time: `S` is
//!   never aliased.
//! - Order: requests from one caller thread run in the order it made them
//!   (its calls block until done; its posts travel through one FIFO ring).
//! - `post` is fire-and-forget (the closure is boxed, as nothing waits);
//!   `try_call` / `try_post` report a service that is stopped or whose
//!   owner CPU does not run, instead of panicking.
//! - A service may have a poll hook with a deadline (a TCP stack's timers:
//!   `Builder::poll`) and interrupt sources bound to it
//!   (`Handle::bind_interrupt`): the interrupt's handler only marks the
//!   source pending; the service thread then runs the interrupt hook.
//! - Handles are plain pointers (no reference count: counting handles
//!   across CPUs would need a locked instruction). A service lives until
//!   `stop`; its bookkeeping (`Core`) is never freed, so a handle stays
//!   valid forever and calls after `stop` return `ServiceError::Stopped`.
//!
//! Cost of a call from another CPU: two messages (request, wake-up) and two
//! thread switches; see docs/services.md and `cargo xtask bench`.

use alloc::boxed::Box;
use alloc::string::String;
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use toro_core::run_queue::{Linked, RunQueue};

use crate::arch::irq::{self, Registration, Trigger};
use crate::arch::percpu;
use crate::cpu as messages;
use crate::thread::scheduler::{self, Control};
use crate::time::Instant;

/// Why a request did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// The service was stopped (or its start failed).
    Stopped,
    /// Its owner CPU does not run (or messages are not set up yet).
    Unreachable(usize),
    /// A thread on the owner CPU called the service from inside one of its
    /// own requests (it would wait for itself forever).
    Reentered,
    /// No thread could be started for the service on its CPU.
    NoThread,
    /// The interrupt could not be bound (no free vector, no such GSI).
    Interrupt(crate::interrupts::InterruptError),
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Stopped => write!(f, "the service is stopped"),
            Self::Unreachable(cpu) => write!(f, "the service's CPU {cpu} does not run"),
            Self::Reentered => write!(f, "a service called itself from one of its own requests"),
            Self::NoThread => write!(f, "no thread could be started for the service"),
            Self::Interrupt(error) => write!(f, "cannot bind the interrupt: {error}"),
        }
    }
}

/// Up to this many requests run back to back before the service thread
/// yields to the other threads of its CPU.
const BATCH: u32 = 32;
/// How long a caller whose CPU has nothing else to run polls for its
/// answer before blocking (about 10-20 us at 2-3 GHz): an answer from an
/// awake owner comes sooner than a halt and wake-up IPI.
const CALL_SPIN_TICKS: u64 = 40_000;
/// Interrupt sources one service can have bound (one bit each).
pub const MAX_INTERRUPT_SOURCES: u32 = 64;

/// A request waiting in an inbox: the first field of every request frame.
#[repr(C)]
struct Header {
    next: *mut Header,
    /// Runs the request with the value (null: the service is stopped, so
    /// the request fails) and completes or frees its frame.
    run: unsafe fn(*mut Header, *mut u8),
}

// SAFETY: `next` is touched only through these two functions, by the
// inbox's queue on the owner CPU.
unsafe impl Linked for Header {
    unsafe fn next(node: *mut Self) -> *mut Self {
        // SAFETY: the queue promises `node` is live and its link is ours.
        unsafe { (*node).next }
    }

    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: as above.
        unsafe { (*node).next = next }
    }
}

/// A caller waiting for its request: on the caller's stack, which stays
/// put while it waits. The thread and wait epoch are taken when the frame
/// is made, before the request leaves, so the completer never reads the
/// frame after marking it done (the caller may return at once).
struct Completion {
    done: AtomicBool,
    thread: *mut Control,
    epoch: u64,
}

impl Completion {
    /// Starts the caller's wait (thread context).
    fn new() -> Self {
        let epoch = scheduler::begin_wait();
        Self { done: AtomicBool::new(false), thread: scheduler::current(), epoch }
    }

    /// Completer side: marks done and wakes the caller.
    ///
    /// # Safety
    /// `this` is a live completion whose request ran; not used afterwards.
    #[inline(never)]
    unsafe fn complete(this: *const Completion) {
        // SAFETY: live until `done` is stored (the caller returns after).
        let (thread, epoch) = unsafe { ((*this).thread, (*this).epoch) };
        // SAFETY: as above. `Release`: the result stored before is visible
        // to the caller once it sees `done`.
        unsafe { (*this).done.store(true, Ordering::Release) };
        scheduler::wake(thread, epoch);
    }

    /// Caller side: returns once done (blocking the thread, not the CPU).
    #[inline(never)]
    fn wait(&self) {
        if self.done.load(Ordering::Acquire) {
            return;
        }
        if scheduler::nothing_else_ready() {
            let start = crate::arch::cpu::rdtsc();
            while crate::arch::cpu::rdtsc() - start < CALL_SPIN_TICKS {
                if self.done.load(Ordering::Acquire) {
                    return;
                }
                // Serve our own messages: the owner may be waiting on us.
                messages::poll_turn();
            }
        }
        // The wake-up names this wait's epoch; a stale one (from an earlier
        // wait) is dropped by the scheduler, so `block` returns only when
        // this request is done (or was already, as a pending wake-up).
        while !self.done.load(Ordering::Acquire) {
            scheduler::block();
        }
    }
}

/// A call's frame: header first (its address is the frame's).
#[repr(C)]
struct CallFrame<F, R> {
    header: Header,
    function: Option<F>,
    result: Option<Result<R, ServiceError>>,
    completion: Completion,
}

unsafe fn run_call<S, F: FnOnce(&mut S) -> R, R>(header: *mut Header, value: *mut u8) {
    let frame = header as *mut CallFrame<F, R>;
    // SAFETY: `header` is the first field of a live `CallFrame<F, R>` (made
    // by `Handle::<S>::try_call`), whose caller waits; `value` is null or
    // the service's value, used by nobody else while this runs.
    unsafe {
        let function = (*frame).function.take();
        (*frame).result = Some(match (function, value.is_null()) {
            (Some(function), false) => Ok(function(&mut *(value as *mut S))),
            _ => Err(ServiceError::Stopped),
        });
        Completion::complete(&raw const (*frame).completion);
    }
}

/// A post's frame, boxed (nothing waits for it).
#[repr(C)]
struct PostFrame<F> {
    header: Header,
    function: F,
}

unsafe fn run_post<S, F: FnOnce(&mut S)>(header: *mut Header, value: *mut u8) {
    // SAFETY: made by `Box::into_raw` of a `PostFrame<F>` in `try_post`;
    // run once.
    let frame = unsafe { Box::from_raw(header as *mut PostFrame<F>) };
    if !value.is_null() {
        // SAFETY: the service's value, used by nobody else while this runs.
        (frame.function)(unsafe { &mut *(value as *mut S) });
    }
}

/// Counters of one service, as its owner saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls and posts that ran directly on the caller's thread (owner CPU).
    pub direct: u64,
    /// Requests that arrived as messages from other CPUs.
    pub messages: u64,
    /// Requests from the owner CPU that queued behind a busy value.
    pub queued_locally: u64,
    /// Interrupts delivered to the service (bits seen by its thread).
    pub interrupts: u64,
    /// Runs of the poll hook.
    pub polls: u64,
}

/// The non-generic part of a service: its inbox and bookkeeping. Fields
/// other than `owner` and `stopped` are used by the owner CPU only (plain
/// cells: handlers write `pending` only inside interrupt windows, when no
/// thread code runs).
#[repr(C, align(64))]
struct Inbox {
    owner: usize,
    /// Written (release) by the owner once the value is dropped; read by
    /// any CPU to fail calls early.
    stopped: AtomicBool,
    queue: UnsafeCell<RunQueue<Header>>,
    /// The value is in use (a request runs, perhaps blocked inside).
    busy: Cell<bool>,
    stop_requested: Cell<bool>,
    /// The service thread and the epoch of its current wait, while it waits.
    thread: Cell<*mut Control>,
    waiting: Cell<Option<u64>>,
    /// The thread running a request now (to catch a service calling itself).
    running: Cell<*mut Control>,
    /// Interrupt sources marked by their handlers (one bit each): plain
    /// load and store, written only on this CPU.
    pending: AtomicU64,
    /// Bound sources by bit: vector, trigger, and GSI if an I/O APIC line.
    bound: UnsafeCell<[Option<BoundSource>; MAX_INTERRUPT_SOURCES as usize]>,
    bound_count: Cell<u32>,
    /// This service's deferred slot in the owner's interrupt table.
    deferred_index: Cell<Option<usize>>,
    /// Changed in place by the owner CPU only (`update_stats`): a copy in
    /// and out of a `Cell` cost the direct call a third of its time.
    stats: UnsafeCell<Stats>,
    name: String,
}

// SAFETY: shared between CPUs only for `owner` (immutable) and `stopped`
// (atomic); every other field is used by the owner CPU alone (see above).
unsafe impl Sync for Inbox {}

impl Inbox {
    fn update_stats(&self, change: impl FnOnce(&mut Stats)) {
        // SAFETY: owner CPU only (see `Inbox`), and `change` (a counter
        // increment at every call site) does not reach the stats again.
        change(unsafe { &mut *self.stats.get() });
    }

    /// Owner CPU, scheduler or thread context: wakes the service thread if
    /// it waits.
    #[inline(never)]
    fn notify(&self) {
        if let Some(epoch) = self.waiting.take() {
            scheduler::wake(self.thread.get(), epoch);
        }
    }

    /// Owner CPU: queues a request (or fails it, if the service stopped).
    fn enqueue(&self, header: *mut Header) {
        if self.stopped.load(Ordering::Relaxed) {
            // SAFETY: a live request frame, run once (failing).
            unsafe { ((*header).run)(header, core::ptr::null_mut()) };
            return;
        }
        // SAFETY: owner CPU; the frame stays put until it runs.
        unsafe { (*self.queue.get()).push_back(header) };
        self.notify();
    }

    fn pop(&self) -> Option<*mut Header> {
        // SAFETY: owner CPU, not re-entered (no request runs inside).
        unsafe { (*self.queue.get()).pop_front() }
    }

    fn has_requests(&self) -> bool {
        // SAFETY: owner CPU, a read.
        !unsafe { (*self.queue.get()).is_empty() }
    }
}

/// A request from another CPU arrives (job context on the owner).
#[inline(never)]
unsafe fn deliver_job((inbox, header): (*const Inbox, *mut Header)) {
    // SAFETY: the inbox is never freed; the frame is live until it runs.
    let inbox = unsafe { &*inbox };
    inbox.update_stats(|s| s.messages += 1);
    inbox.enqueue(header);
}

/// Sends a request to the owner of `inbox` (another CPU).
#[inline(never)]
fn send_request(inbox: &Inbox, header: *mut Header) -> Result<(), ServiceError> {
    // SAFETY: inboxes are never freed; the frame lives until it has run
    // (a call's caller waits for it; a post's box is freed by its run).
    unsafe { messages::send_to(inbox.owner, (inbox as *const Inbox, header), deliver_job) }
        .map_err(|_| ServiceError::Unreachable(inbox.owner))
}

/// What the owner keeps of a bound interrupt source.
#[derive(Clone, Copy)]
struct BoundSource {
    vector: u8,
    trigger: Trigger,
    gsi: Option<u32>,
}

/// Hooks, by the value's type.
type PollHook<S> = Box<dyn FnMut(&mut S, Instant) -> Option<Instant>>;
type InterruptHook<S> = Box<dyn FnMut(&mut S, u32)>;

/// A service: inbox first (`Handle` and messages point at it).
#[repr(C)]
struct Core<S> {
    inbox: Inbox,
    value: UnsafeCell<Option<S>>,
    poll: UnsafeCell<Option<PollHook<S>>>,
    on_interrupt: UnsafeCell<Option<InterruptHook<S>>>,
    /// The poll hook's next deadline (TSC ticks); `Some(0)`: poll at once.
    deadline: Cell<Option<u64>>,
}

/// Reaches a service from any CPU. `Clone + Send + Sync` whatever `S` is:
/// only closures and results (which must be `Send`) cross CPUs.
pub struct Handle<S: 'static> {
    core: &'static Core<S>,
    _value: PhantomData<fn(S)>,
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Handle<S> {}

// SAFETY: a handle only sends `Send` closures to the owner CPU and reads
// the inbox's immutable and atomic fields; `S` never leaves its owner.
unsafe impl<S> Send for Handle<S> {}
// SAFETY: as above; `&Handle` gives nothing more than a copy of it.
unsafe impl<S> Sync for Handle<S> {}

impl<S> core::fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Handle({:?} on cpu {})", self.core.inbox.name, self.core.inbox.owner)
    }
}

type SendPollHook<S> = Box<dyn FnMut(&mut S, Instant) -> Option<Instant> + Send>;
type SendInterruptHook<S> = Box<dyn FnMut(&mut S, u32) + Send>;

/// Options for a new service.
pub struct Builder<S> {
    name: String,
    cpu: Option<usize>,
    poll: Option<SendPollHook<S>>,
    on_interrupt: Option<SendInterruptHook<S>>,
}

impl<S: 'static> Builder<S> {
    /// A service named `name` (its thread's name, and in reports).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), cpu: None, poll: None, on_interrupt: None }
    }

    /// Its owner CPU (default: the CPU calling `start`).
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// A poll hook: run first right after start, then whenever the
    /// deadline it returned passes (`None`: no deadline until the next
    /// request or interrupt, after which it runs again).
    pub fn poll(mut self, hook: impl FnMut(&mut S, Instant) -> Option<Instant> + Send + 'static) -> Self {
        self.poll = Some(Box::new(hook));
        self
    }

    /// The interrupt hook: run on the service thread with the source
    /// number (`Bound::source`) of each interrupt that arrived.
    pub fn on_interrupt(mut self, hook: impl FnMut(&mut S, u32) + Send + 'static) -> Self {
        self.on_interrupt = Some(Box::new(hook));
        self
    }

    /// Starts the service: `init` makes the value on the owner CPU.
    /// Returns once the value exists.
    pub fn start(self, init: impl FnOnce() -> S + Send + 'static) -> Result<Handle<S>, ServiceError> {
        self.try_start(move || Ok::<S, ServiceError>(init())).map_err(|error| match error {
            StartError::Service(error) | StartError::Init(error) => error,
        })
    }

    /// Like `start`, but `init` may fail; the service then does not exist.
    pub fn try_start<E: Send + 'static>(
        self,
        init: impl FnOnce() -> Result<S, E> + Send + 'static,
    ) -> Result<Handle<S>, StartError<E>> {
        self.try_start_with(move |_| init())
    }

    /// Like `try_start`, but `init` gets a [`Starting`], through which it
    /// binds interrupt sources before the value exists (a device whose
    /// queues must name their interrupt when set up: virtio-pci's MSI-X).
    /// An interrupt that arrives before `init` returns runs the hook just
    /// after. If `init` fails, what it bound stays allocated (the sources'
    /// handler only marks a stopped service).
    pub fn try_start_with<E: Send + 'static>(
        self,
        init: impl FnOnce(&Starting<S>) -> Result<S, E> + Send + 'static,
    ) -> Result<Handle<S>, StartError<E>> {
        let cpu = self.cpu.unwrap_or_else(percpu::current_index);
        let Builder { name, poll, on_interrupt, .. } = self;
        let thread_name = name.clone();
        // The new thread makes the service and reports back through `start`.
        let start = StartFrame::<S, E> { result: UnsafeCell::new(None), completion: Completion::new() };
        let start_address = &start as *const StartFrame<S, E> as usize;
        let spawned = crate::thread::Builder::new().name(thread_name).spawn_on(cpu, move || {
            let start = start_address as *const StartFrame<S, E>;
            let inbox = Inbox {
                owner: percpu::current_index(),
                stopped: AtomicBool::new(false),
                queue: UnsafeCell::new(RunQueue::new()),
                busy: Cell::new(true),
                stop_requested: Cell::new(false),
                thread: Cell::new(scheduler::current()),
                waiting: Cell::new(None),
                running: Cell::new(core::ptr::null_mut()),
                pending: AtomicU64::new(0),
                bound: UnsafeCell::new([None; MAX_INTERRUPT_SOURCES as usize]),
                bound_count: Cell::new(0),
                deferred_index: Cell::new(None),
                stats: UnsafeCell::new(Stats::default()),
                name,
            };
            let core: &'static Core<S> = Box::leak(Box::new(Core {
                inbox,
                value: UnsafeCell::new(None),
                poll: UnsafeCell::new(poll.map(|hook| hook as PollHook<S>)),
                on_interrupt: UnsafeCell::new(on_interrupt.map(|hook| hook as InterruptHook<S>)),
                deadline: Cell::new(Some(0)),
            }));
            let outcome = init(&Starting { handle: Handle { core, _value: PhantomData } });
            let succeeded = outcome.is_ok();
            // SAFETY: `start` lives until its completion is done (the
            // starter waits); written once, here.
            unsafe {
                *(*start).result.get() = Some(outcome.map(|value| {
                    *core.value.get() = Some(value);
                    Handle { core, _value: PhantomData }
                }));
                Completion::complete(&raw const (*start).completion);
            }
            if succeeded {
                core.inbox.busy.set(false);
                service_main(core);
            } else {
                core.inbox.stopped.store(true, Ordering::Release);
            }
        });
        match spawned {
            Ok(join) => drop(join),
            Err(crate::thread::SpawnError::NoSuchCpu(cpu)) => {
                return Err(StartError::Service(ServiceError::Unreachable(cpu)));
            }
            Err(crate::thread::SpawnError::NoStack | crate::thread::SpawnError::StackTooLarge { .. }) => {
                return Err(StartError::Service(ServiceError::NoThread))
            }
        }
        start.completion.wait();
        match start.result.into_inner() {
            Some(Ok(handle)) => Ok(handle),
            Some(Err(error)) => Err(StartError::Init(error)),
            None => Err(StartError::Service(ServiceError::Stopped)),
        }
    }
}

/// A service being started, as its `init` sees it (`Builder::try_start_with`):
/// it can bind interrupt sources; calls would wait for the value and are
/// not offered.
pub struct Starting<S: 'static> {
    handle: Handle<S>,
}

impl<S: 'static> Starting<S> {
    /// Binds an interrupt source (as `Handle::bind_interrupt`).
    pub fn bind_interrupt(&self, source: InterruptSource) -> Result<Bound, ServiceError> {
        self.handle.bind_interrupt(source)
    }

    /// The owner CPU.
    pub fn cpu(&self) -> usize {
        self.handle.cpu()
    }

    /// The service's handle, for `init` to keep where the value's users
    /// find it (the network instances' `poll_by` requests) without a call
    /// after the start. A call through it waits until `init` has returned,
    /// so `init` itself must not make one (it would wait for itself); not
    /// offered outside the kernel for that reason.
    pub(crate) fn handle(&self) -> Handle<S> {
        self.handle
    }
}

/// Why `try_start` failed.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError<E> {
    /// The service could not be set up.
    Service(ServiceError),
    /// `init` failed with this.
    Init(E),
}

struct StartFrame<S: 'static, E> {
    result: UnsafeCell<Option<Result<Handle<S>, E>>>,
    completion: Completion,
}

/// The service thread: runs requests, interrupts and the poll hook; waits
/// when there is nothing to do.
#[inline(never)]
fn service_main<S>(core: &'static Core<S>) {
    let inbox = &core.inbox;
    loop {
        let mut ran = 0;
        while !inbox.busy.get() {
            let Some(header) = inbox.pop() else { break };
            run_request(core, header);
            ran += 1;
            if ran % BATCH == 0 {
                crate::thread::yield_now();
            }
        }
        if !inbox.busy.get() {
            run_interrupts(core);
            run_poll(core);
        }
        if inbox.stop_requested.get() && !inbox.busy.get() && !inbox.has_requests() {
            // SAFETY: owner, not busy: nobody else uses the value.
            drop(unsafe { (*core.value.get()).take() });
            inbox.stopped.store(true, Ordering::Release);
            // Late requests already queued fail (`enqueue` fails new ones).
            while let Some(header) = inbox.pop() {
                // SAFETY: a live request frame, run once (failing).
                unsafe { ((*header).run)(header, core::ptr::null_mut()) };
            }
            return;
        }
        let epoch = scheduler::begin_wait();
        inbox.waiting.set(Some(epoch));
        // While the value is busy (a direct caller blocked inside a
        // request), only that caller's `after_direct` ends this wait.
        let busy = inbox.busy.get();
        let deadline = if busy { None } else { core.deadline.get() };
        if !busy && core.has_work() {
            inbox.waiting.set(None);
            // A scheduling point before going round again. Work that keeps
            // coming (a poll hook that asks for "now" every time: smoltcp
            // did with peers that keep their window shut) must not keep the
            // CPU's other threads from running; the service loop looped
            // here without one and the watchdog reported the CPU. With
            // nothing else ready the yield returns at once.
            crate::thread::yield_now();
            continue;
        }
        match deadline {
            Some(deadline) => scheduler::block_until(epoch, deadline),
            None => scheduler::block(),
        }
        inbox.waiting.set(None);
    }
}

impl<S> Core<S> {
    /// Whether the service thread has something to do now.
    fn has_work(&self) -> bool {
        let inbox = &self.inbox;
        inbox.has_requests()
            || inbox.pending.load(Ordering::Relaxed) != 0
            || inbox.stop_requested.get()
            || self.deadline.get().is_some_and(|d| d <= crate::arch::cpu::rdtsc())
    }

    /// After a direct call: hand what arrived meanwhile to the service thread.
    fn after_direct(&self) {
        if self.has_work() {
            self.inbox.notify();
        }
    }
}

/// Runs one request with the value (owner CPU, not busy).
fn run_request<S>(core: &'static Core<S>, header: *mut Header) {
    let inbox = &core.inbox;
    inbox.busy.set(true);
    inbox.running.set(scheduler::current());
    // SAFETY: owner CPU and not busy before: nobody else uses the value
    // until `busy` is cleared.
    let value = match unsafe { (*core.value.get()).as_mut() } {
        Some(value) => value as *mut S as *mut u8,
        None => core::ptr::null_mut(),
    };
    // SAFETY: a live request frame, run once.
    unsafe { ((*header).run)(header, value) };
    inbox.running.set(core::ptr::null_mut());
    inbox.busy.set(false);
}

fn run_interrupts<S>(core: &'static Core<S>) {
    let inbox = &core.inbox;
    let pending = inbox.pending.load(Ordering::Relaxed);
    if pending == 0 {
        return;
    }
    inbox.pending.store(0, Ordering::Relaxed);
    inbox.busy.set(true);
    for source in 0..MAX_INTERRUPT_SOURCES {
        if pending & (1 << source) == 0 {
            continue;
        }
        inbox.update_stats(|s| s.interrupts += 1);
        // SAFETY: owner CPU, busy: the value and hooks are ours.
        unsafe {
            if let (Some(hook), Some(value)) = (&mut *core.on_interrupt.get(), &mut *core.value.get()) {
                hook(value, source);
            }
            if let Some(BoundSource { vector, trigger: Trigger::Level, .. }) = (*inbox.bound.get())[source as usize] {
                irq::end_level_interrupt(vector);
            }
        }
    }
    inbox.busy.set(false);
    // Something happened: let the poll hook look again.
    if core.deadline.get().is_none() {
        // SAFETY: owner CPU, a read.
        if unsafe { (*core.poll.get()).is_some() } {
            core.deadline.set(Some(0));
        }
    }
}

fn run_poll<S>(core: &'static Core<S>) {
    let Some(deadline) = core.deadline.get() else { return };
    let now = Instant::now();
    if deadline > now.ticks() {
        return;
    }
    let inbox = &core.inbox;
    inbox.busy.set(true);
    // SAFETY: owner CPU, busy: the value and hook are ours.
    let next = unsafe {
        match (&mut *core.poll.get(), &mut *core.value.get()) {
            (Some(hook), Some(value)) => hook(value, now).map(Instant::ticks),
            _ => None,
        }
    };
    inbox.update_stats(|s| s.polls += 1);
    core.deadline.set(next);
    inbox.busy.set(false);
}

/// An interrupt source to bind to a service (`Handle::bind_interrupt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptSource {
    /// An MSI or MSI-X vector: the driver writes `Bound::msi` into the
    /// device's capability or table entry.
    Msi,
    /// An I/O APIC line (a GSI), routed to the owner CPU.
    Gsi { gsi: u32, level: bool, active_low: bool },
    /// Just a vector on the owner CPU (IPIs, tests).
    Vector,
}

/// A bound interrupt source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The number the interrupt hook receives.
    pub source: u32,
    /// The owner CPU, its APIC id, and the vector there.
    pub cpu: usize,
    pub apic_id: u32,
    pub vector: u8,
    /// For `InterruptSource::Msi`: what to program into the device.
    pub msi: Option<crate::interrupts::MsiMessage>,
}

/// The handler of every interrupt bound to a service: `data` is the inbox
/// address with the source number in its low 6 bits (inboxes are aligned
/// to 64). Acknowledges nothing itself (`irq::dispatch` did) and marks the
/// source pending.
fn service_interrupt(data: usize) {
    let inbox = (data & !63) as *const Inbox;
    let source = data & 63;
    // SAFETY: inboxes are never freed; `pending` is written only on this
    // CPU (interrupt context here, thread context with interrupts off
    // elsewhere), so a load and a store do.
    unsafe {
        let pending = (*inbox).pending.load(Ordering::Relaxed);
        (*inbox).pending.store(pending | 1 << source, Ordering::Relaxed);
        if let Some(index) = (*inbox).deferred_index.get() {
            irq::mark_deferred(index);
        }
    }
}

/// Deferred work after `service_interrupt`: wake the service thread.
fn service_interrupt_work(data: usize) {
    // SAFETY: inboxes are never freed; owner CPU, scheduler context.
    unsafe { (*(data as *const Inbox)).notify() };
}

/// A storm on a service's source (scheduler context, owner CPU): an I/O
/// APIC line is masked there (a message to the boot CPU, which owns the I/O
/// APICs). An MSI source stays silenced at this CPU (one interrupt per
/// scheduling point at most); its driver may mask it at the device.
fn on_storm(data: usize) {
    let inbox = (data & !63) as *const Inbox;
    // SAFETY: inboxes are never freed; owner CPU, scheduler context.
    let bound = unsafe { (*(*inbox).bound.get())[data & 63] };
    if let Some(BoundSource { gsi: Some(gsi), .. }) = bound {
        log::warn!("interrupt storm: GSI {gsi} masked at its I/O APIC");
        crate::interrupts::mask_gsi_later(gsi);
    }
}

impl<S: 'static> Handle<S> {
    /// The owner CPU.
    pub fn cpu(&self) -> usize {
        self.core.inbox.owner
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.core.inbox.name
    }

    /// Whether the service has stopped.
    pub fn is_stopped(&self) -> bool {
        self.core.inbox.stopped.load(Ordering::Acquire)
    }

    /// Runs `function` with the value on the owner CPU and returns what it
    /// returned. Panics if the service is stopped or unreachable
    /// (`try_call` returns the error).
    pub fn call<R: Send>(&self, function: impl FnOnce(&mut S) -> R + Send) -> R {
        match self.try_call(function) {
            Ok(result) => result,
            Err(error) => panic!("call to service {:?}: {error}", self.core.inbox.name),
        }
    }

    /// Runs `function` with the value on the owner CPU; the caller's
    /// thread blocks meanwhile (direct call on the owner CPU).
    #[inline(never)]
    pub fn try_call<R: Send>(&self, function: impl FnOnce(&mut S) -> R + Send) -> Result<R, ServiceError> {
        let inbox = &self.core.inbox;
        if inbox.stopped.load(Ordering::Acquire) {
            return Err(ServiceError::Stopped);
        }
        let here = percpu::current_index() == inbox.owner;
        if here && !inbox.busy.get() && !inbox.has_requests() {
            // Direct: nothing else uses the value, nothing is queued ahead.
            inbox.busy.set(true);
            inbox.running.set(scheduler::current());
            inbox.update_stats(|s| s.direct += 1);
            // SAFETY: owner CPU, not busy before: the value is ours until
            // `busy` is cleared; it exists while not stopped.
            let result = match unsafe { (*self.core.value.get()).as_mut() } {
                Some(value) => Ok(function(value)),
                None => Err(ServiceError::Stopped),
            };
            inbox.running.set(core::ptr::null_mut());
            inbox.busy.set(false);
            // What arrived while we ran is the service thread's to do.
            self.core.after_direct();
            return result;
        }
        if here && inbox.running.get() == scheduler::current() {
            return Err(ServiceError::Reentered);
        }
        fn header_of<S, F: FnOnce(&mut S) -> R, R>(_: &F) -> Header {
            Header { next: core::ptr::null_mut(), run: run_call::<S, F, R> }
        }
        let mut frame = CallFrame {
            header: header_of::<S, _, R>(&function),
            function: Some(function),
            result: None,
            completion: Completion::new(),
        };
        let header = &raw mut frame.header;
        if here {
            inbox.update_stats(|s| s.queued_locally += 1);
            inbox.enqueue(header);
        } else {
            send_request(inbox, header)?;
        }
        frame.completion.wait();
        frame.result.take().unwrap_or(Err(ServiceError::Stopped))
    }

    /// Runs `function` with the value on the owner CPU, later; returns at
    /// once. Dropped silently if the service is stopped (`try_post` says).
    pub fn post(&self, function: impl FnOnce(&mut S) + Send + 'static) {
        let _ = self.try_post(function);
    }

    /// Like `post`, but says when the request cannot be delivered. (A
    /// request delivered just as the service stops is dropped.)
    #[inline(never)]
    pub fn try_post(&self, function: impl FnOnce(&mut S) + Send + 'static) -> Result<(), ServiceError> {
        let inbox = &self.core.inbox;
        if inbox.stopped.load(Ordering::Acquire) {
            return Err(ServiceError::Stopped);
        }
        if percpu::current_index() == inbox.owner && !inbox.busy.get() && !inbox.has_requests() {
            inbox.busy.set(true);
            inbox.update_stats(|s| s.direct += 1);
            // SAFETY: as in `try_call`.
            if let Some(value) = unsafe { (*self.core.value.get()).as_mut() } {
                function(value);
            }
            inbox.busy.set(false);
            self.core.after_direct();
            return Ok(());
        }
        fn header_of<S, F: FnOnce(&mut S)>(_: &F) -> Header {
            Header { next: core::ptr::null_mut(), run: run_post::<S, F> }
        }
        let frame = Box::new(PostFrame { header: header_of::<S, _>(&function), function });
        let header = Box::into_raw(frame) as *mut Header;
        if percpu::current_index() == inbox.owner {
            inbox.update_stats(|s| s.queued_locally += 1);
            inbox.enqueue(header);
            return Ok(());
        }
        send_request(inbox, header).inspect_err(|_| {
            // SAFETY: not sent: still ours, run once (dropping it).
            unsafe { ((*header).run)(header, core::ptr::null_mut()) }
        })
    }

    /// Stops the service: requests already queued still run, then the
    /// value is dropped on the owner CPU and later requests fail with
    /// `Stopped`. Returns once the stop is requested.
    pub fn stop(&self) -> Result<(), ServiceError> {
        let inbox: &'static Inbox = &self.core.inbox;
        run_on(inbox.owner, move || {
            inbox.stop_requested.set(true);
            inbox.notify();
        })
    }

    /// Asks for the poll hook to run by `deadline` (sooner than the
    /// deadline it last returned, say because a request started a timer),
    /// waking the service thread if it waits. On the owner CPU a few plain
    /// writes; from another CPU a message.
    #[inline(never)]
    pub fn poll_by(&self, deadline: Instant) {
        let address = self.core as *const Core<S> as usize;
        let lower = move || {
            // SAFETY: services are never freed; this runs on the owner CPU,
            // the only one touching these cells.
            let core = unsafe { &*(address as *const Core<S>) };
            // SAFETY: owner CPU, a read.
            if unsafe { (*core.poll.get()).is_none() } {
                return;
            }
            let ticks = deadline.ticks();
            if core.deadline.get().is_none_or(|current| current > ticks) {
                core.deadline.set(Some(ticks));
                core.inbox.notify();
            }
        };
        if percpu::current_index() == self.core.inbox.owner {
            lower();
        } else {
            let _ = run_on(self.core.inbox.owner, lower);
        }
    }

    /// The service's counters (asked on the owner CPU).
    pub fn stats(&self) -> Result<Stats, ServiceError> {
        let inbox: &'static Inbox = &self.core.inbox;
        // SAFETY: read on the owner CPU, the only one that writes it.
        run_on(inbox.owner, move || unsafe { *inbox.stats.get() })
    }

    /// Binds an interrupt source to the service: a vector on the owner CPU
    /// whose handler marks the source pending, so the service thread runs
    /// the interrupt hook (`Builder::on_interrupt`) with `Bound::source`.
    /// A GSI is routed to the owner CPU's APIC id at the I/O APIC; for MSI
    /// the driver programs `Bound::msi` into the device.
    pub fn bind_interrupt(&self, source: InterruptSource) -> Result<Bound, ServiceError> {
        let inbox: &'static Inbox = &self.core.inbox;
        let bound = run_on(inbox.owner, move || bind_here(inbox, source))??;
        if let InterruptSource::Gsi { gsi, level, active_low } = source {
            let apic_id = bound.apic_id;
            let vector = bound.vector;
            run_on(0, move || crate::interrupts::route_here(gsi, apic_id, vector, level, active_low))?
                .map_err(ServiceError::Interrupt)?;
        }
        Ok(bound)
    }
}

/// `bind_interrupt`'s part on the owner CPU (scheduler context).
fn bind_here(inbox: &'static Inbox, source: InterruptSource) -> Result<Bound, ServiceError> {
    use crate::interrupts::InterruptError;
    let number = inbox.bound_count.get();
    if number >= MAX_INTERRUPT_SOURCES {
        return Err(ServiceError::Interrupt(InterruptError::TooManySources));
    }
    if inbox.deferred_index.get().is_none() {
        let index = irq::add_deferred(service_interrupt_work, inbox as *const Inbox as usize)
            .map_err(|error| ServiceError::Interrupt(InterruptError::Vector(error)))?;
        inbox.deferred_index.set(Some(index));
    }
    let (trigger, gsi) = match source {
        InterruptSource::Gsi { gsi, level: true, .. } => (Trigger::Level, Some(gsi)),
        InterruptSource::Gsi { gsi, level: false, .. } => (Trigger::Edge, Some(gsi)),
        _ => (Trigger::Edge, None),
    };
    let registration = Registration {
        name: inbox.name.as_str(),
        handler: service_interrupt,
        data: inbox as *const Inbox as usize | number as usize,
        trigger,
        on_storm: Some(on_storm),
    };
    let vector = irq::allocate(registration).map_err(|error| ServiceError::Interrupt(InterruptError::Vector(error)))?;
    // SAFETY: owner CPU, scheduler context: nothing else uses `bound`.
    unsafe { (*inbox.bound.get())[number as usize] = Some(BoundSource { vector, trigger, gsi }) };
    inbox.bound_count.set(number + 1);
    let apic_id = percpu::current().apic_id;
    let msi = match source {
        InterruptSource::Msi => {
            Some(crate::interrupts::MsiMessage::new(apic_id, vector).map_err(ServiceError::Interrupt)?)
        }
        _ => None,
    };
    Ok(Bound { source: number, cpu: inbox.owner, apic_id, vector, msi })
}

/// A run-on-CPU request: `function` and its result, on the caller's stack.
struct RunFrame<F, R> {
    function: Option<F>,
    result: Option<R>,
    completion: Completion,
}

unsafe fn run_on_job<F: FnOnce() -> R, R>(frame: *mut RunFrame<F, R>) {
    // SAFETY: a live frame whose caller waits; run once.
    unsafe {
        if let Some(function) = (*frame).function.take() {
            (*frame).result = Some(function());
        }
        Completion::complete(&raw const (*frame).completion);
    }
}

/// Runs `function` on CPU `cpu` in scheduler context (short, never
/// blocking: it may not call services or wait) and returns its result; the
/// caller's thread blocks meanwhile. On `cpu` itself, a direct call.
#[inline(never)]
pub fn run_on<R: Send>(cpu: usize, function: impl FnOnce() -> R + Send) -> Result<R, ServiceError> {
    if cpu == percpu::current_index() {
        return Ok(function());
    }
    let mut frame = RunFrame { function: Some(function), result: None, completion: Completion::new() };
    // SAFETY: the frame lives until its completion is done (we wait below).
    unsafe { messages::send_to(cpu, &raw mut frame, run_on_job) }.map_err(|_| ServiceError::Unreachable(cpu))?;
    frame.completion.wait();
    frame.result.take().ok_or(ServiceError::Unreachable(cpu))
}
