//! Blocks and inodes freed since the last sync are not handed out before the
//! next one: the disk's metadata (the last sync's) still says the old file
//! owns them, and a new owner's data reaches the disk before the next sync
//! (whole-block writes go straight out). Each test takes the device's bytes
//! as a VM killed at that moment would leave them and checks that the old
//! synced file is intact there; and that a nearly full disk whose only free
//! space was freed since the sync still takes new data (it syncs first).

mod common;

use std::path::Path;

use common::{fsck, mkfs, pattern, scratch};
use toro_fs::ext2::{Ext2, Options};
use toro_fs::MemoryDevice;
use toro_io::ErrorKind;

fn image(size: u64, inodes: &str) -> Vec<u8> {
    let dir = scratch("crash");
    let path = dir.join("image");
    mkfs(&path, size, 1024, None, &["-N", inodes]);
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

fn mount(bytes: Vec<u8>) -> Ext2<MemoryDevice> {
    let options = Options { clock: || 1_700_000_000, ..Options::default() };
    Ext2::mount_with(MemoryDevice::new(bytes), options).unwrap()
}

/// `e2fsck -fn` of an image held in memory.
fn assert_clean_bytes(bytes: &[u8], when: &str) {
    let dir = scratch("crash-check");
    let path = dir.join("image");
    std::fs::write(&path, bytes).unwrap();
    let (clean, report) = fsck(Path::new(&path));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(clean, "{when}: e2fsck -fn: {report}");
}

fn read_all(fs: &mut Ext2<MemoryDevice>, path: &str) -> Vec<u8> {
    let ino = fs.resolve(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let size = fs.metadata(path).unwrap().size as usize;
    let mut data = vec![0u8; size];
    assert_eq!(fs.read_at(ino, 0, &mut data).unwrap(), size);
    data
}

/// The device as a VM killed now leaves it: what reached it, without a sync.
fn killed_now(fs: &Ext2<MemoryDevice>) -> Vec<u8> {
    fs.device().data().to_vec()
}

/// Checks the killed image: clean, and `/a` holds what was synced.
fn assert_synced_a_intact(crashed: Vec<u8>, a: &[u8], when: &str) {
    assert_clean_bytes(&crashed, when);
    let mut back = mount(crashed);
    assert!(read_all(&mut back, "/a") == a, "{when}: the synced /a holds other bytes in the killed image");
}

/// 40 KiB of 1 KiB blocks: direct and single-indirect blocks.
const A_LEN: usize = 40 * 1024;

/// A fresh filesystem holding `/a` (`A_LEN` bytes of `pattern(_, seed)`),
/// synced: the filesystem, `/a`'s inode and its contents.
fn synced_a(seed: u8) -> (Ext2<MemoryDevice>, u32, Vec<u8>) {
    let mut fs = mount(image(8 << 20, "64"));
    let a = pattern(A_LEN, seed);
    let ino = fs.create("/a", 0o644).unwrap();
    fs.write_at(ino, 0, &a).unwrap();
    fs.sync().unwrap();
    (fs, ino, a)
}

#[test]
fn a_removed_files_blocks_are_not_reused_before_sync() {
    let (mut fs, ino, a) = synced_a(1);
    fs.remove_file("/a").unwrap();
    let c = fs.create("/c", 0o644).unwrap();
    fs.write_at(c, 0, &pattern(A_LEN, 2)).unwrap();
    assert_synced_a_intact(killed_now(&fs), &a, "removed, /c written");
    // The inode table is still in the cache here; once written, /a's old
    // entry would name /c's inode if it were handed out again.
    assert_ne!(c, ino, "the inode freed since the sync was handed out again");
    // After the sync the freed inode (and blocks) are free again.
    fs.sync().unwrap();
    assert_eq!(fs.create("/d", 0o644).unwrap(), ino, "the sync released the freed inode");
    let bytes = fs.unmount().unwrap().into_inner();
    assert_clean_bytes(&bytes, "after unmount");
    let mut back = mount(bytes);
    assert!(read_all(&mut back, "/c") == pattern(A_LEN, 2));
    assert_eq!(back.resolve("/a").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_truncated_file_rewritten_before_sync_keeps_its_synced_blocks() {
    let (mut fs, ino, a) = synced_a(3);
    // Truncate and rewrite the same file, as O_TRUNC then write does.
    fs.set_len(ino, 0).unwrap();
    let new = pattern(A_LEN, 4);
    fs.write_at(ino, 0, &new).unwrap();
    assert_synced_a_intact(killed_now(&fs), &a, "truncated and rewritten");
    // And a truncation to a partial block, then another file's writes.
    fs.sync().unwrap();
    fs.set_len(ino, 5000).unwrap();
    let c = fs.create("/c", 0o644).unwrap();
    fs.write_at(c, 0, &pattern(A_LEN, 5)).unwrap();
    assert_synced_a_intact(killed_now(&fs), &new, "truncated, /c written");
    let bytes = fs.unmount().unwrap().into_inner();
    assert_clean_bytes(&bytes, "after unmount");
    let mut back = mount(bytes);
    assert!(read_all(&mut back, "/a") == new[..5000]);
    assert!(read_all(&mut back, "/c") == pattern(A_LEN, 5));
}

#[test]
fn a_nearly_full_disk_syncs_then_reuses_what_was_freed() {
    let mut fs = mount(image(2 << 20, "32"));
    // Fill the disk with /a, sync.
    let ino = fs.create("/a", 0o644).unwrap();
    let chunk = pattern(64 * 1024, 6);
    let mut filled = 0u64;
    while let Ok(n) = fs.write_at(ino, filled, &chunk) {
        filled += n as u64;
    }
    assert!(filled > 1 << 20, "wrote {filled} bytes before the disk filled");
    fs.sync().unwrap();
    let (full_blocks, _) = fs.free_counts();
    // Free it all; before any sync the only free space is what was freed.
    fs.remove_file("/a").unwrap();
    let (free_blocks, _) = fs.free_counts();
    assert!(free_blocks as u64 >= full_blocks as u64 + filled / 1024, "freed blocks count as free");
    // A directory (a block), a slow symlink (a block) and a file as large
    // as /a all fit: the first allocation that found nothing syncs first.
    fs.create_dir("/d").unwrap();
    fs.symlink(&"t".repeat(100), "/link").unwrap();
    let b = fs.create("/b", 0o644).unwrap();
    let mut written = 0u64;
    while written < filled - 8 * 1024 {
        let n = fs.write_at(b, written, &chunk).unwrap_or_else(|e| panic!("after {written} bytes: {e}"));
        written += n as u64;
    }
    // Inodes too: fill them, sync, remove the files, create as many again.
    let mut names = Vec::new();
    while fs.create(&format!("/f{}", names.len()), 0o644).is_ok() {
        names.push(format!("/f{}", names.len()));
    }
    assert!(names.len() > 10);
    fs.sync().unwrap();
    for name in &names {
        fs.remove_file(name).unwrap();
    }
    for i in 0..names.len() {
        fs.create(&format!("/g{i}"), 0o644).unwrap_or_else(|e| panic!("inode {i} of {}: {e}", names.len()));
    }
    let bytes = fs.unmount().unwrap().into_inner();
    assert_clean_bytes(&bytes, "after unmount");
    let mut back = mount(bytes);
    let b_data = read_all(&mut back, "/b");
    assert_eq!(b_data.len() as u64, written);
    assert!(b_data.chunks(chunk.len()).all(|part| part == &chunk[..part.len()]));
    let link = back.resolve_no_follow("/link").unwrap();
    assert_eq!(back.read_link(link).unwrap(), "t".repeat(100).as_bytes());
}
