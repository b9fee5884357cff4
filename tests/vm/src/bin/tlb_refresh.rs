//! TLB refreshes: every CPU that keeps reaching scheduling points reloads
//! its page-table root every 20 ms (so that QEMU's TCG can size its
//! software TLB, docs/memory.md), and no more often: a thread that yields
//! for 200 ms on each CPU must see between 5 and 13 refreshes there
//! (10 nominal; each end allows for a slow host and for the first one
//! being due at once).

#![no_std]
#![no_main]

use core::time::Duration;

use toro::alloc::vec::Vec;
use toro::time::Instant;
use toro::{println, thread};

const SPELL: Duration = Duration::from_millis(200);

#[toro::main]
fn main() -> i32 {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let handles: Vec<_> = (0..cpus)
        .map(|cpu| {
            thread::spawn_on(cpu, move || {
                let before = thread::tlb_refreshes(cpu).expect("a running CPU counts its refreshes");
                let start = Instant::now();
                while start.elapsed() < SPELL {
                    thread::yield_now();
                }
                thread::tlb_refreshes(cpu).expect("still running") - before
            })
        })
        .collect();
    let mut failed = false;
    for (cpu, handle) in handles.into_iter().enumerate() {
        let refreshes = handle.join();
        let ok = (5..=13).contains(&refreshes);
        println!(
            "cpu {cpu}: {refreshes} TLB refreshes in {} ms of yielding{}",
            SPELL.as_millis(),
            if ok { "" } else { " (FAILED: want 5-13)" }
        );
        failed |= !ok;
    }
    if failed {
        1
    } else {
        println!("tlb_refresh: every CPU refreshed its TLB at the set rate");
        0
    }
}
