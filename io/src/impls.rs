//! std's implementations of the traits for slices, `Vec`, references and
//! boxes, and the small utilities: `Take`, `copy`, `empty`, `sink`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::{BufRead, Error, ErrorKind, Read, Result, Seek, SeekFrom, Write, DEFAULT_BUF_SIZE};

impl Read for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

impl BufRead for &[u8] {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        Ok(self)
    }

    fn consume(&mut self, amt: usize) {
        *self = &self[amt.min(self.len())..];
    }
}

impl Write for &mut [u8] {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let n = buf.len().min(self.len());
        let (head, tail) = core::mem::take(self).split_at_mut(n);
        head.copy_from_slice(&buf[..n]);
        *self = tail;
        Ok(n)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Write for Vec<u8> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.try_reserve(buf.len())?;
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<R: Read + ?Sized> Read for &mut R {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        (**self).read(buf)
    }
}

impl<R: Read + ?Sized> Read for Box<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        (**self).read(buf)
    }
}

impl<W: Write + ?Sized> Write for &mut W {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        (**self).write(buf)
    }

    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

impl<W: Write + ?Sized> Write for Box<W> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        (**self).write(buf)
    }

    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

impl<S: Seek + ?Sized> Seek for &mut S {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        (**self).seek(pos)
    }
}

impl<S: Seek + ?Sized> Seek for Box<S> {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        (**self).seek(pos)
    }
}

impl<B: BufRead + ?Sized> BufRead for &mut B {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        (**self).fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        (**self).consume(amt)
    }
}

/// The reader of [`Read::take`]: at most `limit` bytes of the inner one.
#[derive(Debug)]
pub struct Take<R> {
    inner: R,
    limit: u64,
}

impl<R> Take<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Take<R> {
        Take { inner, limit }
    }

    /// Bytes left before the limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Sets the number of bytes left.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The inner reader, borrowed.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for Take<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.limit == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.limit).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.limit -= n as u64;
        Ok(n)
    }
}

/// Copies everything `reader` yields into `writer`; returns the byte count.
pub fn copy<R: Read + ?Sized, W: Write + ?Sized>(reader: &mut R, writer: &mut W) -> Result<u64> {
    let mut buf = alloc::vec![0u8; DEFAULT_BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The reader of [`empty`]: always at end of stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Empty;

/// A reader that is always at end of stream (and a writer that takes
/// everything), as `std::io::empty`.
pub const fn empty() -> Empty {
    Empty
}

impl Read for Empty {
    fn read(&mut self, _: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
}

impl BufRead for Empty {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        Ok(&[])
    }

    fn consume(&mut self, _: usize) {}
}

impl Write for Empty {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Seek for Empty {
    fn seek(&mut self, _: SeekFrom) -> Result<u64> {
        Ok(0)
    }
}

/// The writer of [`sink`]: takes and drops everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sink;

/// A writer that takes everything and keeps nothing, as `std::io::sink`.
pub const fn sink() -> Sink {
    Sink
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The error of a seek before the start of a stream.
pub(crate) const NEGATIVE_SEEK: Error =
    Error::from_static(ErrorKind::InvalidInput, "invalid seek to a negative or overflowing position");

/// The position `pos` leads to from `current` in a stream of `len` bytes.
pub(crate) fn seek_position(pos: SeekFrom, current: u64, len: u64) -> Result<u64> {
    let (base, offset) = match pos {
        SeekFrom::Start(n) => return Ok(n),
        SeekFrom::End(n) => (len, n),
        SeekFrom::Current(n) => (current, n),
    };
    base.checked_add_signed(offset).ok_or(NEGATIVE_SEEK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_empty_sink() {
        let data: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert_eq!(copy(&mut &data[..], &mut out).unwrap(), 20000);
        assert_eq!(out, data);
        assert_eq!(copy(&mut empty(), &mut sink()).unwrap(), 0);
    }

    #[test]
    fn seek_positions() {
        assert_eq!(seek_position(SeekFrom::End(-2), 0, 10).unwrap(), 8);
        assert_eq!(seek_position(SeekFrom::Current(5), 3, 4).unwrap(), 8);
        assert_eq!(seek_position(SeekFrom::Current(-4), 3, 4).unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
