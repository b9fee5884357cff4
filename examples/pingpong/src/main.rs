//! Pingpong: one thread per CPU, linked in a ring by channels. A token goes
//! around the ring `rounds` times (command line `rounds=N`, default 10000);
//! then every thread streams a burst to its neighbour at once. Prints the
//! time per hop and the message rates.

#![no_std]
#![no_main]

use toro::alloc::vec::Vec;
use toro::sync::{channel, Receiver, Sender};
use toro::thread;
use toro::time::Instant;
use toro::{cpu, println, system};

const BURST: u64 = 100_000;

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let rounds: u64 = system::argument("rounds").and_then(|value| value.parse().ok()).unwrap_or(10_000);
    // Channel i goes from the thread on CPU i to the thread on CPU i + 1.
    let mut senders: Vec<Option<Sender<u64>>> = Vec::new();
    let mut receivers: Vec<Option<Receiver<u64>>> = Vec::new();
    for _ in 0..cpus {
        let (sender, receiver) = channel::<u64>();
        senders.push(Some(sender));
        receivers.push(Some(receiver));
    }
    let start = Instant::now();
    let mut threads = Vec::new();
    for index in 0..cpus {
        let to_next = senders[index].take().expect("one sender each");
        let from_previous = receivers[(index + cpus - 1) % cpus].take().expect("one receiver each");
        threads.push(thread::spawn_on(index, move || {
            // The token carries its round; thread 0 starts each round.
            if index == 0 {
                to_next.send(0).expect("ring intact");
                loop {
                    let round = from_previous.recv().expect("ring intact");
                    if round + 1 == rounds {
                        break;
                    }
                    to_next.send(round + 1).expect("ring intact");
                }
            } else {
                loop {
                    let round = from_previous.recv().expect("ring intact");
                    to_next.send(round).expect("ring intact");
                    if round + 1 == rounds {
                        break;
                    }
                }
            }
            // Burst: every thread streams to its neighbour while draining
            // what its other neighbour streams to it.
            let burst_start = Instant::now();
            let mut received = 0;
            for value in 0..BURST {
                to_next.send(value).expect("ring intact");
                while from_previous.try_recv().is_ok() {
                    received += 1;
                }
            }
            while received < BURST {
                from_previous.recv().expect("ring intact");
                received += 1;
            }
            burst_start.elapsed()
        }));
    }
    let burst_times: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let elapsed = start.elapsed();
    let hops = rounds * cpus as u64;
    println!("pingpong: {cpus} threads, one per CPU, {rounds} rounds of the ring ({hops} hops)");
    println!(
        "  {} ns per hop (send + wake + receive across CPUs), whole run {} ms",
        elapsed.as_nanos() as u64 / hops.max(1),
        elapsed.as_millis()
    );
    for (index, time) in burst_times.iter().enumerate() {
        let rate = BURST as u128 * 1_000_000_000 / time.as_nanos().max(1);
        println!("  cpu {index}: sent {BURST} messages to cpu {} at {rate} per second", (index + 1) % cpus);
    }
    0
}
