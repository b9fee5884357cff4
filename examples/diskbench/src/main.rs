//! The storage side of `cargo xtask bench` on Toro: sequential reads and
//! writes and 4 KiB random reads on a raw virtio-blk disk, and sequential
//! reads and writes through the ext2 filesystem, each printed as one
//! `BENCH <name> <value> per_s` line (bytes or reads per second). The
//! Linux guest runs the same workloads (`bench/linux`, `toro-bench-disk`)
//! with `O_DIRECT` on the same images.
//!
//! Disks (`cargo xtask bench` attaches them): `blk#0` an ext2 image with
//! `/big.bin` (mounted at `/`, the default), `blk#1` a raw disk.
//! `bench.quick=1` shortens every workload. Each workload runs in a thread
//! on the CPU that owns what it uses (the raw disk's driver, the
//! filesystem's owner), so the figure is the device path's, not a
//! cross-CPU call's. Only the I/O calls are timed (`workload::IoClock`):
//! every byte read is checked against the pattern after its call, and
//! every buffer written is filled before its call, outside the timing.

#![no_std]
#![no_main]

extern crate alloc;

mod workload;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use toro::fs::File;
use toro::io::{Read, Seek, SeekFrom, Write};
use toro::time::{ticks_to_duration, Instant};
use toro::virtio::blk::{self, Blk};
use toro::{println, system, thread};

use workload::{Plan, REQUEST};

/// Nanoseconds of the TSC since boot.
fn now_ns() -> u64 {
    ticks_to_duration(Instant::now().ticks()).map_or(0, |duration| duration.as_nanos() as u64)
}

fn report(name: &str, per_second: u64) {
    println!("BENCH {name} {per_second} per_s");
}

#[toro::main]
fn main() -> i32 {
    if toro::time::tsc_hz().is_none() {
        println!("diskbench: the TSC frequency is unknown: nothing can be timed");
        return 3;
    }
    let quick = system::argument("bench.quick").is_some_and(|value| value != "0");
    let plan = if quick { Plan::QUICK } else { Plan::FULL };
    let [fs_disk, raw] = blk::devices() else {
        println!("diskbench: needs two virtio-blk disks (ext2, raw), found {}", blk::devices().len());
        return 2;
    };
    let (raw, fs_cpu) = (*raw, fs_disk.cpu());
    if raw.config().capacity * 512 < workload::RAW_DISK_BYTES {
        println!("diskbench: the raw disk is smaller than {} MiB", workload::RAW_DISK_BYTES >> 20);
        return 2;
    }
    let outcome = thread::spawn_on(raw.cpu(), move || raw_workloads(raw, plan)).join();
    let outcome = outcome.and_then(|()| thread::spawn_on(fs_cpu, move || fs_workloads(plan)).join());
    match outcome {
        Ok(()) => {
            println!("diskbench: done");
            0
        }
        Err(why) => {
            println!("diskbench: FAILED: {why}");
            1
        }
    }
}

fn raw_workloads(raw: Blk, plan: Plan) -> Result<(), String> {
    let mut buf = vec![0u8; REQUEST];
    let sectors = |offset: u64| offset / 512;
    // Write first, so that the reads find the pattern (and check it).
    let write = workload::write_sequential(
        plan.sequential_bytes,
        &mut buf,
        now_ns,
        &mut { raw },
        |raw, buf, offset| raw.write(sectors(offset), buf).map_err(|error| format!("raw write at {offset}: {error}")),
        |raw| raw.flush().map_err(|error| format!("raw flush: {error}")),
    )?;
    report(workload::RAW_WRITE, write);

    let (read, wrong) = workload::read_sequential(plan.sequential_bytes, &mut buf, now_ns, |buf, offset| {
        raw.read(sectors(offset), buf).map_err(|error| format!("raw read at {offset}: {error}"))
    })?;
    report(workload::RAW_READ, read);
    if let Some(at) = wrong {
        return Err(format!("raw disk: byte {at} read back is not what was written"));
    }

    // Unchecked: past the sequential bytes the raw disk holds zeros.
    let small = &mut buf[..workload::RANDOM_READ];
    let offsets = workload::random_offsets(plan.random_reads);
    let (reads, _) = workload::read_random(offsets, small, false, now_ns, |buf, offset| {
        raw.read(sectors(offset), buf).map_err(|error| format!("raw random read at {offset}: {error}"))
    })?;
    report(workload::RAW_RANDOM, reads);
    Ok(())
}

fn fs_workloads(plan: Plan) -> Result<(), String> {
    let mut buf = vec![0u8; REQUEST];
    let big = format!("/{}", workload::BIG_FILE);
    let mut file = File::open(&big).map_err(|error| format!("{big}: {error}"))?;
    let len = file.metadata().map_err(|error| format!("{big}: {error}"))?.len();
    if len != workload::BIG_FILE_BYTES {
        return Err(format!("{big} has {len} bytes, not {}", workload::BIG_FILE_BYTES));
    }
    let (read, wrong) = workload::read_sequential(plan.sequential_bytes, &mut buf, now_ns, |buf, offset| {
        file.read_exact(buf).map_err(|error| format!("{big} at {offset}: {error}"))
    })?;
    report(workload::FS_READ, read);
    if let Some(at) = wrong {
        return Err(format!("{big}: byte {at} is not what the host wrote"));
    }

    // 4 KiB reads at random offsets of the same file: whole blocks, so
    // each goes to the device (the block cache keeps metadata, not file
    // data read in whole blocks), as `O_DIRECT` reads do on Linux.
    let small = &mut buf[..workload::RANDOM_READ];
    let offsets = workload::file_random_offsets(plan.random_reads);
    let (reads, wrong) = workload::read_random(offsets, small, true, now_ns, |buf, offset| {
        file.seek(SeekFrom::Start(offset)).map_err(|error| format!("{big}: seek to {offset}: {error}"))?;
        file.read_exact(buf).map_err(|error| format!("{big} at {offset}: {error}"))
    })?;
    report(workload::FS_RANDOM, reads);
    if let Some(at) = wrong {
        return Err(format!("{big}: byte {at} (random read) is not what the host wrote"));
    }

    // Created before the clock starts, as the Linux side opens it.
    let new = format!("/{}", workload::NEW_FILE);
    let mut file = File::create(&new).map_err(|error| format!("{new}: {error}"))?;
    let write = workload::write_sequential(
        plan.sequential_bytes,
        &mut buf,
        now_ns,
        &mut file,
        |file, buf, offset| file.write_all(buf).map_err(|error| format!("{new} at {offset}: {error}")),
        |file| file.sync_all().map_err(|error| format!("{new}: sync_all: {error}")),
    )?;
    report(workload::FS_WRITE, write);
    Ok(())
}
