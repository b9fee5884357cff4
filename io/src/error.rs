//! `Error`, `ErrorKind` and `Result`, shaped like `std::io`'s.

use alloc::boxed::Box;
use core::fmt;

/// The general category of an I/O error: std's `std::io::ErrorKind`, with
/// the same names and meanings (the stable ones as of Rust 1.95).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An entity (file, directory, address) was not found.
    NotFound,
    /// The operation lacked the necessary privileges.
    PermissionDenied,
    /// The remote refused the connection.
    ConnectionRefused,
    /// The remote reset the connection.
    ConnectionReset,
    /// The remote host is not reachable.
    HostUnreachable,
    /// The network containing the remote host is not reachable.
    NetworkUnreachable,
    /// The remote aborted the connection.
    ConnectionAborted,
    /// The operation needs a connection that does not exist.
    NotConnected,
    /// The socket address is already in use.
    AddrInUse,
    /// The address does not exist or is not local.
    AddrNotAvailable,
    /// The system's networking is down.
    NetworkDown,
    /// The other end of a pipe or connection is closed.
    BrokenPipe,
    /// The entity already exists.
    AlreadyExists,
    /// The operation would block and was asked not to.
    WouldBlock,
    /// A path component that must be a directory is not one.
    NotADirectory,
    /// The entity is a directory where a non-directory was expected.
    IsADirectory,
    /// A directory to be removed is not empty.
    DirectoryNotEmpty,
    /// The filesystem or storage medium is read-only.
    ReadOnlyFilesystem,
    /// A stale network file handle.
    StaleNetworkFileHandle,
    /// A parameter was incorrect.
    InvalidInput,
    /// Data (on disk, on the wire) is not valid for the operation.
    InvalidData,
    /// The operation's time limit passed.
    TimedOut,
    /// `write` returned `Ok(0)`: nothing more can be written.
    WriteZero,
    /// The storage is full.
    StorageFull,
    /// A seek went to a position that cannot be reached.
    NotSeekable,
    /// A quota was exceeded.
    QuotaExceeded,
    /// A file grew past the filesystem's largest file.
    FileTooLarge,
    /// The resource is busy.
    ResourceBusy,
    /// An executable file is busy.
    ExecutableFileBusy,
    /// A deadlock would occur.
    Deadlock,
    /// A cross-device (cross-mount) link or rename.
    CrossesDevices,
    /// Too many links to one entity.
    TooManyLinks,
    /// A file name is invalid (too long, bad characters).
    InvalidFilename,
    /// An argument list is too long.
    ArgumentListTooLong,
    /// The operation was interrupted and may be retried.
    Interrupted,
    /// The operation is not supported here.
    Unsupported,
    /// A read ended before the expected amount of data ("failed to fill whole buffer").
    UnexpectedEof,
    /// An allocation failed.
    OutOfMemory,
    /// The operation is still in progress.
    InProgress,
    /// Any error not in another kind.
    Other,
}

impl ErrorKind {
    /// The short description std prints for the kind.
    pub const fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NotFound => "entity not found",
            PermissionDenied => "permission denied",
            ConnectionRefused => "connection refused",
            ConnectionReset => "connection reset",
            HostUnreachable => "host unreachable",
            NetworkUnreachable => "network unreachable",
            ConnectionAborted => "connection aborted",
            NotConnected => "not connected",
            AddrInUse => "address in use",
            AddrNotAvailable => "address not available",
            NetworkDown => "network down",
            BrokenPipe => "broken pipe",
            AlreadyExists => "entity already exists",
            WouldBlock => "operation would block",
            NotADirectory => "not a directory",
            IsADirectory => "is a directory",
            DirectoryNotEmpty => "directory not empty",
            ReadOnlyFilesystem => "read-only filesystem or storage medium",
            StaleNetworkFileHandle => "stale network file handle",
            InvalidInput => "invalid input parameter",
            InvalidData => "invalid data",
            TimedOut => "timed out",
            WriteZero => "write zero",
            StorageFull => "no storage space",
            NotSeekable => "seek on unseekable file",
            QuotaExceeded => "quota exceeded",
            FileTooLarge => "file too large",
            ResourceBusy => "resource busy",
            ExecutableFileBusy => "executable file busy",
            Deadlock => "deadlock",
            CrossesDevices => "cross-device link or rename",
            TooManyLinks => "too many links",
            InvalidFilename => "invalid filename",
            ArgumentListTooLong => "argument list too long",
            Interrupted => "operation interrupted",
            Unsupported => "unsupported",
            UnexpectedEof => "unexpected end of file",
            OutOfMemory => "out of memory",
            InProgress => "in progress",
            Other => "other error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An I/O error: a kind, and optionally a message or an inner error.
///
/// Like `std::io::Error`; one word plus a tag when it carries no inner
/// error, so the common cases (`ErrorKind::NotFound.into()`,
/// [`Error::from_static`]) never allocate.
pub struct Error {
    repr: Repr,
}

enum Repr {
    Simple(ErrorKind),
    Static(ErrorKind, &'static str),
    Custom(Box<Custom>),
}

struct Custom {
    kind: ErrorKind,
    error: Box<dyn core::error::Error + Send + Sync>,
}

/// `std::io::Result`: a result whose error is [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// An error of `kind` wrapping `error` (a message or another error),
    /// as `std::io::Error::new`.
    pub fn new<E>(kind: ErrorKind, error: E) -> Error
    where
        E: Into<Box<dyn core::error::Error + Send + Sync>>,
    {
        Error { repr: Repr::Custom(Box::new(Custom { kind, error: error.into() })) }
    }

    /// An error of kind [`ErrorKind::Other`] wrapping `error`, as
    /// `std::io::Error::other`.
    pub fn other<E>(error: E) -> Error
    where
        E: Into<Box<dyn core::error::Error + Send + Sync>>,
    {
        Error::new(ErrorKind::Other, error)
    }

    /// An error of `kind` with a fixed message, without allocating.
    ///
    /// Toro's addition (std has it only internally, as `const_error!`):
    /// parsers and drivers report bad input with it on paths where the heap
    /// may be exhausted. [`Error::get_ref`] returns `None` for it, as std's
    /// simple-message errors do.
    pub const fn from_static(kind: ErrorKind, message: &'static str) -> Error {
        Error { repr: Repr::Static(kind, message) }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match &self.repr {
            Repr::Simple(kind) | Repr::Static(kind, _) => *kind,
            Repr::Custom(custom) => custom.kind,
        }
    }

    /// The inner error given to [`Error::new`], if any.
    pub fn get_ref(&self) -> Option<&(dyn core::error::Error + Send + Sync + 'static)> {
        match &self.repr {
            Repr::Custom(custom) => Some(&*custom.error),
            _ => None,
        }
    }

    /// The inner error given to [`Error::new`], mutably, if any.
    pub fn get_mut(&mut self) -> Option<&mut (dyn core::error::Error + Send + Sync + 'static)> {
        match &mut self.repr {
            Repr::Custom(custom) => Some(&mut *custom.error),
            _ => None,
        }
    }

    /// The inner error given to [`Error::new`], if any, by value.
    pub fn into_inner(self) -> Option<Box<dyn core::error::Error + Send + Sync>> {
        match self.repr {
            Repr::Custom(custom) => Some(custom.error),
            _ => None,
        }
    }

    /// The fixed message of an [`Error::from_static`] error, if it is one.
    pub fn static_message(&self) -> Option<&'static str> {
        match self.repr {
            Repr::Static(_, message) => Some(message),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Error {
        Error { repr: Repr::Simple(kind) }
    }
}

impl From<alloc::collections::TryReserveError> for Error {
    fn from(_: alloc::collections::TryReserveError) -> Error {
        ErrorKind::OutOfMemory.into()
    }
}

impl From<alloc::ffi::NulError> for Error {
    fn from(_: alloc::ffi::NulError) -> Error {
        Error::from_static(ErrorKind::InvalidInput, "data provided contains a nul byte")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Simple(kind) => f.debug_tuple("Kind").field(kind).finish(),
            Repr::Static(kind, message) => {
                f.debug_struct("Error").field("kind", kind).field("message", message).finish()
            }
            Repr::Custom(custom) => {
                f.debug_struct("Custom").field("kind", &custom.kind).field("error", &custom.error).finish()
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Simple(kind) => f.write_str(kind.as_str()),
            Repr::Static(_, message) => f.write_str(message),
            Repr::Custom(custom) => custom.error.fmt(f),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.repr {
            Repr::Custom(custom) => custom.error.source(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn kinds_messages_and_inner_errors() {
        let simple: Error = ErrorKind::NotFound.into();
        assert_eq!(simple.kind(), ErrorKind::NotFound);
        assert_eq!(simple.to_string(), "entity not found");
        assert!(simple.get_ref().is_none());

        let fixed = Error::from_static(ErrorKind::InvalidData, "bad superblock magic");
        assert_eq!(fixed.kind(), ErrorKind::InvalidData);
        assert_eq!(fixed.to_string(), "bad superblock magic");
        assert_eq!(fixed.static_message(), Some("bad superblock magic"));

        let custom = Error::new(ErrorKind::StorageFull, "no free block in 8 groups");
        assert_eq!(custom.kind(), ErrorKind::StorageFull);
        assert_eq!(custom.to_string(), "no free block in 8 groups");
        assert_eq!(custom.get_ref().unwrap().to_string(), "no free block in 8 groups");
        assert_eq!(custom.into_inner().unwrap().to_string(), "no free block in 8 groups");

        let other = Error::other("x");
        assert_eq!(other.kind(), ErrorKind::Other);
        assert!(alloc::format!("{other:?}").contains("Other"));
    }

    #[test]
    fn kinds_display_like_std() {
        for (kind, text) in [
            (ErrorKind::UnexpectedEof, "unexpected end of file"),
            (ErrorKind::WriteZero, "write zero"),
            (ErrorKind::InvalidInput, "invalid input parameter"),
            (ErrorKind::IsADirectory, "is a directory"),
        ] {
            assert_eq!(kind.to_string(), text);
        }
    }
}
