//! The gzip content coding (RFC 9110 section 8.4.1.3, RFC 1952): a
//! [`Gzip`] encoder writes one gzip member (header, DEFLATE stream from
//! `miniz_oxide`, CRC-32 and length trailer) per call, and keeps its
//! compressor between calls: a fresh `miniz_oxide` compressor allocates
//! about 230 KiB (its dictionary, hash chains and code buffer), so the web
//! server keeps one per CPU and resets it for each response instead.
//!
//! Which responses get the coding is [`crate::http`]'s to say
//! ([`Response::coding_for`](crate::http::Response::coding_for)); this
//! module only encodes (and, for the tests and the in-VM self-test,
//! decodes).

use alloc::boxed::Box;
use alloc::vec::Vec;

use miniz_oxide::deflate::core::{compress, CompressorOxide, TDEFLFlush, TDEFLStatus};
use miniz_oxide::DataFormat;

/// The gzip header this encoder writes: magic, CM = 8 (deflate), no flags,
/// no modification time, XFL 0, OS 255 ("unknown", RFC 1952 section 2.3.1).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A reusable gzip encoder at one compression level.
pub struct Gzip {
    compressor: Box<CompressorOxide>,
    level: u8,
}

impl core::fmt::Debug for Gzip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gzip").field("level", &self.level).finish_non_exhaustive()
    }
}

impl Gzip {
    /// An encoder at `level` (1 fastest to 9 smallest; 0 stores without
    /// compressing; above 9 is 9).
    pub fn new(level: u8) -> Self {
        let level = level.min(9);
        let mut compressor = Box::<CompressorOxide>::default();
        compressor.set_format_and_level(DataFormat::Raw, level);
        Self { compressor, level }
    }

    /// The level it compresses at.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Appends `input` as one gzip member to `out`.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.compressor.reset();
        self.compressor.set_format_and_level(DataFormat::Raw, self.level);
        out.extend_from_slice(&HEADER);
        let mut consumed = 0;
        loop {
            let start = out.len();
            // Room for what is left: incompressible input grows by about 5
            // bytes per stored block of 16 KiB; a shortfall only means
            // another round (status Okay).
            let left = input.len() - consumed;
            out.resize(start + left + left / 16 + 64, 0);
            let (status, read, written) =
                compress(&mut self.compressor, &input[consumed..], &mut out[start..], TDEFLFlush::Finish);
            consumed += read;
            out.truncate(start + written);
            match status {
                TDEFLStatus::Done => break,
                TDEFLStatus::Okay => continue,
                // Only reachable through misuse of the compressor's API
                // (a callback that fails, or a call after Done); `reset`
                // above rules both out.
                TDEFLStatus::BadParam | TDEFLStatus::PutBufFailed => unreachable!("compressor misused: {status:?}"),
            }
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(input);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE: the input's length modulo 2^32 (RFC 1952 section 2.3.1).
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    }
}

/// Why a gzip member could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a gzip header this decoder knows (magic, method 8, no flags).
    Header,
    /// The DEFLATE stream is damaged or the output limit was reached.
    Deflate,
    /// The trailer is missing or its CRC-32 or length disagrees.
    Trailer,
}

/// Decodes one gzip member as [`Gzip::compress`] writes it (no optional
/// header fields), to at most `limit` bytes.
pub fn decompress(member: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    if member.len() < HEADER.len() + 8 || member[..4] != HEADER[..4] {
        return Err(DecodeError::Header);
    }
    let (deflate, trailer) = member[HEADER.len()..].split_at(member.len() - HEADER.len() - 8);
    let data = miniz_oxide::inflate::decompress_to_vec_with_limit(deflate, limit).map_err(|_| DecodeError::Deflate)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&data);
    let expected = [crc.finalize().to_le_bytes(), (data.len() as u32).to_le_bytes()].concat();
    if trailer != expected.as_slice() {
        return Err(DecodeError::Trailer);
    }
    Ok(data)
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
        let mut gzip = Gzip::new(1);
        let mut out = Vec::new();
        gzip.compress(PAGE, &mut out);
        assert_eq!(&out[..3], &[0x1f, 0x8b, 8]);
        assert!(out.len() < PAGE.len(), "{} >= {}", out.len(), PAGE.len());
        assert_eq!(decompress(&out, 1 << 20).unwrap(), PAGE);
    }

    #[test]
    fn a_reused_encoder_writes_what_a_fresh_one_writes() {
        let mut reused = Gzip::new(6);
        let mut scratch = Vec::new();
        reused.compress(&[7u8; 100_000], &mut scratch);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        reused.compress(PAGE, &mut a);
        Gzip::new(6).compress(PAGE, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn empty_and_incompressible_inputs_round_trip() {
        let mut gzip = Gzip::new(9);
        for input in [Vec::new(), (0..70_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()] {
            let mut out = Vec::new();
            gzip.compress(&input, &mut out);
            assert_eq!(decompress(&out, 1 << 20).unwrap(), input);
        }
    }

    #[test]
    fn the_host_gzip_tool_reads_the_output() {
        use std::io::Write as _;
        let mut out = Vec::new();
        Gzip::new(1).compress(PAGE, &mut out);
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
        Gzip::new(1).compress(PAGE, &mut out);
        assert_eq!(decompress(&out[..5], 1 << 20), Err(DecodeError::Header));
        let mut bad_crc = out.clone();
        let at = bad_crc.len() - 6;
        bad_crc[at] ^= 1;
        assert_eq!(decompress(&bad_crc, 1 << 20), Err(DecodeError::Trailer));
        assert_eq!(decompress(&out, 10), Err(DecodeError::Deflate));
    }

    proptest! {
        #[test]
        fn any_input_round_trips(input in proptest::collection::vec(any::<u8>(), 0..5000), level in 0u8..=10) {
            let mut out = Vec::new();
            Gzip::new(level).compress(&input, &mut out);
            prop_assert_eq!(decompress(&out, 1 << 20).unwrap(), input);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut member = HEADER.to_vec();
            member.extend_from_slice(&bytes);
            let _ = decompress(&member, 1 << 16);
            let _ = decompress(&bytes, 1 << 16);
        }
    }
}
