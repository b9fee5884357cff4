//! Large allocations across shares: CPU 0 holds most of its share, then
//! asks for more than is left; the block must be borrowed from CPU 1's share
//! (shown in the lent / borrowed figures), be usable, and go back to CPU 1
//! when freed.

#![no_std]
#![no_main]

use core::time::Duration;

use toro::alloc::vec::Vec;
use toro::{memory, println, thread};

const MIB: usize = 1 << 20;

fn fail(what: &str) -> i32 {
    println!("FAILED: {what}");
    1
}

#[toro::main]
fn main() -> i32 {
    let here = memory::usage_here();
    println!("cpu 0: capacity {} MiB, free {} MiB", here.capacity / MIB as u64, here.free / MIB as u64);
    // Hold all but ~8 MiB of CPU 0's share.
    let mut hold: Vec<u8> = Vec::new();
    if hold.try_reserve_exact(here.free as usize - 8 * MIB).is_err() {
        return fail("cpu 0 could not take most of its own share");
    }
    let lender_before = memory::usage(1).expect("cpu 1 runs").in_use;
    // Infallible: more than CPU 0 has left, less than CPU 1's free memory.
    let size = 40 * MIB;
    let mut big: Vec<u8> = Vec::with_capacity(size);
    big.resize(size, 0x5a);
    let address = big.as_ptr() as u64;
    let (zero, one) = (memory::usage_here(), memory::usage(1).expect("cpu 1 runs"));
    println!("40 MiB at {address:#x}: cpu 0 borrowed {} MiB, cpu 1 lent {} MiB", zero.borrowed >> 20, one.lent >> 20);
    if zero.borrowed < size as u64 || one.lent < size as u64 {
        return fail("the block was not borrowed from cpu 1");
    }
    if big.iter().step_by(4096).any(|&byte| byte != 0x5a) {
        return fail("the borrowed block does not hold what was written");
    }
    drop(big);
    drop(hold);
    // The freed block goes back to CPU 1 (remote free), which takes it in
    // when it next allocates or idles; look from there.
    let mut back = false;
    for _ in 0..500 {
        thread::sleep(Duration::from_millis(2));
        let one = thread::spawn_on(1, memory::usage_here).join();
        if one.in_use <= lender_before + MIB as u64 {
            back = true;
            break;
        }
    }
    if !back {
        return fail("the borrowed block did not go back to cpu 1");
    }
    println!("the borrowed block went back to cpu 1");
    // One share is the limit for one block: more than any share's free
    // memory fails cleanly.
    let mut huge: Vec<u8> = Vec::new();
    let too_big = huge.try_reserve_exact(60 * MIB).is_err();
    println!("60 MiB (more than any one share): {}", if too_big { "refused cleanly" } else { "allocated" });
    println!("alloc_borrow: all checks passed");
    0
}
