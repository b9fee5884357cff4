//! The gzip content coding (RFC 9110 section 8.4.1.3, RFC 1952): one gzip
//! member per call, by `zlib-rs` (zlib's DEFLATE and gzip wrapper, its
//! CRC-32 and length trailer).
//!
//! The compressor's state is sized to the input, as nginx sizes zlib's
//! for a response of known length: the window (and with it the hash
//! table) halves while the input fits in half of it less zlib's lookahead
//! of 262 bytes, down to a 512-byte window for inputs under about 250
//! bytes. A 612-byte page gets a 1 KiB window and about 8 KiB of state in
//! all, made and dropped per call; a 32 KiB window with its hash chains
//! and buffers (about 256 KiB at the defaults) would be allocated and
//! cleared for each response otherwise, most of the cost of compressing
//! a small page (measured under TCG with a fixed-size compressor: 3.0 k
//! coded responses/s on one vCPU).
//!
//! Which responses get the coding is [`crate::http`]'s to say
//! ([`Response::coding_for`](crate::http::Response::coding_for)); this
//! module only encodes (and, for the tests and the in-VM self-test,
//! decodes).

use alloc::vec;
use alloc::vec::Vec;

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy};

/// zlib's largest window, 32 KiB, and its default memory level.
const MAX_WINDOW_BITS: i32 = 15;
const DEFAULT_MEM_LEVEL: i32 = 8;
/// The smallest window zlib's deflate takes with a gzip wrapper.
const MIN_WINDOW_BITS: i32 = 9;
/// zlib's lookahead: the window must hold the input plus this to find
/// every match (`MIN_LOOKAHEAD`, nginx's rule uses the same 262).
const LOOKAHEAD: usize = 262;
/// zlib's window bits plus this ask for the gzip wrapper.
const GZIP_WRAPPER: i32 = 16;

/// The window and memory level for an input of `len` bytes (nginx's rule,
/// `ngx_http_gzip_filter_module.c`).
fn state_size(len: usize) -> (i32, i32) {
    let (mut window_bits, mut mem_level) = (MAX_WINDOW_BITS, DEFAULT_MEM_LEVEL);
    while window_bits > MIN_WINDOW_BITS && len < (1usize << (window_bits - 1)).saturating_sub(LOOKAHEAD) {
        window_bits -= 1;
        mem_level -= 1;
    }
    (window_bits, mem_level.max(1))
}

/// Appends `input` as one gzip member compressed at `level` (1 fastest to
/// 9 smallest; 0 stores; above 9 is 9) to `out`; false (and `out` as it
/// was) if zlib did not finish, which its contract rules out.
pub fn compress(input: &[u8], level: u8, out: &mut Vec<u8>) -> bool {
    let (window_bits, mem_level) = state_size(input.len());
    let config = DeflateConfig {
        level: i32::from(level.min(9)),
        method: Method::Deflated,
        window_bits: GZIP_WRAPPER + window_bits,
        mem_level,
        strategy: Strategy::Default,
    };
    let mut deflate = Deflate::new_with_config(config);
    let start = out.len();
    // zlib's bound for the data plus the gzip wrapper (18 bytes, where the
    // bound counts zlib's 6): one call always finishes.
    out.resize(start + zlib_rs::compress_bound(input.len()) + 12, 0);
    let status = deflate.compress(input, &mut out[start..], DeflateFlush::Finish);
    // With the whole input and room for the bound, zlib ends the stream in
    // one call (its documented contract for `Z_FINISH`); the tests hold it
    // to that.
    let done = status == Ok(Status::StreamEnd);
    out.truncate(if done { start + deflate.total_out() as usize } else { start });
    done
}

/// Why a gzip member could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a gzip member: bad header, damaged data, bad CRC-32 or length.
    Invalid,
    /// It decodes to more than the limit, or it does not end.
    TooLong,
    /// Bytes after the member's end.
    Trailing,
}

/// Decodes one gzip member (checking its CRC-32 and length) to at most
/// `limit` bytes.
pub fn decompress(member: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut inflate = Inflate::new(true, (GZIP_WRAPPER + MAX_WINDOW_BITS) as u8);
    let mut out = vec![0; limit];
    match inflate.decompress(member, &mut out, InflateFlush::Finish) {
        Ok(Status::StreamEnd) => {}
        Ok(_) if inflate.total_out() as usize == limit => return Err(DecodeError::TooLong),
        Ok(_) => return Err(DecodeError::Invalid),
        Err(_) => return Err(DecodeError::Invalid),
    }
    if inflate.total_in() as usize != member.len() {
        return Err(DecodeError::Trailing);
    }
    out.truncate(inflate.total_out() as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: &[u8] = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>\
        <h1>Welcome</h1><p>If you see this page, the web server works. If you see this page, \
        the web server works.</p></body></html>";

    #[test]
    fn a_page_compresses_and_round_trips() {
        let mut out = Vec::new();
        assert!(compress(PAGE, 1, &mut out));
        // Magic, deflate.
        assert_eq!(&out[..3], &[0x1f, 0x8b, 8]);
        assert!(out.len() < PAGE.len(), "{} >= {}", out.len(), PAGE.len());
        assert_eq!(decompress(&out, 1 << 20).unwrap(), PAGE);
    }

    #[test]
    fn the_state_follows_the_input_as_nginx_sizes_it() {
        assert_eq!(state_size(612), (10, 3));
        assert_eq!(state_size(0), (9, 2));
        assert_eq!(state_size(16 * 1024), (15, 8));
        assert_eq!(state_size(8 * 1024), (14, 7));
        assert_eq!(state_size(1 << 30), (15, 8));
    }

    #[test]
    fn inputs_of_every_window_size_round_trip() {
        // Around each window's edge, compressible and not.
        for len in [0, 1, 249, 250, 251, 761, 763, 1785, 1787, 16_122, 16_123, 70_000, 1 << 20] {
            let text: Vec<u8> = PAGE.iter().copied().cycle().take(len).collect();
            let noise: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            for input in [text, noise] {
                for level in [0, 1, 6, 9] {
                    let mut out = vec![0xaa];
                    assert!(compress(&input, level, &mut out));
                    assert_eq!(out[0], 0xaa, "appends");
                    assert_eq!(decompress(&out[1..], 2 << 20).unwrap(), input, "{len} bytes, level {level}");
                }
            }
        }
    }

    #[test]
    fn the_host_gzip_tool_reads_the_output() {
        use std::io::Write as _;
        let mut out = Vec::new();
        assert!(compress(PAGE, 1, &mut out));
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            // gzip is Essential in Debian; a host without it skips this one.
            eprintln!("no gzip on this host");
            return;
        };
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let result = child.wait_with_output().unwrap();
        assert!(result.status.success());
        assert_eq!(result.stdout, PAGE);
    }

    #[test]
    fn damaged_members_are_refused() {
        let mut out = Vec::new();
        assert!(compress(PAGE, 1, &mut out));
        assert_eq!(decompress(&out[..5], 1 << 20), Err(DecodeError::Invalid));
        let mut bad_crc = out.clone();
        let at = bad_crc.len() - 6;
        bad_crc[at] ^= 1;
        assert_eq!(decompress(&bad_crc, 1 << 20), Err(DecodeError::Invalid));
        assert_eq!(decompress(&out, 10), Err(DecodeError::TooLong));
        let mut trailing = out.clone();
        trailing.push(0);
        assert_eq!(decompress(&trailing, 1 << 20), Err(DecodeError::Trailing));
    }

    proptest! {
        #[test]
        fn any_input_round_trips(input in proptest::collection::vec(any::<u8>(), 0..5000), level in 0u8..=10) {
            let mut out = Vec::new();
            prop_assert!(compress(&input, level, &mut out));
            prop_assert_eq!(decompress(&out, 1 << 20).unwrap(), input);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            member.extend_from_slice(&bytes);
            let _ = decompress(&member, 1 << 16);
            let _ = decompress(&bytes, 1 << 16);
        }
    }
}
