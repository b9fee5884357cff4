//! The storage workloads (issue 11): Toro's `examples/diskbench` against
//! the Linux guest's `toro-bench-disk` (`bench/linux`, `O_DIRECT`) on the
//! same two disk images, made afresh for every boot: disk 0 an ext2 image
//! (4 KiB blocks, `mkfs.ext2 -d`) holding the 32 MiB file both sides read
//! through their filesystem, disk 1 a raw 64 MiB disk. Sequential requests
//! are 1 MiB, random reads 4 KiB at the same offsets on both sides, one
//! request at a time (queue depth 1), each side on the CPU that owns the
//! disk where it can choose (Toro: the driver's owner; Linux: the
//! scheduler's choice). The sizes and offsets are one text for both
//! programs: `examples/diskbench/src/workload.rs`, included here too to
//! make the file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

#[path = "../../../examples/diskbench/src/workload.rs"]
#[allow(dead_code)]
mod workload;

use super::report::{Metric, Side};
use super::workloads::{self, Better, LineUnit, Reading, Source, Spec, Workload, Yardstick};
use super::{vm, Bench};
use crate::disk::Disk;
use crate::linux_guest::{Mode, BENCH_DONE_MARKER};
use crate::qemu::{self, UserNetwork, VmConfig};

const DIRECT: &[Yardstick] = &[Yardstick { variant: "direct", label: "O_DIRECT (as dd iflag/oflag=direct)" }];
const FS_DIRECT: &[Yardstick] = &[Yardstick { variant: "direct", label: "ext4 driver on the ext2 image, O_DIRECT" }];

/// The storage rows, in the order of the table (their keys start with
/// `disk-`, which `workloads::markdown` uses to give them their own table).
pub const SPECS: &[Spec] = &[
    Spec {
        key: workload::RAW_READ,
        title: "raw virtio-blk, sequential read (1 MiB requests)",
        line_unit: LineUnit::PerSecond,
        unit: "MB/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: DIRECT,
    },
    Spec {
        key: workload::RAW_WRITE,
        title: "raw virtio-blk, sequential write + flush (1 MiB requests)",
        line_unit: LineUnit::PerSecond,
        unit: "MB/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: DIRECT,
    },
    Spec {
        key: workload::RAW_RANDOM,
        title: "raw virtio-blk, 4 KiB random reads, one at a time",
        line_unit: LineUnit::PerSecond,
        unit: "k IOPS",
        divisor: 1e3,
        better: Better::Higher,
        yardsticks: DIRECT,
    },
    Spec {
        key: workload::FS_READ,
        title: "ext2 file, sequential read (1 MiB reads, cold)",
        line_unit: LineUnit::PerSecond,
        unit: "MB/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: FS_DIRECT,
    },
    Spec {
        key: workload::FS_RANDOM,
        title: "ext2 file, 4 KiB random reads, one at a time",
        line_unit: LineUnit::PerSecond,
        unit: "k IOPS",
        divisor: 1e3,
        better: Better::Higher,
        yardsticks: FS_DIRECT,
    },
    Spec {
        key: workload::FS_WRITE,
        title: "ext2 file, sequential write + sync (1 MiB writes)",
        line_unit: LineUnit::PerSecond,
        unit: "MB/s",
        divisor: 1e6,
        better: Better::Higher,
        yardsticks: FS_DIRECT,
    },
];

/// Every storage row's key, in the order of the table.
pub fn keys() -> Vec<&'static str> {
    SPECS.iter().map(|spec| spec.key).collect()
}

/// Generous: a full run moves about 160 MiB per side under emulation.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The ext2 image: the 32 MiB file and room for the one written.
const FS_IMAGE_BYTES: u64 = 96 << 20;

/// The two disks, made afresh in `dir` (the folder with the big file is
/// made once).
fn make_disks(dir: &Path) -> Result<Vec<Disk>> {
    let tree = dir.join("tree");
    let big = tree.join(workload::BIG_FILE);
    if std::fs::metadata(&big).map(|m| m.len()).ok() != Some(workload::BIG_FILE_BYTES) {
        std::fs::create_dir_all(&tree)?;
        let bytes: Vec<u8> = (0..workload::BIG_FILE_BYTES).map(workload::pattern).collect();
        std::fs::write(&big, bytes).with_context(|| format!("writing {}", big.display()))?;
    }
    let fs_image = dir.join("fs.img");
    let _ = std::fs::remove_file(&fs_image);
    crate::disk::image_from_folder_with(&tree, &fs_image, Some(FS_IMAGE_BYTES), &["-b", "4096"])?;
    let raw = dir.join("raw.img");
    let _ = std::fs::remove_file(&raw);
    std::fs::File::create(&raw)?.set_len(workload::RAW_DISK_BYTES)?;
    Ok(vec![Disk::new(fs_image), Disk::new(raw)])
}

/// The file the HTTP row asks for, `page.html` at the ext2 disk's root:
/// Toro serves the disk at `/`, the Linux guest mounts it at `/www/disk`,
/// under nginx's root.
const PAGE_PATHS: [&str; 2] = ["/page.html", "/disk/page.html"];
const PAGE_BYTES: usize = 16 * 1024;

/// The web servers' disk: an ext2 image with the page.
fn make_web_disk(dir: &Path) -> Result<Disk> {
    let tree = dir.join("web");
    std::fs::create_dir_all(&tree)?;
    let page: Vec<u8> = (0..PAGE_BYTES as u64).map(|i| b'a' + (workload::pattern(i) % 26)).collect();
    std::fs::write(tree.join("page.html"), page)?;
    let image = dir.join("web.img");
    let _ = std::fs::remove_file(&image);
    crate::disk::image_from_folder_with(&tree, &image, Some(16 << 20), &["-b", "4096"])?;
    Ok(Disk { read_only: true, ..Disk::new(image) })
}

impl Bench {
    /// Files served from the disk: wrk over QEMU user networking (the
    /// same load as the `http-request` row) asking for a 16 KiB file on
    /// the ext2 disk, from Toro's web server and from nginx (the disk
    /// mounted under its root); the wall time per request.
    pub(super) fn files_served(&mut self, runs: usize, quick: bool) -> Metric {
        let (threads, connections, window) = if quick { super::HTTP_LOAD_QUICK } else { super::HTTP_LOAD };
        let title = "HTTP: wall time per 16 KiB file from the ext2 disk (1/files per second), same wrk load";
        let missing = |why: &str| Metric {
            key: "http-disk-file",
            title,
            unit: "us",
            toro: Side::Missing(why.into()),
            linux: Side::Missing(why.into()),
        };
        if !crate::setup::have_wrk() {
            return missing("n/a — wrk not installed");
        }
        let dir = crate::build::workspace_root().join("target").join("bench").join("disks");
        let mut per_file = [Vec::new(), Vec::new()];
        for run in 1..=runs {
            for (side, name) in ["Toro", "Linux"].into_iter().enumerate() {
                let outcome = (|| -> Result<f64> {
                    let port = vm::free_loopback_port()?;
                    let mut config = if side == 0 {
                        VmConfig::new(self.webserver.clone(), self.accel)
                    } else {
                        let mut config = self.linux.vm_config(self.accel, Mode::Serve);
                        let line = format!("{} toro_www_disk=1", config.command_line.to_string_lossy());
                        config.command_line = line.into();
                        config
                    };
                    config.disks = vec![make_web_disk(&dir)?];
                    config.network = Some(UserNetwork { tcp_forwards: vec![(port, 80)] });
                    let timeout = if side == 0 { super::TORO_TIMEOUT } else { super::LINUX_TIMEOUT };
                    let load = Some((threads, connections, window));
                    let Some((_, Some(report))) = self.serve_at(&config, port, PAGE_PATHS[side], timeout, load)? else {
                        anyhow::bail!("no HTTP 200 before the timeout");
                    };
                    let report = report?;
                    if report.requests == 0 || report.socket_errors + report.non_2xx > 0 {
                        anyhow::bail!("errors under wrk: {report:?}");
                    }
                    eprintln!("bench: disk file {run}/{runs}: {name} {:.0} files/s", report.requests_per_second);
                    Ok(window.as_secs_f64() * 1e6 / report.requests as f64)
                })();
                let sample =
                    outcome.unwrap_or_else(|error| self.fail(format!("{name} disk file over HTTP: {error:#}")));
                per_file[side].push(sample);
            }
        }
        let [toro, linux] = per_file;
        Metric { key: "http-disk-file", title, unit: "us", toro: Side::measured(toro), linux: Side::measured(linux) }
    }

    /// The storage rows: `runs` boots of each side, alternating. A boot
    /// runs every storage workload; `--only` keeps the selected rows.
    pub(super) fn storage(&mut self, runs: usize, quick: bool) -> Vec<Workload> {
        let dir = crate::build::workspace_root().join("target").join("bench").join("disks");
        let (mut toro, mut linux) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            let toro_readings = self.storage_side(&dir, quick, Source::Toro);
            let linux_readings = self.storage_side(&dir, quick, Source::Linux);
            eprintln!(
                "bench: storage {run}/{runs}: Toro {}, Linux guest {}",
                if toro_readings.is_empty() { "failed" } else { "ok" },
                if linux_readings.is_empty() { "failed" } else { "ok" },
            );
            toro.push(toro_readings);
            linux.push(linux_readings);
        }
        let only = self.only.clone();
        let missing = "not run (storage is the guests' only)";
        workloads::collect_specs(SPECS, &toro, &linux, &[], missing, &|key| only.wants(key))
    }

    /// One boot of one side on fresh disks: its readings, or none if it failed.
    fn storage_side(&mut self, dir: &Path, quick: bool, source: Source) -> Vec<Reading> {
        let name = match source {
            Source::Toro => "Toro storage",
            Source::Linux => "Linux storage",
        };
        let disks = match make_disks(dir) {
            Ok(disks) => disks,
            Err(error) => {
                self.fail(format!("{name}: making the disks: {error:#}"));
                return Vec::new();
            }
        };
        let mut config = match source {
            Source::Toro => {
                let mut config = VmConfig::new(self.diskbench.clone(), self.accel);
                if quick {
                    config.command_line = super::TORO_QUICK_ARGUMENT.into();
                }
                config
            }
            Source::Linux => self.linux.vm_config(self.accel, Mode::Disk { quick }),
        };
        config.disks = disks;
        let run = match source {
            Source::Toro => qemu::run(&config, Some(TIMEOUT), false, &|line| line.to_string()),
            Source::Linux => crate::linux_guest::run(&format!("bench: {name}"), &config, TIMEOUT),
        };
        let result = match run {
            Ok(result) => result,
            Err(error) => {
                self.fail(format!("{name}: {error:#}"));
                return Vec::new();
            }
        };
        let mut readings = self.judge_with(SPECS, name, &result.output, &result.outcome, source, &|_| true);
        if source == Source::Linux
            && !result.output.lines().any(|line| line == BENCH_DONE_MARKER)
            && !readings.is_empty()
        {
            self.fail(format!("{name}: no {BENCH_DONE_MARKER:?} line"));
            readings.clear();
        }
        readings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_programs_report_every_row() {
        // The names the programs print are the specs' keys, and the
        // offsets stay inside the raw disk, aligned.
        let keys: Vec<&str> = SPECS.iter().map(|spec| spec.key).collect();
        for name in [
            workload::RAW_READ,
            workload::RAW_WRITE,
            workload::RAW_RANDOM,
            workload::FS_READ,
            workload::FS_RANDOM,
            workload::FS_WRITE,
        ] {
            assert!(keys.contains(&name), "{name}");
            assert!(name.starts_with("disk-"));
        }
        for offset in workload::random_offsets(10_000) {
            assert_eq!(offset % workload::RANDOM_READ as u64, 0);
            assert!(offset + workload::RANDOM_READ as u64 <= workload::RAW_DISK_BYTES);
        }
        for offset in workload::file_random_offsets(10_000) {
            assert_eq!(offset % workload::RANDOM_READ as u64, 0);
            assert!(offset + workload::RANDOM_READ as u64 <= workload::BIG_FILE_BYTES);
        }
        let lines = "BENCH disk-raw-seq-read 123000000 per_s\nBENCH disk-raw-seq-write 1 per_s\n\
                     BENCH disk-raw-rand-read 5000 per_s\nBENCH disk-fs-seq-read 2 per_s\n\
                     BENCH disk-fs-rand-read 4000 per_s\nBENCH disk-fs-seq-write 3 per_s\n";
        let (readings, problems) = workloads::parse_output(lines);
        assert!(problems.is_empty());
        assert!(workloads::check_specs(SPECS, &readings, Source::Toro, &|_| true).is_empty());
        let missing = workloads::check_specs(SPECS, &readings[1..], Source::Toro, &|_| true);
        assert_eq!(missing, vec!["no figure for disk-raw-seq-read".to_string()]);
        assert!(
            !workloads::check_specs(SPECS, &readings, Source::Linux, &|_| true).is_empty(),
            "Linux lines carry :direct"
        );
    }

    #[test]
    fn only_the_io_calls_are_timed_and_every_byte_is_checked() {
        use std::cell::Cell;
        // A fake clock that moves only inside the I/O calls (1 ms each,
        // the flush 5 ms): the byte loops between them cost no time here,
        // so the figures are the calls' alone.
        let clock = Cell::new(0u64);
        let now = || clock.get();
        let spend = |ns: u64| clock.set(clock.get() + ns);
        let mut disk = vec![0u8; 4 << 10];
        let mut buf = vec![0u8; 1 << 10];
        let write = workload::write_sequential(
            4 << 10,
            &mut buf,
            now,
            &mut disk,
            |disk, buf, offset| {
                spend(1_000_000);
                assert_eq!(workload::first_mismatch(buf, offset), None, "filled before the call");
                disk[offset as usize..][..buf.len()].copy_from_slice(buf);
                Ok::<(), ()>(())
            },
            |_| {
                spend(5_000_000);
                Ok(())
            },
        );
        assert_eq!(write, Ok(4096 * 1000 / 9), "4 KiB in 4 + 5 ms");
        let read = |disk: &[u8], buf: &mut [u8], offset: u64| {
            spend(1_000_000);
            buf.copy_from_slice(&disk[offset as usize..][..buf.len()]);
            Ok::<(), ()>(())
        };
        let sequential = workload::read_sequential(4 << 10, &mut buf, now, |buf, offset| read(&disk, buf, offset));
        assert_eq!(sequential, Ok((1_024_000, None)), "4 KiB in 4 ms, all the pattern");
        disk[3000] ^= 1;
        let sequential = workload::read_sequential(4 << 10, &mut buf, now, |buf, offset| read(&disk, buf, offset));
        assert_eq!(sequential, Ok((1_024_000, Some(3000))), "a wrong byte in the third read is found");
        let offsets = [0u64, 2048, 2560].into_iter();
        let random = workload::read_random(offsets, &mut buf[..512], true, now, |buf, offset| read(&disk, buf, offset));
        assert_eq!(random, Ok((1000, Some(3000))), "3 reads in 3 ms, the last one wrong");
        let offsets = [2560u64].into_iter();
        let unchecked =
            workload::read_random(offsets, &mut buf[..512], false, now, |buf, offset| read(&disk, buf, offset));
        assert_eq!(unchecked, Ok((1000, None)));
        assert_eq!(
            workload::read_sequential(4 << 10, &mut buf, now, |_, offset| if offset == 2048 {
                Err(offset)
            } else {
                Ok(())
            }),
            Err(2048),
            "an I/O error stops the workload"
        );
    }
}
