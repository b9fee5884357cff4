//! Property tests: random allocate/free sequences against a shadow memory that checks every access.

use proptest::prelude::*;

use super::shadow::ShadowMemory;
use super::{CpuHeap, SizeClass, PAGE_SIZE};

const BASE: u64 = 0x7_0000_0000;

#[derive(Debug, Clone)]
enum Step {
    Allocate {
        size: usize,
        align: usize,
    },
    /// Frees the live block at this index (modulo the number live).
    Free {
        pick: usize,
    },
}

/// Sizes from 1 B to 256 KiB, weighted so that every kind of block shows up.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 1_usize..=128,
        4 => 129_usize..=2048,
        2 => 2049_usize..=16 * 1024,
        1 => 16 * 1024 + 1..=256 * 1024_usize,
        1 => prop::sample::select(vec![16, 4096, 16 * 1024, 16 * 1024 + 1, 64 * 1024]),
    ]
}

/// Alignments 1 B to 64 KiB, mostly small.
fn align() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => (0_u32..=4).prop_map(|log2| 1 << log2),
        2 => (5_u32..=12).prop_map(|log2| 1 << log2),
        1 => (13_u32..=16).prop_map(|log2| 1 << log2),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (size(), align()).prop_map(|(size, align)| Step::Allocate { size, align }),
        2 => any::<usize>().prop_map(|pick| Step::Free { pick }),
    ]
}

/// Runs `steps` on a fresh heap of `region_pages` pages, checking each result
/// and every invariant, then frees everything and checks that the heap is as
/// it started.
fn run(region_pages: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let length = region_pages * PAGE_SIZE;
    let mut memory = ShadowMemory::new(BASE, length);
    let mut heap = CpuHeap::new(&mut memory, BASE, length).expect("region");
    let initial = heap.usage();
    let mut live: Vec<(u64, usize)> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        match *step {
            Step::Allocate { size, align } => {
                let before = heap.usage();
                if let Some(address) = heap.allocate(&mut memory, size, align) {
                    prop_assert_eq!(address % align as u64, 0, "alignment");
                    prop_assert!(heap.contains(address));
                    let grown = heap.usage().bytes_in_use - before.bytes_in_use;
                    prop_assert!(grown >= size.max(1) as u64, "block smaller than asked");
                    match SizeClass::of_layout(size, align) {
                        Some(class) => prop_assert_eq!(grown, class.block_size()),
                        None => prop_assert_eq!(grown, (size.max(1) as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE),
                    }
                    // Panics if the block overlaps a live one.
                    memory.mark_live(address, size as u64);
                    live.push((address, size));
                } else {
                    // A refusal means no room: nothing may have changed...
                    let after = heap.usage();
                    prop_assert_eq!(after.bytes_in_use, before.bytes_in_use);
                    // ...and a small request fails only if no page run is
                    // long enough for a span (after trimming).
                    if let Some(class) = SizeClass::of_layout(size, align) {
                        let span_bytes = u64::from(class.span_pages()) * PAGE_SIZE;
                        prop_assert!(heap.longest_free_run(&memory) < span_bytes);
                    }
                }
            }
            Step::Free { pick } => {
                if live.is_empty() {
                    continue;
                }
                let (address, size) = live.swap_remove(pick % live.len());
                // Panics if the block's contents changed while it was live.
                memory.mark_free(address);
                let freed = heap.free(&mut memory, address);
                prop_assert!(freed.is_ok(), "step {}: free of {:#x} ({} B): {:?}", index, address, size, freed);
            }
        }
        if index % 8 == 0 {
            heap.check(&memory);
        }
    }
    heap.check(&memory);
    for (address, _) in live.drain(..) {
        memory.mark_free(address);
        prop_assert!(heap.free(&mut memory, address).is_ok());
    }
    prop_assert_eq!(memory.live_count(), 0);
    let usage = heap.usage();
    prop_assert_eq!(usage.bytes_in_use, 0);
    prop_assert_eq!(usage.bytes_free, initial.bytes_free, "every byte back");
    heap.trim(&mut memory);
    heap.check(&memory);
    prop_assert_eq!(heap.usage(), initial, "one free run again, as at the start");
    prop_assert_eq!(heap.usage().free_runs, 1);
    prop_assert_eq!(heap.longest_free_run(&memory), initial.capacity_bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// 4 MiB: room for many blocks, some large requests fail.
    #[test]
    fn random_sequences_in_a_roomy_heap(steps in prop::collection::vec(step(), 1..300)) {
        run(1024, &steps)?;
    }

    /// 640 KiB: the heap runs dry often, so the failure and trim paths run.
    #[test]
    fn random_sequences_in_a_cramped_heap(steps in prop::collection::vec(step(), 1..300)) {
        run(160, &steps)?;
    }
}

/// Many small blocks of every class, freed in an interleaved order: spans
/// fill, leave their lists, return, and the heap ends as one run.
#[test]
fn every_class_fills_spans_and_returns_them() {
    let length = 16 << 20;
    let mut memory = ShadowMemory::new(BASE, length);
    let mut heap = CpuHeap::new(&mut memory, BASE, length).unwrap();
    let initial = heap.usage();
    let mut live = Vec::new();
    for class in SizeClass::all() {
        for _ in 0..class.blocks_per_span() + 3 {
            let size = class.block_size() as usize;
            let address = heap.allocate(&mut memory, size, 16).unwrap();
            memory.mark_live(address, size as u64);
            live.push(address);
        }
    }
    heap.check(&memory);
    // Free every third block, then the rest.
    for pass in 0..3 {
        for (index, address) in live.iter().enumerate() {
            if index % 3 == pass {
                memory.mark_free(*address);
                heap.free(&mut memory, *address).unwrap();
            }
        }
        heap.check(&memory);
    }
    heap.trim(&mut memory);
    assert_eq!(heap.usage(), initial);
}

#[derive(Debug, Clone)]
enum TwoCpuStep {
    Allocate {
        cpu: usize,
        size: usize,
        align: usize,
    },
    /// Frees the live block at this index (modulo the number live) on `cpu`,
    /// which may or may not own it.
    Free {
        pick: usize,
        cpu: usize,
    },
    Idle {
        cpu: usize,
    },
}

fn two_cpu_step() -> impl Strategy<Value = TwoCpuStep> {
    prop_oneof![
        6 => (0..2_usize, size(), align()).prop_map(|(cpu, size, align)| TwoCpuStep::Allocate { cpu, size, align }),
        5 => (any::<usize>(), 0..2_usize).prop_map(|(pick, cpu)| TwoCpuStep::Free { pick, cpu }),
        1 => (0..2_usize).prop_map(|cpu| TwoCpuStep::Idle { cpu }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Two CPUs allocating and freeing each other's blocks at random, with
    /// small batches: every block reaches its owner once, and both heaps end
    /// as they started.
    #[test]
    fn random_remote_frees_between_two_cpus(
        steps in prop::collection::vec(two_cpu_step(), 1..300),
        batch_blocks in 1_u32..6,
    ) {
        use super::{CpuAllocator, RemoteRing};
        let share = 256 * PAGE_SIZE;
        let mut memory = ShadowMemory::new(BASE, 2 * share);
        let mut zero_to_one = RemoteRing::new();
        let mut one_to_zero = RemoteRing::new();
        let (to_one, from_zero) = zero_to_one.split();
        let (to_zero, from_one) = one_to_zero.split();
        let mut cpus = [
            CpuAllocator::<2>::new(0, CpuHeap::new(&mut memory, BASE, share).unwrap(), batch_blocks),
            CpuAllocator::<2>::new(1, CpuHeap::new(&mut memory, BASE + share, share).unwrap(), batch_blocks),
        ];
        cpus[0].connect_outbound(1, to_one).unwrap();
        cpus[0].connect_inbound(1, from_one).unwrap();
        cpus[1].connect_outbound(0, to_zero).unwrap();
        cpus[1].connect_inbound(0, from_zero).unwrap();
        let initial = [cpus[0].heap().usage(), cpus[1].heap().usage()];
        let mut live: Vec<(u64, usize, usize, usize)> = Vec::new();
        // Local frees alternate between the cache path (with the layout)
        // and the heap path (without).
        let mut sized = false;
        let mut free = |cpus: &mut [CpuAllocator<'_, 2>; 2], memory: &mut ShadowMemory, cpu: usize, address: u64, size: usize, align: usize| {
            memory.mark_free(address);
            let owner = usize::from(!cpus[0].owns(address));
            sized = !sized;
            if owner == cpu && sized {
                cpus[cpu].free_local_sized(memory, address, size, align).map_err(|error| format!("{error}"))
            } else if owner == cpu {
                cpus[cpu].free_local(memory, address).map(|_| ()).map_err(|error| format!("{error}"))
            } else {
                cpus[cpu].free_remote(memory, owner, address, size, align).map_err(|error| format!("{error}"))
            }
        };
        for step in &steps {
            match *step {
                TwoCpuStep::Allocate { cpu, size, align } => {
                    let before = cpus[cpu].usage();
                    if let Some(address) = cpus[cpu].allocate(&mut memory, size, align) {
                        // In use grows by the block, cached or not (less
                        // what the allocation took back from the rings).
                        let after = cpus[cpu].usage();
                        let received = after.remote_received.bytes - before.remote_received.bytes;
                        let grown = after.heap.bytes_in_use + received - before.heap.bytes_in_use;
                        match SizeClass::of_layout(size, align) {
                            Some(class) => prop_assert_eq!(grown, class.block_size()),
                            None => prop_assert!(grown >= size as u64),
                        }
                        prop_assert!(cpus[cpu].owns(address), "a CPU allocates from its own region");
                        prop_assert_eq!(address % align as u64, 0);
                        memory.mark_live(address, size as u64);
                        live.push((address, size, align, cpu));
                    }
                }
                TwoCpuStep::Free { pick, cpu } => {
                    if !live.is_empty() {
                        let (address, size, align, _) = live.swap_remove(pick % live.len());
                        prop_assert_eq!(free(&mut cpus, &mut memory, cpu, address, size, align), Ok(()));
                    }
                }
                TwoCpuStep::Idle { cpu } => {
                    cpus[cpu].idle(&mut memory);
                }
            }
        }
        for (address, size, align, cpu) in live.drain(..) {
            prop_assert_eq!(free(&mut cpus, &mut memory, 1 - cpu, address, size, align), Ok(()));
        }
        // Each flush publishes a whole lane as one batch, so two rounds
        // pass everything; a third changes nothing.
        for _ in 0..3 {
            cpus[0].idle(&mut memory);
            cpus[1].idle(&mut memory);
        }
        for (cpu, initial) in cpus.iter_mut().zip(initial) {
            let usage = cpu.usage();
            prop_assert_eq!(usage.remote_pending.blocks, 0);
            prop_assert_eq!(usage.remote_refused, 0);
            prop_assert_eq!(usage.heap.bytes_in_use, 0);
            cpu.trim(&mut memory);
            cpu.heap().check(&memory);
            prop_assert_eq!(cpu.heap().usage(), initial);
        }
        let sent = cpus[0].usage().remote_sent.blocks + cpus[1].usage().remote_sent.blocks;
        let received = cpus[0].usage().remote_received.blocks + cpus[1].usage().remote_received.blocks;
        prop_assert_eq!(sent, received);
    }
}
