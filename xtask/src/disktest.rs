//! Disks for in-VM tests (`tests/vm/src/bin/fs_disk.rs`): the folder and
//! ext2 image a test boots with (`mkfs.ext2 -d`), and the host's checks
//! of the image after the VM exited (`debugfs`, `e2fsck -fn`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::disk::{image_from_folder_with, Disk};
use crate::setup::e2fsprogs;

/// A test's disk: made before the boot in a folder of its own, checked after a clean exit.
#[derive(Clone, Copy)]
pub struct DiskTest {
    /// Makes the image in the folder given.
    pub prepare: fn(&Path) -> Result<Disk>,
    /// Problems found in the image after the VM exited (the test's CPU count given).
    pub check: fn(&Path, u32) -> Result<Vec<String>>,
}

/// A writable disk; afterwards every change the guest made reads back on the host.
pub const READ_WRITE: DiskTest = DiskTest { prepare: prepare_read_write, check: check_read_write };
/// As [`READ_WRITE`] on a disk with 4 KiB logical sectors (`blk_size` 4096).
pub const READ_WRITE_4K_SECTORS: DiskTest = DiskTest { prepare: prepare_4k_sectors, check: check_read_write };
/// A writable disk for fs_disk's `mode=quick`; afterwards `/quick.txt` is there and the image clean.
pub const QUICK: DiskTest = DiskTest { prepare: prepare_read_write, check: check_quick };
/// A writable disk for fs_disk's `mode=sync-kill`; after the kill what
/// the guest synced is there and the image clean.
pub const SYNC_KILL: DiskTest = DiskTest { prepare: prepare_read_write, check: check_synced };
/// A writable disk for fs_disk's `mode=open-limit`; afterwards the file
/// written after the limit is there, the refused create and truncation
/// left nothing, and the image is clean.
pub const OPEN_LIMIT: DiskTest = DiskTest { prepare: prepare_read_write, check: check_open_limit };
/// A small disk (8 MiB, 1 KiB blocks) for fs_disk's `mode=full`;
/// afterwards what was written after the removal is there, the image clean.
pub const FULL: DiskTest = DiskTest { prepare: prepare_full, check: check_full };
/// An image cut to half its size; afterwards it is unchanged.
pub const TRUNCATED: DiskTest = DiskTest { prepare: prepare_truncated, check: check_unchanged };
/// A read-only disk (QEMU `readonly=on`); afterwards it is unchanged.
pub const READ_ONLY: DiskTest = DiskTest { prepare: prepare_read_only, check: check_unchanged };
/// An image with a damaged superblock; afterwards it is unchanged.
pub const CORRUPT: DiskTest = DiskTest { prepare: prepare_corrupt, check: check_unchanged };

/// The bytes of a test file (the guest's formula, fs_disk.rs).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed).collect()
}

/// The host's files: path, length, seed.
fn files() -> Vec<(String, usize, u8)> {
    let mut files: Vec<(String, usize, u8)> = [
        ("/hello.txt", 20, 9),
        ("/data/empty", 0, 1),
        ("/data/one", 1, 2),
        ("/data/block", 1024, 3),
        ("/data/indirect", 50_000, 4),
        ("/data/double", 400_000, 5),
        ("/data/big", 3_000_000, 7),
        ("/deep/a/b/c/leaf", 77, 6),
        ("/with space/file", 10, 8),
    ]
    .iter()
    .map(|&(path, len, seed)| (path.to_string(), len, seed))
    .collect();
    files.extend((0..60).map(|i| (format!("/many/entry-{i:03}"), i * 5, i as u8)));
    files
}

/// Writes the tree and its `MANIFEST` under `dir/tree`.
pub fn make_tree(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    let mut manifest = String::new();
    for (path, len, seed) in files() {
        let full = tree.join(&path[1..]);
        std::fs::create_dir_all(full.parent().expect("a parent"))?;
        std::fs::write(&full, pattern(len, seed))?;
        manifest.push_str(&format!("{path} {len} {seed}\n"));
    }
    std::fs::write(tree.join("MANIFEST"), manifest)?;
    std::os::unix::fs::symlink("data/one", tree.join("link"))?;
    Ok(tree)
}

fn prepare(dir: &Path, size_mib: u64, mkfs_arguments: &[&str]) -> Result<PathBuf> {
    let tree = make_tree(dir)?;
    let image = dir.join("disk.img");
    image_from_folder_with(&tree, &image, Some(size_mib << 20), mkfs_arguments)?;
    Ok(image)
}

fn prepare_read_write(dir: &Path) -> Result<Disk> {
    Ok(Disk { image: prepare(dir, 32, &["-b", "4096"])?, read_only: false, sector_size: None })
}

fn prepare_4k_sectors(dir: &Path) -> Result<Disk> {
    Ok(Disk { sector_size: Some(4096), ..prepare_read_write(dir)? })
}

/// Keeps a copy to compare with afterwards.
fn keep_original(image: &Path) -> Result<()> {
    std::fs::copy(image, image.with_extension("orig")).context("copying the image")?;
    Ok(())
}

fn prepare_read_only(dir: &Path) -> Result<Disk> {
    let image = prepare(dir, 16, &["-b", "1024"])?;
    keep_original(&image)?;
    Ok(Disk { image, read_only: true, sector_size: None })
}

fn prepare_full(dir: &Path) -> Result<Disk> {
    Ok(Disk { image: prepare(dir, 8, &["-b", "1024"])?, read_only: false, sector_size: None })
}

/// A 16 MiB image cut to 8 MiB (as a copy that stopped half-way).
fn prepare_truncated(dir: &Path) -> Result<Disk> {
    let image = prepare(dir, 16, &["-b", "1024"])?;
    std::fs::OpenOptions::new().write(true).open(&image)?.set_len(8 << 20)?;
    keep_original(&image)?;
    Ok(Disk { image, read_only: false, sector_size: None })
}

/// The superblock's magic (byte 1024 + 56) zeroed.
fn prepare_corrupt(dir: &Path) -> Result<Disk> {
    let image = prepare(dir, 16, &[])?;
    let mut bytes = std::fs::read(&image)?;
    bytes[1024 + 56..1024 + 58].fill(0);
    std::fs::write(&image, bytes)?;
    keep_original(&image)?;
    Ok(Disk { image, read_only: false, sector_size: None })
}

fn debugfs(image: &Path, request: &str) -> Result<(Vec<u8>, String)> {
    let program = e2fsprogs("debugfs").context("debugfs is missing: install e2fsprogs")?;
    let output = Command::new(program).args(["-R", request]).arg(image).output().context("running debugfs")?;
    Ok((output.stdout, String::from_utf8_lossy(&output.stderr).into_owned()))
}

/// `e2fsck -fn`'s complaint, if it has one.
fn e2fsck(image: &Path) -> Result<Option<String>> {
    let program = e2fsprogs("e2fsck").context("e2fsck is missing: install e2fsprogs")?;
    let output = Command::new(program).arg("-fn").arg(image).output().context("running e2fsck")?;
    Ok((!output.status.success()).then(|| {
        format!(
            "e2fsck -fn {} exited with {}: {}",
            image.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout).lines().take(12).collect::<Vec<_>>().join(" | ")
        )
    }))
}

/// The changes fs_disk and fs_share make (`tree_worker` on every CPU,
/// `change_host_files`; tests/vm/src/lib.rs), as the host sees them:
/// `present(path, bytes)` and `absent(path)` say what is wrong, if anything.
/// A check that a host path holds these bytes: what is wrong, if anything.
type PresentCheck<'a> = &'a mut dyn FnMut(&str, &[u8]) -> Result<Option<String>>;

fn check_changes(
    cpus: u32,
    present: PresentCheck<'_>,
    absent: &mut dyn FnMut(&str) -> Result<Option<String>>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut expect = |path: &str, wanted: Option<&[u8]>| -> Result<()> {
        problems.extend(match wanted {
            Some(wanted) => present(path, wanted)?,
            None => absent(path)?,
        });
        Ok(())
    };
    for cpu in 0..cpus as usize {
        let dir = format!("/out/cpu{cpu}");
        let file = |k: usize| pattern(k * 3000 + cpu, (cpu * 16 + k) as u8);
        for k in 3..8 {
            let mut wanted = file(k);
            if k == 3 {
                wanted.extend_from_slice(b"appended");
            }
            expect(&format!("{dir}/f{k}"), Some(&wanted))?;
        }
        expect(&format!("{dir}/f2"), Some(&file(2)[..10]))?;
        expect(&format!("{dir}/sub/renamed"), Some(&file(0)))?;
        expect(&format!("{dir}/big"), Some(&pattern(600_000, cpu as u8)))?;
        for gone in ["f0", "f1", "gone"] {
            expect(&format!("{dir}/{gone}"), None)?;
        }
    }
    expect("/data/one", None)?;
    expect("/data/one-moved", Some(&pattern(1, 2)))?;
    expect("/data/block", None)?;
    expect("/data/double", Some(&pattern(400_000, 5)[..1000]))?;
    expect("/data/big", Some(&pattern(3_000_000, 7)))?;
    expect("/after-sync.txt", Some(b"written after the last sync\n"))?;
    Ok(problems)
}

fn check_read_write(image: &Path, cpus: u32) -> Result<Vec<String>> {
    let mut present = |path: &str, wanted: &[u8]| -> Result<Option<String>> {
        let (data, errors) = debugfs(image, &format!("cat \"{path}\""))?;
        Ok((data != wanted).then(|| {
            format!("{path} on the host: {} bytes, expected {} ({})", data.len(), wanted.len(), errors.trim())
        }))
    };
    let mut absent = |path: &str| -> Result<Option<String>> {
        let (_, errors) = debugfs(image, &format!("stat \"{path}\""))?;
        Ok((!errors.contains("not found")).then(|| format!("{path} is still there on the host")))
    };
    let mut problems = check_changes(cpus, &mut present, &mut absent)?;
    problems.extend(check_over_4_gib(image)?);
    problems.extend(e2fsck(image)?);
    Ok(problems)
}

/// fs_disk's `/over-4-gib`: 5 GiB + 20 bytes long, its data in the block
/// 5 GiB in (found with debugfs `bmap`, read from the image).
fn check_over_4_gib(image: &Path) -> Result<Option<String>> {
    const AT: u64 = 5 << 30;
    const DATA: &[u8] = b"written beyond 4 GiB";
    let (stat, errors) = debugfs(image, "stat /over-4-gib")?;
    let stat = String::from_utf8_lossy(&stat);
    let size = stat.split("Size: ").nth(1).and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    if size != Some(AT + DATA.len() as u64) {
        return Ok(Some(format!("/over-4-gib on the host: size {size:?}, expected {} ({})", AT + 20, errors.trim())));
    }
    // The disk tests' images have 4 KiB blocks.
    let (bmap, errors) = debugfs(image, &format!("bmap /over-4-gib {}", AT / 4096))?;
    let Some(block) = String::from_utf8_lossy(&bmap).trim().parse::<u64>().ok().filter(|&b| b != 0) else {
        return Ok(Some(format!("/over-4-gib: no block 5 GiB in ({})", errors.trim())));
    };
    let mut data = vec![0u8; DATA.len()];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(image)?, &mut data, block * 4096)?;
    Ok((data != DATA).then(|| format!("/over-4-gib: block {block} holds {data:?}")))
}

/// A test's shared folder (virtio-fs): made before the boot, checked after it.
#[derive(Clone, Copy)]
pub struct ShareTest {
    /// Makes the folder under the directory given; returns it.
    pub prepare: fn(&Path) -> Result<PathBuf>,
    /// Problems found in the folder after the VM exited (the test's CPU count given).
    pub check: fn(&Path, u32) -> Result<Vec<String>>,
}

/// fs_share's folder: the disk tests' tree; afterwards every change the guest made is in it.
pub const SHARE_READ_WRITE: ShareTest = ShareTest { prepare: make_tree, check: check_share };
/// fs_share's `mode=read`: the tree; afterwards unchanged.
pub const SHARE_READ: ShareTest = ShareTest { prepare: make_tree, check: check_share_unchanged };

fn check_share(folder: &Path, cpus: u32) -> Result<Vec<String>> {
    let host = |path: &str| folder.join(&path[1..]);
    let mut present = |path: &str, wanted: &[u8]| -> Result<Option<String>> {
        Ok(match std::fs::read(host(path)) {
            Ok(data) if data == wanted => None,
            Ok(data) => Some(format!("{path} in the folder: {} bytes, expected {}", data.len(), wanted.len())),
            Err(error) => Some(format!("{path} in the folder: {error}")),
        })
    };
    let mut absent = |path: &str| -> Result<Option<String>> {
        Ok(host(path).symlink_metadata().is_ok().then(|| format!("{path} is still in the folder")))
    };
    let mut problems = check_changes(cpus, &mut present, &mut absent)?;
    match std::fs::read_link(folder.join("made-link")) {
        Ok(target) if target == Path::new("hello.txt") => {}
        other => problems.push(format!("made-link in the folder: {other:?}")),
    }
    if folder.join("scratch.bin").exists() {
        problems.push("scratch.bin is still in the folder".into());
    }
    Ok(problems)
}

fn check_share_unchanged(folder: &Path, _cpus: u32) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (path, len, seed) in files() {
        if std::fs::read(folder.join(&path[1..])).ok() != Some(pattern(len, seed)) {
            problems.push(format!("{path} changed in the folder"));
        }
    }
    Ok(problems)
}

fn check_quick(image: &Path, _cpus: u32) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let (data, errors) = debugfs(image, "cat /quick.txt")?;
    if data != pattern(5000, 42) {
        problems.push(format!("/quick.txt on the host: {} bytes, expected 5000 ({})", data.len(), errors.trim()));
    }
    problems.extend(e2fsck(image)?);
    Ok(problems)
}

/// Problems on the image: a file of `present` that does not read back
/// with its bytes, one of `absent` that is there, `e2fsck -fn`'s complaint.
fn check_files(image: &Path, present: &[(&str, Vec<u8>)], absent: &[(&str, &str)]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (path, bytes) in present {
        let (data, errors) = debugfs(image, &format!("cat {path}"))?;
        if data != *bytes {
            problems.push(format!(
                "{path} on the host: {} bytes, expected {} ({})",
                data.len(),
                bytes.len(),
                errors.trim()
            ));
        }
    }
    for (path, why) in absent {
        let (_, errors) = debugfs(image, &format!("stat {path}"))?;
        if !errors.contains("not found") {
            problems.push(format!("{path}, {why}, is on the image ({})", errors.trim()));
        }
    }
    problems.extend(e2fsck(image)?);
    Ok(problems)
}

fn check_open_limit(image: &Path, _cpus: u32) -> Result<Vec<String>> {
    let present = [("/limit-after", pattern(3000, 11)), ("/data/block", pattern(1024, 3))];
    check_files(image, &present, &[("/limit-new", "refused at the open-file limit")])
}

fn check_full(image: &Path, _cpus: u32) -> Result<Vec<String>> {
    let present = [
        ("/after-full", pattern(100_000, 99)),
        ("/fill/f-1", pattern(256 * 1024, 1)),
        ("/data/big", pattern(3_000_000, 7)),
    ];
    check_files(image, &present, &[("/fill/f-0", "removed")])
}

/// What fs_disk's `mode=sync-kill` synced before the VM was killed.
fn check_synced(image: &Path, _cpus: u32) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let expected: [(&str, Vec<u8>); 5] = [
        ("/synced/renamed", pattern(100, 1)),
        ("/synced/indirect", pattern(70_000, 2)),
        ("/synced/big", pattern(3 << 20, 3)),
        ("/synced/last", pattern(10_000, 4)),
        ("/hello.txt", pattern(20, 9)[..7].to_vec()),
    ];
    for (path, bytes) in expected {
        let (data, errors) = debugfs(image, &format!("cat {path}"))?;
        if data != bytes {
            problems.push(format!(
                "{path} after the kill: {} bytes, not the {} synced ({})",
                data.len(),
                bytes.len(),
                errors.trim()
            ));
        }
    }
    for gone in ["/synced/small", "/synced/doomed"] {
        let (_, errors) = debugfs(image, &format!("stat {gone}"))?;
        if !errors.contains("not found") {
            problems.push(format!("{gone} is still there after the kill ({})", errors.trim()));
        }
    }
    problems.extend(e2fsck(image)?);
    Ok(problems)
}

fn check_unchanged(image: &Path, _cpus: u32) -> Result<Vec<String>> {
    let before = std::fs::read(image.with_extension("orig"))?;
    let after = std::fs::read(image)?;
    Ok(if before == after { Vec::new() } else { vec![format!("{} changed on the host", image.display())] })
}

/// The web server's files, from a tree with a `www` root: what curl checks.
fn make_web_tree(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(dir);
    let www = tree.join("www");
    std::fs::create_dir_all(www.join("sub"))?;
    std::fs::create_dir_all(www.join("site"))?;
    std::fs::write(tree.join("secret.txt"), b"outside the web root\n")?;
    std::fs::write(www.join("hello.txt"), b"hello over http\n")?;
    std::fs::write(www.join("sub/a.txt"), b"file a\n")?;
    std::fs::write(www.join("space name.html"), b"<p>spaced</p>\n")?;
    std::fs::write(www.join("site/index.html"), b"<h1>site index</h1>\n")?;
    std::fs::write(www.join("big.bin"), pattern(3_000_000, 11))?;
    // Larger than the guest's memory, sparse (data at both ends only), so
    // the image stays small: serving it must not take its size in memory.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut huge = std::fs::File::create(www.join("huge.bin"))?;
        huge.write_all(&pattern(HUGE_HEAD, 13))?;
        huge.seek(SeekFrom::Start(HUGE_BYTES - HUGE_TAIL.len() as u64))?;
        huge.write_all(HUGE_TAIL)?;
    }
    std::os::unix::fs::symlink("sub/a.txt", www.join("ok"))?;
    std::os::unix::fs::symlink("../secret.txt", www.join("escape"))?;
    std::os::unix::fs::symlink("/secret.txt", www.join("absolute"))?;
    Ok(tree)
}

/// `huge.bin` of the web tree: its size (above the guest's 256 MiB), the
/// pattern bytes it starts with, and its last bytes.
const HUGE_BYTES: u64 = 300 << 20;
const HUGE_HEAD: usize = 4 << 20;
const HUGE_TAIL: &[u8] = b"the end of a file larger than the guest's memory\n";

/// The first `len` bytes of `path` from the server (curl is stopped after
/// them), and whether curl stopped on its own before that.
fn get_prefix(port: u16, path: &str, len: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut curl = Command::new("curl")
        .args(["-s", "-m", "60"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running curl")?;
    let mut out = Vec::new();
    let taken = curl.stdout.take().expect("stdout is piped").take(len as u64).read_to_end(&mut out);
    let _ = curl.kill();
    let _ = curl.wait();
    taken?;
    Ok(out)
}

/// From now until `path` is first answered 200 (or `wait` ends): a new
/// connection every few milliseconds, each sending one `GET path` and
/// reading its status (0: no answer). The guest takes the ones that reach
/// it from the moment its listener is bound, while it still starts up, so
/// a server that answers before its files are decided is caught.
fn early_requests(port: u16, path: &str, wait: std::time::Duration) -> std::thread::JoinHandle<Vec<u32>> {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        let done = Arc::new(AtomicBool::new(false));
        let started = std::time::Instant::now();
        let mut attempts = Vec::new();
        while !done.load(Ordering::Relaxed) && started.elapsed() < wait && attempts.len() < 3000 {
            let (done, request) = (done.clone(), request.clone());
            // Small stacks: up to a few thousand wait at once.
            let attempt = std::thread::Builder::new().stack_size(64 << 10).spawn(move || {
                let status = (|| {
                    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).ok()?;
                    stream.write_all(request.as_bytes()).ok()?;
                    let mut head = [0u8; 12];
                    stream.read_exact(&mut head).ok()?;
                    std::str::from_utf8(&head[9..12]).ok()?.parse::<u32>().ok()
                })()
                .unwrap_or(0);
                if status == 200 {
                    done.store(true, Ordering::Relaxed);
                }
                status
            });
            match attempt {
                Ok(attempt) => attempts.push(attempt),
                Err(_) => break,
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        attempts.into_iter().map(|attempt| attempt.join().unwrap_or(0)).collect()
    })
}

/// The machines and CPU counts the web server's file checks run with: from
/// the disk on each, from a shared folder on microvm with 2 CPUs.
pub const WEBSERVER_FILES: [(bool, crate::qemu::Machine, u32); 7] = {
    use crate::qemu::Machine::{Microvm, Q35};
    [
        (false, Microvm, 1),
        (false, Microvm, 2),
        (false, Microvm, 4),
        (false, Q35, 1),
        (false, Q35, 2),
        (false, Q35, 4),
        (true, Microvm, 2),
    ]
};

/// A file check's test name: `webserver-files[-share]-MACHINE-CPUS`.
pub fn webserver_files_name(share: bool, machine: crate::qemu::Machine, cpus: u32) -> String {
    let machine = match machine {
        crate::qemu::Machine::Q35 => "q35",
        crate::qemu::Machine::Microvm => "microvm",
    };
    format!("webserver-files{}-{machine}-{cpus}", if share { "-share" } else { "" })
}

/// `cargo xtask test`'s `webserver-files` checks: the web server booted
/// with a disk (`webroot=/www`), or with the same tree shared over
/// virtio-fs (`share`: `webroot=/share/www`), on QEMU user networking;
/// curl fetches files, conditional and range requests, an index page, and
/// escape attempts.
pub fn webserver_files_test(
    image: &Path,
    accel: crate::accel::Accel,
    share: bool,
    machine: crate::qemu::Machine,
    cpus: u32,
) -> Result<(bool, String)> {
    const BOOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let name = webserver_files_name(share, machine, cpus);
    let dir = crate::build::workspace_root().join("target").join("vm-disks").join(&name);
    let tree = make_web_tree(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config = crate::qemu::VmConfig::new(image.to_path_buf(), accel);
    config.machine = machine;
    config.cpus = cpus;
    config.memory_mib = 256;
    config.network = Some(crate::qemu::UserNetwork { tcp_forwards: vec![(port, 80)] });
    // Kept until the VM ends.
    let mut daemon = None;
    if share {
        let started = crate::share::start(&tree, &dir, &crate::share::tag(0))?;
        config.shares.push(started.share.clone());
        config.command_line = "webroot=/share/www".into();
        daemon = Some(started);
    } else {
        let disk_image = dir.join("disk.img");
        image_from_folder_with(&tree, &disk_image, Some(16 << 20), &[])?;
        config.command_line = "webroot=/www".into();
        config.disks = vec![Disk::new(disk_image)];
    }
    let mut child = config
        .command()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting QEMU")?;
    let (lines, reader, errors) = crate::qemu::read_output(&mut child);
    // (status, headers, body) of one request.
    let get = |path: &str, extra: &[&str]| -> Result<(u32, String, Vec<u8>)> {
        let headers_file = dir.join("headers.txt");
        let output = Command::new("curl")
            .args(["-s", "-m", "20", "--path-as-is", "-D"])
            .arg(&headers_file)
            .args(extra)
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .context("running curl")?;
        let headers = std::fs::read_to_string(&headers_file).unwrap_or_default();
        let status = headers.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let _ = std::fs::remove_file(&headers_file);
        Ok((status, headers, output.stdout))
    };
    let started = std::time::Instant::now();
    let mut problems = Vec::new();
    let mut hello = (0, String::new(), Vec::new());
    // Requests from the moment QEMU starts: whichever the guest answers
    // first, none may be answered as if no files were served.
    let early = early_requests(port, "/hello.txt", BOOT_WAIT);
    while started.elapsed() < BOOT_WAIT {
        hello = get("/hello.txt", &[])?;
        if hello.0 != 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let header = |headers: &str, name: &str| -> String {
        let value = headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        });
        value.unwrap_or_default()
    };
    let has = |headers: &str, text: &str| headers.to_ascii_lowercase().contains(text);
    let mut expect = |what: &str, ok: bool, got: &dyn std::fmt::Debug| {
        if !ok {
            problems.push(format!("{what}: got {got:?}"));
        }
    };
    expect(
        "GET /hello.txt",
        hello.0 == 200 && hello.2 == b"hello over http\n" && has(&hello.1, "content-type: text/plain"),
        &hello,
    );
    let etag = header(&hello.1, "etag");
    let modified = header(&hello.1, "last-modified");
    expect("ETag and Last-Modified", !etag.is_empty() && !modified.is_empty(), &hello.1);
    let tag_header = format!("If-None-Match: {etag}");
    let since_header = format!("If-Modified-Since: {modified}");
    let conditional = get("/hello.txt", &["-H", &tag_header])?;
    expect("If-None-Match -> 304", conditional.0 == 304 && conditional.2.is_empty(), &conditional);
    let since = get("/hello.txt", &["-H", &since_header])?;
    expect("If-Modified-Since -> 304", since.0 == 304, &since);
    let old = get("/hello.txt", &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT"])?;
    expect("an old If-Modified-Since -> 200", old.0 == 200, &old.0);
    let big = pattern(3_000_000, 11);
    let partial = get("/big.bin", &["-r", "1000000-1000999"])?;
    expect(
        "Range -> 206",
        partial.0 == 206
            && partial.2 == big[1_000_000..1_001_000]
            && has(&partial.1, "content-range: bytes 1000000-1000999/3000000"),
        &(partial.0, partial.2.len(), &partial.1),
    );
    let beyond = get("/big.bin", &["-r", "5000000-"])?;
    expect("Range past the end -> 416", beyond.0 == 416 && has(&beyond.1, "bytes */3000000"), &beyond.0);
    let whole = get("/big.bin", &[])?;
    expect("GET /big.bin", whole.0 == 200 && whole.2 == big, &(whole.0, whole.2.len()));
    let big_tag = format!("If-Range: {}", header(&whole.1, "etag"));
    let current = get("/big.bin", &["-r", "10-19", "-H", &big_tag])?;
    expect("If-Range with the current tag -> 206", current.0 == 206 && current.2 == big[10..20], &current.0);
    let stale = get("/big.bin", &["-r", "10-19", "-H", "If-Range: \"stale\""])?;
    expect("If-Range with a stale tag -> 200, all of it", stale.0 == 200 && stale.2 == big, &(stale.0, stale.2.len()));
    // A file larger than the guest's memory: HEAD, the last bytes, and
    // the first 4 MiB of a GET (curl stops there: the server must notice
    // and go on serving).
    let head = get("/huge.bin", &["-I"])?;
    expect(
        "HEAD of a file larger than memory",
        head.0 == 200 && header(&head.1, "content-length") == HUGE_BYTES.to_string(),
        &head.1,
    );
    let tail = get("/huge.bin", &["-r", &format!("-{}", HUGE_TAIL.len())])?;
    expect("the last bytes of a file larger than memory", tail.0 == 206 && tail.2 == HUGE_TAIL, &tail.0);
    let prefix = get_prefix(port, "/huge.bin", HUGE_HEAD)?;
    expect("the first 4 MiB of a GET of a file larger than memory", prefix == pattern(HUGE_HEAD, 13), &prefix.len());
    let index = get("/", &[])?;
    let listing = String::from_utf8_lossy(&index.2).into_owned();
    expect(
        "index page",
        index.0 == 200
            && listing.contains("href=\"hello.txt\"")
            && listing.contains("href=\"sub/\"")
            && listing.contains("href=\"space%20name.html\""),
        &listing,
    );
    let site = get("/site/", &[])?;
    expect("index.html of a directory", site.0 == 200 && site.2 == b"<h1>site index</h1>\n", &site.0);
    let redirect = get("/sub", &[])?;
    expect(
        "a directory without its slash -> 301",
        redirect.0 == 301 && has(&redirect.1, "location: /sub/"),
        &redirect.1,
    );
    let spaced = get("/space%20name.html", &[])?;
    expect("an encoded name", spaced.0 == 200 && has(&spaced.1, "content-type: text/html"), &spaced.0);
    let link = get("/ok", &[])?;
    expect("a link inside the root", link.0 == 200 && link.2 == b"file a\n", &link.0);
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/sub%2F..%2F..%2Fsecret.txt", "/escape", "/absolute"] {
        let refused = get(path, &[])?;
        expect(&format!("GET {path} refused"), refused.0 == 403 && !refused.2.starts_with(b"outside"), &refused.0);
    }
    let missing = get("/nope.txt", &[])?;
    expect("404", missing.0 == 404, &missing.0);
    let early = early.join().unwrap_or_default();
    let answered: Vec<u32> = early.iter().copied().filter(|&status| status != 0).collect();
    expect(
        "requests sent while the guest starts (each 200, or no answer)",
        !answered.is_empty() && answered.iter().all(|&status| status == 200),
        &answered,
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let _ = errors.join();
    drop(daemon);
    let output: Vec<String> = lines.try_iter().map(|(_, line)| line).collect();
    Ok(if problems.is_empty() {
        (
            true,
            format!(
                "ok (port {port}: {} of {} early requests answered, all 200; 200, 304 x2, 206, 416, If-Range x2, a 300 MiB file, index, 301, links, 5 escapes refused, 404)",
                answered.len(),
                early.len()
            ),
        )
    } else {
        (false, format!("FAILED: {}; guest printed: {}", problems.join("; "), output.join(" | ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_catch_a_guest_that_wrote_nothing_and_a_changed_image() {
        let dir = std::env::temp_dir().join(format!("toro-disktest-{}", std::process::id()));
        let disk = prepare_read_write(&dir).unwrap();
        // Nothing written: every expected change is reported, the image is clean.
        let problems = check_read_write(&disk.image, 1).unwrap();
        assert!(problems.iter().any(|p| p.contains("/out/cpu0/f3 on the host: 0 bytes")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("/data/one is still there")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("e2fsck")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("/data/big")), "untouched host file reads back: {problems:?}");
        let disk = prepare_corrupt(&dir.join("corrupt")).unwrap();
        assert!(check_unchanged(&disk.image, 1).unwrap().is_empty());
        std::fs::write(&disk.image, b"changed").unwrap();
        assert_eq!(check_unchanged(&disk.image, 1).unwrap().len(), 1);
        // The full disk's and the open limit's checks on an image the guest never touched.
        let disk = prepare_full(&dir.join("full")).unwrap();
        let problems = check_full(&disk.image, 1).unwrap();
        assert!(problems.iter().any(|p| p.starts_with("/after-full on the host: 0 bytes")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("/data/big") || p.contains("e2fsck")), "{problems:?}");
        let problems = check_open_limit(&disk.image, 1).unwrap();
        assert!(problems.iter().any(|p| p.starts_with("/limit-after on the host: 0 bytes")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("/data/block") || p.contains("/limit-new")), "{problems:?}");
        let disk = prepare_truncated(&dir.join("truncated")).unwrap();
        assert_eq!(std::fs::metadata(&disk.image).unwrap().len(), 8 << 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_share_checks_catch_a_guest_that_wrote_nothing_and_a_changed_folder() {
        let dir = std::env::temp_dir().join(format!("toro-sharetest-{}", std::process::id()));
        let folder = make_tree(&dir).unwrap();
        assert!(check_share_unchanged(&folder, 2).unwrap().is_empty());
        let problems = check_share(&folder, 2).unwrap();
        assert!(problems.iter().any(|p| p.contains("/out/cpu1/f3 in the folder")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("/data/one is still in the folder")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("made-link")), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("/data/big")), "untouched host file reads back: {problems:?}");
        std::fs::write(folder.join("data/big"), b"changed").unwrap();
        assert_eq!(check_share_unchanged(&folder, 2).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
