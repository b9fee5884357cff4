//! virtio-fs (virtio 1.2, section 5.11) as a service on its owner CPU: the transport under a shared folder.
//!
//! The device carries FUSE messages to the host's server (`virtiofsd`);
//! the protocol and the client session are `toro_fs::fuse` (host-tested),
//! run by the mount's service in `toro::fs`. This driver only moves
//! messages: a request is device-readable buffers (the message, then a
//! payload such as `WRITE`'s data) and device-writable ones (the reply's
//! head, then its data), all the caller's own memory (RAM is identity
//! mapped: no copy). Requests go on the first request queue (queue 1);
//! `FORGET`s, which have no reply, on the high-priority queue (queue 0),
//! their bytes kept by the driver until the device hands them back.
//!
//! The device, its queues and its interrupt (the GSI on virtio-mmio, one
//! MSI-X vector for both queues on PCI) live on the owner CPU. A caller's
//! thread blocks on a one-slot channel until the interrupt hook sees its
//! request complete (no busy-wait). A watchdog resets the device and
//! leaves it out if a request has not completed within
//! [`REQUEST_TIMEOUT`]; so does a device breaking the queue protocol.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::io::{self, Error, ErrorKind};
use crate::service::{Builder, Handle, Starting};
use crate::sync::{sync_channel, SyncSender};
use crate::time::Instant;

use super::discovery::{self, FoundDevice};
use super::{device_type, feature, Buffer, Transport, VirtQueue, VirtioError};

/// Entries in the request queue.
pub const QUEUE_SIZE: usize = 64;
/// Entries in the high-priority queue.
const HIPRIO_SIZE: usize = 16;
/// Buffers of one request at most (message, payload, reply head, reply data).
const INDIRECT: usize = 4;
/// A request the device has not completed by then gets the device reset and left out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// `hiprio` (section 5.11.2).
const HIPRIO_QUEUE: u16 = 0;
/// The first `request` queue (Toro uses one).
const REQUEST_QUEUE: u16 = 1;
/// Most virtio-fs devices driven.
pub const MAX_DEVICES: usize = 4;
/// `tag` in the configuration: 36 bytes, NUL-padded.
const TAG_LEN: usize = 36;

const BROKEN: &str = "virtio-fs: the device broke the queue protocol; reset and left out";
const TIMED_OUT: &str = "virtio-fs: the device did not complete a request in time; reset and left out";

/// A request's outcome: the bytes the device wrote, or why it failed.
/// Plain data (no boxed error to drop on the owner's paths: the lock
/// check follows drops too).
type Reply = Result<usize, &'static str>;

/// What a request's completion does.
enum Token {
    /// The caller waiting for the bytes written.
    Reply(SyncSender<Reply>),
    /// A `FORGET`'s message, kept until the device is done with it.
    Forget(#[allow(dead_code)] Box<[u8]>),
}

impl Token {
    fn answer(self, reply: Reply) {
        if let Token::Reply(sender) = self {
            let _ = sender.send(reply);
        }
    }
}

/// A request waiting for room in its queue: `buffers[..readable]` for the
/// device to read, `buffers[readable..count]` for it to write. Kept small
/// (under 128 bytes: moved without a `memcpy` call, which the lock check
/// could not follow through a register).
struct Pending {
    hiprio: bool,
    readable: u8,
    count: u8,
    lengths: [u32; 4],
    addresses: [u64; 4],
    token: Token,
}

/// Counters of one device, from [`VirtioFs::stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Requests sent (with a reply).
    pub requests: u64,
    /// `FORGET`s sent on the high-priority queue.
    pub forgets: u64,
    /// Interrupts taken (all on the owner CPU).
    pub interrupts: u64,
    /// Notifications sent.
    pub notifications: u64,
    /// Whether the device was left out after a failure.
    pub left_out: bool,
}

/// The device, on its owner CPU.
pub struct FsDevice {
    transport: Transport,
    hiprio: Box<VirtQueue<Token, HIPRIO_SIZE, INDIRECT>>,
    requests: Box<VirtQueue<Token, QUEUE_SIZE, INDIRECT>>,
    backlog: VecDeque<Pending>,
    progress: Instant,
    left_out: Option<&'static str>,
    stats: FsStats,
    name: String,
    vector: u8,
}

fn virtio(error: VirtioError) -> Error {
    Error::new(ErrorKind::Other, format!("virtio-fs: {error}"))
}

impl FsDevice {
    fn open(found: &FoundDevice, name: String, starting: &Starting<FsDevice>) -> io::Result<(Self, String)> {
        let mut transport = found.open().map_err(virtio)?;
        let bound = super::bind_interrupts(starting, found.interrupt, 1).map_err(virtio)?;
        if let Some(message) = bound[0].msi {
            transport.set_queue_interrupt(HIPRIO_QUEUE, message).map_err(virtio)?;
            transport.set_queue_interrupt(REQUEST_QUEUE, message).map_err(virtio)?;
        }
        transport.negotiate(feature::EVENT_IDX | feature::INDIRECT_DESC).map_err(virtio)?;
        if transport.config_length() < (TAG_LEN + 4) as u64 {
            transport.fail();
            return Err(Error::from_static(ErrorKind::InvalidData, "virtio-fs: configuration shorter than its tag"));
        }
        let (words, queues) = transport.read_config(|registers, base| {
            let mut words = [0u32; TAG_LEN / 4];
            for (i, word) in words.iter_mut().enumerate() {
                *word = registers.read::<u32>(base + 4 * i as u64);
            }
            (words, registers.read::<u32>(base + TAG_LEN as u64))
        });
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(TAG_LEN);
        let tag = String::from_utf8_lossy(&bytes[..end]).into_owned();
        if queues == 0 || tag.is_empty() {
            transport.fail();
            return Err(Error::from_static(ErrorKind::InvalidData, "virtio-fs: no request queue or an empty tag"));
        }
        let hiprio = transport.setup_queue(HIPRIO_QUEUE).map_err(virtio)?;
        let requests = transport.setup_queue(REQUEST_QUEUE).map_err(virtio)?;
        transport.driver_ok();
        let device = Self {
            transport,
            hiprio,
            requests,
            backlog: VecDeque::new(),
            progress: Instant::now(),
            left_out: None,
            stats: FsStats::default(),
            name,
            vector: bound[0].vector,
        };
        Ok((device, tag))
    }

    /// Queues a request (on the owner CPU); `token.reply` gets the bytes written.
    #[inline(never)]
    fn start(&mut self, pending: Pending) {
        if let Some(why) = self.left_out {
            pending.token.answer(Err(why));
            return;
        }
        if self.requests.in_flight() + self.hiprio.in_flight() == 0 {
            self.progress = Instant::now();
        }
        self.backlog.push_back(pending);
        self.send_backlog();
    }

    /// Adds what fits of the backlog (in order), then one notification per queue.
    fn send_backlog(&mut self) {
        let (mut hiprio_added, mut requests_added) = (false, false);
        while let Some(next) = self.backlog.front() {
            let buffers = usize::from(next.count);
            let fits = if next.hiprio { self.hiprio.fits(buffers) } else { self.requests.fits(buffers) };
            if !fits {
                break;
            }
            let p = self.backlog.pop_front().expect("front exists");
            let buffers: [Buffer; 4] =
                core::array::from_fn(|i| Buffer { address: p.addresses[i], length: p.lengths[i] });
            let (readable, writable) = buffers[..usize::from(p.count)].split_at(usize::from(p.readable));
            let added = if p.hiprio {
                hiprio_added = true;
                self.stats.forgets += 1;
                self.hiprio.add(readable, writable, p.token)
            } else {
                requests_added = true;
                self.stats.requests += 1;
                self.requests.add(readable, writable, p.token)
            };
            if let Err(error) = added {
                log::error!("{}: {error}", self.name);
                self.leave_out(BROKEN);
                return;
            }
        }
        if hiprio_added && self.hiprio.kick(&mut self.transport) {
            self.stats.notifications += 1;
        }
        if requests_added && self.requests.kick(&mut self.transport) {
            self.stats.notifications += 1;
        }
    }

    /// The interrupt hook: acknowledge, hand back what completed, send more.
    #[inline(never)]
    fn on_interrupt(&mut self) {
        self.stats.interrupts += 1;
        self.transport.take_interrupt();
        if self.left_out.is_none() {
            self.drain();
        }
    }

    fn drain(&mut self) {
        loop {
            loop {
                let done = match self.requests.pop_used() {
                    Ok(Some(done)) => Some(done),
                    Ok(None) => match self.hiprio.pop_used() {
                        Ok(done) => done,
                        Err(error) => return self.broken(error),
                    },
                    Err(error) => return self.broken(error),
                };
                let Some(done) = done else { break };
                self.progress = Instant::now();
                done.token.answer(Ok(done.written as usize));
            }
            self.send_backlog();
            if self.left_out.is_some() {
                return;
            }
            // Both must be re-armed; completions that slipped in: drain again.
            let quiet_hiprio = self.hiprio.enable_interrupts();
            if self.requests.enable_interrupts() && quiet_hiprio {
                return;
            }
        }
    }

    fn broken(&mut self, error: super::QueueError) {
        log::error!("{}: {error}", self.name);
        self.leave_out(BROKEN);
    }

    fn watchdog(&mut self, now: Instant) -> Option<Instant> {
        let in_flight = self.requests.in_flight() + self.hiprio.in_flight();
        if self.left_out.is_none() && in_flight > 0 && now.duration_since(self.progress) > REQUEST_TIMEOUT {
            log::error!("{}: no completion in {} s; device reset and left out", self.name, REQUEST_TIMEOUT.as_secs());
            self.leave_out(TIMED_OUT);
        }
        Some(now + WATCHDOG_PERIOD)
    }

    /// Resets the device, fails every waiting request, refuses new ones.
    fn leave_out(&mut self, why: &'static str) {
        if self.transport.reset().is_err() {
            log::error!("{}: reset did not complete", self.name);
        }
        self.transport.fail();
        let fail = |token: Token| token.answer(Err(why));
        self.requests.reset(fail);
        self.hiprio.reset(fail);
        for pending in self.backlog.drain(..) {
            fail(pending.token);
        }
        self.left_out = Some(why);
        self.stats.left_out = true;
    }
}

/// A virtio-fs device, reachable from every CPU.
#[derive(Clone)]
pub struct VirtioFs {
    handle: Handle<FsDevice>,
    tag: String,
    index: usize,
    vector: u8,
}

/// A request of (address, length) parts, the empty ones left out: the
/// first two for the device to read, the last two for it to write.
fn pending(hiprio: bool, parts: [(u64, usize); 4], token: Token) -> Pending {
    let mut p = Pending { hiprio, readable: 0, count: 0, lengths: [0; 4], addresses: [0; 4], token };
    for (i, (address, length)) in parts.into_iter().enumerate() {
        if length > 0 {
            p.addresses[usize::from(p.count)] = address;
            p.lengths[usize::from(p.count)] = length as u32;
            p.count += 1;
        }
        if i == 1 {
            p.readable = p.count;
        }
    }
    p
}

impl VirtioFs {
    /// Starts a driver for `found` (a virtio-fs device, the `index`-th) on its owner CPU.
    pub fn start(found: FoundDevice, index: usize) -> io::Result<Self> {
        if found.device_type != device_type::FS {
            return Err(Error::from_static(ErrorKind::InvalidInput, "virtio-fs: not a filesystem device"));
        }
        let name = format!("virtio-fs#{index}");
        let service_name = name.clone();
        let (tag_sender, tag_receiver) = sync_channel::<String>(1);
        let handle = Builder::new(name.clone())
            .cpu(found.owner)
            .poll(|device: &mut FsDevice, now| device.watchdog(now))
            .on_interrupt(|device: &mut FsDevice, _source| device.on_interrupt())
            .try_start_with(move |starting| {
                let (device, tag) = FsDevice::open(&found, service_name, starting)?;
                let _ = tag_sender.send(tag);
                Ok(device)
            })
            .map_err(|error| match error {
                crate::service::StartError::Init(error) => error,
                crate::service::StartError::Service(error) => {
                    Error::new(ErrorKind::Other, format!("{name}: no service on CPU {}: {error:?}", found.owner))
                }
            })?;
        let tag = tag_receiver.recv().unwrap_or_default();
        let vector = handle.call(|device| device.vector);
        Ok(Self { handle, tag, index, vector })
    }

    /// The device's tag (what the host named the share).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Its number among the virtio-fs devices (`fs#N` in `toro.mount`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The owner CPU.
    pub fn cpu(&self) -> usize {
        self.handle.cpu()
    }

    /// The interrupt vector on the owner CPU.
    pub fn vector(&self) -> u8 {
        self.vector
    }

    /// The service handle.
    pub fn handle(&self) -> Handle<FsDevice> {
        self.handle
    }

    /// The device's counters.
    pub fn stats(&self) -> io::Result<FsStats> {
        self.handle.try_call(|device| device.stats).map_err(service_error)
    }

    /// One request from any CPU: `request` and `payload` to the device,
    /// its reply into `head` then `data`; the thread blocks until the
    /// device completes it. Returns the bytes the device wrote.
    #[inline(never)]
    pub fn exchange(&self, request: &[u8], payload: &[u8], head: &mut [u8], data: &mut [u8]) -> io::Result<usize> {
        let address = |slice: &[u8]| (super::physical_address(slice.as_ptr()), slice.len());
        let (reply, answer) = sync_channel::<Reply>(1);
        let parts = [address(request), address(payload), address(head), address(data)];
        let pending = pending(false, parts, Token::Reply(reply));
        // The buffers stay borrowed until the answer, which comes after the
        // device finished with them (or was reset).
        self.handle.try_call(move |device| device.start(pending)).map_err(service_error)?;
        match answer.recv() {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(why)) => Err(Error::from_static(ErrorKind::Other, why)),
            Err(_) => Err(Error::from_static(ErrorKind::Other, "virtio-fs: the driver went away")),
        }
    }

    /// A message with no reply on the high-priority queue (`FORGET`); returns at once.
    #[inline(never)]
    pub fn send(&self, request: &[u8]) -> io::Result<()> {
        let owned: Box<[u8]> = request.into();
        // The box's bytes stay put when the box moves into the token.
        let parts = [(super::physical_address(owned.as_ptr()), owned.len()), (0, 0), (0, 0), (0, 0)];
        let pending = pending(true, parts, Token::Forget(owned));
        self.handle.try_call(move |device| device.start(pending)).map_err(service_error)
    }
}

fn service_error(error: crate::service::ServiceError) -> Error {
    use crate::service::ServiceError;
    // Fixed messages: no formatting on the request path.
    Error::from_static(
        ErrorKind::Other,
        match error {
            ServiceError::Stopped => "virtio-fs: the driver service stopped",
            ServiceError::Reentered => "virtio-fs: the driver service called itself",
            _ => "virtio-fs: the driver service is unreachable",
        },
    )
}

/// The virtio-fs devices started at boot, in discovery order.
static DEVICES: crate::once::BootCell<Vec<VirtioFs>> = crate::once::BootCell::new();

/// Starts a driver for every virtio-fs device found (boot CPU, before the application).
pub(crate) fn start_all() {
    let mut devices = Vec::new();
    let found = discovery::devices().iter().filter(|device| device.device_type == device_type::FS);
    for (index, device) in found.enumerate() {
        if index == MAX_DEVICES {
            log::warn!("virtio-fs: devices beyond the first {MAX_DEVICES} left out");
            break;
        }
        match VirtioFs::start(*device, index) {
            Ok(fs) => {
                log::info!("virtio-fs#{index}: tag {:?}, owner cpu {}", fs.tag(), fs.cpu());
                devices.push(fs);
            }
            Err(error) => log::warn!("virtio-fs at {:#x} left out: {error}", device.address),
        }
    }
    DEVICES.set(devices);
}

/// The virtio-fs devices started at boot (those that failed are left out).
pub fn devices() -> &'static [VirtioFs] {
    DEVICES.get().map(Vec::as_slice).unwrap_or(&[])
}
