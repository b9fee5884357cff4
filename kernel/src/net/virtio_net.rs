//! The virtio-net driver (virtio 1.2, section 5.1) over virtio-mmio: one queue pair, on its owner CPU.
//!
//! Made by the instance's service thread on the owner CPU, so queues and
//! buffers are that CPU's memory. Receive buffers are posted in batches in
//! `flush`; transmits are queued and the device notified once per flush.
//! The device rules (features, header, checksum verdicts, config space)
//! are `toro_net::virtio_net`, host-tested.
//!
//! Work in progress: the service polls the device every millisecond
//! (`needs_polling`); the interrupt wake-up is not wired yet.

use alloc::boxed::Box;
use alloc::vec::Vec;

use toro_net::device::{Capabilities, DeviceStats, ETHERNET_HEADER_BYTES, ETHERNET_MTU};
use toro_net::virtio_net::{self as rules, feature, NetConfig, NetHeader, RxChecksum, HEADER_BYTES};

use crate::virtio::discovery::FoundDevice;
use crate::virtio::{physical_address, Buffer, Transport, VirtQueue, VirtioError};

/// Entries in each queue.
const QUEUE_SIZE: usize = 128;
/// Bytes of one buffer: header plus the largest frame, rounded up.
const BUFFER_BYTES: usize = 2048;
/// Features not used yet (merged buffers need `RxMerge` bookkeeping).
const NOT_YET: u64 = feature::MRG_RXBUF | feature::INDIRECT_DESC;

type Frame = Box<[u8; BUFFER_BYTES]>;

/// One virtio-net card, one queue pair.
pub(crate) struct VirtioNet {
    transport: Transport,
    rx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
    tx: Box<VirtQueue<usize, QUEUE_SIZE, 0>>,
    rx_buffers: Vec<Frame>,
    tx_buffers: Vec<Frame>,
    /// Receive buffers consumed, to post again in `flush`.
    rx_free: Vec<usize>,
    /// Transmit buffers free.
    tx_free: Vec<usize>,
    /// A completed receive not yet given to the stack: (buffer, bytes written).
    rx_ready: Option<(usize, usize)>,
    tx_queued: bool,
    config: NetConfig,
    features: u64,
    stats: DeviceStats,
}

impl VirtioNet {
    /// Opens and starts the device (on the owner CPU).
    pub(crate) fn open(found: &FoundDevice) -> Result<Self, VirtioError> {
        let mut transport = found.open()?;
        // `negotiate` intersects with what the device offers (and refuses
        // a legacy device), so the rules are asked with every bit offered.
        let wanted =
            rules::choose_features(u64::MAX, rules::Transport::Mmio).map_err(|_| VirtioError::Legacy)? & !NOT_YET;
        let features = transport.negotiate(wanted)?;
        let rx = transport.setup_queue(rules::receive_queue(0))?;
        let tx = transport.setup_queue(rules::transmit_queue(0))?;
        let config = transport.read_config(|registers, base| {
            let mut bytes = [0u8; 12];
            for (at, byte) in bytes.iter_mut().enumerate() {
                *byte = registers.read::<u8>(base + at as u64);
            }
            bytes
        });
        let config = NetConfig::parse(&config, features).map_err(|_| VirtioError::Unsupported)?;
        let mut device = Self {
            transport,
            rx,
            tx,
            rx_buffers: (0..QUEUE_SIZE).map(|_| Box::new([0u8; BUFFER_BYTES])).collect(),
            tx_buffers: (0..QUEUE_SIZE).map(|_| Box::new([0u8; BUFFER_BYTES])).collect(),
            rx_free: (0..QUEUE_SIZE).collect(),
            tx_free: (0..QUEUE_SIZE).collect(),
            rx_ready: None,
            tx_queued: false,
            config,
            features,
            stats: DeviceStats::default(),
        };
        device.transport.driver_ok();
        device.post_receive_buffers();
        Ok(device)
    }

    fn post_receive_buffers(&mut self) {
        let mut added = false;
        while let Some(&index) = self.rx_free.last() {
            let buffer = Buffer { address: physical_address(&*self.rx_buffers[index]), length: BUFFER_BYTES as u32 };
            if self.rx.add(&[], &[buffer], index).is_err() {
                break;
            }
            self.rx_free.pop();
            added = true;
        }
        if added && self.rx.kick(&mut self.transport) {
            self.stats.notifications += 1;
        }
    }

    fn reclaim_transmits(&mut self) {
        while let Ok(Some(done)) = self.tx.pop_used() {
            self.tx_free.push(done.token);
        }
    }

    /// Takes the next good received frame into `rx_ready`.
    fn next_receive(&mut self) -> bool {
        while self.rx_ready.is_none() {
            let Ok(Some(done)) = self.rx.pop_used() else { return false };
            let written = done.written as usize;
            let buffer = &self.rx_buffers[done.token][..written.min(BUFFER_BYTES)];
            let good = match NetHeader::parse(buffer) {
                Ok(header) => {
                    written > HEADER_BYTES + ETHERNET_HEADER_BYTES
                        && rules::receive_checksum(&header, &buffer[HEADER_BYTES..]) == RxChecksum::Good
                }
                Err(_) => false,
            };
            if good {
                self.rx_ready = Some((done.token, written));
            } else {
                self.stats.rx_dropped += 1;
                self.rx_free.push(done.token);
            }
        }
        true
    }

    pub(crate) fn mac(&self) -> [u8; 6] {
        self.config.mac
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_frame: ETHERNET_HEADER_BYTES + ETHERNET_MTU,
            max_burst: Some(QUEUE_SIZE),
            // Frames without DATA_VALID are verified in `next_receive`.
            rx_checksum_verified: true,
            tx_checksum_offload: self.features & feature::CSUM != 0,
        }
    }

    pub(crate) fn rx_pending(&mut self) -> bool {
        self.next_receive()
    }

    pub(crate) fn receive<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if !self.next_receive() {
            return None;
        }
        let (index, written) = self.rx_ready.take()?;
        let result = consume(&self.rx_buffers[index][HEADER_BYTES..written]);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += (written - HEADER_BYTES) as u64;
        self.rx_free.push(index);
        Some(result)
    }

    pub(crate) fn tx_room(&mut self) -> bool {
        self.reclaim_transmits();
        !self.tx_free.is_empty()
    }

    pub(crate) fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if len > ETHERNET_HEADER_BYTES + ETHERNET_MTU || !self.tx_room() {
            if len <= ETHERNET_HEADER_BYTES + ETHERNET_MTU {
                self.stats.tx_ring_full += 1;
            }
            return None;
        }
        let index = self.tx_free.pop()?;
        let offload = self.features & feature::CSUM != 0;
        let buffer = &mut self.tx_buffers[index];
        let result = fill(&mut buffer[HEADER_BYTES..HEADER_BYTES + len]);
        let header = if offload {
            rules::offload_transmit_checksum(&mut buffer[HEADER_BYTES..HEADER_BYTES + len])
        } else {
            NetHeader { num_buffers: 0, ..NetHeader::default() }
        };
        buffer[..HEADER_BYTES].copy_from_slice(&header.to_bytes());
        let chain = Buffer { address: physical_address(&**buffer), length: (HEADER_BYTES + len) as u32 };
        if self.tx.add(&[chain], &[], index).is_err() {
            self.tx_free.push(index);
            self.stats.tx_ring_full += 1;
            return None;
        }
        self.tx_queued = true;
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        Some(result)
    }

    pub(crate) fn flush(&mut self) {
        if self.tx_queued {
            self.tx_queued = false;
            if self.tx.kick(&mut self.transport) {
                self.stats.notifications += 1;
            }
        }
        self.post_receive_buffers();
    }

    pub(crate) fn stats(&self) -> DeviceStats {
        self.stats
    }
}
