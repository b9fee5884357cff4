//! Content coding of the server's responses: gzip for the clients that
//! take it (`Accept-Encoding`), at the level `gzip=` gives (1 fastest to
//! 9 smallest, `off` or 0 for none; default 1, nginx's default level).
//! Which responses qualify and how the coding is negotiated is
//! `toro_net::http`'s (`Response::coding_for`): complete textual 200
//! bodies of 256 bytes or more without an `ETag`, so the built-in pages
//! and `/stats`, not the disk's files.
//!
//! Each response is compressed as it is sent, as nginx's gzip filter
//! does, with a compressor state sized to the body (`toro_net::gzip`:
//! about 8 KiB for the 612-byte page), made from and returned to the
//! allocator of the CPU that serves the connection.

use core::sync::atomic::{AtomicU8, Ordering};

use toro::println;
use toro_net::http::{Coding, Request, Response};

use crate::stats;

/// The level, or [`OFF`].
static LEVEL: AtomicU8 = AtomicU8::new(DEFAULT_LEVEL);
const DEFAULT_LEVEL: u8 = 1;
const OFF: u8 = u8::MAX;

/// Reads `gzip=` from the command line; says what it does with a bad value.
pub fn init() {
    let level = match toro::system::argument("gzip") {
        None => DEFAULT_LEVEL,
        Some("off" | "0") => OFF,
        Some(text) => match text.parse::<u8>() {
            Ok(level @ 1..=9) => level,
            _ => {
                println!("webserver: gzip= takes off or a level 1-9, not {text:?}; using {DEFAULT_LEVEL}");
                DEFAULT_LEVEL
            }
        },
    };
    LEVEL.store(level, Ordering::Relaxed);
}

/// The level responses are compressed at, if they are.
pub fn level() -> Option<u8> {
    Some(LEVEL.load(Ordering::Relaxed)).filter(|&level| level != OFF)
}

/// Codes `response` for `request` as the client and the response allow.
pub fn apply(request: &Request<'_>, response: &mut Response<'_>) {
    let Some(level) = level() else { return };
    match response.coding_for(request) {
        Coding::Unchanged => {}
        Coding::Identity => response.vary_on_encoding(),
        Coding::Gzip => {
            response.encode_gzip(level);
            stats::gzipped();
        }
    }
}
