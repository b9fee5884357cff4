//! Entropy from the CPU (RDSEED, RDRAND), and `RandomState`, a
//! `BuildHasher` with random keys so hash maps are not predictable across
//! boots (HashDoS).
//!
//! Retries follow Intel's "Digital Random Number Generator (DRNG) Software
//! Implementation Guide": RDRAND runs out only when many threads drain it
//! at once, and the guide's answer is to retry up to 10 times and then
//! report a failure (section 5.2.1); RDSEED fails more often by design (it
//! waits for fresh entropy) and is retried with a PAUSE in between, here up
//! to `RDSEED_RETRIES` times, before it falls back to RDRAND.
//!
//! Another source (a virtio-rng device, for instance) can be installed with
//! `set_fallback`; it is used where the CPU has neither instruction.

use core::hash::BuildHasher;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::arch::rng;

/// RDRAND attempts per value (Intel DRNG guide, 5.2.1).
const RDRAND_RETRIES: u32 = 10;
/// RDSEED attempts per value, with a PAUSE between them.
const RDSEED_RETRIES: u32 = 1024;

/// Why no random bytes came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomError {
    /// The CPU has neither RDRAND nor RDSEED (CPUID), and no fallback
    /// source was installed.
    Unsupported,
    /// The instruction kept saying it had no value ready (after the
    /// retries); the hardware or its emulation is failing.
    Exhausted,
}

impl core::fmt::Display for RandomError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported => f.write_str("no entropy source: the CPU has neither RDRAND nor RDSEED"),
            Self::Exhausted => f.write_str("the CPU's random number generator returned no value after retries"),
        }
    }
}

impl core::error::Error for RandomError {}

/// A source of random bytes for CPUs without RDRAND/RDSEED: fills the
/// buffer or fails.
pub type Fallback = fn(&mut [u8]) -> Result<(), RandomError>;

/// The installed fallback (a `Fallback` as a pointer; null: none).
static FALLBACK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs `source` for CPUs without RDRAND/RDSEED (e.g. a virtio-rng
/// device service).
pub fn set_fallback(source: Fallback) {
    FALLBACK.store(source as *mut (), Ordering::Release);
}

fn fallback() -> Option<Fallback> {
    let source = FALLBACK.load(Ordering::Acquire);
    // SAFETY: only `set_fallback` stores here, always a `Fallback`.
    (!source.is_null()).then(|| unsafe { core::mem::transmute::<*mut (), Fallback>(source) })
}

fn rdrand_u64() -> Result<u64, RandomError> {
    for _ in 0..RDRAND_RETRIES {
        // SAFETY: the caller checked `has_rdrand`.
        if let Some(value) = unsafe { rng::rdrand() } {
            return Ok(value);
        }
    }
    Err(RandomError::Exhausted)
}

fn rdseed_u64() -> Option<u64> {
    for _ in 0..RDSEED_RETRIES {
        // SAFETY: the caller checked `has_rdseed`.
        if let Some(value) = unsafe { rng::rdseed() } {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

/// Fills `buffer` with random bytes from RDRAND (a DRBG reseeded by the
/// CPU's entropy source: fast, for keys, nonces, hash seeds).
pub fn fill_bytes(buffer: &mut [u8]) -> Result<(), RandomError> {
    fill_with(buffer, false)
}

/// Fills `buffer` with bytes from RDSEED (full entropy, slower; for
/// seeding other generators), falling back to RDRAND where RDSEED is
/// missing or keeps failing.
pub fn seed_bytes(buffer: &mut [u8]) -> Result<(), RandomError> {
    fill_with(buffer, true)
}

fn fill_with(buffer: &mut [u8], seed: bool) -> Result<(), RandomError> {
    let (rdrand, rdseed) = (rng::has_rdrand(), seed && rng::has_rdseed());
    if !rdrand && !rdseed {
        return match fallback() {
            Some(source) => source(buffer),
            None => Err(RandomError::Unsupported),
        };
    }
    for chunk in buffer.chunks_mut(8) {
        let value = match rdseed.then(rdseed_u64).flatten() {
            Some(value) => value,
            None if rdrand => rdrand_u64()?,
            None => return Err(RandomError::Exhausted),
        };
        chunk.copy_from_slice(&value.to_ne_bytes()[..chunk.len()]);
    }
    Ok(())
}

/// A random `u64` (RDRAND).
pub fn u64() -> Result<u64, RandomError> {
    let mut bytes = [0; 8];
    fill_bytes(&mut bytes)?;
    Ok(u64::from_ne_bytes(bytes))
}

/// Builds `DefaultHasher`s keyed with random keys, like
/// `std::collections::hash_map::RandomState`: give it to
/// `hashbrown::HashMap::with_hasher` so an attacker cannot predict which
/// keys collide. Each `new` draws fresh keys.
#[derive(Clone, Debug)]
pub struct RandomState {
    keys: (u64, u64),
}

impl RandomState {
    /// Fresh random keys (RDSEED, else RDRAND, else the fallback).
    /// Panics if there is no entropy source at all: a predictable hasher
    /// must not be handed out silently (`try_new` returns the error).
    pub fn new() -> Self {
        match Self::try_new() {
            Ok(state) => state,
            Err(error) => panic!("RandomState: {error}"),
        }
    }

    /// Fresh random keys, or why there are none.
    pub fn try_new() -> Result<Self, RandomError> {
        let mut bytes = [0; 16];
        seed_bytes(&mut bytes)?;
        let (first, second) = bytes.split_at(8);
        let key = |half: &[u8]| u64::from_ne_bytes(half.try_into().expect("8 bytes"));
        Ok(Self { keys: (key(first), key(second)) })
    }

    /// The keys (for tests that compare boots).
    pub fn keys(&self) -> (u64, u64) {
        self.keys
    }
}

impl Default for RandomState {
    fn default() -> Self {
        Self::new()
    }
}

/// SipHash keyed by a `RandomState` (core's SipHash-2-4; std's default is
/// SipHash-1-3, which core does not export).
#[derive(Clone, Debug)]
#[allow(deprecated)] // core::hash::SipHasher: deprecated for std users in favour of DefaultHasher, which core lacks.
pub struct DefaultHasher(core::hash::SipHasher);

impl core::hash::Hasher for DefaultHasher {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

impl BuildHasher for RandomState {
    type Hasher = DefaultHasher;

    #[allow(deprecated)] // see `DefaultHasher`
    fn build_hasher(&self) -> DefaultHasher {
        DefaultHasher(core::hash::SipHasher::new_with_keys(self.keys.0, self.keys.1))
    }
}
