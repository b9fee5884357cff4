//! The FUSE protocol as a virtio-fs driver speaks it (the client side of
//! `linux/fuse.h`, ABI 7.31), and a session over it shaped for `toro::fs`.
//!
//! - [`wire`]: the requests' encoding and the replies' checks: every
//!   reply is checked (its length against what the device wrote, the
//!   request id, the error code, the exact size of the structure, every
//!   directory entry) before a field is used; a reply that fails gives
//!   [`ErrorKind::InvalidData`], an error code std's kind for it
//!   ([`wire::errno_error`]), never a panic.
//! - [`Session`]: paths walked with `LOOKUP` from the root (symbolic
//!   links followed, at most [`MAX_SYMLINKS`]), every lookup given back
//!   with one `BATCH_FORGET` at the end of the operation (a node an open
//!   file holds is forgotten when it closes), open files as (node, `fh`)
//!   pairs, reads and writes split into requests the server accepts.
//!   It runs over a [`Channel`] (the kernel's: a virtio-fs device; the
//!   host tests': a server in memory), on one owner: no locks.

pub mod wire;

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use toro_io::{Error, ErrorKind, Result};

use crate::ext2::{DirEntry, FileKind, Stat};
use wire::{opcode, Attr, Request};

/// The root directory's node id.
pub const ROOT: u64 = 1;
/// Longest chain of symbolic links a path may follow.
pub const MAX_SYMLINKS: usize = 40;
/// Most bytes one `READ` or `WRITE` asks for (the server may allow less).
pub const MAX_TRANSFER: usize = 128 * 1024;
/// Bytes asked for per `READDIR`.
const READDIR_CHUNK: usize = 16 * 1024;
/// Most entries one directory listing gives (a server repeating entries forever is cut off).
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Permission bits of new files.
pub const FILE_MODE: u32 = 0o644;
/// Permission bits of new directories.
pub const DIR_MODE: u32 = 0o755;

const LOOP: Error = Error::from_static(ErrorKind::Other, "too many levels of symbolic links");
const NOT_DIR: Error = Error::from_static(ErrorKind::NotADirectory, "not a directory");
const IS_DIR: Error = Error::from_static(ErrorKind::IsADirectory, "is a directory");
const ROOT_CHANGE: Error = Error::from_static(ErrorKind::InvalidInput, "the root of a shared folder cannot be changed");
const BAD_HANDLE: Error = Error::from_static(ErrorKind::InvalidInput, "virtio-fs: no such open file");
const WRITE_ZERO: Error = Error::from_static(ErrorKind::WriteZero, "virtio-fs: the server wrote nothing");

/// How requests reach the server: one request at a time per call, the
/// reply written into `head` and then `data` (as one byte stream).
pub trait Channel {
    /// Sends `request` then `payload` (device-readable); the server's
    /// reply fills `head` then `data`; returns the bytes it wrote.
    fn exchange(&mut self, request: &[u8], payload: &[u8], head: &mut [u8], data: &mut [u8]) -> Result<usize>;
    /// Sends a request that has no reply (`FORGET`, `BATCH_FORGET`: virtio-fs's high-priority queue).
    fn send(&mut self, request: &[u8]) -> Result<()>;
}

/// How a file is opened (std's `OpenOptions`, already checked by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Open {
    /// Read access.
    pub read: bool,
    /// Write access (also set for append).
    pub write: bool,
    /// Empty it.
    pub truncate: bool,
    /// Create it if missing.
    pub create: bool,
    /// Create it; fail if it exists.
    pub create_new: bool,
}

struct OpenFile {
    node: u64,
    fh: u64,
}

/// What `STATFS` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Blocks in all.
    pub blocks: u64,
    /// Free blocks.
    pub free: u64,
    /// Free blocks for an unprivileged user.
    pub available: u64,
    /// Inodes in all.
    pub files: u64,
    /// Free inodes.
    pub free_files: u64,
    /// Block size.
    pub block_size: u32,
    /// Longest name.
    pub name_max: u32,
}

/// A FUSE session over `C`, single-owner.
pub struct Session<C: Channel> {
    channel: C,
    unique: u64,
    /// Lookups to give back at the end of the current operation.
    forgets: Vec<(u64, u64)>,
    files: Vec<Option<OpenFile>>,
    free_files: Vec<usize>,
    max_write: usize,
    /// What `INIT` settled on.
    pub init: wire::InitOut,
}

impl<C: Channel> Session<C> {
    /// Starts a session: `FUSE_INIT`, checking the server's version.
    pub fn new(channel: C) -> Result<Self> {
        let mut session = Session {
            channel,
            unique: 0,
            forgets: Vec::new(),
            files: Vec::new(),
            free_files: Vec::new(),
            max_write: MAX_TRANSFER,
            init: wire::InitOut::default(),
        };
        let request = Request::new(opcode::INIT, session.next_unique(), 0).init_in();
        let mut head = [0u8; wire::OUT_HEADER + wire::INIT_OUT];
        let body = session.exchange_struct(&request, &[], &mut head)?;
        session.init = wire::InitOut::parse(body)?;
        session.max_write = (session.init.max_write as usize).clamp(4096, MAX_TRANSFER);
        Ok(session)
    }

    /// The channel (for counters).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    fn next_unique(&mut self) -> u64 {
        self.unique += 1;
        self.unique
    }

    /// One exchange whose reply is a structure in `head` (after the header);
    /// returns the body.
    fn exchange_struct<'h>(&mut self, request: &Request, payload: &[u8], head: &'h mut [u8]) -> Result<&'h [u8]> {
        let used = self.channel.exchange(request.bytes(), payload, head, &mut [])?;
        let body = wire::check_reply(request.unique(), head, used, head.len())?;
        Ok(&head[wire::OUT_HEADER..wire::OUT_HEADER + body])
    }

    /// One exchange whose reply carries nothing but the header.
    fn exchange_empty(&mut self, request: &Request) -> Result<()> {
        let mut head = [0u8; wire::OUT_HEADER];
        let body = self.exchange_struct(request, &[], &mut head)?;
        wire::expect_size(body, 0, "empty")
    }

    /// One exchange whose reply body is data into `data`; returns its length.
    fn exchange_data(&mut self, request: &Request, data: &mut [u8]) -> Result<usize> {
        let mut head = [0u8; wire::OUT_HEADER];
        let capacity = wire::OUT_HEADER + data.len();
        let used = self.channel.exchange(request.bytes(), &[], &mut head, data)?;
        wire::check_reply(request.unique(), &head, used, capacity)
    }

    /// Gives back the lookups of this operation (one `BATCH_FORGET`).
    fn finish(&mut self) {
        if self.forgets.is_empty() {
            return;
        }
        let forgets = core::mem::take(&mut self.forgets);
        let request = Request::new(opcode::BATCH_FORGET, self.next_unique(), 0).batch_forget(&forgets);
        // No reply: a failure only leaves the server holding the nodes.
        let _ = self.channel.send(request.bytes());
    }

    /// Runs `op`, then gives back its lookups whatever it returned.
    fn operation<R>(&mut self, op: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let result = op(self);
        self.finish();
        result
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<wire::EntryOut> {
        let request = Request::new(opcode::LOOKUP, self.next_unique(), parent).name(name)?;
        let mut head = [0u8; wire::OUT_HEADER + wire::ENTRY_OUT];
        let body = self.exchange_struct(&request, &[], &mut head)?;
        let entry = wire::EntryOut::parse(body)?;
        self.forgets.push((entry.node, 1));
        Ok(entry)
    }

    fn getattr(&mut self, node: u64, fh: Option<u64>) -> Result<Attr> {
        let request = Request::new(opcode::GETATTR, self.next_unique(), node).getattr_in(fh);
        let mut head = [0u8; wire::OUT_HEADER + wire::ATTR_OUT];
        let body = self.exchange_struct(&request, &[], &mut head)?;
        wire::AttrOut::parse(body).map(|out| out.attr)
    }

    fn readlink_node(&mut self, node: u64) -> Result<Vec<u8>> {
        let request = Request::new(opcode::READLINK, self.next_unique(), node);
        let mut target = vec![0u8; 4096];
        let n = self.exchange_data(&request, &mut target)?;
        target.truncate(n);
        if target.is_empty() || target.contains(&0) {
            return Err(wire::corrupt("FUSE READLINK reply is empty or holds a NUL"));
        }
        Ok(target)
    }

    /// Walks `path` from the root; a symbolic link as the last component
    /// is followed if `follow`. Returns the node and its attributes.
    fn walk(&mut self, path: &[u8], follow: bool) -> Result<(u64, Attr)> {
        let mut rest: VecDeque<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
        let mut ancestors: Vec<(u64, Option<Attr>)> = vec![(ROOT, None)];
        let mut links = 0;
        while let Some(part) = rest.pop_front() {
            match part.as_slice() {
                b"." => continue,
                b".." => {
                    if ancestors.len() > 1 {
                        ancestors.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let (parent, parent_attr) = *ancestors.last().expect("the root stays");
            if let Some(attr) = parent_attr {
                if attr.kind() != FileKind::Dir {
                    return Err(NOT_DIR);
                }
            }
            let entry = self.lookup(parent, &part)?;
            if entry.attr.kind() == FileKind::Symlink && (follow || !rest.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(LOOP);
                }
                let target = self.readlink_node(entry.node)?;
                if target.starts_with(b"/") {
                    ancestors.truncate(1);
                }
                for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    rest.push_front(part.to_vec());
                }
            } else {
                ancestors.push((entry.node, Some(entry.attr)));
            }
        }
        match ancestors.last().expect("the root stays") {
            (node, Some(attr)) => Ok((*node, *attr)),
            (node, None) => Ok((*node, self.getattr(*node, None)?)),
        }
    }

    /// The parent directory's node and the last name of `path`.
    fn parent<'p>(&mut self, path: &'p [u8]) -> Result<(u64, &'p [u8])> {
        let (dir, name) = split_last(path).ok_or(ROOT_CHANGE)?;
        let (node, attr) = self.walk(dir, true)?;
        if attr.kind() != FileKind::Dir {
            return Err(NOT_DIR);
        }
        Ok((node, name))
    }

    /// The attributes of `path` (a symbolic link followed if `follow`).
    pub fn metadata(&mut self, path: &str, follow: bool) -> Result<Stat> {
        self.operation(|s| s.walk(path.as_bytes(), follow).map(|(_, attr)| attr.stat()))
    }

    /// The target of the symbolic link at `path`.
    pub fn read_link(&mut self, path: &str) -> Result<Vec<u8>> {
        self.operation(|s| {
            let (node, attr) = s.walk(path.as_bytes(), false)?;
            if attr.kind() != FileKind::Symlink {
                return Err(Error::from_static(ErrorKind::InvalidInput, "not a symbolic link"));
            }
            s.readlink_node(node)
        })
    }

    /// The entries of the directory at `path`, without `.` and `..`.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        self.operation(|s| {
            let (node, attr) = s.walk(path.as_bytes(), true)?;
            if attr.kind() != FileKind::Dir {
                return Err(NOT_DIR);
            }
            let request = Request::new(opcode::OPENDIR, s.next_unique(), node).open_in(wire::flags::O_RDONLY);
            let mut head = [0u8; wire::OUT_HEADER + wire::OPEN_OUT];
            let fh = wire::OpenOut::parse(s.exchange_struct(&request, &[], &mut head)?)?.fh;
            let entries = s.read_entries(node, fh);
            let request = Request::new(opcode::RELEASEDIR, s.next_unique(), node).release_in(fh);
            let released = s.exchange_empty(&request);
            let entries = entries?;
            released?;
            Ok(entries)
        })
    }

    fn read_entries(&mut self, node: u64, fh: u64) -> Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        let mut offset = 0u64;
        let mut buffer = vec![0u8; READDIR_CHUNK];
        loop {
            let request = Request::new(opcode::READDIR, self.next_unique(), node).read_in(fh, offset, READDIR_CHUNK);
            let n = self.exchange_data(&request, &mut buffer)?;
            if n == 0 {
                return Ok(entries);
            }
            let mut last = offset;
            for dirent in wire::dirents(&buffer[..n]) {
                let dirent = dirent?;
                if dirent.offset == 0 || dirent.offset == offset {
                    return Err(wire::corrupt("FUSE READDIR entry whose offset does not move on"));
                }
                last = dirent.offset;
                if dirent.name != b"." && dirent.name != b".." {
                    if entries.len() == MAX_DIR_ENTRIES {
                        return Err(wire::corrupt("FUSE READDIR gave more than 2^20 entries"));
                    }
                    entries.push(DirEntry { name: dirent.name.to_vec(), ino: dirent.ino as u32, kind: dirent.kind });
                }
            }
            offset = last;
        }
    }

    /// Creates a directory (the root exists: `AlreadyExists`, as `mkdir("/")`).
    pub fn create_dir(&mut self, path: &str) -> Result<()> {
        if split_last(path.as_bytes()).is_none() {
            return Err(Error::from_static(ErrorKind::AlreadyExists, "the root of a shared folder exists"));
        }
        self.operation(|s| {
            let (parent, name) = s.parent(path.as_bytes())?;
            let request = Request::new(opcode::MKDIR, s.next_unique(), parent).mkdir_in(DIR_MODE).name(name)?;
            let mut head = [0u8; wire::OUT_HEADER + wire::ENTRY_OUT];
            let entry = wire::EntryOut::parse(s.exchange_struct(&request, &[], &mut head)?)?;
            s.forgets.push((entry.node, 1));
            Ok(())
        })
    }

    /// Creates a symbolic link at `link` holding `target`.
    pub fn symlink(&mut self, target: &str, link: &str) -> Result<()> {
        self.operation(|s| {
            let (parent, name) = s.parent(link.as_bytes())?;
            let request = Request::new(opcode::SYMLINK, s.next_unique(), parent).name(name)?.name(target.as_bytes())?;
            let mut head = [0u8; wire::OUT_HEADER + wire::ENTRY_OUT];
            let entry = wire::EntryOut::parse(s.exchange_struct(&request, &[], &mut head)?)?;
            s.forgets.push((entry.node, 1));
            Ok(())
        })
    }

    fn remove(&mut self, path: &str, op: u32) -> Result<()> {
        self.operation(|s| {
            let (parent, name) = s.parent(path.as_bytes())?;
            if name == b"." || name == b".." {
                return Err(Error::from_static(ErrorKind::InvalidInput, "cannot remove . or .."));
            }
            let request = Request::new(op, s.next_unique(), parent).name(name)?;
            s.exchange_empty(&request)
        })
    }

    /// Removes a file or symbolic link.
    pub fn remove_file(&mut self, path: &str) -> Result<()> {
        self.remove(path, opcode::UNLINK)
    }

    /// Removes an empty directory.
    pub fn remove_dir(&mut self, path: &str) -> Result<()> {
        self.remove(path, opcode::RMDIR)
    }

    /// Renames `from` to `to` (POSIX semantics, the server's).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.operation(|s| {
            let (old_parent, old_name) = s.parent(from.as_bytes())?;
            let (new_parent, new_name) = s.parent(to.as_bytes())?;
            let request = Request::new(opcode::RENAME, s.next_unique(), old_parent)
                .rename_in(new_parent)
                .name(old_name)?
                .name(new_name)?;
            s.exchange_empty(&request)
        })
    }

    /// What the server says about its filesystem.
    pub fn statfs(&mut self) -> Result<StatFs> {
        let request = Request::new(opcode::STATFS, self.next_unique(), ROOT);
        let mut head = [0u8; wire::OUT_HEADER + wire::STATFS_OUT];
        let body = self.exchange_struct(&request, &[], &mut head)?;
        wire::parse_statfs(body)
    }

    /// Opens (or creates) the file at `path`; returns a handle for the
    /// calls below and its attributes.
    pub fn open(&mut self, path: &str, how: Open) -> Result<(usize, Stat)> {
        self.operation(|s| {
            let access = match (how.read, how.write) {
                (_, false) => wire::flags::O_RDONLY,
                (false, true) => wire::flags::O_WRONLY,
                (true, true) => wire::flags::O_RDWR,
            };
            let existing = if how.create_new {
                None
            } else {
                match s.walk(path.as_bytes(), true) {
                    Ok(found) => Some(found),
                    Err(e) if e.kind() == ErrorKind::NotFound && how.create => None,
                    Err(e) => return Err(e),
                }
            };
            let (node, fh, mut attr) = match existing {
                Some((node, attr)) => {
                    if attr.kind() == FileKind::Dir && how.write {
                        return Err(IS_DIR);
                    }
                    let request = Request::new(opcode::OPEN, s.next_unique(), node).open_in(access);
                    let mut head = [0u8; wire::OUT_HEADER + wire::OPEN_OUT];
                    let fh = wire::OpenOut::parse(s.exchange_struct(&request, &[], &mut head)?)?.fh;
                    (node, fh, attr)
                }
                None => {
                    let (parent, name) = s.parent(path.as_bytes())?;
                    let exclusive = if how.create_new { wire::flags::O_EXCL } else { 0 };
                    let request = Request::new(opcode::CREATE, s.next_unique(), parent)
                        .create_in(access | wire::flags::O_CREAT | exclusive, FILE_MODE)
                        .name(name)?;
                    let mut head = [0u8; wire::OUT_HEADER + wire::ENTRY_OUT + wire::OPEN_OUT];
                    let body = s.exchange_struct(&request, &[], &mut head)?;
                    let (entry, open) = wire::parse_create(body)?;
                    s.forgets.push((entry.node, 1));
                    (entry.node, open.fh, entry.attr)
                }
            };
            // The open file keeps one lookup of its node until it closes.
            // (The root is never looked up: nothing to keep.)
            if let Some(i) = s.forgets.iter().rposition(|&(n, _)| n == node) {
                s.forgets.swap_remove(i);
            }
            let handle = s.insert(OpenFile { node, fh });
            if how.truncate && attr.size > 0 {
                attr = s.setattr_size(node, fh, 0)?;
            }
            Ok((handle, attr.stat()))
        })
    }

    fn insert(&mut self, file: OpenFile) -> usize {
        match self.free_files.pop() {
            Some(i) => {
                self.files[i] = Some(file);
                i
            }
            None => {
                self.files.push(Some(file));
                self.files.len() - 1
            }
        }
    }

    fn file(&self, handle: usize) -> Result<(u64, u64)> {
        match self.files.get(handle) {
            Some(Some(file)) => Ok((file.node, file.fh)),
            _ => Err(BAD_HANDLE),
        }
    }

    fn setattr_size(&mut self, node: u64, fh: u64, size: u64) -> Result<Attr> {
        let request = Request::new(opcode::SETATTR, self.next_unique(), node).setattr_size(fh, size);
        let mut head = [0u8; wire::OUT_HEADER + wire::ATTR_OUT];
        let body = self.exchange_struct(&request, &[], &mut head)?;
        wire::AttrOut::parse(body).map(|out| out.attr)
    }

    /// The open file's attributes.
    pub fn stat(&mut self, handle: usize) -> Result<Stat> {
        let (node, fh) = self.file(handle)?;
        self.getattr(node, Some(fh)).map(|attr| attr.stat())
    }

    /// Truncates or extends the open file.
    pub fn set_len(&mut self, handle: usize, size: u64) -> Result<()> {
        let (node, fh) = self.file(handle)?;
        self.setattr_size(node, fh, size).map(|_| ())
    }

    /// Reads at `offset` into `buf`; returns the bytes read (less at the end of the file).
    pub fn read_at(&mut self, handle: usize, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (node, fh) = self.file(handle)?;
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(MAX_TRANSFER);
            let at = offset
                .checked_add(done as u64)
                .ok_or(Error::from_static(ErrorKind::InvalidInput, "offset overflow"))?;
            let request = Request::new(opcode::READ, self.next_unique(), node).read_in(fh, at, want);
            let n = self.exchange_data(&request, &mut buf[done..done + want])?;
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    /// Writes `buf` at `offset`; returns the bytes written.
    pub fn write_at(&mut self, handle: usize, offset: u64, buf: &[u8]) -> Result<usize> {
        let (node, fh) = self.file(handle)?;
        let mut done = 0;
        while done < buf.len() {
            let chunk = &buf[done..(done + self.max_write).min(buf.len())];
            let at = offset
                .checked_add(done as u64)
                .ok_or(Error::from_static(ErrorKind::InvalidInput, "offset overflow"))?;
            let request = Request::new(opcode::WRITE, self.next_unique(), node).write_in(fh, at, chunk.len());
            let mut head = [0u8; wire::OUT_HEADER + wire::WRITE_OUT];
            let body = self.exchange_struct(&request, chunk, &mut head)?;
            let n = wire::parse_write(body, chunk.len())?;
            if n == 0 {
                return Err(WRITE_ZERO);
            }
            done += n;
        }
        Ok(done)
    }

    /// Makes the open file's data durable on the host (`FSYNC`).
    pub fn sync_file(&mut self, handle: usize) -> Result<()> {
        let (node, fh) = self.file(handle)?;
        let request = Request::new(opcode::FSYNC, self.next_unique(), node).fsync_in(fh);
        self.exchange_empty(&request)
    }

    /// `FSYNC` on every open file.
    pub fn sync(&mut self) -> Result<()> {
        let mut result = Ok(());
        for handle in 0..self.files.len() {
            if self.files[handle].is_some() {
                if let Err(e) = self.sync_file(handle) {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Closes an open file: `FLUSH`, `RELEASE`, and its node's lookup given back.
    pub fn close(&mut self, handle: usize) -> Result<()> {
        let (node, fh) = self.file(handle)?;
        self.files[handle] = None;
        self.free_files.push(handle);
        let request = Request::new(opcode::FLUSH, self.next_unique(), node).flush_in(fh);
        let flushed = self.exchange_empty(&request);
        let request = Request::new(opcode::RELEASE, self.next_unique(), node).release_in(fh);
        let released = self.exchange_empty(&request);
        if node != ROOT {
            self.forgets.push((node, 1));
        }
        self.finish();
        flushed.and(released)
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.files.len() - self.free_files.len()
    }
}

/// The non-empty components of a path.
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|p| !p.is_empty())
}

/// `path` as (parent, last name); `None` for the root.
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let trimmed = {
        let mut end = path.len();
        while end > 0 && path[end - 1] == b'/' {
            end -= 1;
        }
        &path[..end]
    };
    if trimmed.is_empty() {
        return None;
    }
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => Some((&trimmed[..i], &trimmed[i + 1..])),
        None => Some((b"", trimmed)),
    }
}

#[cfg(test)]
mod tests;
