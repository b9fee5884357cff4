//! Two real threads as two CPUs: one allocates a million blocks, the other frees them all remotely.
//!
//! The host version of the in-VM producer/consumer test: CPU 0 allocates
//! blocks of mixed sizes, stamps them, and passes them to CPU 1 over an
//! SPSC ring (the "application" channel); CPU 1 checks each stamp and frees
//! the block, which goes back to CPU 0 through the remote-free ring. At the
//! end CPU 0's heap must be back where it started: nothing in use, one free
//! run. Memory is an array of atomics used only with `Relaxed` loads and
//! stores (plain `mov`s, like the kernel's raw pointers): any ordering the
//! hand-off needs must come from the rings.

#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, Ordering};

use toro_core::allocator::{CpuAllocator, CpuHeap, RemoteRing, WordMemory, DEFAULT_BATCH_BLOCKS};
use toro_core::spsc::Ring;

const BASE: u64 = 0x8000_0000;
const SHARE: u64 = 32 << 20;
const BLOCKS: u64 = 1_000_000;

/// A view of the shared memory from one thread.
#[derive(Clone, Copy)]
struct SharedMemory<'a> {
    words: &'a [AtomicU64],
}

impl SharedMemory<'_> {
    fn word(&self, address: u64) -> &AtomicU64 {
        &self.words[usize::try_from((address - BASE) / 8).unwrap()]
    }
}

impl WordMemory for SharedMemory<'_> {
    fn load(&self, address: u64) -> u64 {
        self.word(address).load(Ordering::Relaxed)
    }

    fn store(&mut self, address: u64, value: u64) {
        self.word(address).store(value, Ordering::Relaxed);
    }
}

/// What the allocating CPU tells the freeing one: a block, its size, and the
/// stamp written in its second word.
#[derive(Clone, Copy)]
struct Message {
    address: u64,
    size: usize,
    stamp: u64,
}

#[test]
fn a_million_remote_frees_all_come_home() {
    let words: Vec<AtomicU64> = (0..2 * SHARE / 8).map(|_| AtomicU64::new(0)).collect();
    let mut memory = SharedMemory { words: &words };
    let mut remote_ring = RemoteRing::new();
    let (remote_producer, remote_consumer) = remote_ring.split();
    let mut channel = Ring::<Message, 1024>::new();
    let (mut sender, mut receiver) = channel.split();

    let mut zero = CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, SHARE).unwrap(), DEFAULT_BATCH_BLOCKS);
    let mut one =
        CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + SHARE, SHARE).unwrap(), DEFAULT_BATCH_BLOCKS);
    zero.connect_inbound(1, remote_consumer).unwrap();
    one.connect_outbound(0, remote_producer).unwrap();
    let initial = zero.heap().usage();

    let mut freeing_memory = memory;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let memory = &mut freeing_memory;
            for expected in 0..BLOCKS {
                let message = loop {
                    match receiver.pop() {
                        Some(message) => break message,
                        None => std::hint::spin_loop(),
                    }
                };
                assert_eq!(memory.load(message.address + 8), message.stamp, "block {expected} changed in flight");
                assert!(!one.owns(message.address));
                one.free_remote(memory, 0, message.address, message.size, 8).unwrap();
            }
            while one.usage().remote_pending.blocks > 0 {
                one.idle(memory);
                std::hint::spin_loop();
            }
            assert_eq!(one.usage().remote_sent.blocks, BLOCKS);
        });

        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for stamp in 0..BLOCKS {
            // xorshift: sizes 16 B to 4 KiB, mostly small.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let size = ((16 + state % 4081) >> (state >> 61)).max(16) as usize;
            let address = loop {
                match zero.allocate(&mut memory, size, 8) {
                    Some(address) => break address,
                    None => {
                        zero.idle(&mut memory);
                    }
                }
            };
            memory.store(address + 8, stamp);
            let mut message = Message { address, size, stamp };
            while let Err(back) = sender.push(message) {
                message = back;
                zero.idle(&mut memory);
            }
        }
        while zero.usage().remote_received.blocks < BLOCKS {
            zero.idle(&mut memory);
        }
    });

    let usage = zero.usage();
    assert_eq!(usage.remote_received.blocks, BLOCKS);
    assert_eq!(usage.remote_refused, 0);
    assert_eq!(usage.heap.bytes_in_use, 0);
    zero.trim(&mut memory);
    assert_eq!(zero.heap().usage(), initial, "every page back in one run");
    println!(
        "{BLOCKS} blocks, {} batches, {} bytes came home",
        usage.remote_received.batches, usage.remote_received.bytes
    );
}
