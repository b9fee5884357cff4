//! `toro::fs` on a host folder shared over virtio-fs (`virtiofsd` on the
//! host, xtask/src/share.rs), mounted at `/share` at boot.
//!
//! Modes (the `mode=` argument):
//! - `rw` (default): every file in the folder read and checked against
//!   its `MANIFEST`; then writes, directories, renames, removals and
//!   truncations from a thread on every CPU at once (the mount's owner
//!   serialises them); changes to the host's own files; std's error kinds
//!   for what the host refuses. The host then checks the folder itself
//!   (xtask/src/disktest.rs).
//! - `read`: the folder read and checked, nothing written.

#![no_std]
#![no_main]

use toro::alloc::format;
use toro::alloc::vec::Vec;
use toro::fs::{self, OpenOptions};
use toro::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use toro::virtio::fs::VirtioFs;
use toro::{cpu, println, thread};
use vm_tests::check;
use vm_tests::fs::{change_host_files, kind_of, pattern, read_tree, tree_worker};

const ROOT: &str = "/share";

/// What the host refuses comes back as std's kinds; the system goes on.
fn errors() -> bool {
    let path = |p: &str| format!("{ROOT}{p}");
    let mut ok = check(kind_of(fs::read(&path("/nope"))) == Some(ErrorKind::NotFound), "missing file: NotFound");
    ok &= check(kind_of(fs::create_dir(&path("/data"))) == Some(ErrorKind::AlreadyExists), "mkdir existing");
    ok &= check(kind_of(fs::remove_dir(&path("/many"))) == Some(ErrorKind::DirectoryNotEmpty), "rmdir non-empty");
    ok &= check(kind_of(fs::read_dir(&path("/hello.txt"))) == Some(ErrorKind::NotADirectory), "readdir of a file");
    ok &= check(kind_of(fs::read(&path("/hello.txt/x"))) == Some(ErrorKind::NotADirectory), "a file as a directory");
    ok &=
        check(kind_of(File::create_new(&path("/hello.txt"))) == Some(ErrorKind::AlreadyExists), "create_new existing");
    ok &= check(
        kind_of(OpenOptions::new().write(true).open(&path("/data"))) == Some(ErrorKind::IsADirectory),
        "open a directory for writing",
    );
    let long = format!("{ROOT}/{}", "x".repeat(300));
    ok &= check(kind_of(fs::write(&long, b"x")) == Some(ErrorKind::InvalidFilename), "a name over 255 bytes");
    ok &= check(kind_of(fs::remove_dir(ROOT)) == Some(ErrorKind::InvalidInput), "the share's root stays");
    ok
}

use toro::fs::File;

/// Reads and writes at offsets, seeks, metadata, a file past one request's size.
fn files() -> bool {
    let path = format!("{ROOT}/scratch.bin");
    let data = pattern(300_000, 77);
    let mut ok = check(fs::write(&path, &data).is_ok(), "write 300 KB (several requests)");
    let mut file = OpenOptions::new().read(true).write(true).open(&path).expect("open scratch");
    ok &= check(file.metadata().map(|m| m.len()).ok() == Some(300_000), "metadata through the handle");
    ok &= check(file.seek(SeekFrom::Start(200_000)).is_ok(), "seek");
    let mut part = [0u8; 1000];
    ok &= check(file.read_exact(&mut part).is_ok() && part[..] == data[200_000..201_000], "read at an offset");
    ok &= check(file.write_all(b"middle").is_ok(), "write at an offset");
    ok &= check(file.seek(SeekFrom::End(0)).ok() == Some(300_000), "seek to the end");
    let mut rest = Vec::new();
    ok &= check(file.read_to_end(&mut rest).ok() == Some(0), "nothing past the end");
    ok &= check(file.set_len(5).is_ok(), "set_len");
    drop(file);
    ok &= check(fs::read(&path).ok().as_deref() == Some(&data[..5]), "truncated");
    let meta = fs::metadata(&format!("{ROOT}/data")).expect("metadata");
    ok &= check(meta.is_dir() && !meta.is_file(), "a directory's metadata");
    let link = fs::symlink_metadata(&format!("{ROOT}/link")).expect("symlink_metadata");
    ok &= check(link.is_symlink(), "symlink_metadata does not follow");
    // Its target, /data/one, was renamed by `change_host_files`.
    ok &= check(kind_of(fs::metadata(&format!("{ROOT}/link"))) == Some(ErrorKind::NotFound), "a dangling link");
    ok &= check(fs::remove_file(&path).is_ok(), "remove scratch");
    ok &= check(fs::symlink("hello.txt", &format!("{ROOT}/made-link")).is_ok(), "symlink");
    ok &= check(fs::read_link(&format!("{ROOT}/made-link")).ok().as_deref() == Some("hello.txt"), "read_link");
    ok &=
        check(fs::metadata(&format!("{ROOT}/made-link")).map(|m| m.len()).ok() == Some(20), "metadata follows a link");
    ok &= check(fs::read(&format!("{ROOT}/made-link")).ok() == Some(pattern(20, 9)), "reading through a link");
    ok
}

fn report(share: &VirtioFs) -> bool {
    let stats = share.stats().expect("stats");
    let on_owner = toro::interrupts::count_on(share.cpu(), share.vector()).unwrap_or(0);
    let elsewhere: u64 = (0..cpu::count())
        .filter(|&c| c != share.cpu())
        .map(|c| toro::interrupts::count_on(c, share.vector()).unwrap_or(0))
        .sum();
    println!(
        "fs_share: fs#0 {} requests, {} forgets, {} interrupts ({on_owner} on cpu {}, {elsewhere} elsewhere)",
        stats.requests,
        stats.forgets,
        stats.interrupts,
        share.cpu()
    );
    check(stats.interrupts > 0 && !stats.left_out && elsewhere == 0, "completions by interrupt, on the owner only")
}

fn read_write(cpus: usize, share: &VirtioFs) -> bool {
    let mut ok = read_tree("fs_share", ROOT);
    let workers: Vec<_> = (0..cpus).map(|c| thread::spawn_on(c, move || tree_worker(ROOT, c))).collect();
    for worker in workers {
        ok &= check(worker.join(), "worker checks");
    }
    println!("fs_share: {cpus} CPUs wrote at once");
    let mut listed: Vec<_> =
        fs::read_dir(&format!("{ROOT}/out")).expect("read_dir").map(|e| e.unwrap().file_name()).collect();
    listed.sort();
    let wanted: Vec<_> = (0..cpus).map(|c| format!("cpu{c}")).collect();
    ok &= check(listed == wanted, "read_dir lists every CPU's directory");
    ok &= change_host_files(ROOT);
    ok &= files();
    ok &= errors();
    println!("fs_share: errors checked, system still running");
    ok &= report(share);
    // statfs goes to virtiofsd, which answers with the host's filesystem.
    match fs::statfs(ROOT) {
        Ok(stats) => {
            ok &= check(stats.block_size > 0 && stats.blocks > 0 && stats.blocks_free <= stats.blocks, "statfs");
            ok &= check(!stats.read_only && stats.name_max >= 255, "statfs of a writable share");
            println!(
                "fs_share: statfs {} blocks of {} bytes, {} free",
                stats.blocks, stats.block_size, stats.blocks_free
            );
        }
        Err(error) => ok &= check(false, &format!("statfs {ROOT}: {error}")),
    }
    ok
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let Some(share) = toro::virtio::fs::devices().first() else {
        println!("FAILED: no virtio-fs device");
        return 1;
    };
    println!("fs_share: fs#0 tag {:?}, owner cpu {}", share.tag(), share.cpu());
    let ok = match toro::system::argument("mode").unwrap_or("rw") {
        "rw" => read_write(cpus, share),
        "read" => read_tree("fs_share", ROOT),
        other => check(false, &format!("unknown mode {other:?}")),
    };
    if ok {
        println!("fs_share: all checks passed");
        0
    } else {
        1
    }
}
