//! Test support: a fake guest-physical memory, and builders for what VMMs put in it.
//!
//! Byte layouts are written out by hand here, independently of the parsers,
//! so a test fails if a parser reads a field at the wrong offset.

use crate::physical_memory::{PhysicalMemory, Unreadable};
use crate::pvh::START_INFO_MAGIC;

/// Guest-physical memory made of separate chunks; a read succeeds only if
/// it lies entirely inside one chunk, like memory with holes between.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeMemory {
    chunks: Vec<(u64, Vec<u8>)>,
}

impl FakeMemory {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk holding `bytes` at `base`.
    pub(crate) fn with(mut self, base: u64, bytes: Vec<u8>) -> Self {
        self.insert(base, bytes);
        self
    }

    pub(crate) fn insert(&mut self, base: u64, bytes: Vec<u8>) {
        assert!(u128::from(base) + bytes.len() as u128 <= 1 << 64, "a chunk must end inside the address space");
        self.chunks.push((base, bytes));
    }

    /// Overwrites bytes inside an existing chunk.
    pub(crate) fn write(&mut self, address: u64, bytes: &[u8]) {
        let (base, chunk) = self
            .chunks
            .iter_mut()
            .find(|(base, chunk)| *base <= address && address - *base + bytes.len() as u64 <= chunk.len() as u64)
            .expect("write inside a chunk");
        let start = (address - *base) as usize;
        chunk[start..start + bytes.len()].copy_from_slice(bytes);
    }
}

impl PhysicalMemory for FakeMemory {
    fn read(&self, address: u64, buffer: &mut [u8]) -> Result<(), Unreadable> {
        let end = u128::from(address) + buffer.len() as u128;
        for (base, chunk) in &self.chunks {
            let chunk_end = u128::from(*base) + chunk.len() as u128;
            if *base <= address && end <= chunk_end {
                let start = (address - base) as usize;
                buffer.copy_from_slice(&chunk[start..start + buffer.len()]);
                return Ok(());
            }
        }
        Err(Unreadable { address, length: buffer.len() })
    }
}

/// An `hvm_start_info` to lay out (56 bytes, version 1 layout).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartInfoLayout {
    pub(crate) magic: u32,
    pub(crate) version: u32,
    pub(crate) flags: u32,
    pub(crate) command_line: u64,
    pub(crate) rsdp: u64,
    pub(crate) memory_map: u64,
    pub(crate) memory_map_entries: u32,
}

impl Default for StartInfoLayout {
    fn default() -> Self {
        Self {
            magic: START_INFO_MAGIC,
            version: 1,
            flags: 0,
            command_line: 0,
            rsdp: 0,
            memory_map: 0,
            memory_map_entries: 0,
        }
    }
}

impl StartInfoLayout {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(56);
        bytes.extend_from_slice(&self.magic.to_le_bytes()); // 0
        bytes.extend_from_slice(&self.version.to_le_bytes()); // 4
        bytes.extend_from_slice(&self.flags.to_le_bytes()); // 8
        bytes.extend_from_slice(&0u32.to_le_bytes()); // 12 nr_modules
        bytes.extend_from_slice(&0u64.to_le_bytes()); // 16 modlist_paddr
        bytes.extend_from_slice(&self.command_line.to_le_bytes()); // 24
        bytes.extend_from_slice(&self.rsdp.to_le_bytes()); // 32
        bytes.extend_from_slice(&self.memory_map.to_le_bytes()); // 40
        bytes.extend_from_slice(&self.memory_map_entries.to_le_bytes()); // 48
        bytes.extend_from_slice(&0u32.to_le_bytes()); // 52 reserved
        assert_eq!(bytes.len(), 56);
        bytes
    }
}

/// PVH memory map entries `(address, size, e820 type)`, 24 bytes each.
pub(crate) fn memory_map_bytes(entries: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * 24);
    for &(address, size, kind) in entries {
        bytes.extend_from_slice(&address.to_le_bytes());
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    bytes
}

/// Sets `bytes[index]` so that `bytes[..length]` sums to 0 (mod 256).
pub(crate) fn fix_checksum(mut bytes: Vec<u8>, index: usize, length: usize) -> Vec<u8> {
    bytes[index] = 0;
    let sum = bytes[..length].iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte));
    bytes[index] = 0u8.wrapping_sub(sum);
    bytes
}

/// An ACPI 1.0 RSDP (20 bytes).
pub(crate) fn rsdp_v1(rsdt: u32) -> Vec<u8> {
    let mut bytes = b"RSD PTR ".to_vec();
    bytes.push(0); // 8 checksum
    bytes.extend_from_slice(b"TOROVM"); // 9 OEMID
    bytes.push(0); // 15 revision
    bytes.extend_from_slice(&rsdt.to_le_bytes()); // 16
    fix_checksum(bytes, 8, 20)
}

/// An ACPI 2.0 RSDP (36 bytes).
pub(crate) fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut bytes = rsdp_v1(rsdt);
    bytes[15] = 2;
    bytes.extend_from_slice(&36u32.to_le_bytes()); // 20 length
    bytes.extend_from_slice(&xsdt.to_le_bytes()); // 24
    bytes.extend_from_slice(&[0, 0, 0, 0]); // 32 extended checksum, reserved
    let bytes = fix_checksum(bytes, 8, 20);
    fix_checksum(bytes, 32, 36)
}

/// An ACPI table: the 36-byte header, then `body`, with a valid checksum.
pub(crate) fn acpi_table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let length = 36 + body.len();
    let mut bytes = signature.to_vec();
    bytes.extend_from_slice(&(length as u32).to_le_bytes()); // 4
    bytes.push(revision); // 8
    bytes.push(0); // 9 checksum
    bytes.extend_from_slice(b"TOROVM"); // 10 OEMID
    bytes.extend_from_slice(b"TOROTABL"); // 16 OEM table ID
    bytes.extend_from_slice(&1u32.to_le_bytes()); // 24 OEM revision
    bytes.extend_from_slice(b"TORO"); // 28 creator ID
    bytes.extend_from_slice(&1u32.to_le_bytes()); // 32 creator revision
    bytes.extend_from_slice(body);
    fix_checksum(bytes, 9, length)
}

/// A MADT: local APIC address, flags, then the entries as given.
pub(crate) fn madt_bytes(revision: u8, local_apic_address: u32, flags: u32, entries: &[&[u8]]) -> Vec<u8> {
    let mut body = local_apic_address.to_le_bytes().to_vec();
    body.extend_from_slice(&flags.to_le_bytes());
    for entry in entries {
        body.extend_from_slice(entry);
    }
    acpi_table(b"APIC", revision, &body)
}
