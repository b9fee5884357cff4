//! Network instances: one TCP/IP stack (`toro_net::Stack`) with its device,
//! owned by one CPU, served by a thread on that CPU, and reached from the
//! others by moving the calling thread there for the call.
//!
//! Ownership: an instance is made by its service thread on its owner CPU
//! (so its memory is that CPU's) and only threads running on that CPU touch
//! it, between scheduling points. Scheduling is cooperative and interrupt
//! handlers never touch an instance, so a `&mut Instance` taken in
//! [`with_local`] is never aliased; it must not be held across a switch
//! (the closures passed to `with_local` never block).
//!
//! Waiting: a thread whose socket call would block registers a [`Waiter`]
//! (its thread, wait epoch, what it waits for, its deadline) in the
//! instance and blocks. After every poll ([`Instance::pump`]; socket calls
//! mostly leave it to the service, see `wait_on`) the instance
//! wakes the waiters whose condition holds or whose deadline passed; the
//! wake-up is a same-CPU call (the waiter is on the owner CPU), no
//! message.
//!
//! The service: each instance's owner runs a `crate::service` whose value
//! is a [`NetService`] (the instance's id; the instance itself is
//! published for `with_local`). Its poll hook runs smoltcp at the deadline
//! smoltcp asks for (its timers), its interrupt hook runs when the NIC
//! interrupts (bound while the service starts: a GSI on virtio-mmio,
//! MSI-X on PCI). Both suppress the NIC's receive interrupts while they
//! work and ask for them again, re-checking the ring, before the service
//! waits (and so before the CPU halts). A NIC whose interrupt could not be
//! bound is polled every millisecond. A socket call that makes a timer due
//! sooner than the service's deadline lowers it (`Handle::poll_by`).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use toro_net::stack::{IcmpHandle, TcpHandle, UdpHandle};
use toro_net::{Addressing, NetError, Stack, StackConfig};

use super::device::Device;
use super::udp::UdpGroup;
use crate::service::{Builder, Handle, Starting};
use crate::thread::scheduler::{self, Control};
use crate::time::Instant;

/// Instances a machine may have (loopback, NICs, queue pairs).
pub(crate) const MAX_INSTANCES: usize = 64;
/// How often the service polls a device that raises no interrupt.
const POLLING_MICROS: u64 = 1_000;
/// The shortest wait the service's poll hook asks for after serving (see
/// `Instance::serve`).
const MIN_POLL_MICROS: u64 = 1_000;

/// What a blocked thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Data, end of stream or an error on a connection.
    Readable(TcpHandle),
    /// Room in the send buffer (or an error).
    Writable(TcpHandle),
    /// A connection ready to accept on a port.
    Accept(u16),
    /// The handshake of an outgoing connection ended.
    Connected(TcpHandle),
    /// A datagram.
    UdpReadable(UdpHandle),
    /// Room for a datagram.
    UdpWritable(UdpHandle),
    /// An echo reply.
    IcmpReply(IcmpHandle),
    /// A DNS answer (or the query's failure).
    Dns(toro_net::DnsHandle),
}

struct Waiter {
    thread: *mut Control,
    epoch: u64,
    interest: Interest,
    /// TSC deadline (`u64::MAX`: none).
    deadline: u64,
}

/// Counts kept per instance beyond the stack's and the device's.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstanceCounters {
    /// Calls made from a thread on another CPU (it moved here and back).
    pub remote_calls: u64,
    /// Threads woken because their socket became ready.
    pub wakeups: u64,
    /// Waits that ended at their deadline.
    pub timeouts: u64,
    /// Pumps: polls of the stack to quiescence (each walks every socket),
    /// by the service or by a socket call.
    pub pumps: u64,
    /// Source ports of DNS queries announced to the card's other queue
    /// pairs, for them to hand the answers here.
    pub dns_ports_announced: u64,
}

/// One TCP/IP instance.
pub(crate) struct Instance {
    /// Its index in the instance table.
    id: usize,
    pub(crate) name: &'static str,
    pub(crate) owner: usize,
    pub(crate) stack: Stack<Device>,
    pub(crate) counters: InstanceCounters,
    waiters: Vec<Waiter>,
    /// The instance's service (known from its start), and the TSC
    /// deadline its poll hook last asked for (`u64::MAX`: none): a socket
    /// call that makes a timer due sooner lowers it (`pump`).
    service: Handle<NetService>,
    service_deadline: u64,
    /// The other queue pairs of the same card (instance id, service):
    /// they get a copy of each neighbour-discovery frame this one
    /// receives, and the datagrams for UDP sockets that live on them.
    siblings: Vec<(usize, Handle<NetService>)>,
    /// The UDP sockets here that are members of a socket bound to
    /// `0.0.0.0` on several instances: after each poll, whether each
    /// holds a datagram is published to its group (`udp::UdpGroup`).
    pub(crate) udp_groups: Vec<UdpGroupEntry>,
    /// Nothing was done to the instance since a pump that left no frame
    /// waiting: a socket call that would block need not pump again before
    /// its thread blocks (see `wait_on`). Cleared by every `with_local`.
    settled: bool,
    /// The source ports of this pair's DNS queries in flight, announced to
    /// the other pairs as bound here (`announce_dns_ports`).
    dns_ports: Vec<u16>,
}

/// A UDP socket of this instance that is member `member` of `group`.
pub(crate) struct UdpGroupEntry {
    pub(crate) handle: UdpHandle,
    pub(crate) group: Arc<UdpGroup>,
    pub(crate) member: usize,
}

/// Where each instance lives, published by its service thread.
static INSTANCES: [AtomicU64; MAX_INSTANCES] = [const { AtomicU64::new(0) }; MAX_INSTANCES];
/// Each instance's owner CPU, written before the instance is published.
static OWNERS: [AtomicUsize; MAX_INSTANCES] = [const { AtomicUsize::new(usize::MAX) }; MAX_INSTANCES];
/// Instances planned (written by the boot CPU before starting them).
static PLANNED: AtomicUsize = AtomicUsize::new(0);

/// TSC ticks to microseconds since the TSC started.
pub(crate) fn now_micros() -> u64 {
    let ticks = Instant::now().ticks();
    match crate::time::tsc_hz() {
        Some(hz) => (ticks as u128 * 1_000_000 / hz as u128) as u64,
        None => ticks / 1000,
    }
}

fn micros_to_ticks(micros: u64) -> u64 {
    match crate::time::tsc_hz() {
        Some(hz) => (micros as u128 * hz as u128 / 1_000_000).min(u64::MAX as u128) as u64,
        None => micros.saturating_mul(1000),
    }
}

/// The TSC tick `micros` microseconds from now.
pub(crate) fn ticks_from_now(micros: u64) -> u64 {
    Instant::now().ticks().saturating_add(micros_to_ticks(micros))
}

/// How many instances exist (all published once `init` returned).
pub(crate) fn count() -> usize {
    PLANNED.load(Ordering::Acquire)
}

/// The CPU that owns instance `id`.
pub(crate) fn owner(id: usize) -> usize {
    OWNERS[id].load(Ordering::Acquire)
}

/// Makes an instance's device on its owner CPU (`Plan::device`).
pub(crate) type MakeDevice = Box<dyn FnOnce(&Starting<NetService>) -> Device + Send>;

/// What `start` needs to make an instance on its CPU.
pub(crate) struct Plan {
    pub name: &'static str,
    pub owner: usize,
    /// Makes the device on the owner CPU, in the service's `init` (it may
    /// bind its interrupts to the service there).
    pub device: MakeDevice,
    pub addressing: Addressing,
    pub config: StackConfig,
    /// The instances (ids) of the other queue pairs of its card.
    pub siblings: Vec<usize>,
}

/// Starts every planned instance's service on its CPU (each has published
/// its instance when its start returns). Boot CPU, once.
pub(crate) fn start(plans: Vec<Plan>) {
    let total = plans.len().min(MAX_INSTANCES);
    let mut started = Vec::new();
    for (id, plan) in plans.into_iter().take(total).enumerate() {
        OWNERS[id].store(plan.owner, Ordering::Release);
        let owner = plan.owner;
        let siblings = plan.siblings.clone();
        let handle = Builder::new(plan.name)
            .cpu(owner)
            .poll(|service: &mut NetService, _now| service.poll())
            .on_interrupt(|service: &mut NetService, _source| service.interrupt())
            .try_start_with(move |starting| Ok::<_, ()>(NetService::open(id, plan, starting)))
            .unwrap_or_else(|error| panic!("net: cannot start the service of instance {id} on CPU {owner}: {error:?}"));
        started.push((handle, siblings));
    }
    // The services run for the life of the system.
    let handles: Vec<Handle<NetService>> = started.iter().map(|(handle, _)| *handle).collect();
    // The pairs of a multi-queue card learn each other's handles, known
    // only now (a call to each pair's CPU); a lone instance has none.
    for (handle, siblings) in started {
        if siblings.is_empty() {
            continue;
        }
        let siblings: Vec<(usize, Handle<NetService>)> =
            siblings.iter().filter_map(|&id| handles.get(id).map(|handle| (id, *handle))).collect();
        handle.call(move |service| with_local(service.id, |instance| instance.siblings = siblings));
    }
    PLANNED.store(total, Ordering::Release);
}

/// Runs `function` with instance `id` if the calling thread is on its
/// owner CPU; `None` otherwise.
pub(crate) fn with_local<R>(id: usize, function: impl FnOnce(&mut Instance) -> R) -> Option<R> {
    with_local_as_is(id, |instance| {
        instance.settled = false;
        function(instance)
    })
}

/// `with_local` that leaves `Instance::settled` to `function`.
fn with_local_as_is<R>(id: usize, function: impl FnOnce(&mut Instance) -> R) -> Option<R> {
    if id >= MAX_INSTANCES || owner(id) != crate::cpu::current() {
        return None;
    }
    let address = INSTANCES[id].load(Ordering::Acquire);
    if address == 0 {
        return None;
    }
    // SAFETY: published by its service thread, never freed; only threads
    // on the owner CPU (checked above) use it, one at a time, and the
    // reference does not outlive `function`, which does not switch (see
    // the module docs).
    let instance = unsafe { &mut *(address as *mut Instance) };
    Some(function(instance))
}

/// Runs `function` on instance `id`'s owner CPU: directly when the caller
/// is there, otherwise the calling thread moves there for the call and
/// back after it (two cross-CPU hops; see docs/net.md).
pub(crate) fn on_owner<R>(id: usize, function: impl FnOnce() -> R) -> R {
    let owner = owner(id);
    let home = crate::cpu::current();
    if owner == home {
        return function();
    }
    if crate::thread::migrate_to(owner).is_err() {
        // The owner CPU does not run: the instance was never published.
        return function();
    }
    with_local(id, |instance| instance.counters.remote_calls += 1);
    let result = function();
    // The home CPU ran the caller a moment ago.
    let _ = crate::thread::migrate_to(home);
    result
}

/// Tells instance `id` and the other pairs of its card that UDP `port`
/// was bound (or closed) on it, so that datagrams for it reaching another
/// pair's queue are handed to it. Waits until every pair knows (a call
/// to each): after `bind` returns, no queue drops the socket's datagrams.
/// Runs on `id`'s owner CPU (inside `on_owner`).
#[inline(never)]
pub(crate) fn announce_udp(id: usize, port: u16, bound: bool) {
    let Some(siblings) = with_local(id, |instance| {
        instance.stack.device().udp_binding(port, true, Some(id), bound);
        instance.siblings.clone()
    }) else {
        return;
    };
    for (_, sibling) in siblings {
        sibling.call(move |service: &mut NetService| service.udp_binding(port, id, bound));
    }
}

/// Runs `operation` on instance `id` until it stops answering
/// `WouldBlock`, blocking the thread (not the CPU) on `interest` between
/// tries; gives up with `TimedOut` at `timeout_micros`, and returns
/// `WouldBlock` at once if `nonblocking`. Must run on the owner CPU (inside
/// `on_owner`).
pub(crate) fn wait_on<R>(
    id: usize,
    interest: Interest,
    timeout_micros: Option<u64>,
    nonblocking: bool,
    mut operation: impl FnMut(&mut Instance) -> Result<R, NetError>,
) -> Result<R, WaitError> {
    let deadline = timeout_micros.map_or(u64::MAX, ticks_from_now);
    // A call that took data or queued data to send leaves the frames it
    // causes (the ACK, the window update, the segments) to a pump of the
    // service, asked for now (`Instance::defer_pump`): it runs after the
    // threads ready on this CPU, so the answers of every connection served
    // in the meantime leave in one poll of the stack and one notification
    // of the NIC, as NAPI batches them in Linux. A thread about to block
    // leaves its pump to the service the same way; a call that would block
    // right after a pump that left nothing waiting has nothing to pump.
    // A request on a keep-alive connection pumped four times (each a walk
    // over every socket): on arrival, after the read, after the write and
    // before blocking (issue 10). A non-blocking call that would block
    // pumps at once: its caller may poll in a loop without yielding.
    loop {
        let result = with_local_as_is(id, |instance| {
            let settled = core::mem::take(&mut instance.settled);
            let result = operation(instance);
            match result {
                Err(NetError::WouldBlock) if settled && !instance.stack.device().rx_pending_now() => {
                    // The operation changed nothing: still settled.
                    instance.settled = true;
                }
                Ok(_) => instance.defer_pump(),
                Err(NetError::WouldBlock) if !nonblocking => instance.defer_pump(),
                _ => {
                    instance.pump();
                    instance.settled = true;
                }
            }
            result
        })
        .ok_or(WaitError::Net(NetError::BadHandle))?;
        match result {
            Err(NetError::WouldBlock) if !nonblocking => {}
            Err(error) => return Err(WaitError::Net(error)),
            Ok(value) => return Ok(value),
        }
        if Instant::now().ticks() >= deadline {
            return Err(WaitError::TimedOut);
        }
        let epoch = scheduler::begin_wait();
        let thread = scheduler::current();
        with_local(id, |instance| {
            instance.waiters.push(Waiter { thread, epoch, interest, deadline });
        });
        if deadline == u64::MAX {
            scheduler::block();
        } else {
            scheduler::block_until(epoch, deadline);
        }
        // Woken: by readiness (the entry is gone), by the deadline, or by a
        // stray wake-up of an older wait; drop our entry if left, retry.
        with_local(id, |instance| {
            instance.waiters.retain(|waiter| !(waiter.thread == thread && waiter.epoch == epoch))
        });
    }
}

/// Why a blocking wait ended without a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The operation failed.
    Net(NetError),
    /// The deadline passed.
    TimedOut,
}

impl Instance {
    /// Polls the stack until no frame waits (a loopback delivers its own
    /// frames on the next poll), then wakes the threads whose wait is over.
    #[inline(never)]
    pub(crate) fn pump(&mut self) {
        const MAX_ROUNDS: usize = 16;
        self.counters.pumps += 1;
        for _ in 0..MAX_ROUNDS {
            self.stack.poll(now_micros());
            if !self.stack.device().rx_pending_now() {
                break;
            }
        }
        self.wake_waiters();
        self.publish_udp_groups();
        self.share_neighbour_frames();
        self.announce_dns_ports();
        self.forward_datagrams();
        if let Some(micros) = self.next_poll_micros() {
            let due = ticks_from_now(micros);
            if due < self.service_deadline {
                self.service_deadline = due;
                self.service.poll_by(Instant::from_ticks(due));
            }
        }
    }

    /// Tells each group this instance's UDP members belong to whether
    /// the member holds a datagram (waking its receivers if it does).
    fn publish_udp_groups(&mut self) {
        for entry in &self.udp_groups {
            let readable = self.stack.udp_readable(entry.handle);
            entry.group.publish(entry.member, readable);
        }
    }

    /// Hands the neighbour-discovery frames this pair received to the
    /// card's other pairs (a posted request to each: ARP and neighbour
    /// discovery are rare, off the data path; docs/net.md).
    fn share_neighbour_frames(&mut self) {
        if self.siblings.is_empty() {
            return;
        }
        let frames = self.stack.device().take_shared();
        if frames.is_empty() {
            return;
        }
        for (_, sibling) in &self.siblings {
            let copies = frames.clone();
            sibling.post(move |service: &mut NetService| service.inject(copies));
        }
    }

    /// On a multi-queue card: the ports of this pair's DNS queries
    /// (smoltcp picks one at random per query, outside the pair's share of
    /// the ephemeral ports) are announced to the other pairs as UDP ports
    /// bound here, so that an answer the host hands to another queue is
    /// handed on to this pair, as a datagram for a socket here is; they
    /// are withdrawn once no query is in flight. A port a UDP socket has is
    /// left alone. The announcements are posted, not awaited: an answer
    /// that reaches another pair before its announcement is dropped, and
    /// smoltcp asks again (from the same port) after a second.
    fn announce_dns_ports(&mut self) {
        let sent = self.stack.take_dns_ports();
        if self.siblings.is_empty() {
            return;
        }
        let id = self.id;
        let mut changes = Vec::new();
        for port in sent {
            if !self.dns_ports.contains(&port) && !self.stack.device().udp_port_known(port) {
                self.dns_ports.push(port);
                changes.push((port, true));
            }
        }
        if !self.dns_ports.is_empty() && !self.stack.dns_pending() {
            changes.extend(self.dns_ports.drain(..).map(|port| (port, false)));
        }
        for &(port, bound) in &changes {
            self.stack.device().udp_binding(port, true, Some(id), bound);
            self.counters.dns_ports_announced += u64::from(bound);
        }
        if changes.is_empty() {
            return;
        }
        for (_, sibling) in &self.siblings {
            let changes = changes.clone();
            sibling.post(move |service: &mut NetService| {
                for (port, bound) in changes {
                    service.udp_binding(port, id, bound);
                }
            });
        }
    }

    /// Hands the datagrams this pair received for UDP sockets on other
    /// pairs, and the TCP segments for their outgoing connections, to
    /// them (one posted request per pair and pump).
    fn forward_datagrams(&mut self) {
        if self.siblings.is_empty() {
            return;
        }
        let mut frames = self.stack.device().take_forwarded();
        // TCP segments for another pair's outgoing connection (the tap
        // chose this queue for the answer): to the pair whose share of the
        // ephemeral ports holds their port. The card's pairs are
        // instances first..first + pairs, pair k the k-th.
        let diverted = self.stack.take_diverted();
        if !diverted.is_empty() {
            let own = self.stack.ephemeral_share().0 as usize;
            let lowest = self.siblings.iter().map(|&(id, _)| id).min().unwrap_or(0);
            let first = if own == 0 { lowest - 1 } else { lowest };
            frames.extend(diverted.into_iter().map(|(pair, frame)| (first + pair as usize, frame)));
        }
        for (id, sibling) in &self.siblings {
            let (theirs, rest): (Vec<_>, Vec<_>) = frames.into_iter().partition(|(to, _)| to == id);
            frames = rest;
            if !theirs.is_empty() {
                let theirs: Vec<Vec<u8>> = theirs.into_iter().map(|(_, frame)| frame).collect();
                sibling.post(move |service: &mut NetService| service.inject(theirs));
            }
        }
    }

    /// Asks the service for a pump as soon as the threads ready on this
    /// CPU have run. A service deadline already due means a poll is on its
    /// way (every deadline kept here was given to the service, and `serve`
    /// sets the next).
    fn defer_pump(&mut self) {
        let now = Instant::now().ticks();
        if self.service_deadline > now {
            self.service_deadline = now;
            self.service.poll_by(Instant::from_ticks(now));
        }
    }

    /// The service's work (poll or interrupt hook): receive interrupts
    /// suppressed, the stack polled until no frame waits, interrupts asked
    /// for again and re-checked. Returns the poll hook's next deadline.
    fn serve(&mut self) -> Option<Instant> {
        const MAX_ROUNDS: usize = 8;
        for _ in 0..MAX_ROUNDS {
            self.stack.device().quiet();
            self.pump();
            if !self.stack.device().arm() {
                break;
            }
        }
        self.settled = true;
        // Right after polling to quiescence smoltcp can still ask for a poll
        // "now" that does nothing: seen with peers that keep their window
        // shut (a client that stopped reading: four such sockets made the
        // service poll in a loop, never reaching a scheduling point, and the
        // NIC's CPU served nothing else). Any real work was done by the
        // polls above, so the next one waits at least MIN_POLL_MICROS.
        let deadline = self
            .next_poll_micros()
            .map(|micros| micros.max(MIN_POLL_MICROS))
            .map(|micros| Instant::from_ticks(ticks_from_now(micros)));
        self.service_deadline = deadline.map_or(u64::MAX, Instant::ticks);
        deadline
    }

    fn ready(&mut self, interest: Interest) -> bool {
        let stack = &mut self.stack;
        match interest {
            Interest::Readable(handle) => stack.tcp_readable(handle),
            Interest::Writable(handle) => stack.tcp_writable(handle),
            Interest::Accept(port) => stack.tcp_accept_ready(port),
            Interest::Connected(handle) => {
                !matches!(stack.tcp_connect_state(handle), Ok(toro_net::ConnectState::Pending))
            }
            Interest::UdpReadable(handle) => stack.udp_readable(handle),
            Interest::UdpWritable(handle) => stack.udp_writable(handle),
            Interest::IcmpReply(handle) => stack.icmp_readable(handle),
            Interest::Dns(handle) => stack.dns_ready(handle),
        }
    }

    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let now = Instant::now().ticks();
        let mut index = 0;
        while index < self.waiters.len() {
            let waiter = &self.waiters[index];
            let (interest, expired) = (waiter.interest, waiter.deadline <= now);
            if expired || self.ready(interest) {
                let waiter = self.waiters.swap_remove(index);
                if expired {
                    self.counters.timeouts += 1;
                } else {
                    self.counters.wakeups += 1;
                }
                scheduler::wake(waiter.thread, waiter.epoch);
            } else {
                index += 1;
            }
        }
    }

    /// Microseconds until the service must poll again, `None` for never
    /// (until a frame arrives or a socket call wakes it).
    fn next_poll_micros(&mut self) -> Option<u64> {
        let stack_delay = self.stack.poll_delay_micros(now_micros());
        let device_delay = self.stack.device().needs_polling().then_some(POLLING_MICROS);
        match (stack_delay, device_delay) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX))),
        }
    }
}

/// The value of an instance's service: which instance (the instance itself
/// is published for `with_local`, used by socket calls on the owner CPU).
pub(crate) struct NetService {
    id: usize,
}

impl NetService {
    /// Makes instance `id` (its device first, which may bind its
    /// interrupts through `starting`) and publishes it. Owner CPU.
    fn open(id: usize, plan: Plan, starting: &Starting<NetService>) -> Self {
        let device = (plan.device)(starting);
        let stack = Stack::new(device, plan.addressing, plan.config, now_micros());
        let instance = Box::new(Instance {
            id,
            name: plan.name,
            owner: plan.owner,
            stack,
            counters: InstanceCounters::default(),
            waiters: Vec::new(),
            // Known now, so the start needs no call to this CPU to say it.
            service: starting.handle(),
            service_deadline: u64::MAX,
            siblings: Vec::new(),
            udp_groups: Vec::new(),
            settled: false,
            dns_ports: Vec::new(),
        });
        INSTANCES[id].store(Box::into_raw(instance) as u64, Ordering::Release);
        Self { id }
    }

    /// The poll hook: smoltcp's timers (and a polled NIC).
    fn poll(&mut self) -> Option<Instant> {
        with_local(self.id, Instance::serve).flatten()
    }

    /// UDP `port` was bound (or closed) on pair instance `on`.
    fn udp_binding(&mut self, port: u16, on: usize, bound: bool) {
        let here = on == self.id;
        with_local(self.id, |instance| instance.stack.device().udp_binding(port, here, Some(on), bound));
    }

    /// Frames another pair of the card received (neighbour discovery, datagrams).
    fn inject(&mut self, frames: Vec<Vec<u8>>) {
        with_local(self.id, |instance| {
            for frame in frames {
                instance.stack.device().inject(frame);
            }
        });
        // Served as if the NIC had interrupted.
        self.interrupt();
    }

    /// The interrupt hook: the NIC has frames (or transmit room).
    fn interrupt(&mut self) {
        with_local(self.id, |instance| {
            let deadline = instance.serve();
            // The hook cannot return a deadline: hand it to the poll hook.
            if let Some(deadline) = deadline {
                instance.service.poll_by(deadline);
            }
        });
    }
}
