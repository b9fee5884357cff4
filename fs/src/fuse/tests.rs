//! The FUSE client against a server in memory: every operation, the
//! lookup accounting (every `LOOKUP` given back), std's error kinds, and
//! replies that break the protocol (targeted, then random) giving typed
//! errors, never a panic, with the session usable afterwards.

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use super::wire::{self, opcode};
use super::*;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, u64>),
    Link(Vec<u8>),
}

/// What a tampering hook may do to a reply: its bytes and the length the device claims.
type Tamper = Box<dyn FnMut(u32, &mut Vec<u8>, &mut usize)>;

/// A FUSE server over a tree in memory.
struct Fake {
    nodes: BTreeMap<u64, Kind>,
    next_node: u64,
    /// Lookups the client holds, per node.
    lookups: BTreeMap<u64, u64>,
    handles: BTreeMap<u64, u64>,
    next_fh: u64,
    tamper: Option<Tamper>,
    opcodes: Vec<u32>,
}

impl Fake {
    fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Kind::Dir(BTreeMap::new()));
        Fake {
            nodes,
            next_node: 2,
            lookups: BTreeMap::new(),
            handles: BTreeMap::new(),
            next_fh: 10,
            tamper: None,
            opcodes: Vec::new(),
        }
    }

    fn held(&self) -> u64 {
        self.lookups.values().sum()
    }

    fn attr(&self, node: u64) -> [u8; wire::ATTR] {
        let mut a = [0u8; wire::ATTR];
        let (mode, size) = match &self.nodes[&node] {
            Kind::File(data) => (0o100644u32, data.len() as u64),
            Kind::Dir(_) => (0o040755, 4096),
            Kind::Link(target) => (0o120777, target.len() as u64),
        };
        a[0..8].copy_from_slice(&(node + 1000).to_le_bytes());
        a[8..16].copy_from_slice(&size.to_le_bytes());
        a[32..40].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        a[60..64].copy_from_slice(&mode.to_le_bytes());
        a[64..68].copy_from_slice(&1u32.to_le_bytes());
        a
    }

    fn entry(&mut self, node: u64) -> Vec<u8> {
        *self.lookups.entry(node).or_insert(0) += 1;
        let mut out = Vec::new();
        out.extend_from_slice(&node.to_le_bytes());
        out.extend_from_slice(&[0u8; 32]);
        out.extend_from_slice(&self.attr(node));
        out
    }

    fn attr_out(&self, node: u64) -> Vec<u8> {
        let mut out = vec![0u8; 16];
        out.extend_from_slice(&self.attr(node));
        out
    }

    fn dir(&mut self, node: u64) -> core::result::Result<&mut BTreeMap<Vec<u8>, u64>, i32> {
        match self.nodes.get_mut(&node) {
            Some(Kind::Dir(entries)) => Ok(entries),
            Some(_) => Err(20),
            None => Err(2),
        }
    }

    fn make(&mut self, parent: u64, name: &[u8], kind: Kind) -> core::result::Result<u64, i32> {
        let node = self.next_node;
        let entries = self.dir(parent)?;
        if entries.contains_key(name) {
            return Err(17);
        }
        entries.insert(name.to_vec(), node);
        self.nodes.insert(node, kind);
        self.next_node += 1;
        Ok(node)
    }

    /// One request: its reply body, or an errno.
    fn serve(&mut self, op: u32, node: u64, args: &[u8], payload: &[u8]) -> core::result::Result<Vec<u8>, i32> {
        let name_at = |at: usize| -> Vec<u8> {
            let end = args[at..].iter().position(|&b| b == 0).expect("NUL-terminated name");
            args[at..at + end].to_vec()
        };
        match op {
            opcode::INIT => {
                assert_eq!((u32_at(args, 0), u32_at(args, 4)), (wire::MAJOR, wire::MINOR));
                let mut out = vec![0u8; wire::INIT_OUT];
                out[0..4].copy_from_slice(&7u32.to_le_bytes());
                out[4..8].copy_from_slice(&31u32.to_le_bytes());
                out[20..24].copy_from_slice(&(64u32 * 1024).to_le_bytes());
                Ok(out)
            }
            opcode::LOOKUP => {
                let name = name_at(0);
                let child = *self.dir(node)?.get(&name).ok_or(2)?;
                Ok(self.entry(child))
            }
            opcode::GETATTR => Ok(self.attr_out(node)),
            opcode::SETATTR => {
                assert_eq!(args.len(), 88);
                let size = u64_at(args, 16) as usize;
                match self.nodes.get_mut(&node) {
                    Some(Kind::File(data)) => data.resize(size, 0),
                    _ => return Err(21),
                }
                Ok(self.attr_out(node))
            }
            opcode::READLINK => match &self.nodes[&node] {
                Kind::Link(target) => Ok(target.clone()),
                _ => Err(22),
            },
            opcode::SYMLINK => {
                let name = name_at(0);
                let target = name_at(name.len() + 1);
                let child = self.make(node, &name, Kind::Link(target))?;
                Ok(self.entry(child))
            }
            opcode::MKDIR => {
                let child = self.make(node, &name_at(8), Kind::Dir(BTreeMap::new()))?;
                Ok(self.entry(child))
            }
            opcode::CREATE => {
                let flags = u32_at(args, 0);
                let name = name_at(16);
                let child = match self.dir(node)?.get(&name) {
                    Some(_) if flags & wire::flags::O_EXCL != 0 => return Err(17),
                    Some(&child) => child,
                    None => self.make(node, &name, Kind::File(Vec::new()))?,
                };
                let mut out = self.entry(child);
                self.next_fh += 1;
                self.handles.insert(self.next_fh, child);
                out.extend_from_slice(&self.next_fh.to_le_bytes());
                out.extend_from_slice(&[0u8; 8]);
                Ok(out)
            }
            opcode::UNLINK | opcode::RMDIR => {
                let name = name_at(0);
                let child = *self.dir(node)?.get(&name).ok_or(2)?;
                match (&self.nodes[&child], op) {
                    (Kind::Dir(entries), opcode::RMDIR) if !entries.is_empty() => return Err(39),
                    (Kind::Dir(_), opcode::UNLINK) => return Err(21),
                    (Kind::Dir(_), _) | (_, opcode::UNLINK) => {}
                    _ => return Err(20),
                }
                self.dir(node)?.remove(&name);
                Ok(Vec::new())
            }
            opcode::RENAME => {
                let new_dir = u64_at(args, 0);
                let old = name_at(8);
                let new = name_at(8 + old.len() + 1);
                let child = self.dir(node)?.remove(&old).ok_or(2)?;
                self.dir(new_dir)?.insert(new, child);
                Ok(Vec::new())
            }
            opcode::OPEN | opcode::OPENDIR => {
                self.next_fh += 1;
                self.handles.insert(self.next_fh, node);
                let mut out = self.next_fh.to_le_bytes().to_vec();
                out.extend_from_slice(&[0u8; 8]);
                Ok(out)
            }
            opcode::READ => {
                let (fh, offset, size) = (u64_at(args, 0), u64_at(args, 8) as usize, u32_at(args, 16) as usize);
                assert_eq!(self.handles.get(&fh), Some(&node), "READ on a handle of another node");
                match &self.nodes[&node] {
                    Kind::File(data) => Ok(data.get(offset..).unwrap_or(&[]).iter().take(size).copied().collect()),
                    _ => Err(21),
                }
            }
            opcode::WRITE => {
                let (fh, offset, size) = (u64_at(args, 0), u64_at(args, 8) as usize, u32_at(args, 16) as usize);
                assert_eq!(self.handles.get(&fh), Some(&node));
                assert_eq!(size, payload.len());
                let Some(Kind::File(data)) = self.nodes.get_mut(&node) else { return Err(21) };
                if data.len() < offset + size {
                    data.resize(offset + size, 0);
                }
                data[offset..offset + size].copy_from_slice(payload);
                let mut out = (size as u32).to_le_bytes().to_vec();
                out.extend_from_slice(&[0u8; 4]);
                Ok(out)
            }
            opcode::READDIR => {
                let (offset, size) = (u64_at(args, 8) as usize, u32_at(args, 16) as usize);
                let mut names: Vec<(Vec<u8>, u64)> = vec![(b".".to_vec(), node), (b"..".to_vec(), node)];
                names.extend(self.dir(node)?.iter().map(|(n, &c)| (n.clone(), c)));
                let mut out = Vec::new();
                for (i, (name, child)) in names.iter().enumerate().skip(offset) {
                    let record = (wire::DIRENT_HEADER + name.len()).next_multiple_of(8);
                    if out.len() + record > size {
                        break;
                    }
                    let kind = match self.nodes[child] {
                        Kind::File(_) => 8u32,
                        Kind::Dir(_) => 4,
                        Kind::Link(_) => 10,
                    };
                    out.extend_from_slice(&(child + 1000).to_le_bytes());
                    out.extend_from_slice(&(i as u64 + 1).to_le_bytes());
                    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                    out.extend_from_slice(&kind.to_le_bytes());
                    out.extend_from_slice(name);
                    out.resize(out.len().next_multiple_of(8), 0);
                }
                Ok(out)
            }
            opcode::RELEASE | opcode::RELEASEDIR => {
                self.handles.remove(&u64_at(args, 0)).ok_or(9)?;
                Ok(Vec::new())
            }
            opcode::FLUSH | opcode::FSYNC => {
                self.handles.get(&u64_at(args, 0)).ok_or(9)?;
                Ok(Vec::new())
            }
            opcode::STATFS => {
                let mut out = vec![0u8; wire::STATFS_OUT];
                out[0..8].copy_from_slice(&1000u64.to_le_bytes());
                out[40..44].copy_from_slice(&4096u32.to_le_bytes());
                out[44..48].copy_from_slice(&255u32.to_le_bytes());
                Ok(out)
            }
            _ => Err(38),
        }
    }
}

impl Channel for Fake {
    fn exchange(&mut self, request: &[u8], payload: &[u8], head: &mut [u8], data: &mut [u8]) -> Result<usize> {
        assert_eq!(u32_at(request, 0) as usize, request.len() + payload.len(), "the header's length");
        let (op, unique, node) = (u32_at(request, 4), u64_at(request, 8), u64_at(request, 16));
        self.opcodes.push(op);
        let (error, body) = match self.serve(op, node, &request[wire::IN_HEADER..], payload) {
            Ok(body) => (0i32, body),
            Err(errno) => (-errno, Vec::new()),
        };
        let mut reply = Vec::new();
        reply.extend_from_slice(&((wire::OUT_HEADER + body.len()) as u32).to_le_bytes());
        reply.extend_from_slice(&error.to_le_bytes());
        reply.extend_from_slice(&unique.to_le_bytes());
        reply.extend_from_slice(&body);
        let mut used = reply.len();
        if let Some(tamper) = &mut self.tamper {
            tamper(op, &mut reply, &mut used);
        }
        // The device writes what fits (the virtqueue checks `used` against the chain).
        let mut bytes = reply.iter();
        for slot in head.iter_mut().chain(data.iter_mut()) {
            match bytes.next() {
                Some(&b) => *slot = b,
                None => break,
            }
        }
        Ok(used)
    }

    fn send(&mut self, request: &[u8]) -> Result<()> {
        assert_eq!(u32_at(request, 0) as usize, request.len());
        match u32_at(request, 4) {
            opcode::BATCH_FORGET => {
                let count = u32_at(request, 40) as usize;
                assert_eq!(request.len(), 48 + 16 * count);
                for i in 0..count {
                    let (node, n) = (u64_at(request, 48 + 16 * i), u64_at(request, 56 + 16 * i));
                    let held = self.lookups.get_mut(&node).expect("forgetting a node never looked up");
                    assert!(*held >= n, "forgetting more lookups than held");
                    *held -= n;
                }
            }
            other => panic!("unexpected message without reply: {other}"),
        }
        Ok(())
    }
}

fn session() -> Session<Fake> {
    Session::new(Fake::new()).expect("INIT")
}

fn rw() -> Open {
    Open { read: true, write: true, create: true, ..Open::default() }
}

fn kind<T: core::fmt::Debug>(result: Result<T>) -> ErrorKind {
    result.expect_err("an error").kind()
}

#[test]
fn requests_have_the_spec_sizes() {
    use wire::Request;
    let size = |r: Request| r.bytes().len() - wire::IN_HEADER;
    assert_eq!(Request::new(1, 7, 1).bytes().len(), 40);
    assert_eq!(size(Request::new(opcode::INIT, 1, 0).init_in()), 16);
    assert_eq!(size(Request::new(opcode::GETATTR, 1, 1).getattr_in(Some(3))), 16);
    assert_eq!(size(Request::new(opcode::SETATTR, 1, 1).setattr_size(3, 9)), 88);
    assert_eq!(size(Request::new(opcode::OPEN, 1, 1).open_in(0)), 8);
    assert_eq!(size(Request::new(opcode::CREATE, 1, 1).create_in(0, 0o644)), 16);
    assert_eq!(size(Request::new(opcode::MKDIR, 1, 1).mkdir_in(0o755)), 8);
    assert_eq!(size(Request::new(opcode::RENAME, 1, 1).rename_in(1)), 8);
    assert_eq!(size(Request::new(opcode::READ, 1, 1).read_in(1, 2, 3)), 40);
    assert_eq!(size(Request::new(opcode::RELEASE, 1, 1).release_in(1)), 24);
    assert_eq!(size(Request::new(opcode::FLUSH, 1, 1).flush_in(1)), 24);
    assert_eq!(size(Request::new(opcode::FSYNC, 1, 1).fsync_in(1)), 16);
    assert_eq!(size(Request::new(opcode::FORGET, 1, 1).forget_in(1)), 8);
    assert_eq!(size(Request::new(opcode::BATCH_FORGET, 1, 0).batch_forget(&[(5, 1), (6, 2)])), 8 + 32);
    let write = Request::new(opcode::WRITE, 1, 1).write_in(1, 0, 5000);
    assert_eq!(u32_at(write.bytes(), 0) as usize, 40 + 40 + 5000, "the length counts the payload");
    let named = Request::new(opcode::LOOKUP, 4, 1).name(b"abc").unwrap();
    assert_eq!(&named.bytes()[40..], b"abc\0");
    assert_eq!(u32_at(named.bytes(), 0), 44);
    for bad in [&b""[..], b"a/b", b"a\0b", &[b'x'; 256]] {
        assert_eq!(kind(Request::new(opcode::LOOKUP, 1, 1).name(bad)), ErrorKind::InvalidFilename);
    }
    let link = Request::new(opcode::SYMLINK, 1, 1).name(b"l").unwrap().name(b"../a/b").unwrap();
    assert_eq!(&link.bytes()[40..], b"l\0../a/b\0");
}

#[test]
fn every_operation_round_trips_and_every_lookup_is_given_back() {
    let mut s = session();
    assert_eq!(s.init.max_write, 64 * 1024);
    s.create_dir("/a").unwrap();
    s.create_dir("/a/b").unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (h, stat) = s.open("/a/b/file", rw()).unwrap();
    assert_eq!((stat.kind, stat.size), (FileKind::File, 0));
    assert_eq!(s.channel().held(), 1, "the open file holds its node's lookup");
    assert_eq!(s.write_at(h, 0, &data).unwrap(), data.len());
    let mut back = vec![0u8; 400_000];
    assert_eq!(s.read_at(h, 0, &mut back).unwrap(), data.len(), "a short read at the end");
    assert_eq!(&back[..data.len()], &data[..]);
    assert_eq!(s.stat(h).unwrap().size, 300_000);
    s.set_len(h, 10).unwrap();
    s.sync_file(h).unwrap();
    s.sync().unwrap();
    assert_eq!(s.open_files(), 1);
    s.close(h).unwrap();
    assert_eq!(s.open_files(), 0);
    assert_eq!(s.channel().held(), 0);
    assert_eq!(kind(s.close(h)), ErrorKind::InvalidInput, "a closed handle");
    assert_eq!(s.metadata("/a/b/file", true).unwrap().size, 10);
    assert_eq!(s.metadata("/a/./b/../b/file", true).unwrap().size, 10, ". and .. lexically");
    assert_eq!(s.metadata("/", true).unwrap().kind, FileKind::Dir);
    s.symlink("b/file", "/a/link").unwrap();
    s.symlink("/a/link", "/abs").unwrap();
    assert_eq!(s.read_link("/a/link").unwrap(), b"b/file");
    assert_eq!(s.metadata("/abs", true).unwrap().size, 10, "links followed, relative and absolute");
    assert_eq!(s.metadata("/abs", false).unwrap().kind, FileKind::Symlink);
    let names = |s: &mut Session<Fake>, path: &str| -> Vec<String> {
        s.read_dir(path).unwrap().iter().map(|e| e.name_lossy()).collect()
    };
    assert_eq!(names(&mut s, "/a"), ["b", "link"]);
    for i in 0..700 {
        s.open(&format!("/a/b/entry-with-a-long-name-{i:04}"), rw()).map(|(h, _)| s.close(h)).unwrap().unwrap();
    }
    assert_eq!(names(&mut s, "/a/b").len(), 701, "several READDIR replies");
    s.rename("/a/b/file", "/a/moved").unwrap();
    assert_eq!(kind(s.metadata("/a/b/file", true)), ErrorKind::NotFound);
    s.remove_file("/a/moved").unwrap();
    assert_eq!(kind(s.remove_dir("/a/b")), ErrorKind::DirectoryNotEmpty);
    for i in 0..700 {
        s.remove_file(&format!("/a/b/entry-with-a-long-name-{i:04}")).unwrap();
    }
    s.remove_dir("/a/b").unwrap();
    let statfs = s.statfs().unwrap();
    assert_eq!((statfs.blocks, statfs.block_size, statfs.name_max), (1000, 4096, 255));
    assert_eq!(s.channel().held(), 0, "every lookup given back");
    assert!(s.channel().handles.is_empty(), "every handle released");
}

#[test]
fn std_error_kinds() {
    let mut s = session();
    s.create_dir("/d").unwrap();
    let (h, _) = s.open("/f", rw()).unwrap();
    s.close(h).unwrap();
    assert_eq!(kind(s.metadata("/nope", true)), ErrorKind::NotFound);
    assert_eq!(kind(s.create_dir("/d")), ErrorKind::AlreadyExists);
    assert_eq!(kind(s.create_dir("/")), ErrorKind::AlreadyExists);
    assert_eq!(kind(s.remove_dir("/")), ErrorKind::InvalidInput);
    assert_eq!(kind(s.read_dir("/f")), ErrorKind::NotADirectory);
    assert_eq!(kind(s.metadata("/f/x", true)), ErrorKind::NotADirectory);
    assert_eq!(kind(s.remove_file("/d")), ErrorKind::IsADirectory);
    assert_eq!(kind(s.open("/d", rw())), ErrorKind::IsADirectory);
    assert_eq!(kind(s.open("/f", Open { create_new: true, ..rw() })), ErrorKind::AlreadyExists);
    assert_eq!(kind(s.open("/missing", Open { read: true, ..Open::default() })), ErrorKind::NotFound);
    assert_eq!(kind(s.open(&format!("/{}", "x".repeat(256)), rw())), ErrorKind::InvalidFilename);
    s.symlink("loop", "/loop").unwrap();
    assert_eq!(kind(s.metadata("/loop", true)), ErrorKind::Other, "a symbolic link loop");
    for (errno, expected) in [
        (2, ErrorKind::NotFound),
        (23, ErrorKind::QuotaExceeded),
        (24, ErrorKind::QuotaExceeded),
        (28, ErrorKind::StorageFull),
        (30, ErrorKind::ReadOnlyFilesystem),
    ] {
        assert_eq!(wire::errno_error(errno).kind(), expected);
    }
    assert_eq!(wire::errno_error(9999).kind(), ErrorKind::Other);
    assert_eq!(s.channel().held(), 0, "lookups given back after errors too");
}

/// Each way a reply can break the protocol, on each kind of reply.
#[test]
fn bad_replies_are_invalid_data_and_the_session_goes_on() {
    type Hook = fn(&mut Vec<u8>, &mut usize);
    let hooks: [(&str, Hook); 9] = [
        ("shorter than its header", |_, used| *used = 10),
        ("length field differs", |r, _| r[0] ^= 1),
        ("another request's id", |r, _| r[8] ^= 1),
        ("positive error", |r, _| r[4..8].copy_from_slice(&5i32.to_le_bytes())),
        ("error below -4095", |r, _| r[4..8].copy_from_slice(&(-5000i32).to_le_bytes())),
        ("error with a body", |r, used| {
            r[4..8].copy_from_slice(&(-2i32).to_le_bytes());
            r.extend_from_slice(&[0; 8]);
            *used = r.len();
            r[0..4].copy_from_slice(&(*used as u32).to_le_bytes());
        }),
        ("a body one byte longer", |r, used| {
            r.push(0);
            *used = r.len();
            r[0..4].copy_from_slice(&(*used as u32).to_le_bytes());
        }),
        ("more than the buffers hold", |r, used| {
            r.resize(1 << 20, 0);
            *used = r.len();
            r[0..4].copy_from_slice(&(*used as u32).to_le_bytes());
        }),
        ("a body cut short", |r, used| {
            if r.len() > wire::OUT_HEADER {
                r.truncate(r.len() - 1);
            }
            *used = r.len();
            r[0..4].copy_from_slice(&(*used as u32).to_le_bytes());
        }),
    ];
    let ops: [(u32, fn(&mut Session<Fake>) -> Result<()>); 7] = [
        (opcode::LOOKUP, |s| s.metadata("/d", true).map(drop)),
        (opcode::GETATTR, |s| s.metadata("/", true).map(drop)),
        (opcode::MKDIR, |s| s.create_dir("/new").map(drop)),
        (opcode::OPEN, |s| s.open("/f", rw()).map(drop)),
        (opcode::READDIR, |s| s.read_dir("/").map(drop)),
        (opcode::STATFS, |s| s.statfs().map(drop)),
        (opcode::READ, |s| {
            let (h, _) = s.open("/f", rw())?;
            s.read_at(h, 0, &mut [0u8; 64]).map(drop)
        }),
    ];
    for (name, hook) in hooks {
        for (target, op) in ops {
            let mut s = session();
            s.create_dir("/d").unwrap();
            let (h, _) = s.open("/f", rw()).unwrap();
            s.write_at(h, 0, b"some bytes").unwrap();
            s.close(h).unwrap();
            s.channel.tamper = Some(Box::new(move |op, reply, used| {
                if op == target {
                    hook(reply, used)
                }
            }));
            let result = op(&mut s);
            // A cut body of a data reply is only a shorter read or listing.
            let tolerated = name == "a body cut short" && matches!(target, opcode::READ | opcode::READDIR);
            let tolerated = tolerated || (name == "a body one byte longer" && target == opcode::READ);
            if !tolerated {
                let error = result.expect_err(name);
                assert_eq!(error.kind(), ErrorKind::InvalidData, "{name} on opcode {target}: {error}");
            }
            s.channel.tamper = None;
            assert!(s.metadata("/d", true).is_ok(), "{name} on opcode {target}: the session goes on");
        }
    }
}

#[test]
fn targeted_garbage_in_structures() {
    let cases: [(&str, u32, fn(&mut Vec<u8>)); 7] = [
        ("entry naming node 0", opcode::LOOKUP, |r| r[16..24].fill(0)),
        ("entry naming the root", opcode::LOOKUP, |r| r[16..24].copy_from_slice(&1u64.to_le_bytes())),
        ("dirent name length 0", opcode::READDIR, |r| r[16 + 16..16 + 20].fill(0)),
        ("dirent name past the end", opcode::READDIR, |r| r[16 + 16..16 + 20].copy_from_slice(&900u32.to_le_bytes())),
        ("dirent name over 1024 bytes", opcode::READDIR, |r| {
            r[16 + 16..16 + 20].copy_from_slice(&9999u32.to_le_bytes())
        }),
        ("dirent offset that stays", opcode::READDIR, |r| r[16 + 8..16 + 16].fill(0)),
        ("write of more than sent", opcode::WRITE, |r| r[16..20].copy_from_slice(&u32::MAX.to_le_bytes())),
    ];
    for (name, target, hook) in cases {
        let mut s = session();
        s.create_dir("/d").unwrap();
        let (h, _) = s.open("/f", rw()).unwrap();
        s.channel.tamper = Some(Box::new(move |op, reply, _| {
            if op == target {
                hook(reply)
            }
        }));
        let result = match target {
            opcode::LOOKUP => s.metadata("/d", true).map(drop),
            opcode::READDIR => s.read_dir("/").map(drop),
            _ => s.write_at(h, 0, b"abc").map(drop),
        };
        let error = result.expect_err(name);
        let expected = if name == "entry naming node 0" { ErrorKind::NotFound } else { ErrorKind::InvalidData };
        assert_eq!(error.kind(), expected, "{name}: {error}");
    }
    // A name with '/' or NUL in a directory entry.
    let mut entry = Vec::new();
    entry.extend_from_slice(&5u64.to_le_bytes());
    entry.extend_from_slice(&1u64.to_le_bytes());
    entry.extend_from_slice(&3u32.to_le_bytes());
    entry.extend_from_slice(&8u32.to_le_bytes());
    entry.extend_from_slice(b"a/b\0\0\0\0\0");
    assert_eq!(wire::dirents(&entry).next().unwrap().unwrap_err().kind(), ErrorKind::InvalidData);
    entry[24..27].copy_from_slice(b"abc");
    let parsed = wire::dirents(&entry).next().unwrap().unwrap();
    assert_eq!((parsed.name, parsed.kind, parsed.offset), (&b"abc"[..], FileKind::File, 1));
    assert_eq!(wire::dirents(&entry[..20]).next().unwrap().unwrap_err().kind(), ErrorKind::InvalidData);
    // INIT: a version other than 7.27+, a tiny max_write.
    let mut init = vec![0u8; wire::INIT_OUT];
    init[0..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(wire::InitOut::parse(&init).unwrap_err().kind(), ErrorKind::Unsupported);
    init[0..4].copy_from_slice(&7u32.to_le_bytes());
    init[4..8].copy_from_slice(&31u32.to_le_bytes());
    assert_eq!(wire::InitOut::parse(&init).unwrap_err().kind(), ErrorKind::InvalidData);
    assert_eq!(wire::InitOut::parse(&init[..30]).unwrap_err().kind(), ErrorKind::InvalidData);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any bytes as any reply: an error or a value, never a panic; the
    /// session then still works.
    #[test]
    fn random_replies_never_panic(
        target in prop::sample::select(vec![opcode::LOOKUP, opcode::GETATTR, opcode::OPEN, opcode::READ,
            opcode::WRITE, opcode::READDIR, opcode::CREATE, opcode::MKDIR, opcode::STATFS, opcode::READLINK,
            opcode::OPENDIR, opcode::RELEASE, opcode::RENAME]),
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        keep_header in any::<bool>(),
        used_delta in -40i64..40,
    ) {
        let mut s = session();
        s.create_dir("/d").unwrap();
        s.symlink("d", "/l").unwrap();
        let (h, _) = s.open("/f", rw()).unwrap();
        s.write_at(h, 0, b"0123456789").unwrap();
        let garbage = bytes.clone();
        s.channel.tamper = Some(Box::new(move |op, reply, used| {
            if op == target {
                let header: Vec<u8> = reply[..16].to_vec();
                *reply = garbage.clone();
                if keep_header && reply.len() >= 16 {
                    // A plausible header over a garbage body.
                    reply[..16].copy_from_slice(&header);
                    reply[0..4].copy_from_slice(&(garbage.len() as u32).to_le_bytes());
                }
                *used = (reply.len() as i64 + used_delta).max(0) as usize;
            }
        }));
        let _ = s.metadata("/d", true);
        let _ = s.metadata("/l", true);
        let _ = s.read_link("/l");
        let _ = s.read_dir("/");
        let _ = s.read_at(h, 0, &mut [0u8; 32]);
        let _ = s.write_at(h, 3, b"xyz");
        let _ = s.open("/g", rw()).map(|(g, _)| s.close(g));
        let _ = s.create_dir("/e");
        let _ = s.rename("/f", "/f2");
        let _ = s.statfs();
        let _ = s.close(h);
        s.channel.tamper = None;
        prop_assert!(s.metadata("/", true).is_ok());
    }

    /// Directory entries with plausible headers (name lengths that lie,
    /// a reply cut anywhere): each is an entry or `InvalidData`.
    #[test]
    fn structured_dirents_never_panic(
        entries in prop::collection::vec(
            (any::<u64>(), 0u32..48, any::<u32>(), prop::collection::vec(any::<u8>(), 0..40)), 0..8),
        cut in 0usize..600,
    ) {
        let mut body = Vec::new();
        for (ino, namelen, kind, name) in &entries {
            body.extend_from_slice(&ino.to_le_bytes());
            body.extend_from_slice(&1u64.to_le_bytes());
            body.extend_from_slice(&namelen.to_le_bytes());
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(name);
            body.resize(body.len().next_multiple_of(8), 0);
        }
        body.truncate(cut);
        for entry in wire::dirents(&body) {
            match entry {
                Ok(entry) => prop_assert!(!entry.name.is_empty() && entry.name.len() <= 48),
                Err(error) => prop_assert_eq!(error.kind(), ErrorKind::InvalidData),
            }
        }
    }

    /// The parsers on their own, over any bytes.
    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), used in 0usize..400, unique: u64) {
        let _ = wire::check_reply(unique, &bytes, used, 300);
        let _ = wire::InitOut::parse(&bytes);
        let _ = wire::EntryOut::parse(&bytes);
        let _ = wire::AttrOut::parse(&bytes);
        let _ = wire::OpenOut::parse(&bytes);
        let _ = wire::parse_create(&bytes);
        let _ = wire::parse_write(&bytes, 10);
        let _ = wire::parse_statfs(&bytes);
        for entry in wire::dirents(&bytes) {
            if let Ok(entry) = entry {
                prop_assert!(!entry.name.is_empty() && !entry.name.contains(&b'/') && !entry.name.contains(&0));
            }
        }
    }
}
