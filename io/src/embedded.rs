//! The bridge to the `embedded-io` 0.7 traits.
//!
//! - [`Error`] implements [`embedded_io::Error`] and kinds convert both ways.
//! - [`ToEmbedded`] wraps a `toro::io` reader/writer/seeker so that it
//!   implements `embedded_io::{Read, Write, Seek, BufRead}`;
//!   [`FromEmbedded`] wraps an embedded-io one so that it implements ours.
//! - [`impl_embedded_io!`](crate::impl_embedded_io) implements the embedded traits directly on a type
//!   of one's own (Rust's orphan rule forbids a blanket
//!   `impl<T: Read> embedded_io::Read for T`; the macro is the next best
//!   thing), e.g. `toro::fs::File`.

use crate::{BufRead, Error, ErrorKind, Read, Result, Seek, SeekFrom, Write};

pub use embedded_io;

impl From<ErrorKind> for embedded_io::ErrorKind {
    /// Kinds embedded-io has keep their name; the rest become `Other`
    /// (embedded-io has no `WouldBlock`: its traits always block).
    fn from(kind: ErrorKind) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind as E;
        match kind {
            ErrorKind::NotFound => E::NotFound,
            ErrorKind::PermissionDenied => E::PermissionDenied,
            ErrorKind::ConnectionRefused => E::ConnectionRefused,
            ErrorKind::ConnectionReset => E::ConnectionReset,
            ErrorKind::ConnectionAborted => E::ConnectionAborted,
            ErrorKind::NotConnected => E::NotConnected,
            ErrorKind::AddrInUse => E::AddrInUse,
            ErrorKind::AddrNotAvailable => E::AddrNotAvailable,
            ErrorKind::BrokenPipe => E::BrokenPipe,
            ErrorKind::AlreadyExists => E::AlreadyExists,
            ErrorKind::InvalidInput => E::InvalidInput,
            ErrorKind::InvalidData => E::InvalidData,
            ErrorKind::TimedOut => E::TimedOut,
            ErrorKind::Interrupted => E::Interrupted,
            ErrorKind::Unsupported => E::Unsupported,
            ErrorKind::OutOfMemory => E::OutOfMemory,
            ErrorKind::WriteZero => E::WriteZero,
            _ => E::Other,
        }
    }
}

impl From<embedded_io::ErrorKind> for ErrorKind {
    fn from(kind: embedded_io::ErrorKind) -> ErrorKind {
        use embedded_io::ErrorKind as E;
        match kind {
            E::NotFound => ErrorKind::NotFound,
            E::PermissionDenied => ErrorKind::PermissionDenied,
            E::ConnectionRefused => ErrorKind::ConnectionRefused,
            E::ConnectionReset => ErrorKind::ConnectionReset,
            E::ConnectionAborted => ErrorKind::ConnectionAborted,
            E::NotConnected => ErrorKind::NotConnected,
            E::AddrInUse => ErrorKind::AddrInUse,
            E::AddrNotAvailable => ErrorKind::AddrNotAvailable,
            E::BrokenPipe => ErrorKind::BrokenPipe,
            E::AlreadyExists => ErrorKind::AlreadyExists,
            E::InvalidInput => ErrorKind::InvalidInput,
            E::InvalidData => ErrorKind::InvalidData,
            E::TimedOut => ErrorKind::TimedOut,
            E::Interrupted => ErrorKind::Interrupted,
            E::Unsupported => ErrorKind::Unsupported,
            E::OutOfMemory => ErrorKind::OutOfMemory,
            E::WriteZero => ErrorKind::WriteZero,
            _ => ErrorKind::Other,
        }
    }
}

impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        Error::kind(self).into()
    }
}

impl From<embedded_io::SeekFrom> for SeekFrom {
    fn from(pos: embedded_io::SeekFrom) -> SeekFrom {
        match pos {
            embedded_io::SeekFrom::Start(n) => SeekFrom::Start(n),
            embedded_io::SeekFrom::End(n) => SeekFrom::End(n),
            embedded_io::SeekFrom::Current(n) => SeekFrom::Current(n),
        }
    }
}

impl From<SeekFrom> for embedded_io::SeekFrom {
    fn from(pos: SeekFrom) -> embedded_io::SeekFrom {
        match pos {
            SeekFrom::Start(n) => embedded_io::SeekFrom::Start(n),
            SeekFrom::End(n) => embedded_io::SeekFrom::End(n),
            SeekFrom::Current(n) => embedded_io::SeekFrom::Current(n),
        }
    }
}

/// A `toro::io` type seen through the embedded-io traits.
#[derive(Debug, Default, Clone)]
pub struct ToEmbedded<T: ?Sized>(pub T);

impl<T: ?Sized> embedded_io::ErrorType for ToEmbedded<T> {
    type Error = Error;
}

impl<T: Read + ?Sized> embedded_io::Read for ToEmbedded<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.0.read(buf)
    }
}

impl<T: BufRead + ?Sized> embedded_io::BufRead for ToEmbedded<T> {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.0.consume(amt)
    }
}

impl<T: Write + ?Sized> embedded_io::Write for ToEmbedded<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }
}

impl<T: Seek + ?Sized> embedded_io::Seek for ToEmbedded<T> {
    fn seek(&mut self, pos: embedded_io::SeekFrom) -> Result<u64> {
        self.0.seek(pos.into())
    }
}

/// An embedded-io type seen through the `toro::io` traits; its errors
/// become [`Error`]s of the matching kind, with the original inside.
#[derive(Debug, Default, Clone)]
pub struct FromEmbedded<T: ?Sized>(pub T);

fn convert<E: embedded_io::Error + Send + Sync + 'static>(error: E) -> Error {
    let kind = ErrorKind::from(error.kind());
    Error::new(kind, error)
}

impl<T> Read for FromEmbedded<T>
where
    T: embedded_io::Read + ?Sized,
    T::Error: Send + Sync + 'static,
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.0.read(buf).map_err(convert)
    }
}

impl<T> BufRead for FromEmbedded<T>
where
    T: embedded_io::BufRead + ?Sized,
    T::Error: Send + Sync + 'static,
{
    fn fill_buf(&mut self) -> Result<&[u8]> {
        self.0.fill_buf().map_err(convert)
    }

    fn consume(&mut self, amt: usize) {
        self.0.consume(amt)
    }
}

impl<T> Write for FromEmbedded<T>
where
    T: embedded_io::Write + ?Sized,
    T::Error: Send + Sync + 'static,
{
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.0.write(buf).map_err(convert)
    }

    fn flush(&mut self) -> Result<()> {
        self.0.flush().map_err(convert)
    }
}

impl<T> Seek for FromEmbedded<T>
where
    T: embedded_io::Seek + ?Sized,
    T::Error: Send + Sync + 'static,
{
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.0.seek(pos.into()).map_err(convert)
    }
}

/// Implements the embedded-io traits on a type that implements the
/// `toro::io` ones: `impl_embedded_io!(File: Read, Write, Seek);` (any
/// non-empty subset of `Read`, `Write`, `Seek`, `BufRead`, in any order).
/// `ErrorType` is implemented with `Error = toro::io::Error`.
#[macro_export]
macro_rules! impl_embedded_io {
    ($ty:ty : $($trait:ident),+ $(,)?) => {
        impl $crate::embedded::embedded_io::ErrorType for $ty {
            type Error = $crate::Error;
        }
        $( $crate::impl_embedded_io!(@one $ty, $trait); )+
    };
    (@one $ty:ty, Read) => {
        impl $crate::embedded::embedded_io::Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> $crate::Result<usize> {
                <$ty as $crate::Read>::read(self, buf)
            }
        }
    };
    (@one $ty:ty, BufRead) => {
        impl $crate::embedded::embedded_io::BufRead for $ty {
            fn fill_buf(&mut self) -> $crate::Result<&[u8]> {
                <$ty as $crate::BufRead>::fill_buf(self)
            }
            fn consume(&mut self, amt: usize) {
                <$ty as $crate::BufRead>::consume(self, amt)
            }
        }
    };
    (@one $ty:ty, Write) => {
        impl $crate::embedded::embedded_io::Write for $ty {
            fn write(&mut self, buf: &[u8]) -> $crate::Result<usize> {
                <$ty as $crate::Write>::write(self, buf)
            }
            fn flush(&mut self) -> $crate::Result<()> {
                <$ty as $crate::Write>::flush(self)
            }
        }
    };
    (@one $ty:ty, Seek) => {
        impl $crate::embedded::embedded_io::Seek for $ty {
            fn seek(&mut self, pos: $crate::embedded::embedded_io::SeekFrom) -> $crate::Result<u64> {
                <$ty as $crate::Seek>::seek(self, pos.into())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cursor;
    use alloc::vec::Vec;

    /// A type of one's own with the embedded traits from the macro.
    struct Store(Cursor<Vec<u8>>);

    impl Read for Store {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Store {
        fn write(&mut self, buf: &[u8]) -> Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
    }

    impl Seek for Store {
        fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
            self.0.seek(pos)
        }
    }

    crate::impl_embedded_io!(Store: Read, Write, Seek);

    fn embedded_round_trip<T: embedded_io::Read + embedded_io::Write + embedded_io::Seek>(io: &mut T) -> [u8; 5] {
        io.write_all(b"hello").unwrap();
        io.rewind().unwrap();
        let mut out = [0u8; 5];
        io.read_exact(&mut out).unwrap();
        out
    }

    #[test]
    fn both_directions() {
        assert_eq!(&embedded_round_trip(&mut Store(Cursor::new(Vec::new()))), b"hello");
        assert_eq!(&embedded_round_trip(&mut ToEmbedded(Cursor::new(Vec::new()))), b"hello");

        // embedded-io's own impl for &[u8], seen through ours.
        let mut reader = FromEmbedded(&b"abc"[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");

        // An embedded-io error keeps its kind and text.
        let mut full = FromEmbedded(&mut [0u8; 0][..]);
        let err = full.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WriteZero);
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [ErrorKind::NotFound, ErrorKind::TimedOut, ErrorKind::WriteZero, ErrorKind::OutOfMemory] {
            assert_eq!(ErrorKind::from(embedded_io::ErrorKind::from(kind)), kind);
        }
        assert_eq!(embedded_io::ErrorKind::from(ErrorKind::StorageFull), embedded_io::ErrorKind::Other);
        let err: Error = ErrorKind::BrokenPipe.into();
        assert_eq!(embedded_io::Error::kind(&err), embedded_io::ErrorKind::BrokenPipe);
    }
}
