//! Fills this CPU's share through the fallible path (which must fail
//! cleanly), then makes an infallible allocation fail: the panic report must
//! say which CPU, which size, and every CPU's usage.

#![no_std]
#![no_main]

use toro::alloc::vec::Vec;
use toro::println;

const CHUNK: usize = 1 << 20;

#[toro::main]
fn main() -> i32 {
    let mut hoard: Vec<Vec<u8>> = Vec::with_capacity(4096);
    loop {
        let mut chunk: Vec<u8> = Vec::new();
        if chunk.try_reserve_exact(CHUNK).is_err() {
            break;
        }
        hoard.push(chunk);
    }
    println!("fallible allocation failed cleanly after {} MiB on cpu {}", hoard.len(), toro::cpu::current());
    // black_box: an allocation nobody uses may be optimised away.
    let more: Vec<u8> = core::hint::black_box(Vec::with_capacity(CHUNK));
    println!("allocated {} more bytes: the share was not full", more.capacity());
    0
}
