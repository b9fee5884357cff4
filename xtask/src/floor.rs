//! The floor: the smallest PVH kernel, which exits the VM at its first
//! instruction. Its QEMU wall time is the cost of QEMU itself (start-up,
//! firmware, teardown), against which an image's boot is judged.
//!
//! Written out byte by byte (an ELF header, a load segment and the Xen PVH
//! note, five instructions) so it needs no toolchain of its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const LOAD_ADDRESS: u64 = 0x10_0000;
const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const NOTE_OFFSET: usize = ELF_HEADER_SIZE + 2 * PROGRAM_HEADER_SIZE;
const NOTE_SIZE: usize = 12 + 4 + 8;
const CODE_OFFSET: usize = NOTE_OFFSET + NOTE_SIZE;
/// 32-bit code: `mov dx, 0xf4; xor eax, eax; out dx, eax; 1: hlt; jmp 1b`
/// (isa-debug-exit with status 0).
const CODE: [u8; 10] = [0x66, 0xba, 0xf4, 0x00, 0x31, 0xc0, 0xef, 0xf4, 0xeb, 0xfd];

/// The floor kernel's bytes.
pub fn image() -> Vec<u8> {
    let total = CODE_OFFSET + CODE.len();
    let entry = LOAD_ADDRESS + CODE_OFFSET as u64;
    let mut elf = Vec::with_capacity(total);
    // ELF header (System V ABI, ELF-64 object file format).
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(ELF_HEADER_SIZE as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [ELF_HEADER_SIZE, PROGRAM_HEADER_SIZE, 2, 64, 0, 0] {
        elf.extend_from_slice(&(half as u16).to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let mut segment = |kind: u32, flags: u32, offset: usize, size: usize, align: u64| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&(offset as u64).to_le_bytes());
        elf.extend_from_slice(&(LOAD_ADDRESS + offset as u64).to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&(LOAD_ADDRESS + offset as u64).to_le_bytes()); // p_paddr
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
        elf.extend_from_slice(&align.to_le_bytes());
    };
    segment(1, 5, 0, total, 0x1000); // PT_LOAD, R+X: the whole file
    segment(4, 4, NOTE_OFFSET, NOTE_SIZE, 4); // PT_NOTE
                                              // Xen note: namesz 4, descsz 8, type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
    for word in [4u32, 8, 18] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(b"Xen\0");
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&CODE);
    elf
}

/// Writes the floor kernel under `target/` and returns its path.
pub fn write(target_dir: &Path) -> Result<PathBuf> {
    let path = target_dir.join("floor-kernel.elf");
    std::fs::create_dir_all(target_dir)?;
    std::fs::write(&path, image()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_an_elf_whose_note_points_at_the_code() {
        let elf = image();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), CODE_OFFSET + CODE.len());
        let note = &elf[NOTE_OFFSET..NOTE_OFFSET + NOTE_SIZE];
        assert_eq!(&note[12..16], b"Xen\0");
        let entry = u64::from_le_bytes(note[16..24].try_into().unwrap());
        assert_eq!(entry, LOAD_ADDRESS + CODE_OFFSET as u64);
        let e_entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(e_entry, entry);
    }
}
