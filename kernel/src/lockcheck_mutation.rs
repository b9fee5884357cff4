//! Planted faults for the lock check's mutation test (`cargo xtask test`
//! builds an image with the features `lockcheck-mutation-1` to `-5` and
//! asserts that the check reports each). Never enabled in a real build.
//!
//! 1. a `fetch_add` in a rooted function (`cpu::send`);
//! 2. one behind a trait-object call inside a rooted function
//!    (`scheduler::wake`);
//! 3. one in `Receiver::recv`, generic and inlined into the application;
//! 4. one in a helper whose name contains an excluded name
//!    (`memory::allocation_failure_count`, not `allocation_failure`);
//! 5. one in a job function reached only through the job's function
//!    pointer (`sync::mutex::notify_job`).

use core::sync::atomic::{AtomicU64, Ordering};

/// What the planted `fetch_add`s count.
pub static PLANTED: AtomicU64 = AtomicU64::new(0);

/// A locked read-modify-write, kept in place.
#[inline(always)]
pub fn plant() {
    PLANTED.fetch_add(1, Ordering::Relaxed);
}

/// Mutation 2: the `fetch_add` behind a trait object.
pub trait Bump {
    fn bump(&self);
}

struct Counter;

impl Bump for Counter {
    fn bump(&self) {
        plant();
    }
}

/// Calls `bump` through a `&dyn Bump` the compiler cannot see through.
#[inline(always)]
pub fn plant_behind_trait_object() {
    let object: &dyn Bump = core::hint::black_box(&Counter);
    object.bump();
}
