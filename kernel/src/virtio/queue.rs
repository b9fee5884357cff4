//! A split virtqueue in the owner CPU's memory: `toro_core`'s bookkeeping plus the queue's notify register.

use alloc::boxed::Box;

use toro_core::virtio::queue::{Buffer, Completion, Driver, QueueAddresses, QueueError, QueueMemory};

use super::transport::{Doorbell, QueuePlacement};
use super::{full_fence, physical_address, Transport};

/// One queue of a device: `N` entries, `I`-entry indirect tables, tokens of type `T`.
///
/// Owned by the device's owner CPU; its memory was allocated there (the
/// global allocator gives each CPU its own share), so the device's DMA
/// lands in the owner's memory.
pub struct VirtQueue<T, const N: usize, const I: usize> {
    index: u16,
    driver: Driver<Box<QueueMemory<N, I>>, T, N, I>,
}

impl<T, const N: usize, const I: usize> VirtQueue<T, N, I> {
    /// An empty queue number `index` (not yet given to a device), boxed:
    /// with `N` in the hundreds its bookkeeping is several KiB, too much to
    /// move around on a 32 KiB thread stack.
    pub(super) fn new(index: u16, event_index: bool, indirect: bool) -> Box<Self> {
        // SAFETY: every field of QueueMemory is an atomic integer (or an
        // array of them), for which all-zero bytes are a valid value.
        let memory: Box<QueueMemory<N, I>> = unsafe { Box::new_zeroed().assume_init() };
        let base = physical_address(&*memory);
        assert!(base.is_multiple_of(4096), "queue memory must be page aligned (the allocator honours alignment)");
        Box::new(Self { index, driver: Driver::new(memory, base, event_index, indirect) })
    }

    pub(super) fn addresses(&self) -> QueueAddresses {
        self.driver.addresses()
    }

    /// Where the queue lives, for [`Transport::attach_queue`] on the transport's owner CPU.
    pub fn placement(&self) -> QueuePlacement {
        QueuePlacement { queue: self.index, size: N as u16, addresses: self.addresses() }
    }

    /// The queue's number on its device.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Adds a request (device-readable buffers, then device-writable ones)
    /// with `token`, without notifying: call [`Self::kick`] after a batch.
    /// Buffers must stay valid until the completion comes back.
    pub fn add(&mut self, readable: &[Buffer], writable: &[Buffer], token: T) -> Result<u16, QueueError> {
        self.driver.add(readable, writable, token)
    }

    /// Notifies the device of what was added since the last kick, if it
    /// asked to be (event-idx / `NO_NOTIFY`); returns whether it did.
    pub fn kick(&mut self, transport: &mut Transport) -> bool {
        let notify = self.driver.should_notify(full_fence);
        if notify {
            transport.notify(self.index);
        }
        notify
    }

    /// As [`Self::kick`], through the queue's doorbell (a queue whose
    /// transport another CPU owns).
    pub fn kick_doorbell(&mut self, doorbell: &Doorbell) -> bool {
        let notify = self.driver.should_notify(full_fence);
        if notify {
            doorbell.ring();
        }
        notify
    }

    /// The next completion, if any (an error: reset the device).
    pub fn pop_used(&mut self) -> Result<Option<Completion<T>>, QueueError> {
        self.driver.pop_used()
    }

    /// Asks for no interrupts while the owner polls.
    pub fn disable_interrupts(&mut self) {
        self.driver.disable_interrupts();
    }

    /// Asks for an interrupt on the next completion; `false` if some
    /// arrived meanwhile (take them before waiting).
    pub fn enable_interrupts(&mut self) -> bool {
        self.driver.enable_interrupts(full_fence)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.driver.in_flight()
    }

    /// Whether a request of `buffers` buffers fits now.
    pub fn fits(&self, buffers: usize) -> bool {
        self.driver.fits(buffers)
    }

    /// After the device was reset: forgets every request (each token to
    /// `dropped`) and empties the memory.
    pub fn reset(&mut self, dropped: impl FnMut(T)) {
        self.driver.reset(dropped);
    }
}

impl<T, const N: usize, const I: usize> VirtQueue<T, N, I> {
    /// The queue's bookkeeping, for a driver whose request engine owns it
    /// (virtio-blk's `toro_fs::virtio_blk::Engine`); notify with
    /// `Transport::notify(index)` when it says to.
    pub(super) fn into_driver(self: Box<Self>) -> Driver<Box<QueueMemory<N, I>>, T, N, I> {
        self.driver
    }
}
