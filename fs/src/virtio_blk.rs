//! The virtio-blk protocol (virtio 1.2, section 5.2), host-testable: feature
//! bits, the device configuration, request headers and status bytes, and
//! the checks and splitting a driver applies before a request leaves.
//! The kernel's driver (on a virtqueue and transport) builds on this.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Deref;

use toro_core::virtio::queue::{Buffer, Driver, QueueMemory};
use toro_io::{Error, ErrorKind, Result};

/// Feature bits (5.2.3).
pub mod feature {
    /// `size_max` is valid: the largest segment.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// `seg_max` is valid: the most segments in a request.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid: the logical block size.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The device takes `VIRTIO_BLK_T_FLUSH`.
    pub const FLUSH: u64 = 1 << 9;
    /// Virtio 1.0 or later (6, reserved feature bits).
    pub const VERSION_1: u64 = 1 << 32;
    /// What the driver accepts when offered.
    pub const WANTED: u64 = SIZE_MAX | SEG_MAX | RO | BLK_SIZE | FLUSH | VERSION_1;
}

/// Request types (5.2.6).
pub mod request {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the device's write cache.
    pub const FLUSH: u32 = 4;
}

/// Status byte values (5.2.6).
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Request unsupported by the device.
    pub const UNSUPP: u8 = 2;
}

/// The sector unit of requests and `capacity`, whatever `blk_size` is (5.2.6).
pub const SECTOR_SIZE: usize = 512;
/// Size of the request header (`type`, `reserved`, `sector`).
pub const HEADER_SIZE: usize = 16;
/// Byte offsets in the configuration space (5.2.4).
pub mod config_offset {
    /// `capacity`, le64, in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// `size_max`, le32.
    pub const SIZE_MAX: usize = 8;
    /// `seg_max`, le32.
    pub const SEG_MAX: usize = 12;
    /// `blk_size`, le32.
    pub const BLK_SIZE: usize = 20;
}

/// Largest transfer in one request when the device names no `size_max`:
/// 1 MiB, so that a 1 MiB read or write (what `dd bs=1M` and the ext2
/// path send) is one request. The data is one segment (the caller's
/// buffer, physically contiguous), so `seg_max` (at least 1) never
/// limits it; a device's `size_max` does.
pub const DEFAULT_MAX_TRANSFER: usize = 1 << 20;

/// What the device said about itself, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Size in 512-byte sectors.
    pub capacity: u64,
    /// Logical block size (a power of two, 512 or more): transfers are
    /// whole, aligned blocks.
    pub block_size: usize,
    /// Largest transfer in one request (bytes, whole blocks).
    pub max_transfer: usize,
    /// Writes are refused.
    pub read_only: bool,
    /// The device has a write cache that `FLUSH` empties.
    pub flush: bool,
}

impl Config {
    /// The configuration from the negotiated `features` and the config
    /// space read through `read32(offset)`.
    pub fn parse(features: u64, read32: impl Fn(usize) -> u32) -> Result<Config> {
        let capacity =
            u64::from(read32(config_offset::CAPACITY)) | (u64::from(read32(config_offset::CAPACITY + 4)) << 32);
        let block_size = if features & feature::BLK_SIZE != 0 { read32(config_offset::BLK_SIZE) as usize } else { 512 };
        if !block_size.is_power_of_two() || !(SECTOR_SIZE..=64 * 1024).contains(&block_size) {
            return Err(Error::from_static(
                ErrorKind::InvalidData,
                "virtio-blk: block size not a power of two in 512..=64K",
            ));
        }
        let size_max = if features & feature::SIZE_MAX != 0 { read32(config_offset::SIZE_MAX) as usize } else { 0 };
        let seg_max = if features & feature::SEG_MAX != 0 { read32(config_offset::SEG_MAX) as usize } else { 0 };
        // One data segment per request (the header and status are the
        // other two descriptors), so size_max bounds a request.
        let mut max_transfer = DEFAULT_MAX_TRANSFER;
        if size_max != 0 {
            max_transfer = max_transfer.min(size_max);
        }
        if features & feature::SEG_MAX != 0 && seg_max == 0 {
            return Err(Error::from_static(ErrorKind::InvalidData, "virtio-blk: seg_max is 0"));
        }
        max_transfer = max_transfer / block_size * block_size;
        if max_transfer == 0 {
            return Err(Error::from_static(ErrorKind::InvalidData, "virtio-blk: size_max below one block"));
        }
        Ok(Config {
            capacity,
            block_size,
            max_transfer,
            read_only: features & feature::RO != 0,
            flush: features & feature::FLUSH != 0,
        })
    }

    /// Checks a transfer of `len` bytes at `sector` (512-byte units).
    pub fn check(&self, sector: u64, len: usize, write: bool) -> Result<()> {
        if write && self.read_only {
            return Err(Error::from_static(ErrorKind::ReadOnlyFilesystem, "virtio-blk: the device is read-only"));
        }
        let block_sectors = (self.block_size / SECTOR_SIZE) as u64;
        if !len.is_multiple_of(self.block_size) || !sector.is_multiple_of(block_sectors) {
            return Err(Error::from_static(
                ErrorKind::InvalidInput,
                "virtio-blk: transfer not in whole, aligned blocks",
            ));
        }
        match sector.checked_add((len / SECTOR_SIZE) as u64) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(Error::from_static(ErrorKind::InvalidInput, "virtio-blk: transfer past the end of the device")),
        }
    }

    /// The requests a transfer becomes: `(sector, byte offset, bytes)`.
    pub fn split(&self, sector: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let step = self.max_transfer;
        (0..len.div_ceil(step)).map(move |i| {
            let offset = i * step;
            (sector + (offset / SECTOR_SIZE) as u64, offset, step.min(len - offset))
        })
    }
}

/// A request header (`struct virtio_blk_req`'s first 16 bytes).
pub fn header(kind: u32, sector: u64) -> [u8; HEADER_SIZE] {
    let mut bytes = [0u8; HEADER_SIZE];
    bytes[0..4].copy_from_slice(&kind.to_le_bytes());
    bytes[8..16].copy_from_slice(&sector.to_le_bytes());
    bytes
}

/// The result a status byte stands for.
pub fn result(status_byte: u8) -> Result<()> {
    match status_byte {
        status::OK => Ok(()),
        status::UNSUPP => Err(Error::from_static(ErrorKind::Unsupported, "virtio-blk: request unsupported")),
        status::IOERR => Err(Error::from_static(ErrorKind::Other, "virtio-blk: device I/O error")),
        _ => Err(Error::from_static(ErrorKind::InvalidData, "virtio-blk: unknown status byte")),
    }
}

/// Why the device's queue broke (it then needs a reset).
const BROKEN_QUEUE: Error =
    Error::from_static(ErrorKind::InvalidData, "virtio-blk: the device broke the virtqueue protocol");

/// One request's header and status byte: device-visible memory that must
/// stay put while the request is in flight (the engine keeps them boxed).
#[repr(C)]
struct Slot {
    header: [u8; HEADER_SIZE],
    status: u8,
}

/// The requests of one virtio-blk queue: several in flight, each with a
/// caller's cookie handed back with its result on completion.
///
/// Owned by the disk's owner CPU. The engine neither waits nor notifies:
/// the driver submits, asks [`Engine::should_notify`] once per batch, and
/// calls [`Engine::complete`] from its interrupt hook.
pub struct Engine<M, const N: usize, const I: usize>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    queue: Driver<M, u16, N, I>,
    slots: Box<[Slot]>,
    cookies: Vec<u64>,
    free: Vec<u16>,
    config: Config,
}

impl<M, const N: usize, const I: usize> Engine<M, N, I>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    /// An engine over a fresh queue for a device with `config`.
    pub fn new(queue: Driver<M, u16, N, I>, config: Config) -> Self {
        Engine {
            queue,
            slots: (0..N).map(|_| Slot { header: [0; HEADER_SIZE], status: 0xff }).collect(),
            cookies: vec![0; N],
            free: (0..N as u16).rev().collect(),
            config,
        }
    }

    /// The device's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        N - self.free.len()
    }

    /// Queues a read (`write == false`: the device fills `data`) or a write
    /// of one transfer that [`Config::check`] accepts and no longer than
    /// `max_transfer` ([`Config::split`] makes such pieces); `data` is its
    /// physical address and length. `Ok(false)`: the queue is full now,
    /// try again after completions.
    pub fn submit(&mut self, sector: u64, data: Buffer, write: bool, cookie: u64) -> Result<bool> {
        self.config.check(sector, data.length as usize, write)?;
        if data.length as usize > self.config.max_transfer {
            return Err(Error::from_static(ErrorKind::InvalidInput, "virtio-blk: transfer above max_transfer"));
        }
        self.add(if write { request::OUT } else { request::IN }, sector, Some((data, write)), cookie)
    }

    /// Queues a cache flush (completes at once, successfully, when the
    /// device has no write cache).
    pub fn submit_flush(&mut self, cookie: u64) -> Result<bool> {
        self.add(request::FLUSH, 0, None, cookie)
    }

    fn add(&mut self, kind: u32, sector: u64, data: Option<(Buffer, bool)>, cookie: u64) -> Result<bool> {
        let buffers = if data.is_some() { 3 } else { 2 };
        if !self.queue.fits(buffers) {
            return Ok(false);
        }
        let Some(slot) = self.free.pop() else { return Ok(false) };
        let entry = &mut self.slots[usize::from(slot)];
        entry.header = header(kind, sector);
        entry.status = 0xff;
        let header_buffer = Buffer { address: entry.header.as_ptr() as u64, length: HEADER_SIZE as u32 };
        let status_buffer = Buffer { address: &raw const entry.status as u64, length: 1 };
        self.cookies[usize::from(slot)] = cookie;
        let added = match data {
            Some((data, true)) => self.queue.add(&[header_buffer, data], &[status_buffer], slot),
            Some((data, false)) => self.queue.add(&[header_buffer], &[data, status_buffer], slot),
            None => self.queue.add(&[header_buffer], &[status_buffer], slot),
        };
        if added.is_err() {
            self.free.push(slot);
            return Err(BROKEN_QUEUE);
        }
        Ok(true)
    }

    /// Whether the device must be notified of what was submitted since
    /// the last call; `full_fence` as in `Driver::should_notify`.
    pub fn should_notify(&mut self, full_fence: impl FnOnce()) -> bool {
        self.queue.should_notify(full_fence)
    }

    /// Takes every completion, handing `done(cookie, result)` for each;
    /// an error means the device broke the protocol (reset it).
    pub fn complete(&mut self, mut done: impl FnMut(u64, Result<()>)) -> Result<usize> {
        let mut count = 0;
        while let Some(completion) = self.queue.pop_used().map_err(|_| BROKEN_QUEUE)? {
            let slot = completion.token;
            // The status byte is the device's last write (section 5.2.6).
            let status_byte = self.slots[usize::from(slot)].status;
            self.free.push(slot);
            done(self.cookies[usize::from(slot)], result(status_byte));
            count += 1;
        }
        Ok(count)
    }

    /// Asks the device for an interrupt at the next completion; `false` if
    /// completions arrived meanwhile (take them first), as
    /// `Driver::enable_interrupts`.
    pub fn enable_interrupts(&mut self, full_fence: impl FnOnce()) -> bool {
        self.queue.enable_interrupts(full_fence)
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod engine_tests {
    use super::*;
    use alloc::sync::Arc;
    use toro_core::virtio::queue::{Device, Segment};

    const N: usize = 8;
    /// Each request goes through one indirect table: N requests in flight.
    const I: usize = 4;
    type Memory = Arc<QueueMemory<N, I>>;

    /// A disk behind the fake device side of the queue.
    struct FakeDisk {
        device: Device<Memory, N, I>,
        data: Vec<u8>,
        fail_sector: Option<u64>,
    }

    impl FakeDisk {
        /// Serves every available request; returns how many.
        fn serve(&mut self) -> usize {
            let mut served = 0;
            while let Some(head) = self.device.next_available() {
                let mut segments = [Segment { buffer: Buffer { address: 0, length: 0 }, writable: false }; 4];
                let count = self.device.read_chain(head, &mut segments).unwrap();
                let segments = &segments[..count];
                // SAFETY: the engine's buffers are live host memory while
                // the request is in flight (the test owns them), and the
                // addresses are their pointers (identity "physical" map).
                let header = unsafe { core::slice::from_raw_parts(segments[0].buffer.address as *const u8, 16) };
                let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
                let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
                let status = segments[count - 1].buffer.address as *mut u8;
                let mut code = status::OK;
                if count == 3 {
                    let data = segments[1].buffer;
                    let start = sector as usize * 512;
                    let range = start..start + data.length as usize;
                    if Some(sector) == self.fail_sector {
                        code = status::IOERR;
                    } else if kind == request::OUT {
                        // SAFETY: as above.
                        let source =
                            unsafe { core::slice::from_raw_parts(data.address as *const u8, data.length as usize) };
                        self.data[range].copy_from_slice(source);
                    } else {
                        // SAFETY: as above; the test does not touch the buffer meanwhile.
                        let target =
                            unsafe { core::slice::from_raw_parts_mut(data.address as *mut u8, data.length as usize) };
                        target.copy_from_slice(&self.data[range]);
                    }
                }
                // SAFETY: the status byte is live, as above.
                unsafe { status.write(code) };
                self.device.complete(head, if kind == request::IN { segments[1].buffer.length + 1 } else { 1 });
                served += 1;
            }
            served
        }
    }

    fn setup(features: u64, capacity: u64) -> (Engine<Memory, N, I>, FakeDisk) {
        let memory = Arc::new(QueueMemory::<N, I>::new());
        let base = Arc::as_ptr(&memory) as u64;
        let queue = Driver::new(Arc::clone(&memory), base, false, true);
        let read32 = |offset: usize| match offset {
            0 => capacity as u32,
            4 => (capacity >> 32) as u32,
            8 => 4096,
            _ => 0,
        };
        let config = Config::parse(features | feature::SIZE_MAX, read32).unwrap();
        let disk = FakeDisk {
            device: Device::new(memory, base, false),
            data: vec![0; capacity as usize * 512],
            fail_sector: None,
        };
        (Engine::new(queue, config), disk)
    }

    fn fence() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn several_requests_in_flight_complete_with_their_cookies() {
        let (mut engine, mut disk) = setup(feature::VERSION_1 | feature::FLUSH, 1024);
        let source: Vec<u8> = (0..32 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        // 32 KiB in 4 KiB pieces: 8 writes in flight at once (the queue's size).
        let mut submitted = 0;
        for (sector, offset, len) in engine.config().split(16, source.len()) {
            let data = Buffer { address: source[offset..].as_ptr() as u64, length: len as u32 };
            assert!(engine.submit(sector, data, true, offset as u64).unwrap());
            submitted += 1;
        }
        assert_eq!((submitted, engine.in_flight()), (8, 8));
        let full = Buffer { address: source.as_ptr() as u64, length: 4096 };
        assert!(!engine.submit(0, full, true, 99).unwrap(), "a full queue says so");
        assert!(engine.should_notify(fence));
        assert_eq!(disk.serve(), 8);
        let mut cookies = Vec::new();
        assert_eq!(engine.complete(|cookie, result| cookies.push((cookie, result.is_ok()))).unwrap(), 8);
        cookies.sort();
        assert_eq!(cookies, (0..8).map(|i| (i * 4096, true)).collect::<Vec<_>>());
        assert_eq!(&disk.data[16 * 512..16 * 512 + source.len()], &source[..]);

        // Read it back through the device, then a flush.
        let mut back = vec![0u8; 8192];
        for (sector, offset, len) in engine.config().split(16 + 8, back.len()) {
            let data = Buffer { address: back[offset..].as_mut_ptr() as u64, length: len as u32 };
            assert!(engine.submit(sector, data, false, 1).unwrap());
        }
        assert!(engine.submit_flush(2).unwrap());
        disk.serve();
        let mut results = Vec::new();
        engine.complete(|cookie, result| results.push((cookie, result.is_ok()))).unwrap();
        assert_eq!(results, vec![(1, true), (1, true), (2, true)]);
        assert_eq!(&back[..], &source[4096..4096 + 8192]);
        assert_eq!(engine.in_flight(), 0);
    }

    #[test]
    fn refusals_and_device_errors() {
        let (mut engine, mut disk) = setup(feature::VERSION_1 | feature::RO, 64);
        let buffer = vec![0u8; 4096];
        let data = Buffer { address: buffer.as_ptr() as u64, length: 4096 };
        assert_eq!(engine.submit(0, data, true, 0).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
        assert_eq!(engine.submit(60, data, false, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
        let long = Buffer { address: buffer.as_ptr() as u64, length: 8192 };
        assert_eq!(engine.submit(0, long, false, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
        disk.fail_sector = Some(8);
        assert!(engine.submit(8, data, false, 5).unwrap());
        disk.serve();
        let mut results = Vec::new();
        engine.complete(|cookie, result| results.push((cookie, result.map_err(|e| e.kind())))).unwrap();
        assert_eq!(results, vec![(5, Err(ErrorKind::Other))]);
        // A device naming a chain that is not in flight breaks the queue.
        disk.device.complete_raw(3, 0);
        assert_eq!(engine.complete(|_, _| ()).unwrap_err().kind(), ErrorKind::InvalidData);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(capacity: u64, size_max: u32, seg_max: u32, blk_size: u32) -> impl Fn(usize) -> u32 {
        move |offset| match offset {
            0 => capacity as u32,
            4 => (capacity >> 32) as u32,
            8 => size_max,
            12 => seg_max,
            20 => blk_size,
            _ => 0,
        }
    }

    #[test]
    fn config_honours_size_block_size_and_read_only() {
        let all = feature::WANTED;
        let config = Config::parse(all, space(1 << 33, 65536, 126, 4096)).unwrap();
        assert_eq!(config.capacity, 1 << 33);
        assert_eq!(config.block_size, 4096);
        assert_eq!(config.max_transfer, 65536);
        assert!(config.read_only && config.flush);
        assert_eq!(config.check(0, 4096, true).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
        assert!(config.check(8, 4096, false).is_ok());
        assert_eq!(config.check(1, 4096, false).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(config.check(0, 512, false).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(config.check((1 << 33) - 8, 8192, false).unwrap_err().kind(), ErrorKind::InvalidInput);

        let plain = Config::parse(feature::VERSION_1, space(100, 0, 0, 12345)).unwrap();
        assert_eq!(
            (plain.block_size, plain.max_transfer, plain.read_only, plain.flush),
            (512, DEFAULT_MAX_TRANSFER, false, false)
        );
        assert!(Config::parse(feature::BLK_SIZE, space(100, 0, 0, 1000)).is_err());
        assert!(Config::parse(feature::BLK_SIZE | feature::SIZE_MAX, space(100, 100, 1, 4096)).is_err());
    }

    #[test]
    fn a_mebibyte_is_one_request_unless_size_max_says_less() {
        // No size_max (QEMU's virtio-blk offers none): 1 MiB in one request,
        // 4 MiB in four.
        let plain = Config::parse(feature::SEG_MAX | feature::VERSION_1, space(1 << 20, 0, 126, 0)).unwrap();
        assert_eq!(plain.max_transfer, 1 << 20);
        assert_eq!(plain.split(8, 1 << 20).collect::<Vec<_>>(), vec![(8, 0, 1 << 20)]);
        let four: Vec<_> = plain.split(0, 4 << 20).collect();
        assert_eq!(four.len(), 4);
        assert_eq!(four[3], (3 * 2048, 3 << 20, 1 << 20));
        // seg_max 1 is enough (one data segment per request).
        let one_segment = Config::parse(feature::SEG_MAX | feature::VERSION_1, space(1 << 20, 0, 1, 0)).unwrap();
        assert_eq!(one_segment.max_transfer, 1 << 20);
        // A size_max above 1 MiB does not raise it; one below caps it,
        // rounded down to whole blocks.
        let large = Config::parse(feature::SIZE_MAX | feature::VERSION_1, space(1 << 20, 4 << 20, 0, 0)).unwrap();
        assert_eq!(large.max_transfer, 1 << 20);
        let capped =
            Config::parse(feature::SIZE_MAX | feature::BLK_SIZE | feature::VERSION_1, space(1 << 20, 200_000, 0, 4096))
                .unwrap();
        assert_eq!(capped.max_transfer, 196_608);
        let parts: Vec<_> = capped.split(0, 1 << 20).collect();
        assert_eq!(parts.len(), 6);
        assert!(parts.iter().all(|&(_, _, len)| len <= 196_608 && len % 4096 == 0));
        assert_eq!(parts.iter().map(|&(_, _, len)| len).sum::<usize>(), 1 << 20);
    }

    #[test]
    fn split_covers_the_transfer_in_order() {
        let config = Config::parse(feature::SIZE_MAX | feature::VERSION_1, space(1 << 20, 4096, 0, 0)).unwrap();
        let parts: Vec<_> = config.split(10, 10_240).collect();
        assert_eq!(parts, vec![(10, 0, 4096), (18, 4096, 4096), (26, 8192, 2048)]);
    }

    #[test]
    fn headers_and_status() {
        assert_eq!(header(request::OUT, 0x0102_0304_0506_0708), [1, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert!(result(status::OK).is_ok());
        assert_eq!(result(status::UNSUPP).unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(result(status::IOERR).unwrap_err().kind(), ErrorKind::Other);
        assert_eq!(result(9).unwrap_err().kind(), ErrorKind::InvalidData);
    }
}
