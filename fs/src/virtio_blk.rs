//! The virtio-blk protocol (virtio 1.2, section 5.2), host-testable: feature
//! bits, the device configuration, request headers and status bytes, and
//! the checks and splitting a driver applies before a request leaves.
//! The kernel's driver (on a virtqueue and transport) builds on this.

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

/// Largest transfer in one request when the device names no limit.
pub const DEFAULT_MAX_TRANSFER: usize = 128 * 1024;

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
