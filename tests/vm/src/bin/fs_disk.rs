//! `toro::fs` on a virtio-blk disk the host made from a folder
//! (`mkfs.ext2 -d`, in xtask/src/disktest.rs), mounted at boot.
//!
//! Modes (the `mode=` argument):
//! - `rw` (default): every file in the tree read and checked against the
//!   image's `/MANIFEST`; `statfs`; a sparse file over 4 GiB (its data
//!   5 GiB in, found there by the host); then writes, directories, renames, removals and
//!   truncations from a thread on every CPU at once; raw reads of the disk
//!   from every CPU (several requests in flight); the VM then exits
//!   without an explicit sync, and the host checks with `debugfs` what
//!   was written and that `e2fsck -fn` finds the image clean.
//! - `ro`: the disk is read-only (QEMU `readonly=on`, `VIRTIO_BLK_F_RO`),
//!   mounted at `root=`: files read, every kind of change refused with
//!   `ReadOnlyFilesystem`, raw writes too; the host checks the image did
//!   not change.
//! - `quick` (for slow VMMs): one host file read, one file written; the
//!   host checks it after the exit.
//! - `mounts`: the disk at `/` and a shared folder at `/share` (each
//!   with its own owner CPU, from `toro.mount=`) read in full from a
//!   thread on every CPU, then `quick` on the disk; the host checks the
//!   share is unchanged.
//! - `sync-kill`: files written (small, indirect, 3 MiB), a host file
//!   overwritten in part, a rename, a removal, a truncation, then
//!   `File::sync_all`; the guest prints [`SYNCED`], makes one more change
//!   it never syncs and parks, and the host kills the VM (SIGKILL, no
//!   shutdown): everything before the sync must be on the image, which
//!   `e2fsck -fn` must find clean.
//! - `open-limit`: files opened until the open-file limit: every open
//!   past it (also a create or a truncating open) is `QuotaExceeded` and
//!   changes nothing (no file made, none truncated); closing one lets the
//!   next open succeed; the host checks with `debugfs` and `e2fsck -fn`.
//! - `full`: a small disk filled from the guest until a write fails with
//!   `StorageFull`; the other files still read, a new file's data and a
//!   directory are refused too; one file removed, a write succeeds again;
//!   the clean exit writes back and the host checks with `debugfs` and
//!   `e2fsck -fn`.
//! - `truncated`: the host cut the image short: the boot mount failed with
//!   a clear error, nothing is mounted, the disk reads up to its (short)
//!   end and a read past it is refused, the system goes on.
//! - `corrupt`: the superblock is damaged; the boot mount failed with a
//!   clear error, `toro::fs` says nothing is mounted, the disk still reads.

#![no_std]
#![no_main]

use toro::alloc::format;
use toro::alloc::string::ToString;
use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::fs::{self, OpenOptions};
use toro::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use toro::virtio::blk;
use toro::{cpu, println, thread};
use vm_tests::check;
use vm_tests::fs::{change_host_files, kind_of, pattern, read_tree, tree_worker};

/// Raw reads of the whole disk from a thread on every CPU at once,
/// compared with one read of it all (split into many requests in flight).
fn raw_reads(disk: blk::Blk, cpus: usize) -> bool {
    let bytes = (disk.config().capacity as usize * 512).min(4 << 20);
    let mut whole = vec![0u8; bytes];
    if let Err(e) = disk.read(0, &mut whole) {
        return check(false, &format!("raw read of {bytes} bytes: {e}"));
    }
    let whole: &'static [u8] = whole.leak();
    let readers: Vec<_> = (0..cpus)
        .map(|c| {
            thread::spawn_on(c, move || {
                let mut ok = true;
                let mut block = vec![0u8; 4096];
                for i in 0..64usize {
                    let offset = (i * 7 + c * 13) % (whole.len() / 4096) * 4096;
                    ok &= disk.read((offset / 512) as u64, &mut block).is_ok();
                    ok &= block[..] == whole[offset..offset + 4096];
                }
                ok
            })
        })
        .collect();
    let mut ok = true;
    for reader in readers {
        ok &= check(reader.join(), "raw reads from every CPU match");
    }
    ok &= check(
        kind_of(disk.read(disk.config().capacity, &mut vec![0u8; 512])) == Some(ErrorKind::InvalidInput),
        "read past the end refused",
    );
    ok
}

fn blk_report(disk: blk::Blk) -> bool {
    let stats = disk.stats().expect("stats");
    let on_owner = toro::interrupts::count_on(disk.cpu(), disk.vector()).unwrap_or(0);
    let elsewhere: u64 = (0..cpu::count())
        .filter(|&c| c != disk.cpu())
        .map(|c| toro::interrupts::count_on(c, disk.vector()).unwrap_or(0))
        .sum();
    println!(
        "fs_disk: blk#0 {} requests, {} interrupts ({on_owner} on cpu {}, {elsewhere} elsewhere), {} flushes, at most {} in flight",
        stats.requests,
        stats.interrupts,
        disk.cpu(),
        stats.flushes,
        stats.max_in_flight
    );
    let mut ok = check(stats.interrupts > 0 && !stats.left_out, "completions by interrupt");
    ok &= check(stats.max_in_flight > 1, "several requests in flight");
    ok
}

/// `fs::statfs`: the disk's geometry, and free space that follows a file
/// written and removed.
fn statfs_checks(disk: blk::Blk) -> bool {
    let bytes = disk.config().capacity * 512;
    let Ok(before) = fs::statfs("/") else { return check(false, "statfs /") };
    let mut ok = check([1024, 2048, 4096].contains(&before.block_size), "statfs block size");
    let size = before.blocks * before.block_size;
    ok &= check(size <= bytes && size > bytes / 2, "statfs size fits the disk");
    ok &= check(before.blocks_free <= before.blocks && before.blocks_available <= before.blocks_free, "statfs free");
    ok &= check(before.files > 0 && before.files_free < before.files && !before.read_only, "statfs inodes");
    const PROBE: u64 = 256 * 1024;
    ok &= check(fs::write("/statfs-probe", vec![7u8; PROBE as usize]).is_ok() && fs::sync().is_ok(), "statfs probe");
    let written = fs::statfs("/").expect("statfs after a write");
    ok &= check(before.blocks_free - written.blocks_free >= PROBE / before.block_size, "a written file takes blocks");
    ok &= check(written.files_free + 1 == before.files_free, "and an inode");
    ok &= check(fs::remove_file("/statfs-probe").is_ok() && fs::sync().is_ok(), "statfs probe removed");
    let removed = fs::statfs("/").expect("statfs after removing");
    ok &= check(
        removed.blocks_free == before.blocks_free && removed.files_free == before.files_free,
        "removing gives them back",
    );
    println!(
        "fs_disk: statfs {} blocks of {} bytes, {} free, {} inodes free",
        before.blocks, before.block_size, before.blocks_free, before.files_free
    );
    ok
}

/// Where `/over-4-gib` has its only data (the host checks it there).
const BEYOND_4_GIB: u64 = 5 << 30;
const BEYOND_4_GIB_DATA: &[u8] = b"written beyond 4 GiB";

/// A sparse file larger than 4 GiB on the 32 MiB disk: its one data block
/// 5 GiB in (a triple-indirect block with 4 KiB blocks), a hole before it.
fn file_over_4_gib() -> bool {
    let Ok(mut file) = OpenOptions::new().read(true).write(true).create(true).open("/over-4-gib") else {
        return check(false, "create /over-4-gib");
    };
    let mut ok = check(file.seek(SeekFrom::Start(BEYOND_4_GIB)).is_ok(), "seek past 4 GiB");
    ok &= check(file.write_all(BEYOND_4_GIB_DATA).is_ok(), "write past 4 GiB");
    let len = BEYOND_4_GIB + BEYOND_4_GIB_DATA.len() as u64;
    ok &= check(file.metadata().is_ok_and(|m| m.len() == len), "its length is over 4 GiB");
    let mut back = vec![0u8; BEYOND_4_GIB_DATA.len()];
    ok &= check(file.seek(SeekFrom::Start(BEYOND_4_GIB)).is_ok() && file.read_exact(&mut back).is_ok(), "read it");
    ok &= check(back == BEYOND_4_GIB_DATA, "it reads back");
    let mut hole = vec![1u8; 4096];
    ok &= check(file.seek(SeekFrom::Start(4 << 30)).is_ok() && file.read_exact(&mut hole).is_ok(), "read the hole");
    ok &= check(hole.iter().all(|&b| b == 0), "the hole reads as zeros");
    ok
}

fn read_write(cpus: usize, disk: blk::Blk) -> bool {
    let mut ok = read_tree("fs_disk", "");
    ok &= statfs_checks(disk);
    ok &= file_over_4_gib();
    // Writes from every CPU at once; the owner serialises them.
    let workers: Vec<_> = (0..cpus).map(|c| thread::spawn_on(c, move || tree_worker("", c))).collect();
    for worker in workers {
        ok &= check(worker.join(), "worker checks");
    }
    println!("fs_disk: {cpus} CPUs wrote at once");
    ok &= change_host_files("");
    ok &= raw_reads(disk, cpus);
    ok &= blk_report(disk);
    ok
}

fn read_only(root: &str, disk: blk::Blk) -> bool {
    let mut ok = check(disk.config().read_only, "the device says read-only");
    ok &= read_tree("fs_disk", root);
    let path = |p: &str| format!("{root}{p}");
    let refused = Some(ErrorKind::ReadOnlyFilesystem);
    ok &= check(kind_of(fs::write(&path("/new"), b"x")) == refused, "create refused");
    ok &= check(kind_of(OpenOptions::new().write(true).open(&path("/data/one"))) == refused, "open for write refused");
    ok &= check(kind_of(fs::create_dir(&path("/newdir"))) == refused, "mkdir refused");
    ok &= check(kind_of(fs::remove_file(&path("/data/one"))) == refused, "remove refused");
    ok &= check(kind_of(fs::rename(&path("/data/one"), &path("/data/two"))) == refused, "rename refused");
    let error = disk.write(0, &vec![0u8; 4096]).err();
    ok &= check(error.as_ref().map(|e| e.kind()) == refused, "raw write refused");
    if let Some(error) = error {
        println!("fs_disk: raw write: {error}");
    }
    ok &= check(fs::sync().is_ok(), "sync of a read-only mount");
    ok &= check(fs::statfs(&path("/")).is_ok_and(|stats| stats.read_only), "statfs says read-only");
    println!("fs_disk: every change refused on the read-only disk");
    ok
}

fn corrupt(disk: blk::Blk) -> bool {
    let mut ok = check(kind_of(fs::metadata("/")) == Some(ErrorKind::NotFound), "nothing mounted");
    ok &= check(kind_of(fs::write("/x", b"x")) == Some(ErrorKind::NotFound), "no file on a failed mount");
    // The superblock (byte 1024) as the host damaged it: magic zeroed, the rest intact.
    let mut superblock = vec![0u8; 1024];
    ok &= check(disk.read(2, &mut superblock).is_ok(), "the disk still reads");
    ok &= check(superblock[56..58] == [0, 0] && superblock[0..4] != [0; 4], "the damage the host made");
    println!("fs_disk: corrupt image refused, system still running");
    ok
}

/// Files open up to the limit, then past it (fs::MAX_OPEN_FILES per mount).
fn open_limit() -> bool {
    let mut open = Vec::new();
    for i in 0..60 {
        match fs::File::open(&format!("/many/entry-{i:03}")) {
            Ok(file) => open.push(file),
            Err(e) => return check(false, &format!("open /many/entry-{i:03}: {e}")),
        }
    }
    let error = loop {
        match fs::File::open("/hello.txt") {
            Ok(file) => open.push(file),
            Err(e) => break e,
        }
    };
    println!("fs_disk: open-file limit after {} files: {:?}: {error}", open.len(), error.kind());
    let limit = ErrorKind::QuotaExceeded;
    let mut ok = check(open.len() == fs::MAX_OPEN_FILES, "the limit is MAX_OPEN_FILES");
    ok &= check(error.kind() == limit && error.to_string() == "too many open files", "too many open files");
    // Past the limit nothing happens: no file made, none truncated.
    ok &= check(kind_of(fs::File::create("/limit-new")) == Some(limit), "create at the limit refused");
    ok &= check(kind_of(fs::write("/limit-new", b"x")) == Some(limit), "write at the limit refused");
    ok &= check(kind_of(fs::File::create("/data/block")) == Some(limit), "truncating open at the limit refused");
    ok &= check(kind_of(fs::read("/data/block")) == Some(limit), "read at the limit refused");
    // Calls that open nothing still work.
    ok &= check(fs::exists("/limit-new").ok() == Some(false), "no file made at the limit");
    ok &= check(fs::metadata("/data/block").is_ok_and(|m| m.len() == 1024), "nothing truncated at the limit");
    // One closed: the next open succeeds, and only one.
    drop(open.pop());
    ok &= check(fs::File::open("/data/block").map(|file| open.push(file)).is_ok(), "an open after closing one");
    ok &= check(kind_of(fs::File::open("/hello.txt")) == Some(limit), "and the limit again after it");
    open.clear();
    ok &= check(fs::read("/data/block").ok() == Some(pattern(1024, 3)), "/data/block intact");
    ok &= check(fs::write("/limit-after", pattern(3000, 11)).is_ok(), "write after closing them all");
    println!("fs_disk: open-file limit refused cleanly, files open again after closing");
    ok
}

/// Fills the disk (`disktest::FULL`: 8 MiB, 1 KiB blocks).
fn full() -> bool {
    const CHUNK: usize = 256 * 1024;
    let mut ok = check(fs::create_dir("/fill").is_ok(), "mkdir /fill");
    let mut written = 0;
    let error = loop {
        match fs::write(&format!("/fill/f-{written}"), pattern(CHUNK, written as u8)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        if written == 64 {
            return check(false, "the 8 MiB disk never filled");
        }
    };
    println!("fs_disk: disk full after {written} files of 256 KiB: {:?}: {error}", error.kind());
    ok &= check(error.kind() == ErrorKind::StorageFull && written >= 2, "StorageFull when the disk is full");
    ok &= check(fs::statfs("/").is_ok_and(|s| s.blocks_available == 0), "statfs: nothing available");
    ok &= check(kind_of(fs::write("/fill/one", b"x")) == Some(ErrorKind::StorageFull), "a new file's data refused");
    ok &= check(kind_of(fs::create_dir("/fill/dir")) == Some(ErrorKind::StorageFull), "a directory refused");
    // What was there, and what was written before, still reads.
    ok &= check(fs::read("/hello.txt").ok() == Some(pattern(20, 9)), "/hello.txt reads on a full disk");
    ok &= check(fs::read("/data/big").ok() == Some(pattern(3_000_000, 7)), "/data/big reads on a full disk");
    ok &= check(fs::read("/fill/f-1").ok() == Some(pattern(CHUNK, 1)), "/fill/f-1 reads on a full disk");
    // Room again after a removal.
    ok &= check(fs::remove_file("/fill/f-0").is_ok(), "remove /fill/f-0");
    ok &= check(fs::write("/after-full", pattern(100_000, 99)).is_ok(), "a write after the removal");
    ok &= check(fs::read("/after-full").ok() == Some(pattern(100_000, 99)), "and it reads back");
    println!("fs_disk: full disk refused writes, room again after a removal");
    ok
}

/// The host cut the image to half its size (`disktest::TRUNCATED`).
fn truncated(disk: blk::Blk) -> bool {
    let mut ok = check(kind_of(fs::metadata("/")) == Some(ErrorKind::NotFound), "nothing mounted");
    ok &= check(kind_of(fs::read("/hello.txt")) == Some(ErrorKind::NotFound), "no file on a failed mount");
    let sectors = disk.config().capacity;
    let mut superblock = vec![0u8; 1024];
    ok &= check(disk.read(2, &mut superblock).is_ok() && superblock[56..58] == [0x53, 0xef], "the superblock reads");
    ok &= check(disk.read(sectors - 8, &mut vec![0u8; 4096]).is_ok(), "the last sectors read");
    let past = disk.read(sectors - 4, &mut vec![0u8; 4096]);
    ok &=
        check(past.as_ref().err().map(|e| e.kind()) == Some(ErrorKind::InvalidInput), "a read across the end refused");
    if let Err(e) = past {
        println!("fs_disk: read across the end: {e}");
    }
    let worker = thread::spawn_on(cpu::count() - 1, || fs::write("/x", b"x").is_err());
    ok &= check(worker.join(), "threads still run");
    println!("fs_disk: truncated image refused, system still running");
    ok
}

/// A short run for slow VMMs: one host file read, one written (the clean exit writes it back).
/// The line after which the host kills a `sync-kill` guest.
const SYNCED: &str = "fs_disk: synced, kill the VM now";

fn sync_kill() -> bool {
    let mut ok = check(fs::create_dir("/synced").is_ok(), "mkdir /synced");
    for (name, len, seed) in [("small", 100usize, 1u8), ("indirect", 70_000, 2), ("big", 3 << 20, 3)] {
        ok &= check(fs::write(&format!("/synced/{name}"), pattern(len, seed)).is_ok(), name);
    }
    ok &= check(fs::write("/synced/doomed", b"removed before the sync").is_ok(), "write doomed");
    ok &= check(fs::remove_file("/synced/doomed").is_ok(), "remove doomed");
    ok &= check(fs::rename("/synced/small", "/synced/renamed").is_ok(), "rename");
    let truncated = OpenOptions::new().write(true).open("/hello.txt").and_then(|file| file.set_len(7));
    ok &= check(truncated.is_ok(), "truncate /hello.txt");
    let mut last = match OpenOptions::new().create(true).write(true).open("/synced/last") {
        Ok(file) => file,
        Err(_) => return check(false, "create /synced/last"),
    };
    ok &= check(toro::io::Write::write_all(&mut last, &pattern(10_000, 4)).is_ok(), "write /synced/last");
    ok &= check(last.sync_all().is_ok(), "sync_all");
    if !ok {
        return false;
    }
    println!("{SYNCED}");
    // Never synced: small enough to stay in the block cache.
    let _ = fs::write("/after-sync.txt", b"never synced");
    println!("fs_disk: parked after one unsynced change");
    toro::park()
}

fn quick() -> bool {
    let mut ok = check(fs::read("/hello.txt").ok() == Some(pattern(20, 9)), "/hello.txt reads back");
    ok &= check(fs::write("/quick.txt", pattern(5000, 42)).is_ok(), "write /quick.txt");
    println!("fs_disk: quick read and write done");
    ok
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let Some(&disk) = blk::devices().first() else {
        println!("FAILED: no virtio-blk device");
        return 1;
    };
    let config = disk.config();
    println!(
        "fs_disk: blk#0 {} KiB, {}-byte blocks, owner cpu {}{}",
        config.capacity / 2,
        config.block_size,
        disk.cpu(),
        if config.read_only { ", read-only" } else { "" }
    );
    let ok = match toro::system::argument("mode").unwrap_or("rw") {
        "rw" => read_write(cpus, disk),
        "ro" => read_only(toro::system::argument("root").unwrap_or(""), disk),
        "corrupt" => corrupt(disk),
        "open-limit" => open_limit(),
        "full" => full(),
        "truncated" => truncated(disk),
        "quick" => quick(),
        // A disk at `/` and a shared folder at `/share`, each with its own
        // owner CPU (as `toro.mount=` says): both used from every CPU.
        "mounts" => {
            let readers: Vec<_> = (0..cpus)
                .map(|c| thread::spawn_on(c, || read_tree("fs_disk", "/share") && read_tree("fs_disk", "")))
                .collect();
            let mut ok = true;
            for reader in readers {
                ok &= check(reader.join(), "the disk and the share read from every CPU");
            }
            println!("fs_disk: disk and share read from {cpus} CPUs");
            ok & quick()
        }
        "sync-kill" => sync_kill(),
        other => check(false, &format!("unknown mode {other:?}")),
    };
    if ok {
        println!("fs_disk: all checks passed");
        0
    } else {
        1
    }
}
