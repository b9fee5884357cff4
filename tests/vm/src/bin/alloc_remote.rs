//! A producer CPU allocates a million blocks and hands them to a consumer
//! CPU, which checks and frees them: every free is a remote free back to
//! the producer. Afterwards the producer's bytes in use are back at their
//! baseline.

#![no_std]
#![no_main]

use toro::alloc::boxed::Box;
use toro::spsc::Ring;
use toro::{cpu, memory, println};

const BLOCKS: usize = 1_000_000;

fn producer_in_use() -> u64 {
    toro::thread::spawn_on(1, || memory::usage_here().in_use).join()
}

#[toro::main]
fn main() -> i32 {
    if cpu::count() < 2 {
        println!("needs 2 CPUs");
        return 2;
    }
    let ring: &'static mut Ring<Box<[u8]>, 1024> = Box::leak(Box::new(Ring::new()));
    let (mut producer, mut consumer) = ring.split();
    let baseline = producer_in_use();
    let start = toro::time::Instant::now();
    let sending = toro::thread::spawn_on(1, move || {
        for index in 0..BLOCKS {
            let size = 16 + (index * 7919) % 241;
            let mut block = toro::alloc::vec![(index % 251) as u8; size].into_boxed_slice();
            while let Err(back) = producer.push(block) {
                block = back;
                core::hint::spin_loop();
            }
        }
    });
    let mut received = 0;
    let mut corrupted = 0;
    while received < BLOCKS {
        match consumer.pop() {
            Some(block) => {
                let expected = (received % 251) as u8;
                if block.len() != 16 + (received * 7919) % 241 || block.iter().any(|&byte| byte != expected) {
                    corrupted += 1;
                }
                received += 1;
            }
            None => core::hint::spin_loop(),
        }
    }
    sending.join();
    let elapsed = start.elapsed();
    // Hand the last batches back and let the producer take them in.
    let mut after = 0;
    for _ in 0..100 {
        let here = memory::usage_here();
        after = producer_in_use();
        if after == baseline && here.remote_pending == 0 {
            break;
        }
    }
    let here = memory::usage_here();
    let rate = BLOCKS as u128 * 1_000_000_000 / elapsed.as_nanos().max(1);
    println!("{BLOCKS} blocks allocated on cpu 1, freed on cpu 0 in {} ms ({rate} per second)", elapsed.as_millis());
    println!("cpu 0 sent {} bytes back, {} pending", here.remote_sent, here.remote_pending);
    println!("cpu 1 in use: {baseline} bytes before, {after} after");
    if corrupted == 0 && after == baseline {
        println!("no corruption, no leak");
        0
    } else {
        println!("{corrupted} corrupted blocks");
        1
    }
}
