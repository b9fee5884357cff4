//! `toro::fs` on an ext2 image the host made (`mkfs.ext2 -d`, in build.rs),
//! mounted from a RAM disk on the last CPU: every host file read and
//! checked, writes from threads on every CPU at once, the error kinds, a
//! file removed while open, too many open files, sync.

#![no_std]
#![no_main]

use toro::alloc::boxed::Box;
use toro::alloc::format;
use toro::alloc::string::{String, ToString};
use toro::alloc::vec::Vec;
use toro::fs::{self, File, MemoryDevice, OpenOptions};
use toro::io::{ErrorKind, Read, Seek, SeekFrom};
use toro::{cpu, println, thread};
use vm_tests::check;
use vm_tests::fs::{kind_of, pattern, write_worker_files};

static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/fs-test.img"));
static MANIFEST: &str = include_str!(concat!(env!("OUT_DIR"), "/fs-manifest.txt"));

/// What one CPU's thread writes, renames, truncates and removes.
fn worker(cpu: usize) -> bool {
    let dir = format!("/out/cpu{cpu}");
    let mut ok = write_worker_files(&dir, cpu, 12, 1500);
    // Seek and read back in the middle.
    let mut file = File::open(&format!("{dir}/f5")).expect("open f5");
    file.seek(SeekFrom::Start(100)).expect("seek");
    let mut buf = [0u8; 50];
    file.read_exact(&mut buf).expect("read_exact");
    ok &= check(buf[..] == pattern(5 * 1500 + cpu, (cpu * 16 + 5) as u8)[100..150], "seek then read");
    ok
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let owner = cpus - 1;
    let mut ok = true;
    if let Err(e) = fs::mount("/", Box::new(MemoryDevice::new(IMAGE.to_vec())), owner) {
        println!("FAILED: mount: {e}");
        return 1;
    }
    println!("fs: mounted a {} KiB host image, owner CPU {owner}", IMAGE.len() / 1024);

    // Every file the host put in, read in full and compared.
    let mut checked = 0;
    for line in MANIFEST.lines() {
        let mut parts = line.split(' ');
        let (path, len, seed) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let expected = if seed == "text" {
            b"hello from the host\n".to_vec()
        } else {
            pattern(len.parse().unwrap(), seed.parse().unwrap())
        };
        match fs::read(path) {
            Ok(data) => ok &= check(data == expected, path),
            Err(e) => ok &= check(false, &format!("{path}: {e}")),
        }
        checked += 1;
    }
    println!("fs: {checked} host files read and checked");
    ok &= check(fs::read_to_string("/hello.txt").ok().as_deref() == Some("hello from the host\n"), "read_to_string");
    ok &= check(fs::read_dir("/many").map(|d| d.count()).unwrap_or(0) == 120, "read_dir counts 120 entries");
    let meta = fs::metadata("/data/double").expect("metadata");
    ok &= check(meta.is_file() && meta.len() == 400_000, "metadata of a file");
    ok &= check(fs::metadata("/deep/a/b").map(|m| m.is_dir()).unwrap_or(false), "metadata of a directory");

    // Writes from every CPU at once; the owner serialises them.
    let workers: Vec<_> = (0..cpus).map(|c| thread::spawn_on(c, move || worker(c))).collect();
    for worker in workers {
        ok &= check(worker.join(), "worker checks");
    }
    for c in 0..cpus {
        let dir = format!("/out/cpu{c}");
        let mut names: Vec<String> = fs::read_dir(&dir).expect("read_dir").map(|e| e.unwrap().file_name()).collect();
        names.sort();
        ok &= check(names.len() == 11, "each worker's directory: 10 files and sub");
        for k in 3..12usize {
            let mut expected = pattern(k * 1500 + c, (c * 16 + k) as u8);
            if k == 3 {
                expected.extend_from_slice(b"appended");
            }
            ok &= check(fs::read(&format!("{dir}/f{k}")).ok() == Some(expected), "a worker's file reads back");
        }
        ok &= check(fs::read(&format!("{dir}/f2")).map(|d| d.len()).unwrap_or(0) == 10, "truncated file");
        ok &= check(
            fs::read(&format!("{dir}/sub/renamed")).ok() == Some(pattern(c, (c * 16) as u8)),
            "renamed file reads back",
        );
    }
    println!("fs: {cpus} CPUs wrote at once, all read back");

    // Errors of the kinds std gives.
    ok &= check(kind_of(fs::read("/missing")) == Some(ErrorKind::NotFound), "NotFound");
    ok &= check(kind_of(File::create_new("/hello.txt")) == Some(ErrorKind::AlreadyExists), "AlreadyExists");
    ok &= check(kind_of(fs::remove_dir("/deep")) == Some(ErrorKind::DirectoryNotEmpty), "DirectoryNotEmpty");
    ok &= check(kind_of(fs::remove_file("/deep")) == Some(ErrorKind::IsADirectory), "IsADirectory");
    ok &= check(kind_of(fs::read("/hello.txt/x")) == Some(ErrorKind::NotADirectory), "NotADirectory");
    let long = format!("/{}", "n".repeat(300));
    ok &= check(kind_of(File::create(&long)) == Some(ErrorKind::InvalidFilename), "InvalidFilename");
    ok &= check(kind_of(OpenOptions::new().open("/hello.txt")) == Some(ErrorKind::InvalidInput), "no access mode");

    // Too many open files: a clear error, and closing makes room again.
    let mut open = Vec::new();
    let error = loop {
        match File::open("/hello.txt") {
            Ok(file) => open.push(file),
            Err(e) => break e,
        }
    };
    ok &= check(
        open.len() == fs::MAX_OPEN_FILES
            && error.kind() == ErrorKind::QuotaExceeded
            && error.to_string() == "too many open files",
        "open-file limit",
    );
    open.clear();
    ok &= check(File::open("/hello.txt").is_ok(), "files open again after closing");

    // Removed while open: still readable through the handle, freed at close.
    fs::write("/doomed", b"still here").expect("write");
    let mut doomed = File::open("/doomed").expect("open");
    fs::remove_file("/doomed").expect("remove");
    ok &= check(!fs::exists("/doomed").unwrap_or(true), "name gone");
    let mut text = String::new();
    ok &= check(doomed.read_to_string(&mut text).is_ok() && text == "still here", "data stays while open");
    drop(doomed);

    // embedded-io through the same file.
    let mut file = File::create("/embedded").expect("create");
    ok &=
        check(toro::io::embedded::embedded_io::Write::write_all(&mut file, b"via embedded-io").is_ok(), "embedded-io");
    drop(file);
    ok &= check(fs::read("/embedded").ok().as_deref() == Some(&b"via embedded-io"[..]), "embedded-io write reads back");
    // embedded-io Read and Seek: seek to "embedded", read it, seek from the
    // end and from the current position.
    {
        use toro::io::embedded::embedded_io::{Read as ERead, Seek as ESeek, SeekFrom as ESeekFrom};
        let mut file = File::open("/embedded").expect("open");
        let mut word = [0u8; 8];
        ok &= check(
            ESeek::seek(&mut file, ESeekFrom::Start(4)).is_ok_and(|at| at == 4),
            "embedded-io seek from the start",
        );
        ok &= check(
            ERead::read_exact(&mut file, &mut word).is_ok() && &word == b"embedded",
            "embedded-io read after seek",
        );
        ok &=
            check(ESeek::seek(&mut file, ESeekFrom::End(-2)).is_ok_and(|at| at == 13), "embedded-io seek from the end");
        let mut tail = [0u8; 4];
        let short = ERead::read(&mut file, &mut tail);
        ok &= check(short.is_ok_and(|n| n == 2) && &tail[..2] == b"io", "embedded-io short read at the end");
        ok &= check(ERead::read(&mut file, &mut tail).is_ok_and(|n| n == 0), "embedded-io read at the end is 0");
        ok &= check(ESeek::seek(&mut file, ESeekFrom::Current(-15)).is_ok_and(|at| at == 0), "embedded-io seek back");
    }

    // remove_dir_all over a worker's tree.
    ok &= check(fs::remove_dir_all("/out/cpu0").is_ok() && !fs::exists("/out/cpu0").unwrap_or(true), "remove_dir_all");

    ok &= check(fs::sync().is_ok(), "sync");
    if ok {
        println!("fs: all checks passed");
        0
    } else {
        1
    }
}
