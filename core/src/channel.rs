//! The bookkeeping of the kernel's many-producer channels
//! (`toro::sync::channel`) that needs no memory of its own: sender weights
//! (weighted reference counting, so no CPU shares a counter with another)
//! and the receiver's choice of lane under the per-sender order marks.
//! The kernel keeps the lanes and the values and calls these; the tests
//! here run random senders, clones, moves between lanes and drops against
//! them (proptest).
//!
//! # Weights
//!
//! A channel's first sender holds [`FULL_WEIGHT`]. A clone takes half of
//! its parent's weight ([`split_weight`]) without telling anyone; a sender
//! with weight 1 first gets [`FULL_WEIGHT`] more from the channel's home
//! CPU ([`WeightLedger::top_up`], a request it waits for). A dropped sender
//! sends its weight home ([`WeightLedger::give_back`]). The weight out is
//! always the sum of the live senders' weights plus what is on its way
//! home, so it reaches zero exactly when the last sender's return arrives,
//! in whatever order the returns arrive.
//!
//! # Marks
//!
//! Each sending CPU writes its own lane. A sender that moved to another
//! lane since its last value puts a mark on its next one: the old lane and
//! how many values that lane holds as the sender writes the marked one
//! ([`encode_mark`]; at least its own last value there, and all of them
//! written before the marked one). The receiver takes a marked value only once it has
//! taken that many from the old lane, turning to the old lane first
//! ([`lane_to_take`]). A mark points to values written before the marked
//! one (in happens-before order), so following marks never cycles.

/// The weight of a channel's first sender.
pub const FULL_WEIGHT: u64 = 1 << 62;

/// Splits a sender's `weight` for a clone: `(kept, given)`; `None` when it
/// is 1 (top it up first).
#[inline]
pub fn split_weight(weight: u64) -> Option<(u64, u64)> {
    (weight >= 2).then(|| (weight - weight / 2, weight / 2))
}

/// The home CPU's count of sender weight handed out and not yet back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightLedger {
    out: u64,
}

impl WeightLedger {
    /// A new channel: its first sender holds [`FULL_WEIGHT`].
    pub const fn new() -> Self {
        Self { out: FULL_WEIGHT }
    }

    /// Hands out [`FULL_WEIGHT`] more (to a sender with weight 1); returns
    /// it.
    pub fn top_up(&mut self) -> u64 {
        self.out += FULL_WEIGHT;
        FULL_WEIGHT
    }

    /// A dropped sender's weight came back; true if every sender is gone.
    /// Weight that was never handed out is ignored (it would be a bug in
    /// the caller; the count must not wrap).
    pub fn give_back(&mut self, weight: u64) -> bool {
        self.out = self.out.saturating_sub(weight);
        self.out == 0
    }

    /// Whether every sender is gone.
    pub fn all_returned(&self) -> bool {
        self.out == 0
    }
}

impl Default for WeightLedger {
    fn default() -> Self {
        Self::new()
    }
}

/// Bits of a mark that hold the count; the lane is above them.
pub const MARK_COUNT_BITS: u32 = 56;
/// The most lanes a mark can name.
pub const MAX_LANES: usize = 1 << (64 - MARK_COUNT_BITS);

/// A decoded mark: take `count` values from `lane` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The lane the sender wrote before.
    pub lane: usize,
    /// How many values that lane held when the sender moved (at least up
    /// to its last one there).
    pub count: u64,
}

/// The mark for a value a sender writes to `lane`, whose previous value
/// went to lane `previous.0`, which then held `previous.1` values; 0 (no
/// mark) for a first value or the same lane.
#[inline]
pub fn encode_mark(previous: Option<(usize, u64)>, lane: usize) -> u64 {
    match previous {
        Some((before, count)) if before != lane => {
            debug_assert!(before < MAX_LANES && count < 1 << MARK_COUNT_BITS);
            ((before as u64) << MARK_COUNT_BITS) | count
        }
        _ => 0,
    }
}

/// The mark `raw` stands for, if any.
#[inline]
pub fn decode_mark(raw: u64) -> Option<Mark> {
    (raw != 0).then_some(Mark { lane: (raw >> MARK_COUNT_BITS) as usize, count: raw & ((1 << MARK_COUNT_BITS) - 1) })
}

/// What the receiver sees of its lanes.
pub trait Lanes {
    /// Lanes in all (one per CPU).
    fn count(&self) -> usize;
    /// Whether `lane` has a value not yet taken.
    fn has_value(&self, lane: usize) -> bool;
    /// The mark of `lane`'s first value not yet taken (only asked when it
    /// has one).
    fn front_mark(&self, lane: usize) -> u64;
    /// Values taken from `lane` so far.
    fn taken(&self, lane: usize) -> u64;
}

/// The lane whose first value the receiver takes next, looking from lane
/// `start` on (round robin) and following marks; `None` if every lane is
/// empty.
#[inline]
pub fn lane_to_take(lanes: &impl Lanes, start: usize) -> Option<usize> {
    let count = lanes.count();
    let first = (0..count).map(|step| (start + step) % count).find(|&lane| lanes.has_value(lane))?;
    let mut lane = first;
    // Marks never cycle (see the module docs): at most one step per lane.
    for _ in 0..count {
        match decode_mark(lanes.front_mark(lane)) {
            Some(mark) if mark.lane < count && lanes.taken(mark.lane) < mark.count && lanes.has_value(mark.lane) => {
                lane = mark.lane;
            }
            _ => return Some(lane),
        }
    }
    Some(lane)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn weights_split_and_top_up() {
        assert_eq!(split_weight(1), None);
        assert_eq!(split_weight(2), Some((1, 1)));
        assert_eq!(split_weight(5), Some((3, 2)));
        let mut ledger = WeightLedger::new();
        assert!(!ledger.give_back(FULL_WEIGHT / 2));
        assert!(ledger.give_back(FULL_WEIGHT / 2));
        assert!(ledger.all_returned());
    }

    #[test]
    fn marks_round_trip() {
        assert_eq!(encode_mark(None, 3), 0);
        assert_eq!(encode_mark(Some((3, 9)), 3), 0);
        assert_eq!(decode_mark(encode_mark(Some((7, 1234)), 2)), Some(Mark { lane: 7, count: 1234 }));
        assert_eq!(decode_mark(0), None);
        assert_eq!(
            decode_mark(encode_mark(Some((255, (1 << 56) - 1)), 0)),
            Some(Mark { lane: 255, count: (1 << 56) - 1 })
        );
    }

    /// A lane of the model: (sender, sequence, mark) and how many were taken.
    #[derive(Default, Clone)]
    struct ModelLane {
        values: VecDeque<(usize, u64, u64)>,
        written: u64,
        taken: u64,
    }

    struct Model(Vec<ModelLane>);

    impl Lanes for Model {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn has_value(&self, lane: usize) -> bool {
            !self.0[lane].values.is_empty()
        }
        fn front_mark(&self, lane: usize) -> u64 {
            self.0[lane].values.front().expect("has a value").2
        }
        fn taken(&self, lane: usize) -> u64 {
            self.0[lane].taken
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send(usize),
        Move(usize, usize),
        Receive(usize),
    }

    fn steps(senders: usize, lanes: usize) -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            4 => (0..senders).prop_map(Step::Send),
            1 => (0..senders, 0..lanes).prop_map(|(s, l)| Step::Move(s, l)),
            3 => (0..lanes).prop_map(Step::Receive),
        ];
        proptest::collection::vec(step, 0..400)
    }

    proptest! {
        /// Senders moving between lanes at random, the receiver starting
        /// its search anywhere: each sender's values arrive in order, once.
        #[test]
        fn per_sender_order_holds(lanes in 1usize..6, senders in 1usize..6, script in steps(6, 6)) {
            let mut model = Model(vec![ModelLane::default(); lanes]);
            let mut at: Vec<usize> = (0..senders).map(|s| s % lanes).collect();
            // The lane of each sender's last value.
            let mut last: Vec<Option<usize>> = vec![None; senders];
            let mut sent = vec![0u64; senders];
            let mut received = vec![0u64; senders];
            let receive = |model: &mut Model, start: usize, received: &mut Vec<u64>| -> Result<bool, TestCaseError> {
                let Some(lane) = lane_to_take(model, start) else { return Ok(false) };
                let lane_state = &mut model.0[lane];
                let (sender, sequence, _) = lane_state.values.pop_front().expect("chosen lanes have values");
                lane_state.taken += 1;
                prop_assert_eq!(sequence, received[sender], "sender {}'s values in order", sender);
                received[sender] += 1;
                Ok(true)
            };
            for step in script {
                match step {
                    Step::Send(s) if s < senders => {
                        let lane = at[s];
                        // As the kernel does: the old lane's count now
                        // (other senders may have written there since).
                        let mark = encode_mark(last[s].map(|old| (old, model.0[old].written)), lane);
                        let lane_state = &mut model.0[lane];
                        lane_state.values.push_back((s, sent[s], mark));
                        lane_state.written += 1;
                        last[s] = Some(lane);
                        sent[s] += 1;
                    }
                    Step::Move(s, lane) if s < senders => at[s] = lane % lanes,
                    Step::Receive(start) => {
                        receive(&mut model, start % lanes, &mut received)?;
                    }
                    _ => {}
                }
            }
            while receive(&mut model, 0, &mut received)? {}
            prop_assert_eq!(received, sent, "every value once");
        }

        /// Random clones (splitting, topping up at 1) and drops whose
        /// returns reach the home in any order: the ledger says "all gone"
        /// exactly when the last one is in.
        #[test]
        fn weight_reaches_zero_only_at_the_end(script in proptest::collection::vec((any::<bool>(), any::<usize>()), 0..300)) {
            let mut ledger = WeightLedger::new();
            let mut live = vec![FULL_WEIGHT];
            let mut in_flight: Vec<u64> = Vec::new();
            for (clone, pick) in script {
                if clone && !live.is_empty() {
                    let index = pick % live.len();
                    if live[index] == 1 {
                        live[index] += ledger.top_up();
                    }
                    let (kept, given) = split_weight(live[index]).expect("at least 2");
                    live[index] = kept;
                    live.push(given);
                } else if !live.is_empty() {
                    in_flight.push(live.swap_remove(pick % live.len()));
                }
                // Deliver one return, chosen at random, now and then.
                if !in_flight.is_empty() && pick % 3 == 0 {
                    let weight = in_flight.swap_remove(pick % in_flight.len());
                    let gone = ledger.give_back(weight);
                    prop_assert_eq!(gone, live.is_empty() && in_flight.is_empty());
                }
            }
            in_flight.append(&mut live);
            while let Some(weight) = in_flight.pop() {
                prop_assert_eq!(ledger.give_back(weight), in_flight.is_empty());
            }
        }
    }
}
