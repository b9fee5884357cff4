//! `Cursor`: an in-memory buffer with a position, as `std::io::Cursor`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::impls::seek_position;
use crate::{BufRead, ErrorKind, Read, Result, Seek, SeekFrom, Write};

/// A buffer with a position, readable (and, for `Vec`, `&mut [u8]` and
/// boxed slices, writable) like a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor<T> {
    inner: T,
    pos: u64,
}

impl<T> Cursor<T> {
    /// A cursor at position 0.
    pub const fn new(inner: T) -> Cursor<T> {
        Cursor { inner, pos: 0 }
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The buffer, borrowed.
    pub const fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The buffer, borrowed mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The position.
    pub const fn position(&self) -> u64 {
        self.pos
    }

    /// Moves the position.
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
    }
}

impl<T: AsRef<[u8]>> Cursor<T> {
    fn remaining(&self) -> &[u8] {
        let data = self.inner.as_ref();
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX).min(data.len());
        &data[start..]
    }
}

impl<T: AsRef<[u8]>> Read for Cursor<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = (&mut self.remaining()).read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: AsRef<[u8]>> BufRead for Cursor<T> {
    fn fill_buf(&mut self) -> Result<&[u8]> {
        Ok(self.remaining())
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
    }
}

impl<T: AsRef<[u8]>> Seek for Cursor<T> {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.pos = seek_position(pos, self.pos, self.inner.as_ref().len() as u64)?;
        Ok(self.pos)
    }
}

/// Writes into a fixed slice at `pos`; returns how many bytes fit.
fn write_into_slice(pos: &mut u64, slice: &mut [u8], buf: &[u8]) -> Result<usize> {
    let start = usize::try_from(*pos).unwrap_or(usize::MAX).min(slice.len());
    let n = (&mut slice[start..]).write(buf)?;
    *pos += n as u64;
    Ok(n)
}

impl Write for Cursor<&mut [u8]> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write_into_slice(&mut self.pos, self.inner, buf)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Write for Cursor<Box<[u8]>> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write_into_slice(&mut self.pos, &mut self.inner, buf)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Writes into a growable vector at `pos`, zero-filling any gap.
fn write_into_vec(pos: &mut u64, vec: &mut Vec<u8>, buf: &[u8]) -> Result<usize> {
    let start = usize::try_from(*pos).map_err(|_| ErrorKind::InvalidInput)?;
    let end = start.checked_add(buf.len()).ok_or(ErrorKind::InvalidInput)?;
    if end > vec.len() {
        vec.try_reserve(end - vec.len())?;
        vec.resize(end, 0);
    }
    vec[start..end].copy_from_slice(buf);
    *pos = end as u64;
    Ok(buf.len())
}

impl Write for Cursor<Vec<u8>> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write_into_vec(&mut self.pos, &mut self.inner, buf)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Write for Cursor<&mut Vec<u8>> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write_into_vec(&mut self.pos, self.inner, buf)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_cursor_overwrites_and_fills_gaps() {
        let mut cursor = Cursor::new(Vec::new());
        cursor.write_all(b"hello").unwrap();
        cursor.seek(SeekFrom::Start(1)).unwrap();
        cursor.write_all(b"EL").unwrap();
        cursor.seek(SeekFrom::End(2)).unwrap();
        cursor.write_all(b"!").unwrap();
        assert_eq!(cursor.get_ref(), b"hELlo\0\0!");
        cursor.rewind().unwrap();
        let mut out = Vec::new();
        cursor.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hELlo\0\0!");
        assert_eq!(cursor.seek(SeekFrom::Current(-100)).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn slice_cursor_stops_at_the_end() {
        let mut store = [0u8; 4];
        let mut cursor = Cursor::new(&mut store[..]);
        assert_eq!(cursor.write(b"abcdef").unwrap(), 4);
        assert_eq!(cursor.write(b"x").unwrap(), 0);
        assert_eq!(&store, b"abcd");
        let mut past = Cursor::new(&b"ab"[..]);
        past.set_position(10);
        assert_eq!(past.read(&mut [0u8; 4]).unwrap(), 0);
    }
}
