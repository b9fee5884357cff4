//! Helpers the host tests share: an image file as a block device, and the
//! host's e2fsprogs (mkfs.ext2, e2fsck, debugfs).
#![allow(dead_code)] // each test file uses its own subset

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use toro_fs::BlockDevice;
use toro_io::{ErrorKind, Result};

/// An image file as a block device.
pub struct FileDevice {
    file: fs::File,
    sectors: u64,
}

impl FileDevice {
    pub fn open(path: &Path) -> FileDevice {
        let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let sectors = file.metadata().unwrap().len() / 512;
        FileDevice { file, sectors }
    }
}

impl BlockDevice for FileDevice {
    fn sector_size(&self) -> usize {
        512
    }
    fn sector_count(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        toro_fs::block::check_range(sector, buf.len(), 512, self.sectors)?;
        self.file.read_exact_at(buf, sector * 512).map_err(|_| ErrorKind::Other.into())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        toro_fs::block::check_range(sector, buf.len(), 512, self.sectors)?;
        self.file.write_all_at(buf, sector * 512).map_err(|_| ErrorKind::Other.into())
    }
    fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|_| ErrorKind::Other.into())
    }
}

/// An e2fsprogs program: on PATH or in the sbin directories.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} not found: install e2fsprogs (`cargo xtask setup` does, as root)");
}

pub fn scratch(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("toro-ext2-{}-{n}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `mkfs.ext2 -d folder` into a fresh image of `size` bytes.
pub fn mkfs(image: &Path, size: u64, block_size: u32, folder: Option<&Path>, extra: &[&str]) {
    let file = fs::File::create(image).unwrap();
    file.set_len(size).unwrap();
    let mut command = Command::new(tool("mkfs.ext2"));
    command.args(["-q", "-F", "-t", "ext2", "-b", &block_size.to_string()]).args(extra);
    if let Some(folder) = folder {
        command.arg("-d").arg(folder);
    }
    let output = command.arg(image).output().unwrap();
    assert!(output.status.success(), "mkfs.ext2: {}", String::from_utf8_lossy(&output.stderr));
}

/// `e2fsck -fn`: panics with its report unless the image is clean.
pub fn assert_clean(image: &Path) {
    let output = Command::new(tool("e2fsck")).arg("-fn").arg(image).output().unwrap();
    assert!(
        output.status.success(),
        "e2fsck -fn {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn debugfs(image: &Path, request: &str) -> Vec<u8> {
    let output = Command::new(tool("debugfs")).arg("-R").arg(request).arg(image).output().unwrap();
    assert!(output.status.success(), "debugfs {request}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8 ^ seed).collect()
}

/// Whether `e2fsck -fn` finds the image clean, and its report.
pub fn fsck(image: &Path) -> (bool, String) {
    let output = Command::new(tool("e2fsck")).arg("-fn").arg(image).output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}
