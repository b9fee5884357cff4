//! Toro's filesystems, written against a block-device seam so that the same
//! code runs in the kernel (over virtio-blk, on the filesystem's owner CPU)
//! and on the host under `cargo test` (over image files that the host's
//! e2fsprogs made and checks).
//!
//! - [`block`]: [`BlockDevice`] (sectors: read, write, flush, size,
//!   read-only) and [`BlockCache`], a write-back cache of filesystem blocks.
//! - [`ext2`]: ext2 revision 1 as `mkfs.ext2` makes it, read and write.
//! - [`fuse`]: the FUSE protocol and a client session over it (the
//!   kernel's virtio-fs driver speaks it to the host's `virtiofsd`).
//! - [`virtio_blk`]: the virtio-blk protocol (configuration, requests,
//!   status) the kernel's driver speaks.
//!
//! Errors are [`toro_io::Error`]s with std's kinds; a corrupt image gives
//! [`ErrorKind::InvalidData`](toro_io::ErrorKind::InvalidData) with a fixed
//! message naming the check that failed, never a panic.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod block;
pub mod ext2;
pub mod fuse;
pub mod virtio_blk;

pub use block::{BlockCache, BlockDevice, MemoryDevice};
