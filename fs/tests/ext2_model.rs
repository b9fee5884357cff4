//! Random sequences of operations against a model of what the tree must
//! hold, on a tiny block cache (so dirty blocks are evicted, i.e. written,
//! at arbitrary points): every outcome matches the model; an image copied
//! right after a `sync` (a VM killed then) is `e2fsck -fn` clean and holds
//! exactly the model's tree as of that sync; so does the final image. An
//! image copied at other points (a kill without a sync) keeps the synced data
//! of every file not changed since, as far as its inodes are alive there.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{fsck, mkfs, pattern, scratch};
use proptest::prelude::*;
use toro_fs::ext2::{Ext2, FileKind, Options};
use toro_fs::MemoryDevice;

const DIRS: [&str; 3] = ["/d0", "/d1", "/d0/e"];
const PARENTS: [&str; 4] = ["", "/d0", "/d1", "/d0/e"];

fn file_path(index: u8) -> String {
    format!("{}/f{}", PARENTS[index as usize % 4], index / 4 % 3)
}

fn parent(path: &str) -> &str {
    &path[..path.rfind('/').unwrap()]
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        file: u8,
        offset: u32,
        len: u16,
        seed: u8,
    },
    Truncate {
        file: u8,
        len: u32,
    },
    Remove {
        file: u8,
    },
    Mkdir {
        dir: u8,
    },
    Rmdir {
        dir: u8,
    },
    Rename {
        from: u8,
        to: u8,
    },
    /// Sync, then check a copy of the image as a crash would leave it.
    SyncAndKill,
    /// No sync: a copy of the image as a crash now would leave it still
    /// holds, in every inode alive there, the data synced last for files
    /// not written or truncated since (removed ones included: their blocks
    /// and inodes are not handed out before the next sync).
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, prop_oneof![0u32..20_000, 250_000u32..320_000], 0u16..9000, any::<u8>())
            .prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        2 => (any::<u8>(), prop_oneof![0u32..12_000, 0u32..300_000]).prop_map(|(file, len)| Op::Truncate { file, len }),
        1 => any::<u8>().prop_map(|file| Op::Remove { file }),
        2 => any::<u8>().prop_map(|dir| Op::Mkdir { dir }),
        1 => any::<u8>().prop_map(|dir| Op::Rmdir { dir }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => Just(Op::SyncAndKill),
        1 => Just(Op::Kill),
    ]
}

#[derive(Default, Clone, Debug)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
    /// Inode -> contents of each file at the last sync.
    synced: BTreeMap<u32, Vec<u8>>,
    /// Inodes written or truncated since the last sync.
    touched: std::collections::BTreeSet<u32>,
}

impl Model {
    fn dir_exists(&self, dir: &str) -> bool {
        dir.is_empty() || self.dirs.iter().any(|d| d == dir)
    }

    fn is_empty_dir(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        !self.files.keys().any(|f| f.starts_with(&prefix)) && !self.dirs.iter().any(|d| d.starts_with(&prefix))
    }
}

fn empty_image() -> &'static Vec<u8> {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = scratch("model");
        let image = dir.join("image");
        mkfs(&image, 8 << 20, 1024, None, &["-N", "256"]);
        let data = std::fs::read(&image).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        data
    })
}

/// Checks an image (as bytes) with e2fsck and our own reader against `model`.
fn check_image(bytes: Vec<u8>, model: &Model, when: &str) -> Result<(), TestCaseError> {
    let dir = scratch("model-check");
    let path = dir.join("image");
    std::fs::write(&path, &bytes).unwrap();
    let (clean, report) = fsck(&path);
    let _ = std::fs::remove_dir_all(&dir);
    prop_assert!(clean, "{when}: e2fsck -fn: {report}");
    let mut fs = Ext2::mount(MemoryDevice::new(bytes)).unwrap();
    for (path, data) in &model.files {
        let ino = fs.resolve(path).map_err(|e| TestCaseError::fail(format!("{when}: {path}: {e}")))?;
        let mut back = vec![0u8; data.len() + 1];
        let n = fs.read_at(ino, 0, &mut back).unwrap();
        prop_assert!(n == data.len() && back[..n] == data[..], "{when}: {path} differs");
    }
    for dir in DIRS {
        let exists = fs.metadata(dir).map(|m| m.kind == FileKind::Dir).unwrap_or(false);
        prop_assert_eq!(exists, model.dir_exists(dir), "{}: directory {}", when, dir);
    }
    for parent in PARENTS {
        if model.dir_exists(parent) {
            let names = fs.read_dir(if parent.is_empty() { "/" } else { parent }).unwrap().len();
            let expected = model.files.keys().filter(|f| self::parent(f) == parent).count()
                + model.dirs.iter().filter(|d| self::parent(d) == parent).count()
                + usize::from(parent.is_empty()); // lost+found
            prop_assert_eq!(names, expected, "{}: entries in {:?}", when, parent);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn operations_match_the_model_and_synced_images_are_clean(ops in proptest::collection::vec(op(), 1..40)) {
        let options = Options { cache_blocks: 8, clock: || 1_700_000_000, ..Options::default() };
        let mut fs = Ext2::mount_with(MemoryDevice::new(empty_image().clone()), options).unwrap();
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let when = format!("step {step} {op:?}");
            match *op {
                Op::Write { file, offset, len, seed } => {
                    let path = file_path(file);
                    let expect = model.dir_exists(parent(&path));
                    let data = pattern(len as usize, seed);
                    let result = fs.resolve(&path).or_else(|_| fs.create(&path, 0o644))
                        .and_then(|ino| fs.write_at(ino, offset.into(), &data));
                    prop_assert_eq!(result.is_ok(), expect, "{}: {:?}", when, result.err());
                    if let Ok(ino) = fs.resolve(&path) {
                        model.touched.insert(ino);
                    }
                    if expect {
                        // An empty write at any offset changes nothing (as POSIX says).
                        let content = model.files.entry(path).or_default();
                        let end = offset as usize + data.len();
                        if !data.is_empty() {
                            if content.len() < end {
                                content.resize(end, 0);
                            }
                            content[offset as usize..end].copy_from_slice(&data);
                        }
                    }
                }
                Op::Truncate { file, len } => {
                    let path = file_path(file);
                    let expect = model.files.contains_key(&path);
                    if let Ok(ino) = fs.resolve(&path) {
                        model.touched.insert(ino);
                    }
                    let result = fs.resolve(&path).and_then(|ino| fs.set_len(ino, len.into()));
                    prop_assert_eq!(result.is_ok(), expect, "{}: {:?}", when, result.err());
                    if let Some(content) = model.files.get_mut(&path) {
                        content.resize(len as usize, 0);
                    }
                }
                Op::Remove { file } => {
                    let path = file_path(file);
                    let result = fs.remove_file(&path);
                    prop_assert_eq!(result.is_ok(), model.files.remove(&path).is_some(), "{}: {:?}", when, result.err());
                }
                Op::Mkdir { dir } => {
                    let dir = DIRS[dir as usize % DIRS.len()];
                    let expect = model.dir_exists(parent(dir)) && !model.dir_exists(dir);
                    let result = fs.create_dir(dir);
                    prop_assert_eq!(result.is_ok(), expect, "{}: {:?}", when, result.err());
                    if expect {
                        model.dirs.push(dir.into());
                    }
                }
                Op::Rmdir { dir } => {
                    let dir = DIRS[dir as usize % DIRS.len()];
                    let expect = model.dir_exists(dir) && model.is_empty_dir(dir);
                    let result = fs.remove_dir(dir);
                    prop_assert_eq!(result.is_ok(), expect, "{}: {:?}", when, result.err());
                    if expect {
                        model.dirs.retain(|d| d != dir);
                    }
                }
                Op::Rename { from, to } => {
                    let (from, to) = (file_path(from), file_path(to));
                    let expect = model.files.contains_key(&from) && model.dir_exists(parent(&to));
                    let result = fs.rename(&from, &to);
                    prop_assert_eq!(result.is_ok(), expect, "{}: {:?}", when, result.err());
                    if expect && from != to {
                        let content = model.files.remove(&from).unwrap();
                        model.files.insert(to, content);
                    }
                }
                Op::SyncAndKill => {
                    fs.sync().unwrap();
                    // The VM dies here: the device holds what sync wrote.
                    check_image(fs.device().data().to_vec(), &model, &when)?;
                    model.synced = model.files.iter().map(|(path, data)| (fs.resolve(path).unwrap(), data.clone())).collect();
                    model.touched.clear();
                }
                Op::Kill => {
                    let mut crashed = Ext2::mount(MemoryDevice::new(fs.device().data().to_vec())).unwrap();
                    for (&ino, data) in model.synced.iter().filter(|(ino, _)| !model.touched.contains(ino)) {
                        // A deleted inode (its removal reached the disk) is skipped.
                        let Ok(stat) = crashed.stat(ino) else { continue };
                        if stat.kind != FileKind::File || stat.links == 0 {
                            continue;
                        }
                        let mut back = vec![0u8; data.len() + 1];
                        let n = crashed.read_at(ino, 0, &mut back).unwrap_or(usize::MAX);
                        prop_assert!(n == data.len() && back[..n] == data[..], "{}: inode {} differs", when, ino);
                    }
                }
            }
        }
        let device = fs.unmount().unwrap();
        check_image(device.into_inner(), &model, "after unmount")?;
    }
}
