//! The virtio-net driver (virtio 1.2, section 5.1) over virtio-mmio and virtio-pci: a queue pair per owner CPU.
//!
//! A card has a device-wide part, [`Card`] (transport, features,
//! configuration, control queue), and one or more queue pairs
//! ([`VirtioNet`], each the device of one TCP/IP instance). With one pair
//! (virtio-mmio, a card without `VIRTIO_NET_F_MQ`, one CPU) the pair owns
//! its card. On a multi-queue PCI card (`MQ` and `CTRL_VQ`) the card is a
//! service of its own on the card's owner CPU, and pair k is made on its
//! own CPU, in its instance's service: its queues and buffers are that
//! CPU's memory, its two MSI-X vectors are that CPU's, and it notifies the
//! device through its queues' doorbells, so its data path never leaves its
//! CPU. The card's owner programs each pair's queues into the device
//! (`queue_select` is device-wide) when the pair asks ([`Card::attach`]),
//! then sets `DRIVER_OK` and sends `VQ_PAIRS_SET` over the control queue
//! ([`Card::start`]); a pair transmits only once its card is running
//! ([`VirtioNet::go_live`]).
//!
//! Receive buffers are posted in batches in `flush`; transmits are queued
//! and the device notified once per flush. The device rules (features,
//! header, checksum verdicts, config space, control commands) are
//! `toro_net::virtio_net`, host-tested.
//!
//! Interrupts are bound to the instance's service while it starts: the GSI
//! of a virtio-mmio card (both queues share it), or two MSI-X vectors on
//! PCI (source 0 the receive queue, source 1 the transmit queue). Receive
//! interrupts are suppressed while the service works ([`VirtioNet::quiet`])
//! and asked for again, with a re-check, before it waits
//! ([`VirtioNet::arm`]); transmit interrupts are asked for only while the
//! ring is full (completions are otherwise reclaimed on the next
//! transmit). If the interrupt cannot be bound the card is polled every
//! millisecond instead (`needs_polling`), with a warning.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use toro_net::device::{Capabilities, DeviceStats, ETHERNET_HEADER_BYTES, ETHERNET_MTU};
use toro_net::virtio_net::{self as rules, feature, NetConfig, NetHeader, RxChecksum, RxMerge, HEADER_BYTES};

use crate::interrupts::MsiMessage;
use crate::service::{Handle, Starting};
use crate::time::Instant;
use crate::virtio::discovery::FoundDevice;
use crate::virtio::{
    physical_address, Buffer, Doorbell, InterruptLine, QueuePlacement, Transport, VirtQueue, VirtioError,
};

/// Entries in each queue.
const QUEUE_SIZE: usize = 128;
/// Entries in the control queue (one command at a time).
const CONTROL_QUEUE_SIZE: usize = 8;
/// Bytes of one buffer: header plus the largest frame, rounded up.
const BUFFER_BYTES: usize = 2048;
/// Features not used yet (every chain is one or two descriptors).
const NOT_YET: u64 = feature::INDIRECT_DESC;
/// Neighbour-discovery frames held for the other pairs, or from them, at
/// once (a flood of ARP frames costs at most this many copies per poll).
const MAX_SHARED: usize = 32;
/// Datagrams for other pairs' sockets kept between two pumps.
const MAX_FORWARDED: usize = 128;
/// Frames from other pairs waiting to be delivered here.
const MAX_INJECTED: usize = MAX_SHARED + MAX_FORWARDED;
/// Most queue pairs one card gets (each is an instance).
pub(crate) const MAX_PAIRS: u16 = 32;
/// How long the device may take to answer a control command.
const CONTROL_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(1);

type Frame = Box<[u8; BUFFER_BYTES]>;

/// The card's control queue (`VIRTIO_NET_F_CTRL_VQ`): no state per request.
type ControlQueue = VirtQueue<(), CONTROL_QUEUE_SIZE, 0>;

/// What a card's device-wide part holds: its transport (status, features,
/// `queue_select`, the control queue), owned by one CPU.
pub(crate) struct Card {
    transport: Transport,
    /// The register block's address, for logs.
    address: u64,
    pci: bool,
    interrupt: InterruptLine,
    features: u64,
    config: NetConfig,
    /// The queue pairs the driver uses (1 without `MQ`).
    pairs: u16,
    /// Pairs given to the device so far (pairs attach in order).
    attached: u16,
    /// The control queue and its command's buffers, kept while the device
    /// may use them (set up by `start` when several pairs are used).
    control: Option<(Box<ControlQueue>, Box<[u8; 8]>)>,
}

impl Card {
    /// Opens the card and negotiates features (on its owner CPU); up to
    /// `max_pairs` queue pairs (`MQ` and `CTRL_VQ` are asked for only on
    /// PCI and when more than one pair is wanted).
    pub(crate) fn open(found: &FoundDevice, max_pairs: u16) -> Result<Self, VirtioError> {
        let mut transport = found.open()?;
        let pci = found.pci.is_some();
        let bus = if pci { rules::Transport::Pci } else { rules::Transport::Mmio };
        // The rules choose from what the device offers (some features
        // need others); `negotiate_with` refuses a legacy device first.
        let mut unwanted = NOT_YET;
        if max_pairs <= 1 {
            unwanted |= feature::CTRL_VQ | feature::MQ;
        }
        let mut offered_features = 0;
        let features = transport.negotiate_with(|offered| {
            offered_features = offered;
            rules::choose_features(offered & !unwanted, bus).unwrap_or(0)
        })?;
        log::info!("virtio-net at {:#x}: features offered {offered_features:#x}, taken {features:#x}", found.address);
        if transport.config_length() < 12 {
            return Err(VirtioError::Unsupported);
        }
        let config = transport.read_config(|registers, base| {
            let mut bytes = [0u8; 12];
            for (at, byte) in bytes.iter_mut().enumerate() {
                *byte = registers.read::<u8>(base + at as u64);
            }
            bytes
        });
        let config = NetConfig::parse(&config, features).map_err(|_| VirtioError::Unsupported)?;
        let mq = features & feature::MQ != 0 && features & feature::CTRL_VQ != 0;
        // Two MSI-X entries per pair.
        let vectors = match found.interrupt {
            InterruptLine::Msix { entries } => (entries / 2).max(1),
            InterruptLine::Gsi { .. } => 1,
        };
        let pairs = if mq { config.max_queue_pairs.min(max_pairs).min(vectors).clamp(1, MAX_PAIRS) } else { 1 };
        Ok(Self {
            transport,
            address: found.address,
            pci,
            interrupt: found.interrupt,
            features,
            config,
            pairs,
            attached: 0,
            control: None,
        })
    }

    /// The queue pairs the driver uses.
    pub(crate) fn pairs(&self) -> u16 {
        self.pairs
    }

    /// What a pair needs to know of its card (features, configuration,
    /// interrupt line, bus, address).
    fn facts(&self) -> Facts {
        Facts {
            features: self.features,
            config: self.config,
            interrupt: self.interrupt,
            pci: self.pci,
            address: self.address,
            pairs: self.pairs,
        }
    }

    /// Gives the device queue pair `pair`'s queues (made on the pair's
    /// CPU), each with its MSI-X message; returns their doorbells.
    fn attach(
        &mut self,
        queues: [QueuePlacement; 2],
        messages: [Option<MsiMessage>; 2],
    ) -> Result<[Doorbell; 2], VirtioError> {
        for (placement, message) in queues.iter().zip(messages) {
            if let Some(message) = message {
                self.transport.set_queue_interrupt(placement.queue, message)?;
            }
        }
        let doorbells = [self.transport.attach_queue(queues[0])?, self.transport.attach_queue(queues[1])?];
        self.attached += 1;
        Ok(doorbells)
    }

    /// Once every pair is attached: `DRIVER_OK`, then (several pairs) the
    /// control queue's `VQ_PAIRS_SET`. The control queue is set up first
    /// (before `DRIVER_OK`, as section 3.1.1 orders) and polled: one
    /// command at boot, answered while the notification is handled.
    pub(crate) fn start(&mut self) -> Result<(), VirtioError> {
        if self.attached < self.pairs {
            // A pair failed to attach (logged): the device uses those before it.
            log::warn!("virtio-net at {:#x}: {} of {} queue pairs attached", self.address, self.attached, self.pairs);
            self.pairs = self.attached.max(1);
        }
        if self.pairs <= 1 {
            self.transport.driver_ok();
            return Ok(());
        }
        let index = rules::control_queue(self.config.max_queue_pairs);
        let mut queue: Box<VirtQueue<(), CONTROL_QUEUE_SIZE, 0>> = self.transport.setup_queue(index)?;
        queue.disable_interrupts();
        self.transport.driver_ok();
        let mut buffers = Box::new([0u8; 8]);
        buffers[..4].copy_from_slice(&rules::vq_pairs_set(self.pairs));
        buffers[4] = 0xff;
        let base = physical_address(&*buffers);
        let command = Buffer { address: base, length: 4 };
        let ack = Buffer { address: base + 4, length: 1 };
        queue.add(&[command], &[ack], ()).map_err(VirtioError::DeviceBroken)?;
        queue.kick(&mut self.transport);
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        let answered = loop {
            match queue.pop_used() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() > deadline => break false,
                Ok(None) => core::hint::spin_loop(),
                Err(error) => return Err(VirtioError::DeviceBroken(error)),
            }
        };
        // SAFETY: the device wrote the ack byte before the used element
        // (`pop_used` read it with acquire ordering).
        let ack_byte = unsafe { core::ptr::read_volatile(&buffers[4]) };
        self.control = Some((queue, buffers));
        if !answered {
            return Err(VirtioError::Timeout);
        }
        rules::control_ack(ack_byte).map_err(|_| VirtioError::Unsupported)?;
        log::info!(
            "virtio-net at {:#x}: {} queue pairs of {} (VQ_PAIRS_SET)",
            self.address,
            self.pairs,
            self.config.max_queue_pairs
        );
        Ok(())
    }
}

/// A card's facts a queue pair needs.
#[derive(Clone, Copy)]
struct Facts {
    features: u64,
    config: NetConfig,
    interrupt: InterruptLine,
    pci: bool,
    address: u64,
    pairs: u16,
}

/// One queue pair of a virtio-net card, owned by its CPU.
pub(crate) struct VirtioNet {
    /// The card, when this (its only) pair owns it (else the card's service does).
    card: Option<Card>,
    rx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
    tx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
    /// The receive and transmit queues' doorbells.
    doorbells: [Doorbell; 2],
    rx_buffers: Vec<Frame>,
    tx_buffers: Vec<Frame>,
    /// Receive buffers consumed, to post again in `flush`.
    rx_free: Vec<usize>,
    /// Transmit buffers free.
    tx_free: Vec<usize>,
    /// A completed receive not yet given to the stack.
    rx_ready: Option<Ready>,
    /// `MRG_RXBUF`: a packet may span several receive buffers.
    merged: bool,
    /// The packet being gathered from several buffers, and the last one.
    merge: RxMerge,
    tx_queued: bool,
    config: NetConfig,
    features: u64,
    stats: DeviceStats,
    /// Its interrupts are bound to the service (else it is polled).
    interrupt_driven: bool,
    /// Transmit interrupts were asked for (the ring was full).
    tx_waiting: bool,
    /// The card runs (`DRIVER_OK`, pairs set): transmits may go out.
    live: bool,
    /// One of several pairs: neighbour-discovery frames it receives are
    /// handed to the others ([`Self::take_shared`]).
    shares: bool,
    /// Received neighbour-discovery frames for the other pairs.
    to_share: Vec<Vec<u8>>,
    /// Frames another pair received, delivered before the queue's.
    injected: VecDeque<Vec<u8>>,
    /// UDP ports bound on another pair of the card (port -> that pair's
    /// instance): datagrams for them that reach this queue are handed over.
    udp_elsewhere: BTreeMap<u16, usize>,
    /// UDP ports bound on this pair (never handed over).
    udp_here: BTreeSet<u16>,
    /// Received datagrams for other pairs: (instance, frame).
    to_forward: Vec<(usize, Vec<u8>)>,
}

/// A received frame waiting for the stack.
#[derive(Clone, Copy)]
enum Ready {
    /// In receive buffer `index`, `written` bytes with the header.
    Buffer { index: usize, written: usize },
    /// Gathered from several buffers: `VirtioNet::merge`'s packet.
    Merged,
}

impl Ready {
    /// The frame (after the header): buffers and merger passed apart, so
    /// the caller may still change the device's other fields.
    fn frame<'a>(self, buffers: &'a [Frame], merge: &'a RxMerge) -> &'a [u8] {
        match self {
            Self::Buffer { index, written } => &buffers[index][HEADER_BYTES..written],
            Self::Merged => merge.packet(),
        }
    }
}

/// Whether a received frame is long enough for an Ethernet header and
/// its checksum holds (trusted when the device vouched for it).
fn good_frame(header: &NetHeader, frame: &[u8]) -> bool {
    frame.len() > ETHERNET_HEADER_BYTES && rules::receive_checksum(header, frame) == RxChecksum::Good
}

/// Binds a pair's interrupts to the service being started and says how:
/// (interrupt driven, the receive and transmit queues' MSI-X messages).
fn bind<S>(facts: &Facts, pair: u16, starting: &Starting<S>) -> (bool, [Option<MsiMessage>; 2]) {
    // `toro.net.poll` on the command line: poll every millisecond instead
    // (to compare with the interrupt-driven card; docs/net.md).
    let polled = toro_core::command_line::CommandLine::new(crate::system::command_line()).get("toro.net.poll");
    let binding = match polled {
        Some(_) => Err(VirtioError::Unsupported),
        None => crate::virtio::bind_interrupts(starting, facts.interrupt, 2),
    };
    let label = if facts.pairs > 1 { alloc::format!("queue pair {pair}: ") } else { alloc::string::String::new() };
    match binding {
        Ok(bound) => {
            let message = |source: usize| bound.get(source).or(bound.first()).and_then(|b| b.msi);
            let vectors: Vec<alloc::string::String> = bound.iter().map(|b| alloc::format!("{:#x}", b.vector)).collect();
            log::info!(
                "virtio-net at {:#x}: {label}interrupts {} ({}) on cpu {}",
                facts.address,
                if facts.pci { "MSI-X" } else { "GSI" },
                vectors.join(", "),
                starting.cpu()
            );
            (true, [message(0), message(1)])
        }
        Err(_) if polled.is_some() => {
            log::info!("virtio-net at {:#x}: {label}polled every millisecond (toro.net.poll)", facts.address);
            (false, [None, None])
        }
        Err(error) => {
            log::warn!("virtio-net at {:#x}: {label}{error}; polled every millisecond instead", facts.address);
            (false, [None, None])
        }
    }
}

impl VirtioNet {
    /// Opens and starts a card with one queue pair (on the owner CPU, in
    /// its service's `init`), binding its interrupts through `starting`.
    pub(crate) fn open<S>(found: &FoundDevice, starting: &Starting<S>) -> Result<Self, VirtioError> {
        let mut card = Card::open(found, 1)?;
        let facts = card.facts();
        let (interrupt_driven, messages) = bind(&facts, 0, starting);
        let (rx, tx) = Self::queues(0, facts.features);
        let doorbells = card.attach([rx.placement(), tx.placement()], messages)?;
        card.start()?;
        let mut device = Self::new(Some(card), rx, tx, doorbells, &facts, interrupt_driven);
        device.go_live();
        Ok(device)
    }

    /// Makes queue pair `pair` of the multi-queue card `card` (on the
    /// pair's CPU, in its instance's `init`): binds its interrupts here,
    /// makes its queues and buffers here, has the card's owner give them
    /// to the device, and posts its receive buffers. It transmits once the
    /// card runs ([`Self::go_live`]).
    pub(crate) fn open_pair<S>(card: Handle<Card>, pair: u16, starting: &Starting<S>) -> Result<Self, VirtioError> {
        let facts = card.call(|card| card.facts());
        let (interrupt_driven, messages) = bind(&facts, pair, starting);
        let (rx, tx) = Self::queues(pair, facts.features);
        let queues = [rx.placement(), tx.placement()];
        let doorbells = card.call(move |card| card.attach(queues, messages))?;
        Ok(Self::new(None, rx, tx, doorbells, &facts, interrupt_driven))
    }

    #[allow(clippy::type_complexity)]
    fn queues(
        pair: u16,
        features: u64,
    ) -> (Box<VirtQueue<usize, QUEUE_SIZE, 0>>, Box<VirtQueue<usize, QUEUE_SIZE, 0>>) {
        let rx = Transport::new_queue(rules::receive_queue(pair), features);
        let mut tx: Box<VirtQueue<usize, QUEUE_SIZE, 0>> = Transport::new_queue(rules::transmit_queue(pair), features);
        tx.disable_interrupts();
        (rx, tx)
    }

    fn new(
        card: Option<Card>,
        rx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
        tx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
        doorbells: [Doorbell; 2],
        facts: &Facts,
        interrupt_driven: bool,
    ) -> Self {
        let mut device = Self {
            card,
            rx,
            tx,
            doorbells,
            rx_buffers: (0..QUEUE_SIZE).map(|_| Box::new([0u8; BUFFER_BYTES])).collect(),
            tx_buffers: (0..QUEUE_SIZE).map(|_| Box::new([0u8; BUFFER_BYTES])).collect(),
            rx_free: (0..QUEUE_SIZE).collect(),
            tx_free: (0..QUEUE_SIZE).collect(),
            rx_ready: None,
            merged: facts.features & feature::MRG_RXBUF != 0,
            merge: RxMerge::new(),
            tx_queued: false,
            config: facts.config,
            features: facts.features,
            stats: DeviceStats::default(),
            interrupt_driven,
            tx_waiting: false,
            live: false,
            shares: facts.pairs > 1,
            to_share: Vec::new(),
            injected: VecDeque::new(),
            udp_elsewhere: BTreeMap::new(),
            udp_here: BTreeSet::new(),
            to_forward: Vec::new(),
        };
        // Populating the receive queue before `DRIVER_OK` is part of
        // device set-up (section 3.1.1, step 7).
        device.post_receive_buffers();
        device
    }

    /// The neighbour-discovery frames received since the last call, for
    /// the card's other pairs (`toro_net::device::neighbour_discovery`).
    pub(crate) fn take_shared(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.to_share)
    }

    /// The datagrams received since the last call for UDP ports bound on
    /// other pairs: (their instance, frame).
    pub(crate) fn take_forwarded(&mut self) -> Vec<(usize, Vec<u8>)> {
        core::mem::take(&mut self.to_forward)
    }

    /// UDP `port` is now bound on this pair (`here`), or on pair instance
    /// `elsewhere`, or (`None`, not here) no longer on that one.
    pub(crate) fn udp_binding(&mut self, port: u16, here: bool, elsewhere: Option<usize>, bound: bool) {
        match (here, bound) {
            (true, true) => {
                self.udp_here.insert(port);
            }
            (true, false) => {
                self.udp_here.remove(&port);
            }
            (false, true) => {
                if let Some(pair) = elsewhere {
                    self.udp_elsewhere.insert(port, pair);
                }
            }
            (false, false) => {
                if self.udp_elsewhere.get(&port).copied() == elsewhere {
                    self.udp_elsewhere.remove(&port);
                }
            }
        }
    }

    /// Whether UDP `port` is bound on this pair or on another (`udp_binding`).
    pub(crate) fn udp_port_known(&self, port: u16) -> bool {
        self.udp_here.contains(&port) || self.udp_elsewhere.contains_key(&port)
    }

    /// The pair instance a received frame belongs to, if not this one: a
    /// datagram for a UDP port bound on another pair and not here, or an
    /// ICMP port unreachable for a datagram such a port sent (a connected
    /// socket's refusal, `toro_net::Stack::udp_set_peer`: the tap picks a
    /// queue for the ICMP packet by its own flow, not the datagram's).
    fn forward_to(&self, frame: &[u8]) -> Option<usize> {
        if self.udp_elsewhere.is_empty() {
            return None;
        }
        let port = toro_net::device::udp_destination_port(frame)
            .or_else(|| toro_net::device::udp_port_unreachable(frame).map(|(port, _)| port))?;
        if self.udp_here.contains(&port) {
            return None;
        }
        self.udp_elsewhere.get(&port).copied()
    }

    /// A frame another pair of the card received (neighbour discovery, or
    /// a datagram for a socket here), delivered to the stack as if it came
    /// from this pair's queue; at most `MAX_INJECTED` wait (more are
    /// dropped and counted).
    pub(crate) fn inject(&mut self, frame: Vec<u8>) {
        if self.injected.len() < MAX_INJECTED {
            self.injected.push_back(frame);
        } else {
            self.stats.rx_dropped += 1;
        }
    }

    /// A multicast datagram this pair sent, received as if it had arrived
    /// (`toro_net::NetDevice::loop_back`): handed to the pair that bound
    /// its port when that is another one (`forward_to`), else delivered
    /// here before the queue's frames.
    pub(crate) fn loop_back(&mut self, frame: Vec<u8>) {
        match self.forward_to(&frame) {
            Some(pair) if self.to_forward.len() < MAX_FORWARDED => self.to_forward.push((pair, frame)),
            Some(_) => self.stats.rx_dropped += 1,
            None => self.inject(frame),
        }
    }

    /// The card runs: transmits may go out (and the receive queue is
    /// notified again, in case the device ignored an earlier notification).
    pub(crate) fn go_live(&mut self) {
        self.live = true;
        self.doorbells[0].ring();
    }

    fn post_receive_buffers(&mut self) {
        let mut added = false;
        while let Some(&index) = self.rx_free.last() {
            let buffer = Buffer { address: physical_address(&*self.rx_buffers[index]), length: BUFFER_BYTES as u32 };
            if self.rx.add(&[], &[buffer], index).is_err() {
                break;
            }
            self.rx_free.pop();
            added = true;
        }
        if added && self.rx.kick_doorbell(&self.doorbells[0]) {
            self.stats.notifications += 1;
        }
    }

    fn reclaim_transmits(&mut self) {
        while let Ok(Some(done)) = self.tx.pop_used() {
            self.tx_free.push(done.token);
        }
    }

    /// Takes the next good received frame into `rx_ready`. A frame in one
    /// buffer is handed over in place; one spread over several (merged
    /// buffers: a large segment, `GUEST_TSO4`/`6`) is gathered into
    /// `merge` and its buffers go back to the free list at once.
    fn next_receive(&mut self) -> bool {
        while self.rx_ready.is_none() {
            let Ok(Some(done)) = self.rx.pop_used() else { return false };
            let written = (done.written as usize).min(BUFFER_BYTES);
            let buffer = &self.rx_buffers[done.token][..written];
            let header = NetHeader::parse(buffer);
            let spans = header.map_or(1, |header| header.num_buffers);
            if self.merged && (self.merge.pending() || spans > 1) {
                let gathered = self.merge.push(buffer).map(|done| done.map(|(header, _)| header));
                self.rx_free.push(done.token);
                match gathered {
                    Ok(None) => {}
                    Ok(Some(header)) if good_frame(&header, self.merge.packet()) => {
                        self.stats.rx_large += 1;
                        self.rx_ready = Some(Ready::Merged);
                    }
                    Ok(Some(_)) | Err(_) => {
                        // A bad count or a bad frame: the packet is lost,
                        // the queue goes on with the next one.
                        self.merge.reset();
                        self.stats.rx_dropped += 1;
                    }
                }
                continue;
            }
            match header {
                Ok(header) if good_frame(&header, &buffer[HEADER_BYTES..]) => {
                    self.rx_ready = Some(Ready::Buffer { index: done.token, written });
                }
                _ => {
                    self.stats.rx_dropped += 1;
                    self.rx_free.push(done.token);
                }
            }
        }
        true
    }

    pub(crate) fn mac(&self) -> [u8; 6] {
        self.config.mac
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_frame: ETHERNET_HEADER_BYTES + ETHERNET_MTU,
            max_burst: Some(QUEUE_SIZE),
            // Frames without DATA_VALID are verified in `next_receive`.
            rx_checksum_verified: true,
            tx_checksum_offload: self.features & feature::CSUM != 0,
        }
    }

    pub(crate) fn rx_pending(&mut self) -> bool {
        !self.injected.is_empty() || self.next_receive()
    }

    pub(crate) fn receive<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if let Some(frame) = self.injected.pop_front() {
            return Some(consume(&frame));
        }
        let ready = loop {
            if !self.next_receive() {
                return None;
            }
            let ready = self.rx_ready.take()?;
            let frame = ready.frame(&self.rx_buffers, &self.merge);
            let Some(pair) = self.forward_to(frame) else { break ready };
            // A datagram for a socket on another pair: handed over (in
            // `Instance::pump`), not seen by this pair's stack (which
            // would answer "port unreachable").
            if self.to_forward.len() < MAX_FORWARDED {
                self.to_forward.push((pair, frame.to_vec()));
            } else {
                self.stats.rx_dropped += 1;
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += frame.len() as u64;
            if let Ready::Buffer { index, .. } = ready {
                self.rx_free.push(index);
            }
        };
        let frame = ready.frame(&self.rx_buffers, &self.merge);
        if self.shares && toro_net::device::neighbour_discovery(frame) && self.to_share.len() < MAX_SHARED {
            self.to_share.push(frame.to_vec());
        }
        let result = consume(frame);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        if let Ready::Buffer { index, .. } = ready {
            self.rx_free.push(index);
        }
        Some(result)
    }

    pub(crate) fn tx_room(&mut self) -> bool {
        if !self.live {
            return false;
        }
        self.reclaim_transmits();
        if self.tx_free.is_empty() && self.interrupt_driven && !self.tx_waiting {
            // Full: ask for an interrupt when the device frees a buffer
            // (if it already did, the next look finds it).
            self.tx_waiting = true;
            if !self.tx.enable_interrupts() {
                self.reclaim_transmits();
            }
        } else if self.tx_waiting && !self.tx_free.is_empty() {
            self.tx_waiting = false;
            self.tx.disable_interrupts();
        }
        !self.tx_free.is_empty()
    }

    /// Whether the device raises interrupts the service takes (else it must be polled).
    pub(crate) fn interrupt_driven(&self) -> bool {
        self.interrupt_driven
    }

    /// The interrupt hook's first step: acknowledge the device, and ask
    /// for no receive interrupts while the service works.
    pub(crate) fn quiet(&mut self) {
        if let Some(card) = &mut self.card {
            card.transport.take_interrupt();
        }
        self.rx.disable_interrupts();
    }

    /// Before the service waits: ask for the next receive interrupt and
    /// re-check; `true` if frames arrived meanwhile (work again first).
    pub(crate) fn arm(&mut self) -> bool {
        if self.rx_ready.is_some() || !self.injected.is_empty() {
            return true;
        }
        !self.rx.enable_interrupts()
    }

    pub(crate) fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if !self.live {
            return None;
        }
        if len > ETHERNET_HEADER_BYTES + ETHERNET_MTU || !self.tx_room() {
            if len <= ETHERNET_HEADER_BYTES + ETHERNET_MTU {
                self.stats.tx_ring_full += 1;
            }
            return None;
        }
        let index = self.tx_free.pop()?;
        let offload = self.features & feature::CSUM != 0;
        let buffer = &mut self.tx_buffers[index];
        let result = fill(&mut buffer[HEADER_BYTES..HEADER_BYTES + len]);
        let header = if offload {
            rules::offload_transmit_checksum(&mut buffer[HEADER_BYTES..HEADER_BYTES + len])
        } else {
            NetHeader { num_buffers: 0, ..NetHeader::default() }
        };
        buffer[..HEADER_BYTES].copy_from_slice(&header.to_bytes());
        let chain = Buffer { address: physical_address(&**buffer), length: (HEADER_BYTES + len) as u32 };
        if self.tx.add(&[chain], &[], index).is_err() {
            self.tx_free.push(index);
            self.stats.tx_ring_full += 1;
            return None;
        }
        self.tx_queued = true;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        Some(result)
    }

    pub(crate) fn flush(&mut self) {
        if self.tx_queued {
            self.tx_queued = false;
            if self.tx.kick_doorbell(&self.doorbells[1]) {
                self.stats.notifications += 1;
            }
        }
        self.post_receive_buffers();
    }

    pub(crate) fn stats(&self) -> DeviceStats {
        self.stats
    }
}
