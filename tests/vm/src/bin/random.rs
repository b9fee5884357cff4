//! Entropy from RDRAND/RDSEED and `RandomState`: the keys printed here must
//! differ between two boots (the test suite boots this twice and compares).

#![no_std]
#![no_main]

use core::hash::BuildHasher;

use toro::println;
use toro::random::{self, RandomState};
use vm_tests::check;

#[toro::main]
fn main() -> i32 {
    let mut ok = true;
    let (mut first, mut second) = ([0u8; 64], [0u8; 64]);
    ok &= check(random::fill_bytes(&mut first).is_ok() && random::fill_bytes(&mut second).is_ok(), "fill_bytes");
    ok &= check(first != second && first.iter().any(|&b| b != 0), "two fills differ");
    let mut odd = [0u8; 13];
    ok &= check(random::seed_bytes(&mut odd).is_ok() && odd.iter().any(|&b| b != 0), "seed_bytes, odd length");

    let state = RandomState::new();
    let (k0, k1) = state.keys();
    println!("random: keys {k0:016x}{k1:016x}");
    let other = RandomState::new();
    ok &= check(state.keys() != other.keys(), "each RandomState has its own keys");
    ok &= check(state.hash_one("key") != other.hash_one("key"), "keys change the hashes");

    let mut map: hashbrown::HashMap<u64, u64, RandomState> = hashbrown::HashMap::with_hasher(RandomState::new());
    for n in 0..1000 {
        map.insert(n, n * n);
    }
    ok &= check((0..1000).all(|n| map.get(&n) == Some(&(n * n))), "a hashbrown map with RandomState");

    if ok {
        println!("random: all checks passed");
        0
    } else {
        1
    }
}
