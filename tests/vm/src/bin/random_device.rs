//! `toro::random` on a CPU without RDRAND and RDSEED (QEMU `-cpu
//! max,-rdrand,-rdseed`): with a virtio-rng device, threads on every CPU get
//! their bytes from it (its completed-request count grows by at least one per
//! call); with `none` on the command line there is no device, and every call
//! fails with `Unsupported` and a message that says why.

#![no_std]
#![no_main]

use toro::alloc::vec::Vec;
use toro::random::{self, RandomError, RandomState};
use toro::virtio::rng;
use toro::{cpu, println, thread};
use vm_tests::check;

/// Threads per CPU, calls per thread, bytes per call.
const THREADS_PER_CPU: usize = 2;
const CALLS: usize = 50;
const BYTES: usize = 32;

/// CPUID leaf 1 ECX bit 30 (RDRAND), leaf 7 EBX bit 18 (RDSEED).
fn cpu_has_rdrand_or_rdseed() -> bool {
    let (leaf1, leaf7) = (core::arch::x86_64::__cpuid(1), core::arch::x86_64::__cpuid_count(7, 0));
    leaf1.ecx & (1 << 30) != 0 || leaf7.ebx & (1 << 18) != 0
}

#[toro::main]
fn main() -> i32 {
    let mut ok = check(!cpu_has_rdrand_or_rdseed(), "the CPU offers neither RDRAND nor RDSEED");
    if toro::system::argument("none").is_some() {
        ok &= no_source();
    } else {
        ok &= through_the_device();
    }
    if ok {
        println!("random device: all checks passed");
        0
    } else {
        1
    }
}

fn through_the_device() -> bool {
    let Some(rng) = rng::device() else {
        println!("FAILED: no virtio-rng device started");
        return false;
    };
    let cpus = cpu::count();
    let before = rng.stats().expect("stats").completed;
    let mut workers = Vec::new();
    for cpu in 0..cpus {
        for _ in 0..THREADS_PER_CPU {
            workers.push(thread::spawn_on(cpu, move || {
                let mut seen = [false; 256];
                for _ in 0..CALLS {
                    let mut bytes = [0u8; BYTES];
                    if random::fill_bytes(&mut bytes).is_err() {
                        return None;
                    }
                    for byte in bytes {
                        seen[usize::from(byte)] = true;
                    }
                }
                let mut seed = [0u8; 16];
                random::seed_bytes(&mut seed).ok()?;
                Some(seen)
            }));
        }
    }
    let mut seen = [false; 256];
    let mut answered = 0;
    for worker in workers {
        if let Some(theirs) = worker.join() {
            answered += 1;
            for (all, one) in seen.iter_mut().zip(theirs) {
                *all |= one;
            }
        }
    }
    let calls = cpus * THREADS_PER_CPU * (CALLS + 1);
    let completed = rng.stats().expect("stats").completed - before;
    let distinct = seen.iter().filter(|&&s| s).count();
    let mut ok = check(answered == cpus * THREADS_PER_CPU, "every thread on every CPU got its bytes");
    ok &= check(completed as usize >= calls, "every call was served by the device");
    ok &= check(distinct == 256, "the bytes look random (every value seen)");
    ok &= check(RandomState::try_new().is_ok(), "RandomState gets its keys from the device");
    println!(
        "random device: {calls} calls from {cpus} CPUs, {completed} device requests, {distinct} distinct byte values"
    );
    ok
}

fn no_source() -> bool {
    let mut ok = check(rng::device().is_none(), "no virtio-rng device");
    let mut bytes = [0u8; 8];
    let fill = random::fill_bytes(&mut bytes);
    let seed = random::seed_bytes(&mut bytes);
    ok &= check(fill == Err(RandomError::Unsupported), "fill_bytes fails with Unsupported");
    ok &= check(seed == Err(RandomError::Unsupported), "seed_bytes fails with Unsupported");
    ok &= check(RandomState::try_new().err() == Some(RandomError::Unsupported), "RandomState::try_new fails");
    if let Err(error) = fill {
        println!("random device: no source: {error}");
    }
    ok
}
