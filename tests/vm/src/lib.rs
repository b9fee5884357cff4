//! What the in-VM test binaries share: `check`, which prints a failed
//! check's description and passes its verdict on.

#![no_std]

/// Prints `FAILED: what` unless `condition`; returns `condition`.
pub fn check(condition: bool, what: &str) -> bool {
    if !condition {
        toro::println!("FAILED: {what}");
    }
    condition
}
