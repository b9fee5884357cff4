//! The watchdog: a thread named "spinner" spins 3 s on CPU 1 without
//! reaching a scheduling point. With the default watchdog (2 s) CPU 0
//! notices and the report (name, CPU, backtrace) appears on the console
//! while the system keeps going: `main` joins the spinner and checks that
//! exactly one report was made. With `toro.watchdog=off`, none may be.
//! With `toro.watchdog_action=stop` the VM ends with the watchdog's status.

#![no_std]
#![no_main]

use core::time::Duration;

use toro::thread::{self, Builder};
use toro::time::Instant;
use toro::{cpu, println, system};

/// Spins for `duration` without yielding.
#[inline(never)]
fn spin_for(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut turns = 0u64;
    while start.elapsed() < duration {
        turns = core::hint::black_box(turns + 1);
        core::hint::spin_loop();
    }
    turns
}

#[toro::main]
fn main() -> i32 {
    if cpu::count() < 2 {
        println!("FAILED: the watchdog test needs 2 CPUs");
        return 1;
    }
    let expected = if system::argument("toro.watchdog") == Some("off") { 0 } else { 1 };
    let spinner = Builder::new().name("spinner").spawn_on(1, || spin_for(Duration::from_secs(3)));
    let turns = spinner.expect("spawn").join();
    // The report is written by the stuck CPU itself; give a late one time.
    thread::sleep(Duration::from_millis(100));
    let reports = thread::watchdog_reports();
    println!("watchdog_spin: {reports} report(s) after {turns} turns; the system kept going");
    if reports != expected {
        println!("FAILED: expected {expected} watchdog report(s)");
        return 1;
    }
    println!("watchdog_spin: all checks passed");
    0
}
