//! virtio-blk (virtio 1.2, section 5.2) as a service on its owner CPU: a disk for `toro::fs`.
//!
//! The protocol (configuration, request checks, headers, several requests
//! in flight through indirect tables) is `toro_fs::virtio_blk::Engine`,
//! host-tested; this is its kernel side. The device, its queue, the
//! headers and status bytes live in a service (`crate::service`) on the
//! device's owner CPU; its interrupt is routed there. A transfer from any
//! CPU is one service call that splits it into requests (at most
//! `max_transfer` bytes each), queues them (more than fit wait in a
//! backlog), and notifies once; the caller's thread then blocks on a
//! one-slot channel until the interrupt hook has seen every piece
//! complete. The data goes straight between the device and the caller's
//! buffer (RAM is identity mapped): no copy.
//!
//! Flushes are `VIRTIO_BLK_T_FLUSH` when the device offers
//! `VIRTIO_BLK_F_FLUSH` (otherwise its writes are durable on completion).
//! A read-only device (`VIRTIO_BLK_F_RO`) refuses writes with
//! `ErrorKind::ReadOnlyFilesystem` before anything is queued. Capacity and
//! `blk_size` are honoured: [`Disk`] (the `toro_fs::BlockDevice`) has the
//! device's logical block size as its sector size.
//!
//! A watchdog (the poll hook) resets the device and leaves it out if a
//! request has not completed within [`REQUEST_TIMEOUT`]; so does a device
//! breaking the queue protocol. Waiting callers then get an error; the
//! system goes on.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use toro_core::virtio::queue::QueueMemory;
use toro_fs::virtio_blk::{self as protocol, Config, Engine};

use crate::io::{self, Error, ErrorKind};
use crate::service::{Builder, Handle, Starting};
use crate::sync::{sync_channel, SyncSender};
use crate::time::Instant;
use toro_fs::BlockDevice as _;

use super::discovery::{self, FoundDevice};
use super::{device_type, feature, full_fence, Buffer};

/// Entries in the request queue.
pub const QUEUE_SIZE: usize = 128;
/// Entries in each request's indirect table (header, data, status).
const INDIRECT: usize = 4;
/// A request the device has not completed by then gets the device reset and left out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the watchdog looks.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(500);
/// `requestq` is queue 0 (section 5.2.2; Toro uses one queue).
const REQUEST_QUEUE: u16 = 0;
/// Features the driver can use.
const WANTED_FEATURES: u64 = protocol::feature::WANTED | feature::EVENT_IDX | feature::INDIRECT_DESC;
/// Most virtio-blk devices driven.
pub const MAX_DISKS: usize = 8;

type Memory = Box<QueueMemory<QUEUE_SIZE, INDIRECT>>;

/// What a transfer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Read,
    Write,
    Flush,
}

/// One request of a transfer, waiting for room in the queue.
struct Piece {
    sector: u64,
    data: Buffer,
    operation: Operation,
    transfer: u32,
}

/// A caller's transfer: how many of its requests are still out, the
/// first error, and where the answer goes.
struct Transfer {
    remaining: u32,
    error: Option<Error>,
    reply: SyncSender<io::Result<()>>,
}

/// Counters of one disk, from [`Blk::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlkStats {
    /// Interrupts the driver took (all on the owner CPU).
    pub interrupts: u64,
    /// Requests sent to the device (reads, writes and flushes).
    pub requests: u64,
    /// Transfers (caller calls) completed.
    pub transfers: u64,
    /// Flush requests sent.
    pub flushes: u64,
    /// Bytes read and written.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The most requests in flight at once.
    pub max_in_flight: u64,
    /// Notifications sent to the device.
    pub notifications: u64,
    /// Whether the device was left out after a failure.
    pub left_out: bool,
}

/// The device, on its owner CPU.
pub struct BlkDevice {
    /// Declared first: dropped (the device reset) before the queue memory.
    transport: super::Transport,
    engine: Box<Engine<Memory, QUEUE_SIZE, INDIRECT>>,
    backlog: VecDeque<Piece>,
    transfers: Vec<Option<Transfer>>,
    free_transfers: Vec<u32>,
    /// When the oldest request in flight was sent, or the last completion came.
    progress: Instant,
    left_out: Option<&'static str>,
    stats: BlkStats,
    name: String,
    /// Its interrupt's vector on the owner CPU.
    vector: u8,
}

const BROKEN: &str = "virtio-blk: the device broke the queue protocol; reset and left out";
const TIMED_OUT: &str = "virtio-blk: the device did not complete a request in time; reset and left out";

impl BlkDevice {
    /// Opens and initialises the device (on the owner CPU, in the service's
    /// `init`), its interrupt bound to the service: the GSI on virtio-mmio,
    /// one MSI-X vector for the queue on virtio-pci.
    fn open(found: &FoundDevice, name: String, starting: &Starting<BlkDevice>) -> io::Result<Self> {
        let virtio = |error: super::VirtioError| Error::new(ErrorKind::Other, format!("{name}: {error}"));
        let mut transport = found.open().map_err(virtio)?;
        let bound = super::bind_interrupts(starting, found.interrupt, 1).map_err(virtio)?;
        if let Some(message) = bound[0].msi {
            transport.set_queue_interrupt(REQUEST_QUEUE, message).map_err(virtio)?;
        }
        let features = transport.negotiate(WANTED_FEATURES).map_err(virtio)?;
        let config = transport.read_config(|registers, base| {
            Config::parse(features, |offset| registers.read::<u32>(base + offset as u64))
        });
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                transport.fail();
                return Err(error);
            }
        };
        let queue = transport.setup_queue::<u16, QUEUE_SIZE, INDIRECT>(REQUEST_QUEUE).map_err(virtio)?;
        let engine = Box::new(Engine::new(queue.into_driver(), config));
        transport.driver_ok();
        Ok(Self {
            transport,
            engine,
            backlog: VecDeque::new(),
            transfers: Vec::new(),
            free_transfers: Vec::new(),
            progress: Instant::now(),
            left_out: None,
            stats: BlkStats::default(),
            name,
            vector: bound[0].vector,
        })
    }

    /// Starts a transfer (on the owner CPU): its requests are queued (or
    /// wait in the backlog); `reply` gets the result when all are done.
    /// `address`/`len`: the caller's buffer, valid until the reply.
    #[inline(never)]
    fn start(
        &mut self,
        operation: Operation,
        sector: u64,
        address: u64,
        len: usize,
        reply: SyncSender<io::Result<()>>,
    ) {
        if let Some(why) = self.left_out {
            let _ = reply.send(Err(Error::from_static(ErrorKind::Other, why)));
            return;
        }
        let config = *self.engine.config();
        let pieces: Vec<(u64, usize, usize)> = match operation {
            Operation::Flush if !config.flush => {
                // No write cache to flush: completed writes are durable.
                let _ = reply.send(Ok(()));
                return;
            }
            Operation::Flush => alloc::vec![(0, 0, 0)],
            _ => {
                if let Err(error) = config.check(sector, len, operation == Operation::Write) {
                    let _ = reply.send(Err(error));
                    return;
                }
                config.split(sector, len).collect()
            }
        };
        if pieces.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        let transfer = Transfer { remaining: pieces.len() as u32, error: None, reply };
        let id = match self.free_transfers.pop() {
            Some(id) => {
                self.transfers[id as usize] = Some(transfer);
                id
            }
            None => {
                self.transfers.push(Some(transfer));
                (self.transfers.len() - 1) as u32
            }
        };
        if self.engine.in_flight() == 0 {
            self.progress = Instant::now();
        }
        for (sector, offset, bytes) in pieces {
            let data = Buffer { address: address + offset as u64, length: bytes as u32 };
            self.backlog.push_back(Piece { sector, data, operation, transfer: id });
        }
        self.send_backlog();
    }

    /// Queues what fits of the backlog, then one notification decision.
    fn send_backlog(&mut self) {
        let mut added = false;
        while let Some(piece) = self.backlog.front() {
            let submitted = match piece.operation {
                Operation::Flush => self.engine.submit_flush(u64::from(piece.transfer)),
                operation => self.engine.submit(
                    piece.sector,
                    piece.data,
                    operation == Operation::Write,
                    u64::from(piece.transfer),
                ),
            };
            match submitted {
                Ok(true) => {
                    let piece = self.backlog.pop_front().expect("front exists");
                    self.stats.requests += 1;
                    match piece.operation {
                        Operation::Read => self.stats.bytes_read += u64::from(piece.data.length),
                        Operation::Write => self.stats.bytes_written += u64::from(piece.data.length),
                        Operation::Flush => self.stats.flushes += 1,
                    }
                    added = true;
                }
                Ok(false) => break,
                Err(error) => {
                    // The checks passed for the whole transfer, so this is
                    // the queue refusing: the device state is unknown.
                    log::error!("{}: {error}", self.name);
                    self.leave_out(BROKEN);
                    return;
                }
            }
        }
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.engine.in_flight() as u64);
        if added && self.engine.should_notify(full_fence) {
            self.stats.notifications += 1;
            self.transport.notify(REQUEST_QUEUE);
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
            let transfers = &mut self.transfers;
            let free = &mut self.free_transfers;
            let stats = &mut self.stats;
            let completed = self.engine.complete(|cookie, result| {
                let Some(Some(transfer)) = transfers.get_mut(cookie as usize) else { return };
                transfer.remaining -= 1;
                if let Err(error) = result {
                    transfer.error.get_or_insert(error);
                }
                if transfer.remaining == 0 {
                    let transfer = transfers[cookie as usize].take().expect("present");
                    free.push(cookie as u32);
                    stats.transfers += 1;
                    let _ = transfer.reply.send(transfer.error.map_or(Ok(()), Err));
                }
            });
            match completed {
                Ok(0) => {}
                Ok(_) => self.progress = Instant::now(),
                Err(error) => {
                    log::error!("{}: {error}", self.name);
                    self.leave_out(BROKEN);
                    return;
                }
            }
            self.send_backlog();
            if self.left_out.is_some() || self.engine.enable_interrupts(full_fence) {
                return;
            }
        }
    }

    /// The watchdog: a request stuck past [`REQUEST_TIMEOUT`] leaves the device out.
    fn watchdog(&mut self, now: Instant) -> Option<Instant> {
        if self.left_out.is_none() && self.engine.in_flight() > 0 && now.duration_since(self.progress) > REQUEST_TIMEOUT
        {
            log::error!("{}: no completion in {} s; device reset and left out", self.name, REQUEST_TIMEOUT.as_secs());
            self.leave_out(TIMED_OUT);
        }
        Some(now + WATCHDOG_PERIOD)
    }

    /// Resets the device, fails every waiting transfer, refuses new ones.
    fn leave_out(&mut self, why: &'static str) {
        // After the reset the device no longer touches any buffer, so the
        // callers may have theirs back.
        if self.transport.reset().is_err() {
            log::error!("{}: reset did not complete", self.name);
        }
        self.transport.fail();
        self.backlog.clear();
        for transfer in self.transfers.iter_mut().filter_map(Option::take) {
            let _ = transfer.reply.send(Err(Error::from_static(ErrorKind::Other, why)));
        }
        self.left_out = Some(why);
        self.stats.left_out = true;
    }
}

/// A virtio-blk device, reachable from every CPU.
#[derive(Clone, Copy)]
pub struct Blk {
    handle: Handle<BlkDevice>,
    config: Config,
    /// Its number among the virtio-blk devices (discovery order).
    index: usize,
    /// The vector its interrupt arrives on, on the owner CPU.
    vector: u8,
}

impl Blk {
    /// Starts a driver for `found` (a virtio-blk device, the `index`-th)
    /// on its owner CPU, its interrupt routed there.
    pub fn start(found: FoundDevice, index: usize) -> io::Result<Self> {
        if found.device_type != device_type::BLOCK {
            return Err(Error::from_static(ErrorKind::InvalidInput, "virtio-blk: not a block device"));
        }
        let name = format!("virtio-blk#{index}");
        let service_name = name.clone();
        let handle = Builder::new(name.clone())
            .cpu(found.owner)
            .poll(|device: &mut BlkDevice, now| device.watchdog(now))
            .on_interrupt(|device: &mut BlkDevice, _source| device.on_interrupt())
            .try_start_with(move |starting| BlkDevice::open(&found, service_name, starting))
            .map_err(|error| match error {
                crate::service::StartError::Init(error) => error,
                crate::service::StartError::Service(error) => {
                    Error::new(ErrorKind::Other, format!("{name}: no service on CPU {}: {error:?}", found.owner))
                }
            })?;
        let (config, vector) = handle.call(|device| (*device.engine.config(), device.vector));
        Ok(Self { handle, config, index, vector })
    }

    /// The device's configuration (capacity, block size, read-only, flush).
    pub fn config(&self) -> Config {
        self.config
    }

    /// Its number among the virtio-blk devices (`blk#N` in `toro.mount`).
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
    pub fn handle(&self) -> Handle<BlkDevice> {
        self.handle
    }

    /// The device's counters.
    pub fn stats(&self) -> io::Result<BlkStats> {
        self.handle.try_call(|device| device.stats).map_err(service_error)
    }

    /// The disk as a `toro_fs::BlockDevice` (sectors of the device's block size).
    pub fn disk(&self) -> Disk {
        Disk { blk: *self }
    }

    /// Runs one transfer from any CPU; the thread blocks until it is done.
    #[inline(never)]
    fn transfer(&self, operation: Operation, sector: u64, address: u64, len: usize) -> io::Result<()> {
        let (reply, answer) = sync_channel::<io::Result<()>>(1);
        self.handle
            .try_call(move |device| device.start(operation, sector, address, len, reply))
            .map_err(service_error)?;
        answer.recv().map_err(|_| Error::from_static(ErrorKind::Other, "virtio-blk: the driver went away"))?
    }

    /// Reads whole blocks at `sector` (512-byte units, block aligned) into `buf`.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> io::Result<()> {
        // `buf` stays borrowed until `transfer` returns, which is after the
        // device finished with it (or was reset).
        self.transfer(Operation::Read, sector, super::physical_address(buf.as_ptr()), buf.len())
    }

    /// Writes whole blocks at `sector` (512-byte units, block aligned) from `buf`.
    pub fn write(&self, sector: u64, buf: &[u8]) -> io::Result<()> {
        if self.config.read_only {
            return Err(Error::from_static(ErrorKind::ReadOnlyFilesystem, "virtio-blk: the device is read-only"));
        }
        self.transfer(Operation::Write, sector, super::physical_address(buf.as_ptr()), buf.len())
    }

    /// Flushes the device's write cache (`VIRTIO_BLK_T_FLUSH`).
    pub fn flush(&self) -> io::Result<()> {
        self.transfer(Operation::Flush, 0, 0, 0)
    }
}

fn service_error(error: crate::service::ServiceError) -> Error {
    Error::new(ErrorKind::Other, format!("virtio-blk: driver service: {error:?}"))
}

/// A virtio-blk device as a `toro_fs::BlockDevice`: sectors are the
/// device's logical blocks (`blk_size`, 512 bytes unless it says more).
#[derive(Clone, Copy)]
pub struct Disk {
    blk: Blk,
}

impl Disk {
    fn device_sector(&self, sector: u64) -> io::Result<u64> {
        let per_block = (self.blk.config.block_size / protocol::SECTOR_SIZE) as u64;
        sector.checked_mul(per_block).ok_or(toro_fs::block::OUT_OF_RANGE)
    }

    fn check(&self, sector: u64, len: usize) -> io::Result<()> {
        toro_fs::block::check_range(sector, len, self.sector_size(), self.sector_count())
    }
}

impl toro_fs::BlockDevice for Disk {
    fn sector_size(&self) -> usize {
        self.blk.config.block_size
    }

    fn sector_count(&self) -> u64 {
        self.blk.config.capacity / (self.blk.config.block_size / protocol::SECTOR_SIZE) as u64
    }

    fn read_only(&self) -> bool {
        self.blk.config.read_only
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(sector, buf.len())?;
        self.blk.read(self.device_sector(sector)?, buf)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> io::Result<()> {
        if self.read_only() {
            return Err(toro_fs::block::READ_ONLY);
        }
        self.check(sector, buf.len())?;
        self.blk.write(self.device_sector(sector)?, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blk.flush()
    }
}

/// The virtio-blk devices started at boot, in discovery order.
static DISKS: crate::once::BootCell<Vec<Blk>> = crate::once::BootCell::new();

/// Starts a driver for every virtio-blk device found (boot CPU, before
/// the application), each on its device's owner CPU.
pub(crate) fn start_all() {
    let mut disks = Vec::new();
    let found = discovery::devices().iter().filter(|device| device.device_type == device_type::BLOCK);
    for (index, device) in found.enumerate() {
        if index == MAX_DISKS {
            log::warn!("virtio-blk: devices beyond the first {MAX_DISKS} left out");
            break;
        }
        match Blk::start(*device, index) {
            Ok(blk) => {
                let config = blk.config();
                log::info!(
                    "virtio-blk#{index}: {} MiB, {}-byte blocks{}{}, owner cpu {}",
                    (config.capacity * protocol::SECTOR_SIZE as u64) >> 20,
                    config.block_size,
                    if config.read_only { ", read-only" } else { "" },
                    if config.flush { ", flush" } else { "" },
                    blk.cpu()
                );
                disks.push(blk);
            }
            Err(error) => log::warn!("virtio-blk at {:#x} left out: {error}", device.address),
        }
    }
    DISKS.set(disks);
}

/// The virtio-blk devices started at boot (those that failed are left out).
pub fn devices() -> &'static [Blk] {
    DISKS.get().map(Vec::as_slice).unwrap_or(&[])
}
