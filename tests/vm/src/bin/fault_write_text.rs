//! Writes into kernel text: must be reported as a page fault on a read-only page.

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    let target = core::hint::black_box(main as *const () as *mut u8);
    // SAFETY: not sound on purpose: the test checks that text is read-only.
    unsafe { core::ptr::write_volatile(target, 0xcc) };
    toro::println!("wrote to kernel text: text is writable!");
    0
}
