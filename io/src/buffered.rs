//! `BufReader`, `BufWriter` and `Lines`, as in `std::io`.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::{BufRead, Read, Result, Seek, SeekFrom, Write, DEFAULT_BUF_SIZE};

/// Adds a buffer to a reader: `std::io::BufReader`.
pub struct BufReader<R> {
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
    inner: R,
}

impl<R> BufReader<R> {
    /// A reader with the default 8 KiB buffer.
    pub fn new(inner: R) -> BufReader<R> {
        BufReader::with_capacity(DEFAULT_BUF_SIZE, inner)
    }

    /// A reader with a buffer of `capacity` bytes (at least 1).
    pub fn with_capacity(capacity: usize, inner: R) -> BufReader<R> {
        BufReader { buf: alloc::vec![0; capacity.max(1)].into_boxed_slice(), pos: 0, filled: 0, inner }
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The inner reader, mutably (reading from it directly skips the buffer).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The buffered bytes not yet read.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The inner reader; buffered data is lost.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for BufReader<R> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        // A large read with an empty buffer goes straight to the source.
        if self.pos == self.filled && out.len() >= self.buf.len() {
            return self.inner.read(out);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for BufReader<R> {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        if self.pos >= self.filled {
            self.filled = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

impl<R: Seek> Seek for BufReader<R> {
    /// Seeks the inner reader and drops the buffer; `Current` counts from
    /// the logical position (the buffered bytes not yet read are subtracted).
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        let result = match pos {
            SeekFrom::Current(n) => {
                let remainder = (self.filled - self.pos) as i64;
                match n.checked_sub(remainder) {
                    Some(offset) => self.inner.seek(SeekFrom::Current(offset))?,
                    None => {
                        self.inner.seek(SeekFrom::Current(-remainder))?;
                        self.pos = 0;
                        self.filled = 0;
                        self.inner.seek(SeekFrom::Current(n))?
                    }
                }
            }
            other => self.inner.seek(other)?,
        };
        self.pos = 0;
        self.filled = 0;
        Ok(result)
    }
}

impl<R: fmt::Debug> fmt::Debug for BufReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufReader")
            .field("reader", &self.inner)
            .field("buffer", &format_args!("{}/{}", self.filled - self.pos, self.buf.len()))
            .finish()
    }
}

/// Adds a buffer to a writer: `std::io::BufWriter`. Dropping it flushes
/// and ignores errors, as std does; call [`Write::flush`] to see them.
pub struct BufWriter<W: Write> {
    buf: Vec<u8>,
    inner: Option<W>,
}

impl<W: Write> BufWriter<W> {
    /// A writer with the default 8 KiB buffer.
    pub fn new(inner: W) -> BufWriter<W> {
        BufWriter::with_capacity(DEFAULT_BUF_SIZE, inner)
    }

    /// A writer with a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, inner: W) -> BufWriter<W> {
        BufWriter { buf: Vec::with_capacity(capacity), inner: Some(inner) }
    }

    fn flush_buf(&mut self) -> Result<()> {
        let Some(inner) = self.inner.as_mut() else { return Ok(()) };
        let mut written = 0;
        let mut result = Ok(());
        while written < self.buf.len() {
            match inner.write(&self.buf[written..]) {
                Ok(0) => {
                    result = Err(crate::WRITE_ZERO);
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == crate::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.buf.drain(..written);
        result
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        self.inner.as_ref().expect("BufWriter used after into_inner")
    }

    /// The inner writer, mutably (writing to it directly skips the buffer).
    pub fn get_mut(&mut self) -> &mut W {
        self.inner.as_mut().expect("BufWriter used after into_inner")
    }

    /// The buffered bytes not yet written.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Flushes the buffer and returns the inner writer; on an error, the
    /// error and the writer are returned (std's `IntoInnerError`, flattened).
    pub fn into_inner(mut self) -> core::result::Result<W, (crate::Error, BufWriter<W>)> {
        match self.flush_buf() {
            Ok(()) => Ok(self.inner.take().expect("BufWriter used after into_inner")),
            Err(e) => Err((e, self)),
        }
    }
}

impl<W: Write> Write for BufWriter<W> {
    fn write(&mut self, data: &[u8]) -> Result<usize> {
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.flush_buf()?;
        }
        if data.len() >= self.buf.capacity() {
            self.get_mut().write(data)
        } else {
            self.buf.extend_from_slice(data);
            Ok(data.len())
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_buf()?;
        self.get_mut().flush()
    }
}

impl<W: Write + Seek> Seek for BufWriter<W> {
    /// Flushes, then seeks the inner writer.
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.flush_buf()?;
        self.get_mut().seek(pos)
    }
}

impl<W: Write> Drop for BufWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush_buf();
    }
}

impl<W: Write + fmt::Debug> fmt::Debug for BufWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufWriter").field("writer", &self.inner).field("buffered", &self.buf.len()).finish()
    }
}

/// The iterator of [`BufRead::lines`].
#[derive(Debug)]
pub struct Lines<B> {
    inner: B,
}

impl<B> Lines<B> {
    pub(crate) fn new(inner: B) -> Lines<B> {
        Lines { inner }
    }
}

impl<B: BufRead> Iterator for Lines<B> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        let mut line = String::new();
        match self.inner.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                    if line.ends_with('\r') {
                        line.pop();
                    }
                }
                Some(Ok(line))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cursor;

    #[test]
    fn buf_reader_seeks_from_its_logical_position() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut reader = BufReader::with_capacity(16, Cursor::new(data.clone()));
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).unwrap();
        assert_eq!(reader.buffer().len(), 14);
        assert_eq!(reader.stream_position().unwrap(), 2);
        reader.seek(SeekFrom::Current(10)).unwrap();
        reader.read_exact(&mut two).unwrap();
        assert_eq!(two, [12, 13]);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[14..]);
    }

    #[test]
    fn buf_writer_buffers_then_flushes() {
        let mut writer = BufWriter::with_capacity(8, Vec::new());
        writer.write_all(b"abc").unwrap();
        assert_eq!(writer.get_ref().len(), 0);
        writer.write_all(b"defghij").unwrap();
        writer.write_all(b"0123456789").unwrap();
        let inner = writer.into_inner().unwrap();
        assert_eq!(inner, b"abcdefghij0123456789");
    }
}
