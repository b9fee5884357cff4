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

/// Time spent inside the I/O calls alone: filling a buffer before a write
/// and checking one after a read happen between the timed spans, so the
/// figure is the storage path's, not the speed of a byte loop (which
/// differs between Toro's no-SSE target and the Linux program's build).
/// Both sides time through this, with their own clock (`now`, ns).
pub struct IoClock<N: Fn() -> u64> {
    now: N,
    nanoseconds: u64,
}

impl<N: Fn() -> u64> IoClock<N> {
    pub fn new(now: N) -> Self {
        IoClock { now, nanoseconds: 0 }
    }

    /// Runs one I/O call, adding its time.
    pub fn time<T>(&mut self, call: impl FnOnce() -> T) -> T {
        let started = (self.now)();
        let result = call();
        self.nanoseconds += (self.now)().saturating_sub(started);
        result
    }

    /// `count` units over the time counted, per second.
    pub fn per_second(&self, count: u64) -> u64 {
        per_second(count, self.nanoseconds)
    }
}

/// Writes `bytes` of [`pattern`] to `target` from offset 0 in
/// `buf.len()` pieces with `write(target, buf, offset)`, then
/// `finish(target)` (the flush or `fsync`): bytes per second over the
/// time inside `write` and `finish` (each buffer is filled outside it).
pub fn write_sequential<T, E>(
    bytes: u64,
    buf: &mut [u8],
    now: impl Fn() -> u64,
    target: &mut T,
    mut write: impl FnMut(&mut T, &[u8], u64) -> Result<(), E>,
    finish: impl FnOnce(&mut T) -> Result<(), E>,
) -> Result<u64, E> {
    let mut clock = IoClock::new(now);
    let mut offset = 0;
    while offset < bytes {
        fill(buf, offset);
        clock.time(|| write(target, &*buf, offset))?;
        offset += buf.len() as u64;
    }
    clock.time(|| finish(target))?;
    Ok(clock.per_second(bytes))
}

/// Reads `bytes` from offset 0 in `buf.len()` pieces with `read(buf,
/// offset)`, checking every byte against [`pattern`] after each read
/// (outside the timed span): bytes per second over the time inside
/// `read`, and the first offset that was not the pattern.
pub fn read_sequential<E>(
    bytes: u64,
    buf: &mut [u8],
    now: impl Fn() -> u64,
    mut read: impl FnMut(&mut [u8], u64) -> Result<(), E>,
) -> Result<(u64, Option<u64>), E> {
    let mut clock = IoClock::new(now);
    let (mut offset, mut wrong) = (0, None);
    while offset < bytes {
        clock.time(|| read(&mut *buf, offset))?;
        wrong = wrong.or_else(|| first_mismatch(buf, offset));
        offset += buf.len() as u64;
    }
    Ok((clock.per_second(bytes), wrong))
}

/// One `read(buf, offset)` at each of `offsets`: reads per second over the
/// time inside `read`; with `check`, every byte is compared with
/// [`pattern`] after its read (outside the timed span) and the first
/// offset that was not it is returned.
pub fn read_random<E>(
    offsets: impl Iterator<Item = u64>,
    buf: &mut [u8],
    check: bool,
    now: impl Fn() -> u64,
    mut read: impl FnMut(&mut [u8], u64) -> Result<(), E>,
) -> Result<(u64, Option<u64>), E> {
    let mut clock = IoClock::new(now);
    let (mut count, mut wrong) = (0, None);
    for offset in offsets {
        clock.time(|| read(&mut *buf, offset))?;
        if check {
            wrong = wrong.or_else(|| first_mismatch(buf, offset));
        }
        count += 1;
    }
    Ok((clock.per_second(count), wrong))
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
