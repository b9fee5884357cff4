//! Prints one line, then parks its thread: every CPU has nothing to run and
//! halts in its idle loop. What an idle Toro VM
//! costs the host is measured with this (`cargo xtask bench`).

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    toro::println!("idle: parking the main thread");
    toro::park()
}
