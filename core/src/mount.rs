//! `toro.mount=...`: which disk is mounted where, and by which CPU.
//!
//! The value is `none` (mount nothing) or a comma-separated list of
//! entries `PATH=DEVICE[:ro][@CPU]`:
//!
//! - `PATH`: the mount point, absolute (`/`, `/data`, `/srv/www`): no
//!   empty, `.` or `..` components, no trailing slash, each component at
//!   most 255 bytes;
//! - `DEVICE`: `blk` (the first virtio-blk device) or `blk#N` (the `N`-th,
//!   counting from 0, in discovery order); `fs` or `fs#N` likewise for
//!   virtio-fs devices (a folder the host shares);
//! - `:ro`: mount read-only (the disk is never written);
//! - `@CPU`: the mount's owner CPU (default: the device's owner, so the
//!   filesystem calls its driver directly).
//!
//! Without `toro.mount` the kernel mounts `blk#0` at `/` and `fs#0` at
//! `/share`, those that exist ([`DEFAULT`]). Malformed entries are reported (each once, with what is
//! wrong) and left out; the rest still apply. A mount point or device
//! named twice is reported and its later entry left out.

/// What the kernel does without `toro.mount`.
pub const DEFAULT: &str = "/=blk,/share=fs";
/// Entries accepted in one value.
pub const MAX_ENTRIES: usize = 8;
/// The longest mount point.
pub const MAX_PATH: usize = 1024;
/// The longest path component (ext2's name limit).
const MAX_COMPONENT: usize = 255;

/// What is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `N`-th virtio-blk device.
    Blk(usize),
    /// The `N`-th virtio-fs device (a shared host folder).
    Fs(usize),
}

impl core::fmt::Display for Source {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Source::Blk(index) => write!(f, "blk#{index}"),
            Source::Fs(index) => write!(f, "fs#{index}"),
        }
    }
}

/// One mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The mount point.
    pub path: &'a str,
    /// The device.
    pub source: Source,
    /// Mounted read-only.
    pub read_only: bool,
    /// The owner CPU, if the entry names one.
    pub cpu: Option<usize>,
}

/// What is wrong with an entry (the entry's text is quoted in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountError<'a> {
    /// No `=DEVICE` part.
    MissingDevice(&'a str),
    /// The mount point is not an absolute, clean path.
    BadPath(&'a str),
    /// The device is not `blk`, `blk#N`, `fs` or `fs#N`.
    BadDevice(&'a str),
    /// An option other than `ro`.
    BadOption(&'a str),
    /// The CPU is not a decimal number.
    BadCpu(&'a str),
    /// The mount point was named by an earlier entry.
    DuplicatePath(&'a str),
    /// The device was named by an earlier entry.
    DuplicateDevice(&'a str),
    /// More than [`MAX_ENTRIES`] entries.
    TooMany(&'a str),
    /// `none` together with other entries.
    NoneWithOthers,
}

impl core::fmt::Display for MountError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MissingDevice(e) => write!(f, "toro.mount entry {e:?} has no =DEVICE (expected PATH=blk#N|fs#N[:ro][@CPU])"),
            Self::BadPath(e) => write!(
                f,
                "toro.mount entry {e:?}: the mount point must be an absolute path without empty, . or .. components or a trailing slash"
            ),
            Self::BadDevice(e) => write!(f, "toro.mount entry {e:?}: the device must be blk, blk#N, fs or fs#N"),
            Self::BadOption(e) => write!(f, "toro.mount entry {e:?}: the only option is :ro"),
            Self::BadCpu(e) => write!(f, "toro.mount entry {e:?}: the CPU is not a number"),
            Self::DuplicatePath(e) => write!(f, "toro.mount entry {e:?}: that mount point is named twice"),
            Self::DuplicateDevice(e) => write!(f, "toro.mount entry {e:?}: that device is named twice"),
            Self::TooMany(e) => write!(f, "toro.mount entry {e:?}: more than {MAX_ENTRIES} mounts"),
            Self::NoneWithOthers => f.write_str("toro.mount: none cannot be combined with mounts"),
        }
    }
}

/// Whether `path` is an acceptable mount point.
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else { return false };
    path.len() <= MAX_PATH
        && rest.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && part.len() <= MAX_COMPONENT && !part.contains('\0')
        })
}

/// Parses one entry.
pub fn parse_entry(text: &str) -> Result<Entry<'_>, MountError<'_>> {
    let (path, rest) = text.split_once('=').ok_or(MountError::MissingDevice(text))?;
    if !valid_path(path) {
        return Err(MountError::BadPath(text));
    }
    let (rest, cpu) = match rest.rsplit_once('@') {
        Some((rest, cpu)) => {
            let valid = !cpu.is_empty() && cpu.bytes().all(|b| b.is_ascii_digit());
            (rest, Some(cpu.parse::<usize>().ok().filter(|_| valid).ok_or(MountError::BadCpu(text))?))
        }
        None => (rest, None),
    };
    let mut parts = rest.split(':');
    let device = parts.next().unwrap_or("");
    let numbered = |rest: &str| -> Option<usize> {
        match rest {
            "" => Some(0),
            number => {
                let digits =
                    number.strip_prefix('#').filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))?;
                digits.parse().ok()
            }
        }
    };
    let source = if let Some(rest) = device.strip_prefix("blk") {
        Source::Blk(numbered(rest).ok_or(MountError::BadDevice(text))?)
    } else if let Some(rest) = device.strip_prefix("fs") {
        Source::Fs(numbered(rest).ok_or(MountError::BadDevice(text))?)
    } else {
        return Err(MountError::BadDevice(text));
    };
    let mut read_only = false;
    for option in parts {
        match option {
            "ro" => read_only = true,
            _ => return Err(MountError::BadOption(text)),
        }
    }
    Ok(Entry { path, source, read_only, cpu })
}

/// The mounts a value asks for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mounts<'a> {
    entries: [Option<Entry<'a>>; MAX_ENTRIES],
    count: usize,
}

impl<'a> Mounts<'a> {
    /// The entries kept.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<'a>> {
        self.entries[..self.count].iter().flatten()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.count
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Parses a `toro.mount` value; `problem` hears of each entry left out.
pub fn parse<'a>(value: &'a str, mut problem: impl FnMut(MountError<'a>)) -> Mounts<'a> {
    let mut mounts = Mounts { entries: [None; MAX_ENTRIES], count: 0 };
    let words = || value.split(',').map(str::trim).filter(|w| !w.is_empty());
    if words().any(|w| w == "none") {
        if words().any(|w| w != "none") {
            problem(MountError::NoneWithOthers);
        }
        return mounts;
    }
    for word in words() {
        let entry = match parse_entry(word) {
            Ok(entry) => entry,
            Err(error) => {
                problem(error);
                continue;
            }
        };
        if mounts.iter().any(|m| m.path == entry.path) {
            problem(MountError::DuplicatePath(word));
        } else if mounts.iter().any(|m| m.source == entry.source) {
            problem(MountError::DuplicateDevice(word));
        } else if mounts.count == MAX_ENTRIES {
            problem(MountError::TooMany(word));
        } else {
            mounts.entries[mounts.count] = Some(entry);
            mounts.count += 1;
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn parsed(value: &str) -> (Vec<Entry<'_>>, Vec<String>) {
        let mut problems = Vec::new();
        let mounts = parse(value, |e| problems.push(e.to_string()));
        (mounts.iter().copied().collect(), problems)
    }

    #[test]
    fn entries_with_options_and_cpus() {
        let (entries, problems) = parsed("/=blk#1, /data=blk:ro@3,/srv/www=blk#2@0");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            entries,
            [
                Entry { path: "/", source: Source::Blk(1), read_only: false, cpu: None },
                Entry { path: "/data", source: Source::Blk(0), read_only: true, cpu: Some(3) },
                Entry { path: "/srv/www", source: Source::Blk(2), read_only: false, cpu: Some(0) },
            ]
        );
        assert_eq!(
            parsed(DEFAULT).0,
            [
                Entry { path: "/", source: Source::Blk(0), read_only: false, cpu: None },
                Entry { path: "/share", source: Source::Fs(0), read_only: false, cpu: None },
            ]
        );
        assert_eq!(Source::Blk(4).to_string(), "blk#4");
        assert_eq!(Source::Fs(2).to_string(), "fs#2");
        let (entries, problems) = parsed("/=fs#1:ro@2,/d=blk#1,/e=fs");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries[0], Entry { path: "/", source: Source::Fs(1), read_only: true, cpu: Some(2) });
        assert_eq!(entries[2].source, Source::Fs(0));
    }

    #[test]
    fn none_and_empty_mount_nothing() {
        assert_eq!(parsed("none"), (Vec::new(), Vec::new()));
        assert_eq!(parsed(""), (Vec::new(), Vec::new()));
        assert_eq!(parsed(",,"), (Vec::new(), Vec::new()));
        let (entries, problems) = parsed("none,/=blk");
        assert!(entries.is_empty());
        assert_eq!(problems, ["toro.mount: none cannot be combined with mounts"]);
    }

    #[test]
    fn garbage_is_reported_and_the_rest_applies() {
        let bad = [
            ("blk", "has no =DEVICE"),
            ("data=blk", "absolute path"),
            ("/data/=blk", "absolute path"),
            ("//=blk", "absolute path"),
            ("/a/../b=blk", "absolute path"),
            ("/a/./b=blk", "absolute path"),
            ("/=", "blk, blk#N, fs or fs#N"),
            ("/=disk0", "blk, blk#N, fs or fs#N"),
            ("/=blk#", "blk, blk#N, fs or fs#N"),
            ("/=blk#-1", "blk, blk#N, fs or fs#N"),
            ("/=blk#+1", "blk, blk#N, fs or fs#N"),
            ("/=blk#99999999999999999999999", "blk, blk#N, fs or fs#N"),
            ("/=blk1", "blk, blk#N, fs or fs#N"),
            ("/=fs1", "blk, blk#N, fs or fs#N"),
            ("/=fs#", "blk, blk#N, fs or fs#N"),
            ("/=fsx", "blk, blk#N, fs or fs#N"),
            ("/=blk:rw", "only option is :ro"),
            ("/=blk:", "only option is :ro"),
            ("/=blk@", "not a number"),
            ("/=blk@x", "not a number"),
            ("/=blk@+2", "not a number"),
            ("/=blk@99999999999999999999999", "not a number"),
            ("/=blk@1@2", "blk, blk#N, fs or fs#N"),
            ("/\u{0}=blk", "absolute path"),
        ];
        for (entry, message) in bad {
            let (entries, problems) = parsed(entry);
            assert!(entries.is_empty(), "{entry:?} accepted");
            assert_eq!(problems.len(), 1, "{entry:?}");
            assert!(problems[0].contains(message), "{entry:?}: {}", problems[0]);
        }
        let long = std::format!("/{}=blk", "x".repeat(256));
        assert!(parsed(&long).0.is_empty());
        let (entries, problems) = parsed("/=blk#0,/x=bogus,/=blk#1,/y=blk#0,/z=blk#2");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].path, "/z");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[1].contains("mount point is named twice"));
        assert!(problems[2].contains("device is named twice"));
    }

    #[test]
    fn at_most_max_entries() {
        let value: Vec<String> = (0..10).map(|i| std::format!("/m{i}=blk#{i}")).collect();
        let (entries, problems) = parsed(Box::leak(value.join(",").into_boxed_str()));
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("more than 8 mounts"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A seeded byte soup over the syntax's alphabet.
        let alphabet = b"/=blk#:ro@0123456789,. x";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (state % 24) as usize;
            let mut text = String::new();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push(alphabet[(state % alphabet.len() as u64) as usize] as char);
            }
            let (entries, _) = parsed(&text);
            for entry in entries {
                assert!(valid_path(entry.path));
            }
        }
    }
}
