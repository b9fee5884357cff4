//! `Builder::stack_size`: a thread with a 1 MiB stack fills a 900 KiB local
//! array; the default stack holds 48 KiB of locals (more than the old
//! 28 KiB slots); small and large stacks are recycled; a stack larger than
//! the zone is refused with an error; then a thread with a 256 KiB stack
//! recurses past 200 KiB (beyond any default stack) and on into its guard
//! page, which must be reported with the thread's name and CPU.

#![no_std]
#![no_main]

use toro::thread::{Builder, SpawnError};
use toro::{cpu, println};

/// Fills and sums an array of `N` bytes on the stack.
#[inline(never)]
fn use_stack<const N: usize>(seed: u8) -> u64 {
    let mut array = [0u8; N];
    for (index, byte) in array.iter_mut().enumerate() {
        *byte = seed.wrapping_add(index as u8);
    }
    core::hint::black_box(&mut array);
    array.iter().map(|&byte| byte as u64).sum()
}

fn expected_sum(n: usize, seed: u8) -> u64 {
    (0..n).map(|index| seed.wrapping_add(index as u8) as u64).sum()
}

/// Recurses with 1 KiB frames; says when it is 200 KiB deep; never ends.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[0] = depth as u8;
    core::hint::black_box(&mut frame);
    if depth == 200 {
        println!("thread_stack_size: 200 KiB deep on a 256 KiB stack");
    }
    recurse(depth + 1) + frame[0] as u64
}

#[toro::main]
fn main() -> i32 {
    let cpu = cpu::count() - 1;
    let mut failures = 0;

    let big = Builder::new().name("big").stack_size(1 << 20).spawn_on(cpu, || use_stack::<{ 900 << 10 }>(7));
    let sum = big.expect("spawn a thread with a 1 MiB stack").join();
    if sum == expected_sum(900 << 10, 7) {
        println!("thread_stack_size: 900 KiB of locals on a 1 MiB stack");
    } else {
        println!("FAILED: wrong sum {sum} from the big stack");
        failures += 1;
    }

    let default = Builder::new().name("default").spawn_on(cpu, || use_stack::<{ 48 << 10 }>(3));
    if default.expect("spawn").join() != expected_sum(48 << 10, 3) {
        println!("FAILED: the default stack");
        failures += 1;
    }

    // Recycling: many rounds of small and large stacks, alternating.
    for round in 0..20u8 {
        let small = Builder::new().stack_size(8 << 10).spawn_on(cpu, move || use_stack::<{ 16 << 10 }>(round));
        let large = Builder::new().stack_size(300 << 10).spawn_on(cpu, move || use_stack::<{ 280 << 10 }>(round));
        let (small, large) = (small.expect("small").join(), large.expect("large").join());
        if small != expected_sum(16 << 10, round) || large != expected_sum(280 << 10, round) {
            println!("FAILED: recycled stacks, round {round}");
            failures += 1;
        }
    }
    println!("thread_stack_size: small and large stacks recycled");

    match Builder::new().stack_size(usize::MAX / 2).spawn_on(cpu, || 0) {
        Err(error @ SpawnError::StackTooLarge { .. }) => println!("thread_stack_size: refused: {error}"),
        Err(error) => {
            println!("FAILED: a huge stack gave {error}");
            failures += 1;
        }
        Ok(_) => {
            println!("FAILED: a huge stack was given");
            failures += 1;
        }
    }
    if failures != 0 {
        return 1;
    }

    let deep = Builder::new().name("deep-custom").stack_size(256 << 10).spawn_on(cpu, || recurse(0));
    println!("FAILED: recursed {} deep without overflowing", deep.expect("spawn").join());
    1
}
