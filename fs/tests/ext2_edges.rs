//! ext2 cases the host's tools make on purpose: htree-indexed directories
//! (`e2fsck -D`), names that are not UTF-8, a directory loop and a block
//! pointer outside the disk (written with `debugfs -w`). Each gives the
//! right answer or a clear error; none panics or hangs.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_clean, debugfs, mkfs, scratch, tool, FileDevice};
use toro_fs::ext2::{Ext2, Options};
use toro_io::ErrorKind;

/// The `EXT2_INDEX_FL` inode flag: the directory has an htree index.
const INDEX_FLAG: u32 = 0x1000;

fn mount(image: &Path) -> Ext2<FileDevice> {
    Ext2::mount_with(FileDevice::open(image), Options { clock: || 1_700_000_000, ..Options::default() }).unwrap()
}

/// `debugfs -w -R request`: for the corruptions below.
fn debugfs_write(image: &Path, request: &str) {
    let output = Command::new(tool("debugfs")).args(["-w", "-R", request]).arg(image).output().unwrap();
    assert!(output.status.success(), "debugfs -w {request}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The inode flags `debugfs stat` prints ("Flags: 0x...").
fn inode_flags(image: &Path, path: &str) -> u32 {
    let stat = String::from_utf8_lossy(&debugfs(image, &format!("stat {path}"))).into_owned();
    let flags = stat.split("Flags: 0x").nth(1).unwrap_or_else(|| panic!("no flags in: {stat}"));
    u32::from_str_radix(flags.split_whitespace().next().unwrap(), 16).unwrap()
}

/// Runs `f` on another thread and fails the test if it does not end in
/// `limit` (a loop on disk must be an error, not a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || done.send(f()).unwrap());
    result.recv_timeout(limit).expect("did not end: a loop on disk was followed forever")
}

#[test]
fn htree_directories_read_as_linear_and_stay_consistent_after_changes() {
    let dir = scratch("htree");
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("many")).unwrap();
    for i in 0..400 {
        fs::write(tree.join(format!("many/entry-{i:03}-with-a-name-long-enough-to-fill-blocks")), format!("{i}"))
            .unwrap();
    }
    let image = dir.join("image");
    mkfs(&image, 16 << 20, 1024, Some(&tree), &["-O", "dir_index"]);
    // e2fsck -D builds the index of every directory of more than a block.
    let output = Command::new(tool("e2fsck")).arg("-fyD").arg(&image).output().unwrap();
    assert!(output.status.code().is_some_and(|code| code <= 1), "e2fsck -fyD: {output:?}");
    assert_ne!(inode_flags(&image, "/many") & INDEX_FLAG, 0, "e2fsck -D made no htree: the test tests nothing");

    let mut ext2 = mount(&image);
    let mut names: Vec<String> = ext2
        .read_dir("/many")
        .unwrap()
        .into_iter()
        .map(|entry| entry.name_lossy())
        .filter(|name| name != "." && name != "..")
        .collect();
    names.sort();
    assert_eq!(names.len(), 400);
    for i in [0, 199, 399] {
        let path = format!("/many/entry-{i:03}-with-a-name-long-enough-to-fill-blocks");
        let ino = ext2.resolve(&path).unwrap();
        let mut data = vec![0u8; 8];
        let len = ext2.read_at(ino, 0, &mut data).unwrap();
        assert_eq!(&data[..len], format!("{i}").as_bytes());
    }
    // Changing an indexed directory: the index is dropped (it is read as
    // linear and written as linear), so e2fsck must find it clean.
    let ino = ext2.create("/many/added-by-toro", 0o644).unwrap();
    ext2.write_at(ino, 0, b"added").unwrap();
    ext2.remove_file("/many/entry-007-with-a-name-long-enough-to-fill-blocks").unwrap();
    ext2.sync().unwrap();
    drop(ext2.unmount().unwrap());
    assert_clean(&image);
    // Live entries only: debugfs lists a removed entry that opens its block
    // with inode 0 (ext2 clears the first entry of a block rather than
    // merging it; where entry-007 falls depends on mke2fs's random hash
    // seed, so this failed 1 run in many).
    let listing = String::from_utf8_lossy(&debugfs(&image, "ls -l /many")).into_owned();
    let listing: String = listing
        .lines()
        .filter(|line| line.split_whitespace().next() != Some("0"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(listing.contains("added-by-toro"), "{listing}");
    assert!(!listing.contains("entry-007-"), "{listing}");
    assert!(listing.contains("entry-008-"), "{listing}");
}

#[test]
fn names_that_are_not_utf8_are_read_and_found_by_their_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("latin1");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    // "café.txt" in Latin-1: 0xe9 alone is not UTF-8.
    let name: &[u8] = b"caf\xe9.txt";
    fs::write(tree.join(std::ffi::OsStr::from_bytes(name)), b"latin-1 name").unwrap();
    fs::write(tree.join("plain.txt"), b"plain").unwrap();
    let image = dir.join("image");
    mkfs(&image, 8 << 20, 1024, Some(&tree), &[]);

    let mut ext2 = mount(&image);
    let entries = ext2.read_dir("/").unwrap();
    let entry = entries.iter().find(|entry| entry.name == name).expect("the Latin-1 name is listed as its bytes");
    assert_eq!(entry.name_lossy(), "caf\u{fffd}.txt");
    let root = ext2.resolve("/").unwrap();
    let ino = ext2.lookup(root, name).unwrap().expect("found by its bytes");
    assert_eq!(ino, entry.ino);
    let mut data = vec![0u8; 32];
    let len = ext2.read_at(ino, 0, &mut data).unwrap();
    assert_eq!(&data[..len], b"latin-1 name");
    // The lossy text is another name: not found, not confused with it.
    assert_eq!(ext2.resolve("/caf\u{fffd}.txt").unwrap_err().kind(), ErrorKind::NotFound);
    // Its neighbours are untouched; the image stays clean.
    ext2.remove_file("/plain.txt").unwrap();
    ext2.sync().unwrap();
    drop(ext2.unmount().unwrap());
    assert_clean(&image);
    let listing = String::from_utf8_lossy(&debugfs(&image, "ls /")).into_owned();
    assert!(!listing.contains("plain.txt"), "{listing}");
}

#[test]
fn a_directory_loop_is_an_error_not_a_hang() {
    let dir = scratch("loop");
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("a/b/c")).unwrap();
    fs::write(tree.join("a/b/c/deep.txt"), b"deep").unwrap();
    fs::create_dir_all(tree.join("x")).unwrap();
    let image = dir.join("image");
    mkfs(&image, 8 << 20, 1024, Some(&tree), &[]);
    // /a/b/c's '..' now points at /a/b/c itself: walking '..' up from
    // there never reaches the root.
    debugfs_write(&image, "unlink /a/b/c/..");
    debugfs_write(&image, "link /a/b/c /a/b/c/..");

    let image_for_thread = image.clone();
    let (rename, reads) = within(Duration::from_secs(20), move || {
        let mut ext2 = mount(&image_for_thread);
        // Moving /x under /a/b/c must look for /x among c's ancestors.
        let rename = ext2.rename("/x", "/a/b/c/x").map_err(|error| error.kind());
        let ino = ext2.resolve("/a/b/c/deep.txt").unwrap();
        let mut data = vec![0u8; 8];
        let len = ext2.read_at(ino, 0, &mut data).unwrap();
        (rename, data[..len].to_vec())
    });
    assert_eq!(rename, Err(ErrorKind::InvalidData), "a '..' loop must be reported as corruption");
    assert_eq!(reads, b"deep", "the rest of the filesystem still reads");
}

#[test]
fn a_block_pointer_outside_the_disk_is_an_error_and_the_rest_reads() {
    let dir = scratch("outside");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("victim.txt"), vec![7u8; 3000]).unwrap();
    fs::write(tree.join("fine.txt"), b"fine").unwrap();
    let image = dir.join("image");
    mkfs(&image, 8 << 20, 1024, Some(&tree), &[]);
    // The file's second block now lies far past the end of the 8 MiB disk.
    debugfs_write(&image, "sif /victim.txt block[1] 0x7fffffff");

    let mut ext2 = mount(&image);
    let victim = ext2.resolve("/victim.txt").unwrap();
    let mut data = vec![0u8; 3000];
    let error = ext2.read_at(victim, 0, &mut data).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error:?}");
    // Its first block alone still reads.
    let mut first = vec![0u8; 1024];
    assert_eq!(ext2.read_at(victim, 0, &mut first).unwrap(), 1024);
    assert!(first.iter().all(|&byte| byte == 7));
    // Writing through the bad pointer is refused too, and nothing else breaks.
    assert_eq!(ext2.write_at(victim, 1500, b"x").unwrap_err().kind(), ErrorKind::InvalidData);
    let fine = ext2.resolve("/fine.txt").unwrap();
    let mut text = vec![0u8; 8];
    let len = ext2.read_at(fine, 0, &mut text).unwrap();
    assert_eq!(&text[..len], b"fine");
    let ino = ext2.create("/after.txt", 0o644).unwrap();
    assert_eq!(ext2.write_at(ino, 0, b"after").unwrap(), 5);
}
