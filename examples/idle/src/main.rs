//! Prints one line, then leaves every CPU halted: what an idle Toro VM
//! costs the host is measured with this (`cargo xtask bench`).

#![no_std]
#![no_main]

#[toro::main]
fn main() -> i32 {
    toro::println!("idle: parking the boot CPU");
    toro::park()
}
