//! Makes the ext2 image the `fs_ramdisk` test mounts: a folder of known
//! files put through the host's `mkfs.ext2 -d` (e2fsprogs, which
//! `cargo xtask setup` installs), and a manifest of what it holds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bytes of a test file: what the guest recomputes to check it.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed).collect()
}

fn mkfs() -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join("mkfs.ext2"))
        .find(|path| path.exists())
        .expect("mkfs.ext2 not found: install e2fsprogs (cargo xtask setup does, as root)")
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let tree = out.join("fs-tree");
    let _ = std::fs::remove_dir_all(&tree);
    let mut manifest = String::new();
    let mut files: Vec<(String, usize, u8)> = vec![
        ("hello.txt".into(), 0, 0),
        ("data/empty".into(), 0, 1),
        ("data/one".into(), 1, 2),
        ("data/block".into(), 1024, 3),
        ("data/indirect".into(), 50_000, 4),
        ("data/double".into(), 400_000, 5),
        ("deep/a/b/c/leaf".into(), 77, 6),
    ];
    for i in 0..120 {
        files.push((format!("many/entry-{i:03}"), i * 3, i as u8));
    }
    for (path, len, seed) in &files {
        let full = tree.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        if path == "hello.txt" {
            std::fs::write(&full, b"hello from the host\n").unwrap();
            writeln!(manifest, "/{path} 20 text").unwrap();
        } else {
            std::fs::write(&full, pattern(*len, *seed)).unwrap();
            writeln!(manifest, "/{path} {len} {seed}").unwrap();
        }
    }
    let image = out.join("fs-test.img");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(4 << 20).unwrap();
    drop(file);
    let status = Command::new(mkfs())
        .args(["-q", "-F", "-t", "ext2", "-b", "1024", "-N", "512", "-d"])
        .arg(&tree)
        .arg(&image)
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.ext2 failed");
    std::fs::write(out.join("fs-manifest.txt"), manifest).unwrap();
}
