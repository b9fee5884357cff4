//! Recurses until the boot stack runs into its guard page: must be reported
//! as a double fault caused by a stack overflow.

#![no_std]
#![no_main]

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[0] = depth as u8;
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + frame[0] as u64
}

#[toro::main]
fn main() -> i32 {
    let depth = recurse(0);
    toro::println!("recursed {depth} deep without overflowing");
    0
}
