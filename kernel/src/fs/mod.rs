//! `toro::fs`: files and directories, shaped like `std::fs`.
//!
//! Each mounted filesystem is dedicated to one CPU, its owner: the ext2
//! state, the block cache and the disk driver live there and every
//! operation runs there (a `toro::service` whose value is the mount);
//! calls from any CPU reach it through its `Handle`. The mount
//! table maps path prefixes (`/`, later `/share`) to mounts. See
//! docs/fs.md.
//!
//! Differences from std, and why: paths are `&str` (Toro has no `Path` or
//! `OsString`; names that are not UTF-8 on disk are shown lossily by
//! `DirEntry::file_name` and kept exactly by `DirEntry::file_name_bytes`);
//! times are `Duration`s since the Unix epoch (Toro has no `SystemTime`);
//! there is no current directory, so relative paths start at `/`.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use toro_fs::ext2::{self, Ext2, FileKind, Stat};
pub use toro_fs::{BlockDevice, MemoryDevice};

use crate::io::{self, Error, ErrorKind, Read, Seek, SeekFrom, Write};
use crate::service::{Builder, Handle, StartError};

/// Most mounts at once.
pub const MAX_MOUNTS: usize = 8;
/// Most files open at once on one mount.
pub const MAX_OPEN_FILES: usize = 1024;

const TOO_MANY_OPEN: Error = Error::from_static(ErrorKind::Other, "too many open files");
const NO_MOUNT: Error = Error::from_static(ErrorKind::NotFound, "no filesystem is mounted there");

/// A mounted filesystem's state, on its owner CPU.
struct Volume {
    fs: Ext2<Box<dyn BlockDevice + Send>>,
    /// Open handles per inode.
    open: BTreeMap<u32, u32>,
    /// Inodes removed while open: freed when their last handle closes.
    orphans: Vec<u32>,
    open_total: usize,
}

impl Volume {
    fn open(&mut self, ino: u32) -> io::Result<()> {
        if self.open_total >= MAX_OPEN_FILES {
            return Err(TOO_MANY_OPEN);
        }
        *self.open.entry(ino).or_insert(0) += 1;
        self.open_total += 1;
        Ok(())
    }

    fn close(&mut self, ino: u32) -> io::Result<()> {
        if let Some(count) = self.open.get_mut(&ino) {
            *count -= 1;
            self.open_total -= 1;
            if *count == 0 {
                self.open.remove(&ino);
                if let Some(i) = self.orphans.iter().position(|&o| o == ino) {
                    self.orphans.swap_remove(i);
                    return self.fs.release_orphan(ino);
                }
            }
        }
        Ok(())
    }

    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        let open = &self.open;
        if let Some(ino) = self.fs.unlink(path, |ino| open.contains_key(&ino))? {
            self.orphans.push(ino);
        }
        Ok(())
    }
}

struct MountPoint {
    /// `/` or `/name...`, without a trailing slash.
    prefix: String,
    volume: Handle<Volume>,
}

/// Mounts, published in order; never removed (a handle may outlive any
/// use, so a mount point stays valid for the life of the VM).
struct MountTable {
    count: AtomicUsize,
    slots: [UnsafeCell<MaybeUninit<MountPoint>>; MAX_MOUNTS],
}

// SAFETY: slots below `count` are written once before `count` is published
// (release) and only read after it is observed (acquire); only CPU 0
// writes (checked in `mount`), one mount at a time (cooperative
// scheduling: nothing runs between the check of `count` and its store).
unsafe impl Sync for MountTable {}

static MOUNTS: MountTable =
    MountTable { count: AtomicUsize::new(0), slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; MAX_MOUNTS] };

fn mounts() -> &'static [MountPoint] {
    let count = MOUNTS.count.load(Ordering::Acquire);
    // SAFETY: the first `count` slots are initialised and never change
    // (see `MountTable`); `MaybeUninit<T>` has `T`'s layout.
    unsafe { core::slice::from_raw_parts(MOUNTS.slots.as_ptr() as *const MountPoint, count) }
}

/// Mounts the ext2 filesystem on `device` at `prefix` (`/`, or an absolute
/// directory name such as `/data`), owned by CPU `cpu`: its state is made
/// there and every later operation on it runs there. Call from CPU 0.
pub fn mount(prefix: &str, device: Box<dyn BlockDevice + Send>, cpu: usize) -> io::Result<()> {
    mount_with(prefix, device, cpu, false)
}

/// As [`mount`]; `read_only`: never write to the device (every change is
/// refused with `ReadOnlyFilesystem`).
pub fn mount_with(prefix: &str, device: Box<dyn BlockDevice + Send>, cpu: usize, read_only: bool) -> io::Result<()> {
    if crate::cpu_id() != 0 {
        return Err(Error::from_static(ErrorKind::Unsupported, "mount from CPU 0"));
    }
    let prefix =
        normalize(prefix).ok_or(Error::from_static(ErrorKind::InvalidInput, "mount point must be absolute"))?;
    if mounts().iter().any(|m| m.prefix == prefix) {
        return Err(Error::from_static(ErrorKind::AlreadyExists, "something is mounted there already"));
    }
    if mounts().len() == MAX_MOUNTS {
        return Err(Error::from_static(ErrorKind::Other, "mount table full"));
    }
    let volume = Builder::new(alloc::format!("fs {prefix}"))
        .cpu(cpu)
        .try_start(move || {
            let options =
                ext2::Options { cache_blocks: toro_fs::block::DEFAULT_CACHE_BLOCKS, read_only, ..Default::default() };
            Ext2::mount_with(device, options).map(|fs| Volume {
                fs,
                open: BTreeMap::new(),
                orphans: Vec::new(),
                open_total: 0,
            })
        })
        .map_err(|e| match e {
            StartError::Service(e) => {
                Error::new(ErrorKind::InvalidInput, alloc::format!("no filesystem service on CPU {cpu}: {e}"))
            }
            StartError::Init(e) => e,
        })?;
    let index = MOUNTS.count.load(Ordering::Relaxed);
    // SAFETY: slot `index` is not yet published; only CPU 0 writes and
    // nothing yields between the load above and the store below.
    unsafe { (*MOUNTS.slots[index].get()).write(MountPoint { prefix, volume }) };
    MOUNTS.count.store(index + 1, Ordering::Release);
    log::info!("fs: mounted ext2 at {} (owner CPU {cpu})", mounts()[index].prefix);
    Ok(())
}

/// Mounts what `toro.mount=` names (without it: the first virtio-blk
/// device at `/`), each on its owner CPU (the entry's `@CPU`, else the
/// device's). A mount that fails is logged with its reason and left out;
/// the system goes on. Boot CPU, after the drivers started.
pub(crate) fn mount_at_boot() {
    use toro_core::mount::{self, Source};
    let given = toro_core::command_line::CommandLine::new(crate::system::command_line()).get("toro.mount");
    let entries = mount::parse(given.unwrap_or(mount::DEFAULT), |problem| log::warn!("{problem}"));
    let disks = crate::virtio::blk::devices();
    for entry in entries.iter() {
        let Source::Blk(index) = entry.source;
        let Some(blk) = disks.iter().find(|disk| disk.index() == index) else {
            // Without toro.mount, no disk simply means nothing to mount.
            if given.is_some() {
                log::error!("fs: cannot mount blk#{index} at {}: no such virtio-blk device", entry.path);
            }
            continue;
        };
        let cpu = entry.cpu.unwrap_or(blk.cpu());
        let read_only = entry.read_only || blk.config().read_only;
        match mount_with(entry.path, Box::new(blk.disk()), cpu, read_only) {
            Ok(()) => log::info!(
                "fs: blk#{index} at {}{} (owner CPU {cpu})",
                entry.path,
                if read_only { ", read-only" } else { "" }
            ),
            Err(error) => log::error!("fs: cannot mount blk#{index} at {}: {error}", entry.path),
        }
    }
}

/// `/`-separated, absolute, without `.`, empty components or a trailing
/// slash; `..` resolved lexically (as the mount table sees it).
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::from("/");
    out.push_str(&parts.join("/"));
    Some(out)
}

/// The mount holding `path` and the path inside it.
fn locate(path: &str) -> io::Result<(&'static MountPoint, String)> {
    let full = normalize(path).ok_or(NO_MOUNT)?;
    let mut best: Option<&'static MountPoint> = None;
    for mount in mounts() {
        let inside = mount.prefix == "/"
            || full == mount.prefix
            || (full.starts_with(&mount.prefix) && full.as_bytes().get(mount.prefix.len()) == Some(&b'/'));
        if inside && best.is_none_or(|b| mount.prefix.len() > b.prefix.len()) {
            best = Some(mount);
        }
    }
    let mount = best.ok_or(NO_MOUNT)?;
    // On `/`, the caller's own spelling (the filesystem resolves `..`
    // through symbolic links itself); below another mount, the rest of the
    // lexically normalised path.
    let inner = if mount.prefix == "/" { String::from(path) } else { String::from(&full[mount.prefix.len()..]) };
    Ok((mount, inner))
}

/// Writes every mount's changes to its disk and flushes it, as `sync(2)`.
pub fn sync() -> io::Result<()> {
    let mut result = Ok(());
    for mount in mounts() {
        if let Err(e) = mount.volume.call(|v| v.fs.sync()) {
            log::error!("fs: sync of {} failed: {e}", mount.prefix);
            result = Err(e);
        }
    }
    result
}

/// The kind of a file: `std::fs::FileType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileType(FileKind);

impl FileType {
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.0 == FileKind::Dir
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.0 == FileKind::File
    }
    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.0 == FileKind::Symlink
    }
}

/// Permission bits: `std::fs::Permissions` (with `PermissionsExt::mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions(u16);

impl Permissions {
    /// No write bit set.
    pub fn readonly(&self) -> bool {
        self.0 & 0o222 == 0
    }
    /// The Unix mode bits.
    pub fn mode(&self) -> u32 {
        u32::from(self.0)
    }
}

/// A file's attributes: `std::fs::Metadata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata(Stat);

impl Metadata {
    /// The kind of file.
    pub fn file_type(&self) -> FileType {
        FileType(self.0.kind)
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.0.kind == FileKind::Dir
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.0.kind == FileKind::File
    }
    /// A symbolic link (only from [`symlink_metadata`]).
    pub fn is_symlink(&self) -> bool {
        self.0.kind == FileKind::Symlink
    }
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.0.size
    }
    /// Whether the size is 0.
    pub fn is_empty(&self) -> bool {
        self.0.size == 0
    }
    /// The permission bits.
    pub fn permissions(&self) -> Permissions {
        Permissions(self.0.permissions)
    }
    /// Last modification, since the Unix epoch.
    pub fn modified(&self) -> io::Result<Duration> {
        Ok(Duration::from_secs(self.0.mtime.into()))
    }
    /// Last access, since the Unix epoch.
    pub fn accessed(&self) -> io::Result<Duration> {
        Ok(Duration::from_secs(self.0.atime.into()))
    }
    /// The inode number (`MetadataExt::ino`).
    pub fn ino(&self) -> u64 {
        self.0.ino.into()
    }
    /// Hard links (`MetadataExt::nlink`).
    pub fn nlink(&self) -> u64 {
        self.0.links.into()
    }
    /// Bytes of disk held (`MetadataExt::blocks` x 512).
    pub fn allocated(&self) -> u64 {
        self.0.allocated
    }
}

/// The attributes of the file at `path`, symbolic links followed.
pub fn metadata(path: &str) -> io::Result<Metadata> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.fs.metadata(&inner)).map(Metadata)
}

/// The attributes of the file at `path`; a symbolic link is not followed.
pub fn symlink_metadata(path: &str) -> io::Result<Metadata> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.fs.resolve_no_follow(&inner).and_then(|ino| v.fs.stat(ino))).map(Metadata)
}

/// Whether `path` names an existing file, as `std::fs::exists`.
pub fn exists(path: &str) -> io::Result<bool> {
    match metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// One entry of [`read_dir`]: `std::fs::DirEntry`.
#[derive(Clone, Debug)]
pub struct DirEntry {
    dir: String,
    entry: ext2::DirEntry,
    mount: &'static MountPoint,
}

impl DirEntry {
    /// The entry's full path.
    pub fn path(&self) -> String {
        let mut path = self.dir.trim_end_matches('/').into();
        path_push(&mut path, &self.file_name());
        path
    }
    /// The name (invalid UTF-8 replaced).
    pub fn file_name(&self) -> String {
        self.entry.name_lossy()
    }
    /// The name's bytes as on disk.
    pub fn file_name_bytes(&self) -> &[u8] {
        &self.entry.name
    }
    /// The kind, without reading the inode.
    pub fn file_type(&self) -> io::Result<FileType> {
        Ok(FileType(self.entry.kind))
    }
    /// The attributes (not following a symbolic link).
    pub fn metadata(&self) -> io::Result<Metadata> {
        let ino = self.entry.ino;
        self.mount.volume.call(|v| v.fs.stat(ino)).map(Metadata)
    }
    /// The inode number (`DirEntryExt::ino`).
    pub fn ino(&self) -> u64 {
        self.entry.ino.into()
    }
}

fn path_push(path: &mut String, name: &str) {
    path.push('/');
    path.push_str(name);
}

impl core::fmt::Debug for MountPoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mount {} (CPU {})", self.prefix, self.volume.cpu())
    }
}

/// The entries of a directory: `std::fs::ReadDir` (read in one request,
/// then iterated without further calls).
#[derive(Debug)]
pub struct ReadDir(vec::IntoIter<DirEntry>);

impl Iterator for ReadDir {
    type Item = io::Result<DirEntry>;
    fn next(&mut self) -> Option<io::Result<DirEntry>> {
        self.0.next().map(Ok)
    }
}

/// The entries of the directory at `path`, without `.` and `..`.
pub fn read_dir(path: &str) -> io::Result<ReadDir> {
    let (mount, inner) = locate(path)?;
    let entries = mount.volume.call(|v| v.fs.read_dir(&inner))?;
    let dir = String::from(path);
    Ok(ReadDir(
        entries.into_iter().map(|entry| DirEntry { dir: dir.clone(), entry, mount }).collect::<Vec<_>>().into_iter(),
    ))
}

/// Creates a directory (its parent must exist).
pub fn create_dir(path: &str) -> io::Result<()> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.fs.create_dir(&inner)).map(|_| ())
}

/// Creates a directory and any missing parents; an existing directory is fine.
pub fn create_dir_all(path: &str) -> io::Result<()> {
    let full = normalize(path).ok_or(NO_MOUNT)?;
    let mut prefix = String::new();
    for part in full.split('/').filter(|p| !p.is_empty()) {
        path_push(&mut prefix, part);
        match create_dir(&prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && metadata(&prefix)?.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes a file or symbolic link. An open file's data stays until its
/// last handle closes.
pub fn remove_file(path: &str) -> io::Result<()> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.remove_file(&inner))
}

/// Removes an empty directory.
pub fn remove_dir(path: &str) -> io::Result<()> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.fs.remove_dir(&inner))
}

/// Deepest tree [`remove_dir_all`] descends (a corrupt image may hold a
/// directory loop; this bounds the recursion, and so the stack).
pub const MAX_TREE_DEPTH: usize = 256;

/// Removes a directory and everything in it.
pub fn remove_dir_all(path: &str) -> io::Result<()> {
    remove_tree(path, 0)
}

fn remove_tree(path: &str, depth: usize) -> io::Result<()> {
    if depth >= MAX_TREE_DEPTH {
        return Err(Error::from_static(ErrorKind::InvalidData, "directory tree deeper than 256 levels (a loop?)"));
    }
    for entry in read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path(), depth + 1)?;
        } else {
            remove_file(&entry.path())?;
        }
    }
    remove_dir(path)
}

/// Renames `from` to `to` (replacing a file, or an empty directory, there).
/// [`ErrorKind::CrossesDevices`] across mounts.
pub fn rename(from: &str, to: &str) -> io::Result<()> {
    let (mount, from_inner) = locate(from)?;
    let (to_mount, to_inner) = locate(to)?;
    if !core::ptr::eq(mount, to_mount) {
        return Err(Error::from_static(ErrorKind::CrossesDevices, "rename across filesystems"));
    }
    mount.volume.call(|v| v.fs.rename(&from_inner, &to_inner))
}

/// Creates a symbolic link at `link` pointing at `original`
/// (`std::os::unix::fs::symlink`).
pub fn symlink(original: &str, link: &str) -> io::Result<()> {
    let (mount, inner) = locate(link)?;
    mount.volume.call(|v| v.fs.symlink(original, &inner)).map(|_| ())
}

/// The target of a symbolic link.
pub fn read_link(path: &str) -> io::Result<String> {
    let (mount, inner) = locate(path)?;
    let target = mount.volume.call(|v| v.fs.resolve_no_follow(&inner).and_then(|ino| v.fs.read_link(ino)))?;
    Ok(String::from_utf8_lossy(&target).into_owned())
}

/// The whole contents of a file.
pub fn read(path: &str) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut data = Vec::new();
    data.try_reserve(file.metadata()?.len() as usize)?;
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// The whole contents of a file as UTF-8 ([`ErrorKind::InvalidData`] if not).
pub fn read_to_string(path: &str) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| Error::from_static(ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

/// Makes `path` a file holding `contents` (created or truncated).
pub fn write(path: &str, contents: impl AsRef<[u8]>) -> io::Result<()> {
    File::create(path)?.write_all(contents.as_ref())
}

/// Copies a file's contents to `to` (created or truncated); returns bytes.
pub fn copy(from: &str, to: &str) -> io::Result<u64> {
    let mut source = File::open(from)?;
    let mut target = File::create(to)?;
    io::copy(&mut source, &mut target)
}

/// How to open a file: `std::fs::OpenOptions`.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
}

impl OpenOptions {
    /// All options off.
    pub fn new() -> Self {
        Self::default()
    }
    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut Self {
        self.read = read;
        self
    }
    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut Self {
        self.write = write;
        self
    }
    /// Every write goes to the end.
    pub fn append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }
    /// Empty the file on opening (needs `write`).
    pub fn truncate(&mut self, truncate: bool) -> &mut Self {
        self.truncate = truncate;
        self
    }
    /// Create the file if missing (needs `write` or `append`).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }
    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, create_new: bool) -> &mut Self {
        self.create_new = create_new;
        self
    }

    /// Opens `path` with these options (std's rules and errors).
    pub fn open(&self, path: &str) -> io::Result<File> {
        let writes = self.write || self.append;
        if !self.read && !writes {
            return Err(Error::from_static(ErrorKind::InvalidInput, "open needs read, write or append"));
        }
        if (self.truncate || self.create || self.create_new) && !writes {
            return Err(Error::from_static(ErrorKind::InvalidInput, "truncate or create without write access"));
        }
        if self.truncate && self.append {
            return Err(Error::from_static(ErrorKind::InvalidInput, "truncate and append together"));
        }
        let (mount, inner) = locate(path)?;
        let options = self.clone();
        let ino = mount.volume.call(move |v| -> io::Result<u32> {
            let ino = if options.create_new {
                v.fs.create(&inner, ext2::DEFAULT_FILE_MODE)?
            } else {
                match v.fs.resolve(&inner) {
                    Ok(ino) => ino,
                    Err(e) if e.kind() == ErrorKind::NotFound && options.create => {
                        v.fs.create(&inner, ext2::DEFAULT_FILE_MODE)?
                    }
                    Err(e) => return Err(e),
                }
            };
            let stat = v.fs.stat(ino)?;
            if stat.kind == FileKind::Dir && writes {
                return Err(Error::from_static(ErrorKind::IsADirectory, "is a directory"));
            }
            // As open(2)'s EROFS: write access to a read-only filesystem is refused at open.
            if writes && !v.fs.is_writable() {
                return Err(Error::from_static(ErrorKind::ReadOnlyFilesystem, "the filesystem is mounted read-only"));
            }
            if options.truncate && stat.size > 0 {
                v.fs.set_len(ino, 0)?;
            }
            v.open(ino)?;
            Ok(ino)
        })?;
        Ok(File { mount, ino, pos: 0, read: self.read, write: writes, append: self.append })
    }
}

/// An open file: `std::fs::File`. The position is the handle's own.
/// Closing (dropping) it releases it on the owner; data reaches the disk
/// on [`File::sync_all`], [`sync`] or a clean exit.
#[derive(Debug)]
pub struct File {
    mount: &'static MountPoint,
    ino: u32,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
}

const NOT_READABLE: Error = Error::from_static(ErrorKind::PermissionDenied, "file not opened for reading");
const NOT_WRITABLE: Error = Error::from_static(ErrorKind::PermissionDenied, "file not opened for writing");

impl File {
    /// Opens a file for reading.
    pub fn open(path: &str) -> io::Result<File> {
        OpenOptions::new().read(true).open(path)
    }

    /// Opens a file for writing, creating or truncating it.
    pub fn create(path: &str) -> io::Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).open(path)
    }

    /// Creates a new file for reading and writing; fails if it exists.
    pub fn create_new(path: &str) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create_new(true).open(path)
    }

    /// `OpenOptions::new()`.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The file's attributes.
    pub fn metadata(&self) -> io::Result<Metadata> {
        let ino = self.ino;
        self.mount.volume.call(|v| v.fs.stat(ino)).map(Metadata)
    }

    /// Truncates or extends the file (a hole) to `size` bytes.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        if !self.write {
            return Err(NOT_WRITABLE);
        }
        let ino = self.ino;
        self.mount.volume.call(|v| v.fs.set_len(ino, size))
    }

    /// Writes the filesystem's changes (this file's and the metadata they
    /// touch) to the disk and flushes the disk's cache.
    pub fn sync_all(&self) -> io::Result<()> {
        self.mount.volume.call(|v| v.fs.sync())
    }

    /// As [`File::sync_all`] (ext2 has no cheaper data-only sync).
    pub fn sync_data(&self) -> io::Result<()> {
        self.sync_all()
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.read {
            return Err(NOT_READABLE);
        }
        let (ino, pos) = (self.ino, self.pos);
        let n = self.mount.volume.call(|v| v.fs.read_at(ino, pos, buf))?;
        self.pos += n as u64;
        Ok(n)
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // One request for the rest of the file instead of many small ones.
        let remaining = self.metadata()?.len().saturating_sub(self.pos) as usize;
        let start = buf.len();
        buf.try_reserve(remaining)?;
        buf.resize(start + remaining, 0);
        let mut done = 0;
        while done < remaining {
            match self.read(&mut buf[start + done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => {
                    buf.truncate(start + done);
                    return Err(e);
                }
            }
        }
        buf.truncate(start + done);
        // Anything appended meanwhile.
        let mut chunk = [0u8; 512];
        loop {
            let n = self.read(&mut chunk)?;
            if n == 0 {
                return Ok(buf.len() - start);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.write {
            return Err(NOT_WRITABLE);
        }
        let (ino, append) = (self.ino, self.append);
        let mut pos = self.pos;
        let n = self.mount.volume.call(|v| {
            if append {
                pos = v.fs.stat(ino)?.size;
            }
            v.fs.write_at(ino, pos, buf)
        })?;
        self.pos = pos + n as u64;
        Ok(n)
    }

    /// Nothing is buffered in the handle; use [`File::sync_all`] for the disk.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (base, offset) = match pos {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::Current(n) => (self.pos, n),
            SeekFrom::End(n) => (self.metadata()?.len(), n),
        };
        self.pos = base
            .checked_add_signed(offset)
            .ok_or(Error::from_static(ErrorKind::InvalidInput, "invalid seek to a negative or overflowing position"))?;
        Ok(self.pos)
    }
}

crate::io::impl_embedded_io!(File: Read, Write, Seek);

impl Drop for File {
    fn drop(&mut self) {
        let ino = self.ino;
        if let Err(e) = self.mount.volume.call(|v| v.close(ino)) {
            log::error!("fs: closing inode {ino}: {e}");
        }
    }
}

/// Called on a clean exit: every mount's changes reach its disk.
pub(crate) fn shutdown() {
    if !mounts().is_empty() {
        let _ = sync();
    }
}
