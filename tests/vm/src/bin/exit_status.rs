//! Returns 42 from main: the VM's exit status must be 42.

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    toro::println!("returning 42");
    42
}
