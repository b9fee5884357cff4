//! Disks for guests: `--disk IMAGE` attaches an image as virtio-blk;
//! `--disk FOLDER` first makes an ext2 image of the folder with the host's
//! `mkfs.ext2 -d` (e2fsprogs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::e2fsprogs;

/// A disk to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub image: PathBuf,
    pub read_only: bool,
    /// The logical sector size the device reports (virtio-blk `blk_size`;
    /// QEMU `logical_block_size`), when not the default 512.
    pub sector_size: Option<u32>,
}

impl Disk {
    /// A writable disk with 512-byte sectors.
    pub fn new(image: PathBuf) -> Disk {
        Disk { image, read_only: false, sector_size: None }
    }
}

/// Room an image gets beyond its folder's contents.
const IMAGE_SLACK_BYTES: u64 = 32 << 20;
/// The smallest image made from a folder.
const MIN_IMAGE_BYTES: u64 = 64 << 20;

/// Parses `PATH[,ro][,sector=BYTES]`; a folder becomes an image under
/// `target/disks` (made with 4 KiB blocks when the sectors are larger
/// than 1 KiB, so that the guest can mount it).
pub fn parse(argument: &str) -> Result<Disk> {
    let mut words = argument.split(',');
    let path = Path::new(words.next().unwrap_or_default());
    let (mut read_only, mut sector_size) = (false, None);
    for word in words {
        match word.split_once('=') {
            None if word == "ro" => read_only = true,
            Some(("sector", bytes)) => {
                let bytes: u32 =
                    bytes.parse().map_err(|_| anyhow::anyhow!("--disk {argument}: sector={bytes} is not a number"))?;
                if !(512..=32768).contains(&bytes) || !bytes.is_power_of_two() {
                    bail!("--disk {argument}: sector={bytes}: a sector is a power of two from 512 to 32768 bytes");
                }
                sector_size = (bytes != 512).then_some(bytes);
            }
            _ => bail!("--disk {argument}: unknown option '{word}' (PATH[,ro][,sector=BYTES])"),
        }
    }
    if path.is_dir() {
        let name = path.canonicalize()?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or("root".into());
        let image = crate::build::workspace_root().join("target").join("disks").join(format!("{name}.img"));
        if sector_size.is_some_and(|bytes| bytes > 1024) {
            image_from_folder_with(path, &image, None, &["-b", "4096"])?;
        } else {
            image_from_folder(path, &image, None)?;
        }
        Ok(Disk { image, read_only, sector_size })
    } else if path.is_file() {
        Ok(Disk { image: path.to_path_buf(), read_only, sector_size })
    } else {
        bail!("--disk {}: no such file or folder", path.display())
    }
}

fn folder_bytes(folder: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { folder_bytes(&entry.path())? + 4096 } else { meta.len() + 4096 };
    }
    Ok(total)
}

/// Makes `image` (replacing it) an ext2 filesystem holding `folder`'s tree;
/// `size` defaults to twice the contents plus slack.
pub fn image_from_folder(folder: &Path, image: &Path, size: Option<u64>) -> Result<()> {
    image_from_folder_with(folder, image, size, &[])
}

/// As [`image_from_folder`], with more `mkfs.ext2` arguments (`-b 4096`).
pub fn image_from_folder_with(folder: &Path, image: &Path, size: Option<u64>, mkfs_arguments: &[&str]) -> Result<()> {
    let mkfs = e2fsprogs("mkfs.ext2").context("mkfs.ext2 is missing: install e2fsprogs (cargo xtask setup)")?;
    let size = size.unwrap_or((folder_bytes(folder)? * 2 + IMAGE_SLACK_BYTES).max(MIN_IMAGE_BYTES));
    if let Some(parent) = image.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(size)?;
    drop(file);
    let output = Command::new(mkfs)
        .args(["-q", "-F", "-t", "ext2"])
        .args(mkfs_arguments)
        .arg("-d")
        .arg(folder)
        .arg(image)
        .output()
        .context("running mkfs.ext2")?;
    if !output.status.success() {
        bail!("mkfs.ext2 -d {} failed: {}", folder.display(), String::from_utf8_lossy(&output.stderr));
    }
    eprintln!("disk: {} ({} MiB ext2) from {}", image.display(), size >> 20, folder.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_become_ext2_images_and_bad_paths_are_refused() {
        let dir = std::env::temp_dir().join(format!("toro-xtask-disk-{}", std::process::id()));
        let folder = dir.join("tree");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        std::fs::write(folder.join("sub/file.txt"), b"on the disk").unwrap();
        let image = dir.join("out.img");
        image_from_folder(&folder, &image, None).unwrap();
        assert_eq!(std::fs::metadata(&image).unwrap().len(), MIN_IMAGE_BYTES);
        let debugfs = e2fsprogs("debugfs").unwrap();
        let cat = Command::new(debugfs).args(["-R", "cat /sub/file.txt"]).arg(&image).output().unwrap();
        assert_eq!(cat.stdout, b"on the disk");
        let disk = parse(&format!("{},ro", image.display())).unwrap();
        assert_eq!(disk, Disk { image: image.clone(), read_only: true, sector_size: None });
        let disk = parse(&format!("{},sector=4096", image.display())).unwrap();
        assert_eq!(disk, Disk { image: image.clone(), read_only: false, sector_size: Some(4096) });
        assert_eq!(parse(&format!("{},ro,sector=512", image.display())).unwrap().sector_size, None);
        for bad in ["sector=1000", "sector=256", "sector=x", "rw", "ro=1"] {
            let error = parse(&format!("{},{bad}", image.display())).unwrap_err().to_string();
            assert!(error.contains(bad.split('=').next_back().unwrap()), "{bad}: {error}");
        }
        assert!(parse("/no/such/path").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
