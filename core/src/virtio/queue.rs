//! The split virtqueue (virtio 1.2, section 2.7): ring memory shared with a device, and both sides' bookkeeping.
//!
//! # Why our own queue
//!
//! `virtio-drivers` 0.13 has a `VirtQueue`, but it owns its memory through a
//! global `Hal` (no per-CPU placement), keeps no MSI-X vector per queue,
//! and its net driver spins in `send` until the device takes the packet; a
//! dedicated-CPU kernel needs the queue to be a plain value its owner CPU
//! holds, completions by token, and the notification decision separate from
//! adding (to batch). The `virtio-spec` crate describes the same structures
//! with volatile references, which loom cannot model; here every field the
//! device shares is an atomic, so the same code runs in the kernel, in the
//! host tests against [`Device`] (a fake device), and under loom.
//!
//! # Memory
//!
//! [`QueueMemory`] holds the three areas the spec names (descriptor table,
//! driver area = available ring, device area = used ring) plus one indirect
//! table of `I` descriptors per descriptor slot. It is `repr(C)` with the
//! spec's alignments (16, 2 and 4 bytes; the whole block on a page), so the
//! device finds each area at `base + offset`, where `base` is the block's
//! physical address (in the kernel, its address: RAM is identity mapped).
//! Every shared field is an atomic of the spec's width (same size and
//! alignment as the plain integer, x86-64 is little-endian like virtio 1.x):
//! the compiler may not tear, cache or invent accesses to memory a device
//! reads and writes behind its back.
//!
//! # Orderings (section 2.7.13 and the spec's barriers)
//!
//! - The driver writes descriptors and the available-ring slot with
//!   `Relaxed` stores, then publishes `avail.idx` with `Release`: a device
//!   that reads the new index (`Acquire`) sees the descriptors. The device
//!   side mirrors this for used elements and `used.idx`.
//! - Notification suppression is a store-then-load hand-shake on both sides
//!   (driver: publish `avail.idx`, then read `avail_event`; device: publish
//!   `avail_event`, then re-read `avail.idx`). x86 lets a load pass an
//!   earlier store to another address, so each side puts a full fence
//!   between them; without it both can miss each other and a request waits
//!   for a notification nobody sends (the loom model in `core/tests/loom.rs`
//!   finds exactly that when a fence is left out). The fence is a parameter,
//!   as in [`crate::wake`]: `fence(SeqCst)` is a locked instruction on
//!   `x86_64-unknown-none`, the kernel passes `mfence`.
//!
//! # Never trusting the device
//!
//! The driver keeps its own copy of every chain (private links, lengths,
//! tokens) and never reads a descriptor back: a device can only name a head
//! in a used element, and a head that is not in flight, a length longer
//! than the buffers it was given, or a used index that runs ahead of what
//! was made available is a [`QueueError`], after which the caller resets
//! the device.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use core::fmt;
use core::ops::Deref;

/// `VIRTQ_DESC_F_NEXT` (section 2.7.5): the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable (else device-readable).
pub const DESC_F_WRITE: u16 = 2;
/// `VIRTQ_DESC_F_INDIRECT` (section 2.7.5.3): the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// `VIRTQ_AVAIL_F_NO_INTERRUPT` (section 2.7.6): the driver asks for no interrupts (a hint).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `VIRTQ_USED_F_NO_NOTIFY` (section 2.7.8): the device asks for no notifications (a hint).
pub const USED_F_NO_NOTIFY: u16 = 1;
/// The largest split queue (section 2.7: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: usize = 32768;
/// Why a device's queue cannot take the driver's `needed` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueSizeError {
    /// The device's maximum is 0: the queue does not exist.
    Unavailable,
    /// The device claims more than a split queue can have (over
    /// `MAX_QUEUE_SIZE`): it is broken.
    Impossible,
    /// The device allows fewer entries than the driver needs.
    TooSmall,
}

/// Whether a queue whose device maximum (`QueueNumMax`, `queue_size`) is
/// `maximum` can be set up with `needed` entries (`needed` is the driver's
/// power-of-two size, at most `MAX_QUEUE_SIZE`). A maximum that is not a
/// power of two is fine: the driver writes its own smaller size.
pub fn check_queue_size(maximum: u32, needed: usize) -> Result<(), QueueSizeError> {
    if maximum == 0 {
        return Err(QueueSizeError::Unavailable);
    }
    if maximum as usize > MAX_QUEUE_SIZE {
        return Err(QueueSizeError::Impossible);
    }
    if (maximum as usize) < needed {
        return Err(QueueSizeError::TooSmall);
    }
    Ok(())
}

/// Bytes in one descriptor (section 2.7.5).
pub const DESCRIPTOR_BYTES: u32 = 16;

/// The spec's `vring_need_event` (section 2.7.10): whether moving an index
/// from `old` to `new` passes `event` (the other side asked to hear when
/// the index goes past `event`).
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// What the other side wrote to suppress our signal (notification or interrupt).
struct Suppression<'a> {
    /// `avail_event` or `used_event`.
    event: &'a AtomicU16,
    /// `used.flags` or `avail.flags`.
    flags: &'a AtomicU16,
    /// `USED_F_NO_NOTIFY` or `AVAIL_F_NO_INTERRUPT`.
    flag: u16,
}

impl Suppression<'_> {
    /// Whether moving our index from `old` to `new` must be signalled:
    /// after `full_fence` (our index store before this load), by event-idx
    /// or by the flag.
    fn other_side_wants(&self, event_index: bool, old: u16, new: u16, full_fence: impl FnOnce()) -> bool {
        if old == new {
            return false;
        }
        full_fence();
        if event_index {
            need_event(self.event.load(Ordering::Relaxed), new, old)
        } else {
            self.flags.load(Ordering::Relaxed) & self.flag == 0
        }
    }
}

/// One descriptor (`struct virtq_desc`, section 2.7.5): 16 bytes, written by the driver only.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Descriptor {
    /// `addr`: physical address of the buffer.
    pub address: AtomicU64,
    /// `len`: its length in bytes.
    pub length: AtomicU32,
    /// `flags`: [`DESC_F_NEXT`], [`DESC_F_WRITE`], [`DESC_F_INDIRECT`].
    pub flags: AtomicU16,
    /// `next`: the next descriptor of the chain, when [`DESC_F_NEXT`] is set.
    pub next: AtomicU16,
}

impl Descriptor {
    fn new() -> Self {
        Self {
            address: AtomicU64::new(0),
            length: AtomicU32::new(0),
            flags: AtomicU16::new(0),
            next: AtomicU16::new(0),
        }
    }

    fn store(&self, address: u64, length: u32, flags: u16, next: u16) {
        self.address.store(address, Ordering::Relaxed);
        self.length.store(length, Ordering::Relaxed);
        self.flags.store(flags, Ordering::Relaxed);
        self.next.store(next, Ordering::Relaxed);
    }
}

/// The driver area (`struct virtq_avail`, section 2.7.6), written by the driver.
#[repr(C, align(2))]
#[derive(Debug)]
pub struct AvailableRing<const N: usize> {
    /// `flags`: [`AVAIL_F_NO_INTERRUPT`].
    pub flags: AtomicU16,
    /// `idx`: where the driver puts the next entry (modulo `N`); counts up forever.
    pub index: AtomicU16,
    /// `ring`: heads of the chains made available.
    pub ring: [AtomicU16; N],
    /// `used_event` (with `VIRTIO_F_EVENT_IDX`): interrupt me when `used.idx` passes this.
    pub used_event: AtomicU16,
}

/// One used element (`struct virtq_used_elem`, section 2.7.8).
#[repr(C)]
#[derive(Debug)]
pub struct UsedElement {
    /// `id`: the head of the chain the device is done with.
    pub id: AtomicU32,
    /// `len`: bytes the device wrote into the chain's writable buffers.
    pub length: AtomicU32,
}

/// The device area (`struct virtq_used`, section 2.7.8), written by the device.
#[repr(C, align(4))]
#[derive(Debug)]
pub struct UsedRing<const N: usize> {
    /// `flags`: [`USED_F_NO_NOTIFY`].
    pub flags: AtomicU16,
    /// `idx`: where the device puts the next element (modulo `N`); counts up forever.
    pub index: AtomicU16,
    /// `ring`: the chains the device is done with.
    pub ring: [UsedElement; N],
    /// `avail_event` (with `VIRTIO_F_EVENT_IDX`): notify me when `avail.idx` passes this.
    pub avail_event: AtomicU16,
}

/// The memory of one split queue of `N` entries with an indirect table of `I` descriptors per entry.
///
/// Shared with the device from the moment its addresses are given to the
/// transport until the device is reset. Allocate it on the owner CPU (the
/// kernel: `Box::new_zeroed`, all-zero is a valid empty queue).
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct QueueMemory<const N: usize, const I: usize> {
    /// The descriptor table (section 2.7.5).
    pub descriptors: [Descriptor; N],
    /// The driver area.
    pub available: AvailableRing<N>,
    /// The device area.
    pub used: UsedRing<N>,
    /// `indirect[d]` is the indirect table used when descriptor `d` heads an indirect chain.
    pub indirect: [[Descriptor; I]; N],
}

impl<const N: usize, const I: usize> QueueMemory<N, I> {
    /// Offset of the descriptor table in the block, in bytes.
    pub const DESCRIPTORS_OFFSET: usize = core::mem::offset_of!(Self, descriptors);
    /// Offset of the driver area (available ring).
    pub const AVAILABLE_OFFSET: usize = core::mem::offset_of!(Self, available);
    /// Offset of the device area (used ring).
    pub const USED_OFFSET: usize = core::mem::offset_of!(Self, used);
    /// Offset of the indirect tables.
    pub const INDIRECT_OFFSET: usize = core::mem::offset_of!(Self, indirect);
    /// Bytes of one indirect table.
    pub const INDIRECT_TABLE_BYTES: usize = core::mem::size_of::<[Descriptor; I]>();

    /// An empty queue (all zero). The kernel allocates it zeroed instead,
    /// to keep a large block off the stack.
    pub fn new() -> Self {
        Self {
            descriptors: core::array::from_fn(|_| Descriptor::new()),
            available: AvailableRing {
                flags: AtomicU16::new(0),
                index: AtomicU16::new(0),
                ring: core::array::from_fn(|_| AtomicU16::new(0)),
                used_event: AtomicU16::new(0),
            },
            used: UsedRing {
                flags: AtomicU16::new(0),
                index: AtomicU16::new(0),
                ring: core::array::from_fn(|_| UsedElement { id: AtomicU32::new(0), length: AtomicU32::new(0) }),
                avail_event: AtomicU16::new(0),
            },
            indirect: core::array::from_fn(|_| core::array::from_fn(|_| Descriptor::new())),
        }
    }

    /// Puts every field back to zero, as after a device reset.
    fn clear(&self) {
        for descriptor in self.descriptors.iter().chain(self.indirect.iter().flatten()) {
            descriptor.store(0, 0, 0, 0);
        }
        let available = &self.available;
        for field in [&available.flags, &available.index, &available.used_event].into_iter().chain(&available.ring) {
            field.store(0, Ordering::Relaxed);
        }
        for field in [&self.used.flags, &self.used.index, &self.used.avail_event] {
            field.store(0, Ordering::Relaxed);
        }
        for element in &self.used.ring {
            element.id.store(0, Ordering::Relaxed);
            element.length.store(0, Ordering::Relaxed);
        }
    }
}

impl<const N: usize, const I: usize> Default for QueueMemory<N, I> {
    fn default() -> Self {
        Self::new()
    }
}

/// The three addresses a transport gives the device (section 4.1.4.3 `queue_desc`, `queue_driver`, `queue_device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Physical address of the descriptor table.
    pub descriptors: u64,
    /// Physical address of the driver area (available ring).
    pub driver: u64,
    /// Physical address of the device area (used ring).
    pub device: u64,
}

/// A buffer given to the device: where it is and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Physical address (the kernel's address of RAM: identity mapped).
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
}

/// A chain the device is done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion<T> {
    /// What the driver gave with the request.
    pub token: T,
    /// Bytes the device says it wrote into the writable buffers (checked
    /// to be no more than their total length).
    pub written: u32,
}

/// What went wrong with a virtqueue: a request that cannot be added, or a device breaking the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// A request with no buffer at all.
    Empty,
    /// Not enough free descriptors for the request now (retry after completions).
    Full {
        /// Descriptors the request needs.
        needed: usize,
        /// Descriptors free.
        free: usize,
    },
    /// A request with more buffers than the queue could ever hold.
    TooManyBuffers {
        /// Buffers in the request.
        buffers: usize,
    },
    /// The used ring names a chain that is not in flight (the device is broken: reset it).
    UnknownHead {
        /// The `id` the device wrote.
        id: u32,
    },
    /// The device says it wrote more than the chain's writable buffers hold (reset it).
    OverlongWrite {
        /// The `len` the device wrote.
        written: u32,
        /// The writable bytes of the chain.
        writable: u64,
    },
    /// `used.idx` moved further than the number of requests in flight (reset it).
    UsedIndexAhead {
        /// Entries the device claims to have completed.
        claimed: u16,
        /// Requests in flight.
        in_flight: u16,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => formatter.write_str("virtqueue request without buffers"),
            Self::Full { needed, free } => {
                write!(formatter, "virtqueue full: request needs {needed} descriptors, {free} free")
            }
            Self::TooManyBuffers { buffers } => write!(formatter, "virtqueue request of {buffers} buffers never fits"),
            Self::UnknownHead { id } => write!(formatter, "device completed descriptor {id}, which is not in flight"),
            Self::OverlongWrite { written, writable } => {
                write!(formatter, "device claims {written} bytes written into {writable} writable bytes")
            }
            Self::UsedIndexAhead { claimed, in_flight } => {
                write!(formatter, "device completed {claimed} requests with only {in_flight} in flight")
            }
        }
    }
}

/// How far behind `last_used` a disabled `used_event` is put: half the
/// 16-bit index space, beyond any window of completions (at most `N`).
const SUPPRESSED_DISTANCE: u16 = 0x8000;

/// Marks the end of the private free list.
const END: u16 = u16::MAX;

/// The driver's side of one split queue: what it added, what is in flight, when to notify.
///
/// Owned by the device's owner CPU (it is `!Sync` through `&mut self`
/// methods; the kernel keeps it inside the device's service). `M` is how
/// the memory is held (`Box` in the kernel, `Arc` in tests), `T` the token
/// handed back with each completion.
pub struct Driver<M, T, const N: usize, const I: usize>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    memory: M,
    /// Physical address of `memory`.
    base: u64,
    /// Whether `VIRTIO_F_EVENT_IDX` was negotiated.
    event_index: bool,
    /// Whether `VIRTIO_F_INDIRECT_DESC` was negotiated (and `I > 0`).
    indirect: bool,
    /// First free descriptor, or [`END`].
    free_head: u16,
    /// Descriptors on the free list.
    free_count: u16,
    /// `link[d]`: next free descriptor while `d` is free; next descriptor of
    /// the chain while `d` is in one. Private: never read back from the device's memory.
    link: [u16; N],
    /// `chain_length[head]`: descriptors (in the table) the chain at `head` holds.
    chain_length: [u16; N],
    /// `writable[head]`: total bytes of the chain's device-writable buffers.
    writable: [u64; N],
    /// `tokens[head]` is `Some` exactly while the chain at `head` is in flight.
    tokens: [Option<T>; N],
    /// Requests in flight.
    in_flight: u16,
    /// The driver's copy of `avail.idx`.
    available_index: u16,
    /// `avail.idx` when the last notification decision was made.
    notified_index: u16,
    /// Next `used.idx` slot to take.
    last_used: u16,
    /// Whether the driver wants interrupts (what [`Self::enable_interrupts`] set last).
    interrupts: bool,
}

impl<M, T, const N: usize, const I: usize> Driver<M, T, N, I>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    /// Takes over `memory` (at physical address `base`) as an empty queue.
    ///
    /// `event_index` and `indirect` say which of `VIRTIO_F_EVENT_IDX` and
    /// `VIRTIO_F_INDIRECT_DESC` were negotiated. Interrupts start enabled.
    /// The memory is cleared: give it to the device only after this.
    pub fn new(memory: M, base: u64, event_index: bool, indirect: bool) -> Self {
        const {
            assert!(N.is_power_of_two() && N <= MAX_QUEUE_SIZE, "a split queue has a power-of-two size up to 32768");
        }
        memory.clear();
        let mut driver = Self {
            memory,
            base,
            event_index,
            indirect: indirect && I > 0,
            free_head: END,
            free_count: 0,
            link: [END; N],
            chain_length: [0; N],
            writable: [0; N],
            tokens: core::array::from_fn(|_| None),
            in_flight: 0,
            available_index: 0,
            notified_index: 0,
            last_used: 0,
            interrupts: true,
        };
        driver.rebuild_free_list();
        driver
    }

    /// The addresses to give the transport.
    pub fn addresses(&self) -> QueueAddresses {
        let at = |offset: usize| self.base.wrapping_add(offset as u64);
        QueueAddresses {
            descriptors: at(QueueMemory::<N, I>::DESCRIPTORS_OFFSET),
            driver: at(QueueMemory::<N, I>::AVAILABLE_OFFSET),
            device: at(QueueMemory::<N, I>::USED_OFFSET),
        }
    }

    /// The queue size, `N`.
    pub const fn size(&self) -> u16 {
        // N <= 32768, checked in `new`.
        N as u16
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        usize::from(self.free_count)
    }

    /// Requests added and not yet completed.
    pub fn in_flight(&self) -> usize {
        usize::from(self.in_flight)
    }

    /// Whether a request of `buffers` buffers can be added now.
    pub fn fits(&self, buffers: usize) -> bool {
        self.descriptors_needed(buffers).is_some_and(|needed| needed <= self.free_descriptors())
    }

    /// Descriptors a request of `buffers` buffers takes, or `None` if it can never fit.
    fn descriptors_needed(&self, buffers: usize) -> Option<usize> {
        if buffers == 0 {
            None
        } else if self.indirect && buffers > 1 && buffers <= I {
            Some(1)
        } else if buffers <= N {
            Some(buffers)
        } else {
            None
        }
    }

    /// Adds a request: `readable` buffers (the device reads them) then
    /// `writable` ones (the device writes them), with `token` to be handed
    /// back on completion. Returns the chain's head.
    ///
    /// Several buffers go through one indirect table when that was
    /// negotiated and they fit (one descriptor of the ring used), else as a
    /// chain. The request is visible to the device at once; whether to
    /// notify it is decided by [`Self::should_notify`], once for a batch.
    pub fn add(&mut self, readable: &[Buffer], writable: &[Buffer], token: T) -> Result<u16, QueueError> {
        let buffers = readable.len() + writable.len();
        let needed = match self.descriptors_needed(buffers) {
            Some(needed) => needed,
            None if buffers == 0 => return Err(QueueError::Empty),
            None => return Err(QueueError::TooManyBuffers { buffers }),
        };
        if needed > self.free_descriptors() {
            return Err(QueueError::Full { needed, free: self.free_descriptors() });
        }
        let all = readable.iter().map(|buffer| (buffer, 0)).chain(writable.iter().map(|buffer| (buffer, DESC_F_WRITE)));
        let head = self.free_head;
        let memory = &*self.memory;
        if needed == 1 && buffers > 1 {
            // One descriptor pointing at this head's indirect table.
            let table = &memory.indirect[usize::from(head)];
            for (index, (buffer, write)) in all.enumerate() {
                // index < buffers <= I <= N <= 32768: fits in u16.
                let next = index as u16 + 1;
                let more = if index + 1 < buffers { DESC_F_NEXT } else { 0 };
                table[index].store(buffer.address, buffer.length, write | more, if more != 0 { next } else { 0 });
            }
            let table_address = self.base.wrapping_add(
                (QueueMemory::<N, I>::INDIRECT_OFFSET + usize::from(head) * QueueMemory::<N, I>::INDIRECT_TABLE_BYTES)
                    as u64,
            );
            // buffers <= I <= 32768: the table length fits in u32.
            memory.descriptors[usize::from(head)].store(
                table_address,
                buffers as u32 * DESCRIPTOR_BYTES,
                DESC_F_INDIRECT,
                0,
            );
            self.free_head = self.link[usize::from(head)];
            self.link[usize::from(head)] = END;
        } else {
            let mut current = head;
            for (index, (buffer, write)) in all.enumerate() {
                let next = self.link[usize::from(current)];
                let last = index + 1 == buffers;
                let (flags, next_field) = if last { (write, 0) } else { (write | DESC_F_NEXT, next) };
                memory.descriptors[usize::from(current)].store(buffer.address, buffer.length, flags, next_field);
                if last {
                    self.free_head = next;
                    self.link[usize::from(current)] = END;
                } else {
                    current = next;
                }
            }
        }
        // needed <= free_count <= N.
        self.free_count -= needed as u16;
        self.chain_length[usize::from(head)] = needed as u16;
        self.writable[usize::from(head)] = writable.iter().map(|buffer| u64::from(buffer.length)).sum();
        self.tokens[usize::from(head)] = Some(token);
        self.in_flight += 1;
        memory.available.ring[usize::from(self.available_index) % N].store(head, Ordering::Relaxed);
        self.available_index = self.available_index.wrapping_add(1);
        // Release: the descriptors and the ring slot above are visible to
        // a device that reads this index (section 2.7.13.3).
        memory.available.index.store(self.available_index, Ordering::Release);
        Ok(head)
    }

    /// Whether the device must be notified of what was added since the
    /// last call (`virtqueue_kick_prepare`): one decision for a batch.
    ///
    /// `full_fence` orders the `avail.idx` store before the read of the
    /// device's suppression (`avail_event` or `USED_F_NO_NOTIFY`), see the
    /// module doc.
    pub fn should_notify(&mut self, full_fence: impl FnOnce()) -> bool {
        let old = core::mem::replace(&mut self.notified_index, self.available_index);
        let used = &self.memory.used;
        let suppression = Suppression { event: &used.avail_event, flags: &used.flags, flag: USED_F_NO_NOTIFY };
        suppression.other_side_wants(self.event_index, old, self.available_index, full_fence)
    }

    /// Whether the device has completed something not yet taken.
    pub fn has_used(&self) -> bool {
        self.memory.used.index.load(Ordering::Acquire) != self.last_used
    }

    /// Takes the next completion, if any.
    ///
    /// An error means the device broke the protocol; the queue is then in
    /// an unknown state: reset the device and [`Self::reset`] the queue.
    pub fn pop_used(&mut self) -> Result<Option<Completion<T>>, QueueError> {
        // Acquire: the used element and the device's writes into the
        // buffers are visible once we see the index (section 2.7.13.3.1).
        let used_index = self.memory.used.index.load(Ordering::Acquire);
        let claimed = used_index.wrapping_sub(self.last_used);
        if claimed == 0 {
            return Ok(None);
        }
        if claimed > self.in_flight {
            return Err(QueueError::UsedIndexAhead { claimed, in_flight: self.in_flight });
        }
        let element = &self.memory.used.ring[usize::from(self.last_used) % N];
        let id = element.id.load(Ordering::Relaxed);
        let written = element.length.load(Ordering::Relaxed);
        let head = match usize::try_from(id) {
            Ok(head) if head < N && self.tokens[head].is_some() => head,
            _ => return Err(QueueError::UnknownHead { id }),
        };
        if u64::from(written) > self.writable[head] {
            return Err(QueueError::OverlongWrite { written, writable: self.writable[head] });
        }
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_index && self.interrupts {
            // Interrupt again only once the device passes what we took
            // (Linux's `virtqueue_get_buf`); the re-check before sleeping
            // is `enable_interrupts`' job.
            self.memory.available.used_event.store(self.last_used, Ordering::Relaxed);
        }
        let token = self.tokens[head].take();
        self.free_chain(head);
        self.in_flight -= 1;
        // `tokens[head]` was checked to be `Some` above.
        Ok(token.map(|token| Completion { token, written }))
    }

    /// Asks the device for no interrupts (while the owner polls).
    ///
    /// With event-idx the device already stops once it passes
    /// `used_event`, which is no longer moved; without it the
    /// `AVAIL_F_NO_INTERRUPT` flag is a hint the device may ignore.
    pub fn disable_interrupts(&mut self) {
        self.interrupts = false;
        if self.event_index {
            // The device interrupts when `used.idx` moves across
            // `used_event`; put it half the index space behind what we
            // took, where no batch of at most `N` completions reaches
            // (Linux writes 0 for the same purpose).
            self.memory.available.used_event.store(self.last_used.wrapping_sub(SUPPRESSED_DISTANCE), Ordering::Relaxed);
        } else {
            self.memory.available.flags.store(AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
        }
    }

    /// Asks the device to interrupt on the next completion, then re-checks:
    /// returns `true` if nothing is pending (safe to wait for the
    /// interrupt), `false` if completions arrived meanwhile (take them first).
    pub fn enable_interrupts(&mut self, full_fence: impl FnOnce()) -> bool {
        self.interrupts = true;
        if self.event_index {
            self.memory.available.used_event.store(self.last_used, Ordering::Relaxed);
        } else {
            self.memory.available.flags.store(0, Ordering::Relaxed);
        }
        // Store then load: without the fence the device's new `used.idx`
        // and our request can cross, and we sleep on a completion that
        // will never interrupt.
        full_fence();
        !self.has_used()
    }

    /// Forgets every request after a device reset, handing each token back
    /// to `dropped`, and clears the memory so the queue can be given to the
    /// device again (at the same addresses).
    pub fn reset(&mut self, mut dropped: impl FnMut(T)) {
        for token in self.tokens.iter_mut().filter_map(Option::take) {
            dropped(token);
        }
        self.memory.clear();
        self.in_flight = 0;
        self.available_index = 0;
        self.notified_index = 0;
        self.last_used = 0;
        self.interrupts = true;
        self.rebuild_free_list();
    }

    /// Puts every descriptor on the free list, in order.
    fn rebuild_free_list(&mut self) {
        for (index, link) in self.link.iter_mut().enumerate() {
            // index < N <= 32768.
            *link = if index + 1 < N { index as u16 + 1 } else { END };
        }
        self.free_head = 0;
        self.free_count = N as u16;
    }

    /// Returns the chain at `head` to the free list (from the private links).
    fn free_chain(&mut self, head: usize) {
        let mut last = head;
        for _ in 1..self.chain_length[head] {
            last = usize::from(self.link[last]);
        }
        self.link[last] = self.free_head;
        // head < N <= 32768.
        self.free_head = head as u16;
        self.free_count += self.chain_length[head];
        self.chain_length[head] = 0;
    }
}

impl<M, T, const N: usize, const I: usize> fmt::Debug for Driver<M, T, N, I>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Driver")
            .field("size", &N)
            .field("base", &format_args!("{:#x}", self.base))
            .field("in_flight", &self.in_flight)
            .field("free", &self.free_count)
            .field("available_index", &self.available_index)
            .field("last_used", &self.last_used)
            .finish()
    }
}

/// One buffer of a chain, as the device reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The buffer.
    pub buffer: Buffer,
    /// Whether the device may write it.
    pub writable: bool,
}

/// A chain the device could not follow (a driver bug, or a test planting one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A descriptor index at or beyond the queue size.
    IndexOutOfRange(u16),
    /// More descriptors than the queue holds (a loop), or than the output has room for.
    TooLong,
    /// An indirect descriptor whose table is not one of the queue's indirect tables.
    ForeignIndirectTable(u64),
    /// A readable buffer after a writable one (section 2.7.4.2).
    ReadableAfterWritable,
}

/// The device's side of one split queue, for fake devices and models (the
/// kernel never runs it; a VMM does).
///
/// It resolves only the queue's own indirect tables; buffer addresses are
/// handed to the caller as they are.
pub struct Device<M, const N: usize, const I: usize>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    memory: M,
    base: u64,
    event_index: bool,
    /// Next `avail.idx` slot to take.
    last_available: u16,
    /// The device's copy of `used.idx`.
    used_index: u16,
    /// `used.idx` when the last interrupt decision was made.
    signalled_index: u16,
}

impl<M, const N: usize, const I: usize> Device<M, N, I>
where
    M: Deref<Target = QueueMemory<N, I>>,
{
    /// The device side of the queue at physical address `base`.
    pub fn new(memory: M, base: u64, event_index: bool) -> Self {
        Self { memory, base, event_index, last_available: 0, used_index: 0, signalled_index: 0 }
    }

    /// The next chain made available, by its head, if any.
    pub fn next_available(&mut self) -> Option<u16> {
        let index = self.memory.available.index.load(Ordering::Acquire);
        if index == self.last_available {
            return None;
        }
        let head = self.memory.available.ring[usize::from(self.last_available) % N].load(Ordering::Relaxed);
        self.last_available = self.last_available.wrapping_add(1);
        Some(head)
    }

    /// Reads the chain at `head` into `segments`; returns how many there are.
    pub fn read_chain(&self, head: u16, segments: &mut [Segment]) -> Result<usize, ChainError> {
        let descriptor = self.memory.descriptors.get(usize::from(head)).ok_or(ChainError::IndexOutOfRange(head))?;
        if descriptor.flags.load(Ordering::Relaxed) & DESC_F_INDIRECT != 0 {
            let address = descriptor.address.load(Ordering::Relaxed);
            let length = descriptor.length.load(Ordering::Relaxed);
            let start = self.base.wrapping_add(QueueMemory::<N, I>::INDIRECT_OFFSET as u64);
            let table_bytes = QueueMemory::<N, I>::INDIRECT_TABLE_BYTES as u64;
            let offset = address.wrapping_sub(start);
            let table = (table_bytes != 0 && offset % table_bytes == 0)
                .then(|| self.memory.indirect.get(usize::try_from(offset / table_bytes).ok()?))
                .flatten()
                .ok_or(ChainError::ForeignIndirectTable(address))?;
            let count = usize::try_from(length / DESCRIPTOR_BYTES).unwrap_or(usize::MAX).min(I);
            Self::follow(&table[..count], 0, segments)
        } else {
            Self::follow(&self.memory.descriptors, head, segments)
        }
    }

    /// Follows a chain through `table` from `first`.
    fn follow(table: &[Descriptor], first: u16, segments: &mut [Segment]) -> Result<usize, ChainError> {
        let mut index = first;
        let mut seen_writable = false;
        for (count, segment) in segments.iter_mut().enumerate().take(table.len()) {
            let descriptor = table.get(usize::from(index)).ok_or(ChainError::IndexOutOfRange(index))?;
            let flags = descriptor.flags.load(Ordering::Relaxed);
            let writable = flags & DESC_F_WRITE != 0;
            if seen_writable && !writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            seen_writable |= writable;
            *segment = Segment {
                buffer: Buffer {
                    address: descriptor.address.load(Ordering::Relaxed),
                    length: descriptor.length.load(Ordering::Relaxed),
                },
                writable,
            };
            if flags & DESC_F_NEXT == 0 {
                return Ok(count + 1);
            }
            index = descriptor.next.load(Ordering::Relaxed);
        }
        Err(ChainError::TooLong)
    }

    /// Returns the chain at `head` to the driver, saying `written` bytes were written.
    pub fn complete(&mut self, head: u16, written: u32) {
        self.complete_raw(u32::from(head), written);
    }

    /// Whether the driver must be interrupted for what was completed since the last call.
    pub fn should_interrupt(&mut self, full_fence: impl FnOnce()) -> bool {
        let old = core::mem::replace(&mut self.signalled_index, self.used_index);
        let available = &self.memory.available;
        let suppression =
            Suppression { event: &available.used_event, flags: &available.flags, flag: AVAIL_F_NO_INTERRUPT };
        suppression.other_side_wants(self.event_index, old, self.used_index, full_fence)
    }

    /// Asks to be notified of the next chain made available, then
    /// re-checks: `true` if nothing is pending (the device may wait).
    pub fn enable_notifications(&mut self, full_fence: impl FnOnce()) -> bool {
        if self.event_index {
            self.memory.used.avail_event.store(self.last_available, Ordering::Relaxed);
        } else {
            self.memory.used.flags.store(0, Ordering::Relaxed);
        }
        full_fence();
        self.memory.available.index.load(Ordering::Acquire) == self.last_available
    }

    /// Asks the driver not to notify (while the device is busy anyway).
    pub fn disable_notifications(&mut self) {
        if !self.event_index {
            self.memory.used.flags.store(USED_F_NO_NOTIFY, Ordering::Relaxed);
        }
    }

    /// Writes a used element with any `id` (tests use it to play a broken device).
    pub fn complete_raw(&mut self, id: u32, written: u32) {
        let element = &self.memory.used.ring[usize::from(self.used_index) % N];
        element.id.store(id, Ordering::Relaxed);
        element.length.store(written, Ordering::Relaxed);
        self.used_index = self.used_index.wrapping_add(1);
        // Release: the element (and the buffer contents) before the index.
        self.memory.used.index.store(self.used_index, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
