//! Panics: the report must carry the message and this file's location.

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    let items: [u32; 0] = [];
    if core::hint::black_box(items.is_empty()) {
        panic!("deliberate panic for the test suite");
    }
    0
}
