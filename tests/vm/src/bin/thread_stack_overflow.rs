//! A thread named "deep" recurses until its stack runs into the guard page:
//! the report must name the thread and its CPU.

#![no_std]
#![no_main]

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[0] = depth as u8;
    core::hint::black_box(&mut frame);
    recurse(depth + 1) + frame[0] as u64
}

#[toro::main]
fn main() -> i32 {
    let cpu = toro::cpu::count() - 1;
    let handle = toro::thread::Builder::new().name("deep").spawn_on(cpu, || recurse(0)).expect("spawn");
    toro::println!("recursed {} deep without overflowing", handle.join());
    0
}
