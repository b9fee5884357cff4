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
use toro_fs::fuse;
pub use toro_fs::{BlockDevice, MemoryDevice};

use crate::io::{self, Error, ErrorKind, Read, Seek, SeekFrom, Write};
use crate::service::{Builder, Handle, StartError};

/// Most mounts at once.
pub const MAX_MOUNTS: usize = 8;
/// Most files open at once on one mount.
pub const MAX_OPEN_FILES: usize = 1024;

/// std has no stable kind for `EMFILE` (it decodes it as `Uncategorized`,
/// which no one can construct): `QuotaExceeded`, std's "filesystem quota
/// or some other kind of quota was exceeded", is the closest (docs/fs.md).
const TOO_MANY_OPEN: Error = Error::from_static(ErrorKind::QuotaExceeded, "too many open files");
const NO_MOUNT: Error = Error::from_static(ErrorKind::NotFound, "no filesystem is mounted there");

/// A mounted ext2 filesystem's state, on its owner CPU.
struct Ext2Volume {
    fs: Ext2<Box<dyn BlockDevice + Send>>,
    /// Open handles per inode.
    open: BTreeMap<u32, u32>,
    /// Inodes removed while open: freed when their last handle closes.
    orphans: Vec<u32>,
    open_total: usize,
}

impl Ext2Volume {
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

/// A folder shared by the host over virtio-fs: a FUSE session on the
/// mount's owner CPU, its requests carried by the device's driver.
struct ShareVolume {
    session: fuse::Session<ShareChannel>,
    read_only: bool,
}

/// The FUSE session's way to the host: the virtio-fs driver's service.
struct ShareChannel(crate::virtio::fs::VirtioFs);

impl fuse::Channel for ShareChannel {
    fn exchange(&mut self, request: &[u8], payload: &[u8], head: &mut [u8], data: &mut [u8]) -> io::Result<usize> {
        self.0.exchange(request, payload, head, data)
    }
    fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.0.send(request)
    }
}

/// A mounted filesystem, on its owner CPU: what each operation runs on.
enum Volume {
    Ext2(Ext2Volume),
    Share(ShareVolume),
}

const READ_ONLY: Error = Error::from_static(ErrorKind::ReadOnlyFilesystem, "the filesystem is mounted read-only");

impl Volume {
    fn share(&mut self, change: bool) -> io::Result<&mut fuse::Session<ShareChannel>> {
        match self {
            Volume::Share(share) if change && share.read_only => Err(READ_ONLY),
            Volume::Share(share) => Ok(&mut share.session),
            Volume::Ext2(_) => unreachable!("an ext2 volume"),
        }
    }

    fn metadata(&mut self, path: &str, follow: bool) -> io::Result<Stat> {
        match self {
            Volume::Ext2(v) if follow => v.fs.metadata(path),
            Volume::Ext2(v) => v.fs.resolve_no_follow(path).and_then(|ino| v.fs.stat(ino)),
            Volume::Share(v) => v.session.metadata(path, follow),
        }
    }

    /// The attributes of a directory entry (inode `ino` at `path`), not following a link.
    fn entry_stat(&mut self, ino: u32, path: &str) -> io::Result<Stat> {
        match self {
            Volume::Ext2(v) => v.fs.stat(ino),
            Volume::Share(v) => v.session.metadata(path, false),
        }
    }

    fn read_dir(&mut self, path: &str) -> io::Result<Vec<ext2::DirEntry>> {
        match self {
            Volume::Ext2(v) => v.fs.read_dir(path),
            Volume::Share(v) => v.session.read_dir(path),
        }
    }

    fn create_dir(&mut self, path: &str) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.create_dir(path).map(|_| ()),
            Volume::Share(_) => self.share(true)?.create_dir(path),
        }
    }

    fn remove_file(&mut self, path: &str) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.remove_file(path),
            Volume::Share(_) => self.share(true)?.remove_file(path),
        }
    }

    fn remove_dir(&mut self, path: &str) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.remove_dir(path),
            Volume::Share(_) => self.share(true)?.remove_dir(path),
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.rename(from, to),
            Volume::Share(_) => self.share(true)?.rename(from, to),
        }
    }

    fn symlink(&mut self, original: &str, link: &str) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.symlink(original, link).map(|_| ()),
            Volume::Share(_) => self.share(true)?.symlink(original, link),
        }
    }

    fn read_link(&mut self, path: &str) -> io::Result<Vec<u8>> {
        match self {
            Volume::Ext2(v) => v.fs.resolve_no_follow(path).and_then(|ino| v.fs.read_link(ino)),
            Volume::Share(v) => v.session.read_link(path),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.sync(),
            Volume::Share(v) => v.session.sync(),
        }
    }

    fn statfs(&mut self) -> io::Result<FsStats> {
        let (stats, read_only) = match self {
            Volume::Ext2(v) => (v.fs.statfs(), !v.fs.is_writable()),
            Volume::Share(v) => (v.session.statfs()?, v.read_only),
        };
        Ok(FsStats {
            block_size: u64::from(stats.block_size),
            blocks: stats.blocks,
            blocks_free: stats.free,
            blocks_available: stats.available,
            files: stats.files,
            files_free: stats.free_files,
            name_max: u64::from(stats.name_max),
            read_only,
        })
    }

    /// Opens `path`; returns the handle a [`File`] keeps (ext2: the inode;
    /// a share: the session's open file).
    fn open(&mut self, path: &str, options: &OpenOptions) -> io::Result<u32> {
        let writes = options.write || options.append;
        let v = match self {
            Volume::Ext2(v) => v,
            Volume::Share(_) => {
                let how = fuse::Open {
                    read: options.read,
                    write: writes,
                    truncate: options.truncate,
                    create: options.create,
                    create_new: options.create_new,
                };
                let (handle, _) = self.share(writes)?.open(path, how)?;
                return Ok(handle as u32);
            }
        };
        // As open(2) takes a descriptor first: past the limit nothing is
        // created or truncated.
        if v.open_total >= MAX_OPEN_FILES {
            return Err(TOO_MANY_OPEN);
        }
        let ino = if options.create_new {
            v.fs.create(path, ext2::DEFAULT_FILE_MODE)?
        } else {
            match v.fs.resolve(path) {
                Ok(ino) => ino,
                Err(e) if e.kind() == ErrorKind::NotFound && options.create => {
                    v.fs.create(path, ext2::DEFAULT_FILE_MODE)?
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
            return Err(READ_ONLY);
        }
        if options.truncate && stat.size > 0 {
            v.fs.set_len(ino, 0)?;
        }
        v.open(ino)?;
        Ok(ino)
    }

    fn close(&mut self, handle: u32) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.close(handle),
            Volume::Share(v) => v.session.close(handle as usize),
        }
    }

    fn stat(&mut self, handle: u32) -> io::Result<Stat> {
        match self {
            Volume::Ext2(v) => v.fs.stat(handle),
            Volume::Share(v) => v.session.stat(handle as usize),
        }
    }

    fn set_len(&mut self, handle: u32, size: u64) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.set_len(handle, size),
            Volume::Share(v) => v.session.set_len(handle as usize, size),
        }
    }

    fn sync_file(&mut self, handle: u32) -> io::Result<()> {
        match self {
            Volume::Ext2(v) => v.fs.sync(),
            Volume::Share(v) => v.session.sync_file(handle as usize),
        }
    }

    fn read_at(&mut self, handle: u32, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Volume::Ext2(v) => v.fs.read_at(handle, pos, buf),
            Volume::Share(v) => v.session.read_at(handle as usize, pos, buf),
        }
    }

    fn write_at(&mut self, handle: u32, pos: u64, buf: &[u8]) -> io::Result<usize> {
        match self {
            Volume::Ext2(v) => v.fs.write_at(handle, pos, buf),
            Volume::Share(v) => v.session.write_at(handle as usize, pos, buf),
        }
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
    mount_volume(prefix, cpu, "ext2", move || {
        let options =
            ext2::Options { cache_blocks: toro_fs::block::DEFAULT_CACHE_BLOCKS, read_only, ..Default::default() };
        Ext2::mount_with(device, options)
            .map(|fs| Volume::Ext2(Ext2Volume { fs, open: BTreeMap::new(), orphans: Vec::new(), open_total: 0 }))
    })
}

/// Mounts the folder a virtio-fs device shares at `prefix`, owned by CPU
/// `cpu` (the FUSE session lives there; its requests go to the device's
/// driver on the device's owner CPU). `read_only`: every change refused.
/// Call from CPU 0.
pub fn mount_share(prefix: &str, device: crate::virtio::fs::VirtioFs, cpu: usize, read_only: bool) -> io::Result<()> {
    mount_volume(prefix, cpu, "virtio-fs", move || {
        let session = fuse::Session::new(ShareChannel(device))?;
        Ok(Volume::Share(ShareVolume { session, read_only }))
    })
}

fn mount_volume(
    prefix: &str,
    cpu: usize,
    kind: &str,
    init: impl FnOnce() -> io::Result<Volume> + Send + 'static,
) -> io::Result<()> {
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
    let volume = Builder::new(alloc::format!("fs {prefix}")).cpu(cpu).try_start(init).map_err(|e| match e {
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
    log::info!("fs: mounted {kind} at {} (owner CPU {cpu})", mounts()[index].prefix);
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
        let index = match entry.source {
            Source::Blk(index) => index,
            Source::Fs(index) => {
                mount_share_at_boot(entry, index, given.is_some());
                continue;
            }
        };
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

fn mount_share_at_boot(entry: &toro_core::mount::Entry<'_>, index: usize, named: bool) {
    let Some(share) = crate::virtio::fs::devices().iter().find(|fs| fs.index() == index) else {
        if named {
            log::error!("fs: cannot mount fs#{index} at {}: no such virtio-fs device", entry.path);
        }
        return;
    };
    let cpu = entry.cpu.unwrap_or(share.cpu());
    match mount_share(entry.path, share.clone(), cpu, entry.read_only) {
        Ok(()) => log::info!(
            "fs: fs#{index} (tag {:?}) at {}{} (owner CPU {cpu})",
            share.tag(),
            entry.path,
            if entry.read_only { ", read-only" } else { "" }
        ),
        Err(error) => log::error!("fs: cannot mount fs#{index} at {}: {error}", entry.path),
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

/// A mounted filesystem's size and free space (`statfs(2)`'s `struct
/// statvfs`; `std` has no such call, so the names are POSIX's, shortened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Free blocks an application may use (without the reserve for root).
    pub blocks_available: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub files_free: u64,
    /// Longest name, in bytes.
    pub name_max: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

impl FsStats {
    /// Bytes free for an application: `blocks_available * block_size`.
    pub fn available_bytes(&self) -> u64 {
        self.blocks_available.saturating_mul(self.block_size)
    }
}

/// The size and free space of the filesystem that holds `path` (asked of
/// its owner CPU), as `statvfs(3)`.
pub fn statfs(path: &str) -> io::Result<FsStats> {
    let (mount, _) = locate(path)?;
    mount.volume.call(|v| v.statfs())
}

/// Writes every mount's changes to its disk and flushes it, as `sync(2)`.
pub fn sync() -> io::Result<()> {
    let mut result = Ok(());
    for mount in mounts() {
        if let Err(e) = mount.volume.call(|v| v.sync()) {
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
    mount.volume.call(|v| v.metadata(&inner, true)).map(Metadata)
}

/// The attributes of the file at `path`; a symbolic link is not followed.
pub fn symlink_metadata(path: &str) -> io::Result<Metadata> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.metadata(&inner, false)).map(Metadata)
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
        let (_, inner) = locate(&self.path())?;
        self.mount.volume.call(|v| v.entry_stat(ino, &inner)).map(Metadata)
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
    let entries = mount.volume.call(|v| v.read_dir(&inner))?;
    let dir = String::from(path);
    Ok(ReadDir(
        entries.into_iter().map(|entry| DirEntry { dir: dir.clone(), entry, mount }).collect::<Vec<_>>().into_iter(),
    ))
}

/// Creates a directory (its parent must exist).
pub fn create_dir(path: &str) -> io::Result<()> {
    let (mount, inner) = locate(path)?;
    mount.volume.call(|v| v.create_dir(&inner))
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
    mount.volume.call(|v| v.remove_dir(&inner))
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
    mount.volume.call(|v| v.rename(&from_inner, &to_inner))
}

/// Creates a symbolic link at `link` pointing at `original`
/// (`std::os::unix::fs::symlink`).
pub fn symlink(original: &str, link: &str) -> io::Result<()> {
    let (mount, inner) = locate(link)?;
    mount.volume.call(|v| v.symlink(original, &inner))
}

/// The target of a symbolic link.
pub fn read_link(path: &str) -> io::Result<String> {
    let (mount, inner) = locate(path)?;
    let target = mount.volume.call(|v| v.read_link(&inner))?;
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
        let ino = mount.volume.call(move |v| v.open(&inner, &options))?;
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
        self.mount.volume.call(|v| v.stat(ino)).map(Metadata)
    }

    /// Truncates or extends the file (a hole) to `size` bytes.
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        if !self.write {
            return Err(NOT_WRITABLE);
        }
        let ino = self.ino;
        self.mount.volume.call(|v| v.set_len(ino, size))
    }

    /// Writes the filesystem's changes (this file's and the metadata they
    /// touch) to the disk and flushes the disk's cache.
    pub fn sync_all(&self) -> io::Result<()> {
        let ino = self.ino;
        self.mount.volume.call(|v| v.sync_file(ino))
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
        let n = self.mount.volume.call(|v| v.read_at(ino, pos, buf))?;
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
                pos = v.stat(ino)?.size;
            }
            v.write_at(ino, pos, buf)
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
