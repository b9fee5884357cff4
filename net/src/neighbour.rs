//! Neighbours asked for and never answered: how a connect learns that its
//! host (or the gateway to it) is not on the link.
//!
//! smoltcp keeps a packet waiting for a neighbour's MAC and asks again
//! once a second for as long as something wants to send, so a connect to
//! an address nobody has on the link would wait out its whole timeout
//! (127 s). Linux gives up on a neighbour after 3 unanswered requests a
//! second apart (`ucast_solicit` 3, `retrans_time` 1 s) and fails what
//! waited for it: a connect gets `EHOSTUNREACH`, "no route to host", after
//! about 3 s. smoltcp's neighbour cache tells nothing of that, so the stack
//! watches the frames instead: requests it sends (`device::neighbour_solicited`)
//! and answers it receives (`device::neighbour_answer`).
//!
//! Also: the neighbours learned from the frames they send (`Learned`).

use alloc::vec::Vec;

use smoltcp::wire::IpAddress;

/// Requests a neighbour that never answered is given up after (Linux's
/// default).
pub const GIVE_UP_REQUESTS: u32 = 3;
/// How long after the first request a neighbour is given up at the soonest.
pub const GIVE_UP_MICROS: u64 = 3_000_000;
/// How long after a request for a neighbour the stack asks again itself
/// while something still waits for it (Linux's `retrans_time`).
pub const RETRANSMIT_MICROS: u64 = 1_000_000;
/// A neighbour not asked for again for this long is forgotten (nothing
/// waits for it any more: smoltcp asks once a second while it does).
const FORGET_MICROS: u64 = 3_000_000;
/// At most this many are watched; a request for another one forgets the
/// one asked for longest ago.
const MAX_WATCHED: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unanswered {
    address: IpAddress,
    first_micros: u64,
    last_micros: u64,
    requests: u32,
}

/// Addresses asked for on the link and not answered yet.
#[derive(Debug, Default)]
pub struct Unresolved {
    entries: Vec<Unanswered>,
}

impl Unresolved {
    /// Whether no address waits for an answer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A request for `address` left at `now_micros`.
    pub fn asked(&mut self, address: IpAddress, now_micros: u64) {
        if let Some(entry) = self.entries.iter_mut().find(|entry| entry.address == address) {
            entry.last_micros = now_micros;
            entry.requests += 1;
            return;
        }
        if self.entries.len() == MAX_WATCHED {
            let oldest = (0..self.entries.len()).min_by_key(|&index| self.entries[index].last_micros);
            if let Some(index) = oldest {
                self.entries.swap_remove(index);
            }
        }
        self.entries.push(Unanswered { address, first_micros: now_micros, last_micros: now_micros, requests: 1 });
    }

    /// Whether `address` was asked for less than `RETRANSMIT_MICROS`
    /// before `now_micros`.
    pub fn asked_lately(&self, address: IpAddress, now_micros: u64) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.address == address && now_micros.saturating_sub(entry.last_micros) < RETRANSMIT_MICROS)
    }

    /// The addresses to ask for again at `now_micros`: asked for
    /// `RETRANSMIT_MICROS` ago or longer, fewer than `GIVE_UP_REQUESTS`
    /// times. smoltcp asks for one neighbour a second per interface, so
    /// several unanswered neighbours would otherwise take turns and each
    /// be given up only after several seconds per neighbour; Linux asks
    /// each on its own timer.
    pub fn due(&self, now_micros: u64) -> Vec<IpAddress> {
        self.entries
            .iter()
            .filter(|entry| {
                entry.requests < GIVE_UP_REQUESTS && now_micros.saturating_sub(entry.last_micros) >= RETRANSMIT_MICROS
            })
            .map(|entry| entry.address)
            .collect()
    }

    /// When the next request of [`Unresolved::due`] or the next give-up
    /// falls due (microseconds, absolute), if any address waits.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries
            .iter()
            .map(|entry| {
                if entry.requests < GIVE_UP_REQUESTS {
                    entry.last_micros.saturating_add(RETRANSMIT_MICROS)
                } else {
                    entry.first_micros.saturating_add(GIVE_UP_MICROS).max(entry.last_micros)
                }
            })
            .min()
    }

    /// `address` showed itself on the link.
    pub fn answered(&mut self, address: IpAddress) {
        self.entries.retain(|entry| entry.address != address);
    }

    /// The addresses given up by `now_micros` (asked for at least
    /// `GIVE_UP_REQUESTS` times over at least `GIVE_UP_MICROS`), taken out:
    /// a later request for one starts again, as Linux resolves a failed
    /// neighbour again for the next packet. Forgets addresses not asked
    /// for lately.
    pub fn take_given_up(&mut self, now_micros: u64) -> Vec<IpAddress> {
        let mut given_up = Vec::new();
        self.entries.retain(|entry| {
            let failed =
                entry.requests >= GIVE_UP_REQUESTS && now_micros.saturating_sub(entry.first_micros) >= GIVE_UP_MICROS;
            if failed {
                given_up.push(entry.address);
            }
            !failed && now_micros.saturating_sub(entry.last_micros) < FORGET_MICROS
        });
        given_up
    }
}

/// How long a neighbour taught to smoltcp is believed to stay in its
/// cache: well inside smoltcp's 60 s entry lifetime (which each frame from
/// the neighbour renews), so a neighbour still sending is taught again
/// before smoltcp could have let it go, even if it was evicted meanwhile.
pub const RETEACH_MICROS: u64 = 20_000_000;

/// A neighbour taught to smoltcp (`Learned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Taught {
    address: IpAddress,
    mac: [u8; 6],
    micros: u64,
}

/// The neighbours whose MAC the stack took from a frame they sent and
/// handed to smoltcp's cache as an ARP reply or, for IPv6, a neighbour
/// advertisement (`device::Learn`):
/// smoltcp fills its cache only from ARP, drops a packet whose next hop it
/// must resolve, and asks for one neighbour a second per interface, so a
/// server answering many hosts on its link lost each new host's first
/// answer and made most of them wait a second or more. This mirror of what
/// was taught (as many entries as smoltcp's cache has) keeps the teaching
/// to one ARP reply per neighbour per `RETEACH_MICROS`, not one per frame.
#[derive(Debug, Default)]
pub struct Learned {
    entries: Vec<Taught>,
    /// Neighbours taught (new ones, changed MACs and renewals).
    pub taught: u64,
}

impl Learned {
    /// At most this many: smoltcp's neighbour cache size.
    pub const CAPACITY: usize = smoltcp::config::IFACE_NEIGHBOR_CACHE_COUNT;

    /// Whether smoltcp must be told now that `address` is at `mac` (a
    /// frame from it arrived at `now_micros`); if so, it is noted as told.
    pub fn wants(&mut self, address: IpAddress, mac: [u8; 6], now_micros: u64) -> bool {
        let wanted = self.note(address, mac, now_micros, false);
        self.taught += u64::from(wanted);
        wanted
    }

    /// Notes `address` at `mac` as told at `now_micros`: always when
    /// `renew`, else only if it was not told with this MAC within
    /// `RETEACH_MICROS`. Whether the entry was new, changed or stale.
    fn note(&mut self, address: IpAddress, mac: [u8; 6], now_micros: u64, renew: bool) -> bool {
        if let Some(entry) = self.entries.iter_mut().find(|entry| entry.address == address) {
            let fresh = entry.mac == mac && now_micros.saturating_sub(entry.micros) < RETEACH_MICROS;
            if !fresh || renew {
                *entry = Taught { address, mac, micros: now_micros };
            }
            return !fresh;
        }
        if self.entries.len() >= Self::CAPACITY {
            let oldest = (0..self.entries.len()).min_by_key(|&index| self.entries[index].micros);
            if let Some(index) = oldest {
                self.entries.swap_remove(index);
            }
        }
        self.entries.push(Taught { address, mac, micros: now_micros });
        true
    }

    /// `address` showed at `mac` in an ARP packet or neighbour
    /// advertisement for us at `now_micros`, from which smoltcp fills its
    /// cache itself: noted as if taught (not counted), so that it is
    /// neither taught again nor asked for while it is fresh.
    pub fn heard(&mut self, address: IpAddress, mac: [u8; 6], now_micros: u64) {
        self.note(address, mac, now_micros, true);
    }

    /// Whether `address` was taught less than `RETEACH_MICROS` before
    /// `now_micros`, so smoltcp's cache is believed to hold it.
    pub fn knows(&self, address: IpAddress, now_micros: u64) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.address == address && now_micros.saturating_sub(entry.micros) < RETEACH_MICROS)
    }

    /// smoltcp flushed its cache (its addresses changed): teach again.
    pub fn forget_all(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(last: u8) -> IpAddress {
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, last))
    }

    #[test]
    fn three_requests_over_three_seconds_give_up() {
        let mut unresolved = Unresolved::default();
        unresolved.asked(v4(9), 0);
        unresolved.asked(v4(9), 1_000_000);
        assert!(unresolved.take_given_up(2_900_000).is_empty(), "two requests");
        unresolved.asked(v4(9), 2_000_000);
        assert!(unresolved.take_given_up(2_999_999).is_empty(), "not 3 s yet");
        assert_eq!(unresolved.take_given_up(3_000_000), [v4(9)]);
        assert!(unresolved.is_empty(), "taken out");
        // Asked again: it starts over.
        unresolved.asked(v4(9), 3_100_000);
        assert!(unresolved.take_given_up(3_200_000).is_empty());
    }

    #[test]
    fn an_answer_clears_and_silence_forgets() {
        let mut unresolved = Unresolved::default();
        for second in 0..3 {
            unresolved.asked(v4(1), second * 1_000_000);
            unresolved.asked(v4(2), second * 1_000_000);
        }
        unresolved.answered(v4(1));
        assert_eq!(unresolved.take_given_up(3_000_000), [v4(2)]);
        // Asked once, then never again: forgotten, not given up.
        unresolved.asked(v4(3), 4_000_000);
        assert!(unresolved.take_given_up(6_999_999).is_empty());
        assert!(!unresolved.is_empty());
        assert!(unresolved.take_given_up(7_000_000).is_empty());
        assert!(unresolved.is_empty());
    }

    #[test]
    fn each_unanswered_neighbour_is_asked_again_on_its_own_timer() {
        let mut unresolved = Unresolved::default();
        unresolved.asked(v4(1), 0);
        unresolved.asked(v4(2), 400_000);
        assert!(unresolved.asked_lately(v4(1), 999_999));
        assert!(!unresolved.asked_lately(v4(1), 1_000_000));
        assert!(!unresolved.asked_lately(v4(3), 0), "never asked");
        assert_eq!(unresolved.next_deadline(), Some(1_000_000));
        assert!(unresolved.due(999_999).is_empty());
        assert_eq!(unresolved.due(1_000_000), [v4(1)]);
        assert_eq!(unresolved.due(1_400_000), [v4(1), v4(2)]);
        unresolved.asked(v4(1), 1_000_000);
        unresolved.asked(v4(2), 1_400_000);
        unresolved.asked(v4(1), 2_000_000);
        assert_eq!(unresolved.due(3_000_000), [v4(2)], "v4(1) had its 3 requests");
        // Once asked 3 times, the next deadline is its give-up.
        unresolved.asked(v4(2), 2_400_000);
        assert_eq!(unresolved.next_deadline(), Some(3_000_000));
        assert_eq!(unresolved.take_given_up(3_000_000), [v4(1)]);
        assert_eq!(unresolved.next_deadline(), Some(3_400_000));
        unresolved.answered(v4(2));
        assert_eq!(unresolved.next_deadline(), None);
    }

    use smoltcp::wire::Ipv4Address;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 9];

    #[test]
    fn a_neighbour_is_taught_once_then_again_after_a_while_or_a_new_mac() {
        let mut learned = Learned::default();
        let host = v4(9);
        assert!(learned.wants(host, MAC, 0));
        assert!(!learned.wants(host, MAC, 1));
        assert!(!learned.wants(host, MAC, RETEACH_MICROS - 1));
        assert!(learned.wants(host, MAC, RETEACH_MICROS), "renewed before smoltcp lets it go");
        assert!(learned.wants(host, [0x02, 0, 0, 0, 0, 8], RETEACH_MICROS + 1), "a new MAC");
        assert_eq!(learned.taught, 3);
        // Heard in an ARP answer: known anew, not counted as taught.
        learned.heard(v4(7), MAC, 5);
        assert!(learned.knows(v4(7), 5) && !learned.wants(v4(7), MAC, 6));
        learned.heard(v4(7), MAC, RETEACH_MICROS);
        assert!(learned.knows(v4(7), RETEACH_MICROS + 6), "renewed by a second answer");
        assert_eq!(learned.taught, 3);
        assert!(learned.knows(host, RETEACH_MICROS + 1));
        assert!(!learned.knows(host, 2 * RETEACH_MICROS + 1), "not renewed for too long");
        assert!(!learned.knows(v4(8), 0), "never taught");
        learned.forget_all();
        assert!(!learned.knows(host, RETEACH_MICROS + 2), "flushed");
        assert!(learned.wants(host, [0x02, 0, 0, 0, 0, 8], RETEACH_MICROS + 2), "after a flush");
    }

    proptest! {
        /// Any arrivals: bounded by smoltcp's cache, and a neighbour is
        /// taught whenever it was not told (with this MAC) within
        /// `RETEACH_MICROS`, never more often.
        #[test]
        fn teaching_bookkeeping_holds(
            arrivals in proptest::collection::vec((0u16..300, 0u8..2, 0u64..400_000, 0u8..4), 0..600),
        ) {
            let mut learned = Learned::default();
            let mut now = 0;
            let mut told: Vec<Option<([u8; 6], u64)>> = vec![None; 300];
            for (host, mac, step, kind) in arrivals {
                now += step;
                let address = IpAddress::Ipv4(Ipv4Address::from_octets([10, 0, (host >> 8) as u8, host as u8]));
                let mac = [0x02, 0, 0, 0, 0, mac];
                if kind == 0 {
                    // An ARP answer: smoltcp learned it itself; known now,
                    // not counted as taught.
                    let taught = learned.taught;
                    learned.heard(address, mac, now);
                    prop_assert_eq!(learned.taught, taught);
                    prop_assert!(learned.knows(address, now));
                    told[usize::from(host)] = Some((mac, now));
                    prop_assert!(learned.entries.len() <= Learned::CAPACITY);
                    continue;
                }
                let wanted = learned.wants(address, mac, now);
                let last = told[usize::from(host)];
                if last.is_some_and(|(known, at)| known == mac && now - at < RETEACH_MICROS) {
                    // Told recently, unless it was evicted since.
                    prop_assert!(!wanted || learned.entries.len() == Learned::CAPACITY);
                } else {
                    prop_assert!(wanted);
                }
                if wanted {
                    told[usize::from(host)] = Some((mac, now));
                }
                prop_assert!(learned.entries.len() <= Learned::CAPACITY);
            }
        }

        /// Any sequence of requests and answers: the table stays bounded,
        /// an address is given up only after enough requests over enough
        /// time, and never one answered since it was last asked for.
        #[test]
        fn bookkeeping_holds(events in proptest::collection::vec((0u8..40, any::<bool>(), 0u64..700_000), 0..400)) {
            let mut unresolved = Unresolved::default();
            let mut now = 0;
            // For each address: (first request, requests) since its last answer or give-up.
            let mut model: Vec<Option<(u64, u32)>> = vec![None; 40];
            for (address, answer, step) in events {
                now += step;
                if answer {
                    unresolved.answered(v4(address));
                    model[usize::from(address)] = None;
                } else {
                    unresolved.asked(v4(address), now);
                    let entry = &mut model[usize::from(address)];
                    *entry = Some(entry.map_or((now, 1), |(first, requests)| (first, requests + 1)));
                }
                prop_assert!(unresolved.entries.len() <= MAX_WATCHED);
                for given_up in unresolved.take_given_up(now) {
                    let IpAddress::Ipv4(given_up) = given_up else { unreachable!() };
                    let index = usize::from(given_up.octets()[3]);
                    let (first, requests) = model[index].expect("given up without a request since its answer");
                    prop_assert!(requests >= GIVE_UP_REQUESTS && now - first >= GIVE_UP_MICROS);
                    model[index] = None;
                }
                // Forgotten (or dropped from a full table): the model starts over too.
                for (index, entry) in model.iter_mut().enumerate() {
                    let watched = unresolved.entries.iter().any(|e| e.address == v4(index as u8));
                    if !watched {
                        *entry = None;
                    }
                }
            }
        }
    }
}
