//! Each CPU's cooperative scheduler: run queue, sleepers, the idle thread,
//! and the hand-over of threads between CPUs.
//!
//! A CPU's `Scheduler` and every thread control block queued on it are
//! touched only by that CPU. Threads cross CPUs only as messages through the
//! per-CPU-pair rings (`crate::cpu`), which carry ownership with them
//! (release on push, acquire on pop). Picking the next thread is O(1): a
//! FIFO of control blocks linked through their own `next` field
//! (`toro_core::run_queue`, tested on the host).
//!
//! Control blocks are type-stable: never freed, only recycled through a
//! per-CPU pool. So a late message naming a thread (a wake-up for a wait
//! that already ended) never touches freed memory; it carries the wait's
//! epoch and is dropped when the epoch no longer matches.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use toro_core::run_queue::{Linked, RunQueue};
use toro_core::timer_heap::{TimerHeap, TimerId};
use toro_core::wake::{WaitEpoch, WaiterSlot};

use crate::arch::context::{prepare_stack, switch_context};
use crate::arch::paging::StackZone;
use crate::arch::percpu::{self, PerCpuCell};
use crate::arch::{apic, cpu as arch_cpu};
use crate::cpu as messages;

use super::stack::STACK_SLOT;

/// The IPI vector of the timer interrupt.
pub(crate) use crate::arch::apic::TIMER_VECTOR;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Ready,
    Blocked,
    Sleeping,
    Exited,
}

/// A thread control block. Fields marked "owner" are used only by the CPU
/// the thread is on (`cpu`); the atomics may be read by any CPU.
#[repr(C)]
pub(crate) struct Control {
    /// Owner: the saved stack pointer while not running (offset 0).
    pub saved_rsp: u64,
    /// Owner: the run-queue link (see `Linked` below); null unless queued
    /// behind another thread.
    pub next: *mut Control,
    /// The CPU the thread is on; written by the owner before it hands the
    /// thread to another CPU.
    pub cpu: AtomicUsize,
    /// Unique id (never reused), written at spawn.
    pub id: AtomicU64,
    /// Advanced by the owner each time the thread starts a wait; a
    /// wake-up names the epoch it is for.
    pub wait_epoch: WaitEpoch,
    /// Owner: scheduling state.
    pub state: State,
    /// Owner: a wake-up for the current wait arrived before it blocked.
    pub wake_pending: bool,
    /// Owner: the thread's name.
    pub name: Option<String>,
    /// Owner: what the thread runs (taken at start).
    pub entry: Option<Box<dyn FnOnce() + Send>>,
    /// The stack slot `[guard, top)`; `None` for a CPU's original context
    /// (boot or AP stack).
    pub stack: Option<(u64, u64)>,
    /// The CPU whose stack zone holds the slot; the block returns to that
    /// CPU's pool when recycled.
    pub home: usize,
    /// Owner: thread-local values by key.
    pub locals: Vec<(usize, Box<dyn Any>)>,
    /// Set (release) when the thread's result is stored.
    pub done: AtomicBool,
    /// The joining thread and its wait epoch, if one waits (written by
    /// the joiner; read by the exiting thread, see `exit_current`).
    pub waiter: WaiterSlot,
    /// The boxed result (`Box<T>` as a raw pointer) and how to drop it if
    /// no one joins.
    pub result: AtomicU64,
    pub result_drop: Option<unsafe fn(*mut u8)>,
    /// Owner of the exit CPU: exit finished / the JoinHandle let go. The
    /// control block is recycled when both are true (both are decided on
    /// the CPU the thread exited on, so exactly once).
    pub exited: bool,
    pub handle_released: bool,
    /// Owner: `Thread::unpark` came (std's park token).
    pub unpark_token: bool,
    /// Owner: the epoch of the wait while parked (0: not parked).
    pub park_epoch: u64,
    /// Owner: this thread's entry in its CPU's deadline heap while it
    /// sleeps or waits with a deadline; cancelled when the wait ends.
    pub timer: Option<TimerId>,
}

// SAFETY: `next` is a plain field of the control block, read and written
// only through these two functions while the block is in a run queue, and
// they touch nothing else. They go through the raw pointer to the one
// field: other CPUs may read the block's atomics meanwhile, so no `&mut`
// to the whole block is made.
unsafe impl Linked for Control {
    unsafe fn next(node: *mut Self) -> *mut Self {
        // SAFETY: the caller (the run queue) promises `node` is live and
        // its link is ours.
        unsafe { (*node).next }
    }

    unsafe fn set_next(node: *mut Self, next: *mut Self) {
        // SAFETY: as above.
        unsafe { (*node).next = next }
    }
}

impl Control {
    fn new() -> Self {
        Self {
            saved_rsp: 0,
            next: core::ptr::null_mut(),
            cpu: AtomicUsize::new(0),
            id: AtomicU64::new(0),
            wait_epoch: WaitEpoch::new(),
            state: State::Running,
            wake_pending: false,
            name: None,
            entry: None,
            stack: None,
            home: 0,
            locals: Vec::new(),
            done: AtomicBool::new(false),
            waiter: WaiterSlot::new(),
            result: AtomicU64::new(0),
            result_drop: None,
            exited: false,
            handle_released: false,
            unpark_token: false,
            park_epoch: 0,
            timer: None,
        }
    }
}

/// What the thread that switched away asked for, done by whatever runs
/// next on this CPU (once off the old thread's stack).
pub(crate) enum After {
    Nothing,
    Migrate(*mut Control, usize),
    Exit(*mut Control),
}

/// An entry of the deadline heap (the deadline is the heap's).
struct Sleeper {
    thread: usize,
    /// 0: a sleep; else the wait (epoch) of a `block_until`, ended by the
    /// deadline only if the thread still blocks in it.
    epoch: u64,
}

/// One CPU's scheduler; used by that CPU only.
pub(crate) struct Scheduler {
    cpu: usize,
    pub current: *mut Control,
    idle: *mut Control,
    /// Threads ready to run here, in the order they became ready.
    run_queue: RunQueue<Control>,
    /// Threads sleeping or waiting with a deadline; a wait that ends
    /// early cancels its entry (`end_timed_wait`).
    sleepers: TimerHeap<Sleeper>,
    /// Recycled control blocks with stacks of the default size.
    pool: Vec<*mut Control>,
    /// Recycled control blocks with stacks of other sizes, by size in
    /// slots (few sizes; searched).
    sized_pool: Vec<(u64, Vec<*mut Control>)>,
    /// Slots of a default-size stack.
    default_slots: u64,
    zone: StackZone,
    /// The zone's lowest carved slot so far: stacks are carved downward
    /// from the zone's end, which the CPU's heap starts right after, so a
    /// CPU's first stacks and its heap's metadata and first blocks share a
    /// few 2 MiB pages of host memory (see `carve`).
    carved_down_to: u64,
    next_id: u64,
    after: After,
    /// Context switches so far.
    switches: u64,
    /// Threads spawned here, for `spawn`'s placement.
    pub spawned: u64,
    /// TSC value of the next look at the neighbour CPU (`watchdog`;
    /// `u64::MAX` when off), and the neighbour's stamp last reported.
    watchdog_next: u64,
    watchdog_reported: u64,
    /// TSC value of the next TLB refresh (`refresh_tlb`), the interval
    /// now in ticks (`toro_core::tlb_pacing`; `u64::MAX`: never), and the
    /// allocator's pages-taken count at the last refresh.
    tlb_next: u64,
    tlb_interval: u64,
    tlb_taken: u64,
}

// SAFETY: the scheduler's raw pointers name control blocks it owns; it is
// built by its CPU and used there only (through `SCHEDULERS`).
unsafe impl Send for Scheduler {}

/// Each CPU's scheduler; set up by `init_cpu` on that CPU, used by it only.
/// Reached through `with_scheduler`, whose borrow ends before any context
/// switch and before any job runs.
static SCHEDULERS: PerCpuCell<Scheduler> = PerCpuCell::new();

/// Runs `f` with this CPU's scheduler (a nested use panics: see
/// `PerCpuCell`).
#[inline(always)]
pub(crate) fn with_scheduler<R>(f: impl FnOnce(&mut Scheduler) -> R) -> R {
    SCHEDULERS.with(f)
}

/// Whether this CPU's scheduler is set up.
pub(crate) fn ready() -> bool {
    ready_on(percpu::current_index())
}

/// Whether CPU `cpu`'s scheduler is set up.
pub(crate) fn ready_on(cpu: usize) -> bool {
    SCHEDULERS.is_set(cpu)
}

/// Sets up CPU `cpu`'s scheduler with its stack zone; its current context
/// becomes a thread named `name` (the boot CPU: "main"; APs: their idle
/// thread). Runs on that CPU.
pub(crate) fn init_cpu(zone: StackZone, name: &str) {
    let cpu = percpu::current_index();
    let now = arch_cpu::rdtsc();
    super::watchdog::stamp(cpu, now);
    let first = Box::into_raw(Box::new(Control::new()));
    // SAFETY: fresh, ours.
    unsafe {
        (*first).cpu.store(cpu, Ordering::Relaxed);
        (*first).id.store(((cpu as u64) << 40) | 1, Ordering::Relaxed);
        (*first).name = Some(String::from(name));
    }
    let tlb_every = tlb_base_interval();
    let scheduler = Box::new(Scheduler {
        cpu,
        current: first,
        idle: first,
        run_queue: RunQueue::new(),
        sleepers: TimerHeap::new(),
        pool: Vec::new(),
        sized_pool: Vec::new(),
        default_slots: super::stack::default_slots(),
        zone,
        carved_down_to: zone.end,
        next_id: 2,
        after: After::Nothing,
        switches: 0,
        spawned: 0,
        watchdog_next: now.saturating_add(super::watchdog::check_interval()),
        watchdog_reported: 0,
        tlb_next: now.saturating_add(tlb_every),
        tlb_interval: tlb_every,
        tlb_taken: 0,
    });
    SCHEDULERS.set(cpu, Box::leak(scheduler));
    crate::arch::irq::init_cpu();
    apic::timer_init(TIMER_VECTOR);
}

/// On the boot CPU: the original context is `main`; the idle thread gets a
/// stack of its own.
pub(crate) fn make_idle_thread() {
    let idle = with_scheduler(|scheduler| scheduler.new_control(1)).expect("a stack slot for the idle thread");
    // SAFETY: fresh control block, ours.
    unsafe {
        (*idle).name = Some(String::from("idle"));
        let (_, top) = (*idle).stack.expect("zone stacks have slots");
        (*idle).saved_rsp = prepare_stack(top, idle_entry, 0);
    }
    with_scheduler(|scheduler| scheduler.idle = idle);
}

extern "C" fn idle_entry(_: u64) -> ! {
    finish_switch();
    idle_loop()
}

impl Scheduler {
    /// The TLB refresh is due at `now`: refresh, and set the next one by
    /// how much new memory this CPU put to use since the last
    /// (`toro_core::tlb_pacing`). Cold: once per interval (20 ms or more).
    #[cold]
    #[inline(never)]
    fn pace_tlb(&mut self, now: u64) {
        refresh_tlb();
        let grown = match crate::memory::pages_taken_here() {
            Some(taken) => {
                let grown = taken.wrapping_sub(self.tlb_taken);
                self.tlb_taken = taken;
                grown
            }
            // The allocator is busy (cannot be at a scheduling point
            // today) or not set up: count it as growth, the safe side.
            None => u64::MAX,
        };
        self.tlb_interval = toro_core::tlb_pacing::next_interval(self.tlb_interval, tlb_base_interval(), grown);
        self.tlb_next = now.saturating_add(self.tlb_interval);
    }

    fn push_back(&mut self, thread: *mut Control) {
        // SAFETY: `thread` is ours (this CPU's) and never freed. It is in no
        // run queue: the callers push the running thread (yield), a sleeper
        // whose deadline passed, a blocked thread being woken (`wake_job`
        // checks `Blocked`, and pushing makes it `Ready`), or a thread just
        // created or handed to this CPU; none of these is queued anywhere.
        unsafe {
            (*thread).state = State::Ready;
            self.run_queue.push_back(thread);
        }
    }

    fn pop_front(&mut self) -> Option<*mut Control> {
        self.run_queue.pop_front()
    }

    /// A control block with a stack of at least `slots` zone slots:
    /// recycled (the same size, or at most twice as large), else new from
    /// the next free slots of this CPU's zone, else any larger recycled
    /// one. `None` when none of these exists.
    pub(crate) fn new_control(&mut self, slots: u64) -> Option<*mut Control> {
        let control = match self.take_pooled(slots, Some(slots * 2)) {
            Some(control) => control,
            None => match self.carve(slots) {
                Some(control) => control,
                None => self.take_pooled(slots, None)?,
            },
        };
        let id = ((self.cpu as u64) << 40) | self.next_id;
        self.next_id += 1;
        // SAFETY: ours (fresh or recycled by this CPU).
        unsafe {
            (*control).id.store(id, Ordering::Relaxed);
            (*control).cpu.store(self.cpu, Ordering::Relaxed);
            (*control).done.store(false, Ordering::Relaxed);
            (*control).waiter.clear();
            (*control).result.store(0, Ordering::Relaxed);
            (*control).state = State::Ready;
            (*control).wake_pending = false;
            (*control).exited = false;
            (*control).handle_released = false;
            (*control).unpark_token = false;
            (*control).park_epoch = 0;
        }
        Some(control)
    }

    /// Slots of `control`'s stack.
    fn slots_of(&self, control: *mut Control) -> u64 {
        // SAFETY: a pooled block of this CPU (never freed).
        let (guard, top) = unsafe { (*control).stack }.expect("pooled blocks have stacks");
        (top - guard) / self.zone.slot
    }

    /// A recycled block with a stack of `slots` to `most` slots (any
    /// larger one if `most` is `None`); the best fit.
    fn take_pooled(&mut self, slots: u64, most: Option<u64>) -> Option<*mut Control> {
        let fits = |k: u64| k >= slots && most.is_none_or(|most| k <= most);
        let sized =
            (self.sized_pool.iter_mut()).filter(|(k, blocks)| fits(*k) && !blocks.is_empty()).min_by_key(|(k, _)| *k);
        let default_fits = fits(self.default_slots) && !self.pool.is_empty();
        match sized {
            Some((k, blocks)) if !default_fits || *k < self.default_slots => blocks.pop(),
            _ if default_fits => self.pool.pop(),
            _ => None,
        }
    }

    /// A new block whose stack is the next `slots` free slots of the zone,
    /// made one stack: the guards between them are mapped, the first
    /// slot's stays. Zone memory is never given back to smaller stacks
    /// (that would need a guard made at run time: a TLB shoot-down), only
    /// recycled whole with its block.
    ///
    /// Slots are taken from the zone's end down. A hypervisor that backs
    /// guest RAM with transparent huge pages (QEMU's default) faults in,
    /// and zeroes, a whole 2 MiB page at the first touch; taken from the
    /// zone's start, an AP's first stacks were 14 MiB below its heap and
    /// touched a 2 MiB page of their own.
    fn carve(&mut self, slots: u64) -> Option<*mut Control> {
        let bytes = slots.checked_mul(self.zone.slot)?;
        let guard = self.carved_down_to.checked_sub(bytes)?;
        if guard < self.zone.start {
            return None;
        }
        self.carved_down_to = guard;
        for slot in 1..slots {
            let mapped = crate::arch::paging::map_zone_guard(&self.zone, guard + slot * self.zone.slot);
            debug_assert!(mapped, "zone slots start with guards");
        }
        let control = Box::into_raw(Box::new(Control::new()));
        // SAFETY: fresh, ours.
        unsafe {
            (*control).stack = Some((guard, guard + bytes));
            (*control).home = self.cpu;
        }
        Some(control)
    }

    /// Takes back a recycled block of this CPU's zone.
    fn give_back(&mut self, control: *mut Control) {
        let slots = self.slots_of(control);
        if slots == self.default_slots {
            self.pool.push(control);
        } else if let Some((_, blocks)) = self.sized_pool.iter_mut().find(|(k, _)| *k == slots) {
            blocks.push(control);
        } else {
            self.sized_pool.push((slots, alloc::vec![control]));
        }
    }

    /// Moves the sleepers expired at TSC `now` to the run queue.
    fn wake_sleepers(&mut self, now: u64) {
        while let Some(first) = self.sleepers.pop_expired(now) {
            let (thread, epoch) = (first.thread as *mut Control, first.epoch);
            publish_sleepers(self.sleepers.len());
            // SAFETY: control blocks are never freed; a thread with a
            // sleeper entry here is on this CPU (it blocked here, a
            // blocked thread never moves, and it cancels its entry when it
            // runs again). The entry of a wait already woken whose thread
            // has not run yet fails the checks.
            let stale = epoch != 0
                && unsafe {
                    (*thread).cpu.load(Ordering::Relaxed) != self.cpu
                        || (*thread).state != State::Blocked
                        || !(*thread).wait_epoch.is_current(epoch)
                };
            if !stale {
                self.push_back(thread);
            }
        }
    }
}

/// Recycles an exited thread whose handle let go: back to the pool of the
/// CPU whose zone holds its stack. Scheduler or job context, so no
/// application code runs here: a result no one joined is dropped by the
/// thread itself, brought back for that (`drop_result_entry`).
fn recycle(thread: *mut Control) {
    // SAFETY: an exited, released thread of this CPU: nothing else refers
    // to it but late messages, which check its epoch.
    unsafe {
        if (*thread).result.load(Ordering::Relaxed) != 0 {
            // The result's `Drop` is application code: run it in thread
            // context, on the thread's own stack, then exit again.
            let (_, top) = (*thread).stack.expect("spawned threads have a stack slot");
            (*thread).saved_rsp = prepare_stack(top, drop_result_entry, thread as u64);
            (*thread).exited = false;
            with_scheduler(|scheduler| scheduler.push_back(thread));
            return;
        }
        debug_assert!((*thread).entry.is_none(), "a thread's closure is consumed by the thread");
        (*thread).name = None;
        // Ends the last wait of this life: a late wake-up for it is stale.
        (*thread).wait_epoch.advance();
        let home = (*thread).home;
        if home != percpu::current_index() {
            // Back to the CPU whose zone holds its stack.
            // Control blocks are never freed; the block is handed over
            // whole (nothing here touches it after this).
            let _ = messages::send_to(home, thread, pool_return_job);
            return;
        }
    }
    with_scheduler(|scheduler| scheduler.give_back(thread));
}

/// A detached thread's second, short life: drop its result (application
/// `Drop` code) in thread context, then exit for good.
extern "C" fn drop_result_entry(thread: u64) -> ! {
    finish_switch();
    let thread = thread as *mut Control;
    // SAFETY: ours (we are it); no handle claims the result any more.
    unsafe {
        let result = (*thread).result.swap_relaxed_take();
        if let (true, Some(drop_result)) = (result != 0, (*thread).result_drop) {
            drop_result(result as *mut u8);
        }
    }
    exit_current()
}

/// `AtomicU64` read-and-clear for the owner only: a load and a store, no
/// read-modify-write instruction (nothing else writes it concurrently).
trait TakeRelaxed {
    fn swap_relaxed_take(&self) -> u64;
}

impl TakeRelaxed for AtomicU64 {
    fn swap_relaxed_take(&self) -> u64 {
        let value = self.load(Ordering::Acquire);
        self.store(0, Ordering::Relaxed);
        value
    }
}

/// TSC ticks between two interrupt windows at the scheduling points of a
/// busy CPU that owns no interrupting device: about 5 µs (2.5 GHz). Under
/// TCG a window (`sti; nop; cli`) costs about 65 ns, since `sti` ends the
/// block of translated code and returns to QEMU's main loop; opened at
/// every scheduling point it was a quarter of a yield. On such a CPU
/// nothing waits for an interrupt: sleepers are woken by the TSC at every
/// scheduling point, messages are polled there, and the idle loop halts
/// with interrupts on. A CPU with device vectors registered
/// (`arch::irq::devices_here`: a NIC queue, a disk) opens it at every
/// scheduling point and in the idle loop's poll, so that its device work
/// is never held back by the pacing.
const WINDOW_TICKS: u64 = 12_500;

/// TSC at each CPU's last interrupt window (written by that CPU only).
static WINDOW_AT: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

/// Opens the interrupt window on a CPU that owns devices, elsewhere if
/// `WINDOW_TICKS` passed since the last (`now`: the TSC at this
/// scheduling point, read once for the window, sleepers and the watchdog;
/// under TCG each `rdtsc` is a call into QEMU).
#[inline(always)]
fn interrupt_window_if_due(now: u64) {
    if crate::arch::irq::devices_here() {
        arch_cpu::interrupt_window();
        return;
    }
    let last = &WINDOW_AT[percpu::current_index()];
    if now.wrapping_sub(last.load(Ordering::Relaxed)) >= WINDOW_TICKS {
        last.store(now, Ordering::Relaxed);
        arch_cpu::interrupt_window();
    }
}

/// Switches from the current thread to the next ready one (or the idle
/// thread), after handling messages and expired sleepers. `requeue` puts
/// the current thread at the back of the queue first (yield).
pub(crate) fn switch_away(after: After, requeue: bool) {
    // Threads run with interrupts off; a scheduling point is where they
    // are taken (docs/interrupts.md): at every point on a CPU that owns
    // devices, at most every `WINDOW_TICKS` elsewhere.
    // Handlers only mark work, which is done here, in scheduler context.
    // One TSC reading serves the whole point: what runs before the
    // scheduler below (marked work, jobs) is short, and a sleeper due
    // meanwhile is woken at the next point.
    let now = arch_cpu::rdtsc();
    interrupt_window_if_due(now);
    if crate::arch::irq::work_marked() {
        crate::arch::irq::run_marked_work();
    }
    let waiting = messages::waiting();
    if waiting.overflow {
        messages::drain_overflow();
    }
    if waiting.incoming {
        messages::run_incoming();
    }
    let switch = with_scheduler(|scheduler| {
        // The watchdog's stamp: a plain store (see `watchdog`).
        super::watchdog::stamp(scheduler.cpu, now);
        if now >= scheduler.watchdog_next {
            scheduler.watchdog_next = now.saturating_add(super::watchdog::check_interval());
            super::watchdog::check(scheduler.cpu, now, &mut scheduler.watchdog_reported);
        }
        if now >= scheduler.tlb_next {
            scheduler.pace_tlb(now);
        }
        scheduler.wake_sleepers(now);
        let previous = scheduler.current;
        if requeue {
            scheduler.push_back(previous);
        }
        let next = match scheduler.pop_front() {
            Some(next) => next,
            None if previous == scheduler.idle => return None,
            None => scheduler.idle,
        };
        scheduler.after = after;
        if next != previous {
            scheduler.current = next;
            scheduler.switches += 1;
        }
        // SAFETY: ours (queued here, or the idle thread).
        unsafe { (*next).state = State::Running };
        Some((previous, next))
    });
    let Some((previous, next)) = switch else { return };
    if next != previous {
        // SAFETY: ours; `next` was queued (or is the idle thread), so its
        // saved stack pointer is valid; `previous` keeps its control block.
        // No per-CPU borrow is live across the switch.
        unsafe { switch_context(&raw mut (*previous).saved_rsp, (*next).saved_rsp) };
    }
    finish_switch();
}

/// Runs what the previous thread asked for once we are off its stack, in
/// scheduler context (what it sends never waits).
#[inline(always)]
pub(crate) fn finish_switch() {
    // Most switches (a yield, a block) ask for nothing: checked inline, so
    // that they make no call (see `messages::waiting`).
    if with_scheduler(|scheduler| matches!(scheduler.after, After::Nothing)) {
        return;
    }
    messages::in_scheduler_context(finish_switch_now);
}

fn finish_switch_now() {
    match with_scheduler(|scheduler| core::mem::replace(&mut scheduler.after, After::Nothing)) {
        After::Nothing => {}
        After::Migrate(thread, cpu) => {
            // SAFETY: the thread is off its stack; we hand it over.
            unsafe { (*thread).cpu.store(cpu, Ordering::Release) };
            hand_over(cpu, thread);
        }
        After::Exit(thread) => {
            // SAFETY: ours, off its stack for good.
            let released = unsafe {
                (*thread).exited = true;
                (*thread).handle_released
            };
            if released {
                recycle(thread);
            }
        }
    }
}

/// Makes `thread` (owned by us, its `cpu` already set to `cpu`) ready on
/// `cpu`.
pub(crate) fn hand_over(cpu: usize, thread: *mut Control) {
    // SAFETY: control blocks are never freed; the thread is ours to hand
    // over and nothing here touches it afterwards.
    if unsafe { messages::on_cpu(cpu, thread, enqueue_job) }.is_err() {
        panic!("cannot hand a thread to cpu {cpu}");
    }
}

unsafe fn pool_return_job(thread: *mut Control) {
    // A recycled block whose stack is in this CPU's zone; ours now.
    with_scheduler(|scheduler| scheduler.give_back(thread));
}

unsafe fn enqueue_job(thread: *mut Control) {
    // The sender handed this thread over; it is ours now.
    with_scheduler(|scheduler| scheduler.push_back(thread));
}

/// Wakes `thread` from its wait number `epoch`, wherever it is.
#[inline(never)]
pub(crate) fn wake(thread: *mut Control, epoch: u64) {
    #[cfg(feature = "lockcheck-mutation-2")]
    crate::lockcheck_mutation::plant_behind_trait_object();
    on_thread_cpu(thread, epoch, wake_job);
}

/// Runs `run((thread, argument))` on the CPU `thread` is on: directly if
/// that is this CPU, else as a message (the job re-checks where the thread
/// is when it runs).
#[inline(always)]
fn on_thread_cpu<T: Copy>(thread: *mut Control, argument: T, run: unsafe fn((*mut Control, T))) {
    // SAFETY: control blocks are never freed; `cpu` is atomic.
    let cpu = unsafe { (*thread).cpu.load(Ordering::Acquire) };
    // SAFETY: control blocks are never freed (type-stable, epoch-checked),
    // and every job given here re-checks where the thread is before it
    // touches its owner-only fields.
    let _ = unsafe { messages::on_cpu(cpu, (thread, argument), run) };
}

unsafe fn wake_job((thread, epoch): (*mut Control, u64)) {
    // SAFETY: never freed; the owner-only fields are read only if the
    // thread is on this CPU.
    unsafe {
        let cpu = (*thread).cpu.load(Ordering::Acquire);
        if cpu != percpu::current_index() {
            // It moved since the message was sent: a late wake-up for a
            // wait that ended (a thread never moves while blocked).
            return;
        }
        if !(*thread).wait_epoch.is_current(epoch) {
            return;
        }
        match (*thread).state {
            State::Blocked => with_scheduler(|scheduler| scheduler.push_back(thread)),
            State::Running | State::Ready => (*thread).wake_pending = true,
            State::Sleeping | State::Exited => {}
        }
    }
}

/// Whether the running code is a thread that may wait (yield) here: the
/// scheduler is up, the thread is not the idle thread and is running (not
/// exiting). Job and scheduler context are excluded by the caller
/// (`cpu::send`).
pub(crate) fn may_block() -> bool {
    if !ready() {
        return false;
    }
    // Not while the scheduler is lent (an allocation inside it, say).
    SCHEDULERS
        .try_with(|scheduler| {
            let current = scheduler.current;
            // SAFETY: ours (the running thread).
            current != scheduler.idle && unsafe { (*current).state } == State::Running
        })
        .unwrap_or(false)
}

/// The current thread's control block.
pub(crate) fn current() -> *mut Control {
    with_scheduler(|scheduler| scheduler.current)
}

/// Whether no other thread is ready on this CPU (a thread about to block
/// may then poll briefly without holding anyone up).
pub(crate) fn nothing_else_ready() -> bool {
    with_scheduler(|scheduler| scheduler.run_queue.is_empty())
}

/// Starts a wait: returns its epoch (give it to whoever will wake us).
pub(crate) fn begin_wait() -> u64 {
    let thread = current();
    // SAFETY: ours (the running thread).
    unsafe {
        let epoch = (*thread).wait_epoch.advance();
        (*thread).wake_pending = false;
        epoch
    }
}

/// Blocks the current thread until woken for the wait begun last (returns
/// at once if that wake-up already came).
#[inline(never)]
pub(crate) fn block() {
    block_with_deadline(None);
}

/// `block`, ending also at TSC value `deadline` if given (`(epoch,
/// deadline)`: the wait's epoch, from `begin_wait`).
#[inline(never)]
fn block_with_deadline(deadline: Option<(u64, u64)>) {
    let thread = current();
    // SAFETY: ours; the scheduler is not held across the switch.
    unsafe {
        if (*thread).wake_pending {
            (*thread).wake_pending = false;
            return;
        }
        (*thread).state = State::Blocked;
    }
    if let Some((epoch, deadline)) = deadline {
        add_sleeper(thread, deadline, Sleeper { thread: thread as usize, epoch });
    }
    switch_away(After::Nothing, false);
    end_timed_wait(thread);
}

/// Puts an entry in this CPU's deadline heap. The heap is taken out of the
/// scheduler while it grows: growing allocates, and the allocator must
/// never run inside a scheduler borrow that it might need.
fn add_sleeper(thread: *mut Control, deadline: u64, sleeper: Sleeper) {
    let mut sleepers = with_scheduler(|scheduler| core::mem::take(&mut scheduler.sleepers));
    let id = sleepers.push(deadline, sleeper);
    publish_sleepers(sleepers.len());
    with_scheduler(|scheduler| scheduler.sleepers = sleepers);
    // SAFETY: ours (the running thread).
    unsafe { (*thread).timer = Some(id) };
}

/// The running thread `thread` is back from a sleep or a wait with a
/// deadline: its heap entry goes (a wait woken early would otherwise
/// leave it until the deadline; an entry already popped is not touched,
/// the id's generation tells). No allocation.
fn end_timed_wait(thread: *mut Control) {
    // SAFETY: ours (the running thread).
    if let Some(id) = unsafe { (*thread).timer.take() } {
        with_scheduler(|scheduler| {
            if scheduler.sleepers.cancel(id).is_some() {
                publish_sleepers(scheduler.sleepers.len());
            }
        });
    }
}

/// Entries in each CPU's deadline heap (`sleepers`), written by that CPU
/// only (a plain store), read by any.
static SLEEPERS: [AtomicUsize; percpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; percpu::MAX_CPUS];

fn publish_sleepers(count: usize) {
    SLEEPERS[percpu::current_index()].store(count, Ordering::Relaxed);
}

/// How often a CPU that reaches scheduling points refreshes its TLB.
///
/// Why at all: Toro's mappings never change after boot and are global, so
/// the kernel never needs a TLB flush; but QEMU's TCG sizes each vCPU's
/// software TLB only when the guest flushes it (`tlb_mmu_resize_locked`
/// in QEMU's `accel/tcg/cputlb.c`: at a full flush it doubles the table
/// if more than 70% of it was filled since the last one, and shrinks it
/// after a 100 ms window under 30%). A guest that never flushes keeps the
/// initial 256 entries (1 MiB reach at 4 KiB per entry) for good, and
/// every access beyond that working set takes the slow path: a guest page
/// walk in software. Linux flushes at every address-space switch, so its
/// TLB grows to fit. Measured: a 24 MiB write-each-page cycle took 588 us
/// without refreshes and 138 us with them (docs/memory.md).
///
/// Cost: on hardware (KVM) a CR3 load keeps global entries, which are all
/// of Toro's, so it drops nothing: a serialising instruction now and then.
/// Under TCG each refresh empties the table, so the working set is walked
/// again after each: the pace therefore follows the CPU's allocator, this
/// interval while it puts new memory to use and backing off to 64 times
/// it when it does not (`toro_core::tlb_pacing`, `Scheduler::pace_tlb`).
/// `toro.tlb_refresh=MS|off` sets another base (read by `tlb_init`).
const TLB_REFRESH_MS: u64 = 20;

/// The interval in TSC ticks (`u64::MAX`: never), set by `tlb_init`
/// before any scheduler starts.
static TLB_INTERVAL: AtomicU64 = AtomicU64::new(u64::MAX);

/// Reads `toro.tlb_refresh=` (boot CPU, after the TSC is calibrated,
/// before any scheduler starts).
pub(crate) fn tlb_init() {
    let milliseconds = match crate::system::argument("toro.tlb_refresh").map(toro_core::command_line::parse_tlb_refresh)
    {
        None => Some(TLB_REFRESH_MS),
        Some(Ok(setting)) => setting,
        Some(Err(error)) => {
            crate::println!("toro: warning: {error}; TLB refreshes keep their default ({TLB_REFRESH_MS} ms)");
            Some(TLB_REFRESH_MS)
        }
    };
    let ticks = match (milliseconds, crate::time::tsc_hz()) {
        (Some(milliseconds), Some(hz)) => (hz / 1000).saturating_mul(milliseconds),
        _ => u64::MAX,
    };
    TLB_INTERVAL.store(ticks, Ordering::Relaxed);
    match milliseconds {
        Some(milliseconds) => log::info!("TLB refresh every {milliseconds} ms"),
        None => log::info!("TLB refresh off"),
    }
}

fn tlb_base_interval() -> u64 {
    TLB_INTERVAL.load(Ordering::Relaxed)
}

/// TLB refreshes made by each CPU (written by that CPU only).
static TLB_REFRESHES: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];

/// Reloads this CPU's page-table root (see `TLB_REFRESH_MS`) and counts it.
fn refresh_tlb() {
    crate::arch::paging::reload_root();
    let count = &TLB_REFRESHES[percpu::current_index()];
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// TLB refreshes CPU `cpu` has made.
pub(crate) fn tlb_refreshes(cpu: usize) -> Option<u64> {
    ready_on(cpu).then(|| TLB_REFRESHES[cpu].load(Ordering::Relaxed))
}

/// Entries in CPU `cpu`'s deadline heap as that CPU last published them.
pub(crate) fn sleepers(cpu: usize) -> Option<usize> {
    ready_on(cpu).then(|| SLEEPERS[cpu].load(Ordering::Relaxed))
}

/// Sleeps until TSC value `deadline`.
pub(crate) fn sleep_until(deadline: u64) {
    let thread = current();
    // SAFETY: ours.
    unsafe { (*thread).state = State::Sleeping };
    add_sleeper(thread, deadline, Sleeper { thread: thread as usize, epoch: 0 });
    switch_away(After::Nothing, false);
    end_timed_wait(thread);
}

/// Like `block`, but also ends at TSC value `deadline`: for waits with a
/// timeout (`recv_timeout`, `Condvar::wait_timeout`). `epoch` is the wait's
/// (from `begin_wait`). The caller re-checks its condition and the time.
#[inline(never)]
pub(crate) fn block_until(epoch: u64, deadline: u64) {
    block_with_deadline(Some((epoch, deadline)));
}

pub(crate) fn yield_now() {
    switch_away(After::Nothing, true);
}

pub(crate) fn migrate(cpu: usize) {
    let thread = current();
    if cpu == percpu::current_index() {
        return;
    }
    switch_away(After::Migrate(thread, cpu), false);
}

/// Ends the current thread (its result is already stored).
pub(crate) fn exit_current() -> ! {
    let thread = current();
    // SAFETY: ours; dropping thread-locals runs on the thread's own stack.
    unsafe {
        drop(core::mem::take(&mut (*thread).locals));
        (*thread).state = State::Exited;
        (*thread).done.store(true, Ordering::Release);
        // The waker's side of the hand-shake with `JoinHandle::join`.
        if let Some(waiter) = (*thread).waiter.waiter(messages::full_fence) {
            wake(waiter.thread as *mut Control, waiter.epoch);
        }
    }
    switch_away(After::Exit(thread), false);
    unreachable!("an exited thread was scheduled again");
}

/// Blocks the current thread until `unpark` (or `deadline`, a TSC value),
/// unless its unpark token is set (then it is used up). May return
/// spuriously, as std's `park` may.
pub(crate) fn park(deadline: Option<u64>) {
    let thread = current();
    // SAFETY: ours (the running thread); unpark_job touches these fields
    // only on this CPU, between scheduling points.
    unsafe {
        if (*thread).unpark_token {
            (*thread).unpark_token = false;
            return;
        }
        let epoch = begin_wait();
        (*thread).park_epoch = epoch;
        match deadline {
            Some(deadline) => block_until(epoch, deadline),
            None => block(),
        }
        (*thread).park_epoch = 0;
        (*thread).unpark_token = false;
    }
}

/// Unparks the thread with id `id` if it still lives in `thread` (control
/// blocks are recycled; a stale handle's unpark is dropped).
pub(crate) fn unpark(thread: *mut Control, id: u64) {
    on_thread_cpu(thread, id, unpark_job);
}

unsafe fn unpark_job((thread, id): (*mut Control, u64)) {
    // SAFETY: never freed; owner fields touched only on its CPU.
    unsafe {
        if (*thread).id.load(Ordering::Relaxed) != id || (*thread).state == State::Exited {
            return;
        }
        let cpu = (*thread).cpu.load(Ordering::Acquire);
        if cpu != percpu::current_index() {
            // It moved: follow it.
            let _ = messages::send_to(cpu, (thread, id), unpark_job);
            return;
        }
        (*thread).unpark_token = true;
        let epoch = (*thread).park_epoch;
        if epoch != 0 {
            wake_job((thread, epoch));
        }
    }
}

/// Gives up the JoinHandle's claim on `thread` (joined or detached).
pub(crate) fn release(thread: *mut Control) {
    on_thread_cpu(thread, (), release_job);
}

unsafe fn release_job((thread, ()): (*mut Control, ())) {
    // SAFETY: never freed; owner fields touched only on its CPU.
    unsafe {
        let cpu = (*thread).cpu.load(Ordering::Acquire);
        if cpu != percpu::current_index() {
            // Still running and moved on: follow it.
            let _ = messages::send_to(cpu, (thread, ()), release_job);
            return;
        }
        (*thread).handle_released = true;
        if (*thread).exited {
            recycle(thread);
        }
    }
}

/// A new thread's first code: finish the switch that started it, run its
/// entry, exit.
pub(crate) extern "C" fn thread_entry(thread: u64) -> ! {
    finish_switch();
    let thread = thread as *mut Control;
    // SAFETY: ours (we are it).
    let entry = unsafe { (*thread).entry.take() };
    if let Some(entry) = entry {
        entry();
    }
    exit_current()
}

/// Prepares `thread`'s stack to start in `thread_entry`.
pub(crate) fn prepare(thread: *mut Control) {
    // SAFETY: ours, not running; its slot is mapped RW (zone).
    unsafe {
        let (_, top) = (*thread).stack.expect("spawned threads have a stack slot");
        (*thread).saved_rsp = prepare_stack(top, thread_entry, thread as u64);
    }
}

/// What an idle CPU does: messages, sleepers, run queue; else halt until
/// an interrupt (timer armed for the first sleeper).
///
/// A CPU that just ran threads polls its rings for a short while before
/// halting: a reply is often on its way, and waking a halted CPU costs an
/// IPI and a host-side wake-up (tens of microseconds under emulation,
/// microseconds under KVM). A CPU idle for longer halts at once, so an
/// idle VM still costs the host next to nothing.
pub(crate) fn idle_loop() -> ! {
    let mut last_work = arch_cpu::rdtsc();
    loop {
        let before = current_switches();
        switch_away(After::Nothing, false);
        if current_switches() != before {
            last_work = arch_cpu::rdtsc();
        }
        crate::memory::idle();
        let ready = with_scheduler(|scheduler| {
            if !scheduler.run_queue.is_empty() {
                return true;
            }
            // The first sleeper's deadline, or the next look at the
            // neighbour CPU (watchdog), whichever comes first.
            let first = scheduler.sleepers.peek_deadline().unwrap_or(u64::MAX);
            match first.min(scheduler.watchdog_next) {
                u64::MAX => apic::timer_disarm(),
                deadline => apic::timer_arm(deadline),
            }
            false
        });
        if ready {
            continue;
        }
        if messages::overflow_pending() {
            // Jobs wait for room in a full ring: no IPI tells us when there
            // is, so poll (each pass through `switch_away` retries).
            core::hint::spin_loop();
            continue;
        }
        if arch_cpu::rdtsc() - last_work < RECENT_WORK_TICKS && messages::poll_for_work(SPIN_BEFORE_HALT_TICKS) {
            continue;
        }
        super::watchdog::stamp_idle(percpu::current_index());
        messages::halt_unless_work();
    }
}

/// How recent work must be for the idle thread to poll before halting
/// (about 1 ms at 2-3 GHz).
const RECENT_WORK_TICKS: u64 = 2_500_000;
/// How long it polls (about 30-50 us at 2-3 GHz).
const SPIN_BEFORE_HALT_TICKS: u64 = 100_000;

/// Context switches made by this CPU (to tell whether the idle thread ran
/// anything).
fn current_switches() -> u64 {
    with_scheduler(|scheduler| scheduler.switches)
}

/// The current thread as a fault or panic report sees it: read without
/// borrowing the scheduler (the fault may have interrupted a borrow).
fn current_for_report() -> Option<*mut Control> {
    // SAFETY: a plain read of `current` (a pointer field) for a report;
    // control blocks are never freed.
    SCHEDULERS.for_report().map(|scheduler| unsafe { (*scheduler).current })
}

/// The current thread's stack, if it has a slot: (guard page, top).
pub(crate) fn current_stack() -> Option<(u64, u64)> {
    // SAFETY: read only; control blocks are never freed.
    current_for_report().and_then(|thread| unsafe { (*thread).stack })
}

/// Name and id of the current thread, for fault and panic reports.
pub(crate) fn describe_current(out: &mut impl core::fmt::Write) {
    let Some(thread) = current_for_report() else { return };
    // SAFETY: read only, ours.
    unsafe {
        let _ = write!(
            out,
            "thread '{}' (id {:#x})",
            (*thread).name.as_deref().unwrap_or("<unnamed>"),
            (*thread).id.load(Ordering::Relaxed)
        );
    }
}

/// A control block with a stack of `slots` zone slots for a new thread.
/// When this CPU's zone is used up, waits (up to about 100 ms, serving
/// messages) for blocks of finished threads to come back from the CPUs they
/// ended on.
pub(crate) fn new_thread_control(slots: u64) -> Result<*mut Control, super::SpawnError> {
    let zone_bytes = with_scheduler(|scheduler| scheduler.zone.end - scheduler.zone.start);
    if slots.saturating_mul(STACK_SLOT) > zone_bytes {
        return Err(super::SpawnError::StackTooLarge { largest: super::stack::usable_bytes(zone_bytes / STACK_SLOT) });
    }
    // Blocks of finished threads come back as messages: take them in before
    // cutting a new stack slot.
    if with_scheduler(|scheduler| scheduler.pool.is_empty()) {
        messages::run_incoming();
    }
    let start = arch_cpu::rdtsc();
    loop {
        if let Some(control) = with_scheduler(|scheduler| scheduler.new_control(slots)) {
            return Ok(control);
        }
        let waited = crate::time::ticks_to_duration(arch_cpu::rdtsc() - start).unwrap_or_default();
        if waited > core::time::Duration::from_millis(100) {
            return Err(super::SpawnError::NoStack);
        }
        messages::run_incoming();
        yield_now();
    }
}
