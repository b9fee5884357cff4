//! `toro::io`: std::io's errors and traits for a `no_std` + `alloc` kernel.
//!
//! The same names, signatures and provided methods as `std::io` wherever std
//! has the item, so code written against std's traits ports by changing the
//! path: [`Error`], [`ErrorKind`], [`Result`], [`Read`], [`Write`], [`Seek`],
//! [`SeekFrom`], [`BufRead`], [`BufReader`], [`BufWriter`], [`Cursor`],
//! [`copy`], [`empty`], [`sink`]. The kernel re-exports this crate as
//! `toro::io`; it is a crate of its own so that host-testable crates (the
//! filesystem, protocol parsers) use the same error type, and its tests run
//! with plain `cargo test`.
//!
//! The `embedded-io` 0.7 traits are bridged in [`embedded`]: our [`Error`]
//! implements `embedded_io::Error`, the adapters [`embedded::ToEmbedded`] and
//! [`embedded::FromEmbedded`] convert in each direction, and
//! [`impl_embedded_io!`] implements the embedded traits on a type of one's
//! own that implements ours.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod buffered;
mod cursor;
pub mod embedded;
mod error;
mod impls;

pub use buffered::{BufReader, BufWriter, Lines};
pub use cursor::Cursor;
pub use error::{Error, ErrorKind, Result};
pub use impls::{copy, empty, sink, Empty, Sink, Take};

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The buffer size of [`BufReader`], [`BufWriter`] and [`copy`] (std's).
pub const DEFAULT_BUF_SIZE: usize = 8 * 1024;

const FILL_FAILED: Error = Error::from_static(ErrorKind::UnexpectedEof, "failed to fill whole buffer");
const WRITE_ZERO: Error = Error::from_static(ErrorKind::WriteZero, "failed to write whole buffer");
const NOT_UTF8: Error = Error::from_static(ErrorKind::InvalidData, "stream did not contain valid UTF-8");

/// A source of bytes: `std::io::Read`.
pub trait Read {
    /// Reads some bytes into `buf`, returning how many; `Ok(0)` means end of
    /// stream (or an empty `buf`).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize>;

    /// Reads everything until the end of the stream, appending to `buf`;
    /// returns the number of bytes read. Retries on [`ErrorKind::Interrupted`].
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        let start = buf.len();
        let mut chunk = [0u8; 512];
        loop {
            if buf.capacity() - buf.len() < chunk.len() {
                buf.try_reserve(chunk.len().max(buf.len() - start))?;
            }
            match self.read(&mut chunk) {
                Ok(0) => return Ok(buf.len() - start),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads everything until the end of the stream as UTF-8, appending to
    /// `buf`; on invalid UTF-8 nothing is appended and the error is
    /// [`ErrorKind::InvalidData`].
    fn read_to_string(&mut self, buf: &mut String) -> Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_to_end(&mut bytes)?;
        let text = core::str::from_utf8(&bytes).map_err(|_| NOT_UTF8)?;
        buf.push_str(text);
        Ok(n)
    }

    /// Reads exactly `buf.len()` bytes; [`ErrorKind::UnexpectedEof`] if the
    /// stream ends first (the contents of `buf` are then unspecified).
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.read(buf) {
                Ok(0) => return Err(FILL_FAILED),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Borrows the reader (so adapters can take it by value).
    fn by_ref(&mut self) -> &mut Self
    where
        Self: Sized,
    {
        self
    }

    /// An iterator over the bytes of the stream.
    fn bytes(self) -> Bytes<Self>
    where
        Self: Sized,
    {
        Bytes { inner: self }
    }

    /// A reader that reads at most `limit` bytes from this one.
    fn take(self, limit: u64) -> Take<Self>
    where
        Self: Sized,
    {
        Take::new(self, limit)
    }
}

/// The iterator of [`Read::bytes`].
#[derive(Debug)]
pub struct Bytes<R> {
    inner: R,
}

impl<R: Read> Iterator for Bytes<R> {
    type Item = Result<u8>;

    fn next(&mut self) -> Option<Result<u8>> {
        let mut byte = 0u8;
        loop {
            return match self.inner.read(core::slice::from_mut(&mut byte)) {
                Ok(0) => None,
                Ok(_) => Some(Ok(byte)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => Some(Err(e)),
            };
        }
    }
}

/// A sink of bytes: `std::io::Write`.
pub trait Write {
    /// Writes some of `buf`, returning how many bytes were taken.
    fn write(&mut self, buf: &[u8]) -> Result<usize>;

    /// Pushes buffered data to its destination.
    fn flush(&mut self) -> Result<()>;

    /// Writes all of `buf`; [`ErrorKind::WriteZero`] if the sink takes no
    /// more. Retries on [`ErrorKind::Interrupted`].
    fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(WRITE_ZERO),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes formatted text (what `write!` calls); the first I/O error is
    /// returned, as std does.
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        struct Adapter<'a, W: ?Sized> {
            inner: &'a mut W,
            error: Option<Error>,
        }
        impl<W: Write + ?Sized> fmt::Write for Adapter<'_, W> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.inner.write_all(s.as_bytes()).map_err(|e| {
                    self.error = Some(e);
                    fmt::Error
                })
            }
        }
        let mut adapter = Adapter { inner: self, error: None };
        match fmt::write(&mut adapter, args) {
            Ok(()) => Ok(()),
            Err(_) => Err(adapter.error.unwrap_or(Error::from_static(ErrorKind::Other, "formatter error"))),
        }
    }

    /// Borrows the writer (so adapters can take it by value).
    fn by_ref(&mut self) -> &mut Self
    where
        Self: Sized,
    {
        self
    }
}

/// Where a [`Seek::seek`] goes: `std::io::SeekFrom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekFrom {
    /// This many bytes from the start.
    Start(u64),
    /// This many bytes from the end (may be negative).
    End(i64),
    /// This many bytes from the current position (may be negative).
    Current(i64),
}

/// A cursor that can move: `std::io::Seek`.
pub trait Seek {
    /// Moves to `pos`; returns the new position from the start. Seeking
    /// before the start is [`ErrorKind::InvalidInput`]; past the end is
    /// allowed.
    fn seek(&mut self, pos: SeekFrom) -> Result<u64>;

    /// Moves to the start.
    fn rewind(&mut self) -> Result<()> {
        self.seek(SeekFrom::Start(0)).map(|_| ())
    }

    /// The current position from the start.
    fn stream_position(&mut self) -> Result<u64> {
        self.seek(SeekFrom::Current(0))
    }

    /// Moves by `offset` from the current position.
    fn seek_relative(&mut self, offset: i64) -> Result<()> {
        self.seek(SeekFrom::Current(offset)).map(|_| ())
    }
}

/// A reader with an internal buffer: `std::io::BufRead`.
pub trait BufRead: Read {
    /// The buffered bytes, filling the buffer from the source if it is empty;
    /// empty at end of stream.
    fn fill_buf(&mut self) -> Result<&[u8]>;

    /// Marks `amt` bytes of the buffer as read.
    fn consume(&mut self, amt: usize);

    /// Whether there is more data (fills the buffer to find out).
    fn has_data_left(&mut self) -> Result<bool> {
        self.fill_buf().map(|b| !b.is_empty())
    }

    /// Reads until `byte` (included) or end of stream, appending to `buf`.
    fn read_until(&mut self, byte: u8, buf: &mut Vec<u8>) -> Result<usize> {
        scan_until(self, byte, Some(buf))
    }

    /// Skips until `byte` (included) or end of stream; returns how many bytes.
    fn skip_until(&mut self, byte: u8) -> Result<usize> {
        scan_until(self, byte, None)
    }

    /// Reads a line (through `\n`, included) as UTF-8, appending to `buf`;
    /// on invalid UTF-8 nothing is appended.
    fn read_line(&mut self, buf: &mut String) -> Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_until(b'\n', &mut bytes)?;
        buf.push_str(core::str::from_utf8(&bytes).map_err(|_| NOT_UTF8)?);
        Ok(n)
    }

    /// An iterator over the lines, without their `\n` or `\r\n`.
    fn lines(self) -> Lines<Self>
    where
        Self: Sized,
    {
        Lines::new(self)
    }
}

/// Consumes through `byte` (or to the end), keeping the bytes in `keep`.
fn scan_until<B: BufRead + ?Sized>(reader: &mut B, byte: u8, mut keep: Option<&mut Vec<u8>>) -> Result<usize> {
    let mut read = 0;
    loop {
        let (done, used) = {
            let available = match reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (done, used) = match available.iter().position(|&b| b == byte) {
                Some(i) => (true, i + 1),
                None => (available.is_empty(), available.len()),
            };
            if let Some(keep) = keep.as_deref_mut() {
                keep.extend_from_slice(&available[..used]);
            }
            (done, used)
        };
        reader.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A reader that hands out at most `step` bytes per call and is
    /// interrupted every other call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn provided_read_methods() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut all = Vec::new();
        Trickle { data: &data, step: 7, calls: 0 }.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);

        let mut exact = [0u8; 100];
        let mut trickle = Trickle { data: &data, step: 3, calls: 0 };
        trickle.read_exact(&mut exact).unwrap();
        assert_eq!(&exact[..], &data[..100]);

        let mut short = Trickle { data: &data[..10], step: 3, calls: 0 };
        assert_eq!(short.read_exact(&mut exact).unwrap_err().kind(), ErrorKind::UnexpectedEof);

        let mut text = String::from("> ");
        (&b"hello"[..]).read_to_string(&mut text).unwrap();
        assert_eq!(text, "> hello");
        let err = (&[0xffu8, 0xfe][..]).read_to_string(&mut text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(text, "> hello");

        let bytes: Vec<u8> = (&b"abc"[..]).bytes().map(|b| b.unwrap()).collect();
        assert_eq!(bytes, b"abc");
        let mut taken = Vec::new();
        (&data[..]).take(10).read_to_end(&mut taken).unwrap();
        assert_eq!(taken, &data[..10]);
    }

    #[test]
    fn provided_write_methods() {
        let mut out = Vec::new();
        write!(out, "toro-{:04}", 7).unwrap();
        out.write_all(b"!").unwrap();
        out.flush().unwrap();
        assert_eq!(out, b"toro-0007!");

        let mut small = [0u8; 4];
        let mut slice = &mut small[..];
        let err = slice.write_all(b"too long").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WriteZero);
        assert_eq!(&small, b"too ");

        let mut small = [0u8; 2];
        let err = write!(&mut small[..], "{}", 12345).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WriteZero);
    }

    #[test]
    fn buf_read_lines_and_until() {
        let text = b"one\ntwo\r\nthree";
        let reader = BufReader::with_capacity(2, &text[..]);
        let lines: Vec<String> = reader.lines().map(|l| l.unwrap()).collect();
        assert_eq!(lines, vec!["one", "two", "three"]);

        let mut reader = BufReader::with_capacity(3, &text[..]);
        let mut line = String::new();
        assert_eq!(reader.read_line(&mut line).unwrap(), 4);
        assert_eq!(line, "one\n");
        assert_eq!(reader.skip_until(b'\n').unwrap(), 5);
        let mut rest = Vec::new();
        reader.read_until(b'\n', &mut rest).unwrap();
        assert_eq!(rest, b"three");
        assert!(!reader.has_data_left().unwrap());
    }
}
