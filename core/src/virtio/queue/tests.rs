//! Host tests of the split virtqueue: the driver against the fake device in [`Device`].

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering as HostOrdering};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// Where the tests pretend the queue memory sits.
const BASE: u64 = 0x10_0000;

fn host_fence() {
    fence(HostOrdering::SeqCst);
}

fn buffer(address: u64, length: u32) -> Buffer {
    Buffer { address, length }
}

type TestDriver<const N: usize, const I: usize> = Driver<Arc<QueueMemory<N, I>>, u32, N, I>;

fn pair<const N: usize, const I: usize>(
    event_index: bool,
    indirect: bool,
) -> (TestDriver<N, I>, Device<Arc<QueueMemory<N, I>>, N, I>) {
    let memory = Arc::new(QueueMemory::<N, I>::new());
    let driver = Driver::new(Arc::clone(&memory), BASE, event_index, indirect);
    let device = Device::new(memory, BASE, event_index);
    (driver, device)
}

/// Reads every chain made available, checks nothing else is pending.
fn take_all<const N: usize, const I: usize>(
    device: &mut Device<Arc<QueueMemory<N, I>>, N, I>,
) -> Vec<(u16, Vec<Segment>)> {
    let mut chains = Vec::new();
    while let Some(head) = device.next_available() {
        let mut segments = [Segment { buffer: buffer(0, 0), writable: false }; 64];
        let count = device.read_chain(head, &mut segments).expect("a well-formed chain");
        chains.push((head, segments[..count].to_vec()));
    }
    chains
}

#[test]
fn layout_matches_the_spec() {
    assert_eq!(core::mem::size_of::<Descriptor>(), 16);
    assert_eq!(core::mem::size_of::<UsedElement>(), 8);
    // flags, idx, ring[N], used_event (section 2.7.6).
    assert_eq!(core::mem::size_of::<AvailableRing<256>>(), 2 + 2 + 2 * 256 + 2);
    // flags, idx, ring[N], avail_event, padded to 4 (section 2.7.8).
    assert_eq!(core::mem::size_of::<UsedRing<256>>(), 4 + 8 * 256 + 4);
    assert_eq!(QueueMemory::<256, 4>::DESCRIPTORS_OFFSET, 0);
    assert_eq!(QueueMemory::<256, 4>::AVAILABLE_OFFSET, 16 * 256);
    assert_eq!(QueueMemory::<256, 4>::USED_OFFSET % 4, 0);
    assert_eq!(QueueMemory::<256, 4>::INDIRECT_OFFSET % 16, 0);
    assert_eq!(QueueMemory::<256, 4>::INDIRECT_TABLE_BYTES, 64);
    assert_eq!(core::mem::align_of::<QueueMemory<8, 0>>(), 4096);
    let (driver, _) = pair::<8, 2>(false, false);
    let addresses = driver.addresses();
    assert_eq!(addresses.descriptors, BASE);
    assert_eq!(addresses.driver, BASE + 8 * 16);
    assert_eq!(addresses.device, BASE + QueueMemory::<8, 2>::USED_OFFSET as u64);
}

#[test]
fn need_event_follows_the_spec_formula_across_wrap() {
    // The device asked to hear when idx passes 5: moving 5 -> 6 passes it.
    assert!(need_event(5, 6, 5));
    assert!(!need_event(5, 5, 4));
    assert!(need_event(5, 9, 3));
    assert!(!need_event(9, 9, 3));
    assert!(need_event(0xffff, 2, 0xfffe));
    assert!(!need_event(3, 2, 0xfffe));
    assert!(!need_event(7, 7, 7));
}

#[test]
fn one_request_round_trip_through_the_fake_device() {
    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head = driver.add(&[buffer(0x5000, 16)], &[buffer(0x6000, 512)], 42).unwrap();
    assert_eq!(driver.free_descriptors(), 6);
    assert!(driver.should_notify(host_fence));
    let chains = take_all(&mut device);
    assert_eq!(
        chains,
        [(
            head,
            vec![
                Segment { buffer: buffer(0x5000, 16), writable: false },
                Segment { buffer: buffer(0x6000, 512), writable: true }
            ]
        )]
    );
    assert!(!driver.has_used());
    device.complete(head, 300);
    assert!(device.should_interrupt(host_fence));
    assert_eq!(driver.pop_used(), Ok(Some(Completion { token: 42, written: 300 })));
    assert_eq!(driver.pop_used(), Ok(None));
    assert_eq!(driver.free_descriptors(), 8);
    assert_eq!(driver.in_flight(), 0);
}

#[test]
fn requests_complete_out_of_order_with_their_tokens() {
    let (mut driver, mut device) = pair::<8, 0>(true, false);
    let heads: Vec<u16> =
        (0..4).map(|token| driver.add(&[], &[buffer(0x1000 * u64::from(token), 64)], token).unwrap()).collect();
    assert_eq!(driver.in_flight(), 4);
    let chains = take_all(&mut device);
    assert_eq!(chains.len(), 4);
    for &index in &[2usize, 0, 3, 1] {
        device.complete(heads[index], index as u32);
    }
    let tokens: Vec<(u32, u32)> =
        std::iter::from_fn(|| driver.pop_used().unwrap()).map(|done| (done.token, done.written)).collect();
    assert_eq!(tokens, [(2, 2), (0, 0), (3, 3), (1, 1)]);
    assert_eq!(driver.free_descriptors(), 8);
}

#[test]
fn indirect_requests_take_one_descriptor_of_the_ring() {
    let (mut driver, mut device) = pair::<4, 4>(false, true);
    let readable = [buffer(0xa000, 10), buffer(0xb000, 20)];
    let writable = [buffer(0xc000, 30), buffer(0xd000, 40)];
    for token in 0..4 {
        driver.add(&readable, &writable, token).unwrap();
    }
    assert_eq!(driver.free_descriptors(), 0, "four requests of four buffers in a ring of four");
    assert_eq!(driver.add(&readable, &[], 9), Err(QueueError::Full { needed: 1, free: 0 }));
    let chains = take_all(&mut device);
    assert_eq!(chains.len(), 4);
    for (_, segments) in &chains {
        let shown: Vec<(u64, u32, bool)> =
            segments.iter().map(|s| (s.buffer.address, s.buffer.length, s.writable)).collect();
        assert_eq!(shown, [(0xa000, 10, false), (0xb000, 20, false), (0xc000, 30, true), (0xd000, 40, true)]);
    }
    // The head descriptor points into the queue's own indirect tables.
    let head = chains[1].0;
    let memory = &device.memory;
    let descriptor = &memory.descriptors[usize::from(head)];
    assert_eq!(descriptor.flags.load(Ordering::Relaxed), DESC_F_INDIRECT);
    assert_eq!(descriptor.length.load(Ordering::Relaxed), 4 * 16);
    assert_eq!(
        descriptor.address.load(Ordering::Relaxed),
        BASE + (QueueMemory::<4, 4>::INDIRECT_OFFSET + usize::from(head) * 64) as u64
    );
    device.complete(head, 70);
    assert_eq!(driver.pop_used().unwrap().map(|done| done.written), Some(70));
    assert!(driver.fits(4));
    // Longer than an indirect table and than the ring: never fits.
    assert!(!driver.fits(5));
    assert_eq!(driver.add(&[buffer(0, 1); 5], &[], 5), Err(QueueError::TooManyBuffers { buffers: 5 }));
}

#[test]
fn without_indirect_a_chain_takes_one_descriptor_per_buffer() {
    let (mut driver, mut device) = pair::<4, 4>(false, false);
    driver.add(&[buffer(1, 1)], &[buffer(2, 2), buffer(3, 3)], 0).unwrap();
    assert_eq!(driver.free_descriptors(), 1);
    assert_eq!(driver.add(&[buffer(1, 1), buffer(2, 2)], &[], 1), Err(QueueError::Full { needed: 2, free: 1 }));
    assert_eq!(driver.add(&[], &[], 1), Err(QueueError::Empty));
    assert_eq!(driver.add(&[buffer(0, 1); 5], &[], 1), Err(QueueError::TooManyBuffers { buffers: 5 }));
    assert_eq!(take_all(&mut device)[0].1.len(), 3);
}

#[test]
fn event_index_batches_notifications() {
    let (mut driver, mut device) = pair::<16, 0>(true, false);
    // The device has not asked for anything yet: avail_event is 0, so the
    // first buffer (idx 0 -> 1) passes it.
    driver.add(&[buffer(1, 1)], &[], 0).unwrap();
    assert!(driver.should_notify(host_fence));
    // Nothing added since: no notification.
    assert!(!driver.should_notify(host_fence));
    // The device is busy: it has taken one and not asked again (avail_event
    // still 0), so a batch of five adds needs no notification.
    assert_eq!(take_all(&mut device).len(), 1);
    for token in 1..6 {
        driver.add(&[buffer(1, 1)], &[], token).unwrap();
    }
    assert!(!driver.should_notify(host_fence), "device did not ask to be notified");
    // The device drains, asks to be told of the next one, re-checks.
    assert_eq!(take_all(&mut device).len(), 5);
    assert!(device.enable_notifications(host_fence), "nothing pending after draining");
    // A batch of three: one notification for all.
    for token in 6..9 {
        driver.add(&[buffer(1, 1)], &[], token).unwrap();
    }
    assert!(driver.should_notify(host_fence));
    assert!(!driver.should_notify(host_fence));
    assert!(!device.enable_notifications(host_fence), "three pending: the device must not sleep");
}

#[test]
fn used_flag_suppresses_notifications_without_event_index() {
    let (mut driver, mut device) = pair::<8, 0>(false, false);
    device.disable_notifications();
    driver.add(&[buffer(1, 1)], &[], 0).unwrap();
    assert!(!driver.should_notify(host_fence));
    assert!(!device.enable_notifications(host_fence));
    driver.add(&[buffer(1, 1)], &[], 1).unwrap();
    assert!(driver.should_notify(host_fence));
}

#[test]
fn interrupts_follow_used_event_and_the_re_check_catches_a_race() {
    let (mut driver, mut device) = pair::<8, 0>(true, false);
    for token in 0..3 {
        driver.add(&[], &[buffer(1, 8)], token).unwrap();
    }
    let chains = take_all(&mut device);
    device.complete(chains[0].0, 1);
    // used_event is 0 (driver wants to hear of the first completion).
    assert!(device.should_interrupt(host_fence));
    assert_eq!(driver.pop_used().unwrap().map(|done| done.token), Some(0));
    // The driver polls now: no more interrupts.
    driver.disable_interrupts();
    device.complete(chains[1].0, 1);
    assert!(!device.should_interrupt(host_fence), "used_event stays at 1; idx 1 -> 2 passes nothing");
    // Before sleeping, the driver re-enables and re-checks: the completion
    // that slipped in is found, no interrupt needed for it.
    assert!(!driver.enable_interrupts(host_fence));
    assert_eq!(driver.pop_used().unwrap().map(|done| done.token), Some(1));
    assert!(driver.enable_interrupts(host_fence));
    device.complete(chains[2].0, 1);
    assert!(device.should_interrupt(host_fence));
}

#[test]
fn no_interrupt_flag_without_event_index() {
    let (mut driver, mut device) = pair::<8, 0>(false, false);
    driver.add(&[], &[buffer(1, 8)], 0).unwrap();
    driver.add(&[], &[buffer(1, 8)], 1).unwrap();
    let chains = take_all(&mut device);
    driver.disable_interrupts();
    device.complete(chains[0].0, 0);
    assert!(!device.should_interrupt(host_fence));
    assert!(!driver.enable_interrupts(host_fence));
    driver.pop_used().unwrap();
    assert!(driver.enable_interrupts(host_fence));
    device.complete(chains[1].0, 0);
    assert!(device.should_interrupt(host_fence));
}

#[test]
fn a_broken_device_is_an_error_not_a_panic() {
    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head = driver.add(&[], &[buffer(1, 100)], 7).unwrap();
    device.complete_raw(1000, 0);
    assert_eq!(driver.pop_used(), Err(QueueError::UnknownHead { id: 1000 }));

    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head2 = driver.add(&[], &[buffer(1, 100)], 7).unwrap();
    assert_eq!(head, head2);
    device.complete(head2.wrapping_add(1), 0);
    assert_eq!(driver.pop_used(), Err(QueueError::UnknownHead { id: u32::from(head2) + 1 }));

    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head = driver.add(&[buffer(1, 50)], &[buffer(1, 100)], 7).unwrap();
    device.complete(head, 101);
    assert_eq!(driver.pop_used(), Err(QueueError::OverlongWrite { written: 101, writable: 100 }));

    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head = driver.add(&[], &[buffer(1, 100)], 7).unwrap();
    device.complete(head, 1);
    device.complete(head, 1);
    assert_eq!(driver.pop_used(), Err(QueueError::UsedIndexAhead { claimed: 2, in_flight: 1 }));

    // The same chain completed twice, one at a time: the second is unknown.
    let (mut driver, mut device) = pair::<8, 0>(false, false);
    let head = driver.add(&[], &[buffer(1, 100)], 7).unwrap();
    driver.add(&[], &[buffer(1, 100)], 8).unwrap();
    device.complete(head, 1);
    assert_eq!(driver.pop_used().unwrap().map(|done| done.token), Some(7));
    device.complete(head, 1);
    assert_eq!(driver.pop_used(), Err(QueueError::UnknownHead { id: u32::from(head) }));
}

#[test]
fn reset_hands_back_every_token_and_starts_over() {
    let (mut driver, mut device) = pair::<8, 2>(true, true);
    for token in 0..5 {
        driver.add(&[buffer(1, 1)], &[buffer(2, 2)], token).unwrap();
    }
    take_all(&mut device);
    let mut dropped = Vec::new();
    driver.reset(|token| dropped.push(token));
    dropped.sort();
    assert_eq!(dropped, [0, 1, 2, 3, 4]);
    assert_eq!(driver.free_descriptors(), 8);
    assert_eq!(driver.in_flight(), 0);
    // A fresh device side sees an empty queue, then the new request.
    let mut device = Device::new(Arc::clone(&device.memory), BASE, true);
    assert_eq!(device.next_available(), None);
    let head = driver.add(&[], &[buffer(3, 3)], 9).unwrap();
    assert!(driver.should_notify(host_fence));
    assert_eq!(take_all(&mut device).len(), 1);
    device.complete(head, 3);
    assert_eq!(driver.pop_used(), Ok(Some(Completion { token: 9, written: 3 })));
}

#[test]
fn device_rejects_chains_it_cannot_follow() {
    let memory = Arc::new(QueueMemory::<4, 2>::new());
    let device = Device::new(Arc::clone(&memory), BASE, false);
    let mut segments = [Segment { buffer: buffer(0, 0), writable: false }; 8];
    // A loop: 0 -> 1 -> 0.
    memory.descriptors[0].store(1, 1, DESC_F_NEXT, 1);
    memory.descriptors[1].store(1, 1, DESC_F_NEXT, 0);
    assert_eq!(device.read_chain(0, &mut segments), Err(ChainError::TooLong));
    memory.descriptors[0].store(1, 1, DESC_F_NEXT, 9);
    assert_eq!(device.read_chain(0, &mut segments), Err(ChainError::IndexOutOfRange(9)));
    memory.descriptors[0].store(1, 1, DESC_F_WRITE | DESC_F_NEXT, 1);
    memory.descriptors[1].store(1, 1, 0, 0);
    assert_eq!(device.read_chain(0, &mut segments), Err(ChainError::ReadableAfterWritable));
    memory.descriptors[0].store(0xdead_0000, 32, DESC_F_INDIRECT, 0);
    assert_eq!(device.read_chain(0, &mut segments), Err(ChainError::ForeignIndirectTable(0xdead_0000)));
    assert_eq!(device.read_chain(4, &mut segments), Err(ChainError::IndexOutOfRange(4)));
}

/// One step of a random session between the driver and the fake device.
#[derive(Debug, Clone)]
enum Step {
    /// The driver adds a request of this many readable and writable buffers.
    Add { readable: usize, writable: usize },
    /// The device takes what is available and completes the `n`-th pending chain (modulo).
    Complete { pick: usize, written_share: u8 },
    /// The driver takes every completion.
    Drain,
    /// The driver decides whether to notify; the device re-arms notifications.
    Notify,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..4, 0usize..4).prop_map(|(readable, writable)| Step::Add { readable, writable }),
        (any::<usize>(), any::<u8>()).prop_map(|(pick, written_share)| Step::Complete { pick, written_share }),
        Just(Step::Drain),
        Just(Step::Notify),
    ]
}

/// Runs `steps` on a queue of 8 with 2-entry indirect tables and checks,
/// after every step: descriptors free + held = 8; every completion hands
/// back its own token once, with its own length; the device sees each
/// request's buffers exactly as added; a request made available while the
/// device waits is always notified.
fn run_session(steps: &[Step], event_index: bool, indirect: bool) -> Result<(), TestCaseError> {
    const N: usize = 8;
    let (mut driver, mut device) = pair::<N, 2>(event_index, indirect);
    let mut next_token = 0u32;
    // token -> (buffers as added, writable bytes, descriptors it takes)
    let mut outstanding: HashMap<u32, (Vec<Segment>, u64, usize)> = HashMap::new();
    // Chains the device has read and not completed: (head, token).
    let mut pending: Vec<(u16, u32)> = Vec::new();
    // token of each head currently held by the device, for lookup.
    let mut head_tokens: HashMap<u16, u32> = HashMap::new();
    let mut completed: HashMap<u32, u32> = HashMap::new();
    let mut device_waiting = device.enable_notifications(host_fence);
    for step in steps {
        match *step {
            Step::Add { readable, writable } => {
                let token = next_token;
                let make = |count: usize, base: u64, write: bool| -> Vec<Segment> {
                    (0..count)
                        .map(|index| Segment {
                            buffer: buffer(base + index as u64 * 0x100, 16 + index as u32),
                            writable: write,
                        })
                        .collect()
                };
                let address = u64::from(token) << 16;
                let readable = make(readable, address, false);
                let writable = make(writable, address + 0x8000, true);
                let fits = driver.fits(readable.len() + writable.len());
                let result = driver.add(
                    &readable.iter().map(|s| s.buffer).collect::<Vec<_>>(),
                    &writable.iter().map(|s| s.buffer).collect::<Vec<_>>(),
                    token,
                );
                match result {
                    Ok(head) => {
                        prop_assert!(fits);
                        next_token += 1;
                        let count = readable.len() + writable.len();
                        let needed =
                            if indirect && count > 1 && count <= 2 { 1 } else { readable.len() + writable.len() };
                        let bytes = writable.iter().map(|s| u64::from(s.buffer.length)).sum();
                        let mut all = readable;
                        all.extend(writable);
                        outstanding.insert(token, (all, bytes, needed));
                        prop_assert!(!head_tokens.contains_key(&head), "head {head} handed out twice");
                        head_tokens.insert(head, token);
                    }
                    Err(QueueError::Empty) => prop_assert_eq!(readable.len() + writable.len(), 0),
                    Err(QueueError::Full { .. }) => prop_assert!(!fits),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            Step::Complete { pick, written_share } => {
                // The device polls: it is busy, not waiting for a notification.
                device_waiting = false;
                while let Some(head) = device.next_available() {
                    let mut segments = [Segment { buffer: buffer(0, 0), writable: false }; 8];
                    let count =
                        device.read_chain(head, &mut segments).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    let token = head_tokens[&head];
                    prop_assert_eq!(&segments[..count], &outstanding[&token].0[..]);
                    pending.push((head, token));
                }
                if !pending.is_empty() {
                    let (head, token) = pending.remove(pick % pending.len());
                    let writable = outstanding[&token].1;
                    let written = (writable * u64::from(written_share) / 255) as u32;
                    device.complete(head, written);
                    completed.insert(token, written);
                    device.should_interrupt(host_fence);
                }
            }
            Step::Drain => {
                while let Some(done) = driver.pop_used().map_err(|e| TestCaseError::fail(format!("{e:?}")))? {
                    prop_assert_eq!(completed.remove(&done.token), Some(done.written), "token handed back once");
                    let (_, _, _) = outstanding.remove(&done.token).expect("outstanding");
                    head_tokens.retain(|_, token| *token != done.token);
                }
            }
            Step::Notify => {
                let notified = driver.should_notify(host_fence);
                if notified {
                    device_waiting = false;
                }
                if device_waiting {
                    prop_assert_eq!(device.next_available(), None, "available while the device waits, never notified");
                }
                // The device drains then waits again.
                while let Some(head) = device.next_available() {
                    let mut segments = [Segment { buffer: buffer(0, 0), writable: false }; 8];
                    let count =
                        device.read_chain(head, &mut segments).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    let token = head_tokens[&head];
                    prop_assert_eq!(&segments[..count], &outstanding[&token].0[..]);
                    pending.push((head, token));
                }
                device_waiting = device.enable_notifications(host_fence);
            }
        }
        let held: usize = outstanding.values().map(|(_, _, needed)| needed).sum();
        prop_assert_eq!(driver.free_descriptors() + held, N);
        prop_assert_eq!(driver.in_flight(), outstanding.len());
    }
    Ok(())
}

proptest! {
    #[test]
    fn bookkeeping_holds_over_random_sessions(
        steps in proptest::collection::vec(step(), 1..200),
        event_index in any::<bool>(),
        indirect in any::<bool>(),
    ) {
        run_session(&steps, event_index, indirect)?;
    }
}

#[test]
fn impossible_queue_sizes_are_refused() {
    // What QEMU offers (virtio-rng: 8; virtio-net/blk: 256, 1024) for a driver needing 8.
    for maximum in [8, 256, 1024, MAX_QUEUE_SIZE as u32] {
        assert_eq!(check_queue_size(maximum, 8), Ok(()), "maximum {maximum}");
    }
    // Not a power of two: the driver still writes its own size (8).
    assert_eq!(check_queue_size(100, 8), Ok(()));
    assert_eq!(check_queue_size(0, 8), Err(QueueSizeError::Unavailable));
    for maximum in [1, 2, 7] {
        assert_eq!(check_queue_size(maximum, 8), Err(QueueSizeError::TooSmall), "maximum {maximum}");
    }
    // Garbled registers: over the spec's largest split queue.
    for maximum in [MAX_QUEUE_SIZE as u32 + 1, 65535, 65536, 0x8000_0001, u32::MAX] {
        assert_eq!(check_queue_size(maximum, 8), Err(QueueSizeError::Impossible), "maximum {maximum}");
    }
    // The largest queue the driver can ask for.
    assert_eq!(check_queue_size(MAX_QUEUE_SIZE as u32, MAX_QUEUE_SIZE), Ok(()));
    assert_eq!(check_queue_size(MAX_QUEUE_SIZE as u32 - 1, MAX_QUEUE_SIZE), Err(QueueSizeError::TooSmall));
}
