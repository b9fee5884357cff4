//! ext2 against the host's e2fsprogs: images `mkfs.ext2 -d` makes are read
//! in full and compared with the folder; what this code writes is read back
//! with `debugfs` and checked with `e2fsck -fn`; corrupt images give errors.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{assert_clean, debugfs, mkfs, pattern, scratch, FileDevice};
use toro_fs::ext2::{Ext2, FileKind, Options};
use toro_fs::{BlockDevice, MemoryDevice};
use toro_io::ErrorKind;

/// A folder with what a real tree has: empty, tiny, block-sized, indirect
/// and double-indirect files, nested directories, a large directory and
/// symbolic links.
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut add = |path: &str, data: Vec<u8>| {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, &data).unwrap();
        files.insert(format!("/{path}"), data);
    };
    add("empty", Vec::new());
    add("hello.txt", b"hello, toro\n".to_vec());
    add("block", pattern(4096, 1));
    add("indirect.bin", pattern(13 * 4096 + 17, 2));
    add("double.bin", pattern(1100 * 1024 + 5, 3));
    add("a/b/c/deep.txt", b"deep".to_vec());
    for i in 0..300 {
        add(&format!("many/file-{i:03}-with-a-longer-name"), format!("{i}").into_bytes());
    }
    std::os::unix::fs::symlink("hello.txt", root.join("fast-link")).unwrap();
    let long_target = format!("a/b/c/{}/../deep.txt", "x".repeat(80));
    std::os::unix::fs::symlink(&long_target, root.join("slow-link")).unwrap();
    files
}

/// Every file under `dir` in the filesystem, recursively.
fn walk<D: BlockDevice>(fs: &mut Ext2<D>, dir: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for entry in fs.read_dir(dir).unwrap() {
        let path = format!("{}/{}", dir.trim_end_matches('/'), entry.name_lossy());
        match entry.kind {
            FileKind::Dir => walk(fs, &path, out),
            FileKind::File => {
                let stat = fs.stat(entry.ino).unwrap();
                let mut data = vec![0u8; stat.size as usize];
                assert_eq!(fs.read_at(entry.ino, 0, &mut data).unwrap(), data.len());
                out.insert(path, data);
            }
            FileKind::Symlink => {
                let target = fs.read_link(entry.ino).unwrap();
                out.insert(path, target);
            }
            FileKind::Special => {}
        }
    }
}

#[test]
fn host_images_read_in_full() {
    let dir = scratch("read");
    let tree = dir.join("tree");
    let files = make_tree(&tree);
    for block_size in [1024, 2048, 4096] {
        let image = dir.join(format!("image-{block_size}"));
        mkfs(&image, 16 << 20, block_size, Some(&tree), &[]);
        let mut fs = Ext2::mount(FileDevice::open(&image)).unwrap();
        let mut found = BTreeMap::new();
        walk(&mut fs, "/", &mut found);
        found.remove("/lost+found");
        let long_target = format!("a/b/c/{}/../deep.txt", "x".repeat(80));
        assert_eq!(found.remove("/fast-link").unwrap(), b"hello.txt");
        assert_eq!(found.remove("/slow-link").unwrap(), long_target.as_bytes());
        assert_eq!(found.len(), files.len(), "block size {block_size}");
        for (path, data) in &files {
            assert_eq!(found.get(path), Some(data), "{path} with {block_size}-byte blocks");
        }
        // Paths: symbolic links are followed, `.` and `..` resolve.
        let ino = fs.resolve("/fast-link").unwrap();
        let mut buf = [0u8; 64];
        let n = fs.read_at(ino, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello, toro\n");
        assert_eq!(fs.resolve("/a/b/./c/../c/deep.txt").unwrap(), fs.resolve("a/b/c/deep.txt").unwrap());
        assert_eq!(fs.metadata("/a/b").unwrap().kind, FileKind::Dir);
        assert_eq!(fs.resolve("/missing").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(fs.resolve("/hello.txt/x").unwrap_err().kind(), ErrorKind::NotADirectory);
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn writes_read_back_with_debugfs_and_fsck_clean() {
    let dir = scratch("write");
    let tree = dir.join("tree");
    make_tree(&tree);
    for block_size in [1024, 4096] {
        let image = dir.join(format!("image-{block_size}"));
        mkfs(&image, 32 << 20, block_size, Some(&tree), &[]);
        let mut fs =
            Ext2::mount_with(FileDevice::open(&image), Options { clock: || 1_700_000_000, ..Options::default() })
                .unwrap();
        let before = fs.free_counts();

        // New files of several sizes (direct, indirect, double indirect).
        for (name, len) in [("new-small", 10usize), ("new-mid", 70_000), ("new-big", 3 << 20)] {
            let ino = fs.create(&format!("/{name}"), 0o644).unwrap();
            let data = pattern(len, 9);
            assert_eq!(fs.write_at(ino, 0, &data).unwrap(), len);
        }
        assert_eq!(fs.create("/new-small", 0o644).unwrap_err().kind(), ErrorKind::AlreadyExists);
        // Overwrite in the middle, append past the end (a hole in between).
        let ino = fs.resolve("/hello.txt").unwrap();
        fs.write_at(ino, 7, b"TORO").unwrap();
        fs.write_at(ino, 100_000, b"tail").unwrap();
        // Directories, nested; a file in them; a rename across directories.
        fs.create_dir("/d1").unwrap();
        fs.create_dir("/d1/d2").unwrap();
        let inner = fs.create("/d1/d2/inner.txt", 0o600).unwrap();
        fs.write_at(inner, 0, b"inside").unwrap();
        fs.rename("/d1/d2", "/moved").unwrap();
        fs.rename("/new-small", "/d1/renamed-small").unwrap();
        assert_eq!(fs.rename("/d1", "/d1/x").unwrap_err().kind(), ErrorKind::InvalidInput);
        // Removals: files, an empty directory, a non-empty one refused.
        fs.remove_file("/many/file-007-with-a-longer-name").unwrap();
        fs.remove_file("/fast-link").unwrap();
        assert_eq!(fs.remove_dir("/a").unwrap_err().kind(), ErrorKind::DirectoryNotEmpty);
        fs.remove_file("/a/b/c/deep.txt").unwrap();
        fs.remove_dir("/a/b/c").unwrap();
        assert_eq!(fs.remove_file("/a").unwrap_err().kind(), ErrorKind::IsADirectory);
        // Truncations: shrink into the double-indirect range and to zero.
        let big = fs.resolve("/double.bin").unwrap();
        fs.set_len(big, 5000).unwrap();
        let mid = fs.resolve("/indirect.bin").unwrap();
        fs.set_len(mid, 0).unwrap();
        fs.set_len(mid, 3).unwrap();
        // Many entries in one directory: more blocks for it.
        for i in 0..200 {
            fs.create(&format!("/many/extra-{i}"), 0o644).unwrap();
        }
        fs.symlink("d1/renamed-small", "/new-link").unwrap();
        // A file removed while open stays readable until released.
        let orphan = fs.create("/orphan", 0o644).unwrap();
        fs.write_at(orphan, 0, &pattern(20_000, 4)).unwrap();
        assert_eq!(fs.unlink("/orphan", |ino| ino == orphan).unwrap(), Some(orphan));
        assert_eq!(fs.resolve("/orphan").unwrap_err().kind(), ErrorKind::NotFound);
        let mut back = vec![0u8; 20_000];
        fs.read_at(orphan, 0, &mut back).unwrap();
        assert_eq!(back, pattern(20_000, 4));
        fs.release_orphan(orphan).unwrap();
        fs.unmount().unwrap();

        assert_clean(&image);
        let cat = |path: &str| debugfs(&image, &format!("cat {path}"));
        assert_eq!(cat("/new-big"), pattern(3 << 20, 9));
        assert_eq!(cat("/new-mid"), pattern(70_000, 9));
        assert_eq!(cat("/d1/renamed-small"), pattern(10, 9));
        assert_eq!(cat("/moved/inner.txt"), b"inside");
        let hello = cat("/hello.txt");
        assert_eq!(hello.len(), 100_004);
        assert_eq!(&hello[..12], b"hello, TORO\n");
        assert!(hello[12..100_000].iter().all(|&b| b == 0));
        assert_eq!(&hello[100_000..], b"tail");
        assert_eq!(cat("/double.bin"), pattern(1100 * 1024 + 5, 3)[..5000].to_vec());
        assert_eq!(cat("/indirect.bin"), vec![0u8; 3]);
        let listing = String::from_utf8(debugfs(&image, "ls -l /many")).unwrap();
        assert!(listing.contains("extra-199") && !listing.contains("file-007-"));
        let root = String::from_utf8(debugfs(&image, "ls /")).unwrap();
        assert!(!root.contains("fast-link") && root.contains("new-link") && root.contains("moved"));

        // Everything removed again: the free counts come back.
        let mut fs = Ext2::mount(FileDevice::open(&image)).unwrap();
        for name in ["/new-big", "/new-mid", "/d1/renamed-small", "/moved/inner.txt", "/new-link"] {
            fs.remove_file(name).unwrap();
        }
        fs.remove_dir("/moved").unwrap();
        fs.remove_dir("/d1").unwrap();
        fs.unmount().unwrap();
        assert_clean(&image);
        let after = Ext2::mount(FileDevice::open(&image)).unwrap().free_counts();
        assert_eq!(after.1, before.1 - 200 + 4, "inodes: 200 kept, three files and a directory removed");
        assert!(after.0 >= before.0 - 64, "blocks mostly back: {before:?} -> {after:?}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn file_over_4_gib_in_a_sparse_image() {
    let dir = scratch("large");
    let image = dir.join("image");
    mkfs(&image, 6 << 30, 4096, None, &["-N", "256"]);
    let mut fs = Ext2::mount(FileDevice::open(&image)).unwrap();
    let ino = fs.create("/huge", 0o644).unwrap();
    let far = (4u64 << 30) + 12345; // triple-indirect with 4 KiB blocks past 4 GiB
    fs.write_at(ino, 0, b"start").unwrap();
    fs.write_at(ino, far, b"past four gibibytes").unwrap();
    assert_eq!(fs.stat(ino).unwrap().size, far + 19);
    let mut buf = [0u8; 19];
    fs.read_at(ino, far, &mut buf).unwrap();
    assert_eq!(&buf, b"past four gibibytes");
    fs.unmount().unwrap();
    assert_clean(&image);
    let stat = String::from_utf8(debugfs(&image, "stat /huge")).unwrap();
    assert!(stat.contains(&format!("Size: {}", far + 19)), "{stat}");
    // The block debugfs maps for that offset holds our bytes.
    let bmap = String::from_utf8(debugfs(&image, &format!("bmap /huge {}", far / 4096))).unwrap();
    let block: u64 = bmap.trim().parse().unwrap();
    let mut on_disk = [0u8; 19];
    fs::File::open(&image).unwrap().read_exact_at(&mut on_disk, block * 4096 + far % 4096).unwrap();
    assert_eq!(&on_disk, b"past four gibibytes");
    // Shrinking back below 4 GiB frees the triple-indirect tree.
    let mut fs = Ext2::mount(FileDevice::open(&image)).unwrap();
    fs.set_len(ino, 100).unwrap();
    fs.unmount().unwrap();
    assert_clean(&image);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn full_disk_is_storage_full_and_stays_consistent() {
    let dir = scratch("full");
    let image = dir.join("image");
    mkfs(&image, 2 << 20, 1024, None, &["-N", "64"]);
    let mut fs = Ext2::mount(FileDevice::open(&image)).unwrap();
    let ino = fs.create("/fill", 0o644).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut offset = 0u64;
    let err = loop {
        match fs.write_at(ino, offset, &chunk) {
            Ok(n) => offset += n as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    assert!(offset > 1 << 20, "wrote {offset} bytes before the disk filled");
    // Inodes run out too.
    let mut created = 0;
    let err = loop {
        match fs.create(&format!("/f{created}"), 0o644) {
            Ok(_) => created += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::StorageFull);
    fs.unmount().unwrap();
    assert_clean(&image);
    assert_eq!(debugfs(&image, "cat /fill").len() as u64, offset);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn read_only_devices_and_bad_names() {
    let dir = scratch("ro");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"x").unwrap();
    let image = dir.join("image");
    mkfs(&image, 1 << 20, 1024, Some(&tree), &[]);
    let data = fs::read(&image).unwrap();
    let mut fs = Ext2::mount(MemoryDevice::new(data.clone()).into_read_only()).unwrap();
    assert!(!fs.is_writable());
    assert_eq!(fs.create("/g", 0o644).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
    let ino = fs.resolve("/f").unwrap();
    assert_eq!(fs.write_at(ino, 0, b"y").unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);

    let mut fs = Ext2::mount(MemoryDevice::new(data)).unwrap();
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(fs.create(&long, 0o644).unwrap_err().kind(), ErrorKind::InvalidFilename);
    assert_eq!(fs.create("/a\0b", 0o644).unwrap_err().kind(), ErrorKind::InvalidFilename);
    assert_eq!(fs.create("/..", 0o644).unwrap_err().kind(), ErrorKind::InvalidInput);
    let ok = format!("/{}", "n".repeat(255));
    fs.create(&ok, 0o644).unwrap();
    let _ = fs::remove_dir_all(&dir);
}

/// Runs every read and write operation on a (possibly corrupt) image; only
/// errors may come out, never a panic.
fn exercise(image: Vec<u8>) {
    let Ok(mut fs) = Ext2::mount(MemoryDevice::new(image)) else { return };
    let mut found = BTreeMap::new();
    fn visit<D: BlockDevice>(fs: &mut Ext2<D>, dir: &str, depth: usize, found: &mut BTreeMap<String, usize>) {
        let Ok(entries) = fs.read_dir(dir) else { return };
        for entry in entries {
            let path = format!("{}/{}", dir.trim_end_matches('/'), entry.name_lossy());
            let mut buf = vec![0u8; 8192];
            if let Ok(n) = fs.read_at(entry.ino, 0, &mut buf) {
                found.insert(path.clone(), n);
            }
            let _ = fs.read_link(entry.ino);
            let _ = fs.stat(entry.ino);
            if entry.kind == FileKind::Dir && depth < 8 {
                visit(fs, &path, depth + 1, found);
            }
        }
    }
    visit(&mut fs, "/", 0, &mut found);
    let _ = fs.create("/new", 0o644).and_then(|ino| fs.write_at(ino, 5000, &[1u8; 3000]));
    let _ = fs.create_dir("/newdir");
    let _ = fs.rename("/hello.txt", "/newdir/h");
    let _ = fs.remove_file("/double.bin");
    let _ = fs.remove_dir("/a/b/c");
    let _ = fs.resolve("/fast-link");
    if let Ok(ino) = fs.resolve("/indirect.bin") {
        let _ = fs.set_len(ino, 10);
    }
    let _ = fs.sync();
}

/// A small image made by the host, the corpus of the mutation tests, and
/// the byte ranges worth damaging: superblock and descriptors, the first
/// inodes of the table, and every directory block (found by their `.` entry).
fn corpus() -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    let dir = scratch("corpus");
    let tree = dir.join("tree");
    make_tree(&tree);
    let image = dir.join("image");
    mkfs(&image, 4 << 20, 1024, Some(&tree), &["-N", "512"]);
    let data = fs::read(&image).unwrap();
    let _ = fs::remove_dir_all(&dir);
    let inode_table = u32::from_le_bytes(data[2048 + 8..2048 + 12].try_into().unwrap()) as usize * 1024;
    let mut hot = vec![1024..3072, inode_table..inode_table + 8192];
    for block in (0..data.len()).step_by(1024) {
        // A first directory block: ".": rec_len 12, name_len 1, then "..".
        if data[block + 4..block + 9] == [12, 0, 1, 2, b'.'] && data[block + 18..block + 21] == [2, 2, b'.'] {
            // The directory's next blocks (mkfs places them after it).
            hot.push(block..(block + 8 * 1024).min(data.len()));
        }
    }
    assert!(hot.len() > 6, "directory blocks found in the corpus");
    (data, hot)
}

/// A byte offset to damage: in a hot range three times in four.
fn pick(hot: &[std::ops::Range<usize>], len: usize, r: u64) -> usize {
    if r.is_multiple_of(4) {
        return 1024 + (r / 4) as usize % (len - 1024);
    }
    let range = &hot[(r / 4) as usize % hot.len()];
    range.start + (r >> 20) as usize % range.len()
}

#[test]
fn corrupt_images_give_errors_not_panics() {
    let (image, hot) = corpus();
    // Targeted damage with the errors it must give.
    let mut bad = image.clone();
    bad[1024 + 56] = 0; // magic
    assert_eq!(Ext2::mount(MemoryDevice::new(bad)).err().unwrap().kind(), ErrorKind::InvalidData);
    let mut bad = image.clone();
    bad[1024..1028].copy_from_slice(&u32::MAX.to_le_bytes()); // inodes count
    assert_eq!(Ext2::mount(MemoryDevice::new(bad)).err().unwrap().kind(), ErrorKind::InvalidData);
    let truncated = image[..image.len() / 2].to_vec();
    assert_eq!(Ext2::mount(MemoryDevice::new(truncated)).err().unwrap().kind(), ErrorKind::InvalidData);
    let mut bad = image.clone();
    bad[1024 + 96] |= 0x40; // incompat: extents
    assert_eq!(Ext2::mount(MemoryDevice::new(bad)).err().unwrap().kind(), ErrorKind::Unsupported);
    assert!(Ext2::mount(MemoryDevice::new(vec![0u8; 512])).is_err());

    // Seeded byte flips over the metadata (superblock, descriptors,
    // bitmaps, inode tables, first directory blocks).
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..400 {
        let mut bad = image.clone();
        for _ in 0..1 + next() % 8 {
            let at = pick(&hot, bad.len(), next());
            bad[at] ^= 1 << (next() % 8);
        }
        exercise(bad);
    }
}

mod mutation {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn image() -> &'static (Vec<u8>, Vec<std::ops::Range<usize>>) {
        static IMAGE: OnceLock<(Vec<u8>, Vec<std::ops::Range<usize>>)> = OnceLock::new();
        IMAGE.get_or_init(corpus)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Arbitrary bytes written over the metadata.
        #[test]
        fn arbitrary_overwrites(writes in proptest::collection::vec((any::<u64>(), any::<u8>()), 1..12)) {
            let (image, hot) = image();
            let mut bad = image.clone();
            for (r, byte) in writes {
                let at = pick(hot, bad.len(), r);
                bad[at] = byte;
            }
            exercise(bad);
        }
    }
}

/// A disk with 4 KiB logical sectors (virtio-blk `blk_size` 4096, QEMU's
/// `logical_block_size=4096`): a 4 KiB-block image mounts, reads, takes
/// writes and stays clean; a 1 KiB-block image is refused as unsupported
/// (its blocks are smaller than a sector), not misread.
#[test]
fn four_kib_sectors() {
    let dir = scratch("sector4k");
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hello"), pattern(10_000, 7)).unwrap();
    let image = dir.join("image");
    mkfs(&image, 8 << 20, 4096, Some(&tree), &[]);
    let mut fs = Ext2::mount(MemoryDevice::with_sector_size(fs::read(&image).unwrap(), 4096)).unwrap();
    assert!(fs.is_writable());
    let ino = fs.resolve("/hello").unwrap();
    let mut back = vec![0; 10_000];
    assert_eq!(fs.read_at(ino, 0, &mut back).unwrap(), 10_000);
    assert_eq!(back, pattern(10_000, 7));
    let new = fs.create("/written", 0o644).unwrap();
    fs.write_at(new, 0, &pattern(5000, 3)).unwrap();
    let device = fs.unmount().unwrap();
    assert_eq!(device.sector_size(), 4096);
    fs::write(&image, device.into_inner()).unwrap();
    assert_eq!(debugfs(&image, "cat /written"), pattern(5000, 3));
    assert_clean(&image);

    let small = dir.join("small");
    mkfs(&small, 8 << 20, 1024, None, &[]);
    let refused = Ext2::mount(MemoryDevice::with_sector_size(fs::read(&small).unwrap(), 4096)).err().unwrap();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    let _ = fs::remove_dir_all(&dir);
}

/// A device that records the length of every transfer.
struct Counting {
    inner: MemoryDevice,
    reads: Vec<usize>,
    writes: Vec<usize>,
}

impl BlockDevice for Counting {
    fn sector_size(&self) -> usize {
        self.inner.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> toro_io::Result<()> {
        self.reads.push(buf.len());
        self.inner.read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> toro_io::Result<()> {
        self.writes.push(buf.len());
        self.inner.write(sector, buf)
    }
    fn flush(&mut self) -> toro_io::Result<()> {
        self.inner.flush()
    }
}

/// Large aligned file reads and writes go to the device in transfers of up
/// to a mebibyte (a 1 MiB request was four 256 KiB transfers one after the
/// other, and writes went block by block through the cache), and what was
/// written that way reads back on the host, the image clean.
#[test]
fn large_file_transfers_are_mebibytes() {
    let dir = scratch("runs");
    let image = dir.join("image");
    mkfs(&image, 64 << 20, 4096, None, &[]);
    let device = Counting { inner: MemoryDevice::new(fs::read(&image).unwrap()), reads: vec![], writes: vec![] };
    let mut fs = Ext2::mount(device).unwrap();
    let ino = fs.create("/big", 0o644).unwrap();
    let data = pattern(8 << 20, 5);
    for chunk in data.chunks(1 << 20).enumerate() {
        assert_eq!(fs.write_at(ino, (chunk.0 << 20) as u64, chunk.1).unwrap(), 1 << 20);
    }
    let big_writes: usize = fs.device().writes.iter().filter(|&&n| n >= 512 << 10).map(|n| n).sum();
    assert!(big_writes >= 6 << 20, "file data in large transfers: {:?}", fs.device().writes);
    let mut back = vec![0u8; 1 << 20];
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        assert_eq!(fs.read_at(ino, (i << 20) as u64, &mut back).unwrap(), 1 << 20);
        assert!(back == chunk, "chunk {i} reads back");
    }
    let big_reads = fs.device().reads.iter().filter(|&&n| n >= 512 << 10).count();
    assert!(big_reads >= 6, "reads in large transfers: {:?}", fs.device().reads);
    // A whole-block write over a block that is dirty in the cache wins.
    fs.write_at(ino, 10, b"dirty").unwrap();
    let fresh = pattern(4096, 77);
    fs.write_at(ino, 0, &fresh).unwrap();
    let device = fs.unmount().unwrap();
    fs::write(&image, device.inner.into_inner()).unwrap();
    let mut expected = data.clone();
    expected[..4096].copy_from_slice(&fresh);
    assert!(debugfs(&image, "cat /big") == expected, "the host reads what was written");
    assert_clean(&image);
    let _ = fs::remove_dir_all(&dir);
}
