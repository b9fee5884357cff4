//! What the in-VM test binaries share: `check`, which prints a failed
//! check's description and passes its verdict on.

#![no_std]

/// Prints `FAILED: what` unless `condition`; returns `condition`.
pub fn check(condition: bool, what: &str) -> bool {
    if !condition {
        toro::println!("FAILED: {what}");
    }
    condition
}

/// What the filesystem tests (`fs_ramdisk`, `fs_disk`) share.
pub mod fs {
    use toro::alloc::format;
    use toro::alloc::vec::Vec;
    use toro::fs::{self, File, OpenOptions};
    use toro::io::{ErrorKind, Write};

    use super::check;

    /// The bytes of a test file (the host side uses the same formula:
    /// tests/vm/build.rs, xtask/src/disktest.rs).
    pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed).collect()
    }

    /// The error kind of a result, if it failed.
    pub fn kind_of<T>(result: toro::io::Result<T>) -> Option<ErrorKind> {
        result.err().map(|e| e.kind())
    }

    /// What one CPU's worker writes in `dir`: `f{k}` for `k < count`
    /// (`pattern(k * step + cpu, cpu * 16 + k)`, in 1000-byte writes);
    /// then `f0` renamed to `sub/renamed`, `f1` removed, `f2` cut to 10
    /// bytes, `appended` added to `f3`.
    pub fn write_worker_files(dir: &str, cpu: usize, count: usize, step: usize) -> bool {
        let mut ok = check(fs::create_dir_all(&format!("{dir}/sub")).is_ok(), "create_dir_all from a worker");
        for k in 0..count {
            let data = pattern(k * step + cpu, (cpu * 16 + k) as u8);
            let mut file = File::create(&format!("{dir}/f{k}")).expect("create");
            for chunk in data.chunks(1000) {
                file.write_all(chunk).expect("write");
            }
        }
        ok &= check(fs::rename(&format!("{dir}/f0"), &format!("{dir}/sub/renamed")).is_ok(), "rename");
        ok &= check(fs::remove_file(&format!("{dir}/f1")).is_ok(), "remove_file");
        let file = OpenOptions::new().write(true).open(&format!("{dir}/f2")).expect("open f2");
        ok &= check(file.set_len(10).is_ok(), "set_len");
        drop(file);
        let mut file = OpenOptions::new().append(true).open(&format!("{dir}/f3")).expect("open f3");
        file.write_all(b"appended").expect("append");
        ok
    }
}
