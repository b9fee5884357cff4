//! The `\_S5` sleep type from the DSDT's AML bytes, read without an AML interpreter.
//!
//! Powering off through ACPI writes a sleep type (`SLP_TYPx`) into a control
//! register; the values for the soft-off state S5 are in the DSDT as
//! `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, ... })` (ACPI 6.5, section
//! 7.4.2, "\_Sx (System States)"). This reader looks for exactly that
//! encoding (section 20.2, "AML Grammar Definition"):
//!
//! ```text
//! NameOp (0x08) ['\' (0x5C)] "_S5_" PackageOp (0x12) PkgLength NumElements
//!     element element ...   (each ZeroOp, OneOp, ByteConst, WordConst, DWordConst or QWordConst)
//! ```
//!
//! It does not track scopes: the first such definition counts (firmware
//! puts `\_S5` at the root; QEMU, Firecracker and cloud-hypervisor all do).
//! An `_S5` defined any other way (a method, a package of named objects)
//! needs an interpreter and gives [`S5Error::NotAPackage`]; the caller
//! falls back to a documented default. Every length is checked against the
//! table, so a garbled DSDT gives an error, never a panic.

use core::fmt;

use crate::acpi::{check_table, AcpiError};
use crate::physical_memory::{PhysicalMemory, Unreadable};

/// The DSDT's signature (section 5.2.11.1).
pub const DSDT_SIGNATURE: [u8; 4] = *b"DSDT";

/// The name searched for: `_S5` padded to a 4-byte NameSeg with `_` (section 20.2.2).
const S5_NAME: &[u8; 4] = b"_S5_";
/// NameOp (section 20.2.5.1), RootChar `\` (section 20.2.2), PackageOp (section 20.2.5.4).
const NAME_OP: u8 = 0x08;
const ROOT_CHAR: u8 = 0x5C;
const PACKAGE_OP: u8 = 0x12;
/// Data objects a package element may be (section 20.2.3).
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0A;
const WORD_PREFIX: u8 = 0x0B;
const DWORD_PREFIX: u8 = 0x0C;
const QWORD_PREFIX: u8 = 0x0E;
/// The DSDT header; AML starts after it (section 5.2.11.1).
const HEADER_LENGTH: u32 = 36;
/// `SLP_TYPx` is a 3-bit field (section 4.8.3.2.1, table 4.13).
pub const MAX_SLEEP_TYPE: u8 = 7;

/// Bytes read around a match: NameOp, `\`, the name, PackageOp, a 4-byte
/// PkgLength, NumElements and two QWordConsts fit.
const WINDOW: usize = 48;
/// Bytes scanned per read; consecutive reads overlap by the name's length
/// so a name straddling two reads is still found.
const SCAN_CHUNK: usize = 512;

/// What went wrong reading `\_S5` from the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S5Error {
    /// The FADT gives no DSDT address.
    NoDsdt,
    /// The DSDT is unreadable or fails its signature, length or checksum check.
    Dsdt(AcpiError),
    /// No `_S5_` name anywhere in the DSDT.
    NotFound,
    /// `_S5_` appears, but not as `Name (_S5, Package ...)`: a method or
    /// another object that only an AML interpreter can evaluate.
    NotAPackage {
        /// Offset of the first `_S5_` in the DSDT.
        offset: u32,
    },
    /// `Name (_S5, Package ...)` whose bytes do not decode: a length past
    /// the table, no elements, an element that is not an integer, or a
    /// sleep type above 7.
    Malformed {
        /// Offset of the `_S5_` name in the DSDT.
        offset: u32,
        /// What is wrong.
        reason: &'static str,
    },
}

impl From<Unreadable> for S5Error {
    fn from(unreadable: Unreadable) -> Self {
        Self::Dsdt(AcpiError::Unreadable(unreadable))
    }
}

impl From<AcpiError> for S5Error {
    fn from(error: AcpiError) -> Self {
        Self::Dsdt(error)
    }
}

impl fmt::Display for S5Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoDsdt => formatter.write_str("the FADT gives no DSDT"),
            Self::Dsdt(error) => write!(formatter, "bad DSDT: {error}"),
            Self::NotFound => formatter.write_str("the DSDT defines no \\_S5"),
            Self::NotAPackage { offset } => {
                write!(
                    formatter,
                    "the DSDT's \\_S5 (at byte {offset}) is not a plain package: it needs an AML interpreter"
                )
            }
            Self::Malformed { offset, reason } => {
                write!(formatter, "the DSDT's \\_S5 package (at byte {offset}) is malformed: {reason}")
            }
        }
    }
}

/// The S5 sleep types: what goes into `SLP_TYPa` and `SLP_TYPb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepTypes {
    /// For PM1a control (or the sleep control register).
    pub a: u8,
    /// For PM1b control (the package's second element; `a` when it has one element).
    pub b: u8,
}

/// Reads `\_S5` from the DSDT at `address`, after checking the table's
/// signature, length and checksum.
pub fn read_s5(memory: &impl PhysicalMemory, address: u64) -> Result<SleepTypes, S5Error> {
    if address == 0 {
        return Err(S5Error::NoDsdt);
    }
    let header = check_table(memory, address, Some(DSDT_SIGNATURE), HEADER_LENGTH)?;
    let length = header.length;
    let mut first_name = None;
    let mut first_error = None;
    let mut chunk = [0u8; SCAN_CHUNK];
    let mut start = HEADER_LENGTH;
    // Invariant: every step advances `start` by at least one byte.
    while start < length {
        let size = ((length - start) as usize).min(SCAN_CHUNK);
        let bytes = chunk.get_mut(..size).unwrap_or(&mut []);
        memory.read(table_address(address, start)?, bytes)?;
        for (index, window) in bytes.windows(S5_NAME.len()).enumerate() {
            if window != S5_NAME {
                continue;
            }
            // index < 512: no overflow.
            let offset = start + index as u32;
            first_name.get_or_insert(offset);
            // A match that does not decode may be a method's or a
            // reference's bytes that happen to look alike: go on looking.
            match decode_at(memory, address, length, offset)? {
                Some(Ok(types)) => return Ok(types),
                Some(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                None => {}
            }
        }
        if start + size as u32 >= length {
            break;
        }
        // Overlap by the name's length less one byte; size > 3 here, as
        // more than one chunk is left.
        start += (size - (S5_NAME.len() - 1)) as u32;
    }
    match (first_error, first_name) {
        (Some(error), _) => Err(error),
        (None, Some(offset)) => Err(S5Error::NotAPackage { offset }),
        (None, None) => Err(S5Error::NotFound),
    }
}

/// `address + offset`, or unreadable if that wraps.
fn table_address(address: u64, offset: u32) -> Result<u64, Unreadable> {
    address.checked_add(u64::from(offset)).ok_or(Unreadable { address, length: offset as usize })
}

/// Decodes `Name (_S5, Package ...)` around the name at `offset` of the
/// DSDT: `None` if no NameOp precedes the name, the package's error if it
/// does not decode; the outer error only if the DSDT is unreadable.
fn decode_at(
    memory: &impl PhysicalMemory,
    address: u64,
    length: u32,
    offset: u32,
) -> Result<Option<Result<SleepTypes, S5Error>>, S5Error> {
    // The two bytes before the name (NameOp, maybe `\`), inside the AML.
    let before_start = offset.saturating_sub(2).max(HEADER_LENGTH);
    let mut before = [0u8; 2];
    let before = before.get_mut(..(offset - before_start) as usize).unwrap_or(&mut []);
    memory.read(table_address(address, before_start)?, before)?;
    if !matches!(*before, [.., NAME_OP] | [NAME_OP, ROOT_CHAR]) {
        return Ok(None);
    }
    let after = offset + S5_NAME.len() as u32;
    let remaining = length.saturating_sub(after) as usize;
    let mut window = [0u8; WINDOW];
    let window = window.get_mut(..remaining.min(WINDOW)).unwrap_or(&mut []);
    memory.read(table_address(address, after)?, window)?;
    Ok(Some(decode_package(window, remaining, offset)))
}

/// Decodes `PackageOp PkgLength NumElements element element` at the start
/// of `bytes`; `remaining` bytes of the table follow the name (at least
/// `bytes.len()`).
fn decode_package(bytes: &[u8], remaining: usize, offset: u32) -> Result<SleepTypes, S5Error> {
    let malformed = |reason| S5Error::Malformed { offset, reason };
    let mut reader = Reader { bytes, position: 0 };
    if reader.byte() != Some(PACKAGE_OP) {
        // `Name (_S5, <not a package>)`: an integer, a string, a reference.
        return Err(malformed("not a package"));
    }
    let package_start = reader.position;
    let package_length = reader.package_length().ok_or_else(|| malformed("bad package length"))?;
    // PkgLength counts itself and what follows (section 20.2.4).
    let package_end = package_start.checked_add(package_length).ok_or_else(|| malformed("bad package length"))?;
    if package_end > remaining {
        return Err(malformed("package runs past the end of the DSDT"));
    }
    let elements = reader.byte().ok_or_else(|| malformed("truncated"))?;
    if elements == 0 {
        return Err(malformed("empty package"));
    }
    let a = reader.integer(package_end).ok_or_else(|| malformed("SLP_TYPa is not an integer"))?;
    let b = if elements >= 2 {
        reader.integer(package_end).ok_or_else(|| malformed("SLP_TYPb is not an integer"))?
    } else {
        a
    };
    let sleep_type = |value: u64| u8::try_from(value).ok().filter(|&value| value <= MAX_SLEEP_TYPE);
    match (sleep_type(a), sleep_type(b)) {
        (Some(a), Some(b)) => Ok(SleepTypes { a, b }),
        _ => Err(malformed("sleep type above 7")),
    }
}

/// A cursor over AML bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.position)?;
        self.position += 1;
        Some(byte)
    }

    /// `n` little-endian bytes.
    fn little_endian(&mut self, n: usize) -> Option<u64> {
        (0..n).try_fold(0u64, |value, index| Some(value | u64::from(self.byte()?) << (8 * index)))
    }

    /// PkgLength (section 20.2.4): bits 7-6 of the lead byte count the
    /// bytes that follow (0-3); with none, bits 5-0 are the length, else
    /// bits 3-0 are its low nibble and each following byte 8 more bits.
    fn package_length(&mut self) -> Option<usize> {
        let lead = self.byte()?;
        let follow = usize::from(lead >> 6);
        if follow == 0 {
            return Some(usize::from(lead & 0x3F));
        }
        let high = self.little_endian(follow)?;
        usize::try_from(u64::from(lead & 0x0F) | high << 4).ok()
    }

    /// An integer data object that ends by `end`.
    fn integer(&mut self, end: usize) -> Option<u64> {
        let value = match self.byte()? {
            ZERO_OP => 0,
            ONE_OP => 1,
            BYTE_PREFIX => self.little_endian(1)?,
            WORD_PREFIX => self.little_endian(2)?,
            DWORD_PREFIX => self.little_endian(4)?,
            QWORD_PREFIX => self.little_endian(8)?,
            _ => return None,
        };
        (self.position <= end).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physical_memory::SliceMemory;
    use crate::test_memory::acpi_table;

    const BASE: u64 = 0x7fe_0000;

    fn dsdt(aml: &[u8]) -> Vec<u8> {
        acpi_table(b"DSDT", 2, aml)
    }

    fn s5(table: &[u8]) -> Result<SleepTypes, S5Error> {
        read_s5(&SliceMemory::new(BASE, table), BASE)
    }

    #[test]
    fn reads_byte_and_short_forms() {
        // Name (\_S5, Package (0x04) { 0x05, Zero, Zero, Zero })
        let table = dsdt(&[0x08, 0x5C, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00]);
        assert_eq!(s5(&table), Ok(SleepTypes { a: 5, b: 0 }));
        // Name (_S5, Package (0x02) { One, 0x0007 }) without the root prefix
        let table = dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x02, 0x01, 0x0B, 0x07, 0x00]);
        assert_eq!(s5(&table), Ok(SleepTypes { a: 1, b: 7 }));
        // One element: SLP_TYPb is SLP_TYPa.
        let table = dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0A, 0x03]);
        assert_eq!(s5(&table), Ok(SleepTypes { a: 3, b: 3 }));
    }

    #[test]
    fn reads_a_two_byte_package_length_after_other_aml() {
        let mut aml = vec![0x10, 0x05, b'\\', b'_', b'S', b'B', b'_']; // Scope (\_SB) {}
        aml.extend([
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x00, 0x02, 0x0C, 2, 0, 0, 0, 0x0E, 4, 0, 0, 0, 0, 0, 0, 0,
        ]);
        // a 2-byte PkgLength: lead 0x40 (one more byte), length (0x00 << 4) | 0 — too short for its contents
        assert!(matches!(s5(&dsdt(&aml)), Err(S5Error::Malformed { .. })));
        let lead = aml.len() - 17;
        aml[lead] = 0x41; // 1 | 0x01 << 4 = 17 bytes
        aml[lead + 1] = 0x01;
        assert_eq!(s5(&dsdt(&aml)), Ok(SleepTypes { a: 2, b: 4 }));
    }

    #[test]
    fn finds_a_name_straddling_two_reads() {
        let mut aml = vec![0xA3; SCAN_CHUNK - HEADER_LENGTH as usize - 3]; // Noop
        aml.extend([0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x00, 0x00]);
        assert_eq!(s5(&dsdt(&aml)), Ok(SleepTypes { a: 0, b: 0 }));
    }

    #[test]
    fn skips_names_that_are_not_definitions() {
        // A reference to _S5_ in a method body first, then the definition.
        let aml =
            [0x70, b'_', b'S', b'5', b'_', 0x60, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0A, 0x05, 0x00];
        assert_eq!(s5(&dsdt(&aml)), Ok(SleepTypes { a: 5, b: 0 }));
    }

    #[test]
    fn garbled_tables_give_errors() {
        assert_eq!(s5(&dsdt(&[0x08, b'_', b'S', b'6', b'_', 0x12])), Err(S5Error::NotFound));
        // Method (_S5, 0) { Return (Package () { 5, 0 }) }: needs an interpreter.
        let method = [0x14, 0x0C, b'_', b'S', b'5', b'_', 0x00, 0xA4, 0x12, 0x05, 0x02, 0x0A, 0x05, 0x00];
        assert_eq!(s5(&dsdt(&method)), Err(S5Error::NotAPackage { offset: 38 }));
        // Name (_S5, 5): not a package.
        let integer = [0x08, b'_', b'S', b'5', b'_', 0x0A, 0x05];
        assert!(matches!(s5(&dsdt(&integer)), Err(S5Error::Malformed { reason: "not a package", .. })));
        // Truncated at the end of the table.
        let truncated = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02];
        assert!(matches!(s5(&dsdt(&truncated)), Err(S5Error::Malformed { .. })));
        // An element that is a string, then a sleep type above 7, then no elements.
        let string = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0D, b'x', 0x00];
        assert!(matches!(s5(&dsdt(&string)), Err(S5Error::Malformed { .. })));
        let big = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0A, 0x08, 0x00];
        assert!(matches!(s5(&dsdt(&big)), Err(S5Error::Malformed { reason: "sleep type above 7", .. })));
        let empty = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x02, 0x00];
        assert!(matches!(s5(&dsdt(&empty)), Err(S5Error::Malformed { reason: "empty package", .. })));
        // A 4-byte PkgLength far past the table.
        let huge = [0x08, b'_', b'S', b'5', b'_', 0x12, 0xCF, 0xFF, 0xFF, 0xFF, 0x02, 0x00, 0x00];
        assert!(matches!(s5(&dsdt(&huge)), Err(S5Error::Malformed { .. })));
    }

    #[test]
    fn bad_tables_are_refused() {
        assert_eq!(read_s5(&SliceMemory::new(BASE, &[]), 0), Err(S5Error::NoDsdt));
        let mut table = dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x00, 0x00]);
        table[20] ^= 1;
        assert!(matches!(s5(&table), Err(S5Error::Dsdt(AcpiError::TableChecksum { .. }))));
        let table = acpi_table(b"SSDT", 2, &[]);
        assert!(matches!(s5(&table), Err(S5Error::Dsdt(AcpiError::TableSignature { .. }))));
        assert!(matches!(s5(b"DSD"), Err(S5Error::Dsdt(AcpiError::Unreadable(_)))));
        // A length beyond the memory holding the table.
        let mut table = dsdt(&[]);
        table[4] = 200;
        assert!(matches!(s5(&table), Err(S5Error::Dsdt(AcpiError::Unreadable(_)))));
    }

    #[test]
    fn never_panics_on_random_bytes() {
        use proptest::prelude::*;
        proptest!(|(aml in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600)| {
            let mut with_name = aml.clone();
            let at = cut.min(with_name.len());
            with_name.splice(at..at, [0x08, b'_', b'S', b'5', b'_', 0x12]);
            let _ = s5(&dsdt(&aml));
            let _ = s5(&dsdt(&with_name));
            if let Ok(types) = s5(&dsdt(&with_name)) {
                prop_assert!(types.a <= MAX_SLEEP_TYPE && types.b <= MAX_SLEEP_TYPE);
            }
        });
    }
}
