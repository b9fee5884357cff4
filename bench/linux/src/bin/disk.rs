//! The Linux yardstick for the storage workloads of Toro's
//! `examples/diskbench` (the same sizes, requests and offsets: its
//! `workload.rs`, included below): with `O_DIRECT`, so that the page cache
//! does not stand in for the disk (what `dd iflag=direct`/`oflag=direct`
//! measures), on the raw disk and on a file of the ext2 image mounted by
//! `/init` (the kernel's ext4 driver). Writes end with `fsync`, as Toro's
//! end with a flush (`sync_all`). As on Toro, only the I/O calls are
//! timed (`workload::IoClock`); every byte read is checked after its
//! call, every buffer written filled before its call.
//!
//! Arguments: `quick|full RAW_DEVICE MOUNT_POINT`.

#[path = "../../../../examples/diskbench/src/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use workload::{Plan, REQUEST};

/// CLOCK_MONOTONIC in nanoseconds.
fn now_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid timespec to write to.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    assert_eq!(status, 0, "clock_gettime failed");
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// A buffer aligned for `O_DIRECT` (4 KiB).
struct Aligned {
    pointer: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: `layout` has a non-zero size.
        let pointer = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!pointer.is_null(), "out of memory");
        Aligned { pointer, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `pointer` holds `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.len) }
    }
}

/// A file opened with `O_DIRECT`.
struct Direct(i32);

impl Direct {
    fn open(path: &Path, flags: i32) -> Direct {
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: `name` is a NUL-terminated path.
        let fd = unsafe { libc::open(name.as_ptr(), flags | libc::O_DIRECT | libc::O_CLOEXEC, 0o644) };
        if fd < 0 {
            fail(&format!("open {}", path.display()));
        }
        Direct(fd)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::pread(self.0, buf.as_mut_ptr().cast(), buf.len(), offset as i64) };
        if n != buf.len() as isize {
            fail(&format!("pread of {} at {offset} gave {n}", buf.len()));
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::pwrite(self.0, buf.as_ptr().cast(), buf.len(), offset as i64) };
        if n != buf.len() as isize {
            fail(&format!("pwrite of {} at {offset} gave {n}", buf.len()));
        }
    }

    fn sync(&self) {
        // SAFETY: a plain system call on an open descriptor.
        if unsafe { libc::fsync(self.0) } != 0 {
            fail("fsync");
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.0) };
    }
}

fn fail(what: &str) -> ! {
    eprintln!("toro-bench-disk: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(1);
}

fn report(name: &str, per_second: u64) {
    println!("BENCH {name}:direct {per_second} per_s");
}

/// `pread`s into the workload's buffer: an I/O call for `workload.rs`'s
/// loops (a failure ends the program).
fn reader(file: &Direct) -> impl FnMut(&mut [u8], u64) -> Result<(), Infallible> + '_ {
    |buf, offset| {
        file.read_at(buf, offset);
        Ok(())
    }
}

/// The figure of a checked read workload; a byte that was not the
/// pattern ends the program.
fn checked(outcome: Result<(u64, Option<u64>), Infallible>, what: &str) -> u64 {
    let Ok((figure, wrong)) = outcome;
    if let Some(at) = wrong {
        eprintln!("toro-bench-disk: byte {at} ({what}) is not the pattern");
        std::process::exit(1);
    }
    figure
}

/// Reads `bytes` in [`REQUEST`]s; every byte is checked against the
/// pattern after its read, outside the timed spans. Bytes per second.
fn read_sequential(file: &Direct, buf: &mut Aligned, bytes: u64) -> u64 {
    checked(workload::read_sequential(bytes, buf.bytes(), now_ns, reader(file)), "sequential read")
}

/// 4 KiB reads at `offsets`, checked with `check` (outside the timed
/// spans). Reads per second.
fn read_random(file: &Direct, offsets: impl Iterator<Item = u64>, check: bool) -> u64 {
    let mut small = Aligned::new(workload::RANDOM_READ);
    checked(workload::read_random(offsets, small.bytes(), check, now_ns, reader(file)), "random read")
}

/// Writes `bytes` of the pattern in [`REQUEST`]s, then `fsync`. Bytes per second.
fn write_sequential(file: &mut Direct, buf: &mut Aligned, bytes: u64) -> u64 {
    let write = workload::write_sequential(
        bytes,
        buf.bytes(),
        now_ns,
        file,
        |file, buf, offset| {
            file.write_at(buf, offset);
            Ok::<(), Infallible>(())
        },
        |file| {
            file.sync();
            Ok(())
        },
    );
    let Ok(write) = write;
    write
}

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    let [_, plan, raw, mount] = &arguments[..] else {
        eprintln!("usage: toro-bench-disk quick|full RAW_DEVICE MOUNT_POINT");
        std::process::exit(2);
    };
    let plan = if plan == "quick" { Plan::QUICK } else { Plan::FULL };
    let mut buf = Aligned::new(REQUEST);

    let mut device = Direct::open(Path::new(raw), libc::O_RDWR);
    report(workload::RAW_WRITE, write_sequential(&mut device, &mut buf, plan.sequential_bytes));
    report(workload::RAW_READ, read_sequential(&device, &mut buf, plan.sequential_bytes));
    // Unchecked: past the sequential bytes the raw disk holds zeros.
    report(workload::RAW_RANDOM, read_random(&device, workload::random_offsets(plan.random_reads), false));

    let mount = Path::new(mount);
    let big = Direct::open(&mount.join(workload::BIG_FILE), libc::O_RDONLY);
    report(workload::FS_READ, read_sequential(&big, &mut buf, plan.sequential_bytes));
    report(workload::FS_RANDOM, read_random(&big, workload::file_random_offsets(plan.random_reads), true));
    let mut new = Direct::open(&mount.join(workload::NEW_FILE), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    report(workload::FS_WRITE, write_sequential(&mut new, &mut buf, plan.sequential_bytes));
}
