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

/// What the filesystem tests (`fs_ramdisk`, `fs_disk`, `fs_share`) share.
pub mod fs {
    use toro::alloc::format;
    use toro::alloc::string::String;
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

    /// Every file under `dir`, recursively (symbolic links not followed).
    pub fn walk(dir: &str, files: &mut Vec<String>) -> toro::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, files)?;
            } else if kind.is_file() {
                files.push(path);
            }
        }
        Ok(())
    }

    /// Reads every file the tree's `MANIFEST` (xtask/src/disktest.rs) lists
    /// under `root` and checks the tree holds no others; `test` names the
    /// test in the report.
    pub fn read_tree(test: &str, root: &str) -> bool {
        let mut ok = true;
        let manifest = match fs::read_to_string(&format!("{root}/MANIFEST")) {
            Ok(text) => text,
            Err(e) => return check(false, &format!("{root}/MANIFEST: {e}")),
        };
        let mut listed = Vec::new();
        for line in manifest.lines() {
            // `PATH LEN SEED`; paths may hold spaces.
            let mut parts = line.rsplitn(3, ' ');
            let (Some(seed), Some(len), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                return check(false, "manifest line");
            };
            let expected = pattern(len.parse().unwrap_or(0), seed.parse().unwrap_or(0));
            let full = format!("{root}{path}");
            match fs::read(&full) {
                Ok(data) => ok &= check(data == expected, &full),
                Err(e) => ok &= check(false, &format!("{full}: {e}")),
            }
            listed.push(full);
        }
        let mut found = Vec::new();
        if let Err(e) = walk(if root.is_empty() { "/" } else { root }, &mut found) {
            return check(false, &format!("walking the tree: {e}"));
        }
        found.retain(|path| !path.ends_with("/MANIFEST"));
        found.sort();
        listed.sort();
        ok &= check(found == listed, "the tree holds exactly the manifest's files");
        ok &= check(fs::read_link(&format!("{root}/link")).ok().as_deref() == Some("data/one"), "symbolic link");
        toro::println!("{test}: {} host files read and checked", listed.len());
        ok
    }

    /// What one CPU's thread writes, renames, truncates and removes under
    /// `root` (the host checks it: xtask/src/disktest.rs).
    pub fn tree_worker(root: &str, cpu: usize) -> bool {
        let dir = format!("{root}/out/cpu{cpu}");
        let mut ok = write_worker_files(&dir, cpu, 8, 3000);
        ok &= check(fs::write(&format!("{dir}/big"), pattern(600_000, cpu as u8)).is_ok(), "big file");
        ok &= check(fs::create_dir(&format!("{dir}/gone")).is_ok(), "create_dir");
        ok &= check(fs::remove_dir(&format!("{dir}/gone")).is_ok(), "remove_dir");
        ok &= check(fs::read(&format!("{dir}/big")).ok() == Some(pattern(600_000, cpu as u8)), "big file reads back");
        ok
    }

    /// Changes to the host's own files under `root` (checked on the host):
    /// a rename, a removal, a truncation, a sync, a write after it.
    pub fn change_host_files(root: &str) -> bool {
        let path = |p: &str| format!("{root}{p}");
        let mut ok = check(fs::rename(&path("/data/one"), &path("/data/one-moved")).is_ok(), "rename a host file");
        ok &= check(fs::remove_file(&path("/data/block")).is_ok(), "remove a host file");
        let file = OpenOptions::new().write(true).open(&path("/data/double")).expect("open");
        ok &= check(file.set_len(1000).is_ok(), "truncate a host file");
        // A mid-run sync, then more changes the clean exit must keep.
        ok &= check(file.sync_all().is_ok(), "sync_all");
        drop(file);
        ok &= check(fs::write(&path("/after-sync.txt"), b"written after the last sync\n").is_ok(), "write after sync");
        ok
    }
}
