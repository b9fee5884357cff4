//! The storage workloads both sides of the benchmark run: Toro's
//! `diskbench` and the Linux yardstick (`bench/linux`, `toro-bench-disk`,
//! which includes this file by path), so that sizes, request lengths and
//! the random offsets are one text.
//!
//! The disks (made by `cargo xtask bench`, the same files for both guests):
//! disk 0 an ext2 image holding [`BIG_FILE`] ([`BIG_FILE_BYTES`] of
//! [`pattern`] bytes), disk 1 a raw disk of [`RAW_DISK_BYTES`]. Needs only
//! `core`.

/// One sequential request: 1 MiB (what `dd bs=1M` asks).
pub const REQUEST: usize = 1 << 20;
/// One random read: 4 KiB, at a 4 KiB-aligned offset.
pub const RANDOM_READ: usize = 4096;
/// The raw disk's size.
pub const RAW_DISK_BYTES: u64 = 64 << 20;
/// The file the host puts on the ext2 image, read through the filesystem.
pub const BIG_FILE: &str = "big.bin";
pub const BIG_FILE_BYTES: u64 = 32 << 20;
/// The file written through the filesystem.
pub const NEW_FILE: &str = "new.bin";
/// The byte at `offset` of [`BIG_FILE`] (and of everything written).
pub fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 12)) as u8
}

/// How much each workload moves.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Bytes of each sequential workload (a multiple of [`REQUEST`]).
    pub sequential_bytes: u64,
    /// Random 4 KiB reads.
    pub random_reads: u64,
}

impl Plan {
    /// The test suite's mode: checks that every workload works.
    pub const QUICK: Plan = Plan { sequential_bytes: 2 << 20, random_reads: 64 };
    pub const FULL: Plan = Plan { sequential_bytes: 32 << 20, random_reads: 2000 };
}

/// The `count` offsets of the random-read workload: 4 KiB-aligned, spread
/// over the raw disk by a fixed xorshift sequence.
pub fn random_offsets(count: u64) -> impl Iterator<Item = u64> {
    let slots = RAW_DISK_BYTES / RANDOM_READ as u64;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % slots) * RANDOM_READ as u64
    })
}

/// The `count` offsets of the random reads through the filesystem: the
/// same sequence, folded into [`BIG_FILE`].
pub fn file_random_offsets(count: u64) -> impl Iterator<Item = u64> {
    random_offsets(count).map(|offset| offset % BIG_FILE_BYTES)
}

/// Fills `buf` with [`pattern`] bytes as if it sat at `offset`.
pub fn fill(buf: &mut [u8], offset: u64) {
    for (index, byte) in buf.iter_mut().enumerate() {
        *byte = pattern(offset + index as u64);
    }
}

/// The first offset in `buf` (sitting at `offset`) whose byte is not the
/// pattern's.
pub fn first_mismatch(buf: &[u8], offset: u64) -> Option<u64> {
    buf.iter()
        .enumerate()
        .find(|(index, byte)| **byte != pattern(offset + *index as u64))
        .map(|(index, _)| offset + index as u64)
}

/// `count` units in `nanoseconds`, per second.
pub fn per_second(count: u64, nanoseconds: u64) -> u64 {
    (count as u128 * 1_000_000_000 / nanoseconds.max(1) as u128) as u64
}

/// The `BENCH` lines' names.
pub const RAW_READ: &str = "disk-raw-seq-read";
pub const RAW_WRITE: &str = "disk-raw-seq-write";
pub const RAW_RANDOM: &str = "disk-raw-rand-read";
pub const FS_READ: &str = "disk-fs-seq-read";
pub const FS_RANDOM: &str = "disk-fs-rand-read";
pub const FS_WRITE: &str = "disk-fs-seq-write";
