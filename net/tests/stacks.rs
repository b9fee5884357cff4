//! Two stacks talking over an in-memory link: connections, the listen
//! pool, UDP, multicast, ICMP, DNS, checksum settings and bad input
//! (garbage frames, truncated headers, bad checksums, damaged DNS answers).

use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr};
use toro_net::{
    Addressing, Capabilities, ConnectState, DnsRecord, MemoryDevice, NetDevice, NetError, Stack, StackConfig,
    TcpHandle, UdpHandle,
};

const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// A step of simulated time.
const STEP_MICROS: u64 = 1_000;

struct Link {
    server: Stack<MemoryDevice>,
    client: Stack<MemoryDevice>,
    now: u64,
}

fn statically(address: Ipv4Address) -> Addressing {
    Addressing::Static { address: Ipv4Cidr::new(address, 24), gateway: None }
}

impl Link {
    fn new(config: StackConfig) -> Self {
        Self::with_server_capabilities(config, Capabilities::default())
    }

    fn with_server_capabilities(config: StackConfig, capabilities: Capabilities) -> Self {
        let (mut server_device, client_device) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
        server_device.set_capabilities(capabilities);
        Self {
            server: Stack::new(server_device, statically(SERVER_IP), config, 0),
            client: Stack::new(client_device, statically(CLIENT_IP), StackConfig { random_seed: 7, ..config }, 0),
            now: 0,
        }
    }

    /// Polls both sides `steps` times, time advancing.
    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.now += STEP_MICROS;
            self.server.poll(self.now);
            self.client.poll(self.now);
        }
    }

    fn connect(&mut self, port: u16) -> (TcpHandle, TcpHandle) {
        let client = self.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), port)).unwrap();
        for _ in 0..100 {
            self.run(1);
            if let Ok(server) = self.server.tcp_accept(port) {
                assert_eq!(self.client.tcp_connect_state(client), Ok(ConnectState::Established));
                return (client, server);
            }
        }
        panic!("no connection");
    }
}

/// Sends `data` from `from` to `to` of the link and reads it all back.
fn transfer(link: &mut Link, client: TcpHandle, server: TcpHandle, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 4096];
    for _ in 0..100_000 {
        if sent < data.len() {
            match link.client.tcp_send(client, &data[sent..]) {
                Ok(count) => sent += count,
                Err(NetError::WouldBlock) => {}
                Err(error) => panic!("send: {error}"),
            }
        }
        link.run(1);
        loop {
            match link.server.tcp_recv(server, &mut buffer) {
                Ok(0) => break,
                Ok(count) => received.extend_from_slice(&buffer[..count]),
                Err(NetError::WouldBlock) => break,
                Err(error) => panic!("recv: {error}"),
            }
        }
        if received.len() == data.len() {
            return received;
        }
    }
    panic!("transfer stalled at {} of {}", received.len(), data.len());
}

#[test]
fn connect_transfer_both_ways_and_close() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    assert_eq!(link.server.tcp_peer(server).unwrap().addr, IpAddress::Ipv4(CLIENT_IP));
    assert_eq!(link.server.tcp_local(server).unwrap().port, 80);
    assert_eq!(link.server.tcp_nodelay(server), Ok(true), "Nagle off by default");

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(transfer(&mut link, client, server, &data), data);
    assert_eq!(transfer(&mut link, client, server, b"x"), b"x");

    // The client closes: the server reads end of stream, then closes too.
    link.client.tcp_shutdown_write(client).unwrap();
    link.run(5);
    let mut buffer = [0u8; 16];
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(0));
    assert_eq!(link.server.tcp_send(server, b"late"), Ok(4), "half-closed: the server may still send");
    link.run(5);
    assert_eq!(link.client.tcp_recv(client, &mut buffer), Ok(4));
    link.server.tcp_close(server);
    link.client.tcp_close(client);
    link.run(20);
    assert_eq!(link.server.stats().closing, 0, "closed sockets are reaped");
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Err(NetError::BadHandle));
}

#[test]
fn listen_pool_takes_a_burst_of_connects() {
    let config = StackConfig { listen_pool: 4, ..StackConfig::default() };
    let mut link = Link::new(config);
    link.server.tcp_listen(8080).unwrap();
    let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 8080);
    // Four connect at once: the pool holds them all without accept.
    let clients: Vec<_> = (0..4).map(|_| link.client.tcp_connect(remote).unwrap()).collect();
    link.run(10);
    for &client in &clients {
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established));
    }
    let accepted: Vec<_> = (0..4).map(|_| link.server.tcp_accept(8080).unwrap()).collect();
    assert_eq!(link.server.tcp_accept(8080), Err(NetError::WouldBlock));
    // After accepting, the pool is full again: four more.
    let more: Vec<_> = (0..4).map(|_| link.client.tcp_connect(remote).unwrap()).collect();
    link.run(10);
    for _ in 0..4 {
        link.server.tcp_accept(8080).unwrap();
    }
    for &client in &more {
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established));
    }
    assert_eq!(link.server.stats().accepted, 8);
    assert_eq!(accepted.len(), 4);
}

#[test]
fn a_burst_beyond_the_pool_waits_in_the_backlog() {
    // wrk -c16 against a pool of 8 saw refused connections: more SYNs at
    // once than idle listening sockets must all be taken, up to the backlog.
    let config = StackConfig { listen_pool: 4, listen_backlog: 40, ..StackConfig::default() };
    let mut link = Link::new(config);
    link.server.tcp_listen(8080).unwrap();
    let baseline = link.server.stats().sockets;
    let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 8080);
    let clients: Vec<_> = (0..44).map(|_| link.client.tcp_connect(remote).unwrap()).collect();
    link.run(20);
    let count = |link: &Link, wanted: Result<ConnectState, NetError>| {
        clients.iter().filter(|&&client| link.client.tcp_connect_state(client) == wanted).count()
    };
    // Beyond the backlog a SYN is dropped, as Linux drops it when a listen
    // queue overflows: not refused (a browser in a burst would show an
    // error), the client retransmits it.
    assert_eq!(count(&link, Ok(ConnectState::Established)), 40);
    assert_eq!(count(&link, Ok(ConnectState::Pending)), 4);
    assert_eq!(link.server.stats().listen_drops, 4);
    let mut accepted: Vec<_> = (0..40).map(|_| link.server.tcp_accept(8080).unwrap()).collect();
    assert_eq!(link.server.tcp_accept(8080), Err(NetError::WouldBlock));
    // Room made: the retransmitted SYNs (smoltcp's first retransmission
    // timeout is 1 s) are taken.
    link.run(1_500);
    assert_eq!(count(&link, Ok(ConnectState::Established)), 44);
    assert_eq!(count(&link, Err(NetError::ConnectionRefused)), 0);
    assert_eq!(link.server.stats().listen_drops, 4);
    accepted.extend((0..4).map(|_| link.server.tcp_accept(8080).unwrap()));
    // Accepted connections leave the backlog: more are taken.
    let more: Vec<_> = (0..8).map(|_| link.client.tcp_connect(remote).unwrap()).collect();
    link.run(20);
    for &client in &more {
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established));
    }
    accepted.extend((0..8).map(|_| link.server.tcp_accept(8080).unwrap()));
    // The burst is over: once its connections are gone the pool shrinks
    // back to its idle size.
    for handle in accepted {
        link.server.tcp_abort(handle);
    }
    link.run(20);
    assert_eq!(link.server.stats().sockets, baseline, "spare listening sockets are dropped after a burst");
}

#[test]
fn connect_to_a_closed_port_is_refused_and_ports_conflict() {
    let mut link = Link::new(StackConfig::default());
    let client = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 81)).unwrap();
    link.run(5);
    assert_eq!(link.client.tcp_connect_state(client), Err(NetError::ConnectionRefused));
    link.server.tcp_listen(81).unwrap();
    assert_eq!(link.server.tcp_listen(81), Err(NetError::AddrInUse));
    assert_eq!(link.server.udp_bind(81).map(|_| ()), Ok(()), "UDP and TCP ports are separate spaces");
    assert_eq!(link.server.udp_bind(81).map(|_| ()), Err(NetError::AddrInUse));
    assert_eq!(link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 0)), Err(NetError::InvalidInput));
}

/// A server that stops listening and listens again while its connections
/// are open or closing gets the port (std sets `SO_REUSEADDR` on Linux);
/// they keep their data, and new connections reach the new listener. A
/// connection this stack opened from a port keeps a listen off it.
#[test]
fn a_port_is_listened_on_again_while_its_accepted_connections_live() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    let (closing_client, closing) = link.connect(80);
    link.server.tcp_close(closing);
    link.server.tcp_unlisten(80);
    link.run(2);
    assert_eq!(link.server.tcp_listen(80), Ok(80), "an open and a closing connection do not hold the port");
    assert_eq!(link.server.tcp_listen(80), Err(NetError::AddrInUse), "a listener does");
    assert_eq!(transfer(&mut link, client, server, b"still here"), b"still here");
    let mut buffer = [0u8; 8];
    assert_eq!(link.client.tcp_recv(closing_client, &mut buffer), Ok(0), "the closed one ends cleanly");
    let (client, server) = link.connect(80);
    assert_eq!(transfer(&mut link, client, server, b"new"), b"new", "a new connection reaches the new listener");

    let outgoing = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    link.run(5);
    let port = link.client.tcp_local(outgoing).unwrap().port;
    assert_eq!(link.client.tcp_listen(port), Err(NetError::AddrInUse), "an outgoing connection's port");
    link.client.tcp_close(outgoing);
    assert_eq!(link.client.tcp_listen(port), Ok(port), "free once it is closed");
}

#[test]
fn reset_mid_connection_reads_as_reset() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    link.client.tcp_abort(client);
    link.run(5);
    let mut buffer = [0u8; 16];
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Err(NetError::ConnectionReset));
    assert_eq!(link.server.tcp_send(server, b"x"), Err(NetError::ConnectionReset));
    assert!(link.server.tcp_readable(server), "a reset wakes a reader");
}

/// `take_error`'s question: a reset counts once what arrived before it was
/// read; a clean close (both FINs) never does.
#[test]
fn a_reset_is_pending_after_the_data_before_it_and_a_clean_close_is_not() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    assert_eq!(link.server.tcp_broken(server), Ok(None), "an open connection");
    link.client.tcp_send(client, b"before the reset").unwrap();
    link.run(5);
    link.client.tcp_abort(client);
    link.run(5);
    assert_eq!(link.server.tcp_broken(server), Ok(None), "data before the reset is read first");
    let mut buffer = [0u8; 64];
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(16));
    assert_eq!(link.server.tcp_broken(server), Ok(Some(NetError::ConnectionReset)), "then the reset");
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Err(NetError::ConnectionReset));

    // Both sides close cleanly: the peer's FIN is an end, not an error,
    // in every state up to the socket's end (TIME-WAIT's, LAST-ACK's).
    let (client, server) = link.connect(80);
    link.client.tcp_shutdown_write(client).unwrap();
    link.run(5);
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(0));
    assert_eq!(link.server.tcp_broken(server), Ok(None), "the peer's FIN");
    link.server.tcp_shutdown_write(server).unwrap();
    for _ in 0..200 {
        link.run(50);
        assert_eq!(link.server.tcp_broken(server), Ok(None), "a clean close");
        assert_eq!(link.client.tcp_broken(client), Ok(None), "a clean close, the side that closed first");
    }
}

/// The first `tcp_large_sockets` sockets of a stack get large buffers
/// (a window that lets a bulk transfer run), the rest small ones, so 1000
/// connections do not take 1000 large buffers; a large socket that goes
/// frees its budget for the next one.
#[test]
fn a_few_sockets_get_large_buffers_and_the_rest_small_ones() {
    let config = StackConfig {
        tcp_rx_bytes: 4096,
        tcp_tx_bytes: 4096,
        tcp_large_bytes: 65536,
        tcp_large_sockets: 3,
        listen_pool: 2,
        ..StackConfig::default()
    };
    let mut link = Link::new(config);
    link.server.tcp_listen(80).unwrap();
    // Queues as much as the send buffer takes: its size.
    let fill = |link: &mut Link, handle| {
        let mut queued = 0;
        while let Ok(count) = link.server.tcp_send(handle, &[7u8; 8192]) {
            queued += count;
        }
        queued
    };
    let connections: Vec<_> = (0..5).map(|_| link.connect(80)).collect();
    let sizes: Vec<usize> = connections.iter().map(|&(_, server)| fill(&mut link, server)).collect();
    // The two pool sockets made at listen time and the next one were
    // large; the rest (the pool refilled) small.
    assert_eq!(sizes, [65536, 65536, 65536, 4096, 4096]);
    assert!(link.server.stats().sockets <= 3 + 5, "sockets {}", link.server.stats().sockets);
    // The large ones close (reset, freed at once): the next sockets made
    // (the pool refills as connections are taken) are large again.
    for &(_, server) in &connections[..3] {
        link.server.tcp_abort(server);
    }
    link.run(5);
    let later: Vec<_> = (0..4).map(|_| link.connect(80)).collect();
    let sizes: Vec<usize> = later.iter().map(|&(_, server)| fill(&mut link, server)).collect();
    assert_eq!(sizes.iter().filter(|&&size| size == 65536).count(), 3, "{sizes:?}");
    // The large window carries a transfer larger than the small buffer
    // byte for byte.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (client, server) = link.connect(80);
    assert_eq!(transfer(&mut link, client, server, &data), data);
}

/// A socket whose connection ended is kept (at most 16) and serves the
/// next connection or listening socket instead of a new allocation, with
/// the default options again and no trace of the old connection.
#[test]
fn ended_connections_leave_their_sockets_for_the_next_ones() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    link.server.tcp_set_ttl(server, 7).unwrap();
    link.server.tcp_set_nodelay(server, false).unwrap();
    link.server.tcp_set_timeout(server, Some(50_000)).unwrap();
    assert_eq!(transfer(&mut link, client, server, b"first"), b"first");
    link.server.tcp_send(server, b"left unread by nobody").unwrap();
    link.run(5);
    link.server.tcp_close(server);
    link.client.tcp_close(client);
    link.run(50);
    let before = link.server.stats();
    assert!(before.spare >= 1, "{before:?}");
    // A burst: every socket it needs beyond the spares is new; once it
    // ended, at most 16 are kept, the rest freed.
    let mut reused = before.reused;
    for round in 0..40 {
        let (client, server) = link.connect(80);
        if round == 0 {
            assert!(link.server.stats().reused > reused, "the pool refilled from the spares");
            reused = link.server.stats().reused;
        }
        assert_eq!(link.server.tcp_ttl(server), Ok(64), "the default TTL again");
        assert_eq!(link.server.tcp_nodelay(server), Ok(true), "Nagle off again");
        // Idle past the first connection's timeout (50 ms): no timeout now.
        link.run(80);
        assert_eq!(transfer(&mut link, client, server, b"next"), b"next", "round {round}");
        let mut buffer = [0u8; 64];
        assert_eq!(link.client.tcp_recv(client, &mut buffer), Err(NetError::WouldBlock), "nothing of the old one");
        link.server.tcp_close(server);
        link.client.tcp_close(client);
        link.run(20);
    }
    let after = link.server.stats();
    assert!(after.reused >= reused + 30, "{after:?}");
    assert!(after.spare <= 16);
    // A connect takes a spare too.
    let spare = link.client.stats().spare;
    let outgoing = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    assert_eq!(link.client.stats().spare, spare.saturating_sub(1));
    link.run(5);
    assert_eq!(link.client.tcp_connect_state(outgoing), Ok(ConnectState::Established));
}

/// A closed socket whose FIN exchange cannot end (a peer that never sends
/// its FIN; one that keeps its window shut on unsent data) is reset after
/// `close_timeout_micros`, not kept forever.
#[test]
fn a_closing_socket_that_cannot_finish_is_reset_after_its_timeout() {
    let config = StackConfig {
        tcp_rx_bytes: 4096,
        tcp_tx_bytes: 4096,
        tcp_large_sockets: 0,
        close_timeout_micros: 2_000_000,
        ..StackConfig::default()
    };
    let mut link = Link::new(config);
    link.server.tcp_listen(80).unwrap();
    // A peer that never sends its FIN: the server waits in FIN-WAIT-2.
    let (_silent, server) = link.connect(80);
    link.server.tcp_close(server);
    // A peer that stopped reading: the server's queued data never leaves.
    let (stalled, server) = link.connect(80);
    let mut queued = 0;
    for _ in 0..50 {
        queued += link.server.tcp_send(server, &[0x5au8; 1024]).unwrap_or(0);
        link.run(1);
    }
    assert!(queued > 4096 && !link.server.tcp_writable(server), "the peer's window is shut");
    link.server.tcp_close(server);
    link.run(1_500);
    assert_eq!(link.server.stats().closing, 2, "both still closing before the timeout");
    // Polls come from the stack's own deadline, as the NIC service's do.
    let delay = link.server.poll_delay_micros(link.now).expect("a deadline for the closing sockets");
    assert!(delay <= 600_000, "the stack asks to be polled by the close deadline, not later ({delay} us)");
    link.run(600);
    let stats = link.server.stats();
    assert_eq!((stats.closing, stats.closing_timed_out), (0, 2), "reset and freed at the timeout");
    let mut buffer = [0u8; 16 * 1024];
    let read = link.client.tcp_recv(stalled, &mut buffer);
    assert!(matches!(read, Ok(4096) | Err(NetError::ConnectionReset)), "{read:?}");
    link.run(5);
    while let Ok(count) = link.client.tcp_recv(stalled, &mut buffer) {
        assert!(count > 0, "a reset, not a clean end of stream");
    }
    assert_eq!(link.client.tcp_recv(stalled, &mut buffer), Err(NetError::ConnectionReset));
}

/// A stack whose connections time out after 2 s of a silent peer.
fn user_timeout() -> StackConfig {
    StackConfig {
        tcp_user_timeout_micros: Some(2_000_000),
        tcp_rx_bytes: 4096,
        tcp_tx_bytes: 4096,
        tcp_large_sockets: 0,
        ..StackConfig::default()
    }
}

impl Link {
    /// Polls the client only, for `micros`, dropping what it sends: the
    /// server has vanished. Returns the client's first send error with
    /// the time it came (from the start), or `None`.
    fn server_gone(&mut self, client: TcpHandle, micros: u64) -> Option<(NetError, u64)> {
        self.alone(false, client, micros)
    }

    /// [`Link::server_gone`] the other way: the server alone.
    fn client_gone(&mut self, server: TcpHandle, micros: u64) -> Option<(NetError, u64)> {
        self.alone(true, server, micros)
    }

    fn alone(&mut self, server: bool, handle: TcpHandle, micros: u64) -> Option<(NetError, u64)> {
        let start = self.now;
        while self.now - start < micros {
            self.now += 10 * STEP_MICROS;
            let stack = if server { &mut self.server } else { &mut self.client };
            stack.poll(self.now);
            stack.device().drain_sent();
            if let Err(error) = stack.tcp_send(handle, b"") {
                return Some((error, self.now - start));
            }
        }
        None
    }
}

/// A peer that vanishes while data waits for its ACK: after the user
/// timeout the connection ends with `TimedOut` (Linux's `ETIMEDOUT`),
/// reads and writes say so, and it counts. Before that, a connection with
/// nothing to send outlives a silent peer: the timeout is off once all
/// was acknowledged.
#[test]
fn a_connection_whose_peer_vanished_times_out_once_data_waits() {
    let mut link = Link::new(user_timeout());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    assert_eq!(transfer(&mut link, client, server, b"request"), b"request");
    link.run(10);
    // Idle, with everything acknowledged: a silent peer is no reason to end.
    assert_eq!(link.server_gone(client, 5_000_000), None, "an idle connection is not timed out");
    let mut buffer = [0u8; 64];
    assert_eq!(link.client.tcp_recv(client, &mut buffer), Err(NetError::WouldBlock));
    // Data waits for an ACK that never comes.
    assert_eq!(link.client.tcp_send(client, b"another"), Ok(7));
    let delay = link.client.poll_delay_micros(link.now).expect("a deadline while data waits");
    assert!(delay <= 2_000_000, "polled by the timeout at the latest ({delay} us)");
    let (error, after) = link.server_gone(client, 10_000_000).expect("the connection timed out");
    assert_eq!(error, NetError::TimedOut);
    assert!((2_000_000..2_500_000).contains(&after), "timed out after {after} us");
    assert_eq!(link.client.tcp_recv(client, &mut buffer), Err(NetError::TimedOut));
    assert_eq!(link.client.tcp_send(client, b"x"), Err(NetError::TimedOut));
    assert_eq!(link.client.tcp_broken(client), Ok(Some(NetError::TimedOut)), "the pending error");
    assert_eq!(link.client.stats().connections_timed_out, 1);
    link.client.tcp_close(client);
    link.now += 1_000_000;
    link.client.poll(link.now);
    assert_eq!(link.client.stats().closing, 0, "freed once closed");
    // A new connection on the reused socket starts without the error.
    link.client.device().drain_sent();
    link.server.tcp_abort(server);
    link.run(10);
    let (client, server) = link.connect(80);
    assert_eq!(transfer(&mut link, client, server, b"again"), b"again");
    assert_eq!(link.client.tcp_broken(client), Ok(None));
}

/// What the network said while the connection retransmitted is the error
/// it ends with, as Linux's soft errors: a router's ICMP host unreachable
/// for its segments gives `HostUnreachable` at the timeout (not at once:
/// the route may come back), and a peer on the link whose ARP entry
/// expired and who answers no ARP request gives the same. Both on an
/// accepted connection (a connect's stack watches for them anyway).
#[test]
fn a_timed_out_connection_reports_what_the_network_said() {
    const ROUTER: Ipv4Address = Ipv4Address::new(10, 0, 0, 254);
    let mut link = Link::new(user_timeout());
    link.server.tcp_listen(80).unwrap();
    let (_client, server) = link.connect(80);
    assert_eq!(link.server.tcp_send(server, b"data"), Ok(4));
    link.now += STEP_MICROS;
    link.server.poll(link.now);
    let sent = link.server.device().drain_sent();
    let segment = sent.iter().find(|frame| frame.len() > 54).expect("the data segment");
    link.server.device().inject(&icmp_unreachable_to(segment, 1, ROUTER, (MAC_SERVER, SERVER_IP)));
    link.now += STEP_MICROS;
    link.server.poll(link.now);
    assert_eq!(link.server.tcp_send(server, b""), Ok(0), "a soft error: the connection goes on");
    let (error, after) = link.client_gone(server, 10_000_000).expect("timed out");
    assert_eq!((error, after / 1_000_000), (NetError::HostUnreachable, 2), "after {after} us");
    assert_eq!(link.server.tcp_broken(server), Ok(Some(NetError::HostUnreachable)));
    assert_eq!(link.server.stats().connections_timed_out, 1);

    // smoltcp keeps a neighbour 60 s; then it asks ARP, and nobody answers.
    let mut link = Link::new(StackConfig { tcp_user_timeout_micros: Some(90_000_000), ..user_timeout() });
    link.server.tcp_listen(80).unwrap();
    let (_client, server) = link.connect(80);
    assert_eq!(link.server.tcp_send(server, b"data"), Ok(4));
    let (error, after) = link.client_gone(server, 100_000_000).expect("timed out");
    assert_eq!((error, after / 1_000_000), (NetError::HostUnreachable, 90), "after {after} us");
    // Ended without a RST, as Linux ends it: one to a neighbour that does
    // not answer would wait for its ARP, asked again every second (and
    // holding back the other sockets' requests), while the socket lives;
    // and it lives on as a spare after the close.
    let mut asked = 0;
    for round in 0..2 {
        if round == 1 {
            link.server.tcp_close(server);
        }
        for _ in 0..500 {
            link.now += 10 * STEP_MICROS;
            link.server.poll(link.now);
            let sent = link.server.device().drain_sent();
            asked += sent.iter().filter(|frame| toro_net::device::neighbour_solicited(frame).is_some()).count();
        }
    }
    assert_eq!(asked, 0, "ARP requests for the vanished peer after the timeout");
    assert_eq!(link.server.stats().closing, 0);
}

/// A RST for a peer whose MAC smoltcp no longer knows waits for ARP; if
/// nobody answers, it is dropped with the socket's close deadline, as
/// Linux drops what waits for a neighbour that failed: the closed socket
/// does not ask ARP for the vanished peer every second for as long as it
/// is kept (a spare, for the next connection).
#[test]
fn a_reset_for_a_vanished_neighbour_is_dropped_with_its_socket() {
    let mut link = Link::new(StackConfig { tcp_user_timeout_micros: None, ..user_timeout() });
    link.server.tcp_listen(80).unwrap();
    let (_client, server) = link.connect(80);
    assert_eq!(link.server.tcp_send(server, b"data"), Ok(4));
    // The client vanishes; its ARP entry expires (60 s) on the server.
    assert_eq!(link.client_gone(server, 70_000_000), None, "no user timeout: retransmitting");
    link.server.tcp_abort(server);
    let mut asked = Vec::new();
    for _ in 0..3_000 {
        link.now += 10 * STEP_MICROS;
        link.server.poll(link.now);
        let sent = link.server.device().drain_sent();
        asked.push(sent.iter().filter(|frame| toro_net::device::neighbour_solicited(frame).is_some()).count());
    }
    let late: usize = asked[2_000..].iter().sum();
    assert_eq!(late, 0, "ARP requests 20-30 s after the abort ({} in all)", asked.iter().sum::<usize>());
    assert_eq!(link.server.stats().closing, 0, "the socket was reaped");
}

/// A peer that is there but keeps its window shut answers the window
/// probes: however long, its connection does not time out. (smoltcp
/// probes at intervals that double up to 60 s: a user timeout above that
/// is always met by an answer.)
#[test]
fn a_peer_with_its_window_shut_is_not_timed_out() {
    let mut link = Link::new(StackConfig { tcp_user_timeout_micros: Some(90_000_000), ..user_timeout() });
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    let mut sent = 0;
    for _ in 0..100 {
        sent += link.server.tcp_send(server, &[0x5au8; 1024]).unwrap_or(0);
        link.run(1);
    }
    assert!(!link.server.tcp_writable(server), "the client's window is shut");
    for _ in 0..30_000 {
        link.now += 10 * STEP_MICROS;
        link.server.poll(link.now);
        link.client.poll(link.now);
    }
    assert_eq!(link.server.tcp_send(server, b"more"), Err(NetError::WouldBlock), "still open after 300 s");
    assert_eq!(link.server.stats().connections_timed_out, 0);
    let mut received = 0;
    let mut buffer = [0u8; 4096];
    for _ in 0..1_000 {
        while let Ok(count) = link.client.tcp_recv(client, &mut buffer) {
            received += count;
        }
        link.run(1);
    }
    assert_eq!(received, sent, "all of it arrives once the client reads");
}

/// A RST from the peer while data waits for its ACK is a reset, not a
/// timeout.
#[test]
fn a_reset_while_data_waits_is_not_a_timeout() {
    let mut link = Link::new(user_timeout());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    assert_eq!(link.client.tcp_send(client, b"lost"), Ok(4));
    assert_eq!(link.server_gone(client, 500_000), None);
    link.server.tcp_abort(server);
    link.run(20);
    assert_eq!(link.client.tcp_send(client, b"x"), Err(NetError::ConnectionReset));
    assert_eq!(link.client.tcp_broken(client), Ok(Some(NetError::ConnectionReset)));
    assert_eq!(link.client.stats().connections_timed_out, 0);
}

#[test]
fn full_send_window_blocks_then_drains() {
    let config = StackConfig { tcp_rx_bytes: 4096, tcp_tx_bytes: 4096, tcp_large_sockets: 0, ..StackConfig::default() };
    let mut link = Link::new(config);
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    // The server writes; the client never reads: the window fills.
    let chunk = [0x5au8; 1024];
    let mut sent = 0;
    for _ in 0..100 {
        match link.server.tcp_send(server, &chunk) {
            Ok(count) => sent += count,
            Err(NetError::WouldBlock) => {}
            Err(error) => panic!("{error}"),
        }
        link.run(1);
    }
    assert_eq!(sent, 8192, "the peer's window and our send buffer, no more");
    assert!(!link.server.tcp_writable(server));
    let mut buffer = [0u8; 8192];
    assert_eq!(link.client.tcp_recv(client, &mut buffer), Ok(4096));
    link.run(5);
    assert!(link.server.tcp_writable(server));
}

#[test]
fn udp_round_trip_and_truncation() {
    let mut link = Link::new(StackConfig::default());
    let (server, _) = link.server.udp_bind(7).unwrap();
    let (client, client_port) = link.client.udp_bind(0).unwrap();
    assert!(client_port >= toro_net::stack::EPHEMERAL_FIRST);
    let to_server = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 7);
    assert_eq!(link.client.udp_send_to(client, b"hello", to_server, false), Ok(5));
    link.run(3); // ARP, then the datagram
    let mut buffer = [0u8; 3];
    let (count, from) = link.server.udp_recv_from(server, &mut buffer).unwrap();
    assert_eq!((count, &buffer[..]), (3, &b"hel"[..]), "truncated to the buffer, like std");
    assert_eq!(from, IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), client_port));
    assert_eq!(link.server.udp_recv_from(server, &mut buffer), Err(NetError::WouldBlock));
    assert_eq!(link.client.udp_send_to(client, &vec![0u8; 70_000], to_server, false), Err(NetError::TooLarge));
    assert_eq!(
        link.client.udp_send_to(client, &[0u8; 1473], to_server, false),
        Err(NetError::TooLarge),
        "one frame at most"
    );
    assert_eq!(link.client.udp_send_to(client, &[0u8; 1472], to_server, false), Ok(1472));
}

#[test]
fn ping_is_answered() {
    let mut link = Link::new(StackConfig::default());
    let socket = link.client.icmp_open(0x1234).unwrap();
    link.client.icmp_echo(socket, SERVER_IP, 0x1234, 1, b"ping payload").unwrap();
    link.run(10);
    let (seq, from, size) = link.client.icmp_reply(socket).unwrap();
    assert_eq!((seq, from, size), (1, IpAddress::Ipv4(SERVER_IP), 12));
}

#[test]
fn checksum_offload_flags_reach_smoltcp() {
    // A server whose device claims verified receive checksums accepts a
    // segment whose TCP checksum is wrong; one that does not, drops it.
    for verified in [false, true] {
        let capabilities = Capabilities { rx_checksum_verified: verified, ..Capabilities::default() };
        let mut link = Link::with_server_capabilities(StackConfig::default(), capabilities);
        link.server.tcp_listen(80).unwrap();
        let (client, server) = link.connect(80);
        link.client.tcp_send(client, b"abc").unwrap();
        link.client.poll(link.now + 1);
        let mut frames = link.client.device().drain_sent();
        assert_eq!(frames.len(), 1);
        let frame = &mut frames[0];
        // Ethernet 14 + IPv4 20: the TCP checksum is at offset 16 of TCP.
        frame[14 + 20 + 16] ^= 0xff;
        link.server.device().inject(frame);
        link.server.poll(link.now + 2);
        let mut buffer = [0u8; 8];
        let got = link.server.tcp_recv(server, &mut buffer);
        if verified {
            assert_eq!(got, Ok(3));
        } else {
            assert_eq!(got, Err(NetError::WouldBlock), "bad checksum dropped");
        }
    }
}

/// A connected UDP socket hears of a datagram nobody took: the peer's
/// "port unreachable" is reported once, as `ConnectionRefused`, by the
/// next receive, send or `take_error` (as Linux reports it); a socket not
/// connected to that peer never hears of it.
#[test]
fn a_connected_udp_socket_is_told_its_peer_refused() {
    let mut link = Link::new(StackConfig::default());
    let closed = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 9);
    let (connected, _) = link.client.udp_bind(0).unwrap();
    let (elsewhere, _) = link.client.udp_bind(0).unwrap();
    let (unconnected, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_set_peer(connected, Some(closed)).unwrap();
    link.client.udp_set_peer(elsewhere, Some(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 10))).unwrap();
    assert_eq!(link.client.udp_take_error(connected), Ok(None));
    for socket in [connected, elsewhere, unconnected] {
        link.client.udp_send_to(socket, b"anyone?", closed, false).unwrap();
    }
    link.run(5);
    assert!(link.client.udp_readable(connected), "a refusal wakes a receiver");
    let mut buffer = [0u8; 16];
    assert_eq!(link.client.udp_recv_from(connected, &mut buffer), Err(NetError::ConnectionRefused));
    assert_eq!(link.client.udp_recv_from(connected, &mut buffer), Err(NetError::WouldBlock), "reported once");
    assert_eq!(link.client.udp_take_error(elsewhere), Ok(None), "connected to another peer");
    assert_eq!(link.client.udp_take_error(unconnected), Ok(None), "not connected");
    assert_eq!(link.client.udp_recv_from(unconnected, &mut buffer), Err(NetError::WouldBlock));
    // Refused again: the next send reports it, then sends again.
    link.client.udp_send_to(connected, b"still?", closed, false).unwrap();
    link.run(5);
    assert!(!link.client.udp_readable(elsewhere));
    assert_eq!(link.client.udp_send_to(connected, b"x", closed, false), Err(NetError::ConnectionRefused));
    assert_eq!(link.client.udp_send_to(connected, b"x", closed, false), Ok(1));
    link.run(5);
    assert_eq!(link.client.udp_take_error(connected), Ok(Some(NetError::ConnectionRefused)));
    assert_eq!(link.client.udp_take_error(connected), Ok(None));
    // Once the port is served, the datagrams arrive and nothing is refused.
    let (server, _) = link.server.udp_bind(9).unwrap();
    link.client.udp_send_to(connected, b"now", closed, false).unwrap();
    link.run(5);
    assert_eq!(link.server.udp_recv_from(server, &mut buffer).map(|(count, _)| count), Ok(3));
    assert_eq!(link.client.udp_take_error(connected), Ok(None));
    // A new peer clears what was not reported.
    link.server.udp_close(server);
    link.client.udp_send_to(connected, b"gone", closed, false).unwrap();
    link.run(5);
    link.client.udp_set_peer(connected, Some(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 11))).unwrap();
    assert_eq!(link.client.udp_take_error(connected), Ok(None));
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn internet_checksum(bytes: &[u8]) -> [u8; 2] {
    let mut sum: u32 =
        bytes.chunks(2).map(|pair| u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// A router's ICMPv4 destination unreachable with `code`, from `router`
/// to the client, quoting the IPv4 header and first 8 bytes of `sent`
/// (a frame the client sent).
fn icmp_unreachable_for(sent: &[u8], code: u8, router: Ipv4Address) -> Vec<u8> {
    icmp_unreachable_to(sent, code, router, (MAC_CLIENT, CLIENT_IP))
}

/// [`icmp_unreachable_for`] to another host (`to`: its MAC and address).
fn icmp_unreachable_to(sent: &[u8], code: u8, router: Ipv4Address, to: ([u8; 6], Ipv4Address)) -> Vec<u8> {
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&sent[14..14 + 20 + 8]);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum);
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&router.octets());
    ip.extend_from_slice(&to.1.octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum);
    let mut frame = to.0.to_vec();
    frame.extend_from_slice(&MAC_SERVER);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend(ip);
    frame.extend(icmp);
    frame
}

/// A connect whose SYN a router answers with an ICMP destination
/// unreachable fails at once with the error Linux gives (`connect`'s
/// "no route to host", "network unreachable", "connection refused"),
/// instead of retransmitting until its timeout. An answer that does not
/// quote the SYN's sequence number, port and peer is not believed (an
/// off-path guess, RFC 5927), nor is "fragmentation needed".
#[test]
fn a_connect_answered_with_an_icmp_unreachable_fails_with_its_error() {
    const ROUTER: Ipv4Address = Ipv4Address::new(10, 0, 0, 254);
    let cases = [
        (1, NetError::HostUnreachable),
        (0, NetError::Unreachable),
        (3, NetError::ConnectionRefused),
        (13, NetError::HostUnreachable),
    ];
    for (code, error) in cases {
        let mut link = Link::new(StackConfig::default());
        link.server.tcp_listen(81).unwrap();
        link.connect(81);
        let client = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
        link.now += STEP_MICROS;
        link.client.poll(link.now);
        let sent = link.client.device().drain_sent();
        let syn = sent.into_iter().find(|frame| toro_net::device::tcp_syn_port(frame) == Some(80)).expect("a SYN");
        let mut other_sequence = syn.clone();
        other_sequence[14 + 20 + 7] ^= 1;
        let mut other_port = syn.clone();
        other_port[14 + 20 + 3] ^= 1;
        let fragmentation_needed = icmp_unreachable_for(&syn, 4, ROUTER);
        for unbelieved in [
            icmp_unreachable_for(&other_sequence, code, ROUTER),
            icmp_unreachable_for(&other_port, code, ROUTER),
            fragmentation_needed,
        ] {
            link.client.device().inject(&unbelieved);
            link.now += STEP_MICROS;
            link.client.poll(link.now);
            assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Pending), "code {code}");
        }
        link.client.device().inject(&icmp_unreachable_for(&syn, code, ROUTER));
        link.now += STEP_MICROS;
        link.client.poll(link.now);
        assert_eq!(link.client.tcp_connect_state(client), Err(error), "code {code}");
        assert_eq!(link.client.stats().connects_unreachable, 1);
        link.client.tcp_abort(client);
        // The stack goes on connecting.
        link.connect(81);
    }
}

/// A connect to an address nobody has on the link fails with
/// `HostUnreachable` after 3 unanswered ARP requests over 3 s, as Linux's
/// ("no route to host"), and so does one routed through a gateway that
/// never answers; smoltcp alone would ask for ever.
#[test]
fn a_connect_whose_next_hop_never_answers_fails_after_three_seconds() {
    const ROUTER: Ipv4Address = Ipv4Address::new(10, 0, 0, 254);
    let (server_device, client_device) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let client_addressing = Addressing::Static { address: Ipv4Cidr::new(CLIENT_IP, 24), gateway: Some(ROUTER) };
    let mut link = Link {
        server: Stack::new(server_device, statically(SERVER_IP), StackConfig::default(), 0),
        client: Stack::new(
            client_device,
            client_addressing,
            StackConfig { random_seed: 7, ..StackConfig::default() },
            0,
        ),
        now: 0,
    };
    link.server.tcp_listen(80).unwrap();
    let addresses = [Ipv4Address::new(10, 0, 0, 99), Ipv4Address::new(192, 0, 2, 1)];
    for (round, address) in addresses.into_iter().enumerate() {
        let start = link.now;
        let connect = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(address), 80)).unwrap();
        let mut requests = 0;
        let ended = loop {
            assert!(link.now - start < 10_000_000, "{address}: still pending after 10 s");
            link.now += 10 * STEP_MICROS;
            link.client.poll(link.now);
            for frame in link.client.device().drain_sent() {
                requests += usize::from(toro_net::device::neighbour_solicited(&frame).is_some());
                link.server.device().inject(&frame);
            }
            link.server.poll(link.now);
            match link.client.tcp_connect_state(connect) {
                Ok(ConnectState::Pending) => {}
                state => break (state, link.now - start),
            }
        };
        assert_eq!(ended.0, Err(NetError::HostUnreachable), "{address}");
        assert!((3_000_000..3_200_000).contains(&ended.1), "{address}: ended after {} us", ended.1);
        assert!((3..=4).contains(&requests), "{address}: {requests} requests");
        assert_eq!(link.client.stats().connects_unreachable, round as u64 + 1);
        // Forgotten without a RST: nothing more is sent for it.
        link.client.tcp_abort(connect);
        for _ in 0..200 {
            link.now += 10 * STEP_MICROS;
            link.client.poll(link.now);
            let sent = link.client.device().drain_sent();
            assert!(sent.iter().all(|frame| toro_net::device::neighbour_solicited(frame).is_none()), "{address}");
        }
    }
    // A neighbour that answers is reached.
    link.connect(80);
}

/// A TCP SYN header from `source_port` to `port`, its checksum left 0.
fn syn_segment(source_port: u16, port: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&source_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp
}

/// A TCP SYN to the server's `port` from `(mac, address, source port)`, as
/// a host on the link sends it (checksums filled in).
fn syn_from(mac: [u8; 6], address: Ipv4Address, source_port: u16, port: u16) -> Vec<u8> {
    let mut tcp = syn_segment(source_port, port);
    let mut pseudo = address.octets().to_vec();
    pseudo.extend_from_slice(&SERVER_IP.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum);
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&address.octets());
    ip.extend_from_slice(&SERVER_IP.octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum);
    let mut frame = MAC_SERVER.to_vec();
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend(ip);
    frame.extend(tcp);
    frame
}

/// The SYN-ACKs among `frames`: (destination MAC, destination address).
fn syn_acks(frames: &[Vec<u8>]) -> Vec<([u8; 6], [u8; 4])> {
    frames
        .iter()
        .filter(|frame| frame.len() >= 54 && frame[12..14] == [0x08, 0x00] && frame[23] == 6 && frame[47] == 0x12)
        .map(|frame| (frame[..6].try_into().unwrap(), frame[30..34].try_into().unwrap()))
        .collect()
}

/// Hosts on the link reach the server with no ARP round trip and no
/// second's wait: smoltcp drops a packet whose next hop it must resolve
/// and asks for one neighbour a second per interface, and it keeps 8
/// neighbours by default, so before, of 32 hosts whose SYNs arrived at
/// once (as from a host with many addresses, or after the entries expired)
/// one ARP request went out and no SYN-ACK, and the rest waited a second
/// each for their turn. The stack now learns a host's MAC from the frames
/// it sends (only a valid IPv4 header, to this MAC, from an address on
/// the link) and keeps 128 neighbours (Linux's `gc_thresh1`). A host off
/// the link teaches nothing: its answers go through the gateway.
#[test]
fn hosts_on_the_link_are_answered_without_asking_arp() {
    const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 0, 254);
    const HOSTS: u8 = 32;
    let (device, _peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let addressing = Addressing::Static { address: Ipv4Cidr::new(SERVER_IP, 24), gateway: Some(GATEWAY) };
    let mut server = Stack::new(device, addressing, StackConfig::default(), 0);
    server.tcp_listen(80).unwrap();
    server.poll(1_000);
    server.device().drain_sent();
    let host = |index: u8| ([0x02, 0, 0, 0, 1, index], Ipv4Address::new(10, 0, 0, 100 + index));
    for index in 0..HOSTS {
        let (mac, address) = host(index);
        server.device().inject(&syn_from(mac, address, 40_000 + u16::from(index), 80));
    }
    // Off the link: answered through the gateway, once it is resolved.
    let far = Ipv4Address::new(192, 0, 2, 7);
    server.device().inject(&syn_from([0x02, 0, 0, 0, 2, 1], far, 40_100, 80));
    server.poll(2_000);
    let sent = server.device().drain_sent();
    let mut answered = syn_acks(&sent);
    answered.sort();
    let expected: Vec<_> = (0..HOSTS).map(|index| (host(index).0, host(index).1.octets())).collect();
    assert_eq!(answered, expected, "every host on the link answered at once, at its own MAC");
    let asked: Vec<_> = sent.iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    assert_eq!(asked, [IpAddress::Ipv4(GATEWAY)], "ARP asked only for the gateway");
    assert_eq!(server.stats().neighbours_learned, u64::from(HOSTS));
    // The gateway answers: the far host's SYN-ACK goes to the gateway's MAC.
    let gateway_mac = [0x02, 0, 0, 0, 0, 0xfe];
    let mut reply = MAC_SERVER.to_vec();
    reply.extend_from_slice(&gateway_mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&gateway_mac);
    reply.extend_from_slice(&GATEWAY.octets());
    reply.extend_from_slice(&MAC_SERVER);
    reply.extend_from_slice(&SERVER_IP.octets());
    server.device().inject(&reply);
    let mut now = 2_000;
    let mut far_answer = Vec::new();
    while far_answer.is_empty() && now < 3_000_000 {
        now += 10_000;
        server.poll(now);
        far_answer = syn_acks(&server.device().drain_sent());
    }
    assert_eq!(far_answer, [(gateway_mac, far.octets())]);
    assert_eq!(server.stats().neighbours_learned, u64::from(HOSTS), "the far host taught nothing");
}

/// [`syn_from`] over IPv6, to the server's `fd00::1`.
fn syn_from6(mac: [u8; 6], address: smoltcp::wire::Ipv6Address, source_port: u16, port: u16) -> Vec<u8> {
    let server: smoltcp::wire::Ipv6Address = "fd00::1".parse().unwrap();
    let mut tcp = syn_segment(source_port, port);
    let mut pseudo = address.octets().to_vec();
    pseudo.extend_from_slice(&server.octets());
    pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum);
    let mut frame = MAC_SERVER.to_vec();
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, 6, 64]);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&server.octets());
    frame.extend(tcp);
    frame
}

/// [`hosts_on_the_link_are_answered_without_asking_arp`] over IPv6: the
/// stack hands smoltcp a neighbour advertisement from each host, so no
/// neighbour solicitation goes out and every SYN is answered in the same
/// poll (before, one solicitation and no answer: smoltcp asks for one
/// neighbour a second).
#[test]
fn ipv6_hosts_on_the_link_are_answered_without_soliciting_them() {
    const HOSTS: u8 = 32;
    let mut link = ipv6_link(statically(SERVER_IP));
    link.server.tcp_listen(80).unwrap();
    link.server.poll(1_000);
    link.server.device().drain_sent();
    let host = |index: u8| {
        let address = smoltcp::wire::Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(index));
        ([0x02, 0, 0, 0, 1, index], address)
    };
    for index in 0..HOSTS {
        let (mac, address) = host(index);
        link.server.device().inject(&syn_from6(mac, address, 40_000 + u16::from(index), 80));
    }
    link.server.poll(2_000);
    let sent = link.server.device().drain_sent();
    let mut answered: Vec<([u8; 6], [u8; 16])> = sent
        .iter()
        .filter(|frame| frame.len() >= 74 && frame[12..14] == [0x86, 0xdd] && frame[20] == 6 && frame[67] == 0x12)
        .map(|frame| (frame[..6].try_into().unwrap(), frame[38..54].try_into().unwrap()))
        .collect();
    answered.sort();
    let expected: Vec<_> = (0..HOSTS).map(|index| (host(index).0, host(index).1.octets())).collect();
    assert_eq!(answered, expected, "every host on the link answered at once, at its own MAC");
    let asked: Vec<_> = sent.iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    assert!(asked.is_empty(), "solicited {asked:?}");
    assert_eq!(link.server.stats().neighbours_learned, u64::from(HOSTS));
}

/// Valid frames from the client, for the fuzzers to damage: a SYN, a
/// request segment, a datagram.
fn sample_frames() -> Vec<Vec<u8>> {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, _server) = link.connect(80);
    // Another connect, its SYN taken off the wire (the neighbour is known).
    link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    link.client.poll(link.now + 1);
    let syn =
        link.client.device().drain_sent().into_iter().find(|frame| toro_net::device::tcp_syn_port(frame) == Some(80));
    link.client.tcp_send(client, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    link.client.poll(link.now + 2);
    let mut frames = link.client.device().drain_sent();
    let (udp, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(udp, b"datagram", IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 9), false).unwrap();
    link.client.poll(link.now + 3);
    frames.extend(link.client.device().drain_sent());
    // A datagram to a multicast group the fuzzed server joined.
    link.client.udp_send_to(udp, b"to the group", IpEndpoint::new(IpAddress::Ipv4(GROUP), 5353), false).unwrap();
    link.client.poll(link.now + 4);
    frames.extend(link.client.device().drain_sent());
    frames.push(syn.expect("the client sent a SYN"));
    frames.push(igmp_general_query());
    frames.push(host_unreachable_for_the_server());
    // Last: the fuzz test reuses it.
    frames.push(port_unreachable_for_the_server());
    frames
}

/// The peer of the fuzzed server's connect: the client's closed port 9.
const CONNECT_PEER: IpEndpoint = IpEndpoint { addr: IpAddress::Ipv4(CLIENT_IP), port: 9 };

/// A router's ICMP host unreachable for the SYN of the server's connect
/// to `CONNECT_PEER`.
fn host_unreachable_for_the_server() -> Vec<u8> {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_connect(CONNECT_PEER).unwrap();
    for _ in 0..10 {
        link.now += STEP_MICROS;
        link.server.poll(link.now);
        for frame in link.server.device().drain_sent() {
            if toro_net::device::tcp_syn_port(&frame) == Some(CONNECT_PEER.port) {
                return icmp_unreachable_to(&frame, 1, Ipv4Address::new(10, 0, 0, 254), (MAC_SERVER, SERVER_IP));
            }
            link.client.device().inject(&frame);
        }
        link.client.poll(link.now);
    }
    panic!("the server sent no SYN");
}

/// The server's connected UDP socket in the fuzz test: port 7777, its
/// peer a closed port of the client.
const REFUSED_PORT: u16 = 7777;
const CLOSED_PEER: IpEndpoint = IpEndpoint { addr: IpAddress::Ipv4(CLIENT_IP), port: 9 };

/// The client's ICMP port unreachable for a datagram the server sent
/// from port 7777 to the client's closed port 9.
fn port_unreachable_for_the_server() -> Vec<u8> {
    let mut link = Link::new(StackConfig::default());
    let (udp, _) = link.server.udp_bind(REFUSED_PORT).unwrap();
    // The first one resolves the neighbours both ways (ARP).
    link.server.udp_send_to(udp, b"anyone?", CLOSED_PEER, false).unwrap();
    link.run(10);
    link.server.udp_send_to(udp, b"anyone?", CLOSED_PEER, false).unwrap();
    for _ in 0..5 {
        link.now += STEP_MICROS;
        link.server.poll(link.now);
        link.client.poll(link.now);
        let sent = link.client.device().drain_sent();
        if let Some(frame) = sent.into_iter().find(|frame| toro_net::device::udp_port_unreachable(frame).is_some()) {
            return frame;
        }
    }
    panic!("the client sent no port unreachable");
}

/// A multicast group for the tests.
const GROUP: Ipv4Address = Ipv4Address::new(239, 1, 2, 3);

/// A router's IGMPv2 general query (to 224.0.0.1, TTL 1): members answer
/// with reports.
fn igmp_general_query() -> Vec<u8> {
    let checksum = internet_checksum;
    let mut frame = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    frame.extend([0x02, 0, 0x5e, 0, 0, 0xfe, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 1, 2, 0, 0, 10, 0, 0, 254, 224, 0, 0, 1];
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum);
    let mut igmp = vec![0x11, 100, 0, 0, 0, 0, 0, 0];
    let sum = checksum(&igmp);
    igmp[2..4].copy_from_slice(&sum);
    frame.extend(ip);
    frame.extend(igmp);
    frame
}

#[test]
fn garbage_truncated_and_corrupt_frames_leave_the_stack_serving() {
    let samples = sample_frames();
    assert!(samples.len() >= 3);
    // Port 80's backlog is full (two connections never accepted), so the
    // damaged frames also pass the SYN drop; port 81 listens with room.
    let config = StackConfig { listen_pool: 1, listen_backlog: 2, ..StackConfig::default() };
    let mut link = Link::new(config);
    link.server.tcp_listen(80).unwrap();
    link.server.tcp_listen(81).unwrap();
    // A member of a group: the datagrams to it and the queries for it
    // reach smoltcp's multicast paths.
    let (member, _) = link.server.udp_bind(5353).unwrap();
    link.server.udp_join_multicast(member, IpAddress::Ipv4(GROUP)).unwrap();
    // A connected socket: the damaged port unreachables reach the parser.
    let (connected, _) = link.server.udp_bind(REFUSED_PORT).unwrap();
    link.server.udp_set_peer(connected, Some(CLOSED_PEER)).unwrap();
    // A connect of the server's own: the damaged ICMP answers to its SYN
    // and ARP frames reach the parsers that end connects.
    link.server.tcp_connect(CONNECT_PEER).unwrap();
    let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80);
    let waiting: Vec<_> = (0..2).map(|_| link.client.tcp_connect(remote).unwrap()).collect();
    link.run(5);
    for &client in &waiting {
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established));
    }
    let baseline = link.server.stats().sockets;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..3000 {
        let sample = &samples[round % samples.len()];
        // Every sample meets every kind of damage, whatever their count.
        let frame: Vec<u8> = match (round / samples.len()) % 4 {
            // Truncated at every length.
            0 => sample[..(random() as usize % sample.len())].to_vec(),
            // Random bytes, random length.
            1 => (0..random() % 1600).map(|_| random() as u8).collect(),
            // One flipped byte (bad checksums, bad lengths, bad flags).
            2 => {
                let mut frame = sample.clone();
                let at = random() as usize % frame.len();
                frame[at] ^= (random() as u8) | 1;
                frame
            }
            // Valid headers, random tail.
            _ => {
                let mut frame = sample.clone();
                for byte in frame.iter_mut().skip(34) {
                    *byte = random() as u8;
                }
                frame
            }
        };
        link.server.device().inject(&frame);
        link.run(1);
    }
    assert!(link.server.stats().listen_drops > 0, "the fuzzed SYNs for the full port were dropped");
    // Still serving: a new connection carries data.
    let (client, server) = link.connect(81);
    assert_eq!(transfer(&mut link, client, server, b"still here"), b"still here");
    link.client.tcp_close(client);
    link.server.tcp_close(server);
    link.run(50);
    // Damaged SYNs may have opened handshakes in port 81's pool; nothing
    // leaked beyond the pool and the replaced socket.
    assert!(link.server.stats().sockets <= baseline + 1, "sockets {} vs {baseline}", link.server.stats().sockets);
    // Port 80 is served again once its backlog is accepted.
    for _ in 0..2 {
        link.server.tcp_accept(80).unwrap();
    }
    let (client, server) = link.connect(80);
    assert_eq!(transfer(&mut link, client, server, b"room again"), b"room again");
    // Still a member: a datagram to the group arrives.
    let mut buffer = [0u8; 64];
    while link.server.udp_recv_from(member, &mut buffer).is_ok() {}
    let (udp, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(udp, b"after", IpEndpoint::new(IpAddress::Ipv4(GROUP), 5353), false).unwrap();
    link.run(3);
    assert_eq!(link.server.udp_recv_from(member, &mut buffer).map(|(count, _)| count), Ok(5));
    // A copy with another sender's MAC is as good as the real one; none
    // damaged elsewhere is believed (device.rs's unit tests). A copy for
    // another MAC is not for this interface; the real one is.
    let _ = link.server.udp_take_error(connected);
    let mut elsewhere = samples.last().unwrap().clone();
    elsewhere[5] ^= 0x01;
    link.server.device().inject(&elsewhere);
    link.run(1);
    assert_eq!(link.server.udp_take_error(connected), Ok(None), "a port unreachable for another MAC was believed");
    link.server.device().inject(samples.last().unwrap());
    link.run(1);
    assert_eq!(link.server.udp_take_error(connected), Ok(Some(NetError::ConnectionRefused)));
}

/// A general query is answered with a report for each group joined.
#[test]
fn a_general_query_is_answered_with_reports() {
    let (device, mut peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let mut stack = Stack::new(device, statically(SERVER_IP), StackConfig::default(), 0);
    let (socket, _) = stack.udp_bind(5000).unwrap();
    stack.udp_join_multicast(socket, IpAddress::Ipv4(GROUP)).unwrap();
    stack.poll(1_000);
    while peer.receive(|_| ()).is_some() {}
    stack.device().inject(&igmp_general_query());
    let mut reports = Vec::new();
    // IGMPv2 answers after a random delay of up to the query's 10 s.
    for step in 2..12_000u64 {
        stack.poll(step * 1_000);
        while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
            if frame.len() > 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 2 {
                reports.push(frame);
            }
        }
    }
    assert_eq!(reports.len(), 1, "one report for the one group");
    assert_eq!(reports[0][30..34], GROUP.octets());
}

#[test]
fn dhcp_without_a_server_leaves_no_address() {
    let (device, _peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let mut stack = Stack::new(device, Addressing::Dhcp, StackConfig::default(), 0);
    for step in 1..50 {
        stack.poll(step * 100_000);
    }
    assert_eq!(stack.ipv4(), None);
    assert!(stack.device().stats().tx_frames >= 1, "DHCPDISCOVER sent");
}

#[test]
fn loopback_connects_to_itself() {
    let device = MemoryDevice::loopback(MAC_SERVER);
    let mut stack = Stack::new(device, statically(Ipv4Address::new(127, 0, 0, 1)), StackConfig::default(), 0);
    stack.tcp_listen(5000).unwrap();
    let client = stack.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(127, 0, 0, 1)), 5000)).unwrap();
    let mut now = 0;
    let server = loop {
        now += 1000;
        stack.poll(now);
        if let Ok(server) = stack.tcp_accept(5000) {
            break server;
        }
        assert!(now < 1_000_000, "no loopback connection");
    };
    stack.tcp_send(client, b"self").unwrap();
    stack.poll(now + 1);
    stack.poll(now + 2);
    let mut buffer = [0u8; 8];
    assert_eq!(stack.tcp_recv(server, &mut buffer), Ok(4));
}

#[test]
fn ipv6_link_local_and_static_addresses_carry_tcp() {
    let server_ip6: smoltcp::wire::Ipv6Address = "fd00::1".parse().unwrap();
    let mut link = ipv6_link(statically(SERVER_IP));
    let server_addresses = link.server.ipv6_cidrs();
    let link_local = toro_net::link_local(MAC_SERVER);
    assert!(server_addresses.contains(&link_local), "{server_addresses:?}");
    assert_eq!(server_addresses.len(), 2);
    link.server.tcp_listen(80).unwrap();
    for target in [IpAddress::Ipv6(server_ip6), IpAddress::Ipv6(link_local.address())] {
        let client = link.client.tcp_connect(IpEndpoint::new(target, 80)).unwrap();
        // smoltcp drops the first SYN while it resolves the neighbour (as
        // with ARP) and sends it again at its retransmission timeout.
        for _ in 0..3000 {
            link.run(1);
            if link.client.tcp_connect_state(client) != Ok(ConnectState::Pending) {
                break;
            }
        }
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established), "to {target}");
        link.run(3);
        let server = link.server.tcp_accept(80).unwrap();
        assert_eq!(link.client.tcp_send(client, b"over v6"), Ok(7));
        link.run(5);
        let mut buffer = [0u8; 16];
        assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(7));
        assert_eq!(&buffer[..7], b"over v6");
    }
    // IPv4 goes on working beside it.
    let client = link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    for _ in 0..3000 {
        link.run(1);
        if link.client.tcp_connect_state(client) != Ok(ConnectState::Pending) {
            break;
        }
    }
    assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established));
}

#[test]
fn stacks_sharing_an_address_take_disjoint_ephemeral_ports() {
    // Two queue pairs of one card: same address, shares 0 and 1 of 2.
    let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80);
    let mut seen = std::collections::HashSet::new();
    for index in 0..2u16 {
        let config = StackConfig { ephemeral_share: (index, 2), random_seed: 5, ..StackConfig::default() };
        let (device, _peer) = MemoryDevice::pair(MAC_CLIENT, MAC_SERVER);
        let mut stack = Stack::new(device, statically(CLIENT_IP), config, 0);
        for _ in 0..50 {
            let handle = stack.tcp_connect(remote).unwrap();
            let port = stack.tcp_local(handle).unwrap().port;
            assert_eq!((port - toro_net::stack::EPHEMERAL_FIRST) % 2, index, "port {port} outside share {index}");
            assert!(seen.insert(port), "port {port} handed out twice");
            let (udp, udp_port) = stack.udp_bind(0).unwrap();
            assert_eq!((udp_port - toro_net::stack::EPHEMERAL_FIRST) % 2, index);
            stack.udp_close(udp);
        }
    }
    // A share beyond the count is taken modulo the count; a count of 0 as 1.
    let config = StackConfig { ephemeral_share: (3, 0), ..StackConfig::default() };
    let (device, _peer) = MemoryDevice::pair(MAC_CLIENT, MAC_SERVER);
    let mut stack = Stack::new(device, statically(CLIENT_IP), config, 0);
    assert!(stack.tcp_connect(remote).is_ok());
}

/// A stack with a static IPv4 address announces it once with a gratuitous
/// ARP at its first poll (QEMU's user network learns the guest's MAC only
/// from ARP: without it the first forwarded connection waited for slirp to
/// retry its own ARP request).
#[test]
fn gratuitous_arp_announces_the_address() {
    let (device, mut peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let mut stack = Stack::new(device, statically(SERVER_IP), StackConfig::default(), 0);
    let arp_frames = |frames: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        frames.into_iter().filter(|frame| frame.len() >= 42 && frame[12..14] == [0x08, 0x06]).collect()
    };
    stack.poll(1_000);
    // What the stack sent arrives at the peer's receive side.
    let mut received = Vec::new();
    while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
        received.push(frame);
    }
    let arp = arp_frames(received);
    assert_eq!(arp.len(), 1, "one gratuitous ARP");
    let frame = &arp[0];
    assert_eq!(frame[0..6], [0xff; 6], "broadcast");
    assert_eq!(frame[6..12], MAC_SERVER, "from our MAC");
    assert_eq!(frame[20..22], [0, 1], "an ARP request");
    assert_eq!(frame[22..28], MAC_SERVER, "sender MAC");
    assert_eq!(frame[28..32], SERVER_IP.octets(), "sender address");
    assert_eq!(frame[32..38], [0; 6], "target MAC unknown");
    assert_eq!(frame[38..42], SERVER_IP.octets(), "target address = sender address");
    assert_eq!(stack.stats().announcements, 1);
    // Once: later polls send no more.
    for step in 2..50 {
        stack.poll(step * 1_000);
    }
    let mut later = Vec::new();
    while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
        later.push(frame);
    }
    assert!(arp_frames(later).is_empty(), "announced once");
    // A new address is announced again.
    stack.set_ipv4(Some(Ipv4Cidr::new(CLIENT_IP, 24)), None);
    stack.poll(60_000);
    let mut again = Vec::new();
    while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
        again.push(frame);
    }
    let arp = arp_frames(again);
    assert_eq!(arp.len(), 1);
    assert_eq!(arp[0][28..32], CLIENT_IP.octets());
    assert_eq!(stack.stats().announcements, 2);
}

/// With a gateway, the announcement also asks ARP for it, and the reply
/// fills the cache: the first packet to the gateway is not dropped while
/// ARP resolves (the first SYN-ACK to QEMU's user network was).
#[test]
fn the_gateway_is_asked_for_with_the_announcement() {
    let gateway = Ipv4Address::new(10, 0, 0, 254);
    let (device, mut peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let addressing = Addressing::Static { address: Ipv4Cidr::new(SERVER_IP, 24), gateway: Some(gateway) };
    let mut stack = Stack::new(device, addressing, StackConfig::default(), 0);
    stack.poll(1_000);
    let mut targets = Vec::new();
    while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
        if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 1] {
            targets.push(<[u8; 4]>::try_from(&frame[38..42]).unwrap());
        }
    }
    assert_eq!(targets, [SERVER_IP.octets(), gateway.octets()], "the announcement, then the gateway");
}

/// Frames the server has sent that the client has not yet read.
fn frames_to_client(link: &Link) -> usize {
    link.client.device().rx_queued()
}

#[test]
fn an_answer_given_soon_carries_the_ack_of_its_request() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    link.run(5);
    let mut buffer = [0u8; 64];
    for round in 0..3 {
        assert_eq!(link.client.tcp_send(client, b"GET / HTTP/1.1\r\n\r\n"), Ok(18));
        link.now += STEP_MICROS;
        link.client.poll(link.now);
        // The request arrives: the server holds its ACK back.
        link.server.poll(link.now);
        assert_eq!(frames_to_client(&link), 0, "round {round}: a bare ACK went out before the answer");
        assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(18));
        assert_eq!(link.server.tcp_send(server, b"HTTP/1.1 200 OK\r\n\r\n"), Ok(19));
        link.server.poll(link.now);
        assert_eq!(frames_to_client(&link), 1, "round {round}: the answer and its ACK are one frame");
        link.run(3);
        assert_eq!(link.client.tcp_recv(client, &mut buffer), Ok(19));
    }
    // A server that does not answer still ACKs, once the delay is over.
    assert_eq!(link.client.tcp_send(client, b"ping"), Ok(4));
    link.now += STEP_MICROS;
    link.client.poll(link.now);
    link.server.poll(link.now);
    assert_eq!(frames_to_client(&link), 0);
    link.now += StackConfig::default().ack_delay_micros.unwrap();
    link.server.poll(link.now);
    assert_eq!(frames_to_client(&link), 1, "the held-back ACK goes out on its own");
}

/// A router advertisement from `router_mac` (link-local `router`) with the
/// on-link, autonomous prefix `prefix`/64 (RFC 4861 4.2, 4.6.2), built
/// with smoltcp's wire types.
fn router_advertisement(router_mac: [u8; 6], router: [u8; 16], prefix: [u8; 8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::time::Duration;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol,
        Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags,
    };
    let source = Ipv6Address::from(router);
    let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut prefix_address = [0u8; 16];
    prefix_address[..8].copy_from_slice(&prefix);
    let advertisement = Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
        hop_limit: 64,
        flags: NdiscRouterFlags::empty(),
        router_lifetime: Duration::from_secs(1800),
        reachable_time: Duration::ZERO,
        retrans_time: Duration::ZERO,
        lladdr: Some(EthernetAddress(router_mac).into()),
        mtu: None,
        prefix_info: Some(NdiscPrefixInformation {
            prefix_len: 64,
            flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
            valid_lifetime: Duration::from_secs(86_400),
            preferred_lifetime: Duration::from_secs(14_400),
            prefix: Ipv6Address::from(prefix_address),
        }),
    });
    let ip = Ipv6Repr {
        src_addr: source,
        dst_addr: all_nodes,
        next_header: IpProtocol::Icmpv6,
        payload_len: advertisement.buffer_len(),
        // 255: required of neighbour discovery (RFC 4861 6.1.2).
        hop_limit: 255,
    };
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(router_mac),
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut frame = vec![0u8; ethernet.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut ethernet_frame = EthernetFrame::new_unchecked(&mut frame[..]);
    ethernet.emit(&mut ethernet_frame);
    let mut ip_packet = Ipv6Packet::new_unchecked(ethernet_frame.payload_mut());
    ip.emit(&mut ip_packet);
    let mut icmp = Icmpv6Packet::new_unchecked(ip_packet.payload_mut());
    advertisement.emit(&source, &all_nodes, &mut icmp, &ChecksumCapabilities::default());
    frame
}

/// Two stacks on one link, each with a static IPv6 address (server
/// fd00::1, client fd00::2) and SLAAC on; the server's IPv4 `server`.
fn ipv6_link(server: Addressing) -> Link {
    let ipv6 = |address: &str| toro_net::Ipv6Config {
        address: Some(smoltcp::wire::Ipv6Cidr::new(address.parse().unwrap(), 64)),
        gateway: None,
        slaac: true,
    };
    let (server_device, client_device) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    Link {
        server: Stack::new(server_device, server, StackConfig { ipv6: ipv6("fd00::1"), ..StackConfig::default() }, 0),
        client: Stack::new(
            client_device,
            statically(CLIENT_IP),
            StackConfig { ipv6: ipv6("fd00::2"), random_seed: 7, ..StackConfig::default() },
            0,
        ),
        now: 0,
    }
}

/// A router advertisement with a new prefix makes smoltcp flush the whole
/// neighbour cache (SLAAC adds the address through `update_ip_addrs`),
/// the IPv4 entries too, and smoltcp asks for neighbours at most once a
/// second per interface. So once a neighbour solicitation had gone out
/// after the flush, the next connection from the IPv4 gateway lost its
/// SYN-ACK (smoltcp drops a packet whose next hop it may not ask for yet)
/// and waited a second for the retransmitted SYN: `/stats` right after
/// the SLAAC step of `webserver-tap-cloud-hypervisor-2` took 1.1 s instead
/// of 0.15 s in half the runs (docs/net.md). The stack asks ARP for its
/// gateway again when its addresses change.
#[test]
fn a_router_advertisement_does_not_cost_the_gateways_next_connection_a_second() {
    let mut link = ipv6_link(Addressing::Static { address: Ipv4Cidr::new(SERVER_IP, 24), gateway: Some(CLIENT_IP) });
    link.server.tcp_listen(80).unwrap();
    let establish = |link: &mut Link, target: IpAddress| {
        let client = link.client.tcp_connect(IpEndpoint::new(target, 80)).unwrap();
        let start = link.now;
        for _ in 0..5000 {
            link.run(1);
            if link.client.tcp_connect_state(client) != Ok(ConnectState::Pending) {
                break;
            }
        }
        assert_eq!(link.client.tcp_connect_state(client), Ok(ConnectState::Established), "to {target}");
        link.run(3);
        (client, link.server.tcp_accept(80).unwrap(), link.now - start)
    };
    // A connection over IPv6 and one over IPv4: both neighbours known.
    let (_, server6, _) = establish(&mut link, IpAddress::Ipv6("fd00::1".parse().unwrap()));
    let (_, _, first) = establish(&mut link, IpAddress::Ipv4(SERVER_IP));
    assert!(first < 100_000, "the first IPv4 connection took {first} us");
    link.run(100);
    // The client advertises the prefix fd00:32::/64: the server adds its
    // address (and smoltcp forgets every neighbour).
    let router = toro_net::link_local(MAC_CLIENT).address().octets();
    link.server.device().inject(&router_advertisement(MAC_CLIENT, router, [0xfd, 0, 0, 0x32, 0, 0, 0, 0]));
    link.run(2);
    assert_eq!(link.server.ipv6_cidrs().len(), 3, "{:?}", link.server.ipv6_cidrs());
    // The server answers on the IPv6 connection: a neighbour solicitation,
    // and smoltcp's one-a-second limit on asking runs.
    assert_eq!(link.server.tcp_send(server6, b"after the RA"), Ok(12));
    link.run(2);
    // A new connection from the gateway, over IPv4, is not kept waiting.
    let (_, _, took) = establish(&mut link, IpAddress::Ipv4(SERVER_IP));
    assert!(took < 100_000, "the gateway's connection after the RA took {took} us (a lost SYN-ACK)");
}

#[test]
fn peeked_data_is_read_again() {
    let mut link = Link::new(StackConfig::default());
    link.server.tcp_listen(80).unwrap();
    let (client, server) = link.connect(80);
    let mut buffer = [0u8; 16];
    assert_eq!(link.server.tcp_peek(server, &mut buffer), Err(NetError::WouldBlock), "nothing yet");
    link.client.tcp_send(client, b"hello").unwrap();
    link.run(3);
    assert_eq!(link.server.tcp_peek(server, &mut buffer[..3]), Ok(3));
    assert_eq!(&buffer[..3], b"hel");
    assert_eq!(link.server.tcp_peek(server, &mut buffer), Ok(5), "still all there");
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(5));
    assert_eq!(&buffer[..5], b"hello");
    assert_eq!(link.server.tcp_peek(server, &mut buffer), Err(NetError::WouldBlock), "taken by the read");
    link.client.tcp_close(client);
    link.run(3);
    assert_eq!(link.server.tcp_peek(server, &mut buffer), Ok(0), "end of stream");
    assert_eq!(link.server.tcp_recv(server, &mut buffer), Ok(0));

    let (udp_server, _) = link.server.udp_bind(7).unwrap();
    let (udp_client, port) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(udp_client, b"one", IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 7), false).unwrap();
    link.run(3);
    let from = IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), port);
    assert_eq!(link.server.udp_peek_from(udp_server, &mut buffer), Ok((3, from)));
    assert_eq!(link.server.udp_peek_from(udp_server, &mut buffer[..1]), Ok((1, from)), "truncated, still queued");
    assert_eq!(link.server.udp_recv_from(udp_server, &mut buffer), Ok((3, from)));
    assert_eq!(&buffer[..3], b"one");
    assert_eq!(link.server.udp_peek_from(udp_server, &mut buffer), Err(NetError::WouldBlock));
}

/// The IPv4 time-to-live of an Ethernet frame.
fn ttl_of(frame: &[u8]) -> u8 {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4");
    frame[14 + 8]
}

#[test]
fn time_to_live_reaches_the_packets() {
    // A pool of one: the second connection's socket is made after the TTL
    // was set.
    let mut link = Link::new(StackConfig { listen_pool: 1, ..StackConfig::default() });
    link.server.tcp_listen(80).unwrap();
    assert_eq!(link.server.tcp_listen_ttl(80), Ok(64));
    assert_eq!(link.server.tcp_listen_set_ttl(80, 0), Err(NetError::InvalidInput));
    assert_eq!(link.server.tcp_listen_set_ttl(81, 9), Err(NetError::InvalidInput), "not listening");
    link.server.tcp_listen_set_ttl(80, 9).unwrap();
    assert_eq!(link.server.tcp_listen_ttl(80), Ok(9));
    // Every frame the server sends on the way, read off the wire and
    // passed on.
    link.client.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    let mut server_frames = Vec::new();
    let mut server = None;
    for _ in 0..100 {
        link.now += STEP_MICROS;
        link.server.poll(link.now);
        for frame in link.server.device().drain_sent() {
            link.client.device().inject(&frame);
            server_frames.push(frame);
        }
        link.client.poll(link.now);
        if let Ok(accepted) = link.server.tcp_accept(80) {
            server = Some(accepted);
            break;
        }
    }
    let server = server.expect("accepted");
    let tcp = server_frames.iter().filter(|frame| frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 6);
    assert_eq!(tcp.map(|frame| ttl_of(frame)).collect::<Vec<_>>(), vec![9], "the SYN-ACK carries the listener's TTL");
    assert_eq!(link.server.tcp_ttl(server), Ok(9), "inherited by the connection");
    link.server.tcp_set_ttl(server, 200).unwrap();
    assert_eq!(link.server.tcp_ttl(server), Ok(200));
    assert_eq!(link.server.tcp_set_ttl(server, 0), Err(NetError::InvalidInput));
    link.server.tcp_send(server, b"x").unwrap();
    link.server.poll(link.now + 1);
    let sent = link.server.device().drain_sent();
    assert_eq!(sent.iter().map(|frame| ttl_of(frame)).collect::<Vec<_>>(), vec![200]);
    let (_, second) = link.connect(80);
    assert_eq!(link.server.tcp_ttl(second), Ok(9), "a pool socket made after the setting has it too");
    // A new listener's connections keep the default.
    link.server.tcp_listen(82).unwrap();
    assert_eq!(link.server.tcp_listen_ttl(82), Ok(64));

    let (udp, _) = link.server.udp_bind(7).unwrap();
    assert_eq!(link.server.udp_ttl(udp), Ok(64));
    link.server.udp_set_ttl(udp, 3).unwrap();
    assert_eq!(link.server.udp_ttl(udp), Ok(3));
    assert_eq!(link.server.udp_set_ttl(udp, 0), Err(NetError::InvalidInput));
    link.server.udp_send_to(udp, b"d", IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), 9), false).unwrap();
    link.server.poll(link.now + 2);
    let sent = link.server.device().drain_sent();
    assert_eq!(sent.iter().map(|frame| ttl_of(frame)).collect::<Vec<_>>(), vec![3]);
}

/// Multicast: datagrams to a group reach a socket bound to their port once
/// the interface joined the group (IPv4 and IPv6), memberships are counted
/// per socket (the interface leaves with the last), and closing a socket
/// ends its memberships. Broadcasts need the option, as Linux's
/// `SO_BROADCAST`.
#[test]
fn multicast_groups_and_broadcasts() {
    let mut link = Link::new(StackConfig::default());
    let (server, _) = link.server.udp_bind(5353).unwrap();
    let (client, client_port) = link.client.udp_bind(0).unwrap();
    let group = IpAddress::Ipv4(GROUP);
    let mut buffer = [0u8; 16];
    let mut received = |link: &mut Link, sent: &[u8], to: IpAddress| {
        link.client.udp_send_to(client, sent, IpEndpoint::new(to, 5353), true).unwrap();
        link.run(3);
        link.server.udp_recv_from(server, &mut buffer).map(|(count, from)| (buffer[..count] == *sent, from))
    };
    assert_eq!(received(&mut link, b"before", group), Err(NetError::WouldBlock), "not a member yet");
    link.server.udp_join_multicast(server, group).unwrap();
    assert_eq!(link.server.udp_join_multicast(server, group), Err(NetError::AddrInUse), "joined twice");
    let from_client = IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), client_port);
    assert_eq!(received(&mut link, b"member", group), Ok((true, from_client)));
    let group6 = IpAddress::Ipv6("ff02::fb".parse().unwrap());
    assert_eq!(received(&mut link, b"six before", group6), Err(NetError::WouldBlock));
    link.server.udp_join_multicast(server, group6).unwrap();
    assert!(matches!(received(&mut link, b"six", group6), Ok((true, _))), "an IPv6 group");
    // A second socket's membership keeps the group when the first leaves.
    let (other, _) = link.server.udp_bind(0).unwrap();
    link.server.udp_join_multicast(other, group).unwrap();
    link.server.udp_leave_multicast(server, group).unwrap();
    assert_eq!(link.server.udp_leave_multicast(server, group), Err(NetError::AddrNotAvailable), "left already");
    assert!(link.server.in_multicast_group(group));
    assert!(matches!(received(&mut link, b"kept", group), Ok((true, _))), "the other socket's membership");
    link.server.udp_close(other);
    assert!(!link.server.in_multicast_group(group), "the last member closed");
    assert_eq!(received(&mut link, b"gone", group), Err(NetError::WouldBlock));
    let unicast = IpAddress::Ipv4(SERVER_IP);
    assert_eq!(link.server.udp_join_multicast(server, unicast), Err(NetError::InvalidInput));
    // Broadcasts: refused without the option, delivered with it.
    for broadcast in [Ipv4Address::new(10, 0, 0, 255), Ipv4Address::BROADCAST] {
        let to = IpEndpoint::new(IpAddress::Ipv4(broadcast), 5353);
        assert_eq!(link.client.udp_send_to(client, b"all", to, false), Err(NetError::PermissionDenied));
        assert!(matches!(received(&mut link, b"all", IpAddress::Ipv4(broadcast)), Ok((true, _))), "{broadcast}");
    }
    assert!(!link.client.is_broadcast(IpAddress::Ipv4(SERVER_IP)));
}

/// A datagram `send_to` accepted leaves even when the socket closes
/// before the next poll (as Linux hands it to the device at once): a
/// sender that sends and drops its socket at once lost it.
#[test]
fn a_datagram_sent_just_before_the_close_still_leaves() {
    let mut link = Link::new(StackConfig::default());
    let (server, _) = link.server.udp_bind(9000).unwrap();
    let to_server = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 9000);
    // The first waits for the server's MAC (ARP) after its socket closed.
    let (first, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(first, b"arp", to_server, false).unwrap();
    link.client.udp_close(first);
    let in_use = link.client.sockets_in_use();
    link.run(10);
    let mut buffer = [0u8; 16];
    assert_eq!(link.server.udp_recv_from(server, &mut buffer).map(|(count, _)| count), Ok(3), "lost waiting for ARP");
    assert_eq!(link.client.sockets_in_use(), in_use - 1, "freed once sent");
    let (sender, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(sender, b"last words", to_server, false).unwrap();
    link.client.udp_close(sender);
    link.run(5);
    assert_eq!(link.server.udp_recv_from(server, &mut buffer).map(|(count, _)| count), Ok(10), "lost at the close");
}

/// Datagrams to a group leave with the multicast TTL (1 unless set, as
/// Linux's `IP_MULTICAST_TTL`; the IPv6 hop limit 1), not the socket's
/// unicast TTL, and a copy reaches the sockets of the sending interface
/// that joined the group unless loop-back was turned off
/// (`IP_MULTICAST_LOOP`).
#[test]
fn multicast_datagrams_take_their_ttl_and_loop_back() {
    let mut link = Link::new(StackConfig::default());
    let group = IpAddress::Ipv4(GROUP);
    let group6 = IpAddress::Ipv6("ff02::fb".parse().unwrap());
    let (member, _) = link.server.udp_bind(5353).unwrap();
    link.server.udp_join_multicast(member, group).unwrap();
    link.server.udp_join_multicast(member, group6).unwrap();
    let (sender, _) = link.server.udp_bind(0).unwrap();
    let (listener, _) = link.client.udp_bind(5353).unwrap();
    link.client.udp_join_multicast(listener, group).unwrap();
    link.client.udp_join_multicast(listener, group6).unwrap();
    link.server.udp_set_ttl(sender, 30).unwrap();
    assert_eq!(link.server.udp_multicast_ttl(sender), Ok(1));
    assert_eq!(link.server.udp_multicast_loop(sender, false), Ok(true));
    assert_eq!(link.server.udp_multicast_loop(sender, true), Ok(true));
    let mut buffer = [0u8; 32];
    // Sends `data` to `to`: the hop limit it left with, and whether the
    // member here and the client's listener took it.
    let mut send = |link: &mut Link, data: &[u8], to: IpAddress| {
        link.server.udp_send_to(sender, data, IpEndpoint::new(to, 5353), false).unwrap();
        link.now += STEP_MICROS;
        link.server.poll(link.now);
        let sent = link.server.device().drain_sent();
        let frame = sent.iter().find(|frame| toro_net::device::udp_multicast(frame).is_some()).expect("sent").clone();
        let hops = if matches!(to, IpAddress::Ipv4(_)) { ttl_of(&frame) } else { frame[14 + 7] };
        for frame in sent {
            link.client.device().inject(&frame);
        }
        link.run(3);
        let mut took = |stack: &mut Stack<MemoryDevice>, socket| {
            let taken = stack.udp_recv_from(socket, &mut buffer).map(|(count, _)| buffer[..count] == *data);
            while stack.udp_recv_from(socket, &mut buffer).is_ok() {}
            taken == Ok(true)
        };
        (hops, took(&mut link.server, member), took(&mut link.client, listener))
    };
    assert_eq!(send(&mut link, b"scoped", group), (1, true, true), "TTL 1, looped back, and out");
    assert_eq!(send(&mut link, b"six", group6), (1, true, true), "hop limit 1");
    link.server.udp_set_multicast_ttl(sender, 8).unwrap();
    assert_eq!(link.server.udp_multicast_ttl(sender), Ok(8));
    // The client's stack checks the IPv4 header checksum: it took the
    // datagram, so the checksum was made again with the TTL.
    assert_eq!(send(&mut link, b"farther", group), (8, true, true));
    link.server.udp_set_multicast_loop(sender, false, false).unwrap();
    assert_eq!(link.server.udp_multicast_loop(sender, false), Ok(false));
    assert_eq!(send(&mut link, b"not here", group), (8, false, true), "not looped back");
    assert_eq!(send(&mut link, b"six here", group6), (1, true, true), "the IPv6 option is another");
    link.server.udp_set_multicast_loop(sender, true, false).unwrap();
    assert_eq!(send(&mut link, b"nor here", group6), (1, false, true));
    assert_eq!(link.server.udp_set_multicast_ttl(sender, 0), Err(NetError::InvalidInput));
    // Unicast keeps the socket's TTL (the first datagram resolves the
    // client's MAC).
    let to_client = IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), 5353);
    link.server.udp_send_to(sender, b"arp", to_client, false).unwrap();
    link.run(10);
    link.server.udp_send_to(sender, b"one", IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), 5353), false).unwrap();
    link.now += STEP_MICROS;
    link.server.poll(link.now);
    let sent = link.server.device().drain_sent();
    assert_eq!(sent.iter().map(|frame| ttl_of(frame)).collect::<Vec<_>>(), [30]);
    // A datagram sent just before the close leaves with the socket's
    // options (the socket stays until it left).
    let (last, _) = link.server.udp_bind(0).unwrap();
    link.server.udp_set_multicast_loop(last, false, false).unwrap();
    link.server.udp_set_multicast_ttl(last, 9).unwrap();
    link.server.udp_send_to(last, b"bye", IpEndpoint::new(group, 5353), false).unwrap();
    link.server.udp_close(last);
    link.now += STEP_MICROS;
    link.server.poll(link.now);
    let sent = link.server.device().drain_sent();
    let hops: Vec<u8> = sent
        .iter()
        .filter(|frame| toro_net::device::udp_multicast(frame).is_some())
        .map(|frame| ttl_of(frame))
        .collect();
    assert_eq!(hops, [9], "sent at the close, with its TTL");
    link.run(3);
    assert_eq!(link.server.udp_recv_from(member, &mut [0u8; 8]), Err(NetError::WouldBlock), "and not looped back");
    // Another socket on the port after a close starts from the defaults.
    let port = link.server.udp_port(sender).unwrap();
    link.server.udp_close(sender);
    let (again, _) = link.server.udp_bind(port).unwrap();
    assert_eq!(link.server.udp_multicast_ttl(again), Ok(1));
    assert_eq!(link.server.udp_multicast_loop(again, false), Ok(true));
    assert_eq!(link.server.udp_multicast_loop(again, true), Ok(true));
}

/// Joining and leaving a group is reported to the routers: an IGMPv2
/// membership report to the group, then a leave to all routers
/// (224.0.0.2), from the interface's MAC to the group's multicast MAC.
#[test]
fn joining_a_group_is_reported_by_igmp() {
    let (device, mut peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let mut stack = Stack::new(device, statically(SERVER_IP), StackConfig::default(), 0);
    let (socket, _) = stack.udp_bind(5000).unwrap();
    let igmp = |peer: &mut MemoryDevice| -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = peer.receive(|frame| frame.to_vec()) {
            // IPv4 (header length from its first byte), protocol 2.
            if frame.len() > 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 2 {
                frames.push(frame);
            }
        }
        frames
    };
    stack.poll(1_000);
    assert!(igmp(&mut peer).is_empty(), "no group, no report");
    stack.udp_join_multicast(socket, IpAddress::Ipv4(Ipv4Address::new(239, 1, 2, 3))).unwrap();
    stack.poll(2_000);
    let reports = igmp(&mut peer);
    assert_eq!(reports.len(), 1, "one membership report");
    let report = &reports[0];
    assert_eq!(report[0..6], [0x01, 0x00, 0x5e, 0x01, 0x02, 0x03], "to the group's MAC");
    assert_eq!(report[30..34], [239, 1, 2, 3], "to the group");
    let igmp_start = 14 + usize::from(report[14] & 0x0f) * 4;
    assert_eq!(report[igmp_start], 0x16, "an IGMPv2 membership report");
    stack.udp_close(socket);
    stack.poll(3_000);
    let leaves = igmp(&mut peer);
    assert_eq!(leaves.len(), 1, "one leave");
    assert_eq!(leaves[0][30..34], [224, 0, 0, 2], "to all routers");
    assert_eq!(leaves[0][14 + usize::from(leaves[0][14] & 0x0f) * 4], 0x17, "an IGMPv2 leave");
}

/// A DNS answer to `query` (a query's payload as the resolver sent it):
/// `addresses` for its question, or NXDOMAIN when there are none.
fn dns_answer(query: &[u8], addresses: &[IpAddress]) -> Vec<u8> {
    // The question: the name's labels, then type and class.
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = &query[12..end + 5];
    let kind = u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
    let matching: Vec<&IpAddress> = addresses
        .iter()
        .filter(|address| matches!((address, kind), (IpAddress::Ipv4(_), 1) | (IpAddress::Ipv6(_), 28)))
        .collect();
    let mut answer = vec![query[0], query[1], 0x81, if addresses.is_empty() { 0x83 } else { 0x80 }, 0, 1];
    answer.extend((matching.len() as u16).to_be_bytes());
    answer.extend([0, 0, 0, 0]);
    answer.extend(question);
    for address in matching {
        // A pointer to the question's name, type, class IN, TTL 60.
        answer.extend([0xc0, 12]);
        answer.extend(kind.to_be_bytes());
        answer.extend([0, 1, 0, 0, 0, 60]);
        let data: Vec<u8> = match address {
            IpAddress::Ipv4(v4) => v4.octets().to_vec(),
            IpAddress::Ipv6(v6) => v6.octets().to_vec(),
        };
        answer.extend((data.len() as u16).to_be_bytes());
        answer.extend(data);
    }
    answer
}

/// The names the test's DNS server knows.
fn dns_zone(name: &[u8]) -> Vec<IpAddress> {
    match name {
        b"\x04peer\x04toro\x04test\x00" => {
            vec![IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 7)), IpAddress::Ipv6("fd00::7".parse().unwrap())]
        }
        _ => Vec::new(),
    }
}

/// Answers every query the server's port 53 holds from `dns_zone`.
fn serve_dns(link: &mut Link, server: UdpHandle) -> usize {
    let mut buffer = [0u8; 512];
    let mut served = 0;
    while let Ok((count, from)) = link.server.udp_recv_from(server, &mut buffer) {
        let query = &buffer[..count];
        let mut end = 12;
        while query[end] != 0 {
            end += 1 + usize::from(query[end]);
        }
        let answer = dns_answer(query, &dns_zone(&query[12..=end]));
        link.server.udp_send_to(server, &answer, from, false).unwrap();
        served += 1;
    }
    served
}

/// The ports smoltcp picked for the queries are known to the stack (each
/// once), so that another queue pair can hand their answers here; none
/// while no query is in flight.
#[test]
fn the_ports_of_dns_queries_are_known() {
    let mut link = Link::new(StackConfig::default());
    link.client.set_dns_servers(&[IpAddress::Ipv4(SERVER_IP)]);
    let (server, _) = link.server.udp_bind(53).unwrap();
    let (other, _) = link.client.udp_bind(0).unwrap();
    link.client.udp_send_to(other, b"not DNS", IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 9), false).unwrap();
    link.run(5);
    assert_eq!(link.client.take_dns_ports(), Vec::<u16>::new(), "no query in flight");
    assert!(!link.client.dns_pending());
    let v4 = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
    let v6 = link.client.dns_start("peer.toro.test", DnsRecord::Aaaa).unwrap();
    assert!(link.client.dns_pending());
    let mut ports = Vec::new();
    let mut from = Vec::new();
    let mut buffer = [0u8; 512];
    for _ in 0..10 {
        link.run(1);
        ports.extend(link.client.take_dns_ports());
        while let Ok((count, sender)) = link.server.udp_recv_from(server, &mut buffer) {
            from.push(sender.port);
            let answer = dns_answer(&buffer[..count], &dns_zone(b"\x04peer\x04toro\x04test\x00"));
            link.server.udp_send_to(server, &answer, sender, false).unwrap();
        }
    }
    ports.sort_unstable();
    from.sort_unstable();
    assert_eq!(from.len(), 2, "both queries reached the server");
    assert_eq!(ports, from, "the queries' ports, each once");
    assert!(link.client.dns_ready(v4) && link.client.dns_ready(v6));
    assert!(!link.client.dns_pending(), "answered");
    assert!(link.client.dns_result(v4).is_ok() && link.client.dns_result(v6).is_ok());
}

/// The resolver (smoltcp's DNS socket behind `Stack::dns_*`): A and AAAA
/// answers, NXDOMAIN and silence (`NotFound`), bad names, no server,
/// cancelled queries; every answer damaged at random leaves it working.
#[test]
fn names_are_resolved_by_the_dns_servers() {
    let mut link = Link::new(StackConfig::default());
    assert_eq!(link.client.dns_start("peer.toro.test", DnsRecord::A), Err(NetError::AddrNotAvailable), "no server");
    link.client.set_dns_servers(&[IpAddress::Ipv4(SERVER_IP)]);
    assert_eq!(link.client.dns_servers(), [IpAddress::Ipv4(SERVER_IP)]);
    for bad in ["", "a..b", &"x".repeat(64), &"abcdefg.".repeat(40)] {
        assert_eq!(link.client.dns_start(bad, DnsRecord::A), Err(NetError::InvalidInput), "{bad:?}");
    }
    let (server, _) = link.server.udp_bind(53).unwrap();
    let v4 = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
    let v6 = link.client.dns_start("peer.toro.test.", DnsRecord::Aaaa).unwrap();
    let missing = link.client.dns_start("nowhere.toro.test", DnsRecord::A).unwrap();
    assert_eq!(link.client.dns_result(v4), Err(NetError::WouldBlock));
    let mut served = 0;
    for _ in 0..20 {
        link.run(1);
        served += serve_dns(&mut link, server);
    }
    assert_eq!(served, 3);
    assert_eq!(link.client.dns_result(v4), Ok(vec![IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 7))]));
    assert_eq!(link.client.dns_result(v6), Ok(vec![IpAddress::Ipv6("fd00::7".parse().unwrap())]));
    assert_eq!(link.client.dns_result(missing), Err(NetError::NotFound), "NXDOMAIN");
    assert_eq!(link.client.dns_result(v4), Err(NetError::BadHandle), "taken already");
    // A cancelled query's late answer is dropped; the next query works.
    let cancelled = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
    link.run(2);
    link.client.dns_cancel(cancelled);
    serve_dns(&mut link, server);
    link.run(3);
    assert!(link.client.dns_ready(cancelled));
    assert_eq!(link.client.dns_result(cancelled), Err(NetError::BadHandle));
    // Damaged answers (the transaction id and port kept, so they reach
    // the parser): each query ends answered, failed or pending, never a
    // panic; a pending one is cancelled.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut buffer = [0u8; 512];
    for round in 0..400 {
        let query = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
        link.run(2);
        let (count, from) = link.server.udp_recv_from(server, &mut buffer).expect("the query");
        let mut answer = dns_answer(&buffer[..count], &dns_zone(b"\x04peer\x04toro\x04test\x00"));
        match round % 3 {
            0 => answer.truncate(2 + random() as usize % (answer.len() - 2)),
            1 => {
                for _ in 0..1 + random() % 4 {
                    let at = 2 + random() as usize % (answer.len() - 2);
                    answer[at] ^= (random() as u8) | 1;
                }
            }
            _ => answer.extend((0..random() % 64).map(|_| random() as u8)),
        }
        link.server.udp_send_to(server, &answer, from, false).unwrap();
        link.run(3);
        match link.client.dns_result(query) {
            Ok(_) | Err(NetError::NotFound) => {}
            Err(NetError::WouldBlock) => link.client.dns_cancel(query),
            other => panic!("round {round}: {other:?}"),
        }
        while link.server.udp_recv_from(server, &mut buffer).is_ok() {}
    }
    let after = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
    for _ in 0..5 {
        link.run(1);
        serve_dns(&mut link, server);
    }
    assert_eq!(link.client.dns_result(after).map(|a| a.len()), Ok(1), "still resolving after the damaged answers");
    // A silent server: the query fails after smoltcp's 10 s.
    link.server.udp_close(server);
    let silent = link.client.dns_start("peer.toro.test", DnsRecord::A).unwrap();
    let mut steps = 0;
    while !link.client.dns_ready(silent) && steps < 20_000 {
        link.run(1);
        steps += 1;
    }
    assert_eq!(link.client.dns_result(silent), Err(NetError::NotFound));
    assert!((9_000..12_000).contains(&steps), "gave up after {steps} ms");
}

/// Two queue pairs of one card (same address and MAC, ephemeral shares 0
/// and 1 of 2): pair 1 connects out, and the host's tap hands every TCP
/// segment of the answer to pair 0's queue. Pair 0 sets them aside for
/// pair 1 (`take_diverted`) instead of resetting them, and the connection
/// carries data both ways; pair 0 sends nothing. A SYN to a port pair 0
/// listens on is its own even in pair 1's share.
#[test]
fn segments_for_another_pairs_connection_are_diverted_to_it() {
    let (server_device, pair1_device) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let (pair0_device, pair0_wire) = MemoryDevice::pair(MAC_CLIENT, MAC_SERVER);
    let mut server = Stack::new(server_device, statically(SERVER_IP), StackConfig::default(), 0);
    let share = |index| StackConfig {
        ephemeral_share: (index, 2),
        random_seed: 3 + u64::from(index),
        ..StackConfig::default()
    };
    let mut pair0 = Stack::new(pair0_device, statically(CLIENT_IP), share(0), 0);
    let mut pair1 = Stack::new(pair1_device, statically(CLIENT_IP), share(1), 0);
    server.tcp_listen(80).unwrap();
    pair0.tcp_listen(49153).unwrap();
    let client = pair1.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), 80)).unwrap();
    let port = pair1.tcp_local(client).unwrap().port;
    assert_eq!((port - toro_net::stack::EPHEMERAL_FIRST) % 2, 1);
    let mut now = 0;
    let mut diverted = 0;
    let mut step =
        |server: &mut Stack<MemoryDevice>, pair0: &mut Stack<MemoryDevice>, pair1: &mut Stack<MemoryDevice>| {
            now += 1_000;
            pair1.poll(now);
            server.poll(now);
            // What the server sent: TCP to pair 0's queue, the rest to pair 1's.
            let mut frames = Vec::new();
            while let Some(frame) = pair1.device().receive(|frame| frame.to_vec()) {
                frames.push(frame);
            }
            for frame in frames {
                match toro_net::device::tcp_destination_port(&frame) {
                    Some(_) => pair0.device().inject(&frame),
                    None => pair1.device().inject(&frame),
                }
            }
            pair0.poll(now);
            for (owner, frame) in pair0.take_diverted() {
                assert_eq!(owner, 1);
                diverted += 1;
                pair1.device().inject(&frame);
            }
            pair1.poll(now);
        };
    let mut accepted = None;
    for _ in 0..3000 {
        step(&mut server, &mut pair0, &mut pair1);
        if let Ok(handle) = server.tcp_accept(80) {
            accepted = Some(handle);
            break;
        }
    }
    let accepted = accepted.expect("the server accepted");
    for _ in 0..5 {
        step(&mut server, &mut pair0, &mut pair1);
    }
    assert_eq!(pair1.tcp_connect_state(client), Ok(ConnectState::Established));
    assert_eq!(pair1.tcp_send(client, b"request"), Ok(7));
    for _ in 0..5 {
        step(&mut server, &mut pair0, &mut pair1);
    }
    let mut buffer = [0u8; 16];
    assert_eq!(server.tcp_recv(accepted, &mut buffer), Ok(7));
    assert_eq!(server.tcp_send(accepted, b"answer"), Ok(6));
    for _ in 0..5 {
        step(&mut server, &mut pair0, &mut pair1);
    }
    assert_eq!(pair1.tcp_recv(client, &mut buffer), Ok(6));
    assert_eq!(&buffer[..6], b"answer");
    assert!(diverted >= 2, "the SYN-ACK and the answer went through pair 0 ({diverted})");
    let mut pair0_wire = pair0_wire;
    let mut sent_tcp = 0;
    while let Some(is_tcp) = pair0_wire.receive(|frame| toro_net::device::tcp_destination_port(frame).is_some()) {
        sent_tcp += usize::from(is_tcp);
    }
    assert_eq!(sent_tcp, 0, "pair 0 reset nothing");
    // A connection to 49153 (in pair 1's share, listened on by pair 0)
    // stays on pair 0: its handshake's last ACK is not diverted.
    let (other, _other_wire) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let config = StackConfig { random_seed: 11, ..StackConfig::default() };
    let mut opener = Stack::new(other, statically(SERVER_IP), config, 0);
    let outgoing = opener.tcp_connect(IpEndpoint::new(IpAddress::Ipv4(CLIENT_IP), 49153)).unwrap();
    for round in 1..3000u64 {
        let at = now + round * 1_000;
        opener.poll(at);
        for frame in opener.device().drain_sent() {
            pair0.device().inject(&frame);
        }
        pair0.poll(at);
        assert!(pair0.take_diverted().is_empty(), "a segment for a port listened on here is not diverted");
        while let Some(frame) = pair0_wire.receive(|frame| frame.to_vec()) {
            opener.device().inject(&frame);
        }
        if pair0.tcp_accept(49153).is_ok() {
            break;
        }
    }
    assert_eq!(opener.tcp_connect_state(outgoing), Ok(ConnectState::Established));
}

/// The TCP SYNs (not SYN-ACKs) among `frames`, IPv4 and IPv6: (destination
/// MAC, destination address).
fn syns_to(frames: &[Vec<u8>]) -> Vec<([u8; 6], IpAddress)> {
    let mut syns = Vec::new();
    for frame in frames {
        let mac: [u8; 6] = frame[..6].try_into().unwrap();
        if frame.len() >= 54 && frame[12..14] == [0x08, 0x00] && frame[23] == 6 && frame[47] == 0x02 {
            let address: [u8; 4] = frame[30..34].try_into().unwrap();
            syns.push((mac, IpAddress::Ipv4(Ipv4Address::from_octets(address))));
        } else if frame.len() >= 74 && frame[12..14] == [0x86, 0xdd] && frame[20] == 6 && frame[67] == 0x02 {
            let address: [u8; 16] = frame[38..54].try_into().unwrap();
            syns.push((mac, IpAddress::Ipv6(smoltcp::wire::Ipv6Address::from_octets(address))));
        }
    }
    syns.sort();
    syns
}

/// A client stack at 10.0.0.1/24 (gateway 10.0.0.254) and fd00::1/64,
/// announced, its first frames drained.
fn lone_client() -> Stack<MemoryDevice> {
    let (device, _peer) = MemoryDevice::pair(MAC_SERVER, MAC_CLIENT);
    let addressing =
        Addressing::Static { address: Ipv4Cidr::new(SERVER_IP, 24), gateway: Some(Ipv4Address::new(10, 0, 0, 254)) };
    let ipv6 = toro_net::Ipv6Config {
        address: Some(smoltcp::wire::Ipv6Cidr::new("fd00::1".parse().unwrap(), 64)),
        gateway: None,
        slaac: false,
    };
    let mut stack = Stack::new(device, addressing, StackConfig { ipv6, ..StackConfig::default() }, 0);
    stack.poll(1_000);
    stack.device().drain_sent();
    stack
}

/// Host `index` of 32 on the link: its MAC and its IPv4 or IPv6 address.
fn link_host(index: u8, v6: bool) -> ([u8; 6], IpAddress) {
    let address = if v6 {
        IpAddress::Ipv6(smoltcp::wire::Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(index)))
    } else {
        IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 100 + index))
    };
    ([0x02, 0, 0, 0, 1, index], address)
}

/// Polls `client` once; `None` if what it asked the link for were
/// exactly the first `hosts` of [`link_host`], else what it asked for.
fn asked_at_once(client: &mut Stack<MemoryDevice>, hosts: u8, v6: bool) -> Option<Vec<IpAddress>> {
    client.poll(2_000);
    let mut asked: Vec<_> =
        client.device().drain_sent().iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    asked.sort();
    let mut expected: Vec<_> = (0..hosts).map(|index| link_host(index, v6).1).collect();
    expected.sort();
    (asked != expected).then_some(asked)
}

/// Connects to 32 hosts on the link at once ask for all 32 at once, and
/// their SYNs leave as soon as the answers are in. Defect fixed: smoltcp
/// asks for one unknown neighbour a second per interface and holds the
/// packets for the others until their turn, so one request went out and
/// the 32nd SYN left 31 s later (`Stack::solicit_neighbours`).
#[test]
fn connects_to_many_hosts_on_the_link_ask_for_each_at_once() {
    const HOSTS: u8 = 32;
    for v6 in [false, true] {
        let mut client = lone_client();
        for index in 0..HOSTS {
            client.tcp_connect(IpEndpoint::new(link_host(index, v6).1, 80)).unwrap();
        }
        assert_eq!(asked_at_once(&mut client, HOSTS, v6), None, "v6 {v6}: each host asked for once, at once");
        // smoltcp asked for one itself.
        assert_eq!(client.stats().neighbours_solicited, u64::from(HOSTS) - 1, "v6 {v6}");
        let mut answer = Vec::new();
        for index in 0..HOSTS {
            match link_host(index, v6) {
                (mac, IpAddress::Ipv4(address)) => {
                    toro_net::device::arp_reply_from(&mut answer, address, mac, SERVER_IP, MAC_SERVER)
                }
                (mac, IpAddress::Ipv6(address)) => toro_net::device::advertisement_from(
                    &mut answer,
                    address,
                    mac,
                    "fd00::1".parse().unwrap(),
                    MAC_SERVER,
                ),
            }
            client.device().inject(&answer);
        }
        client.poll(3_000);
        let syns = syns_to(&client.device().drain_sent());
        let expected: Vec<_> = (0..HOSTS).map(|index| link_host(index, v6)).collect();
        assert_eq!(syns, expected, "v6 {v6}: every SYN left at once, to its host's MAC");

        // Datagrams too: one to each host asks for each at once.
        let mut client = lone_client();
        let (socket, _) = client.udp_bind(0).unwrap();
        for index in 0..HOSTS {
            let remote = IpEndpoint::new(link_host(index, v6).1, 9);
            assert_eq!(client.udp_send_to(socket, b"hello", remote, false), Ok(5));
        }
        assert_eq!(asked_at_once(&mut client, HOSTS, v6), None, "v6 {v6}: each datagram's host asked for at once");
    }
}

/// Connects to 32 hosts on the link that never answer all fail with
/// `HostUnreachable` after 3 s, each host asked for 3 or 4 times, as
/// Linux's do. Before, smoltcp's one request a second per interface made
/// the hosts take turns: most connects were still pending after 10 s.
#[test]
fn connects_to_many_silent_hosts_fail_together_after_three_seconds() {
    const HOSTS: u8 = 32;
    for v6 in [false, true] {
        let mut client = lone_client();
        let connects: Vec<_> =
            (0..HOSTS).map(|index| client.tcp_connect(IpEndpoint::new(link_host(index, v6).1, 80)).unwrap()).collect();
        let start = 1_000;
        let mut now = start;
        let mut requests = std::collections::BTreeMap::new();
        let mut ended = Vec::new();
        while ended.len() < connects.len() {
            assert!(
                now - start < 10_000_000,
                "v6 {v6}: {} connects still pending after 10 s",
                HOSTS as usize - ended.len()
            );
            now += 10 * STEP_MICROS;
            client.poll(now);
            for frame in client.device().drain_sent() {
                if let Some(address) = toro_net::device::neighbour_solicited(&frame) {
                    *requests.entry(address).or_insert(0) += 1;
                }
            }
            for (index, &connect) in connects.iter().enumerate() {
                if ended.iter().any(|&(done, _)| done == index) {
                    continue;
                }
                match client.tcp_connect_state(connect) {
                    Ok(ConnectState::Pending) => {}
                    state => {
                        assert_eq!(state, Err(NetError::HostUnreachable), "v6 {v6}: host {index}");
                        ended.push((index, now - start));
                    }
                }
            }
            // While any waits, the stack's own wake-ups come often enough.
            let delay = client.poll_delay_micros(now);
            assert!(
                ended.len() == connects.len() || delay.is_some_and(|delay| delay <= 1_000_000),
                "v6 {v6}: {delay:?}"
            );
        }
        for (index, after) in ended {
            assert!((3_000_000..3_200_000).contains(&after), "v6 {v6}: host {index} failed after {after} us");
        }
        assert_eq!(requests.len(), usize::from(HOSTS), "v6 {v6}");
        for (address, count) in requests {
            assert!((3..=4).contains(&count), "v6 {v6}: {address} asked for {count} times");
        }
    }
}

/// A next hop that showed itself in an ARP packet or a neighbour
/// advertisement for us (smoltcp filled its cache from it) is not asked
/// for again by the stack when a connect goes through it: before, each
/// connect through the gateway sent an ARP request for it (once a
/// second at most), since only the hosts taught from their IP frames
/// counted as known.
#[test]
fn neighbours_heard_in_answers_are_not_asked_for_again() {
    let gateway = Ipv4Address::new(10, 0, 0, 254);
    let gateway_mac = [0x02, 0, 0, 0, 0, 0xfe];
    let mut client = lone_client();
    let mut frame = Vec::new();
    // The gateway answers the announcement's request; a host on the link
    // asks for us; an IPv6 host advertises itself.
    toro_net::device::arp_reply_from(&mut frame, gateway, gateway_mac, SERVER_IP, MAC_SERVER);
    client.device().inject(&frame);
    let (host_mac, host) = link_host(0, false);
    let IpAddress::Ipv4(host4) = host else { unreachable!() };
    toro_net::device::arp_request(&mut frame, SERVER_IP, host4, host_mac);
    client.device().inject(&frame);
    let (host6_mac, host6) = link_host(1, true);
    let IpAddress::Ipv6(host6_address) = host6 else { unreachable!() };
    toro_net::device::advertisement_from(&mut frame, host6_address, host6_mac, "fd00::1".parse().unwrap(), MAC_SERVER);
    client.device().inject(&frame);
    client.poll(2_000);
    client.device().drain_sent();
    let far = IpAddress::Ipv4(Ipv4Address::new(192, 0, 2, 1));
    for address in [far, host, host6] {
        client.tcp_connect(IpEndpoint::new(address, 80)).unwrap();
    }
    client.poll(3_000);
    let sent = client.device().drain_sent();
    let asked: Vec<_> = sent.iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    assert!(asked.is_empty(), "asked for {asked:?}");
    assert_eq!(client.stats().neighbours_solicited, 0);
    let mut expected = vec![(gateway_mac, far), (host_mac, host), (host6_mac, host6)];
    expected.sort();
    assert_eq!(syns_to(&sent), expected, "every SYN left at once");
}

/// A host asked for for a datagram and answered is not asked for again
/// when the next datagram goes to it a second and a half later, though no
/// connect was waiting when its answer came (before, the stack asked
/// again: only a waiting connect had the answers watched).
#[test]
fn an_answered_neighbour_is_not_asked_again_for_the_next_datagram() {
    let mut client = lone_client();
    let (socket, _) = client.udp_bind(0).unwrap();
    let (mac, host) = link_host(3, false);
    let IpAddress::Ipv4(host4) = host else { unreachable!() };
    let remote = IpEndpoint::new(host, 9);
    client.udp_send_to(socket, b"one", remote, false).unwrap();
    client.poll(2_000);
    let asked: Vec<_> =
        client.device().drain_sent().iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    assert_eq!(asked, [host]);
    let mut answer = Vec::new();
    toro_net::device::arp_reply_from(&mut answer, host4, mac, SERVER_IP, MAC_SERVER);
    client.device().inject(&answer);
    client.poll(3_000);
    client.device().drain_sent();
    client.udp_send_to(socket, b"two", remote, false).unwrap();
    client.poll(1_503_000);
    let sent = client.device().drain_sent();
    let asked: Vec<_> = sent.iter().filter_map(|frame| toro_net::device::neighbour_solicited(frame)).collect();
    assert!(asked.is_empty(), "asked again for {asked:?}");
    assert!(sent.iter().any(|frame| frame[..6] == mac && frame.len() > 42), "the datagram left for the host");
}
