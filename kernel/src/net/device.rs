//! The devices an instance can drive, behind one type (the stack is generic
//! over its device; the kernel has a fixed set of drivers).

use toro_net::device::{Capabilities, DeviceStats, MemoryDevice, NetDevice};

/// A network device of the kernel.
pub(crate) enum Device {
    /// An in-memory loopback (`127.0.0.1`): what it sends it receives.
    Loopback(MemoryDevice),
    /// A virtio-net card (boxed: its queues are several KiB).
    Virtio(alloc::boxed::Box<super::virtio_net::VirtioNet>),
}

impl Device {
    /// Whether a received frame waits now.
    pub(crate) fn rx_pending_now(&mut self) -> bool {
        self.rx_pending()
    }

    /// Whether the service must poll the device even with no timer pending
    /// (a device that raises no interrupt). A loopback's frames are
    /// delivered by the poll that sent them.
    pub(crate) fn needs_polling(&self) -> bool {
        match self {
            Self::Loopback(_) => false,
            // A card whose interrupt could not be bound: every millisecond.
            Self::Virtio(device) => !device.interrupt_driven(),
        }
    }

    /// An interrupt came: acknowledge it, suppress more while the service works.
    pub(crate) fn quiet(&mut self) {
        if let Self::Virtio(device) = self {
            device.quiet();
        }
    }

    /// Neighbour-discovery frames received for the card's other pairs.
    pub(crate) fn take_shared(&mut self) -> alloc::vec::Vec<alloc::vec::Vec<u8>> {
        match self {
            Self::Virtio(device) => device.take_shared(),
            Self::Loopback(_) => alloc::vec::Vec::new(),
        }
    }

    /// Datagrams received for sockets on the card's other pairs.
    pub(crate) fn take_forwarded(&mut self) -> alloc::vec::Vec<(usize, alloc::vec::Vec<u8>)> {
        match self {
            Self::Virtio(device) => device.take_forwarded(),
            Self::Loopback(_) => alloc::vec::Vec::new(),
        }
    }

    /// A UDP port was bound or closed here or on another pair.
    pub(crate) fn udp_binding(&mut self, port: u16, here: bool, elsewhere: Option<usize>, bound: bool) {
        if let Self::Virtio(device) = self {
            device.udp_binding(port, here, elsewhere, bound);
        }
    }

    /// Whether UDP `port` is bound on this pair or known bound on another.
    pub(crate) fn udp_port_known(&self, port: u16) -> bool {
        match self {
            Self::Virtio(device) => device.udp_port_known(port),
            Self::Loopback(_) => false,
        }
    }

    /// A frame another pair of the card received.
    pub(crate) fn inject(&mut self, frame: alloc::vec::Vec<u8>) {
        if let Self::Virtio(device) = self {
            device.inject(frame);
        }
    }

    /// The card of a multi-queue pair runs: transmits may go out.
    pub(crate) fn go_live(&mut self) {
        if let Self::Virtio(device) = self {
            device.go_live();
        }
    }

    /// Before the service waits: re-enable interrupts and re-check; `true`
    /// if work arrived meanwhile.
    pub(crate) fn arm(&mut self) -> bool {
        match self {
            Self::Loopback(_) => false,
            Self::Virtio(device) => device.arm(),
        }
    }
}

impl NetDevice for Device {
    fn mac(&self) -> [u8; 6] {
        match self {
            Self::Loopback(device) => device.mac(),
            Self::Virtio(device) => device.mac(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        match self {
            Self::Loopback(device) => device.capabilities(),
            Self::Virtio(device) => device.capabilities(),
        }
    }

    fn rx_pending(&mut self) -> bool {
        match self {
            Self::Loopback(device) => device.rx_pending(),
            Self::Virtio(device) => device.rx_pending(),
        }
    }

    fn receive<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R> {
        match self {
            Self::Loopback(device) => device.receive(consume),
            Self::Virtio(device) => device.receive(consume),
        }
    }

    fn tx_room(&mut self) -> bool {
        match self {
            Self::Loopback(device) => device.tx_room(),
            Self::Virtio(device) => device.tx_room(),
        }
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        match self {
            Self::Loopback(device) => device.transmit(len, fill),
            Self::Virtio(device) => device.transmit(len, fill),
        }
    }

    fn flush(&mut self) {
        match self {
            Self::Loopback(device) => device.flush(),
            Self::Virtio(device) => device.flush(),
        }
    }

    fn stats(&self) -> DeviceStats {
        match self {
            Self::Loopback(device) => device.stats(),
            Self::Virtio(device) => device.stats(),
        }
    }

    fn loop_back(&mut self, frame: alloc::vec::Vec<u8>) {
        match self {
            Self::Loopback(device) => device.loop_back(frame),
            Self::Virtio(device) => device.loop_back(frame),
        }
    }
}
