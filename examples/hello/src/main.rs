//! Hello from Toro: prints a greeting, the CPU count, the memory size, the
//! command line and the boot time, then exits 0.

#![no_std]
#![no_main]

use toro::alloc::string::String;
use toro::{println, system};

#[toro::main]
fn main() {
    let greeting = String::from("Hello from Toro!");
    println!("{greeting}");
    println!("cpus: {}", system::cpu_count());
    println!("memory: {} MiB", system::memory_size() >> 20);
    println!("command line: {:?}", system::command_line());
    match system::boot_duration() {
        Some(duration) => println!("boot: {} us from PVH entry to main", duration.as_micros()),
        None => println!("boot: {} TSC ticks from PVH entry to main", system::boot_ticks()),
    }
}
