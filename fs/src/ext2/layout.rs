//! The on-disk structures of ext2 revision 1: superblock, block group
//! descriptor, inode and directory entry, parsed and checked from bytes and
//! written back in place (fields this code does not know are kept as read).
//!
//! Offsets and names are those of the ext2 specification ("The Second
//! Extended File System", Dave Poirier, sections 3.1 superblock, 3.4 block
//! group descriptor table, 3.5 inode table, 4.1 linked directories).

use toro_io::{Error, ErrorKind, Result};

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

const fn corrupt(message: &'static str) -> Error {
    Error::from_static(ErrorKind::InvalidData, message)
}

/// Byte offset of the superblock from the start of the device (3.1).
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT2_MAGIC: u16 = 0xEF53;
/// Inode of the root directory (3.5.1 reserved inodes).
pub const ROOT_INODE: u32 = 2;
/// Size of a block group descriptor (3.4).
pub const GROUP_DESC_SIZE: usize = 32;

/// `s_feature_compat`, `s_feature_incompat`, `s_feature_ro_compat` bits (3.1.19-21).
pub mod feature {
    /// incompat: directory entries carry a file type.
    pub const INCOMPAT_FILETYPE: u32 = 0x0002;
    /// The incompatible features this code reads and writes.
    pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE;
    /// ro_compat: superblock copies only in groups 0, 1 and powers of 3, 5, 7.
    pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
    /// ro_compat: files may be 2 GiB or larger (`i_size_high`).
    pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
    /// The read-only-compatible features this code can write under.
    pub const RO_COMPAT_WRITABLE: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE;
}

/// The superblock: the fields the filesystem uses, and the raw bytes.
#[derive(Clone)]
pub struct Superblock {
    /// The 1024 raw bytes; updated fields are written into them.
    pub raw: [u8; SUPERBLOCK_SIZE],
    pub inodes_count: u32,
    pub blocks_count: u32,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub block_size: usize,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub first_ino: u32,
    pub inode_size: usize,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub group_count: u32,
}

impl Superblock {
    /// Parses and checks a superblock; `device_bytes` is the device's size.
    pub fn parse(raw: &[u8; SUPERBLOCK_SIZE], device_bytes: u64) -> Result<Superblock> {
        if u16_at(raw, 56) != EXT2_MAGIC {
            return Err(corrupt("not an ext2 filesystem: bad superblock magic"));
        }
        let rev_level = u32_at(raw, 76);
        let log_block_size = u32_at(raw, 24);
        if log_block_size > 6 {
            return Err(corrupt("superblock: block size above 64 KiB"));
        }
        let block_size = 1024usize << log_block_size;
        let (first_ino, inode_size) =
            if rev_level == 0 { (11, 128) } else { (u32_at(raw, 84), u16_at(raw, 88) as usize) };
        if rev_level > 1 {
            return Err(Error::from_static(ErrorKind::Unsupported, "ext2 revision above 1"));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(corrupt("superblock: inode size is not a power of two in 128..=block size"));
        }
        let sb = Superblock {
            raw: *raw,
            inodes_count: u32_at(raw, 0),
            blocks_count: u32_at(raw, 4),
            free_blocks_count: u32_at(raw, 12),
            free_inodes_count: u32_at(raw, 16),
            first_data_block: u32_at(raw, 20),
            block_size,
            blocks_per_group: u32_at(raw, 32),
            inodes_per_group: u32_at(raw, 40),
            first_ino,
            inode_size,
            feature_incompat: if rev_level == 0 { 0 } else { u32_at(raw, 96) },
            feature_ro_compat: if rev_level == 0 { 0 } else { u32_at(raw, 100) },
            group_count: 0,
        };
        let bits_per_block = (block_size * 8) as u32;
        if sb.blocks_per_group == 0 || sb.blocks_per_group > bits_per_block {
            return Err(corrupt("superblock: blocks per group is zero or exceeds one bitmap block"));
        }
        if sb.inodes_per_group == 0 || sb.inodes_per_group > bits_per_block {
            return Err(corrupt("superblock: inodes per group is zero or exceeds one bitmap block"));
        }
        if sb.first_data_block != u32::from(block_size == 1024) {
            return Err(corrupt("superblock: first data block does not match the block size"));
        }
        if sb.blocks_count <= sb.first_data_block {
            return Err(corrupt("superblock: no data blocks"));
        }
        if u64::from(sb.blocks_count) * block_size as u64 > device_bytes {
            return Err(corrupt("superblock: the filesystem is larger than the device (truncated image?)"));
        }
        let group_count = (sb.blocks_count - sb.first_data_block).div_ceil(sb.blocks_per_group);
        if u64::from(group_count) * u64::from(sb.inodes_per_group) != u64::from(sb.inodes_count) {
            return Err(corrupt("superblock: inode count is not groups x inodes per group"));
        }
        if sb.free_blocks_count > sb.blocks_count || sb.free_inodes_count > sb.inodes_count {
            return Err(corrupt("superblock: more free blocks or inodes than exist"));
        }
        if sb.first_ino <= ROOT_INODE || sb.first_ino > sb.inodes_count {
            return Err(corrupt("superblock: first non-reserved inode out of range"));
        }
        Ok(Superblock { group_count, ..sb })
    }

    /// Writes the updated counters into `raw` and returns it.
    pub fn serialize(&mut self, write_time: u32) -> &[u8; SUPERBLOCK_SIZE] {
        put_u32(&mut self.raw, 12, self.free_blocks_count);
        put_u32(&mut self.raw, 16, self.free_inodes_count);
        put_u32(&mut self.raw, 48, write_time);
        put_u32(&mut self.raw, 100, self.feature_ro_compat);
        &self.raw
    }
}

/// A block group descriptor (3.4).
#[derive(Clone, Copy, Debug)]
pub struct GroupDesc {
    pub block_bitmap: u32,
    pub inode_bitmap: u32,
    pub inode_table: u32,
    pub free_blocks_count: u16,
    pub free_inodes_count: u16,
    pub used_dirs_count: u16,
}

impl GroupDesc {
    pub fn parse(b: &[u8]) -> GroupDesc {
        GroupDesc {
            block_bitmap: u32_at(b, 0),
            inode_bitmap: u32_at(b, 4),
            inode_table: u32_at(b, 8),
            free_blocks_count: u16_at(b, 12),
            free_inodes_count: u16_at(b, 14),
            used_dirs_count: u16_at(b, 16),
        }
    }

    /// Writes the counters (the locations never change).
    pub fn serialize(&self, b: &mut [u8]) {
        put_u16(b, 12, self.free_blocks_count);
        put_u16(b, 14, self.free_inodes_count);
        put_u16(b, 16, self.used_dirs_count);
    }
}

/// `i_mode` file type bits (3.5.2).
pub mod mode {
    pub const TYPE_MASK: u16 = 0xF000;
    pub const SOCKET: u16 = 0xC000;
    pub const SYMLINK: u16 = 0xA000;
    pub const REGULAR: u16 = 0x8000;
    pub const BLOCK_DEVICE: u16 = 0x6000;
    pub const DIRECTORY: u16 = 0x4000;
    pub const CHAR_DEVICE: u16 = 0x2000;
    pub const FIFO: u16 = 0x1000;
}

/// `i_flags` bits (3.5.13).
pub mod flags {
    /// Hash-indexed directory.
    pub const INDEX: u32 = 0x0000_1000;
    /// Extent-mapped (ext4): not readable by this code.
    pub const EXTENTS: u32 = 0x0008_0000;
    /// Inline data (ext4): not readable by this code.
    pub const INLINE_DATA: u32 = 0x1000_0000;
}

/// Number of block pointers in `i_block`: 12 direct, then single, double and
/// triple indirect (3.5.13).
pub const DIRECT_BLOCKS: usize = 12;
/// Index of the single-indirect pointer in `i_block`.
pub const INDIRECT: usize = 12;
/// Index of the double-indirect pointer.
pub const DOUBLE_INDIRECT: usize = 13;
/// Index of the triple-indirect pointer.
pub const TRIPLE_INDIRECT: usize = 14;
/// Longest symlink target stored inside `i_block` ("fast" symlink).
pub const FAST_SYMLINK_MAX: usize = 60;

/// An inode (3.5): the fields this code uses, and the raw bytes.
#[derive(Clone, Debug)]
pub struct Inode {
    /// The raw on-disk bytes (`inode_size` long), updated on serialize.
    pub raw: alloc::vec::Vec<u8>,
    pub mode: u16,
    pub size: u64,
    pub atime: u32,
    pub ctime: u32,
    pub mtime: u32,
    pub dtime: u32,
    pub links_count: u16,
    /// `i_blocks`: 512-byte sectors held (data and indirect blocks).
    pub sectors: u64,
    pub flags: u32,
    pub block: [u32; 15],
    pub file_acl: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Inode {
    pub fn parse(raw: &[u8]) -> Inode {
        let mut block = [0u32; 15];
        for (i, b) in block.iter_mut().enumerate() {
            *b = u32_at(raw, 40 + 4 * i);
        }
        let mode = u16_at(raw, 0);
        // i_size_high (i_dir_acl in revision 0) counts for regular files;
        // e2fsprogs also sets it for large directories, which we honour.
        let size = u64::from(u32_at(raw, 4)) | (u64::from(u32_at(raw, 108)) << 32);
        Inode {
            raw: raw.to_vec(),
            mode,
            size,
            atime: u32_at(raw, 8),
            ctime: u32_at(raw, 12),
            mtime: u32_at(raw, 16),
            dtime: u32_at(raw, 20),
            links_count: u16_at(raw, 26),
            sectors: u64::from(u32_at(raw, 28)),
            flags: u32_at(raw, 32),
            block,
            file_acl: u32_at(raw, 104),
            uid: u32::from(u16_at(raw, 2)) | (u32::from(u16_at(raw, 120)) << 16),
            gid: u32::from(u16_at(raw, 24)) | (u32::from(u16_at(raw, 122)) << 16),
        }
    }

    /// A fresh inode of `inode_size` bytes.
    pub fn new(inode_size: usize, mode: u16, now: u32) -> Inode {
        let mut raw = alloc::vec![0u8; inode_size];
        // i_extra_isize: the extra fields mkfs itself uses (ext4's
        // ctime/mtime/atime extra, crtime, version_hi) when there is room.
        if inode_size >= 160 {
            put_u16(&mut raw, 128, 32);
        }
        let mut inode = Inode::parse(&raw);
        inode.mode = mode;
        inode.atime = now;
        inode.ctime = now;
        inode.mtime = now;
        inode
    }

    pub fn serialize(&mut self) -> &[u8] {
        let raw = &mut self.raw;
        put_u16(raw, 0, self.mode);
        put_u16(raw, 2, self.uid as u16);
        put_u32(raw, 4, self.size as u32);
        put_u32(raw, 8, self.atime);
        put_u32(raw, 12, self.ctime);
        put_u32(raw, 16, self.mtime);
        put_u32(raw, 20, self.dtime);
        put_u16(raw, 24, self.gid as u16);
        put_u16(raw, 26, self.links_count);
        put_u32(raw, 28, self.sectors as u32);
        put_u32(raw, 32, self.flags);
        for (i, b) in self.block.iter().enumerate() {
            put_u32(raw, 40 + 4 * i, *b);
        }
        put_u32(raw, 104, self.file_acl);
        put_u32(raw, 108, (self.size >> 32) as u32);
        put_u16(raw, 120, (self.uid >> 16) as u16);
        put_u16(raw, 122, (self.gid >> 16) as u16);
        &self.raw
    }

    pub fn file_type(&self) -> u16 {
        self.mode & mode::TYPE_MASK
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == mode::DIRECTORY
    }

    /// A symlink whose target is inside `i_block`.
    pub fn is_fast_symlink(&self, block_size: usize) -> bool {
        let xattr_sectors = if self.file_acl != 0 { (block_size / 512) as u64 } else { 0 };
        self.file_type() == mode::SYMLINK && self.sectors == xattr_sectors && self.size < FAST_SYMLINK_MAX as u64
    }
}

/// `file_type` values of a directory entry (4.1.5).
pub mod dirent_type {
    pub const UNKNOWN: u8 = 0;
    pub const REGULAR: u8 = 1;
    pub const DIRECTORY: u8 = 2;
    pub const CHAR_DEVICE: u8 = 3;
    pub const BLOCK_DEVICE: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCKET: u8 = 6;
    pub const SYMLINK: u8 = 7;

    /// The entry type of an inode mode.
    pub fn from_mode(mode: u16) -> u8 {
        match mode & super::mode::TYPE_MASK {
            super::mode::REGULAR => REGULAR,
            super::mode::DIRECTORY => DIRECTORY,
            super::mode::CHAR_DEVICE => CHAR_DEVICE,
            super::mode::BLOCK_DEVICE => BLOCK_DEVICE,
            super::mode::FIFO => FIFO,
            super::mode::SOCKET => SOCKET,
            super::mode::SYMLINK => SYMLINK,
            _ => UNKNOWN,
        }
    }
}

/// Size of a directory entry's fixed header (4.1).
pub const DIRENT_HEADER: usize = 8;
/// Longest name in a directory entry.
pub const NAME_MAX: usize = 255;

/// The space a directory entry with a name of `name_len` bytes needs.
pub const fn dirent_size(name_len: usize) -> usize {
    (DIRENT_HEADER + name_len + 3) & !3
}

/// A directory entry as found in a block.
#[derive(Clone, Copy, Debug)]
pub struct RawDirent {
    pub offset: usize,
    pub inode: u32,
    pub rec_len: usize,
    pub name_len: usize,
    pub file_type: u8,
}

/// Walks the entries of one directory block, checking each.
pub fn dirents(block: &[u8], inodes_count: u32) -> impl Iterator<Item = Result<RawDirent>> + '_ {
    let mut offset = 0usize;
    let mut failed = false;
    core::iter::from_fn(move || {
        if failed || offset + DIRENT_HEADER > block.len() {
            if !failed && offset < block.len() {
                failed = true;
                return Some(Err(corrupt("directory entry crosses the end of its block")));
            }
            return None;
        }
        let inode = u32_at(block, offset);
        let rec_len = u16_at(block, offset + 4) as usize;
        // A 64 KiB block stores rec_len 65536 as 0 (ext4 convention).
        let rec_len = if rec_len == 0 && block.len() == 65536 && offset == 0 { 65536 } else { rec_len };
        let name_len = block[offset + 6] as usize;
        let entry = RawDirent { offset, inode, rec_len, name_len, file_type: block[offset + 7] };
        if rec_len < DIRENT_HEADER || !rec_len.is_multiple_of(4) || offset + rec_len > block.len() {
            failed = true;
            return Some(Err(corrupt("directory entry with a bad record length")));
        }
        if inode != 0 && (DIRENT_HEADER + name_len > rec_len || inode > inodes_count) {
            failed = true;
            return Some(Err(corrupt("directory entry with a bad name length or inode number")));
        }
        offset += rec_len;
        Some(Ok(entry))
    })
}

/// Writes a directory entry header and name at `offset`.
pub fn put_dirent(block: &mut [u8], offset: usize, inode: u32, rec_len: usize, name: &[u8], file_type: u8) {
    put_u32(block, offset, inode);
    put_u16(block, offset + 4, rec_len as u16);
    block[offset + 6] = name.len() as u8;
    block[offset + 7] = file_type;
    block[offset + DIRENT_HEADER..offset + DIRENT_HEADER + name.len()].copy_from_slice(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a directory block holds, every entry the walk yields
        /// lies inside the block, name included.
        #[test]
        fn dirent_walk_stays_inside_the_block(
            block in proptest::collection::vec(any::<u8>(), 1024),
            pokes in proptest::collection::vec((0usize..1024, any::<u8>()), 0..16),
        ) {
            // Mostly valid entries, then damage: walks get deep into the block.
            let mut block = block;
            let mut offset = 0;
            while offset + 12 <= 1024 {
                let rec_len = (12 + (block[offset] as usize % 4) * 4).min(1024 - offset);
                put_dirent(&mut block, offset, 1, rec_len, b"a", dirent_type::REGULAR);
                offset += rec_len;
            }
            for (at, byte) in pokes {
                block[at] = byte;
            }
            for entry in dirents(&block, 100).flatten() {
                prop_assert!(entry.offset + entry.rec_len <= block.len());
                if entry.inode != 0 {
                    prop_assert!(entry.offset + DIRENT_HEADER + entry.name_len <= entry.offset + entry.rec_len);
                }
            }
        }
    }

    #[test]
    fn dirent_walk_rejects_bad_lengths() {
        let mut block = [0u8; 64];
        put_dirent(&mut block, 0, 2, 12, b".", dirent_type::DIRECTORY);
        put_dirent(&mut block, 12, 2, 52, b"..", dirent_type::DIRECTORY);
        assert_eq!(dirents(&block, 10).filter(|e| e.is_ok()).count(), 2);
        put_u16(&mut block, 16, 6);
        assert!(dirents(&block, 10).any(|e| e.is_err()));
        put_u16(&mut block, 16, 100);
        assert!(dirents(&block, 10).any(|e| e.is_err()));
    }
}
