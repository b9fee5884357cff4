//! [`SeqWords`]: a few words that any CPU may read at any time without a
//! lock, written rarely (a sequence lock of atomics).
//!
//! A reader loads the sequence (even: no write in progress), the words,
//! then the sequence again; if it changed, a write overlapped and it reads
//! again. So a reader never sees half of one write and half of another,
//! and the read path has no read-modify-write (plain loads, one `Acquire`
//! fence, which costs nothing on x86-64). Writers make the sequence odd
//! with a compare-exchange (so two writers never interleave their words),
//! store the words, and make it even again. Writes are meant to be rare:
//! `UdpSocket::connect` stores the socket's peer (an IPv6 address and port
//! do not fit one atomic), every `send` and `recv` reads it.
//!
//! Every word is an atomic, so a torn read is only ever retried, never
//! undefined behaviour. The loom model in `core/tests/loom.rs`
//! (`seq_words_are_never_torn`) checks that no interleaving gives a reader
//! a mix of two writes.

#[cfg(not(loom))]
use core::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};

/// `N` words read together, written together.
pub struct SeqWords<const N: usize> {
    /// Odd while a write is in progress; advances by 2 per write.
    sequence: AtomicU64,
    words: [AtomicU64; N],
}

impl<const N: usize> SeqWords<N> {
    /// Words holding `initial`.
    pub fn new(initial: [u64; N]) -> Self {
        Self { sequence: AtomicU64::new(0), words: initial.map(AtomicU64::new) }
    }

    /// Replaces the words (waits, spinning, for a write of another thread
    /// in progress to end).
    pub fn write(&self, value: [u64; N]) {
        while !self.try_write(value) {
            spin();
        }
    }

    /// Replaces the words unless another thread's write is in progress
    /// (then returns `false` and changes nothing).
    pub fn try_write(&self, value: [u64; N]) -> bool {
        let current = self.sequence.load(Ordering::Relaxed);
        // `Acquire` on taking the sequence: this write's stores come after
        // the previous writer's in every word (with `Relaxed` the loom
        // model found the words of two writes mixed after both ended).
        if current & 1 == 1
            || self.sequence.compare_exchange(current, current + 1, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return false;
        }
        // The odd sequence is ordered before the words' new values: a
        // reader that sees one of them sees the write in progress.
        fence(Ordering::Release);
        for (word, new) in self.words.iter().zip(value) {
            word.store(new, Ordering::Relaxed);
        }
        self.sequence.store(current + 2, Ordering::Release);
        true
    }

    /// The words of one write (retries while writes overlap the read).
    pub fn read(&self) -> [u64; N] {
        loop {
            if let Some(value) = self.try_read() {
                return value;
            }
            spin();
        }
    }

    /// The words of one write, or `None` if a write overlapped the read.
    pub fn try_read(&self) -> Option<[u64; N]> {
        let before = self.sequence.load(Ordering::Acquire);
        if before & 1 == 1 {
            return None;
        }
        let value = core::array::from_fn(|index| self.words[index].load(Ordering::Relaxed));
        // The words' loads are ordered before the second load of the
        // sequence.
        fence(Ordering::Acquire);
        (self.sequence.load(Ordering::Relaxed) == before).then_some(value)
    }
}

fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

impl<const N: usize> core::fmt::Debug for SeqWords<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("SeqWords").field(&self.read()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::SeqWords;

    #[test]
    fn reads_what_was_written_last() {
        let words = SeqWords::new([1, 2, 3]);
        assert_eq!(words.read(), [1, 2, 3]);
        words.write([4, 5, 6]);
        words.write([7, 8, 9]);
        assert_eq!(words.read(), [7, 8, 9]);
    }

    /// Real threads (the loom model explores the interleavings): a reader
    /// never sees words of two different writes.
    #[test]
    fn readers_on_other_threads_never_see_a_mix() {
        let words = std::sync::Arc::new(SeqWords::new([0u64; 4]));
        let writers: Vec<_> = (1..=2u64)
            .map(|writer| {
                let words = words.clone();
                std::thread::spawn(move || {
                    for round in 0..20_000u64 {
                        let value = writer << 32 | round;
                        words.write([value; 4]);
                    }
                })
            })
            .collect();
        let reader = {
            let words = words.clone();
            std::thread::spawn(move || {
                for _ in 0..50_000 {
                    let value = words.read();
                    assert!(value.iter().all(|&word| word == value[0]), "torn: {value:?}");
                }
            })
        };
        for writer in writers {
            writer.join().unwrap();
        }
        reader.join().unwrap();
    }
}
