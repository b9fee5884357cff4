//! Bad Ethernet frames for the network tests: what a hostile or broken
//! peer can put on the wire, addressed to the guest. Each kind is built
//! with correct checksums where that lets it reach deeper into the guest's
//! parsers (a frame with a bad IPv4 checksum stops at the IPv4 layer), then
//! random frames from a seeded generator fill the rest.
//!
//! [`inject`] sends them from inside a network namespace through an
//! `AF_PACKET` socket on the host side of the guest's tap.

use anyhow::{bail, Result};

/// A source MAC no real peer uses (locally administered).
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
const BROADCAST: [u8; 6] = [0xff; 6];

/// The frames to send to the guest at `guest_mac` / `guest_ip` from a
/// peer at `peer_ip` on the same network; `random` more from `seed`.
pub fn hostile(guest_mac: [u8; 6], guest_ip: [u8; 4], peer_ip: [u8; 4], random: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let ethernet = |destination: [u8; 6], ethertype: u16, payload: &[u8]| {
        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&PEER_MAC);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    // Runts: shorter than an Ethernet header, then a header and nothing.
    for length in [0, 1, 6, 12, 13] {
        frames.push(ethernet(guest_mac, 0x0800, &[]).into_iter().take(length).collect());
    }
    frames.push(ethernet(guest_mac, 0x0800, &[]));
    frames.push(ethernet(guest_mac, 0x0806, &[]));
    frames.push(ethernet(guest_mac, 0x86dd, &[]));
    // ARP: wrong sizes, truncated, a reply nobody asked for, a request
    // claiming the guest's own address.
    let arp = |hlen: u8, plen: u8, operation: u16, sender_ip: [u8; 4], target_ip: [u8; 4]| {
        let mut body = vec![0, 1, 8, 0, hlen, plen];
        body.extend_from_slice(&operation.to_be_bytes());
        body.extend_from_slice(&PEER_MAC);
        body.extend_from_slice(&sender_ip);
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&target_ip);
        body
    };
    frames.push(ethernet(BROADCAST, 0x0806, &arp(6, 4, 1, peer_ip, guest_ip)[..10]));
    frames.push(ethernet(BROADCAST, 0x0806, &arp(0, 4, 1, peer_ip, guest_ip)));
    frames.push(ethernet(BROADCAST, 0x0806, &arp(6, 16, 1, peer_ip, guest_ip)));
    frames.push(ethernet(BROADCAST, 0x0806, &arp(6, 4, 9, peer_ip, guest_ip)));
    frames.push(ethernet(guest_mac, 0x0806, &arp(6, 4, 2, [10, 9, 8, 7], guest_ip)));
    frames.push(ethernet(BROADCAST, 0x0806, &arp(6, 4, 1, guest_ip, guest_ip)));
    // IPv4 headers that lie about themselves.
    let ip = |version_ihl: u8, total: Option<u16>, flags_fragment: u16, protocol: u8, payload: &[u8], good: bool| {
        let ihl = usize::from(version_ihl & 0xf) * 4;
        let mut header = vec![0u8; ihl.max(20)];
        header[0] = version_ihl;
        let total = total.unwrap_or((header.len() + payload.len()) as u16);
        header[2..4].copy_from_slice(&total.to_be_bytes());
        header[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        header[6..8].copy_from_slice(&flags_fragment.to_be_bytes());
        header[8] = 64;
        header[9] = protocol;
        header[12..16].copy_from_slice(&peer_ip);
        header[16..20].copy_from_slice(&guest_ip);
        for (index, byte) in header.iter_mut().enumerate().skip(20) {
            *byte = if index == 20 { 0x44 } else { 0xff };
        }
        let checksum = internet_checksum(&header[..ihl.clamp(20, header.len())]);
        let checksum = if good { checksum } else { checksum ^ 0x5555 };
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        header.extend_from_slice(payload);
        header
    };
    let payload = [0u8; 32];
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 17, &payload, true)[..19]));
    for version_ihl in [0x40, 0x44, 0x46, 0x4f, 0x65, 0x05] {
        frames.push(ethernet(guest_mac, 0x0800, &ip(version_ihl, None, 0, 17, &payload, true)));
    }
    for total in [0, 19, 21, 1500, 65535] {
        frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, Some(total), 0, 6, &payload, true)));
    }
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 6, &payload, false)));
    // Fragments: first without the rest, overlapping, past 64 KiB, tiny.
    for flags_fragment in [0x2000, 0x2001, 0x0001, 0x1fff, 0x3fff, 0x2000 | 8191] {
        frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, flags_fragment, 17, &payload, true)));
    }
    // Unknown protocols, to a broadcast and a multicast address.
    for protocol in [0, 2, 41, 132, 255] {
        frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, protocol, &payload, true)));
    }
    // ICMP: truncated, an echo reply nobody asked for, a big echo request,
    // unreachable messages quoting garbage.
    let icmp = |kind: u8, code: u8, body: &[u8]| {
        let mut message = vec![kind, code, 0, 0];
        message.extend_from_slice(body);
        let checksum = internet_checksum(&message);
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
        message
    };
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &[8, 0], true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &icmp(0, 0, &[0, 1, 0, 1]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &icmp(8, 0, &[0x5a; 1450]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &icmp(3, 3, &[0; 3]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &icmp(3, 4, &[0xee; 40]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 1, &icmp(5, 1, &[0x45; 28]), true)));
    // UDP: lengths that lie, port 0.
    let udp = |source: u16, destination: u16, length: Option<u16>, body: &[u8]| {
        let mut datagram = Vec::new();
        datagram.extend_from_slice(&source.to_be_bytes());
        datagram.extend_from_slice(&destination.to_be_bytes());
        datagram.extend_from_slice(&length.unwrap_or(8 + body.len() as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0]);
        datagram.extend_from_slice(body);
        datagram
    };
    for length in [Some(0), Some(7), Some(9), Some(4000), None] {
        frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 17, &udp(5353, 7, length, &[1; 16]), true)));
    }
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 17, &udp(0, 0, None, &[]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 17, &udp(68, 67, None, &[0x63; 300]), true)));
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 17, &[0, 1, 2], true)));
    // TCP to the web server's port: bad data offsets, every flag at once,
    // options that overrun, a stray RST and ACK, a SYN with data.
    let tcp = |flags: u8, offset_words: u8, options: &[u8], data: &[u8]| {
        let mut segment = Vec::new();
        segment.extend_from_slice(&40000u16.to_be_bytes());
        segment.extend_from_slice(&80u16.to_be_bytes());
        segment.extend_from_slice(&0x01020304u32.to_be_bytes());
        segment.extend_from_slice(&0x0a0b0c0du32.to_be_bytes());
        segment.push(offset_words << 4);
        segment.push(flags);
        segment.extend_from_slice(&8192u16.to_be_bytes());
        segment.extend_from_slice(&[0, 0, 0, 0]);
        segment.extend_from_slice(options);
        segment.extend_from_slice(data);
        let checksum = transport_checksum(peer_ip, guest_ip, 6, &segment);
        segment[16..18].copy_from_slice(&checksum.to_be_bytes());
        segment
    };
    let segments = [
        tcp(0x02, 0, &[], &[]),
        tcp(0x02, 4, &[], &[]),
        tcp(0x02, 15, &[], &[]),
        tcp(0x02, 6, &[2, 0, 0, 0], &[]),
        tcp(0x02, 6, &[2, 1, 0, 0], &[]),
        tcp(0x02, 6, &[3, 3, 255, 0], &[]),
        tcp(0x02, 6, &[5, 10, 0, 0], &[]),
        tcp(0x02, 6, &[8, 200, 0, 0], &[]),
        tcp(0x02, 6, &[4, 2, 1, 0xff], &[]),
        tcp(0x02, 5, &[], b"GET / HTTP/1.1\r\n\r\n"),
        tcp(0xff, 5, &[], &[]),
        tcp(0x03, 5, &[], &[]),
        tcp(0x04, 5, &[], &[]),
        tcp(0x10, 5, &[], &[]),
        tcp(0x18, 5, &[], b"GET / HTTP/1.1\r\n\r\n"),
        tcp(0x01, 5, &[], &[]),
        tcp(0x00, 5, &[], &[]),
    ];
    for segment in &segments {
        frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 6, segment, true)));
    }
    frames.push(ethernet(guest_mac, 0x0800, &ip(0x45, None, 0, 6, &segments[9][..12], true)));
    // IPv6 and VLAN-tagged frames with junk inside.
    frames.push(ethernet(guest_mac, 0x86dd, &[0x60, 0, 0, 0, 0xff, 0xff, 58, 255]));
    frames.push(ethernet(guest_mac, 0x86dd, &[0x60; 60]));
    frames.push(ethernet(guest_mac, 0x8100, &[0, 1, 8, 0, 0x45, 0]));
    frames.push(ethernet(guest_mac, 0x88cc, &[0; 46]));
    // Random frames: random length and bytes after a header that reaches
    // the guest (its MAC or broadcast, a real ethertype half the time).
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const ETHERTYPES: [u16; 4] = [0x0800, 0x0806, 0x86dd, 0x8100];
    for _ in 0..random {
        let length = (next() % 1500) as usize;
        let body: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        let choice = next();
        let ethertype = if choice & 1 == 0 { ETHERTYPES[(choice >> 1) as usize % 4] } else { (choice >> 8) as u16 };
        let destination = if choice & 0x100 == 0 { guest_mac } else { BROADCAST };
        let mut frame = ethernet(destination, ethertype, &body);
        if ethertype == 0x0800 && frame.len() >= 34 && choice & 0x200 == 0 {
            // A valid IPv4 header over random contents, half the time.
            frame[14] = 0x45;
            frame[26..30].copy_from_slice(&peer_ip);
            frame[30..34].copy_from_slice(&guest_ip);
            frame[24..26].copy_from_slice(&[0, 0]);
            let checksum = internet_checksum(&frame[14..34]);
            frame[24..26].copy_from_slice(&checksum.to_be_bytes());
        }
        frames.push(frame);
    }
    frames
}

/// An ICMPv6 router advertisement (RFC 4861 section 4.2) from router
/// `router` (a link-local address) with MAC `router_mac` to all nodes,
/// announcing `prefix`/64 for autoconfiguration (on-link and autonomous).
pub fn router_advertisement(router_mac: [u8; 6], router: [u8; 16], prefix: [u8; 8]) -> Vec<u8> {
    let mut message = vec![134, 0, 0, 0, 64, 0];
    message.extend_from_slice(&1800u16.to_be_bytes()); // router lifetime, s
    message.extend_from_slice(&[0; 8]); // reachable time, retransmit timer
    message.extend_from_slice(&[1, 1]); // source link-layer address option
    message.extend_from_slice(&router_mac);
    message.extend_from_slice(&[3, 4, 64, 0xc0]); // prefix information, L and A
    message.extend_from_slice(&86_400u32.to_be_bytes()); // valid lifetime
    message.extend_from_slice(&14_400u32.to_be_bytes()); // preferred lifetime
    message.extend_from_slice(&[0; 4]);
    message.extend_from_slice(&prefix);
    message.extend_from_slice(&[0; 8]);
    let all_nodes = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&router);
    pseudo.extend_from_slice(&all_nodes);
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&message);
    let checksum = internet_checksum(&pseudo);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = vec![0x33, 0x33, 0, 0, 0, 1];
    frame.extend_from_slice(&router_mac);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(message.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255 (required)
    frame.extend_from_slice(&router);
    frame.extend_from_slice(&all_nodes);
    frame.extend_from_slice(&message);
    frame
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP or UDP checksum over the IPv4 pseudo-header and `segment`.
fn transport_checksum(source: [u8; 4], destination: [u8; 4], protocol: u8, segment: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(12 + segment.len());
    data.extend_from_slice(&source);
    data.extend_from_slice(&destination);
    data.extend_from_slice(&[0, protocol]);
    data.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    data.extend_from_slice(segment);
    internet_checksum(&data)
}

/// Sends `frames` out of interface `ifname` inside network namespace
/// `namespace`, `burst` at a time with `pause` between bursts (so the
/// tap's queue, 1000 frames, never overflows while a slow guest drains
/// it); returns how many the host kernel accepted.
pub fn inject(
    namespace: &str,
    ifname: &str,
    frames: &[Vec<u8>],
    burst: usize,
    pause: std::time::Duration,
) -> Result<usize> {
    let namespace = namespace.to_string();
    let ifname = std::ffi::CString::new(ifname)?;
    let frames = frames.to_vec();
    // A thread of its own: `setns` moves only the calling thread.
    std::thread::spawn(move || -> Result<usize> {
        crate::netns::enter(&namespace)?;
        // SAFETY: plain system calls on descriptors this thread owns; the
        // structures passed are initialised and outlive the calls.
        unsafe {
            let index = libc::if_nametoindex(ifname.as_ptr());
            if index == 0 {
                bail!("no interface {ifname:?} in the namespace");
            }
            let socket = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
            if socket < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut address: libc::sockaddr_ll = core::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            address.sll_ifindex = index as i32;
            let bound = libc::bind(
                socket,
                &address as *const libc::sockaddr_ll as *const libc::sockaddr,
                core::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if bound != 0 {
                let error = std::io::Error::last_os_error();
                libc::close(socket);
                bail!("binding to {ifname:?}: {error}");
            }
            let mut sent = 0;
            for (index, frame) in frames.iter().enumerate() {
                if index > 0 && index % burst == 0 {
                    std::thread::sleep(pause);
                }
                if libc::send(socket, frame.as_ptr().cast(), frame.len(), 0) == frame.len() as isize {
                    sent += 1;
                }
            }
            libc::close(socket);
            Ok(sent)
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the frame injector panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn checksums_are_rfc_1071() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        // A header with its checksum in place sums to zero.
        let frames = hostile(GUEST_MAC, [172, 31, 0, 2], [172, 31, 0, 1], 0, 1);
        let good_ip =
            frames.iter().find(|f| f.len() > 40 && f[12..14] == [8, 0] && f[14] == 0x45 && f[23] == 6).unwrap();
        assert_eq!(internet_checksum(&good_ip[14..34]), 0);
    }

    #[test]
    fn router_advertisements_check_out() {
        let frame = router_advertisement(
            PEER_MAC,
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfd, 0, 0, 0x32, 0, 0, 0, 0],
        );
        let payload = u16::from_be_bytes([frame[18], frame[19]]) as usize;
        assert_eq!(frame.len(), 14 + 40 + payload);
        assert_eq!(payload, 16 + 8 + 32);
        // The checksum over the pseudo-header and the message is zero.
        let mut pseudo = frame[22..54].to_vec();
        pseudo.extend_from_slice(&(payload as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&frame[54..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    #[test]
    fn the_set_is_deterministic_and_stays_within_ethernet() {
        let first = hostile(GUEST_MAC, [172, 31, 0, 2], [172, 31, 0, 1], 500, 7);
        let again = hostile(GUEST_MAC, [172, 31, 0, 2], [172, 31, 0, 1], 500, 7);
        assert_eq!(first, again);
        assert!(first.len() > 550, "{} frames", first.len());
        assert!(first.iter().all(|frame| frame.len() <= 1514), "no frame beyond the MTU");
        assert!(first.iter().any(|frame| frame.len() < 14), "runts are in");
        let other = hostile(GUEST_MAC, [172, 31, 0, 2], [172, 31, 0, 1], 500, 8);
        assert_ne!(first, other);
    }
}
