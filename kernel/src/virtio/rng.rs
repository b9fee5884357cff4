//! virtio-rng (virtio 1.2, section 5.4) as a service on its owner CPU: random bytes for threads on every CPU.
//!
//! The device has one queue (`requestq`); each request is one
//! device-writable buffer the device fills with entropy (perhaps fewer
//! bytes than asked). The driver is a service (`crate::service`): the
//! device, its queue and the buffers (allocated on the owner CPU, so the
//! device writes into the owner's memory) live there; its interrupt is
//! routed there. A caller on any CPU sends a request through the handle
//! and blocks on a one-slot channel until the interrupt hook hands the
//! filled buffer back.
//!
//! Several requests are in flight at once (up to [`QUEUE_SIZE`]); more wait
//! in a backlog and go out as completions free descriptors, added in a
//! batch with one notification decision. A watchdog (the service's poll
//! hook) resets the device and leaves it out if a request has not
//! completed within [`REQUEST_TIMEOUT`]; every waiting caller then gets
//! [`VirtioError::Timeout`], and later ones [`VirtioError::LeftOut`].
//!
//! RDRAND stays `toro::random`'s fast path; [`start_default`] installs the
//! first device as its fallback (`toro::random::set_fallback`) for CPUs
//! without RDRAND/RDSEED.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use core::time::Duration;

use crate::service::{Builder, Handle, Starting};
use crate::sync::{sync_channel, SyncSender};
use crate::time::Instant;

use super::discovery::{self, FoundDevice};
use super::{device_type, feature, Buffer, Transport, VirtQueue, VirtioError};

/// Entries in the request queue: 8, QEMU's virtio-rng queue size (on PCI
/// the driver may not exceed it; virtio-mmio reports a larger maximum).
pub const QUEUE_SIZE: usize = 8;
/// The most bytes one request asks the device for.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// A request the device has not completed by then gets the device reset and left out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the watchdog looks.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(250);
/// `requestq` is queue 0 (section 5.4.2).
const REQUEST_QUEUE: u16 = 0;
/// Features the driver can use (section 5.4.3: the device has none of its own).
const WANTED_FEATURES: u64 = feature::EVENT_IDX;

/// What the caller gets back: the buffer and how many bytes the device wrote.
type Reply = Result<(Box<[u8]>, usize), VirtioError>;

/// One request: the buffer the device fills, and where the answer goes.
struct Request {
    buffer: Box<[u8]>,
    reply: SyncSender<Reply>,
}

/// The device, on its owner CPU.
pub struct RngDevice {
    transport: Transport,
    /// Boxed (as `Transport::setup_queue` gives it): its bookkeeping stays
    /// off the service thread's 32 KiB stack while the value is moved.
    queue: Box<VirtQueue<Request, QUEUE_SIZE, 0>>,
    /// Requests waiting for a free descriptor.
    backlog: VecDeque<Request>,
    /// When the oldest request in flight was sent, or the last completion came.
    progress: Instant,
    /// Set after a failure: the device is left out.
    left_out: bool,
    /// Its interrupt's vector on the owner CPU.
    vector: u8,
    /// Interrupts taken, and completions handed back.
    interrupts: u64,
    completed: u64,
}

/// Counters of one device, from [`Rng::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngStats {
    /// Interrupts the driver took (all on the owner CPU: it runs nowhere else).
    pub interrupts: u64,
    /// Requests completed.
    pub completed: u64,
    /// Whether the device was left out after a failure.
    pub left_out: bool,
}

impl RngDevice {
    /// Opens and initialises the device (on the owner CPU, in the service's
    /// `init`), its interrupt bound to the service: the GSI on virtio-mmio,
    /// one MSI-X vector for the queue on PCI.
    fn open(found: &FoundDevice, starting: &Starting<RngDevice>) -> Result<Self, VirtioError> {
        let mut transport = found.open()?;
        let bound = super::bind_interrupts(starting, found.interrupt, 1)?;
        if let Some(message) = bound[0].msi {
            transport.set_queue_interrupt(REQUEST_QUEUE, message)?;
        }
        transport.negotiate(WANTED_FEATURES)?;
        let queue = transport.setup_queue(REQUEST_QUEUE)?;
        transport.driver_ok();
        Ok(Self {
            transport,
            vector: bound[0].vector,
            queue,
            backlog: VecDeque::new(),
            progress: Instant::now(),
            left_out: false,
            interrupts: 0,
            completed: 0,
        })
    }

    /// Queues a request for `bytes` bytes (on the owner CPU).
    #[inline(never)]
    fn submit(&mut self, bytes: usize, reply: SyncSender<Reply>) {
        if self.left_out {
            let _ = reply.send(Err(VirtioError::LeftOut));
            return;
        }
        let request = Request { buffer: vec![0; bytes.clamp(1, MAX_REQUEST_BYTES)].into_boxed_slice(), reply };
        if self.queue.in_flight() == 0 {
            self.progress = Instant::now();
        }
        self.backlog.push_back(request);
        self.send_backlog();
    }

    /// Adds what fits of the backlog, then one notification decision.
    fn send_backlog(&mut self) {
        let mut added = false;
        while self.queue.fits(1) {
            let Some(request) = self.backlog.pop_front() else { break };
            let buffer = Buffer {
                address: super::physical_address(request.buffer.as_ptr()),
                length: request.buffer.len() as u32,
            };
            match self.queue.add(&[], &[buffer], request) {
                Ok(_) => added = true,
                // `fits` said yes: cannot happen; never lose a caller.
                Err(error) => {
                    log::error!("virtio-rng: {error}");
                    break;
                }
            }
        }
        if added {
            self.queue.kick(&mut self.transport);
        }
    }

    /// The interrupt hook: acknowledge, hand back what completed, refill.
    #[inline(never)]
    fn on_interrupt(&mut self) {
        self.interrupts += 1;
        self.transport.take_interrupt();
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            loop {
                match self.queue.pop_used() {
                    Ok(Some(done)) => {
                        self.completed += 1;
                        self.progress = Instant::now();
                        let written = (done.written as usize).min(done.token.buffer.len());
                        let _ = done.token.reply.send(Ok((done.token.buffer, written)));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        self.leave_out(VirtioError::DeviceBroken(error));
                        return;
                    }
                }
            }
            self.send_backlog();
            // Re-check after asking for the next interrupt (see
            // `toro_core::virtio::queue` on the race this closes).
            if self.queue.enable_interrupts() {
                return;
            }
        }
    }

    /// The watchdog: a request stuck past [`REQUEST_TIMEOUT`] leaves the device out.
    fn watchdog(&mut self, now: Instant) -> Option<Instant> {
        if !self.left_out && self.queue.in_flight() > 0 && now.duration_since(self.progress) > REQUEST_TIMEOUT {
            log::error!(
                "virtio-rng at {:#x}: no completion in {} ms; device reset and left out",
                self.transport.address(),
                REQUEST_TIMEOUT.as_millis()
            );
            self.leave_out(VirtioError::Timeout);
        }
        Some(now + WATCHDOG_PERIOD)
    }

    /// Resets the device, fails every waiting caller with `error`, and refuses new requests.
    fn leave_out(&mut self, error: VirtioError) {
        if !matches!(error, VirtioError::Timeout) {
            log::error!("virtio-rng at {:#x}: {error}; device reset and left out", self.transport.address());
        }
        // After the reset the device no longer touches the buffers, so the
        // requests (and their buffers) can go.
        if self.transport.reset().is_err() {
            log::error!("virtio-rng at {:#x}: reset did not complete", self.transport.address());
        }
        self.transport.fail();
        self.queue.reset(|request| {
            let _ = request.reply.send(Err(error));
        });
        for request in self.backlog.drain(..) {
            let _ = request.reply.send(Err(error));
        }
        self.left_out = true;
    }
}

/// A virtio-rng device, reachable from every CPU.
#[derive(Clone, Copy)]
pub struct Rng {
    handle: Handle<RngDevice>,
    /// The vector its interrupt arrives on, on the owner CPU.
    vector: u8,
}

impl Rng {
    /// Starts a driver for `found` (a virtio-rng device) on its owner CPU,
    /// its interrupt routed there.
    pub fn start(found: FoundDevice) -> Result<Self, VirtioError> {
        if found.device_type != device_type::ENTROPY {
            return Err(VirtioError::Unsupported);
        }
        let handle = Builder::new("virtio-rng")
            .cpu(found.owner)
            .poll(|device: &mut RngDevice, now| device.watchdog(now))
            .on_interrupt(|device: &mut RngDevice, _source| device.on_interrupt())
            .try_start_with(move |starting| RngDevice::open(&found, starting))
            .map_err(|error| match error {
                crate::service::StartError::Init(error) => error,
                crate::service::StartError::Service(error) => VirtioError::Service(error),
            })?;
        let vector = handle.try_call(|device| device.vector).map_err(VirtioError::Service)?;
        Ok(Self { handle, vector })
    }

    /// Fills `buffer` with bytes from the device (from any CPU; the thread
    /// blocks, not the CPU). Long buffers take several requests.
    #[inline(never)]
    pub fn fill(&self, buffer: &mut [u8]) -> Result<(), VirtioError> {
        let mut filled = 0;
        while filled < buffer.len() {
            let wanted = (buffer.len() - filled).min(MAX_REQUEST_BYTES);
            let (reply, answer) = sync_channel::<Reply>(1);
            self.handle.try_call(move |device| device.submit(wanted, reply)).map_err(VirtioError::Service)?;
            let (bytes, written) = answer.recv().map_err(|_| VirtioError::LeftOut)??;
            let written = written.min(wanted);
            buffer[filled..filled + written].copy_from_slice(&bytes[..written]);
            filled += written;
        }
        Ok(())
    }

    /// The owner CPU.
    pub fn cpu(&self) -> usize {
        self.handle.cpu()
    }

    /// The interrupt vector on the owner CPU.
    pub fn vector(&self) -> u8 {
        self.vector
    }

    /// The service handle (its `stats` say how many calls came from other CPUs).
    pub fn handle(&self) -> Handle<RngDevice> {
        self.handle
    }

    /// The device's counters.
    pub fn stats(&self) -> Result<RngStats, VirtioError> {
        self.handle
            .try_call(|device| RngStats {
                interrupts: device.interrupts,
                completed: device.completed,
                left_out: device.left_out,
            })
            .map_err(VirtioError::Service)
    }
}

/// The first virtio-rng device, started at boot.
static DEFAULT: crate::once::BootCell<Rng> = crate::once::BootCell::new();

/// Starts the first virtio-rng device found (boot CPU, before the
/// application) and offers it to `toro::random` as its fallback source.
pub(crate) fn start_default() {
    let Some(found) = discovery::devices().iter().find(|device| device.device_type == device_type::ENTROPY) else {
        return;
    };
    match Rng::start(*found) {
        Ok(rng) => {
            DEFAULT.set(rng);
            crate::random::set_fallback(fill_from_device);
        }
        Err(error) => log::warn!("virtio-rng at {:#x} left out: {error}", found.address),
    }
}

/// The first virtio-rng device, if one was found and started.
pub fn device() -> Option<Rng> {
    DEFAULT.get().copied()
}

/// Fills `buffer` from the first virtio-rng device (`toro::random`'s fallback shape).
pub fn fill_from_device(buffer: &mut [u8]) -> Result<(), crate::random::RandomError> {
    let rng = device().ok_or(crate::random::RandomError::Unsupported)?;
    rng.fill(buffer).map_err(|_| crate::random::RandomError::Exhausted)
}
