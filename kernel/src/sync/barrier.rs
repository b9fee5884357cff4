//! `Barrier`, shaped like std's: built on the home-CPU `Mutex` and
//! `Condvar`, so waiting threads block (their CPUs keep scheduling) and no
//! locked instruction is used.

use super::{Condvar, Mutex};

/// Makes `n` threads wait until all `n` have arrived; reusable.
pub struct Barrier {
    state: Mutex<BarrierState>,
    all_here: Condvar,
    parties: usize,
}

struct BarrierState {
    arrived: usize,
    /// Counts completed rounds, so a thread of the next round does not
    /// release the waiters of this one.
    round: u64,
}

/// What `Barrier::wait` tells each thread.
#[derive(Debug, Clone, Copy)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one thread per round (the last to arrive).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    pub const fn new(n: usize) -> Self {
        Self { state: Mutex::new(BarrierState { arrived: 0, round: 0 }), all_here: Condvar::new(), parties: n }
    }

    /// Blocks until `n` threads have called `wait` in this round.
    #[inline(never)]
    pub fn wait(&self) -> BarrierWaitResult {
        let mut state = self.state.lock();
        state.arrived += 1;
        if state.arrived < self.parties {
            let round = state.round;
            drop(self.all_here.wait_while(state, |state| state.round == round));
            BarrierWaitResult(false)
        } else {
            state.arrived = 0;
            state.round += 1;
            drop(state);
            self.all_here.notify_all();
            BarrierWaitResult(true)
        }
    }
}

impl core::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Barrier").field("parties", &self.parties).finish_non_exhaustive()
    }
}
