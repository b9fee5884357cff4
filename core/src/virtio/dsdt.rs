//! virtio-mmio devices in the ACPI DSDT: a small AML reader for `LNRO0005` devices and their `_CRS`.
//!
//! QEMU microvm (with ACPI on, its default) and Firecracker describe each
//! virtio-mmio device only in the DSDT, as
//!
//! ```text
//! Device (VR23) {
//!     Name (_HID, "LNRO0005")
//!     Name (_UID, 0x17)
//!     Name (_CRS, ResourceTemplate () {
//!         Memory32Fixed (ReadWrite, 0xFEB02E00, 0x00000200)
//!         Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 47 }
//!     })
//! }
//! ```
//!
//! A full AML interpreter is far more than this needs (and the `acpi`/`aml`
//! crates that build on stable lack it or need `alloc`). This reader walks
//! the definition block's term list structurally (ACPI 6.5, chapter 20):
//! it descends into `Scope` and `Device` bodies, reads `Name` objects with
//! constant data, and steps over every object whose extent it can compute
//! (`Method`, `Field`, `Buffer`, `Package`, `OperationRegion` with constant
//! operands, `Processor`, ...). On an opcode it does not know it cannot
//! find the next object, so it gives up on the rest of the enclosing
//! body only (whose length it knows) and carries on after it, reporting
//! the skip: a device of another kind with exotic AML never hides the
//! devices around it. Every length is checked against the bytes there
//! are, nesting is capped, and each step advances, so any byte string
//! gives devices and problems, never a panic or an endless loop.
//!
//! Resource descriptors (section 6.4) read from `_CRS`: the memory range
//! from `Memory32Fixed` (or a DWord/QWord memory address space), the
//! interrupt (and its trigger mode and polarity) from an extended
//! `Interrupt` descriptor (or a legacy `IRQ`).

use core::fmt;

use super::{MmioDevice, MmioDevices};
use crate::acpi::{self, AcpiError, Rsdp};
use crate::physical_memory::{read_u32, read_u64, PhysicalMemory};

/// The `_HID` of a virtio-mmio device (Linux's `virtio_mmio_acpi_match`).
pub const VIRTIO_MMIO_HID: &[u8] = b"LNRO0005";

/// Deepest nesting of `Scope` and `Device` bodies followed.
pub const MAX_DEPTH: usize = 16;

/// Bytes in an ACPI table header (section 5.2.6).
const HEADER_LENGTH: usize = 36;
/// FADT (section 5.2.9): `DSDT` (32-bit) and `X_DSDT` (64-bit) field offsets.
const FADT_DSDT_OFFSET: u64 = 40;
const FADT_X_DSDT_OFFSET: u64 = 140;
/// The FADT is long enough to hold `X_DSDT` from this length on.
const FADT_X_DSDT_END: u32 = 148;

/// AML opcodes (section 20.3) this reader knows.
mod opcode {
    pub const ZERO: u8 = 0x00;
    pub const ONE: u8 = 0x01;
    pub const ALIAS: u8 = 0x06;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0A;
    pub const WORD_PREFIX: u8 = 0x0B;
    pub const DWORD_PREFIX: u8 = 0x0C;
    pub const STRING_PREFIX: u8 = 0x0D;
    pub const QWORD_PREFIX: u8 = 0x0E;
    pub const SCOPE: u8 = 0x10;
    pub const BUFFER: u8 = 0x11;
    pub const PACKAGE: u8 = 0x12;
    pub const VAR_PACKAGE: u8 = 0x13;
    pub const METHOD: u8 = 0x14;
    pub const DUAL_NAME_PREFIX: u8 = 0x2E;
    pub const MULTI_NAME_PREFIX: u8 = 0x2F;
    pub const EXT_PREFIX: u8 = 0x5B;
    pub const ROOT_CHAR: u8 = 0x5C;
    pub const PARENT_PREFIX: u8 = 0x5E;
    pub const ONES: u8 = 0xFF;
    /// After [`EXT_PREFIX`].
    pub const EXT_OP_REGION: u8 = 0x80;
    pub const EXT_FIELD: u8 = 0x81;
    pub const EXT_DEVICE: u8 = 0x82;
    pub const EXT_PROCESSOR: u8 = 0x83;
    pub const EXT_POWER_RESOURCE: u8 = 0x84;
    pub const EXT_THERMAL_ZONE: u8 = 0x85;
    pub const EXT_INDEX_FIELD: u8 = 0x86;
    pub const EXT_BANK_FIELD: u8 = 0x87;
    pub const EXT_MUTEX: u8 = 0x01;
    pub const EXT_EVENT: u8 = 0x02;
}

/// Resource descriptor tags (section 6.4).
mod resource {
    /// Small descriptor `IRQ` (6.4.2.1), type 0x04, length 2 or 3.
    pub const SMALL_IRQ: u8 = 0x04;
    /// Small descriptor `End Tag` (6.4.2.9), type 0x0F.
    pub const SMALL_END: u8 = 0x0F;
    /// Large descriptor bit in the tag byte.
    pub const LARGE: u8 = 0x80;
    /// Large `32-Bit Fixed Memory Range` (6.4.3.4).
    pub const MEMORY32_FIXED: u8 = 0x86;
    /// Large `DWord Address Space` (6.4.3.5.2).
    pub const DWORD_ADDRESS: u8 = 0x87;
    /// Large `Extended Interrupt` (6.4.3.6).
    pub const EXTENDED_INTERRUPT: u8 = 0x89;
    /// Large `QWord Address Space` (6.4.3.5.1).
    pub const QWORD_ADDRESS: u8 = 0x8A;
    /// Address-space `Resource Type` 0: memory.
    pub const MEMORY_RANGE: u8 = 0;
}

/// What was wrong with the DSDT, or with one object in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsdtError {
    /// The table, or its address, could not be read or found.
    Acpi(AcpiError),
    /// Shorter than a table header, or shorter than its header's length.
    Truncated {
        /// Bytes there are.
        bytes: usize,
    },
    /// The signature is not `DSDT` (or `SSDT`).
    Signature([u8; 4]),
    /// The bytes do not add up to zero.
    Checksum,
    /// An opcode the reader cannot step over; the rest of the enclosing body was skipped.
    UnknownOpcode {
        /// Offset in the table.
        offset: usize,
        /// The opcode byte (after `0x5B` for extended ones).
        opcode: u8,
    },
    /// An object runs past the end of its enclosing body; the rest of the body was skipped.
    ObjectTooLong {
        /// Offset in the table.
        offset: usize,
    },
    /// `Scope` and `Device` nested deeper than [`MAX_DEPTH`]; the deeper body was skipped.
    TooDeep {
        /// Offset in the table.
        offset: usize,
    },
    /// A `LNRO0005` device whose `_CRS` is missing, not a constant buffer,
    /// or lacks a memory range or an interrupt; the device is left out.
    DeviceResources {
        /// Offset of the device in the table.
        offset: usize,
    },
}

impl From<AcpiError> for DsdtError {
    fn from(error: AcpiError) -> Self {
        Self::Acpi(error)
    }
}

impl fmt::Display for DsdtError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Acpi(error) => write!(formatter, "DSDT: {error}"),
            Self::Truncated { bytes } => write!(formatter, "DSDT truncated ({bytes} bytes)"),
            Self::Signature(found) => write!(formatter, "DSDT has signature {:?}", found.map(char::from)),
            Self::Checksum => formatter.write_str("DSDT has a bad checksum"),
            Self::UnknownOpcode { offset, opcode } => {
                write!(formatter, "DSDT: unknown AML opcode {opcode:#04x} at {offset:#x}, rest of its body skipped")
            }
            Self::ObjectTooLong { offset } => {
                write!(formatter, "DSDT: AML object at {offset:#x} runs past its body, rest of the body skipped")
            }
            Self::TooDeep { offset } => write!(formatter, "DSDT: AML nested too deep at {offset:#x}, body skipped"),
            Self::DeviceResources { offset } => write!(
                formatter,
                "DSDT: virtio-mmio device at {offset:#x} has no usable _CRS (memory range and interrupt); left out"
            ),
        }
    }
}

/// Finds the DSDT through the FADT: its physical address and length.
///
/// `X_DSDT` is preferred when the FADT is long enough and it is non-zero.
/// Returns `Ok(None)` if there is no FADT.
pub fn find_dsdt(memory: &impl PhysicalMemory, rsdp: &Rsdp) -> Result<Option<(u64, u32)>, DsdtError> {
    let Some((fadt, fadt_length)) = acpi::find_table(memory, rsdp, *b"FACP")? else { return Ok(None) };
    let extended = if fadt_length >= FADT_X_DSDT_END {
        read_u64(memory, fadt, FADT_X_DSDT_OFFSET).map_err(AcpiError::from)?
    } else {
        0
    };
    let address = if extended != 0 {
        extended
    } else {
        u64::from(read_u32(memory, fadt, FADT_DSDT_OFFSET).map_err(AcpiError::from)?)
    };
    let length = read_u32(memory, address, 4).map_err(AcpiError::from)?;
    if length < HEADER_LENGTH as u32 || length > acpi::MAX_TABLE_LENGTH {
        return Err(AcpiError::TableLength { address, signature: *b"DSDT", length }.into());
    }
    Ok(Some((address, length)))
}

/// What [`virtio_mmio_devices`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsdtReport {
    /// `Device` objects seen.
    pub devices_seen: usize,
    /// `LNRO0005` devices added to the list.
    pub virtio_devices: usize,
    /// Problems reported (each through the callback).
    pub problems: usize,
}

/// Adds every `LNRO0005` device of the definition block `table` (a whole
/// DSDT or SSDT, header included) to `devices`.
///
/// A bad header or checksum is an error (nothing is read). Problems in the
/// AML are given to `problem` one by one; reading goes on after each.
pub fn virtio_mmio_devices(
    table: &[u8],
    devices: &mut MmioDevices,
    mut problem: impl FnMut(DsdtError),
) -> Result<DsdtReport, DsdtError> {
    let header = table.get(..HEADER_LENGTH).ok_or(DsdtError::Truncated { bytes: table.len() })?;
    let signature = [header[0], header[1], header[2], header[3]];
    if &signature != b"DSDT" && &signature != b"SSDT" {
        return Err(DsdtError::Signature(signature));
    }
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let table =
        table.get(..length).filter(|_| length >= HEADER_LENGTH).ok_or(DsdtError::Truncated { bytes: table.len() })?;
    if table.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) != 0 {
        return Err(DsdtError::Checksum);
    }
    let mut reader = Reader { table, devices, report: DsdtReport::default(), problem: &mut problem };
    reader.term_list(HEADER_LENGTH, length, 0);
    Ok(reader.report)
}

/// Walks term lists, collecting devices.
struct Reader<'a, 'b, F: FnMut(DsdtError)> {
    table: &'a [u8],
    devices: &'b mut MmioDevices,
    report: DsdtReport,
    problem: &'b mut F,
}

/// What a `Device` body says about itself.
#[derive(Default)]
struct DeviceObjects {
    is_virtio_mmio: bool,
    /// `(start, end)` of the `_CRS` buffer's bytes.
    resources: Option<(usize, usize)>,
}

impl<F: FnMut(DsdtError)> Reader<'_, '_, F> {
    fn report_problem(&mut self, error: DsdtError) {
        self.report.problems += 1;
        (self.problem)(error);
    }

    fn byte(&self, offset: usize) -> Option<u8> {
        self.table.get(offset).copied()
    }

    /// Reads the term list in `start..end`; `device` collects the names of
    /// the device whose body this is.
    fn term_list(&mut self, start: usize, end: usize, depth: usize) -> DeviceObjects {
        let mut objects = DeviceObjects::default();
        let mut offset = start;
        while offset < end {
            match self.term(offset, end, depth, &mut objects) {
                Ok(next) if next > offset && next <= end => offset = next,
                Ok(_) => {
                    self.report_problem(DsdtError::ObjectTooLong { offset });
                    break;
                }
                Err(error) => {
                    self.report_problem(error);
                    break;
                }
            }
        }
        objects
    }

    /// Reads the object at `offset`; returns where the next one starts.
    fn term(
        &mut self,
        offset: usize,
        end: usize,
        depth: usize,
        objects: &mut DeviceObjects,
    ) -> Result<usize, DsdtError> {
        let truncated = DsdtError::ObjectTooLong { offset };
        let op = self.byte(offset).ok_or(truncated)?;
        match op {
            opcode::SCOPE => {
                let (body_end, name_start) = self.package(offset + 1, end)?;
                let body = self.name_string(name_start, body_end)?.end;
                self.nested(offset, body, body_end, depth);
                Ok(body_end)
            }
            opcode::NAME => {
                let name = self.name_string(offset + 1, end)?;
                let data = name.end;
                let data_end = self.data_object(data, end)?;
                match &name.last_segment {
                    b"_HID" if self.byte(data) == Some(opcode::STRING_PREFIX) => {
                        let text = self.table.get(data + 1..data_end.saturating_sub(1)).unwrap_or(&[]);
                        objects.is_virtio_mmio |= text == VIRTIO_MMIO_HID;
                    }
                    b"_CRS" if self.byte(data) == Some(opcode::BUFFER) => {
                        objects.resources = self.buffer_bytes(data, data_end);
                    }
                    _ => {}
                }
                Ok(data_end)
            }
            opcode::METHOD | opcode::BUFFER | opcode::PACKAGE | opcode::VAR_PACKAGE => {
                Ok(self.package(offset + 1, end)?.0)
            }
            opcode::ALIAS => {
                let first = self.name_string(offset + 1, end)?.end;
                Ok(self.name_string(first, end)?.end)
            }
            opcode::EXT_PREFIX => {
                let ext = self.byte(offset + 1).ok_or(truncated)?;
                match ext {
                    opcode::EXT_DEVICE => {
                        let (body_end, name_start) = self.package(offset + 2, end)?;
                        let body = self.name_string(name_start, body_end)?.end;
                        self.report.devices_seen += 1;
                        if let Some(device) = self.nested(offset, body, body_end, depth) {
                            self.add_device(offset, &device);
                        }
                        Ok(body_end)
                    }
                    opcode::EXT_FIELD
                    | opcode::EXT_INDEX_FIELD
                    | opcode::EXT_BANK_FIELD
                    | opcode::EXT_PROCESSOR
                    | opcode::EXT_POWER_RESOURCE
                    | opcode::EXT_THERMAL_ZONE => Ok(self.package(offset + 2, end)?.0),
                    opcode::EXT_OP_REGION => {
                        // NameString RegionSpace(byte) RegionOffset RegionLen (section 20.2.5.2).
                        let space = self.name_string(offset + 2, end)?.end;
                        let region_offset = self.integer(space + 1, end)?;
                        self.integer(region_offset, end)
                    }
                    // NameString SyncFlags(byte) / NameString.
                    opcode::EXT_MUTEX => Ok(self.name_string(offset + 2, end)?.end + 1),
                    opcode::EXT_EVENT => Ok(self.name_string(offset + 2, end)?.end),
                    _ => Err(DsdtError::UnknownOpcode { offset, opcode: ext }),
                }
            }
            _ => Err(DsdtError::UnknownOpcode { offset, opcode: op }),
        }
    }

    /// Reads a nested body unless too deep; returns its objects.
    fn nested(&mut self, offset: usize, body: usize, body_end: usize, depth: usize) -> Option<DeviceObjects> {
        if depth + 1 > MAX_DEPTH {
            self.report_problem(DsdtError::TooDeep { offset });
            return None;
        }
        Some(self.term_list(body, body_end, depth + 1))
    }

    /// Adds a `LNRO0005` device from its `_CRS`.
    fn add_device(&mut self, offset: usize, objects: &DeviceObjects) {
        if !objects.is_virtio_mmio {
            return;
        }
        let device = objects.resources.and_then(|(start, end)| self.table.get(start..end)).and_then(resources);
        match device {
            Some(device) => {
                self.devices.push(device);
                self.report.virtio_devices += 1;
            }
            None => self.report_problem(DsdtError::DeviceResources { offset }),
        }
    }

    /// A `PkgLength` at `offset` (section 20.2.4): returns the end of the
    /// package (checked to be within `end`) and where its contents start.
    fn package(&self, offset: usize, end: usize) -> Result<(usize, usize), DsdtError> {
        let truncated = DsdtError::ObjectTooLong { offset };
        let lead = self.byte(offset).ok_or(truncated)?;
        let following = usize::from(lead >> 6);
        let length = if following == 0 {
            usize::from(lead & 0x3F)
        } else {
            let mut length = usize::from(lead & 0x0F);
            for index in 0..following {
                length |= usize::from(self.byte(offset + 1 + index).ok_or(truncated)?) << (4 + 8 * index);
            }
            length
        };
        let package_end = offset.checked_add(length).ok_or(truncated)?;
        let contents = offset + 1 + following;
        if package_end > end || contents > package_end {
            return Err(truncated);
        }
        Ok((package_end, contents))
    }

    /// A `NameString` at `offset` (section 20.2.2).
    fn name_string(&self, offset: usize, end: usize) -> Result<Name, DsdtError> {
        let truncated = DsdtError::ObjectTooLong { offset };
        let mut at = offset;
        if self.byte(at) == Some(opcode::ROOT_CHAR) {
            at += 1;
        } else {
            while self.byte(at) == Some(opcode::PARENT_PREFIX) {
                at += 1;
            }
        }
        let segments = match self.byte(at).ok_or(truncated)? {
            0 => {
                return Ok(Name { end: at + 1, last_segment: [0; 4] });
            }
            opcode::DUAL_NAME_PREFIX => {
                at += 1;
                2
            }
            opcode::MULTI_NAME_PREFIX => {
                let count = usize::from(self.byte(at + 1).ok_or(truncated)?);
                at += 2;
                count
            }
            _ => 1,
        };
        if segments == 0 {
            return Err(truncated);
        }
        let name_end = at.checked_add(4 * segments).filter(|&name_end| name_end <= end).ok_or(truncated)?;
        let last = self.table.get(name_end - 4..name_end).ok_or(truncated)?;
        if !last.iter().all(|&byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_') {
            return Err(DsdtError::UnknownOpcode { offset, opcode: last[0] });
        }
        Ok(Name { end: name_end, last_segment: [last[0], last[1], last[2], last[3]] })
    }

    /// A constant integer (`ComputationalData`'s integers, section 20.2.3); returns its end.
    fn integer(&self, offset: usize, end: usize) -> Result<usize, DsdtError> {
        let width = match self.byte(offset).ok_or(DsdtError::ObjectTooLong { offset })? {
            opcode::ZERO | opcode::ONE | opcode::ONES => 0,
            opcode::BYTE_PREFIX => 1,
            opcode::WORD_PREFIX => 2,
            opcode::DWORD_PREFIX => 4,
            opcode::QWORD_PREFIX => 8,
            other => return Err(DsdtError::UnknownOpcode { offset, opcode: other }),
        };
        let integer_end = offset + 1 + width;
        if integer_end > end {
            return Err(DsdtError::ObjectTooLong { offset });
        }
        Ok(integer_end)
    }

    /// A `DataRefObject` (a `Name`'s value); returns its end.
    fn data_object(&self, offset: usize, end: usize) -> Result<usize, DsdtError> {
        match self.byte(offset).ok_or(DsdtError::ObjectTooLong { offset })? {
            opcode::STRING_PREFIX => {
                let text = self.table.get(offset + 1..end).unwrap_or(&[]);
                let nul = text.iter().position(|&byte| byte == 0).ok_or(DsdtError::ObjectTooLong { offset })?;
                Ok(offset + 1 + nul + 1)
            }
            opcode::BUFFER | opcode::PACKAGE | opcode::VAR_PACKAGE => Ok(self.package(offset + 1, end)?.0),
            _ => self.integer(offset, end),
        }
    }

    /// The bytes of a constant `Buffer` at `offset` ending at `end`: after
    /// its `BufferSize` (which must be a constant), up to the end of the package.
    fn buffer_bytes(&self, offset: usize, end: usize) -> Option<(usize, usize)> {
        let (package_end, contents) = self.package(offset + 1, end).ok()?;
        let data = self.integer(contents, package_end).ok()?;
        Some((data, package_end))
    }
}

/// A parsed `NameString`.
struct Name {
    /// Where the name ends.
    end: usize,
    /// Its last `NameSeg` (`[0; 4]` for the null name).
    last_segment: [u8; 4],
}

/// Reads a resource template: the first memory range and the first interrupt.
fn resources(bytes: &[u8]) -> Option<MmioDevice> {
    let mut memory = None;
    let mut gsi = None;
    let mut offset = 0;
    while let Some(&tag) = bytes.get(offset) {
        let (kind, body_start, body_length) = if tag & resource::LARGE != 0 {
            let length = u16::from_le_bytes([*bytes.get(offset + 1)?, *bytes.get(offset + 2)?]);
            (tag, offset + 3, usize::from(length))
        } else {
            ((tag >> 3) & 0x0F, offset + 1, usize::from(tag & 0x07))
        };
        let body = bytes.get(body_start..body_start.checked_add(body_length)?)?;
        let le32 = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?)) };
        let le64 = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?)) };
        match (tag & resource::LARGE != 0, kind) {
            (false, resource::SMALL_END) => break,
            (false, resource::SMALL_IRQ) if gsi.is_none() => {
                let mask = u16::from_le_bytes([*body.first()?, *body.get(1)?]);
                // Information byte (optional; absent: edge, active high):
                // bit 0 edge, bit 3 active low.
                let information = body.get(2).copied().unwrap_or(0x01);
                gsi = (mask != 0).then(|| (mask.trailing_zeros(), information & 0x01 == 0, information & 0x08 != 0));
            }
            (true, resource::MEMORY32_FIXED) if memory.is_none() => {
                // Information byte, base, length.
                memory = Some((u64::from(le32(1)?), u64::from(le32(5)?)));
            }
            (true, resource::DWORD_ADDRESS) if memory.is_none() && body.first() == Some(&resource::MEMORY_RANGE) => {
                // Type, general flags, type flags, granularity, minimum, maximum, translation, length.
                memory = Some((u64::from(le32(7)?), u64::from(le32(19)?)));
            }
            (true, resource::QWORD_ADDRESS) if memory.is_none() && body.first() == Some(&resource::MEMORY_RANGE) => {
                memory = Some((le64(11)?, le64(35)?));
            }
            (true, resource::EXTENDED_INTERRUPT)
                if gsi.is_none()
                // Flags (bit 1 edge, bit 2 active low), count, then the interrupt numbers.
                && *body.get(1)? >= 1 =>
            {
                let flags = *body.first()?;
                gsi = Some((le32(2)?, flags & 0x02 == 0, flags & 0x04 != 0));
            }
            _ => {}
        }
        offset = body_start + body_length;
    }
    let (address, size) = memory?;
    if address == 0 || size < super::mmio::MIN_REGISTER_BLOCK_BYTES || address.checked_add(size).is_none() {
        return None;
    }
    let (gsi, level, active_low) = gsi?;
    Some(MmioDevice { address, size, gsi, level, active_low })
}

#[cfg(test)]
mod tests;
