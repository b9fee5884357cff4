//! The seam between a network driver and the stack: [`NetDevice`], a
//! batched frame queue with checksum-offload flags, its adapter to smoltcp,
//! and in-memory devices (a loopback and a connected pair) for tests and
//! for the kernel's loopback interface.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet,
    Icmpv6Repr, IpAddress, IpEndpoint, IpProtocol, IpVersion, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv6Address, Ipv6Cidr,
    Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

use crate::NetError;

/// Ethernet header: destination, source, EtherType (IEEE 802.3 clause 3.1.1).
pub const ETHERNET_HEADER_BYTES: usize = 14;
/// The IP MTU of a standard Ethernet link.
pub const ETHERNET_MTU: usize = 1500;

/// Whether `frame` (Ethernet) is neighbour resolution or router
/// discovery: ARP, or ICMPv6 router solicitation/advertisement,
/// neighbour solicitation/advertisement or redirect (types 133-137, as
/// the first header after IPv6). The queue pairs of a multi-queue card
/// are instances with one address and one MAC, but the host hands each
/// frame to one queue; these frames are copied to every pair, so that
/// each learns its neighbours, answers for the address and takes its
/// SLAAC prefix, whichever queue the frame reached.
pub fn neighbour_discovery(frame: &[u8]) -> bool {
    const ARP: [u8; 2] = [0x08, 0x06];
    const IPV6: [u8; 2] = [0x86, 0xdd];
    const ICMPV6: u8 = 58;
    match frame.get(12..14) {
        Some(ethertype) if ethertype == ARP => true,
        Some(ethertype) if ethertype == IPV6 => {
            frame.get(ETHERNET_HEADER_BYTES + 6) == Some(&ICMPV6)
                && frame.get(ETHERNET_HEADER_BYTES + 40).is_some_and(|kind| (133..=137).contains(kind))
        }
        _ => false,
    }
}

/// The transport header and what follows it in `frame` (Ethernet; IPv4
/// that is not a later fragment, or IPv6 with `protocol` as the first
/// header), if its protocol is `protocol` (an IANA protocol number).
fn transport(frame: &[u8], protocol: u8) -> Option<&[u8]> {
    let ip = frame.get(ETHERNET_HEADER_BYTES..)?;
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let header_bytes = usize::from(ip.first()? & 0x0f) * 4;
            let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if ip.first()? >> 4 != 4 || header_bytes < 20 || *ip.get(9)? != protocol || fragment_offset != 0 {
                return None;
            }
            ip.get(header_bytes..)
        }
        [0x86, 0xdd] if ip.first()? >> 4 == 6 && *ip.get(6)? == protocol => ip.get(40..),
        _ => None,
    }
}

/// The UDP destination port of `frame` (Ethernet; IPv4 that is not a
/// later fragment, or IPv6 with UDP as the first header), if it is UDP.
/// The queue pairs of a multi-queue card share one address, but a UDP
/// socket lives on one pair: datagrams for its port that reach another
/// pair's queue are handed to it (docs/net.md).
pub fn udp_destination_port(frame: &[u8]) -> Option<u16> {
    const UDP: u8 = 17;
    let udp = transport(frame, UDP)?;
    Some(u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]))
}

/// The source port of `frame` if it is a DNS query leaving this host: a
/// UDP datagram to port 53 (IPv4 or IPv6, as [`udp_destination_port`]
/// reads them). smoltcp picks a random port for each query and does not
/// say which: a stack reads it off the query (`Stack::take_dns_ports`).
pub fn dns_query_source_port(frame: &[u8]) -> Option<u16> {
    const UDP: u8 = 17;
    const DNS: u16 = 53;
    let udp = transport(frame, UDP)?;
    let destination = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    (destination == DNS).then(|| u16::from_be_bytes([udp[0], udp[1]]))
}

/// The group and UDP source port of `frame` if it is a UDP datagram to
/// an IPv4 (224.0.0.0/4) or IPv6 (ff00::/8) multicast group, over IPv4 or
/// IPv6 as [`udp_destination_port`] reads them.
pub fn udp_multicast(frame: &[u8]) -> Option<(IpAddress, u16)> {
    const UDP: u8 = 17;
    let udp = transport(frame, UDP)?;
    let ip = &frame[ETHERNET_HEADER_BYTES..];
    let group = match frame[12..14] {
        [0x08, 0x00] => IpAddress::Ipv4(Ipv4Address::from_octets(ip.get(16..20)?.try_into().ok()?)),
        _ => IpAddress::Ipv6(Ipv6Address::from_octets(ip.get(24..40)?.try_into().ok()?)),
    };
    (group.is_multicast()).then(|| Some((group, u16::from_be_bytes([*udp.first()?, *udp.get(1)?])))).flatten()
}

/// Sets the time-to-live of `frame`'s IPv4 header to `ttl` and computes
/// its header checksum again (smoltcp computes IPv4 header checksums in
/// software: no device offloads them).
pub fn set_ipv4_ttl(frame: &mut [u8], ttl: u8) {
    let Some(ip) = frame.get_mut(ETHERNET_HEADER_BYTES..) else { return };
    let header_bytes = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    if header_bytes < 20 || ip.len() < header_bytes || ip[8] == ttl {
        return;
    }
    ip[8] = ttl;
    let mut packet = Ipv4Packet::new_unchecked(&mut ip[..]);
    packet.fill_checksum();
}

/// The destination port of `frame` if it opens a TCP connection: a
/// segment with SYN set and neither ACK nor RST (RFC 9293 3.5), over IPv4
/// or IPv6 as [`udp_destination_port`] reads them. Only the header's
/// fixed 20 bytes are read; the checksum is not checked (a damaged SYN
/// classified here is dropped either way).
pub fn tcp_syn_port(frame: &[u8]) -> Option<u16> {
    const TCP: u8 = 6;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    let tcp = transport(frame, TCP)?;
    let flags = *tcp.get(13)?;
    (tcp.len() >= 20 && flags & (SYN | RST | ACK) == SYN).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

/// The destination port of `frame` if it is a TCP segment (IPv4 or IPv6
/// as [`udp_destination_port`] reads them; the fixed 20-byte header must
/// be there).
pub fn tcp_destination_port(frame: &[u8]) -> Option<u16> {
    const TCP: u8 = 6;
    let tcp = transport(frame, TCP)?;
    (tcp.len() >= 20).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

/// An ICMP "destination unreachable" (ICMPv4 type 3, ICMPv6 type 1) for
/// this host, with intact checksums (the IPv4 header's and the ICMP
/// message's): its code, the protocol and destination of the packet it
/// quotes, and the quoted transport header (at least its first 8 bytes:
/// a router or host quotes no more than fits in its answer, RFC 792,
/// RFC 4443 3.1).
struct DestinationUnreachable<'a> {
    v6: bool,
    code: u8,
    protocol: u8,
    peer: IpAddress,
    quoted: &'a [u8],
}

fn destination_unreachable(frame: &[u8]) -> Option<DestinationUnreachable<'_>> {
    const ICMPV4: u8 = 1;
    const ICMPV6: u8 = 58;
    let ip = frame.get(ETHERNET_HEADER_BYTES..)?;
    let unreachable = if frame.get(12..14)? == [0x08, 0x00] {
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        let icmp = transport(frame, ICMPV4)?;
        if !Ipv4Packet::new_checked(ip.get(..total)?).ok()?.verify_checksum() {
            return None;
        }
        let header_bytes = usize::from(ip[0] & 0x0f) * 4;
        let icmp = icmp.get(..total.checked_sub(header_bytes)?)?;
        let packet = Icmpv4Packet::new_checked(icmp).ok()?;
        if icmp[0] != 3 || !packet.verify_checksum() {
            return None;
        }
        let quoted = icmp.get(8..)?;
        let quoted_header = usize::from(quoted.first()? & 0x0f) * 4;
        if quoted[0] >> 4 != 4 || quoted_header < 20 {
            return None;
        }
        let peer = Ipv4Address::from_octets(quoted.get(16..20)?.try_into().ok()?);
        DestinationUnreachable {
            v6: false,
            code: icmp[1],
            protocol: *quoted.get(9)?,
            peer: IpAddress::Ipv4(peer),
            quoted: quoted.get(quoted_header..)?,
        }
    } else {
        let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
        let icmp = transport(frame, ICMPV6)?.get(..payload)?;
        let packet = Icmpv6Packet::new_checked(icmp).ok()?;
        let source = Ipv6Address::from_octets(ip.get(8..24)?.try_into().ok()?);
        let destination = Ipv6Address::from_octets(ip.get(24..40)?.try_into().ok()?);
        if icmp[0] != 1 || !packet.verify_checksum(&source, &destination) {
            return None;
        }
        let quoted = icmp.get(8..)?;
        if quoted.first()? >> 4 != 6 {
            return None;
        }
        let peer = Ipv6Address::from_octets(quoted.get(24..40)?.try_into().ok()?);
        DestinationUnreachable {
            v6: true,
            code: icmp[1],
            protocol: *quoted.get(6)?,
            peer: IpAddress::Ipv6(peer),
            quoted: quoted.get(40..)?,
        }
    };
    (unreachable.quoted.len() >= 8).then_some(unreachable)
}

/// A "port unreachable" that `frame` (Ethernet) carries back for a UDP
/// datagram this host sent: ICMPv4 type 3 code 3 or ICMPv6 type 1 code 4
/// with an intact checksum, whose quoted datagram is UDP. Returns the
/// datagram's source port (the local socket's) and its destination (the
/// peer that has no socket on that port). Only the quoted IP header and
/// the first 8 bytes of the datagram are read.
pub fn udp_port_unreachable(frame: &[u8]) -> Option<(u16, IpEndpoint)> {
    const UDP: u8 = 17;
    let unreachable = destination_unreachable(frame)?;
    let port_unreachable = if unreachable.v6 { 4 } else { 3 };
    if unreachable.protocol != UDP || unreachable.code != port_unreachable {
        return None;
    }
    let quoted = unreachable.quoted;
    let peer = IpEndpoint::new(unreachable.peer, u16::from_be_bytes([quoted[2], quoted[3]]));
    Some((u16::from_be_bytes([quoted[0], quoted[1]]), peer))
}

/// What an ICMP destination unreachable that `frame` carries says of a
/// TCP segment this host sent ([`tcp_unreachable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpUnreachable {
    /// The segment's source port (the local socket's).
    pub local_port: u16,
    /// Its destination.
    pub peer: IpEndpoint,
    /// Its sequence number: a connect believes only an answer to the SYN
    /// it sent (RFC 5927 4.1; Linux checks the same).
    pub sequence: u32,
    /// The error a connect gets for it, as Linux maps the codes
    /// (`icmp_err_convert`, `icmpv6_err_convert`).
    pub error: NetError,
}

/// An ICMP destination unreachable that `frame` (Ethernet, with intact
/// checksums) carries for a TCP segment this host sent, with the error a
/// connect waiting for that peer gets: a network unreachable gives
/// [`NetError::Unreachable`], a host unreachable (or one filtered by a
/// router) [`NetError::HostUnreachable`], a port or protocol unreachable
/// [`NetError::ConnectionRefused`], an administratively prohibited ICMPv6
/// [`NetError::PermissionDenied`]. "Fragmentation needed" and unknown
/// codes are not errors (`None`).
pub fn tcp_unreachable(frame: &[u8]) -> Option<TcpUnreachable> {
    const TCP: u8 = 6;
    let unreachable = destination_unreachable(frame)?;
    if unreachable.protocol != TCP {
        return None;
    }
    let error = match (unreachable.v6, unreachable.code) {
        (false, 0 | 6 | 9 | 11) | (true, 0) => NetError::Unreachable,
        (false, 1 | 5 | 7 | 8 | 10 | 12..=15) | (true, 2 | 3) => NetError::HostUnreachable,
        (false, 2 | 3) | (true, 4) => NetError::ConnectionRefused,
        (true, 1 | 5 | 6) => NetError::PermissionDenied,
        _ => return None,
    };
    let quoted = unreachable.quoted;
    Some(TcpUnreachable {
        local_port: u16::from_be_bytes([quoted[0], quoted[1]]),
        peer: IpEndpoint::new(unreachable.peer, u16::from_be_bytes([quoted[2], quoted[3]])),
        sequence: u32::from_be_bytes([quoted[4], quoted[5], quoted[6], quoted[7]]),
        error,
    })
}

/// The (destination port, source) of `frame` if it is a TCP segment with
/// RST set (IPv4 that is not a later fragment, or IPv6 with TCP as the
/// first header): the local port and peer of the connection it resets.
pub fn tcp_reset(frame: &[u8]) -> Option<(u16, IpEndpoint)> {
    const TCP: u8 = 6;
    const RST: u8 = 0x04;
    let tcp = transport(frame, TCP)?;
    if tcp.get(13)? & RST == 0 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER_BYTES..)?;
    let source = match frame.get(12..14)? {
        [0x08, 0x00] => IpAddress::Ipv4(Ipv4Address::from_octets(ip.get(12..16)?.try_into().ok()?)),
        _ => IpAddress::Ipv6(Ipv6Address::from_octets(ip.get(8..24)?.try_into().ok()?)),
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    Some((port(2)?, IpEndpoint::new(source, port(0)?)))
}

/// The local port and sequence number of `frame` if it opens a TCP
/// connection from this host (SYN without ACK or RST, as [`tcp_syn_port`]
/// reads it): what a connect remembers to believe an ICMP answer.
pub fn tcp_syn_sent(frame: &[u8]) -> Option<(u16, u32)> {
    const TCP: u8 = 6;
    tcp_syn_port(frame)?;
    let tcp = transport(frame, TCP)?;
    Some((u16::from_be_bytes([tcp[0], tcp[1]]), u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]])))
}

/// The address `frame` asks the link for: an ARP request's target (not a
/// gratuitous one, which asks for its sender's own address), or an IPv6
/// neighbour solicitation's target (not duplicate address detection,
/// which comes from the unspecified address).
pub fn neighbour_solicited(frame: &[u8]) -> Option<IpAddress> {
    match frame.get(12..14)? {
        [0x08, 0x06] => {
            let arp = frame.get(ETHERNET_HEADER_BYTES..ETHERNET_HEADER_BYTES + 28)?;
            let request = arp[6..8] == [0, 1];
            let (sender, target) = (&arp[14..18], &arp[24..28]);
            (request && sender != target).then(|| IpAddress::Ipv4(Ipv4Address::from_octets(target.try_into().unwrap())))
        }
        [0x86, 0xdd] => {
            let ip = frame.get(ETHERNET_HEADER_BYTES..)?;
            let icmp = ip.get(40..64)?;
            let source = Ipv6Address::from_octets(ip[8..24].try_into().ok()?);
            let solicitation = ip[6] == 58 && icmp[0] == 135 && !source.is_unspecified();
            solicitation.then(|| IpAddress::Ipv6(Ipv6Address::from_octets(icmp[8..24].try_into().unwrap())))
        }
        _ => None,
    }
}

/// The address whose owner `frame` shows on the link: an ARP packet's
/// sender, or an IPv6 neighbour advertisement's target.
pub fn neighbour_answer(frame: &[u8]) -> Option<IpAddress> {
    match frame.get(12..14)? {
        [0x08, 0x06] => {
            let sender = frame.get(ETHERNET_HEADER_BYTES + 14..ETHERNET_HEADER_BYTES + 18)?;
            Some(IpAddress::Ipv4(Ipv4Address::from_octets(sender.try_into().ok()?)))
        }
        [0x86, 0xdd] => {
            let ip = frame.get(ETHERNET_HEADER_BYTES..)?;
            let icmp = ip.get(40..64)?;
            (ip[6] == 58 && icmp[0] == 136)
                .then(|| IpAddress::Ipv6(Ipv6Address::from_octets(icmp[8..24].try_into().unwrap())))
        }
        _ => None,
    }
}

/// The source MAC of `frame` if it is a unicast one (not zero) and the
/// frame is of `ethertype`, sent to `mac`.
fn unicast_sender(frame: &[u8], mac: [u8; 6], ethertype: [u8; 2]) -> Option<[u8; 6]> {
    if frame.get(12..14)? != ethertype || frame[..6] != mac {
        return None;
    }
    let source_mac: [u8; 6] = frame[6..12].try_into().ok()?;
    (source_mac[0] & 1 == 0 && source_mac != [0; 6]).then_some(source_mac)
}

/// The sender of `frame` if it is a host on the link that could teach its
/// MAC (`neighbour::Learned`): an IPv4 packet with an intact header, sent
/// to `mac` (unicast) from a unicast MAC, from an address inside one of
/// `subnets` (the interface's own addresses and prefixes: not the
/// address itself, nor the subnet's network or broadcast address) to
/// that subnet's address of ours. Returns (sender's address, its MAC, our
/// address). A packet from off the link came through a router and names
/// the router's MAC, so it teaches nothing.
pub fn ipv4_sender(frame: &[u8], mac: [u8; 6], subnets: &[Ipv4Cidr]) -> Option<(Ipv4Address, [u8; 6], Ipv4Address)> {
    let source_mac = unicast_sender(frame, mac, [0x08, 0x00])?;
    let ip = Ipv4Packet::new_checked(frame.get(ETHERNET_HEADER_BYTES..)?).ok()?;
    let (source, destination) = (ip.src_addr(), ip.dst_addr());
    link_host(subnets, source, destination)?;
    (ip.version() == 4 && ip.verify_checksum()).then_some((source, source_mac, destination))
}

/// Whether `host` is a host of the subnet of `subnets` whose address of
/// ours is `ours`: inside it, and not our address, the network or the
/// broadcast address. `None` if not.
fn link_host(subnets: &[Ipv4Cidr], host: Ipv4Address, ours: Ipv4Address) -> Option<()> {
    let subnet = subnets.iter().find(|cidr| cidr.address() == ours && cidr.contains_addr(&host))?;
    let special = host == ours || host == subnet.network().address() || Some(host) == subnet.broadcast();
    (!special).then_some(())
}

/// [`ipv4_sender`] for IPv6: a packet sent to `mac` from a unicast MAC,
/// from a unicast address inside one of `subnets` (the link-local one
/// included; not the prefix's own, the subnet-router anycast address) to
/// that subnet's address of ours; not a neighbour or router discovery
/// message, which smoltcp reads itself. IPv6 has no header checksum: the
/// frame is trusted as the link delivered it (its frame check sequence).
pub fn ipv6_sender(frame: &[u8], mac: [u8; 6], subnets: &[Ipv6Cidr]) -> Option<(Ipv6Address, [u8; 6], Ipv6Address)> {
    let source_mac = unicast_sender(frame, mac, [0x86, 0xdd])?;
    let ip = Ipv6Packet::new_checked(frame.get(ETHERNET_HEADER_BYTES..)?).ok()?;
    let (source, destination) = (ip.src_addr(), ip.dst_addr());
    if ip.version() != 6
        || neighbour_discovery(frame)
        || source == destination
        || source.is_multicast()
        || source.is_unspecified()
    {
        return None;
    }
    let subnet = subnets.iter().find(|cidr| cidr.address() == destination && cidr.contains_addr(&source))?;
    let length = u32::from(subnet.prefix_len());
    let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
    let prefix = Ipv6Address::from_octets((u128::from_be_bytes(destination.octets()) & mask).to_be_bytes());
    (source != prefix).then_some((source, source_mac, destination))
}

/// The sender of `frame` if it is an ARP request or reply for our
/// address in one of `subnets` from a unicast MAC and an address inside
/// that subnet (the packets smoltcp fills its cache from): (its address,
/// its MAC).
pub fn arp_sender(frame: &[u8], subnets: &[Ipv4Cidr]) -> Option<(Ipv4Address, [u8; 6])> {
    if frame.get(12..14)? != [0x08, 0x06] {
        return None;
    }
    let ArpRepr::EthernetIpv4 { operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, .. } =
        ArpRepr::parse(&ArpPacket::new_checked(frame.get(ETHERNET_HEADER_BYTES..)?).ok()?).ok()?
    else {
        return None;
    };
    link_host(subnets, source_protocol_addr, target_protocol_addr)?;
    let known = matches!(operation, ArpOperation::Request | ArpOperation::Reply);
    (known && source_hardware_addr.is_unicast()).then_some((source_protocol_addr, source_hardware_addr.0))
}

/// The target of `frame` if it is a neighbour advertisement from a
/// unicast MAC for an address inside one of `subnets`, sent by that
/// address with the override flag and its link-layer address option:
/// (the address, that MAC).
pub fn advertisement_sender(frame: &[u8], subnets: &[Ipv6Cidr]) -> Option<(Ipv6Address, [u8; 6])> {
    if frame.get(12..14)? != [0x86, 0xdd] || frame[6] & 1 != 0 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(frame.get(ETHERNET_HEADER_BYTES..)?).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != 255 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let repr = Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &ChecksumCapabilities::ignored()).ok()?;
    // smoltcp fills its cache for the sender's address, and for one it
    // knows already only with the override flag.
    let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr, lladdr: Some(lladdr) }) = repr else {
        return None;
    };
    if !flags.contains(NdiscNeighborFlags::OVERRIDE) || target_addr != ip.src_addr() {
        return None;
    }
    let mac: [u8; 6] = lladdr.as_bytes().try_into().ok()?;
    let on_link = subnets.iter().any(|cidr| cidr.contains_addr(&target_addr) && cidr.address() != target_addr);
    (on_link && mac[0] & 1 == 0 && mac != [0; 6]).then_some((target_addr, mac))
}

/// Writes into `out` the neighbour advertisement that tells smoltcp
/// `sender` is at `sender_mac` (override set, unsolicited), as if that host
/// had sent it to us: smoltcp fills its cache from an advertisement's
/// link-layer address option.
pub fn advertisement_from(out: &mut Vec<u8>, sender: Ipv6Address, sender_mac: [u8; 6], us: Ipv6Address, mac: [u8; 6]) {
    let advertisement = NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: sender,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(sender_mac))),
    };
    neighbour_discovery_frame(out, advertisement, (sender, sender_mac), (us, mac));
}

/// Writes into `out` the Ethernet frame carrying `message` from `from`
/// to `to` (IPv6 address, MAC each), checksum filled in.
fn neighbour_discovery_frame(
    out: &mut Vec<u8>,
    message: NdiscRepr,
    from: (Ipv6Address, [u8; 6]),
    to: (Ipv6Address, [u8; 6]),
) {
    let message = Icmpv6Repr::Ndisc(message);
    let ip = Ipv6Repr {
        src_addr: from.0,
        dst_addr: to.0,
        next_header: IpProtocol::Icmpv6,
        payload_len: message.buffer_len(),
        // Neighbour discovery messages must come with 255 (RFC 4861, 7.1.2).
        hop_limit: 255,
    };
    out.clear();
    out.resize(ETHERNET_HEADER_BYTES + ip.buffer_len() + message.buffer_len(), 0);
    let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
    frame.set_dst_addr(EthernetAddress(to.1));
    frame.set_src_addr(EthernetAddress(from.1));
    frame.set_ethertype(EthernetProtocol::Ipv6);
    let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet);
    let mut icmp = Icmpv6Packet::new_unchecked(packet.payload_mut());
    message.emit(&from.0, &to.0, &mut icmp, &ChecksumCapabilities::default());
}

/// Length of an Ethernet frame carrying an ARP packet for IPv4.
pub const ARP_FRAME_BYTES: usize = ETHERNET_HEADER_BYTES + 28;

/// Writes into `out` the ARP reply that tells smoltcp `sender` is at
/// `sender_mac`, as if that host had answered our request for it (smoltcp
/// fills its cache from any ARP packet for one of its addresses).
pub fn arp_reply_from(out: &mut Vec<u8>, sender: Ipv4Address, sender_mac: [u8; 6], us: Ipv4Address, mac: [u8; 6]) {
    arp_frame(out, ArpOperation::Reply, (sender, sender_mac), (us, mac), mac);
}

/// Writes into `out` an ARP request from `us` at `mac` for `target`,
/// broadcast (the request smoltcp itself would send).
pub fn arp_request(out: &mut Vec<u8>, target: Ipv4Address, us: Ipv4Address, mac: [u8; 6]) {
    arp_frame(out, ArpOperation::Request, (us, mac), (target, [0; 6]), [0xff; 6]);
}

/// Writes into `out` the Ethernet frame to `to_mac` carrying an ARP
/// `operation` from `sender` about `target` (IPv4 address, MAC each).
fn arp_frame(
    out: &mut Vec<u8>,
    operation: ArpOperation,
    sender: (Ipv4Address, [u8; 6]),
    target: (Ipv4Address, [u8; 6]),
    to_mac: [u8; 6],
) {
    out.clear();
    out.resize(ARP_FRAME_BYTES, 0);
    let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
    frame.set_dst_addr(EthernetAddress(to_mac));
    frame.set_src_addr(EthernetAddress(sender.1));
    frame.set_ethertype(EthernetProtocol::Arp);
    let packet = ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: EthernetAddress(sender.1),
        source_protocol_addr: sender.0,
        target_hardware_addr: EthernetAddress(target.1),
        target_protocol_addr: target.0,
    };
    packet.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
}

/// Writes into `out` a neighbour solicitation from `us` at `mac` for
/// `target` (a unicast address), to the target's solicited-node multicast
/// group and its Ethernet group (RFC 4861 7.2.2, RFC 2464 7), with our
/// link-layer address: the solicitation smoltcp itself would send.
pub fn neighbour_solicitation(out: &mut Vec<u8>, target: Ipv6Address, us: Ipv6Address, mac: [u8; 6]) {
    let t = target.octets();
    let group = Ipv6Address::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let solicitation = NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(mac))),
    };
    neighbour_discovery_frame(out, solicitation, (us, mac), (group, [0x33, 0x33, 0xff, t[13], t[14], t[15]]));
}

/// What the receive path needs to teach smoltcp the neighbours it hears
/// from (`ipv4_sender`, `neighbour::Learned`): the ARP reply goes to
/// smoltcp just before the frame that taught it, which waits in the
/// stack's frame buffer meanwhile (`held`).
pub(crate) struct Learn<'a> {
    pub(crate) mac: [u8; 6],
    pub(crate) subnets: &'a [Ipv4Cidr],
    pub(crate) subnets6: &'a [Ipv6Cidr],
    pub(crate) learned: &'a mut crate::neighbour::Learned,
    pub(crate) reply: &'a mut Vec<u8>,
    pub(crate) held: &'a mut bool,
    pub(crate) now_micros: u64,
}

impl Learn<'_> {
    /// The sender of `frame` if it must be taught first; if so the ARP
    /// reply (neighbour advertisement for IPv6) is written and the frame
    /// is held.
    fn teaches(&mut self, frame: &[u8]) -> Option<IpAddress> {
        // smoltcp learns from these itself: noted as known only.
        let answer = arp_sender(frame, self.subnets)
            .map(|(sender, mac)| (IpAddress::Ipv4(sender), mac))
            .or_else(|| advertisement_sender(frame, self.subnets6).map(|(target, mac)| (IpAddress::Ipv6(target), mac)));
        if let Some((address, mac)) = answer {
            self.learned.heard(address, mac, self.now_micros);
            return None;
        }
        let sender = if let Some((sender, sender_mac, us)) = ipv4_sender(frame, self.mac, self.subnets) {
            self.learned.wants(sender.into(), sender_mac, self.now_micros).then_some(())?;
            arp_reply_from(self.reply, sender, sender_mac, us, self.mac);
            IpAddress::Ipv4(sender)
        } else {
            let (sender, sender_mac, us) = ipv6_sender(frame, self.mac, self.subnets6)?;
            self.learned.wants(sender.into(), sender_mac, self.now_micros).then_some(())?;
            advertisement_from(self.reply, sender, sender_mac, us, self.mac);
            IpAddress::Ipv6(sender)
        };
        *self.held = true;
        Some(sender)
    }
}

/// What a device does for the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest frame it carries, Ethernet header included (1514 for a
    /// standard link).
    pub max_frame: usize,
    /// Frames the stack may hand over in one poll before the device must
    /// flush (its transmit ring size); `None` for no limit.
    pub max_burst: Option<usize>,
    /// Every frame handed to the stack has had its TCP and UDP checksums
    /// verified (by the device, e.g. virtio's `DATA_VALID`, or by the
    /// driver when the device did not): the stack skips verifying them.
    pub rx_checksum_verified: bool,
    /// The device completes the TCP and UDP checksums of transmitted frames
    /// (virtio's `NEEDS_CSUM`): the stack leaves them to it.
    pub tx_checksum_offload: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_frame: ETHERNET_MTU + ETHERNET_HEADER_BYTES,
            max_burst: None,
            rx_checksum_verified: false,
            tx_checksum_offload: false,
        }
    }
}

/// Counts a device keeps (shown by `/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received and handed to the stack.
    pub rx_frames: u64,
    /// Frames queued for transmission.
    pub tx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Transmits refused because the ring was full.
    pub tx_ring_full: u64,
    /// Received frames dropped by the driver (bad header, bad checksum,
    /// too long).
    pub rx_dropped: u64,
    /// Notifications (doorbells) sent to the device.
    pub notifications: u64,
    /// Received packets longer than a frame: TCP segments the host handed
    /// over whole (virtio-net `GUEST_TSO4`/`6`, gathered from merged
    /// receive buffers).
    pub rx_large: u64,
}

/// A network device as the stack drives it: frames in, frames out, in
/// batches. One owner (one CPU) uses it; nothing here is shared.
///
/// The stack calls [`receive`](Self::receive) and
/// [`transmit`](Self::transmit) any number of times during one poll, then
/// [`flush`](Self::flush) once: a driver posts its consumed receive
/// buffers back and notifies the device of all queued transmits there, so
/// a poll costs at most one notification each way.
pub trait NetDevice {
    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];
    /// What the device offers (fixed after set-up).
    fn capabilities(&self) -> Capabilities;
    /// Whether a received frame waits.
    fn rx_pending(&mut self) -> bool;
    /// Calls `consume` with the oldest received frame (Ethernet header
    /// first) and returns its result; `None` when no frame waits.
    fn receive<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R>;
    /// Whether a frame can be queued for transmission now.
    fn tx_room(&mut self) -> bool;
    /// Queues one frame of `len` bytes that `fill` writes; `None` (and
    /// `fill` not called) if the transmit ring is full or `len` is over
    /// [`Capabilities::max_frame`].
    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R>;
    /// Ends a batch: hands queued transmits to the device with one
    /// notification, reposts consumed receive buffers.
    fn flush(&mut self);
    /// The device's counts.
    fn stats(&self) -> DeviceStats;
    /// Receives `frame`, which this interface sent, as if it had arrived
    /// (a multicast datagram looped back to the groups joined here, as
    /// `IP_MULTICAST_LOOP` does on Linux). A device that delivers what it
    /// sends to itself anyway (a loopback) does nothing; by default the
    /// copy is dropped.
    fn loop_back(&mut self, frame: Vec<u8>) {
        let _ = frame;
    }
}

/// smoltcp's view of a [`NetDevice`] for one poll. smoltcp answers a
/// received frame (an ACK, an ARP reply) from inside the receive token, so
/// the device cannot stay borrowed while the frame is read: the frame is
/// copied into `frame` (one copy of at most an MTU, reused) and the
/// transmit token borrows the device through the `RefCell` only while it
/// fills a frame. No `unsafe` is needed for the two live tokens.
///
/// A SYN for a listening port in `full` (its backlog is full) is dropped
/// here, before smoltcp sees it, and counted in `dropped_syns`: smoltcp
/// would reset it (no socket in `Listen`), and the client would see
/// "connection refused" in a burst; dropped, the client retransmits its
/// SYN after its retransmission timeout and is taken once `accept` made
/// room, as Linux does when a listen queue overflows (its ListenDrops).
pub(crate) struct Port<'a, D: NetDevice> {
    pub(crate) device: &'a RefCell<D>,
    pub(crate) frame: &'a mut Vec<u8>,
    pub(crate) full: &'a [u16],
    pub(crate) dropped_syns: u64,
    /// On a queue pair of a multi-queue card: segments that belong to
    /// another pair, set aside for it (`Stack::take_diverted`).
    pub(crate) divert: Option<Divert<'a>>,
    /// Connected UDP sockets: (local port, peer, index in the stack's
    /// list). A port unreachable for one of them (`udp_port_unreachable`)
    /// sets its flag in `refused`; the frame still goes to smoltcp.
    pub(crate) udp_peers: &'a [(u16, IpEndpoint)],
    pub(crate) refused: &'a mut [bool],
    /// What the transmit path records (`Watch`).
    pub(crate) watch: Watch<'a>,
    /// While connects wait for an answer: the ICMP destination
    /// unreachables received for TCP segments (`tcp_unreachable`), at most
    /// `MAX_TCP_UNREACHABLE`.
    pub(crate) tcp_unreachable: Option<&'a mut Vec<TcpUnreachable>>,
    /// Teaching smoltcp the neighbours heard from (receiving only).
    pub(crate) learn: Option<Learn<'a>>,
}

/// ICMP answers to TCP segments one poll keeps for the waiting connects.
pub(crate) const MAX_TCP_UNREACHABLE: usize = 16;

/// What transmitted (and, for neighbours, received) frames are read for,
/// each only while something needs it.
#[derive(Clone, Copy)]
pub(crate) struct Watch<'a> {
    /// While DNS queries are in flight: the source ports of the queries
    /// sent (`dns_query_source_port`).
    pub(crate) dns_sent: Option<&'a RefCell<Vec<u16>>>,
    /// While connects wait: the (local port, sequence number) of each SYN
    /// sent (`tcp_syn_sent`), which an ICMP answer must quote.
    pub(crate) syns_sent: Option<&'a RefCell<Vec<(u16, u32)>>>,
    /// Neighbours asked for and not answered yet (`neighbour::Unresolved`),
    /// and the time of this poll.
    pub(crate) unresolved: Option<&'a RefCell<crate::neighbour::Unresolved>>,
    pub(crate) now_micros: u64,
    /// The multicast options of the UDP sockets (`Multicast`).
    pub(crate) multicast: Option<&'a Multicast>,
    /// While connections wait for ACKs: the RSTs received (`tcp_reset`),
    /// at most `MAX_RESETS` per poll.
    pub(crate) resets: Option<&'a RefCell<Vec<(u16, IpEndpoint)>>>,
}

/// RSTs a stack notes per poll at most (`Watch::resets`); a reset beyond
/// them that ends a connection waiting for an ACK is taken for a timeout.
pub(crate) const MAX_RESETS: usize = 64;

/// What a stack does with the UDP datagrams it sends to multicast groups,
/// which smoltcp treats as any other: the time-to-live they leave with
/// (Linux's `IP_MULTICAST_TTL`, 1 unless a socket set another: the group
/// stays on the link), and whether a copy is delivered to the sockets of
/// this interface that joined the group (`IP_MULTICAST_LOOP`, on unless
/// a socket turned it off). Options are kept by local port (each UDP
/// socket has its own).
#[derive(Debug, Default)]
pub struct Multicast {
    /// Ports whose multicast TTL is not 1.
    pub(crate) ttls: Vec<(u16, u8)>,
    /// Ports with loop-back turned off, for IPv4 groups (`false`) or IPv6
    /// ones (`true`): two options on Linux (`IP_MULTICAST_LOOP`,
    /// `IPV6_MULTICAST_LOOP`).
    pub(crate) no_loop: Vec<(u16, bool)>,
    /// Multicast groups joined, by UDP socket (`Stack::udp_join_multicast`):
    /// the interface stays in a group while any socket has it.
    pub(crate) memberships: Vec<(smoltcp::iface::SocketHandle, IpAddress)>,
    /// A queue pair of a multi-queue card: the card's other pairs may
    /// have joined a group this one has not, so every datagram to a group
    /// is looped back, and the driver hands it to the pair that bound its
    /// port (whose stack drops it if that pair has not joined the group).
    pub(crate) every_group: bool,
    /// Copies of the datagrams sent to a joined group, not yet looped
    /// back (at most `MAX_LOOPED`).
    pub(crate) looped: RefCell<Vec<Vec<u8>>>,
}

/// Looped-back multicast datagrams one poll keeps (more are not looped).
pub(crate) const MAX_LOOPED: usize = 64;

/// Linux's default `IP_MULTICAST_TTL`.
pub const DEFAULT_MULTICAST_TTL: u8 = 1;

impl Multicast {
    /// The time-to-live multicast datagrams from `port` leave with.
    pub fn ttl(&self, port: u16) -> u8 {
        self.ttls.iter().find(|&&(known, _)| known == port).map_or(DEFAULT_MULTICAST_TTL, |&(_, ttl)| ttl)
    }

    /// Whether `port`'s datagrams to joined IPv4 (IPv6 when `v6`) groups
    /// are looped back.
    pub fn loops(&self, port: u16, v6: bool) -> bool {
        !self.no_loop.contains(&(port, v6))
    }

    /// A datagram leaves: its TTL set, a copy kept to loop back.
    fn sent(&self, frame: &mut [u8]) {
        let Some((group, port)) = udp_multicast(frame) else { return };
        match group {
            IpAddress::Ipv4(_) => set_ipv4_ttl(frame, self.ttl(port)),
            // Linux's IPV6_MULTICAST_HOPS, 1 (std has no call to set it).
            // IPv6 has no header checksum, and the hop limit is not in the
            // UDP pseudo-header.
            IpAddress::Ipv6(_) => frame[ETHERNET_HEADER_BYTES + 7] = DEFAULT_MULTICAST_TTL,
        }
        let mut looped = self.looped.borrow_mut();
        let joined = self.every_group || self.memberships.iter().any(|&(_, joined)| joined == group);
        if joined && self.loops(port, group.version() == IpVersion::Ipv6) && looped.len() < MAX_LOOPED {
            looped.push(frame.to_vec());
        }
    }
}

impl Watch<'_> {
    /// Reads a frame about to leave (and sets a multicast datagram's TTL).
    fn sent(&self, frame: &mut [u8]) {
        if let Some(multicast) = self.multicast {
            multicast.sent(frame);
        }
        if let Some(sent) = self.dns_sent {
            if let Some(port) = dns_query_source_port(frame) {
                sent.borrow_mut().push(port);
            }
        }
        if let Some(syns) = self.syns_sent {
            if let Some((port, sequence)) = tcp_syn_sent(frame) {
                let mut syns = syns.borrow_mut();
                syns.retain(|&(known, _)| known != port);
                syns.push((port, sequence));
            }
        }
        if let Some(unresolved) = self.unresolved {
            if let Some(address) = neighbour_solicited(frame) {
                unresolved.borrow_mut().asked(address, self.now_micros);
            }
        }
    }
}

/// What a queue pair's `Port` needs to set aside TCP segments for another
/// pair: a segment (not a SYN opening a connection) to an ephemeral port
/// of another pair's share belongs to that pair's outgoing connection,
/// unless the port was ever listened on here.
pub(crate) struct Divert<'a> {
    /// This pair's share of the ephemeral ports: (index, pairs).
    pub(crate) share: (u16, u16),
    /// Ports listened on here since the stack started.
    pub(crate) listened: &'a [u16],
    /// Segments set aside: (the owning pair's index, frame).
    pub(crate) out: &'a mut Vec<(u16, Vec<u8>)>,
}

/// Segments one stack sets aside for other pairs before they are taken
/// (more are dropped: the sender retransmits).
pub(crate) const MAX_DIVERTED: usize = 256;

/// The pair whose share of the ephemeral ports (ports p with
/// (p - 49152) mod pairs = index) holds `port`, if it is not `share`'s own.
pub fn foreign_share(port: u16, share: (u16, u16)) -> Option<u16> {
    let (index, pairs) = share;
    if pairs < 2 || port < crate::stack::EPHEMERAL_FIRST {
        return None;
    }
    let owner = (port - crate::stack::EPHEMERAL_FIRST) % pairs;
    (owner != index % pairs).then_some(owner)
}

impl<'a, D: NetDevice> Port<'a, D> {
    /// A port that drops no SYN and diverts nothing (for transmitting).
    pub(crate) fn new(device: &'a RefCell<D>, frame: &'a mut Vec<u8>) -> Self {
        Self {
            device,
            frame,
            full: &[],
            dropped_syns: 0,
            divert: None,
            udp_peers: &[],
            refused: &mut [],
            watch: Watch {
                dns_sent: None,
                syns_sent: None,
                unresolved: None,
                now_micros: 0,
                multicast: None,
                resets: None,
            },
            tcp_unreachable: None,
            learn: None,
        }
    }
}

/// smoltcp's checksum settings for a device's capabilities. IPv4 header
/// and ICMP checksums stay in software: virtio offloads only the
/// transport checksum (virtio 1.2, 5.1.6.2).
pub(crate) fn checksum_capabilities(capabilities: &Capabilities) -> ChecksumCapabilities {
    let transport = match (capabilities.rx_checksum_verified, capabilities.tx_checksum_offload) {
        (false, false) => Checksum::Both,
        (true, false) => Checksum::Tx,
        (false, true) => Checksum::Rx,
        (true, true) => Checksum::None,
    };
    let mut checksum = ChecksumCapabilities::default();
    checksum.tcp = transport;
    checksum.udp = transport;
    checksum
}

impl<D: NetDevice> phy::Device for Port<'_, D> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // The frame whose sender was just taught (`Learn`).
        if let Some(learn) = self.learn.as_mut().filter(|learn| *learn.held) {
            *learn.held = false;
            return Some((RxToken { frame: &self.frame[..] }, TxToken { device: self.device, watch: self.watch }));
        }
        let frame = &mut *self.frame;
        let full = self.full;
        let mut divert = self.divert.as_mut();
        let (udp_peers, refused) = (self.udp_peers, &mut *self.refused);
        let mut tcp_unreachable = self.tcp_unreachable.as_deref_mut();
        // A refusal counts only in a frame for this interface's MAC, as
        // smoltcp takes only those (ICMP errors are unicast).
        let mac = match udp_peers.is_empty() && tcp_unreachable.is_none() {
            true => None,
            false => Some(self.device.borrow().mac()),
        };
        let unresolved = self.watch.unresolved.filter(|unresolved| !unresolved.borrow().is_empty());
        let resets = self.watch.resets;
        loop {
            frame.clear();
            let taken = self.device.borrow_mut().receive(|received| {
                if mac.is_some_and(|mac| received.get(..6) == Some(&mac[..])) {
                    if let Some(unreachable) = udp_peers.first().and_then(|_| udp_port_unreachable(received)) {
                        for (index, peer) in udp_peers.iter().enumerate() {
                            refused[index] |= *peer == unreachable;
                        }
                    }
                    if let Some(reports) = tcp_unreachable.as_deref_mut().filter(|r| r.len() < MAX_TCP_UNREACHABLE) {
                        reports.extend(self::tcp_unreachable(received));
                    }
                }
                if let Some(address) = unresolved.and_then(|_| neighbour_answer(received)) {
                    unresolved.expect("checked").borrow_mut().answered(address);
                }
                if let Some(reset) = resets.and_then(|_| tcp_reset(received)) {
                    let mut resets = resets.expect("checked").borrow_mut();
                    if resets.len() < MAX_RESETS {
                        resets.push(reset);
                    }
                }
                // Parsed only where a rule needs it: most stacks have no
                // full port and no other pair.
                let syn = (!full.is_empty() || divert.is_some()).then(|| tcp_syn_port(received)).flatten();
                if syn.is_some_and(|port| full.contains(&port)) {
                    return Some(false);
                }
                if let Some(divert) = divert.as_mut().filter(|_| syn.is_none()) {
                    // A TCP segment, or an ICMP answer to one this pair's
                    // sibling sent (the host queues it by its own flow).
                    let port = tcp_destination_port(received)
                        .or_else(|| self::tcp_unreachable(received).map(|unreachable| unreachable.local_port));
                    let owner = port.and_then(|port| {
                        foreign_share(port, divert.share).filter(|_| !divert.listened.contains(&port))
                    });
                    if let Some(owner) = owner {
                        if divert.out.len() < MAX_DIVERTED {
                            divert.out.push((owner, received.to_vec()));
                        }
                        return None;
                    }
                }
                frame.extend_from_slice(received);
                Some(true)
            })?;
            match taken {
                Some(true) => {
                    let tx = TxToken { device: self.device, watch: self.watch };
                    if let Some(learn) = self.learn.as_mut() {
                        if let Some(sender) = learn.teaches(frame) {
                            // It showed itself: not a neighbour that never answers.
                            if let Some(unresolved) = self.watch.unresolved {
                                unresolved.borrow_mut().answered(sender);
                            }
                            return Some((RxToken { frame: &learn.reply[..] }, tx));
                        }
                    }
                    return Some((RxToken { frame }, tx));
                }
                Some(false) => self.dropped_syns += 1,
                None => {}
            }
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.device.borrow_mut().tx_room().then_some(TxToken { device: self.device, watch: self.watch })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let device = self.device.borrow();
        let capabilities = device.capabilities();
        let mut smoltcp = DeviceCapabilities::default();
        smoltcp.medium = Medium::Ethernet;
        smoltcp.max_transmission_unit = capabilities.max_frame;
        smoltcp.max_burst_size = capabilities.max_burst;
        smoltcp.checksum = checksum_capabilities(&capabilities);
        smoltcp
    }
}

pub(crate) struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

pub(crate) struct TxToken<'a, D: NetDevice> {
    device: &'a RefCell<D>,
    watch: Watch<'a>,
}

impl<D: NetDevice> phy::TxToken for TxToken<'_, D> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut f = Some(f);
        let watch = self.watch;
        let result = self.device.borrow_mut().transmit(len, |buffer| {
            let result = (f.take().expect("called once"))(buffer);
            watch.sent(buffer);
            result
        });
        match result {
            Some(result) => result,
            // Full ring after `tx_room` said yes, or an oversized frame:
            // smoltcp needs the result, so build the frame in scratch
            // space and drop it (TCP retransmits it).
            None => {
                let mut scratch = alloc::vec![0u8; len];
                (f.take().expect("not called"))(&mut scratch)
            }
        }
    }
}

/// One direction of an in-memory link.
type Wire = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// An in-memory device: frames it transmits go to `peer`'s receive queue
/// (its own, for a loopback). Bounded like a real ring.
pub struct MemoryDevice {
    mac: [u8; 6],
    inbox: Wire,
    outbox: Wire,
    ring: usize,
    capabilities: Capabilities,
    stats: DeviceStats,
}

/// Default ring size of an in-memory device, in frames.
pub const MEMORY_RING_FRAMES: usize = 256;

impl MemoryDevice {
    /// A loopback: what it sends, it receives.
    pub fn loopback(mac: [u8; 6]) -> Self {
        let wire: Wire = Rc::new(RefCell::new(VecDeque::new()));
        Self {
            mac,
            inbox: wire.clone(),
            outbox: wire,
            ring: MEMORY_RING_FRAMES,
            capabilities: Capabilities::default(),
            stats: DeviceStats::default(),
        }
    }

    /// Two devices connected back to back.
    pub fn pair(mac_a: [u8; 6], mac_b: [u8; 6]) -> (Self, Self) {
        let a_to_b: Wire = Rc::new(RefCell::new(VecDeque::new()));
        let b_to_a: Wire = Rc::new(RefCell::new(VecDeque::new()));
        let make = |mac, inbox, outbox| Self {
            mac,
            inbox,
            outbox,
            ring: MEMORY_RING_FRAMES,
            capabilities: Capabilities::default(),
            stats: DeviceStats::default(),
        };
        (make(mac_a, b_to_a.clone(), a_to_b.clone()), make(mac_b, a_to_b, b_to_a))
    }

    /// Puts `frame` in this device's receive queue as if it had arrived
    /// (tests feed garbage this way).
    pub fn inject(&self, frame: &[u8]) {
        self.inbox.borrow_mut().push_back(frame.to_vec());
    }

    /// Takes every frame this device has sent and not yet delivered.
    pub fn drain_sent(&self) -> Vec<Vec<u8>> {
        self.outbox.borrow_mut().drain(..).collect()
    }

    /// Claims offloads (the tests check smoltcp's settings follow them).
    pub fn set_capabilities(&mut self, capabilities: Capabilities) {
        self.capabilities = capabilities;
    }

    /// Frames waiting in this device's receive queue.
    pub fn rx_queued(&self) -> usize {
        self.inbox.borrow().len()
    }
}

impl NetDevice for MemoryDevice {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn rx_pending(&mut self) -> bool {
        !self.inbox.borrow().is_empty()
    }

    fn loop_back(&mut self, frame: Vec<u8>) {
        // A loopback received the original already.
        if !Rc::ptr_eq(&self.inbox, &self.outbox) {
            self.inbox.borrow_mut().push_back(frame);
        }
    }

    fn receive<R>(&mut self, consume: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let frame = self.inbox.borrow_mut().pop_front()?;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        Some(consume(&frame))
    }

    fn tx_room(&mut self) -> bool {
        self.outbox.borrow().len() < self.ring
    }

    fn transmit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if len > self.capabilities.max_frame || !self.tx_room() {
            self.stats.tx_ring_full += 1;
            return None;
        }
        let mut frame = alloc::vec![0u8; len];
        let result = fill(&mut frame);
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        self.outbox.borrow_mut().push_back(frame);
        Some(result)
    }

    fn flush(&mut self) {
        self.stats.notifications += 1;
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

#[cfg(test)]
mod neighbour_tests {
    use super::{neighbour_discovery, tcp_syn_port, udp_destination_port};
    use proptest::prelude::*;

    /// A TCP segment from port 40000 to 80 with `flags` (a 20-byte header).
    fn tcp(v6: bool, flags: u8) -> Vec<u8> {
        let mut segment = vec![0u8; 20];
        segment[0..4].copy_from_slice(&[0x9c, 0x40, 0x00, 80]);
        segment[12] = 5 << 4;
        segment[13] = flags;
        let mut ip = if v6 { vec![0u8; 40] } else { vec![0u8; 20] };
        if v6 {
            ip[0] = 0x60;
            ip[6] = 6;
        } else {
            ip[0] = 0x45;
            ip[9] = 6;
        }
        ip.extend_from_slice(&segment);
        ethernet(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] }, &ip)
    }

    #[test]
    fn tcp_syn_ports() {
        for v6 in [false, true] {
            assert_eq!(tcp_syn_port(&tcp(v6, 0x02)), Some(80), "SYN, v6 {v6}");
            assert_eq!(tcp_syn_port(&tcp(v6, 0x02 | 0x40 | 0x80)), Some(80), "SYN with ECE+CWR (ECN setup)");
            assert_eq!(tcp_syn_port(&tcp(v6, 0x12)), None, "SYN-ACK");
            assert_eq!(tcp_syn_port(&tcp(v6, 0x06)), None, "SYN+RST");
            assert_eq!(tcp_syn_port(&tcp(v6, 0x10)), None, "ACK");
            assert_eq!(tcp_syn_port(&tcp(v6, 0x01)), None, "FIN");
            let whole = tcp(v6, 0x02);
            for cut in 0..whole.len() {
                assert_eq!(tcp_syn_port(&whole[..cut]), None, "truncated at {cut}");
            }
        }
        let mut later_fragment = tcp(false, 0x02);
        later_fragment[14 + 7] = 0x10;
        assert_eq!(tcp_syn_port(&later_fragment), None, "a later fragment");
        assert_eq!(tcp_syn_port(&ipv4(17, 0, 5)), None, "UDP");
        assert_eq!(udp_destination_port(&tcp(false, 0x02)), None, "TCP is not UDP");
    }

    proptest! {
        /// Any bytes: no panic, and a SYN only where the flags say so.
        #[test]
        fn tcp_syn_port_reads_any_frame(frame in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = udp_destination_port(&frame);
            if tcp_syn_port(&frame).is_some() {
                prop_assert!(frame.len() >= 14 + 20 + 20);
            }
        }

        #[test]
        fn every_flag_combination_of_a_segment(flags in any::<u8>(), v6 in any::<bool>()) {
            let syn = flags & 0x16 == 0x02;
            prop_assert_eq!(tcp_syn_port(&tcp(v6, flags)).is_some(), syn);
        }
    }

    fn ipv4(protocol: u8, flags_and_offset: u16, header_words: u8) -> Vec<u8> {
        let mut header = vec![0u8; usize::from(header_words) * 4];
        header[0] = 0x40 | header_words;
        header[6..8].copy_from_slice(&flags_and_offset.to_be_bytes());
        header[9] = protocol;
        header.extend_from_slice(&[0x30, 0x39, 0x00, 0x07, 0, 8, 0, 0]); // ports 12345 -> 7
        ethernet([0x08, 0x00], &header)
    }

    #[test]
    fn udp_destination_ports() {
        assert_eq!(udp_destination_port(&ipv4(17, 0, 5)), Some(7));
        assert_eq!(udp_destination_port(&ipv4(17, 0x4000, 5)), Some(7), "don't fragment");
        assert_eq!(udp_destination_port(&ipv4(17, 0x2000, 5)), Some(7), "a first fragment");
        assert_eq!(udp_destination_port(&ipv4(17, 0x0010, 5)), None, "a later fragment");
        assert_eq!(udp_destination_port(&ipv4(17, 0, 6)), Some(7), "IPv4 options");
        assert_eq!(udp_destination_port(&ipv4(17, 0, 4)), None, "header too short");
        assert_eq!(udp_destination_port(&ipv4(6, 0, 5)), None, "TCP");
        let mut v6 = ipv6(17, 0x30);
        v6[14 + 42..14 + 44].copy_from_slice(&[0x01, 0xbb]);
        assert_eq!(udp_destination_port(&v6), Some(443));
        assert_eq!(udp_destination_port(&ipv6(58, 135)), None);
        assert_eq!(udp_destination_port(&ethernet([0x08, 0x06], &[0; 28])), None, "ARP");
        let whole = ipv4(17, 0, 5);
        for cut in 0..whole.len() - 4 {
            assert_eq!(udp_destination_port(&whole[..cut]), None, "truncated at {cut}");
        }
    }

    fn ethernet(ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xff; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(payload);
        frame
    }

    fn ipv6(next_header: u8, first_payload_byte: u8) -> Vec<u8> {
        let mut header = vec![0u8; 40];
        header[0] = 0x60;
        header[6] = next_header;
        header.push(first_payload_byte);
        header.extend_from_slice(&[0; 23]);
        ethernet([0x86, 0xdd], &header)
    }

    #[test]
    fn arp_and_icmpv6_neighbour_discovery_are_shared_nothing_else() {
        assert!(neighbour_discovery(&ethernet([0x08, 0x06], &[0; 28])));
        for kind in 133..=137 {
            assert!(neighbour_discovery(&ipv6(58, kind)), "ICMPv6 type {kind}");
        }
        // Echo request/reply, MLD, other types: not shared (a ping must
        // be answered once).
        for kind in [1, 128, 129, 130, 143, 138, 132] {
            assert!(!neighbour_discovery(&ipv6(58, kind)), "ICMPv6 type {kind}");
        }
        // TCP over IPv6, a hop-by-hop header first, IPv4, VLAN: not shared.
        assert!(!neighbour_discovery(&ipv6(6, 135)));
        assert!(!neighbour_discovery(&ipv6(0, 135)));
        assert!(!neighbour_discovery(&ethernet([0x08, 0x00], &[0x45; 40])));
        assert!(!neighbour_discovery(&ethernet([0x81, 0x00], &[0; 40])));
        // Truncated frames.
        assert!(!neighbour_discovery(&[]));
        assert!(!neighbour_discovery(&[0xff; 13]));
        assert!(!neighbour_discovery(&ipv6(58, 135)[..54]));
        assert!(neighbour_discovery(&ipv6(58, 135)[..55]));
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::udp_port_unreachable;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress,
        IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr,
    };

    const HOST: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
    const PEER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const HOST6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    const PEER6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    /// The first 8 bytes of a datagram from port 40000 to port 9.
    const QUOTED_UDP: [u8; 8] = [0x9c, 0x40, 0x00, 0x09, 0x00, 0x10, 0x00, 0x00];

    fn ethernet(ethertype: [u8; 2], payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(payload);
        frame
    }

    /// The peer's ICMPv4 answer to the host's datagram, with `code`.
    fn unreachable_v4(reason: Icmpv4DstUnreachable) -> Vec<u8> {
        let quoted =
            Ipv4Repr { src_addr: HOST, dst_addr: PEER, next_header: IpProtocol::Udp, payload_len: 16, hop_limit: 64 };
        let icmp = Icmpv4Repr::DstUnreachable { reason, header: quoted, data: &QUOTED_UDP };
        let ip = Ipv4Repr {
            src_addr: PEER,
            dst_addr: HOST,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut bytes = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
        let checksum = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]), &checksum);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[ip.buffer_len()..]), &checksum);
        ethernet([0x08, 0x00], &bytes)
    }

    fn unreachable_v6(reason: Icmpv6DstUnreachable) -> Vec<u8> {
        unreachable_v6_quoting(reason, IpProtocol::Udp, &QUOTED_UDP)
    }

    /// The peer's ICMPv6 answer to a packet of `protocol` whose first 8
    /// bytes were `data`.
    fn unreachable_v6_quoting(reason: Icmpv6DstUnreachable, protocol: IpProtocol, data: &[u8]) -> Vec<u8> {
        let quoted =
            Ipv6Repr { src_addr: HOST6, dst_addr: PEER6, next_header: protocol, payload_len: 20, hop_limit: 64 };
        let icmp = Icmpv6Repr::DstUnreachable { reason, header: quoted, data };
        let ip = Ipv6Repr {
            src_addr: PEER6,
            dst_addr: HOST6,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut bytes = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut bytes[..]));
        let checksum = ChecksumCapabilities::default();
        icmp.emit(&PEER6, &HOST6, &mut Icmpv6Packet::new_unchecked(&mut bytes[40..]), &checksum);
        ethernet([0x86, 0xdd], &bytes)
    }

    #[test]
    fn a_port_unreachable_names_the_socket_and_the_peer() {
        let v4 = unreachable_v4(Icmpv4DstUnreachable::PortUnreachable);
        assert_eq!(udp_port_unreachable(&v4), Some((40000, IpEndpoint::new(IpAddress::Ipv4(PEER), 9))));
        let v6 = unreachable_v6(Icmpv6DstUnreachable::PortUnreachable);
        assert_eq!(udp_port_unreachable(&v6), Some((40000, IpEndpoint::new(IpAddress::Ipv6(PEER6), 9))));
        // Ethernet padding after the packet is not part of it.
        let mut padded = v4.clone();
        padded.extend_from_slice(&[0; 6]);
        assert!(udp_port_unreachable(&padded).is_some(), "padding");
        // Other reasons (a host or network unreachable) are not a refusal.
        assert_eq!(udp_port_unreachable(&unreachable_v4(Icmpv4DstUnreachable::HostUnreachable)), None);
        assert_eq!(udp_port_unreachable(&unreachable_v6(Icmpv6DstUnreachable::AddrUnreachable)), None);
        for whole in [v4, v6] {
            for cut in 0..whole.len() {
                assert_eq!(udp_port_unreachable(&whole[..cut]), None, "truncated at {cut}");
            }
            // A damaged byte fails a checksum (the ICMP message's, an
            // IPv4 header's; IPv6 has no header checksum, but its
            // addresses are in the ICMPv6 checksum), or the type, the
            // version, the lengths.
            let first = if whole[12] == 0x08 { 14 } else { 14 + 8 };
            for at in first..whole.len() {
                let mut damaged = whole.clone();
                damaged[at] ^= 0x40;
                assert_eq!(udp_port_unreachable(&damaged), None, "byte {at} damaged");
            }
        }
    }

    /// The first 8 bytes of a TCP SYN from port 40000 to port 80 with
    /// sequence number 0x01020304.
    const QUOTED_TCP: [u8; 8] = [0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04];

    fn tcp_answer_v4(reason: Icmpv4DstUnreachable) -> Vec<u8> {
        // The datagram answer, its quote made a TCP segment's: the quoted
        // protocol byte and the quoted 8 bytes, then the ICMP checksum.
        let mut frame = unreachable_v4(reason);
        frame[14 + 20 + 8 + 9] = 6;
        frame[14 + 20 + 8 + 20..14 + 20 + 8 + 28].copy_from_slice(&QUOTED_TCP);
        fix_icmp_v4(&mut frame);
        frame
    }

    fn tcp_answer_v6(reason: Icmpv6DstUnreachable) -> Vec<u8> {
        unreachable_v6_quoting(reason, IpProtocol::Tcp, &QUOTED_TCP)
    }

    /// Recomputes the ICMPv4 checksum of a frame built by `unreachable_v4`.
    fn fix_icmp_v4(frame: &mut [u8]) {
        let icmp = &mut frame[14 + 20..];
        icmp[2..4].copy_from_slice(&[0, 0]);
        let mut sum: u32 =
            icmp.chunks(2).map(|pair| u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    #[test]
    fn an_answer_to_a_syn_names_the_connect_and_its_error() {
        use super::{tcp_unreachable, TcpUnreachable};
        use crate::NetError;
        let v4 = |reason| tcp_unreachable(&tcp_answer_v4(reason)).map(|answer: TcpUnreachable| answer.error);
        let v6 = |reason| tcp_unreachable(&tcp_answer_v6(reason)).map(|answer: TcpUnreachable| answer.error);
        let answer = tcp_unreachable(&tcp_answer_v4(Icmpv4DstUnreachable::HostUnreachable)).expect("read");
        assert_eq!(answer.local_port, 40000);
        assert_eq!(answer.peer, IpEndpoint::new(IpAddress::Ipv4(PEER), 80));
        assert_eq!(answer.sequence, 0x0102_0304);
        assert_eq!(v4(Icmpv4DstUnreachable::HostUnreachable), Some(NetError::HostUnreachable));
        assert_eq!(v4(Icmpv4DstUnreachable::NetUnreachable), Some(NetError::Unreachable));
        assert_eq!(v4(Icmpv4DstUnreachable::PortUnreachable), Some(NetError::ConnectionRefused));
        assert_eq!(v4(Icmpv4DstUnreachable::ProtoUnreachable), Some(NetError::ConnectionRefused));
        assert_eq!(v4(Icmpv4DstUnreachable::CommProhibited), Some(NetError::HostUnreachable));
        assert_eq!(v4(Icmpv4DstUnreachable::FragRequired), None, "path MTU discovery, not an error");
        let answer6 = tcp_unreachable(&tcp_answer_v6(Icmpv6DstUnreachable::AddrUnreachable)).expect("read");
        assert_eq!(answer6.peer, IpEndpoint::new(IpAddress::Ipv6(PEER6), 80));
        assert_eq!(answer6.sequence, 0x0102_0304);
        assert_eq!(v6(Icmpv6DstUnreachable::AddrUnreachable), Some(NetError::HostUnreachable));
        assert_eq!(v6(Icmpv6DstUnreachable::NoRoute), Some(NetError::Unreachable));
        assert_eq!(v6(Icmpv6DstUnreachable::PortUnreachable), Some(NetError::ConnectionRefused));
        assert_eq!(v6(Icmpv6DstUnreachable::AdminProhibit), Some(NetError::PermissionDenied));
        // Answers for UDP are not a connect's, and the other way round.
        assert_eq!(tcp_unreachable(&unreachable_v4(Icmpv4DstUnreachable::HostUnreachable)), None);
        assert_eq!(udp_port_unreachable(&tcp_answer_v4(Icmpv4DstUnreachable::PortUnreachable)), None);
        for whole in
            [tcp_answer_v4(Icmpv4DstUnreachable::HostUnreachable), tcp_answer_v6(Icmpv6DstUnreachable::AddrUnreachable)]
        {
            for cut in 0..whole.len() {
                assert_eq!(tcp_unreachable(&whole[..cut]), None, "truncated at {cut}");
            }
            let first = if whole[12] == 0x08 { 14 } else { 14 + 8 };
            for at in first..whole.len() {
                let mut damaged = whole.clone();
                damaged[at] ^= 0x40;
                assert_eq!(tcp_unreachable(&damaged), None, "byte {at} damaged");
            }
        }
    }

    #[test]
    fn multicast_datagrams_are_found_and_their_ttl_set() {
        use super::{set_ipv4_ttl, udp_multicast};
        let datagram = |destination: Ipv4Address| {
            let ip = Ipv4Repr {
                src_addr: HOST,
                dst_addr: destination,
                next_header: IpProtocol::Udp,
                payload_len: 8,
                hop_limit: 64,
            };
            let mut bytes = vec![0u8; 28];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]), &ChecksumCapabilities::default());
            bytes[20..28].copy_from_slice(&QUOTED_UDP);
            ethernet([0x08, 0x00], &bytes)
        };
        let group = Ipv4Address::new(239, 1, 2, 3);
        let mut frame = datagram(group);
        assert_eq!(udp_multicast(&frame), Some((IpAddress::Ipv4(group), 40000)));
        assert_eq!(udp_multicast(&datagram(PEER)), None, "unicast");
        set_ipv4_ttl(&mut frame, 1);
        let packet = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(packet.hop_limit(), 1);
        assert!(packet.verify_checksum(), "the header checksum follows the TTL");
        for cut in 0..frame.len() {
            let mut short = frame[..cut].to_vec();
            set_ipv4_ttl(&mut short, 9);
        }
    }

    #[test]
    fn neighbour_requests_and_answers_are_read() {
        use super::{neighbour_answer, neighbour_solicited};
        let arp = |operation: u8, sender: [u8; 4], target: [u8; 4]| {
            let mut payload = vec![0, 1, 8, 0, 6, 4, 0, operation, 2, 0, 0, 0, 0, 2];
            payload.extend_from_slice(&sender);
            payload.extend_from_slice(&[0; 6]);
            payload.extend_from_slice(&target);
            ethernet([0x08, 0x06], &payload)
        };
        let request = arp(1, [10, 0, 0, 2], [10, 0, 0, 9]);
        assert_eq!(neighbour_solicited(&request), Some(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 9))));
        assert_eq!(neighbour_solicited(&arp(1, [10, 0, 0, 2], [10, 0, 0, 2])), None, "gratuitous");
        assert_eq!(neighbour_solicited(&arp(2, [10, 0, 0, 9], [10, 0, 0, 2])), None, "a reply");
        assert_eq!(
            neighbour_answer(&arp(2, [10, 0, 0, 9], [10, 0, 0, 2])),
            Some(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 9)))
        );
        assert_eq!(neighbour_answer(&request), Some(IpAddress::Ipv4(HOST)), "a request shows its sender");
        let icmpv6 = |kind: u8, source: Ipv6Address, target: Ipv6Address| {
            let mut ip = vec![0x60, 0, 0, 0, 0, 24, 58, 255];
            ip.extend_from_slice(&source.octets());
            ip.extend_from_slice(&PEER6.octets());
            ip.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
            ip.extend_from_slice(&target.octets());
            ethernet([0x86, 0xdd], &ip)
        };
        assert_eq!(neighbour_solicited(&icmpv6(135, HOST6, PEER6)), Some(IpAddress::Ipv6(PEER6)));
        assert_eq!(
            neighbour_solicited(&icmpv6(135, Ipv6Address::UNSPECIFIED, PEER6)),
            None,
            "duplicate address detection"
        );
        assert_eq!(neighbour_answer(&icmpv6(136, PEER6, PEER6)), Some(IpAddress::Ipv6(PEER6)));
        assert_eq!(neighbour_answer(&icmpv6(135, HOST6, PEER6)), None);
        for whole in [request, icmpv6(135, HOST6, PEER6)] {
            for cut in 0..whole.len() {
                assert_eq!(neighbour_solicited(&whole[..cut]), None, "truncated at {cut}");
            }
        }
    }

    /// A TCP segment from the peer's port 80 to the host's port 40000
    /// with `flags`, over IPv4 or IPv6 (the readers need no checksums).
    fn tcp_segment(v6: bool, flags: u8) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&80u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        let mut ip = Vec::new();
        if v6 {
            ip.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
            ip.extend_from_slice(&PEER6.octets());
            ip.extend_from_slice(&HOST6.octets());
        } else {
            ip.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&PEER.octets());
            ip.extend_from_slice(&HOST.octets());
        }
        ip.extend_from_slice(&tcp);
        ethernet(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] }, &ip)
    }

    #[test]
    fn a_reset_names_the_local_port_and_the_peer() {
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let v4 = IpEndpoint::new(IpAddress::Ipv4(PEER), 80);
        let v6 = IpEndpoint::new(IpAddress::Ipv6(PEER6), 80);
        assert_eq!(super::tcp_reset(&tcp_segment(false, RST)), Some((40000, v4)));
        assert_eq!(super::tcp_reset(&tcp_segment(false, RST | ACK)), Some((40000, v4)));
        assert_eq!(super::tcp_reset(&tcp_segment(true, RST | ACK)), Some((40000, v6)));
        assert_eq!(super::tcp_reset(&tcp_segment(false, ACK)), None, "no RST");
        assert_eq!(super::tcp_reset(&tcp_segment(true, 0x02)), None, "a SYN");
        // A later fragment carries no TCP header.
        let mut fragment = tcp_segment(false, RST);
        fragment[14 + 7] = 1;
        assert_eq!(super::tcp_reset(&fragment), None, "a later fragment");
        for whole in [tcp_segment(false, RST), tcp_segment(true, RST)] {
            for cut in 0..34 {
                assert_eq!(super::tcp_reset(&whole[..cut]), None, "truncated at {cut}");
            }
        }
    }

    proptest! {
        /// Any bytes: no panic.
        #[test]
        fn any_frame_is_read_without_panic(frame in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..3) {
            let mut frame = frame;
            if frame.len() >= 14 {
                frame[12..14].copy_from_slice([[0x86, 0xdd], [0x08, 0x00], [0x08, 0x06]][usize::from(kind)].as_slice());
            }
            let _ = udp_port_unreachable(&frame);
            let _ = super::tcp_unreachable(&frame);
            let _ = super::tcp_syn_sent(&frame);
            let _ = super::tcp_reset(&frame);
            let _ = super::neighbour_solicited(&frame);
            let _ = super::neighbour_answer(&frame);
            let _ = super::udp_multicast(&frame);
            let mut copy = frame.clone();
            super::set_ipv4_ttl(&mut copy, 7);
            prop_assert_eq!(copy.len(), frame.len());
        }
    }
}

#[cfg(test)]
mod sender_tests {
    use super::{
        advertisement_from, advertisement_sender, arp_reply_from, arp_request, arp_sender, ipv4_sender, ipv6_sender,
        neighbour_solicitation, neighbour_solicited, ARP_FRAME_BYTES,
    };
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::IpAddress;
    use smoltcp::wire::{
        ArpPacket, ArpRepr, EthernetFrame, Icmpv6Packet, Icmpv6Repr, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv6Address,
        Ipv6Cidr, Ipv6Packet, NdiscNeighborFlags, NdiscRepr,
    };

    const US: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 9];
    const OURS: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

    fn subnets() -> [Ipv4Cidr; 1] {
        [Ipv4Cidr::new(OURS, 24)]
    }

    /// An IPv4 packet (no payload) from `source` to `destination`, its
    /// header checksum right, from `mac` to `to`.
    fn packet(to: [u8; 6], mac: [u8; 6], source: Ipv4Address, destination: Ipv4Address) -> Vec<u8> {
        let mut frame = to.to_vec();
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&source.octets());
        frame.extend_from_slice(&destination.octets());
        Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        frame
    }

    /// The stack's own requests parse as smoltcp's would: ARP broadcast
    /// from us for the target; the solicitation to the target's
    /// solicited-node group with hop limit 255, our MAC in its option and
    /// a right checksum.
    #[test]
    fn the_stacks_own_requests_are_well_formed() {
        let target = Ipv4Address::new(10, 0, 0, 9);
        let mut out = Vec::new();
        arp_request(&mut out, target, OURS, US);
        assert_eq!(out.len(), ARP_FRAME_BYTES);
        assert_eq!(neighbour_solicited(&out), Some(IpAddress::Ipv4(target)));
        let frame = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(frame.dst_addr().as_bytes(), [0xff; 6]);
        assert_eq!(frame.src_addr().as_bytes(), US);
        let ArpRepr::EthernetIpv4 { source_hardware_addr, source_protocol_addr, .. } =
            ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap()
        else {
            panic!("not ARP for IPv4");
        };
        assert_eq!((source_hardware_addr.as_bytes(), source_protocol_addr), (&US[..], OURS));

        let target: Ipv6Address = "fd00::1:2:3:4567".parse().unwrap();
        let us: Ipv6Address = "fd00::1".parse().unwrap();
        neighbour_solicitation(&mut out, target, us, US);
        assert_eq!(neighbour_solicited(&out), Some(IpAddress::Ipv6(target)));
        let frame = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(frame.dst_addr().as_bytes(), [0x33, 0x33, 0xff, 0x03, 0x45, 0x67]);
        let ip = Ipv6Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.src_addr(), us);
        assert_eq!(ip.dst_addr(), "ff02::1:ff03:4567".parse::<Ipv6Address>().unwrap());
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&us, &ip.dst_addr()));
        let repr = Icmpv6Repr::parse(&us, &ip.dst_addr(), &icmp, &ChecksumCapabilities::default()).unwrap();
        let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr: Some(lladdr) }) = repr else {
            panic!("not a solicitation with our address: {repr:?}");
        };
        assert_eq!((target_addr, lladdr.as_bytes()), (target, &US[..]));
    }

    /// The ARP packets and advertisements smoltcp fills its cache from
    /// are read as answers; others are not.
    #[test]
    fn answers_for_us_from_the_link_are_read() {
        let host = Ipv4Address::new(10, 0, 0, 9);
        let mut frame = Vec::new();
        arp_reply_from(&mut frame, host, HOST, OURS, US);
        assert_eq!(arp_sender(&frame, &subnets()), Some((host, HOST)));
        arp_request(&mut frame, OURS, host, HOST);
        assert_eq!(arp_sender(&frame, &subnets()), Some((host, HOST)), "a request for us");
        for (sender, target, mac, why) in [
            (host, Ipv4Address::new(10, 0, 0, 3), HOST, "for another address"),
            (Ipv4Address::new(192, 0, 2, 9), OURS, HOST, "from off the link"),
            (Ipv4Address::new(10, 0, 0, 255), OURS, HOST, "from the broadcast address"),
            (host, OURS, [0xff; 6], "from the broadcast MAC"),
        ] {
            arp_reply_from(&mut frame, sender, mac, target, US);
            assert_eq!(arp_sender(&frame, &subnets()), None, "{why}");
        }
        arp_reply_from(&mut frame, host, HOST, OURS, US);
        frame[21] = 9;
        assert_eq!(arp_sender(&frame, &subnets()), None, "an unknown operation");

        let ours: Ipv6Address = "fd00::1".parse().unwrap();
        let host: Ipv6Address = "fd00::9".parse().unwrap();
        let subnets6 = [Ipv6Cidr::new(ours, 64)];
        advertisement_from(&mut frame, host, HOST, ours, US);
        assert_eq!(advertisement_sender(&frame, &subnets6), Some((host, HOST)));
        advertisement_from(&mut frame, "fd01::9".parse().unwrap(), HOST, ours, US);
        assert_eq!(advertisement_sender(&frame, &subnets6), None, "from off the link");
        // Without the override flag smoltcp may keep what it had.
        advertisement_from(&mut frame, host, HOST, ours, US);
        let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[54..]);
        icmp.set_neighbor_flags(NdiscNeighborFlags::empty());
        icmp.fill_checksum(&host, &ours);
        assert_eq!(advertisement_sender(&frame, &subnets6), None, "no override");
        neighbour_solicitation(&mut frame, host, ours, US);
        assert_eq!(advertisement_sender(&frame, &subnets6), None, "a solicitation");
    }

    #[test]
    fn only_a_host_on_the_link_teaches_its_mac() {
        let host = Ipv4Address::new(10, 0, 0, 9);
        let good = packet(US, HOST, host, OURS);
        assert_eq!(ipv4_sender(&good, US, &subnets()), Some((host, HOST, OURS)));
        let refused = [
            (packet([0xff; 6], HOST, host, OURS), "to the broadcast MAC"),
            (packet([0x02, 0, 0, 0, 0, 2], HOST, host, OURS), "to another MAC"),
            (packet(US, [0x03, 0, 0, 0, 0, 9], host, OURS), "from a multicast MAC"),
            (packet(US, [0; 6], host, OURS), "from the zero MAC"),
            (packet(US, HOST, Ipv4Address::new(192, 0, 2, 9), OURS), "from off the link (a router's MAC)"),
            (packet(US, HOST, OURS, OURS), "from our own address"),
            (packet(US, HOST, Ipv4Address::new(10, 0, 0, 0), OURS), "from the network address"),
            (packet(US, HOST, Ipv4Address::new(10, 0, 0, 255), OURS), "from the broadcast address"),
            (packet(US, HOST, host, Ipv4Address::new(10, 0, 0, 255)), "to the subnet's broadcast"),
            (packet(US, HOST, host, Ipv4Address::new(10, 0, 0, 7)), "to an address not ours"),
        ];
        for (frame, why) in refused {
            assert_eq!(ipv4_sender(&frame, US, &subnets()), None, "{why}");
        }
        assert_eq!(ipv4_sender(&good, US, &[]), None, "no IPv4 address");
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(ipv4_sender(&arp, US, &subnets()), None, "not IPv4");
        for byte in 14..good.len() {
            let mut damaged = good.clone();
            damaged[byte] ^= 0x10;
            assert_ne!(ipv4_sender(&damaged, US, &subnets()), Some((host, HOST, OURS)), "byte {byte} damaged");
        }
        for cut in 0..good.len() {
            assert_eq!(ipv4_sender(&good[..cut], US, &subnets()), None, "truncated at {cut}");
        }
    }

    #[test]
    fn the_reply_is_an_arp_answer_from_the_host() {
        let host = Ipv4Address::new(10, 0, 0, 9);
        let mut out = vec![1, 2, 3];
        arp_reply_from(&mut out, host, HOST, OURS, US);
        assert_eq!(out.len(), ARP_FRAME_BYTES);
        let frame = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(frame.dst_addr().0, US);
        let repr = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
        } = repr
        else {
            panic!("{repr:?}")
        };
        assert_eq!(operation, smoltcp::wire::ArpOperation::Reply);
        assert_eq!((source_hardware_addr.0, source_protocol_addr, target_protocol_addr), (HOST, host, OURS));
        assert_eq!(super::neighbour_answer(&out), Some(host.into()));
    }

    /// An IPv6 packet carrying `payload` (next header `next`) from `source`
    /// to `destination`, from `mac` to `to`.
    fn packet6(to: [u8; 6], mac: [u8; 6], source: &str, destination: &str, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = to.to_vec();
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, payload.len() as u8, next, 64]);
        frame.extend_from_slice(&source.parse::<Ipv6Address>().unwrap().octets());
        frame.extend_from_slice(&destination.parse::<Ipv6Address>().unwrap().octets());
        frame.extend_from_slice(payload);
        frame
    }

    fn subnets6() -> [Ipv6Cidr; 2] {
        [Ipv6Cidr::new("fd00::1".parse().unwrap(), 64), Ipv6Cidr::new("fe80::1".parse().unwrap(), 64)]
    }

    #[test]
    fn only_a_host_on_the_link_teaches_its_mac_over_ipv6() {
        let udp = [0u8; 8];
        let good = packet6(US, HOST, "fd00::9", "fd00::1", 17, &udp);
        let host: Ipv6Address = "fd00::9".parse().unwrap();
        assert_eq!(ipv6_sender(&good, US, &subnets6()), Some((host, HOST, "fd00::1".parse().unwrap())));
        let link_local = packet6(US, HOST, "fe80::9", "fe80::1", 17, &udp);
        assert!(ipv6_sender(&link_local, US, &subnets6()).is_some(), "link-local");
        let refused = [
            (packet6([0x33, 0x33, 0, 0, 0, 1], HOST, "fd00::9", "fd00::1", 17, &udp), "to a multicast MAC"),
            (packet6(US, [0x03, 0, 0, 0, 0, 9], "fd00::9", "fd00::1", 17, &udp), "from a multicast MAC"),
            (packet6(US, HOST, "fd01::9", "fd00::1", 17, &udp), "from off the link"),
            (packet6(US, HOST, "fe80::9", "fd00::1", 17, &udp), "link-local to the global address"),
            (packet6(US, HOST, "fd00::1", "fd00::1", 17, &udp), "from our own address"),
            (packet6(US, HOST, "fd00::", "fd00::1", 17, &udp), "from the subnet-router anycast address"),
            (packet6(US, HOST, "::", "fd00::1", 17, &udp), "from the unspecified address"),
            (packet6(US, HOST, "ff02::1", "fd00::1", 17, &udp), "from a multicast address"),
            (packet6(US, HOST, "fd00::9", "fd00::7", 17, &udp), "to an address not ours"),
            (packet6(US, HOST, "fd00::9", "fd00::1", 58, &[136, 0, 0, 0]), "a neighbour advertisement"),
            (packet6(US, HOST, "fd00::9", "fd00::1", 58, &[133, 0, 0, 0]), "a router solicitation"),
        ];
        for (frame, why) in refused {
            assert_eq!(ipv6_sender(&frame, US, &subnets6()), None, "{why}");
        }
        let echo = packet6(US, HOST, "fd00::9", "fd00::1", 58, &[128, 0, 0, 0]);
        assert!(ipv6_sender(&echo, US, &subnets6()).is_some(), "an echo request teaches");
        for cut in 0..good.len() {
            assert_eq!(ipv6_sender(&good[..cut], US, &subnets6()), None, "truncated at {cut}");
        }
    }

    #[test]
    fn the_advertisement_is_a_valid_one_from_the_host() {
        let (host, ours): (Ipv6Address, Ipv6Address) = ("fd00::9".parse().unwrap(), "fd00::1".parse().unwrap());
        let mut out = Vec::new();
        advertisement_from(&mut out, host, HOST, ours, US);
        let frame = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((frame.dst_addr().0, frame.src_addr().0), (US, HOST));
        let ip = Ipv6Packet::new_checked(frame.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.hop_limit()), (host, ours, 255));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv6Repr::parse(&host, &ours, &icmp, &ChecksumCapabilities::default()).expect("checksum");
        let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr, lladdr }) = repr else {
            panic!("{repr:?}")
        };
        assert!(flags.contains(NdiscNeighborFlags::OVERRIDE));
        assert_eq!(target_addr, host);
        assert_eq!(lladdr.map(|address| address.as_bytes().to_vec()), Some(HOST.to_vec()));
        assert_eq!(super::neighbour_answer(&out), Some(host.into()));
        // Not taken for a sender itself (it is neighbour discovery).
        assert_eq!(ipv6_sender(&out, US, &subnets6()), None);
    }

    proptest! {
        /// Any bytes: no panic; whatever is taken names a unicast MAC and a
        /// host of the subnet other than ours.
        #[test]
        fn any_frame_is_read_without_panic(frame in proptest::collection::vec(any::<u8>(), 0..120), ip in any::<bool>()) {
            let mut frame = frame;
            if ip && frame.len() >= 14 {
                frame[..6].copy_from_slice(&US);
                frame[12..14].copy_from_slice(&[0x08, 0x00]);
            }
            if let Some((source, mac, us)) = ipv4_sender(&frame, US, &subnets()) {
                prop_assert!(mac[0] & 1 == 0 && us == OURS && source != OURS);
                prop_assert!(subnets()[0].contains_addr(&source));
            }
            if ip && frame.len() >= 14 {
                frame[12..14].copy_from_slice(&[0x86, 0xdd]);
            }
            if let Some((source, mac, us)) = ipv6_sender(&frame, US, &subnets6()) {
                prop_assert!(mac[0] & 1 == 0 && source != us && !source.is_multicast());
                prop_assert!(subnets6().iter().any(|cidr| cidr.address() == us && cidr.contains_addr(&source)));
            }
            if let Some((target, mac)) = advertisement_sender(&frame, &subnets6()) {
                prop_assert!(mac[0] & 1 == 0 && subnets6().iter().any(|cidr| cidr.contains_addr(&target)));
            }
            if ip && frame.len() >= 14 {
                frame[12..14].copy_from_slice(&[0x08, 0x06]);
            }
            if let Some((sender, mac)) = arp_sender(&frame, &subnets()) {
                prop_assert!(mac[0] & 1 == 0 && sender != OURS && subnets()[0].contains_addr(&sender));
            }
        }
    }
}
