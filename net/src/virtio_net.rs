//! The virtio-net device's rules with no hardware access (virtio 1.2,
//! section 5.1): which features to negotiate, the per-packet header
//! (`virtio_net_hdr`), transmit checksum offload (the driver fills the
//! pseudo-header sum and says where the device completes it), receive
//! checksum verdicts (trust `DATA_VALID`, verify the rest in software),
//! merged receive buffers, the configuration space, multi-queue indices
//! and control-queue commands. The kernel driver moves these bytes through
//! virtqueues; everything that can be wrong about them is decided here and
//! tested on the host.

use alloc::vec::Vec;

/// Feature bits (virtio 1.2 section 5.1.3, 6 for the reserved ones).
pub mod feature {
    /// Device handles packets with partial checksum (transmit offload).
    pub const CSUM: u64 = 1 << 0;
    /// Driver handles packets with partial checksum (receive offload).
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The device reports its MTU in config space.
    pub const MTU: u64 = 1 << 3;
    /// Driver takes TCP/IPv4 segments larger than the MTU (the host's
    /// coalesced or unsegmented sends), needs `GUEST_CSUM`.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The same for TCP/IPv6.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The device has a MAC address in config space.
    pub const MAC: u64 = 1 << 5;
    /// Receive buffers may be merged (`num_buffers`).
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// Config space has a link status.
    pub const STATUS: u64 = 1 << 16;
    /// A control virtqueue exists.
    pub const CTRL_VQ: u64 = 1 << 17;
    /// Multiple queue pairs, steered with `VQ_PAIRS_SET`.
    pub const MQ: u64 = 1 << 22;
    /// Descriptors may point to indirect tables (section 6).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression (section 6).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.0+ device (section 6).
    pub const VERSION_1: u64 = 1 << 32;
}

/// Which transport the device is on: multi-queue and the control queue
/// are negotiated on PCI only (virtio-mmio gives all queues one interrupt
/// line, so more queue pairs buy nothing there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// virtio-mmio (QEMU microvm, Firecracker).
    Mmio,
    /// virtio-pci with MSI-X (q35, cloud-hypervisor).
    Pci,
}

/// Why the device cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioNetError {
    /// It does not offer `VERSION_1` (a legacy-only device).
    Legacy,
    /// Its configuration space is shorter than the fields its features need.
    ShortConfig,
    /// A received buffer is shorter than the header.
    ShortBuffer,
    /// A merged packet names 0 buffers, or more than a packet may span.
    BadBufferCount(u16),
    /// The control queue answered something other than `VIRTIO_NET_OK`.
    ControlRefused(u8),
}

/// The features to accept from those `offered`. `VERSION_1` is required;
/// `MQ` only with `CTRL_VQ` (section 5.1.3.1). `GUEST_TSO4`/`GUEST_TSO6`
/// only with `GUEST_CSUM` (section 5.1.3.1) and with `MRG_RXBUF`: without
/// merged buffers every receive buffer would have to hold a 64 KiB
/// segment (section 5.1.6.3.1), 32 times the 2 KiB a frame needs. What
/// they pay: the host hands a bulk send to the guest in segments of up to
/// the receive window instead of one per 1,460 bytes, so the stack and
/// the device take a packet (and an ACK goes back) per window's worth.
pub fn choose_features(offered: u64, transport: Transport) -> Result<u64, VirtioNetError> {
    use feature::*;
    if offered & VERSION_1 == 0 {
        return Err(VirtioNetError::Legacy);
    }
    let mut wanted = VERSION_1
        | MAC
        | STATUS
        | MTU
        | CSUM
        | GUEST_CSUM
        | GUEST_TSO4
        | GUEST_TSO6
        | MRG_RXBUF
        | RING_EVENT_IDX
        | INDIRECT_DESC;
    if transport == Transport::Pci {
        wanted |= CTRL_VQ | MQ;
    }
    let mut chosen = offered & wanted;
    if chosen & CTRL_VQ == 0 {
        chosen &= !MQ;
    }
    if chosen & (GUEST_CSUM | MRG_RXBUF) != GUEST_CSUM | MRG_RXBUF {
        chosen &= !(GUEST_TSO4 | GUEST_TSO6);
    }
    Ok(chosen)
}

/// `virtio_net_hdr` flags (section 5.1.6).
pub mod header_flags {
    /// The checksum at `csum_start + csum_offset` is partial: complete it.
    pub const NEEDS_CSUM: u8 = 1;
    /// The device verified the packet's checksum.
    pub const DATA_VALID: u8 = 2;
}

/// `gso_type` for "no segmentation offload".
pub const GSO_NONE: u8 = 0;
/// `gso_type` of a TCP/IPv4 segment larger than the MTU (`GUEST_TSO4`).
pub const GSO_TCPV4: u8 = 1;
/// `gso_type` of a TCP/IPv6 segment larger than the MTU (`GUEST_TSO6`).
pub const GSO_TCPV6: u8 = 4;

/// Bytes of `virtio_net_hdr` with `VERSION_1` (`num_buffers` always
/// present, section 5.1.6).
pub const HEADER_BYTES: usize = 12;

/// The per-packet header in front of every frame in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHeader {
    /// `NEEDS_CSUM`, `DATA_VALID`.
    pub flags: u8,
    /// Segmentation offload type: [`GSO_NONE`] on transmit; on receive
    /// with `GUEST_TSO4`/`GUEST_TSO6` also [`GSO_TCPV4`]/[`GSO_TCPV6`] (the
    /// packet is one TCP segment, longer than the MTU, taken whole).
    pub gso_type: u8,
    /// Header length for segmentation.
    pub hdr_len: u16,
    /// Segment size for segmentation.
    pub gso_size: u16,
    /// Where checksumming starts (from the frame's first byte).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Buffers this packet spans (`MRG_RXBUF`; 1 otherwise).
    pub num_buffers: u16,
}

impl NetHeader {
    /// Reads the header at the start of `buffer` (little-endian fields).
    pub fn parse(buffer: &[u8]) -> Result<NetHeader, VirtioNetError> {
        let bytes: &[u8; HEADER_BYTES] =
            buffer.get(..HEADER_BYTES).and_then(|b| b.try_into().ok()).ok_or(VirtioNetError::ShortBuffer)?;
        let word = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        Ok(NetHeader {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
            num_buffers: word(10),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        for (at, value) in
            [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset), (10, self.num_buffers)]
        {
            bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }
}

/// EtherTypes (IEEE 802 numbers).
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IP protocol numbers (IANA).
const PROTOCOL_TCP: u8 = 6;
const PROTOCOL_UDP: u8 = 17;
/// Ethernet header bytes.
const ETHERNET_BYTES: usize = 14;
/// IPv6 fixed header bytes (RFC 8200 section 3).
const IPV6_BYTES: usize = 40;
/// Checksum field offsets in the TCP (RFC 9293 3.1) and UDP (RFC 768)
/// headers.
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;

/// Where a frame's transport header and checksum are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Transport4Or6 {
    /// Offset of the TCP/UDP header in the frame.
    start: usize,
    /// Offset of its checksum field from `start`.
    checksum_offset: usize,
    /// The pseudo-header sum (RFC 9293 3.1, RFC 8200 8.1), unfolded.
    pseudo_sum: u32,
    /// The transport segment's length.
    length: usize,
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// Adds `bytes` as big-endian 16-bit words to `sum` (odd tail padded).
fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Folds a one's-complement sum to 16 bits (RFC 1071).
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Finds the TCP or UDP header of an Ethernet frame carrying IPv4 (not a
/// fragment) or IPv6 (TCP/UDP directly after the fixed header).
fn locate(frame: &[u8]) -> Option<Transport4Or6> {
    match be16(frame, 12)? {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(ETHERNET_BYTES..)?;
            let header_bytes = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            let fragment = be16(ip, 6)? & 0x3fff; // MF flag and offset
            if ip[0] >> 4 != 4 || header_bytes < 20 || total < header_bytes || total > ip.len() || fragment != 0 {
                return None;
            }
            let protocol = ip[9];
            let checksum_offset = match protocol {
                PROTOCOL_TCP => TCP_CHECKSUM_OFFSET,
                PROTOCOL_UDP => UDP_CHECKSUM_OFFSET,
                _ => return None,
            };
            let length = total - header_bytes;
            if length < checksum_offset + 2 {
                return None;
            }
            let pseudo_sum = add_words(0, &ip[12..20]) + u32::from(protocol) + length as u32;
            Some(Transport4Or6 { start: ETHERNET_BYTES + header_bytes, checksum_offset, pseudo_sum, length })
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(ETHERNET_BYTES..)?;
            if ip.len() < IPV6_BYTES || ip[0] >> 4 != 6 {
                return None;
            }
            let length = usize::from(be16(ip, 4)?);
            let protocol = ip[6];
            let checksum_offset = match protocol {
                PROTOCOL_TCP => TCP_CHECKSUM_OFFSET,
                PROTOCOL_UDP => UDP_CHECKSUM_OFFSET,
                _ => return None,
            };
            if IPV6_BYTES + length > ip.len() || length < checksum_offset + 2 {
                return None;
            }
            let pseudo_sum = add_words(0, &ip[8..40]) + length as u32 + u32::from(protocol);
            Some(Transport4Or6 { start: ETHERNET_BYTES + IPV6_BYTES, checksum_offset, pseudo_sum, length })
        }
        _ => None,
    }
}

/// Prepares a frame whose TCP/UDP checksum the device completes
/// (`CSUM` negotiated): writes the folded pseudo-header sum into the
/// checksum field and returns the header that tells the device where it
/// is (section 5.1.6.2). Frames of other kinds get an empty header and must
/// carry their own checksums.
pub fn offload_transmit_checksum(frame: &mut [u8]) -> NetHeader {
    let Some(transport) = locate(frame) else { return NetHeader::default() };
    let at = transport.start + transport.checksum_offset;
    frame[at..at + 2].copy_from_slice(&fold(transport.pseudo_sum).to_be_bytes());
    NetHeader {
        flags: header_flags::NEEDS_CSUM,
        csum_start: transport.start as u16,
        csum_offset: transport.checksum_offset as u16,
        num_buffers: 0,
        ..NetHeader::default()
    }
}

/// Completes in software what `offload_transmit_checksum` left partial
/// (what the device does; the tests use it as the device).
pub fn complete_checksum(frame: &mut [u8], header: &NetHeader) {
    if header.flags & header_flags::NEEDS_CSUM == 0 {
        return;
    }
    let start = usize::from(header.csum_start);
    let at = start + usize::from(header.csum_offset);
    if at + 2 > frame.len() {
        return;
    }
    let sum = add_words(0, &frame[start..]);
    let mut checksum = !fold(sum);
    if checksum == 0 && header.csum_offset as usize == UDP_CHECKSUM_OFFSET {
        checksum = 0xffff; // RFC 768: 0 means "no checksum"
    }
    frame[at..at + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// What the driver knows about a received frame's transport checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxChecksum {
    /// Verified, by the device (`DATA_VALID`), by this code, or not
    /// applicable (not TCP/UDP: the stack checks those itself).
    Good,
    /// Wrong: drop the frame.
    Bad,
}

/// The verdict on a received frame, so the stack may skip TCP/UDP checksum
/// verification for every frame it is given. `NEEDS_CSUM` on receive means
/// the packet came from the same host with its checksum left partial: its
/// data is intact (section 5.1.6.4).
pub fn receive_checksum(header: &NetHeader, frame: &[u8]) -> RxChecksum {
    if header.flags & (header_flags::DATA_VALID | header_flags::NEEDS_CSUM) != 0 {
        return RxChecksum::Good;
    }
    let Some(transport) = locate(frame) else { return RxChecksum::Good };
    let segment = &frame[transport.start..transport.start + transport.length];
    let at = transport.checksum_offset;
    if transport.checksum_offset == UDP_CHECKSUM_OFFSET && segment[at] == 0 && segment[at + 1] == 0 {
        // An IPv4 UDP datagram without checksum is valid (RFC 768); over
        // IPv6 it is not (RFC 8200 8.1).
        return if be16(frame, 12) == Some(ETHERTYPE_IPV4) { RxChecksum::Good } else { RxChecksum::Bad };
    }
    if fold(add_words(transport.pseudo_sum, segment)) == 0xffff {
        RxChecksum::Good
    } else {
        RxChecksum::Bad
    }
}

/// Most receive buffers one packet may span: a 64 KiB packet in buffers
/// of a frame each, with room to spare.
pub const MAX_MERGED_BUFFERS: u16 = 64;

/// Gathers a packet spread over merged receive buffers (`MRG_RXBUF`,
/// section 5.1.6.4): the first buffer's header says how many follow.
#[derive(Default)]
pub struct RxMerge {
    packet: Vec<u8>,
    header: Option<NetHeader>,
    remaining: u16,
}

impl RxMerge {
    /// A merger with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one used receive buffer (`written` bytes of it). Returns the
    /// packet's header and frame when its last buffer arrived.
    pub fn push(&mut self, buffer: &[u8]) -> Result<Option<(NetHeader, &[u8])>, VirtioNetError> {
        if self.remaining == 0 {
            let header = NetHeader::parse(buffer)?;
            let count = header.num_buffers.max(1);
            if count > MAX_MERGED_BUFFERS {
                return Err(VirtioNetError::BadBufferCount(header.num_buffers));
            }
            self.packet.clear();
            self.packet.extend_from_slice(&buffer[HEADER_BYTES..]);
            self.header = Some(header);
            self.remaining = count - 1;
        } else {
            self.packet.extend_from_slice(buffer);
            self.remaining -= 1;
        }
        if self.remaining > 0 {
            return Ok(None);
        }
        let header = self.header.take().unwrap_or_default();
        Ok(Some((header, &self.packet)))
    }

    /// Drops a packet left half-gathered (after a queue reset or a bad
    /// buffer).
    pub fn reset(&mut self) {
        self.remaining = 0;
        self.header = None;
        self.packet.clear();
    }

    /// Whether a packet is half-gathered (its next buffer belongs to it).
    pub fn pending(&self) -> bool {
        self.remaining > 0
    }

    /// The last packet gathered (its frame, after the header), until the
    /// next [`Self::push`] starts another.
    pub fn packet(&self) -> &[u8] {
        &self.packet
    }
}

/// The device configuration space (section 5.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// MAC address (meaningful with `MAC`).
    pub mac: [u8; 6],
    /// Link up (`STATUS`; up when not negotiated).
    pub link_up: bool,
    /// Queue pairs the device has (`MQ`; 1 otherwise).
    pub max_queue_pairs: u16,
    /// MTU (`MTU`; 1500 otherwise).
    pub mtu: u16,
}

/// `VIRTIO_NET_S_LINK_UP`.
const STATUS_LINK_UP: u16 = 1;
/// The largest `max_virtqueue_pairs` (section 5.1.4: 0x8000).
pub const MAX_QUEUE_PAIRS: u16 = 0x8000;

impl NetConfig {
    /// Reads the fields `features` make meaningful from `bytes`.
    pub fn parse(bytes: &[u8], features: u64) -> Result<NetConfig, VirtioNetError> {
        let word = |at: usize| be16_le(bytes, at).ok_or(VirtioNetError::ShortConfig);
        let mac = if features & feature::MAC != 0 {
            bytes.get(..6).and_then(|b| b.try_into().ok()).ok_or(VirtioNetError::ShortConfig)?
        } else {
            [0x02, 0, 0, 0, 0, 0x10]
        };
        let link_up = features & feature::STATUS == 0 || word(6)? & STATUS_LINK_UP != 0;
        let max_queue_pairs = if features & feature::MQ != 0 { word(8)?.clamp(1, MAX_QUEUE_PAIRS) } else { 1 };
        let mtu = if features & feature::MTU != 0 { word(10)?.max(68) } else { 1500 };
        Ok(NetConfig { mac, link_up, max_queue_pairs, mtu })
    }
}

fn be16_le(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The virtqueue index of queue pair `pair`'s receive queue (section 5.1.2).
pub fn receive_queue(pair: u16) -> u16 {
    pair * 2
}

/// The virtqueue index of queue pair `pair`'s transmit queue.
pub fn transmit_queue(pair: u16) -> u16 {
    pair * 2 + 1
}

/// The control queue's index: after every pair the device has with `MQ`,
/// index 2 without (section 5.1.2).
pub fn control_queue(max_queue_pairs: u16) -> u16 {
    max_queue_pairs.max(1) * 2
}

/// `VIRTIO_NET_CTRL_MQ` class and `VQ_PAIRS_SET` command (section 5.1.6.5.5).
const CTRL_MQ: u8 = 4;
const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
/// `VIRTIO_NET_OK`.
pub const CTRL_OK: u8 = 0;

/// The device-readable part of a `VQ_PAIRS_SET` command: class, command,
/// then `virtqueue_pairs` (le16); the device writes one ack byte after it.
pub fn vq_pairs_set(pairs: u16) -> [u8; 4] {
    let [low, high] = pairs.to_le_bytes();
    [CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, low, high]
}

/// Reads the device's ack of a control command.
pub fn control_ack(ack: u8) -> Result<(), VirtioNetError> {
    if ack == CTRL_OK {
        Ok(())
    } else {
        Err(VirtioNetError::ControlRefused(ack))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// An Ethernet + IPv4 + TCP frame with `payload`, checksum zero.
    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 20 + 20];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + 20 + payload.len()) as u16;
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        frame[22] = 64;
        frame[23] = PROTOCOL_TCP;
        frame[26..30].copy_from_slice(&[10, 0, 2, 15]);
        frame[30..34].copy_from_slice(&[10, 0, 2, 2]);
        frame[34..36].copy_from_slice(&80u16.to_be_bytes());
        frame[36..38].copy_from_slice(&40000u16.to_be_bytes());
        frame[46] = 0x50; // data offset 5 words
        frame[47] = 0x18; // PSH, ACK
        frame.extend_from_slice(payload);
        frame
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 14 + 40 + 8];
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        frame[14] = 0x60;
        frame[18..20].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame[20] = PROTOCOL_UDP;
        frame[21] = 64;
        frame[22..38].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        frame[38..54].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        frame[54..56].copy_from_slice(&53u16.to_be_bytes());
        frame[56..58].copy_from_slice(&5353u16.to_be_bytes());
        frame[58..60].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn features_follow_the_transport_and_the_spec() {
        use feature::*;
        let everything = u64::MAX;
        let mmio = choose_features(everything, Transport::Mmio).unwrap();
        assert_eq!(mmio & (MQ | CTRL_VQ), 0, "no multi-queue on mmio");
        assert_ne!(mmio & (CSUM | GUEST_CSUM | MRG_RXBUF | RING_EVENT_IDX), 0);
        let pci = choose_features(everything, Transport::Pci).unwrap();
        assert_eq!(pci & (MQ | CTRL_VQ), MQ | CTRL_VQ);
        let no_ctrl = choose_features(VERSION_1 | MQ, Transport::Pci).unwrap();
        assert_eq!(no_ctrl & MQ, 0, "MQ needs CTRL_VQ");
        assert_eq!(choose_features(MAC | CSUM, Transport::Mmio), Err(VirtioNetError::Legacy));
        assert_eq!(choose_features(VERSION_1 | (1 << 9), Transport::Mmio).unwrap(), VERSION_1, "unknown bits refused");
        // Large receive segments: with checksums and merged buffers only.
        let tso = GUEST_TSO4 | GUEST_TSO6;
        assert_eq!(mmio & tso, tso);
        let offered = VERSION_1 | GUEST_CSUM | MRG_RXBUF | tso;
        assert_eq!(choose_features(offered, Transport::Mmio).unwrap() & tso, tso);
        for missing in [GUEST_CSUM, MRG_RXBUF] {
            let chosen = choose_features(offered & !missing, Transport::Pci).unwrap();
            assert_eq!(chosen & tso, 0, "TSO without {missing:#x}");
        }
    }

    #[test]
    fn header_round_trips() {
        let header = NetHeader {
            flags: 1,
            gso_type: 0,
            hdr_len: 54,
            gso_size: 0,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(NetHeader::parse(&header.to_bytes()).unwrap(), header);
        assert_eq!(NetHeader::parse(&[0u8; 11]), Err(VirtioNetError::ShortBuffer));
    }

    #[test]
    fn offloaded_checksums_are_what_software_computes() {
        for payload in [&b""[..], b"x", b"hello, world", &[0xffu8; 1001][..]] {
            let mut frame = tcp4(payload);
            let header = offload_transmit_checksum(&mut frame);
            assert_eq!((header.flags, header.csum_start, header.csum_offset), (header_flags::NEEDS_CSUM, 34, 16));
            complete_checksum(&mut frame, &header);
            assert_eq!(receive_checksum(&NetHeader::default(), &frame), RxChecksum::Good, "{payload:?}");
            let last = frame.len() - 1;
            frame[last] ^= 1;
            if !payload.is_empty() {
                assert_eq!(receive_checksum(&NetHeader::default(), &frame), RxChecksum::Bad);
            }
            let valid = NetHeader { flags: header_flags::DATA_VALID, ..NetHeader::default() };
            assert_eq!(receive_checksum(&valid, &frame), RxChecksum::Good, "DATA_VALID is trusted");
        }
        let mut frame = udp6(b"query");
        let header = offload_transmit_checksum(&mut frame);
        assert_eq!((header.csum_start, header.csum_offset), (54, 6));
        complete_checksum(&mut frame, &header);
        assert_eq!(receive_checksum(&NetHeader::default(), &frame), RxChecksum::Good);
        frame[60] = 0;
        frame[61] = 0;
        assert_eq!(receive_checksum(&NetHeader::default(), &frame), RxChecksum::Bad, "IPv6 UDP needs a checksum");
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(offload_transmit_checksum(&mut arp), NetHeader::default());
        assert_eq!(receive_checksum(&NetHeader::default(), &arp), RxChecksum::Good);
        let mut fragment = tcp4(b"abc");
        fragment[20] = 0x20; // more fragments
        assert_eq!(offload_transmit_checksum(&mut fragment), NetHeader::default());
        for cut in 0..54 {
            let frame = &tcp4(b"abc")[..cut];
            let _ = receive_checksum(&NetHeader::default(), frame);
            let mut copy = frame.to_vec();
            let _ = offload_transmit_checksum(&mut copy);
        }
    }

    #[test]
    fn merged_buffers_gather_one_packet() {
        let mut merge = RxMerge::new();
        let header = NetHeader { num_buffers: 3, ..NetHeader::default() };
        let mut first = header.to_bytes().to_vec();
        first.extend_from_slice(b"abc");
        assert_eq!(merge.push(&first).unwrap(), None);
        assert_eq!(merge.push(b"def").unwrap(), None);
        let (got_header, packet) = merge.push(b"gh").unwrap().unwrap();
        assert_eq!((got_header.num_buffers, packet), (3, &b"abcdefgh"[..]));
        let single = NetHeader { num_buffers: 1, ..NetHeader::default() };
        let mut one = single.to_bytes().to_vec();
        one.extend_from_slice(b"z");
        assert_eq!(merge.push(&one).unwrap().unwrap().1, b"z");
        let too_many = NetHeader { num_buffers: 1000, ..NetHeader::default() };
        assert_eq!(merge.push(&too_many.to_bytes()).unwrap_err(), VirtioNetError::BadBufferCount(1000));
        assert_eq!(merge.push(&[1, 2]).unwrap_err(), VirtioNetError::ShortBuffer);
        // Half-gathered: pending until its last buffer; packet() keeps the
        // last whole one; reset drops the half.
        let two = NetHeader { num_buffers: 2, ..NetHeader::default() };
        let mut first = two.to_bytes().to_vec();
        first.extend_from_slice(b"12");
        assert_eq!(merge.push(&first).unwrap(), None);
        assert!(merge.pending());
        assert_eq!(merge.push(b"34").unwrap().unwrap().1, b"1234");
        assert!(!merge.pending());
        assert_eq!(merge.packet(), b"1234");
        assert_eq!(merge.push(&first).unwrap(), None);
        merge.reset();
        assert!(!merge.pending() && merge.packet().is_empty());
    }

    #[test]
    fn config_space_and_queues() {
        use feature::*;
        let bytes = [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 4, 0, 0xdc, 0x05];
        let config = NetConfig::parse(&bytes, MAC | STATUS | MQ | MTU).unwrap();
        assert_eq!(
            config,
            NetConfig { mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56], link_up: true, max_queue_pairs: 4, mtu: 1500 }
        );
        let down = NetConfig::parse(&[0, 0, 0, 0, 0, 2, 0, 0], MAC | STATUS).unwrap();
        assert!(!down.link_up);
        assert_eq!(NetConfig::parse(&bytes[..7], MAC | STATUS), Err(VirtioNetError::ShortConfig));
        let zero_pairs = NetConfig::parse(&[0, 0, 0, 0, 0, 2, 1, 0, 0, 0], MAC | MQ).unwrap();
        assert_eq!(zero_pairs.max_queue_pairs, 1, "a device claiming 0 pairs has 1");
        assert_eq!((receive_queue(3), transmit_queue(3), control_queue(4), control_queue(1)), (6, 7, 8, 2));
        assert_eq!(vq_pairs_set(4), [4, 0, 4, 0]);
        assert_eq!(control_ack(0), Ok(()));
        assert_eq!(control_ack(1), Err(VirtioNetError::ControlRefused(1)));
    }

    proptest::proptest! {
        /// Any frame bytes and any header: no panic, and an offloaded
        /// checksum completed by the "device" always verifies.
        #[test]
        fn arbitrary_frames(frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), flags in 0u8..4) {
            let header = NetHeader { flags, ..NetHeader::default() };
            let _ = receive_checksum(&header, &frame);
            let mut copy = frame.clone();
            let tx = offload_transmit_checksum(&mut copy);
            if tx.flags & header_flags::NEEDS_CSUM != 0 {
                complete_checksum(&mut copy, &tx);
                proptest::prop_assert_eq!(receive_checksum(&NetHeader::default(), &copy), RxChecksum::Good);
            }
        }
    }
}
