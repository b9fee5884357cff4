//! `toro::io`: std::io-shaped errors and traits (the `toro-io` crate).
//!
//! The items live in the host-testable crate `toro-io` (directory `io/`) so
//! that the filesystem and protocol crates share the one error type with
//! the kernel; this module is the path applications use. See docs/io.md.

pub use toro_io::*;
