//! Spurious out-of-memory: CPU 0 fills its share, hands the blocks to a
//! thread on CPU 1 that frees them (they wait in CPU 1's remote-free
//! outbox, a batch not yet full) and then keeps yielding (so CPU 1 never
//! idles and never allocates). CPU 0's next allocation must get back what
//! CPU 1 owes it instead of failing.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use toro::alloc::vec::Vec;
use toro::{println, thread};

/// Few, large blocks: fewer than one remote-free batch, so none of them
/// moves back on its own.
const CHUNK: usize = 4 << 20;

static FREED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

fn try_chunk() -> Option<Vec<u8>> {
    let mut chunk: Vec<u8> = Vec::new();
    chunk.try_reserve_exact(CHUNK).ok()?;
    Some(chunk)
}

#[toro::main]
fn main() -> i32 {
    let mut hoard: Vec<Vec<u8>> = Vec::with_capacity(64);
    while let Some(chunk) = try_chunk() {
        hoard.push(chunk);
    }
    let held = hoard.len();
    println!("cpu 0 holds {held} chunks of {} MiB; its share is full", CHUNK >> 20);
    let freer = thread::spawn_on(1, move || {
        drop(hoard);
        FREED.store(true, Ordering::Release);
        // Busy, but reaching scheduling points: no idle, no allocation.
        while !STOP.load(Ordering::Acquire) {
            thread::yield_now();
        }
    });
    while !FREED.load(Ordering::Acquire) {
        thread::yield_now();
    }
    let mut again = Vec::new();
    while let Some(chunk) = try_chunk() {
        again.push(chunk);
    }
    STOP.store(true, Ordering::Release);
    println!("cpu 1: {:?} {:?}", toro::memory::usage(1), toro::cpu::stats(1));
    println!("cpu 0: {:?} {:?}", toro::memory::usage(0), toro::cpu::stats(0));
    freer.join();
    println!("after cpu 1 freed them, cpu 0 got {} chunks back", again.len());
    if again.len() + 1 >= held && held > 0 {
        println!("alloc_owed: memory owed by other CPUs came back");
        0
    } else {
        println!("FAILED: spurious out-of-memory with {} chunks owed by cpu 1", held);
        1
    }
}
