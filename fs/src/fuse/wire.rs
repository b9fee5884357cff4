//! FUSE messages (`linux/fuse.h`, ABI 7.31), little-endian as virtio-fs
//! carries them: requests built, replies checked and parsed.
//!
//! Nothing the server sends is trusted: [`check_reply`] checks the
//! header (length equal to what the device wrote and within the buffers,
//! the request's id, an error code in the errno range with no body) and
//! each parser the exact size of its structure; directory entries are
//! checked one by one ([`dirents`]). Failures are `InvalidData` with a
//! fixed message; an error code is std's kind for it ([`errno_error`]).

use alloc::vec::Vec;

use toro_io::{Error, ErrorKind, Result};

use crate::ext2::{FileKind, Stat};

/// `FUSE_KERNEL_VERSION`.
pub const MAJOR: u32 = 7;
/// The minor version this client speaks (virtio-fs needs at least 7.27).
pub const MINOR: u32 = 31;
/// `fuse_in_header`.
pub const IN_HEADER: usize = 40;
/// `fuse_out_header`.
pub const OUT_HEADER: usize = 16;
/// `fuse_init_out` (7.23+).
pub const INIT_OUT: usize = 64;
/// `fuse_init_out` before 7.23 (the least a server may send).
pub const INIT_OUT_MIN: usize = 24;
/// `fuse_attr`.
pub const ATTR: usize = 88;
/// `fuse_entry_out`.
pub const ENTRY_OUT: usize = 40 + ATTR;
/// `fuse_attr_out`.
pub const ATTR_OUT: usize = 16 + ATTR;
/// `fuse_open_out`.
pub const OPEN_OUT: usize = 16;
/// `fuse_write_out`.
pub const WRITE_OUT: usize = 8;
/// `fuse_statfs_out`.
pub const STATFS_OUT: usize = 80;
/// `fuse_dirent` without its name.
pub const DIRENT_HEADER: usize = 24;
/// Longest name in a directory entry (`FUSE_NAME_MAX`).
pub const NAME_MAX: usize = 1024;
/// Longest name in a request (what Linux filesystems allow).
pub const REQUEST_NAME_MAX: usize = 255;

/// Request codes (`enum fuse_opcode`).
pub mod opcode {
    /// Look up a name in a directory.
    pub const LOOKUP: u32 = 1;
    /// Give back lookups of one node.
    pub const FORGET: u32 = 2;
    /// Attributes.
    pub const GETATTR: u32 = 3;
    /// Change attributes (size).
    pub const SETATTR: u32 = 4;
    /// A symbolic link's target.
    pub const READLINK: u32 = 5;
    /// Make a symbolic link.
    pub const SYMLINK: u32 = 6;
    /// Make a directory.
    pub const MKDIR: u32 = 9;
    /// Remove a file.
    pub const UNLINK: u32 = 10;
    /// Remove a directory.
    pub const RMDIR: u32 = 11;
    /// Rename.
    pub const RENAME: u32 = 12;
    /// Open a file.
    pub const OPEN: u32 = 14;
    /// Read.
    pub const READ: u32 = 15;
    /// Write.
    pub const WRITE: u32 = 16;
    /// Filesystem counts.
    pub const STATFS: u32 = 17;
    /// Close a file.
    pub const RELEASE: u32 = 18;
    /// Make a file durable.
    pub const FSYNC: u32 = 20;
    /// Before a close.
    pub const FLUSH: u32 = 25;
    /// Start a session.
    pub const INIT: u32 = 26;
    /// Open a directory.
    pub const OPENDIR: u32 = 27;
    /// Directory entries.
    pub const READDIR: u32 = 28;
    /// Close a directory.
    pub const RELEASEDIR: u32 = 29;
    /// Make a file and open it.
    pub const CREATE: u32 = 35;
    /// Give back lookups of many nodes.
    pub const BATCH_FORGET: u32 = 42;
}

/// `open(2)` flags as FUSE passes them (Linux's values).
pub mod flags {
    /// Read only.
    pub const O_RDONLY: u32 = 0;
    /// Write only.
    pub const O_WRONLY: u32 = 1;
    /// Read and write.
    pub const O_RDWR: u32 = 2;
    /// Create.
    pub const O_CREAT: u32 = 0o100;
    /// With `O_CREAT`: fail if it exists.
    pub const O_EXCL: u32 = 0o200;
}

/// `FATTR_SIZE`.
const FATTR_SIZE: u32 = 1 << 3;
/// `FATTR_FH`.
const FATTR_FH: u32 = 1 << 6;
/// `FUSE_GETATTR_FH`.
const GETATTR_FH: u32 = 1;

pub(crate) const fn corrupt(message: &'static str) -> Error {
    Error::from_static(ErrorKind::InvalidData, message)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A request being built: the header, then the arguments.
#[derive(Clone, Debug)]
pub struct Request {
    bytes: Vec<u8>,
    /// Bytes that follow the request in a second buffer (`WRITE`'s data).
    payload: usize,
}

impl Request {
    /// A request `opcode` with id `unique` on `node` (uid, gid, pid 0).
    pub fn new(opcode: u32, unique: u64, node: u64) -> Self {
        let mut bytes = Vec::with_capacity(IN_HEADER + 64);
        bytes.extend_from_slice(&0u32.to_le_bytes()); // len, set as arguments are added
        bytes.extend_from_slice(&opcode.to_le_bytes());
        bytes.extend_from_slice(&unique.to_le_bytes());
        bytes.extend_from_slice(&node.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]); // uid, gid, pid, total_extlen + padding
        let mut request = Request { bytes, payload: 0 };
        request.set_len();
        request
    }

    fn set_len(&mut self) {
        let len = (self.bytes.len() + self.payload) as u32;
        self.bytes[..4].copy_from_slice(&len.to_le_bytes());
    }

    fn u32(mut self, value: u32) -> Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.set_len();
        self
    }

    fn u64(mut self, value: u64) -> Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self.set_len();
        self
    }

    /// The bytes to send (the header's length counts a payload sent after them).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The request's id.
    pub fn unique(&self) -> u64 {
        u64_at(&self.bytes, 8)
    }

    /// The request's code.
    pub fn opcode(&self) -> u32 {
        u32_at(&self.bytes, 4)
    }

    /// A name argument, NUL-terminated: not empty, at most 255 bytes, no
    /// `/` or NUL (`InvalidFilename` otherwise). Also used for a symbolic
    /// link's target, which may hold `/` and be up to 4095 bytes.
    pub fn name(mut self, name: &[u8]) -> Result<Self> {
        let target = self.opcode() == opcode::SYMLINK && self.bytes.len() > IN_HEADER;
        let (limit, slash_ok) = if target { (4095, true) } else { (REQUEST_NAME_MAX, false) };
        if name.is_empty() || name.len() > limit || name.contains(&0) || (!slash_ok && name.contains(&b'/')) {
            return Err(Error::from_static(
                ErrorKind::InvalidFilename,
                "a name must be 1 to 255 bytes without NUL or '/'",
            ));
        }
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
        self.set_len();
        Ok(self)
    }

    /// `fuse_init_in` (7.31, no flags: no writeback cache, no DAX).
    pub fn init_in(self) -> Self {
        self.u32(MAJOR).u32(MINOR).u32(0).u32(0)
    }

    /// `fuse_getattr_in`.
    pub fn getattr_in(self, fh: Option<u64>) -> Self {
        self.u32(if fh.is_some() { GETATTR_FH } else { 0 }).u32(0).u64(fh.unwrap_or(0))
    }

    /// `fuse_setattr_in` setting the size through `fh`.
    pub fn setattr_size(self, fh: u64, size: u64) -> Self {
        let request = self.u32(FATTR_SIZE | FATTR_FH).u32(0).u64(fh).u64(size);
        // lock_owner, atime, mtime, ctime; 3 nsec, mode, unused, uid, gid, unused
        (0..4).fold(request, |r, _| r.u64(0)).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0)
    }

    /// `fuse_open_in`.
    pub fn open_in(self, flags: u32) -> Self {
        self.u32(flags).u32(0)
    }

    /// `fuse_create_in` (then the name).
    pub fn create_in(self, flags: u32, mode: u32) -> Self {
        self.u32(flags).u32(0o100000 | mode).u32(0).u32(0)
    }

    /// `fuse_mkdir_in` (then the name).
    pub fn mkdir_in(self, mode: u32) -> Self {
        self.u32(mode).u32(0)
    }

    /// `fuse_rename_in` (then both names).
    pub fn rename_in(self, new_dir: u64) -> Self {
        self.u64(new_dir)
    }

    /// `fuse_read_in` (also `READDIR`'s).
    pub fn read_in(self, fh: u64, offset: u64, size: usize) -> Self {
        self.u64(fh).u64(offset).u32(size as u32).u32(0).u64(0).u32(0).u32(0)
    }

    /// `fuse_write_in`; the `size` bytes of data follow in a second buffer.
    pub fn write_in(mut self, fh: u64, offset: u64, size: usize) -> Self {
        self.payload = size;
        self.u64(fh).u64(offset).u32(size as u32).u32(0).u64(0).u32(0).u32(0)
    }

    /// `fuse_release_in` (also `RELEASEDIR`'s).
    pub fn release_in(self, fh: u64) -> Self {
        self.u64(fh).u32(0).u32(0).u64(0)
    }

    /// `fuse_flush_in`.
    pub fn flush_in(self, fh: u64) -> Self {
        self.u64(fh).u32(0).u32(0).u64(0)
    }

    /// `fuse_fsync_in`.
    pub fn fsync_in(self, fh: u64) -> Self {
        self.u64(fh).u32(0).u32(0)
    }

    /// `fuse_forget_in`.
    pub fn forget_in(self, lookups: u64) -> Self {
        self.u64(lookups)
    }

    /// `fuse_batch_forget_in` and its `fuse_forget_one`s.
    pub fn batch_forget(self, forgets: &[(u64, u64)]) -> Self {
        let request = self.u32(forgets.len() as u32).u32(0);
        forgets.iter().fold(request, |r, &(node, lookups)| r.u64(node).u64(lookups))
    }
}

/// Std's kind (and a fixed message) for a FUSE error code (a positive errno).
pub fn errno_error(errno: u32) -> Error {
    use ErrorKind::*;
    let (kind, message) = match errno {
        1 => (PermissionDenied, "virtio-fs: operation not permitted (EPERM)"),
        2 => (NotFound, "virtio-fs: no such file or directory (ENOENT)"),
        5 => (Other, "virtio-fs: input/output error on the host (EIO)"),
        9 => (InvalidInput, "virtio-fs: bad file handle (EBADF)"),
        12 => (OutOfMemory, "virtio-fs: the host is out of memory (ENOMEM)"),
        13 => (PermissionDenied, "virtio-fs: permission denied (EACCES)"),
        16 => (ResourceBusy, "virtio-fs: resource busy (EBUSY)"),
        17 => (AlreadyExists, "virtio-fs: file exists (EEXIST)"),
        18 => (CrossesDevices, "virtio-fs: cross-device link (EXDEV)"),
        20 => (NotADirectory, "virtio-fs: not a directory (ENOTDIR)"),
        21 => (IsADirectory, "virtio-fs: is a directory (EISDIR)"),
        22 => (InvalidInput, "virtio-fs: invalid argument (EINVAL)"),
        // As the ext2 mounts' open-file limit (docs/fs.md: std has no stable kind for them).
        23 | 24 => (QuotaExceeded, "virtio-fs: too many open files on the host (EMFILE/ENFILE)"),
        26 => (ExecutableFileBusy, "virtio-fs: text file busy (ETXTBSY)"),
        27 => (FileTooLarge, "virtio-fs: file too large (EFBIG)"),
        28 => (StorageFull, "virtio-fs: no space left on the host (ENOSPC)"),
        30 => (ReadOnlyFilesystem, "virtio-fs: read-only filesystem (EROFS)"),
        31 => (TooManyLinks, "virtio-fs: too many links (EMLINK)"),
        36 => (InvalidFilename, "virtio-fs: file name too long (ENAMETOOLONG)"),
        38 | 95 => (Unsupported, "virtio-fs: not supported by the server (ENOSYS/EOPNOTSUPP)"),
        39 => (DirectoryNotEmpty, "virtio-fs: directory not empty (ENOTEMPTY)"),
        40 => (Other, "virtio-fs: too many levels of symbolic links (ELOOP)"),
        116 => (StaleNetworkFileHandle, "virtio-fs: stale file handle (ESTALE)"),
        122 => (QuotaExceeded, "virtio-fs: disk quota exceeded (EDQUOT)"),
        _ => (Other, "virtio-fs: the server returned an error"),
    };
    Error::from_static(kind, message)
}

/// Checks a reply: `head` holds (at least) its header, `used` is what the
/// device says it wrote, `capacity` the bytes of the reply buffers.
/// Returns the body's length (after the header), or the error the reply
/// carries, or `InvalidData` for a reply that breaks the protocol.
pub fn check_reply(unique: u64, head: &[u8], used: usize, capacity: usize) -> Result<usize> {
    if used < OUT_HEADER || head.len() < OUT_HEADER {
        return Err(corrupt("FUSE reply shorter than its header"));
    }
    if used > capacity {
        return Err(corrupt("FUSE reply longer than its buffers"));
    }
    let len = u32_at(head, 0) as usize;
    let error = u32_at(head, 4) as i32;
    if len != used {
        return Err(corrupt("FUSE reply length differs from what the device wrote"));
    }
    if u64_at(head, 8) != unique {
        return Err(corrupt("FUSE reply for another request"));
    }
    match error {
        0 => Ok(len - OUT_HEADER),
        -4095..=-1 if len == OUT_HEADER => Err(errno_error(error.unsigned_abs())),
        -4095..=-1 => Err(corrupt("FUSE error reply with a body")),
        _ => Err(corrupt("FUSE reply with an impossible error code")),
    }
}

/// `body` must be exactly `size` bytes.
pub fn expect_size(body: &[u8], size: usize, _what: &'static str) -> Result<()> {
    if body.len() == size {
        Ok(())
    } else {
        Err(corrupt("FUSE reply of the wrong size for its request"))
    }
}

/// `fuse_init_out`: what the server settled on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitOut {
    /// Major version (7).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Flags the server accepted.
    pub flags: u32,
    /// Largest `WRITE` it takes.
    pub max_write: u32,
    /// Largest request in pages (0: not said).
    pub max_pages: u16,
}

impl InitOut {
    /// Parses and checks the version: major 7, minor 27 or later (what virtio-fs needs).
    pub fn parse(body: &[u8]) -> Result<Self> {
        if body.len() != INIT_OUT && body.len() != INIT_OUT_MIN {
            return Err(corrupt("FUSE INIT reply of the wrong size"));
        }
        let out = InitOut {
            major: u32_at(body, 0),
            minor: u32_at(body, 4),
            flags: u32_at(body, 12),
            max_write: u32_at(body, 20),
            max_pages: if body.len() == INIT_OUT { u16::from_le_bytes([body[28], body[29]]) } else { 0 },
        };
        if out.major != MAJOR || out.minor < 27 {
            return Err(Error::from_static(ErrorKind::Unsupported, "FUSE server speaks a version other than 7.27+"));
        }
        if out.max_write < 4096 {
            return Err(corrupt("FUSE INIT reply with max_write under 4096"));
        }
        Ok(out)
    }
}

/// `fuse_attr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    /// Inode number on the host.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks held.
    pub blocks: u64,
    /// Last access (seconds since the epoch).
    pub atime: u64,
    /// Last modification.
    pub mtime: u64,
    /// Last status change.
    pub ctime: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Attr {
    fn parse(bytes: &[u8]) -> Self {
        Attr {
            ino: u64_at(bytes, 0),
            size: u64_at(bytes, 8),
            blocks: u64_at(bytes, 16),
            atime: u64_at(bytes, 24),
            mtime: u64_at(bytes, 32),
            ctime: u64_at(bytes, 40),
            mode: u32_at(bytes, 60),
            nlink: u32_at(bytes, 64),
            uid: u32_at(bytes, 68),
            gid: u32_at(bytes, 72),
        }
    }

    /// The kind from the mode's type bits.
    pub fn kind(&self) -> FileKind {
        match self.mode & 0o170000 {
            0o100000 => FileKind::File,
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            _ => FileKind::Special,
        }
    }

    /// As `toro::fs` shows attributes (the host's inode number cut to 32
    /// bits, times to seconds below 2^32, links to 65535).
    pub fn stat(&self) -> Stat {
        let seconds = |t: u64| t.min(u64::from(u32::MAX)) as u32;
        Stat {
            ino: self.ino as u32,
            kind: self.kind(),
            permissions: (self.mode & 0o7777) as u16,
            size: self.size,
            links: self.nlink.min(u32::from(u16::MAX)) as u16,
            uid: self.uid,
            gid: self.gid,
            atime: seconds(self.atime),
            mtime: seconds(self.mtime),
            ctime: seconds(self.ctime),
            allocated: self.blocks.saturating_mul(512),
        }
    }
}

/// `fuse_entry_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryOut {
    /// The node id (one lookup of it is now held).
    pub node: u64,
    /// Its attributes.
    pub attr: Attr,
}

impl EntryOut {
    /// Parses; node id 0 (a negative entry) is `NotFound`, the root's id a protocol error.
    pub fn parse(body: &[u8]) -> Result<Self> {
        expect_size(body, ENTRY_OUT, "entry")?;
        Self::parse_prefix(body)
    }

    fn parse_prefix(body: &[u8]) -> Result<Self> {
        let node = u64_at(body, 0);
        if node == 0 {
            return Err(errno_error(2));
        }
        if node == super::ROOT {
            return Err(corrupt("FUSE entry reply naming the root"));
        }
        Ok(EntryOut { node, attr: Attr::parse(&body[40..40 + ATTR]) })
    }
}

/// `fuse_attr_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrOut {
    /// The attributes.
    pub attr: Attr,
}

impl AttrOut {
    /// Parses.
    pub fn parse(body: &[u8]) -> Result<Self> {
        expect_size(body, ATTR_OUT, "attr")?;
        Ok(AttrOut { attr: Attr::parse(&body[16..16 + ATTR]) })
    }
}

/// `fuse_open_out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOut {
    /// The server's handle.
    pub fh: u64,
}

impl OpenOut {
    /// Parses.
    pub fn parse(body: &[u8]) -> Result<Self> {
        expect_size(body, OPEN_OUT, "open")?;
        Ok(OpenOut { fh: u64_at(body, 0) })
    }
}

/// `CREATE`'s reply: `fuse_entry_out` then `fuse_open_out`.
pub fn parse_create(body: &[u8]) -> Result<(EntryOut, OpenOut)> {
    expect_size(body, ENTRY_OUT + OPEN_OUT, "create")?;
    Ok((EntryOut::parse_prefix(&body[..ENTRY_OUT])?, OpenOut::parse(&body[ENTRY_OUT..])?))
}

/// `fuse_write_out`: the bytes written (more than `asked` is a protocol error).
pub fn parse_write(body: &[u8], asked: usize) -> Result<usize> {
    expect_size(body, WRITE_OUT, "write")?;
    let size = u32_at(body, 0) as usize;
    if size > asked {
        return Err(corrupt("FUSE WRITE reply says more was written than sent"));
    }
    Ok(size)
}

/// `fuse_statfs_out`.
pub fn parse_statfs(body: &[u8]) -> Result<super::StatFs> {
    expect_size(body, STATFS_OUT, "statfs")?;
    Ok(super::StatFs {
        blocks: u64_at(body, 0),
        free: u64_at(body, 8),
        available: u64_at(body, 16),
        files: u64_at(body, 24),
        free_files: u64_at(body, 32),
        block_size: u32_at(body, 40),
        name_max: u32_at(body, 44),
    })
}

/// One `fuse_dirent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent<'a> {
    /// Inode number on the host.
    pub ino: u64,
    /// Where the next `READDIR` starts.
    pub offset: u64,
    /// The kind (`DT_*`).
    pub kind: FileKind,
    /// The name.
    pub name: &'a [u8],
}

/// The entries of a `READDIR` reply, each checked: a whole header, a name
/// of 1 to 1024 bytes without `/` or NUL, inside the reply; the padding to
/// 8 bytes may be missing after the last.
pub fn dirents(body: &[u8]) -> impl Iterator<Item = Result<Dirent<'_>>> {
    let mut rest = body;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < DIRENT_HEADER {
            rest = &[];
            return Some(Err(corrupt("FUSE READDIR reply ends inside an entry")));
        }
        let namelen = u32_at(rest, 16) as usize;
        let kind = match u32_at(rest, 20) {
            4 => FileKind::Dir,
            8 => FileKind::File,
            10 => FileKind::Symlink,
            _ => FileKind::Special,
        };
        if namelen == 0 || namelen > NAME_MAX || DIRENT_HEADER + namelen > rest.len() {
            rest = &[];
            return Some(Err(corrupt("FUSE READDIR entry with a bad name length")));
        }
        let name = &rest[DIRENT_HEADER..DIRENT_HEADER + namelen];
        if name.contains(&0) || name.contains(&b'/') {
            rest = &[];
            return Some(Err(corrupt("FUSE READDIR entry name holds NUL or '/'")));
        }
        let entry = Dirent { ino: u64_at(rest, 0), offset: u64_at(rest, 8), kind, name };
        let record = (DIRENT_HEADER + namelen).next_multiple_of(8);
        rest = rest.get(record..).unwrap_or(&[]);
        Some(Ok(entry))
    })
}
