//! The offload helpers agree with smoltcp's own checksums.
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::*;
use toro_net::virtio_net::*;

fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let src = Ipv4Address::new(10, 0, 2, 15);
    let dst = Ipv4Address::new(10, 0, 2, 2);
    let tcp = TcpRepr {
        src_port: 80,
        dst_port: 40000,
        control: TcpControl::Psh,
        seq_number: TcpSeqNumber(7),
        ack_number: Some(TcpSeqNumber(9)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut frame = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    let mut i = Ipv4Packet::new_unchecked(e.payload_mut());
    ip.emit(&mut i, &caps);
    let mut t = TcpPacket::new_unchecked(i.payload_mut());
    tcp.emit(&mut t, &IpAddress::Ipv4(src), &IpAddress::Ipv4(dst), &caps);
    frame
}

#[test]
fn offload_then_device_completion_equals_smoltcp() {
    for payload in [&b""[..], b"a", b"hello", &[7u8; 999][..]] {
        let reference = tcp_frame(payload);
        let mut frame = reference.clone();
        frame[34 + 16] = 0;
        frame[34 + 17] = 0;
        let header = offload_transmit_checksum(&mut frame);
        complete_checksum(&mut frame, &header);
        assert_eq!(frame, reference, "{}", payload.len());
        assert_eq!(receive_checksum(&NetHeader::default(), &reference), RxChecksum::Good);
    }
}
