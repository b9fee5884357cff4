//! Reading guest-physical memory: the one seam between these parsers and the machine.
//!
//! The parsers never dereference an address themselves. They ask a
//! [`PhysicalMemory`] for bytes, and every address they compute from
//! firmware data goes through checked arithmetic first, so a table that
//! points past the end of the address space gives [`Unreadable`], not an
//! overflow.

use core::fmt;

/// Reads guest-physical memory.
///
/// The kernel implements it over identity-mapped memory, tests over a `Vec`.
/// An implementation returns [`Unreadable`] for any range it cannot vouch for
/// (unmapped, page 0, MMIO, past the end of the address space) instead of
/// faulting: the parsers call it with addresses taken from firmware tables.
pub trait PhysicalMemory {
    /// Fills `buffer` with the bytes at `address .. address + buffer.len()`.
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), Unreadable>;
}

/// A range of physical memory that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable {
    /// The first byte of the range.
    pub address: u64,
    /// The length of the range, in bytes.
    pub length: usize,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "cannot read {} bytes of physical memory at {:#x}", self.length, self.address)
    }
}

/// Physical memory backed by a byte slice that starts at physical address `base`.
///
/// For callers that already hold a copy of a memory area (the BIOS area
/// searched for the RSDP, say), and for tests.
#[derive(Debug, Clone, Copy)]
pub struct SliceMemory<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl<'a> SliceMemory<'a> {
    /// Physical memory whose byte at `base` is `bytes[0]`.
    pub const fn new(base: u64, bytes: &'a [u8]) -> Self {
        Self { base, bytes }
    }
}

impl PhysicalMemory for SliceMemory<'_> {
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), Unreadable> {
        let unreadable = Unreadable { address, length: buffer.len() };
        let start = address.checked_sub(self.base).and_then(|offset| usize::try_from(offset).ok()).ok_or(unreadable)?;
        let end = start.checked_add(buffer.len()).ok_or(unreadable)?;
        let source = self.bytes.get(start..end).ok_or(unreadable)?;
        for (target, byte) in buffer.iter_mut().zip(source) {
            *target = *byte;
        }
        Ok(())
    }
}

/// The address of a field `offset` bytes into a structure at `base`, if it
/// does not wrap around the address space.
fn field_address(base: u64, offset: u64, length: usize) -> Result<u64, Unreadable> {
    base.checked_add(offset).ok_or_else(|| Unreadable {
        address: base,
        length: usize::try_from(offset).ok().and_then(|offset| offset.checked_add(length)).unwrap_or(usize::MAX),
    })
}

/// Reads `N` bytes at `base + offset`.
pub(crate) fn read_bytes<const N: usize>(
    memory: &(impl PhysicalMemory + ?Sized),
    base: u64,
    offset: u64,
) -> Result<[u8; N], Unreadable> {
    let address = field_address(base, offset, N)?;
    let mut bytes = [0; N];
    memory.read(address, &mut bytes)?;
    Ok(bytes)
}

/// Reads the byte at `base + offset`.
pub(crate) fn read_u8(memory: &(impl PhysicalMemory + ?Sized), base: u64, offset: u64) -> Result<u8, Unreadable> {
    read_bytes::<1>(memory, base, offset).map(|[byte]| byte)
}

/// Reads the little-endian `u16` at `base + offset`.
pub(crate) fn read_u16(memory: &(impl PhysicalMemory + ?Sized), base: u64, offset: u64) -> Result<u16, Unreadable> {
    read_bytes(memory, base, offset).map(u16::from_le_bytes)
}

/// Reads the little-endian `u32` at `base + offset`.
pub(crate) fn read_u32(memory: &(impl PhysicalMemory + ?Sized), base: u64, offset: u64) -> Result<u32, Unreadable> {
    read_bytes(memory, base, offset).map(u32::from_le_bytes)
}

/// Reads the little-endian `u64` at `base + offset`.
pub(crate) fn read_u64(memory: &(impl PhysicalMemory + ?Sized), base: u64, offset: u64) -> Result<u64, Unreadable> {
    read_bytes(memory, base, offset).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_reads_inside_and_refuses_outside() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        let memory = SliceMemory::new(0x1000, &bytes);
        assert_eq!(read_bytes::<2>(&memory, 0x1000, 2), Ok([3, 4]));
        assert_eq!(read_u32(&memory, 0x1000, 4), Ok(0x0807_0605));
        assert_eq!(read_u64(&memory, 0x1000, 0), Ok(0x0807_0605_0403_0201));
        assert_eq!(read_u8(&memory, 0x1007, 0), Ok(8));
        assert_eq!(read_u32(&memory, 0x1000, 6), Err(Unreadable { address: 0x1006, length: 4 }));
        assert!(read_u8(&memory, 0xfff, 0).is_err());
        assert!(read_u8(&memory, 0x1008, 0).is_err());
    }

    #[test]
    fn fields_past_the_end_of_the_address_space_are_unreadable() {
        let bytes = [0; 8];
        let memory = SliceMemory::new(u64::MAX - 7, &bytes);
        assert_eq!(read_u64(&memory, u64::MAX - 7, 0), Ok(0));
        let error = read_u32(&memory, u64::MAX - 3, 8).unwrap_err();
        assert_eq!(error, Unreadable { address: u64::MAX - 3, length: 12 });
        assert!(read_u64(&memory, u64::MAX, 0).is_err());
    }

    #[test]
    fn unreadable_says_where() {
        let message = Unreadable { address: 0x1234, length: 24 }.to_string();
        assert_eq!(message, "cannot read 24 bytes of physical memory at 0x1234");
    }
}
