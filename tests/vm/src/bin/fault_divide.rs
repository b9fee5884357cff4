//! Divides by zero with a hardware `div`: must be reported as a divide error.

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    let divisor: u64 = core::hint::black_box(0);
    let quotient: u64;
    // Rust's `/` checks for zero and panics; the test needs the CPU's #DE.
    // SAFETY: `div` only touches the named registers; the fault is the point.
    unsafe {
        core::arch::asm!("div {divisor}", divisor = in(reg) divisor, inout("rax") 1u64 => quotient, inout("rdx") 0u64 => _)
    };
    toro::println!("1 / 0 = {quotient}: no divide error!");
    0
}
