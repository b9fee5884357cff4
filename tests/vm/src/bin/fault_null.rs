//! Dereferences a null pointer: must be reported as a page fault at 0.

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    let pointer = core::hint::black_box(core::ptr::null::<u64>());
    // SAFETY: not sound on purpose: the test checks that the kernel catches it.
    let value = unsafe { core::ptr::read_volatile(pointer) };
    toro::println!("read {value} from address 0: page 0 is mapped!");
    0
}
