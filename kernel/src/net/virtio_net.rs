//! The virtio-net driver (virtio 1.2, section 5.1) over virtio-mmio and virtio-pci: one queue pair, on its owner CPU.
//!
//! Made by the instance's service (`super::instance`) on the owner CPU, so
//! queues and buffers are that CPU's memory. Receive buffers are posted in
//! batches in `flush`; transmits are queued and the device notified once
//! per flush. The device rules (features, header, checksum verdicts,
//! config space) are `toro_net::virtio_net`, host-tested.
//!
//! Interrupts are bound to the instance's service while it starts: the GSI
//! of a virtio-mmio card (both queues share it), or two MSI-X vectors on
//! PCI (source 0 the receive queue, source 1 the transmit queue). Receive
//! interrupts are suppressed while the service works ([`VirtioNet::quiet`])
//! and asked for again, with a re-check, before it waits
//! ([`VirtioNet::arm`]); transmit interrupts are asked for only while the
//! ring is full (completions are otherwise reclaimed on the next
//! transmit). If the interrupt cannot be bound the card is polled every
//! millisecond instead (`needs_polling`), with a warning.

use alloc::boxed::Box;
use alloc::vec::Vec;

use toro_net::device::{Capabilities, DeviceStats, ETHERNET_HEADER_BYTES, ETHERNET_MTU};
use toro_net::virtio_net::{self as rules, feature, NetConfig, NetHeader, RxChecksum, HEADER_BYTES};

use crate::service::Starting;
use crate::virtio::discovery::FoundDevice;
use crate::virtio::{physical_address, Buffer, Transport, VirtQueue, VirtioError};

/// Entries in each queue.
const QUEUE_SIZE: usize = 128;
/// Bytes of one buffer: header plus the largest frame, rounded up.
const BUFFER_BYTES: usize = 2048;
/// Features not used yet (merged buffers need `RxMerge` bookkeeping; one
/// queue pair, so no control queue and no multi-queue).
const NOT_YET: u64 = feature::MRG_RXBUF | feature::INDIRECT_DESC | feature::CTRL_VQ | feature::MQ;

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
    /// Its interrupts are bound to the service (else it is polled).
    interrupt_driven: bool,
    /// Transmit interrupts were asked for (the ring was full).
    tx_waiting: bool,
}

impl VirtioNet {
    /// Opens and starts the device (on the owner CPU, in its service's
    /// `init`), binding its interrupts through `starting`.
    pub(crate) fn open<S>(found: &FoundDevice, starting: &Starting<S>) -> Result<Self, VirtioError> {
        let mut transport = found.open()?;
        let bus = if found.pci.is_some() { rules::Transport::Pci } else { rules::Transport::Mmio };
        let (rx_queue, tx_queue) = (rules::receive_queue(0), rules::transmit_queue(0));
        // `toro.net.poll` on the command line: poll every millisecond instead
        // (to compare with the interrupt-driven card; docs/net.md).
        let polled = toro_core::command_line::CommandLine::new(crate::system::command_line()).get("toro.net.poll");
        let binding = match polled {
            Some(_) => Err(VirtioError::Unsupported),
            None => crate::virtio::bind_interrupts(starting, found.interrupt, 2),
        };
        let interrupt_driven = match binding {
            Ok(bound) => {
                for (queue, source) in [(rx_queue, 0), (tx_queue, 1)] {
                    if let Some(message) = bound.get(source).or(bound.first()).and_then(|b| b.msi) {
                        transport.set_queue_interrupt(queue, message)?;
                    }
                }
                let vectors: Vec<alloc::string::String> =
                    bound.iter().map(|b| alloc::format!("{:#x}", b.vector)).collect();
                log::info!(
                    "virtio-net at {:#x}: interrupts {} ({}) on cpu {}",
                    found.address,
                    if found.pci.is_some() { "MSI-X" } else { "GSI" },
                    vectors.join(", "),
                    starting.cpu()
                );
                true
            }
            Err(_) if polled.is_some() => {
                log::info!("virtio-net at {:#x}: polled every millisecond (toro.net.poll)", found.address);
                false
            }
            Err(error) => {
                log::warn!("virtio-net at {:#x}: {error}; polled every millisecond instead", found.address);
                false
            }
        };
        // `negotiate` intersects with what the device offers (and refuses
        // a legacy device), so the rules are asked with every bit offered.
        let wanted = rules::choose_features(u64::MAX, bus).map_err(|_| VirtioError::Legacy)? & !NOT_YET;
        let features = transport.negotiate(wanted)?;
        let rx = transport.setup_queue(rx_queue)?;
        let mut tx: Box<VirtQueue<usize, QUEUE_SIZE, 0>> = transport.setup_queue(tx_queue)?;
        tx.disable_interrupts();
        if transport.config_length() < 12 {
            return Err(VirtioError::Unsupported);
        }
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
            interrupt_driven,
            tx_waiting: false,
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
        if self.tx_free.is_empty() && self.interrupt_driven && !self.tx_waiting {
            // Full: ask for an interrupt when the device frees a buffer
            // (if it already did, the next look finds it).
            self.tx_waiting = true;
            if !self.tx.enable_interrupts() {
                self.reclaim_transmits();
            }
        } else if self.tx_waiting && !self.tx_free.is_empty() {
            self.tx_waiting = false;
            self.tx.disable_interrupts();
        }
        !self.tx_free.is_empty()
    }

    /// Whether the device raises interrupts the service takes (else it must be polled).
    pub(crate) fn interrupt_driven(&self) -> bool {
        self.interrupt_driven
    }

    /// The interrupt hook's first step: acknowledge the device, and ask
    /// for no receive interrupts while the service works.
    pub(crate) fn quiet(&mut self) {
        self.transport.take_interrupt();
        self.rx.disable_interrupts();
    }

    /// Before the service waits: ask for the next receive interrupt and
    /// re-check; `true` if frames arrived meanwhile (work again first).
    pub(crate) fn arm(&mut self) -> bool {
        if self.rx_ready.is_some() {
            return true;
        }
        !self.rx.enable_interrupts()
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
