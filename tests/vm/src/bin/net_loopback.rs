//! Sockets over the loopback instance (owned by CPU 0): TCP echo from a
//! client on another CPU (every call a remote call) with payloads from 1 B
//! to 1 MiB checked byte for byte, UDP, refused connects, timeouts,
//! non-blocking calls, port conflicts, `peek`, `try_clone` (a clone
//! writing from one CPU while the original reads on another; a listener's
//! clone accepting), `take_error` (a TCP reset; a UDP peer's port
//! unreachable), TTLs, TCP
//! and connected UDP over `::1`; and the cost of a remote call.

#![no_std]
#![no_main]

use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::io::{ErrorKind, Read, Write};
use toro::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use toro::time::Instant;
use toro::{cpu, println, thread};

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("FAILED: {what}");
    }
    condition
}

fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length).map(|i| (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8 ^ seed).collect()
}

/// Serves echo on `listener` for `connections` connections, one by one;
/// whether each had the listener's TTL (33).
fn echo_server(listener: TcpListener, connections: usize) -> bool {
    let mut ok = true;
    for _ in 0..connections {
        let (mut stream, _) = listener.accept().expect("accept");
        ok &= check(stream.ttl().unwrap() == 33, "an accepted connection has the listener's TTL");
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => stream.write_all(&buffer[..count]).expect("echo write"),
                Err(error) => {
                    println!("echo: read error {error}");
                    break;
                }
            }
        }
    }
    ok
}

#[toro::main]
fn main() -> i32 {
    let cpus = cpu::count();
    let mut ok = true;
    let client_cpu = cpus - 1;

    let listener = TcpListener::bind("127.0.0.1:7").expect("bind 7");
    ok &= check(listener.local_addr().unwrap().port() == 7, "local_addr");
    ok &= check(
        TcpListener::bind(("127.0.0.1", 7)).map(|_| ()).map_err(|e| e.kind()) == Err(ErrorKind::AddrInUse),
        "a second bind is AddrInUse",
    );
    ok &= check(listener.ttl().unwrap() == 64, "a listener's default TTL");
    listener.set_ttl(33).unwrap();
    ok &= check(listener.ttl().unwrap() == 33, "a listener's TTL set");
    let server = thread::spawn_on(0, move || echo_server(listener, 4));

    let client = thread::spawn_on(client_cpu, move || {
        let mut ok = true;
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, 7)).expect("connect");
        ok &= check(stream.peer_addr().unwrap() == SocketAddr::from(([127, 0, 0, 1], 7)), "peer_addr");
        ok &= check(stream.nodelay().unwrap(), "nodelay by default");
        let mut sizes = Vec::new();
        let mut size = 1;
        while size <= 1 << 20 {
            sizes.push(size);
            size *= 4;
        }
        for (round, &size) in sizes.iter().enumerate() {
            let data = pattern(size, round as u8);
            let start = Instant::now();
            // Write and read in turns so neither side's window stalls.
            let mut sent = 0;
            let mut received = Vec::with_capacity(size);
            let mut buffer = vec![0u8; 32 * 1024];
            while received.len() < size {
                if sent < size {
                    let end = (sent + 16 * 1024).min(size);
                    stream.write_all(&data[sent..end]).expect("write");
                    sent = end;
                }
                let count = stream.read(&mut buffer).expect("read");
                ok &= check(count > 0, "no early end of stream");
                received.extend_from_slice(&buffer[..count]);
            }
            ok &= check(received == data, "echo byte for byte");
            println!("tcp echo {size} B: ok in {} us", start.elapsed().as_micros());
        }
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = [0u8; 4];
        ok &= check(stream.read(&mut rest).unwrap() == 0, "end of stream after shutdown");
        drop(stream);

        // Read timeout and non-blocking reads.
        let stream = TcpStream::connect("127.0.0.1:7").expect("connect 2");
        stream.set_read_timeout(Some(core::time::Duration::from_millis(50))).unwrap();
        let start = Instant::now();
        let timed_out = (&stream).read(&mut rest).map_err(|e| e.kind());
        let waited = start.elapsed().as_millis();
        ok &= check(timed_out == Err(ErrorKind::TimedOut), "read timeout is TimedOut");
        ok &= check((50..1000).contains(&waited), "waited about 50 ms");
        stream.set_nonblocking(true).unwrap();
        ok &= check((&stream).read(&mut rest).map_err(|e| e.kind()) == Err(ErrorKind::WouldBlock), "WouldBlock");
        ok &= check(
            stream.set_read_timeout(Some(core::time::Duration::ZERO)).map_err(|e| e.kind())
                == Err(ErrorKind::InvalidInput),
            "a zero timeout is InvalidInput",
        );
        drop(stream);

        // A refused connect.
        let refused = TcpStream::connect("127.0.0.1:9").map(|_| ()).map_err(|e| e.kind());
        ok &= check(refused == Err(ErrorKind::ConnectionRefused), "nobody listens on 9: ConnectionRefused");
        ok &= check(
            TcpStream::connect("example.com:80").map(|_| ()).map_err(|e| e.kind()) == Err(ErrorKind::NotFound),
            "a host name with no DNS server (no card) is NotFound",
        );

        // The cost of a remote call: a non-blocking read that finds nothing.
        let stream = TcpStream::connect("127.0.0.1:7").expect("connect 3");
        stream.set_nonblocking(true).unwrap();
        const CALLS: u32 = 2000;
        let start = Instant::now();
        for _ in 0..CALLS {
            let _ = (&stream).read(&mut rest);
        }
        let remote = start.elapsed().as_nanos() as u64 / u64::from(CALLS);
        println!("remote socket call (cpu {} -> cpu 0): {} ns", cpu::current(), remote);
        let home = cpu::current();
        let start = Instant::now();
        for _ in 0..CALLS {
            thread::migrate_to(0).unwrap();
            thread::migrate_to(home).unwrap();
        }
        println!("migration there and back: {} ns", start.elapsed().as_nanos() as u64 / u64::from(CALLS));
        drop(stream);

        // A clone writes from CPU 0 while the original reads here; peek
        // reads without taking; the clone's drop leaves the connection
        // open (the original then writes the second half itself).
        let mut stream = TcpStream::connect("127.0.0.1:7").expect("connect 4");
        ok &= check(stream.ttl().unwrap() == 64, "a connection's default TTL");
        let writer = stream.try_clone().expect("try_clone");
        // Small enough to sit in the buffers (about 100 KiB each way) while
        // this thread writes the second half without reading.
        let data = pattern(64 * 1024, 77);
        let half = data.len() / 2;
        let first_half = data[..half].to_vec();
        let writing = thread::spawn_on(0, move || {
            let mut writer = writer;
            writer.write_all(&first_half).expect("the clone writes");
        });
        let mut first = [0u8; 8];
        let peeked = stream.peek(&mut first).expect("peek");
        ok &= check(peeked > 0 && first[..peeked] == data[..peeked], "peek sees the first bytes");
        let again = stream.peek(&mut first).expect("peek again");
        ok &= check(again >= peeked && first[..again] == data[..again], "peek again: the same bytes");
        let mut received = vec![0u8; half];
        stream.read_exact(&mut received).expect("the first half, echoed");
        writing.join();
        stream.write_all(&data[half..]).expect("the original writes after the clone was dropped");
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the rest");
        received.extend_from_slice(&rest);
        ok &= check(received == data, "all echoed byte for byte, from the first byte");
        ok &= check(
            stream.set_ttl(0).map_err(|e| e.kind()) == Err(ErrorKind::InvalidInput)
                && stream.set_ttl(256).map_err(|e| e.kind()) == Err(ErrorKind::InvalidInput),
            "TTL 0 and 256 are InvalidInput",
        );
        stream.set_ttl(7).unwrap();
        ok &= check(stream.ttl().unwrap() == 7, "TTL set");
        drop(stream);
        println!("tcp peek, try_clone, ttl: ok");

        ok
    });
    ok &= client.join();
    ok &= server.join();

    // UDP on the owner CPU itself (local calls) and the local call cost.
    let server = UdpSocket::bind("127.0.0.1:7000").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_port = client.local_addr().unwrap().port();
    ok &= check(client_port >= 49152, "an ephemeral port");
    let too_large = client.send_to(&[0u8; 1473], "127.0.0.1:7000").map_err(|e| e.kind());
    ok &= check(too_large == Err(ErrorKind::InvalidInput), "a datagram over one frame is refused");
    for size in [1usize, 100, 1472] {
        let data = pattern(size, 9);
        client.send_to(&data, "127.0.0.1:7000").unwrap();
        let mut buffer = vec![0u8; 2000];
        let (count, from) = server.recv_from(&mut buffer).unwrap();
        ok &= check(count == size && buffer[..count] == data[..], "datagram intact");
        ok &= check(from.port() == client_port, "sender's port");
        server.send_to(&buffer[..count], from).unwrap();
        let (count, _) = client.recv_from(&mut buffer).unwrap();
        ok &= check(count == size, "reply intact");
    }
    println!("udp echo: ok");
    // peek_from, a clone receiving after the original is dropped, TTL.
    client.send_to(b"peeked", "127.0.0.1:7000").unwrap();
    let mut buffer = [0u8; 16];
    let peeked = server.peek_from(&mut buffer).unwrap();
    ok &= check(peeked == (6, SocketAddr::from(([127, 0, 0, 1], client_port))), "peek_from");
    let clone = server.try_clone().unwrap();
    drop(server);
    let taken = clone.recv_from(&mut buffer).unwrap();
    ok &= check(taken.0 == 6 && &buffer[..6] == b"peeked", "the clone takes the peeked datagram");
    client.send_to(b"again", "127.0.0.1:7000").unwrap();
    ok &= check(clone.recv_from(&mut buffer).map(|(n, _)| n).ok() == Some(5), "the clone's socket stays open");
    ok &= check(clone.ttl().unwrap() == 64, "UDP default TTL");
    clone.set_ttl(5).unwrap();
    ok &= check(clone.ttl().unwrap() == 5 && clone.set_ttl(0).is_err(), "UDP TTL");
    clone.connect(("127.0.0.1", client_port)).unwrap();
    client.send_to(b"to peek", "127.0.0.1:7000").unwrap();
    ok &= check(clone.peek(&mut buffer).ok() == Some(7) && clone.recv(&mut buffer).ok() == Some(7), "peek, recv");
    drop(clone);
    println!("udp peek, try_clone, ttl: ok");
    // A connected socket hears that its peer has no socket (ICMP port
    // unreachable): ConnectionRefused once, from recv, take_error or send;
    // over IPv4 and IPv6, and from another CPU.
    let refusals = |local: &'static str, peer: &'static str| {
        let mut ok = true;
        let socket = UdpSocket::bind(local).unwrap();
        socket.set_read_timeout(Some(core::time::Duration::from_secs(2))).unwrap();
        socket.connect(peer).unwrap();
        ok &= check(socket.take_error().map(|e| e.is_none()).unwrap_or(false), "no error before sending");
        socket.send(b"anyone?").unwrap();
        let mut buffer = [0u8; 8];
        let got = socket.recv(&mut buffer).map_err(|e| e.kind());
        ok &= check(got == Err(ErrorKind::ConnectionRefused), "recv: the peer refused");
        socket.send(b"still?").unwrap();
        let mut error = None;
        for _ in 0..100 {
            error = socket.take_error().unwrap();
            if error.is_some() {
                break;
            }
            thread::sleep(core::time::Duration::from_millis(2));
        }
        ok &= check(error.map(|e| e.kind()) == Some(ErrorKind::ConnectionRefused), "take_error: refused");
        ok &= check(socket.take_error().map(|e| e.is_none()).unwrap_or(false), "taken once");
        ok
    };
    ok &= refusals("127.0.0.1:0", "127.0.0.1:9");
    ok &= refusals("[::1]:0", "[::1]:9");
    ok &= thread::spawn_on(client_cpu, move || refusals("0.0.0.0:0", "127.0.0.1:9")).join();
    println!("udp connection refused: ok");
    client.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 8];
    const CALLS: u32 = 2000;
    let start = Instant::now();
    for _ in 0..CALLS {
        let _ = client.recv_from(&mut buffer);
    }
    println!("local socket call (cpu 0): {} ns", start.elapsed().as_nanos() as u64 / u64::from(CALLS));
    // IPv6 on the loopback: TCP to [::1] from the client CPU, UDP
    // connected both ways, and a peer of the other family refused.
    let listener = TcpListener::bind("[::1]:7001").expect("bind [::1]:7001");
    let six = thread::spawn_on(client_cpu, || {
        let mut stream = TcpStream::connect("[::1]:7001").expect("connect [::1]:7001");
        stream.write_all(b"over six").unwrap();
        stream.peer_addr().unwrap()
    });
    let (mut accepted, from) = listener.accept().unwrap();
    let mut buffer = [0u8; 8];
    accepted.read_exact(&mut buffer).unwrap();
    ok &= check(&buffer == b"over six" && from.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST), "TCP over [::1]");
    ok &= check(six.join() == SocketAddr::from((Ipv6Addr::LOCALHOST, 7001)), "peer_addr [::1]:7001");
    let server = UdpSocket::bind("[::1]:7002").unwrap();
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client.connect("[::1]:7002").unwrap();
    ok &= check(client.peer_addr().ok() == Some(SocketAddr::from((Ipv6Addr::LOCALHOST, 7002))), "UDP peer [::1]");
    client.send(b"six").unwrap();
    let mut buffer = [0u8; 16];
    let (count, from) = server.recv_from(&mut buffer).unwrap();
    ok &= check(count == 3 && Some(from) == client.local_addr().ok(), "UDP to a connected [::1] peer");
    server.connect(from).unwrap();
    server.send(b"back").unwrap();
    ok &= check(client.recv(&mut buffer).ok() == Some(4) && &buffer[..4] == b"back", "UDP from the connected peer");
    let four = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mixed = four.connect("[::1]:7002").map_err(|e| e.kind());
    ok &= check(mixed == Err(ErrorKind::InvalidInput), "an IPv4 socket's IPv6 peer");
    println!("ipv6 loopback: ok");
    // A listener's clone accepts on another CPU after the original is
    // dropped; the port closes with the last handle. `take_error` reports
    // a peer's reset once.
    let listener = TcpListener::bind("127.0.0.1:7010").unwrap();
    let clone = listener.try_clone().unwrap();
    drop(listener);
    ok &= check(
        TcpListener::bind("127.0.0.1:7010").map(|_| ()).map_err(|e| e.kind()) == Err(ErrorKind::AddrInUse),
        "a clone keeps the port",
    );
    ok &= check(clone.take_error().map(|e| e.is_none()).unwrap_or(false), "a listener has no error");
    let accepting = thread::spawn_on(client_cpu, move || {
        let (stream, _) = clone.accept().expect("the clone accepts");
        drop(clone);
        stream
    });
    let client = TcpStream::connect("127.0.0.1:7010").expect("connect to the clone");
    let accepted = accepting.join();
    ok &= check(TcpListener::bind("127.0.0.1:7010").is_ok(), "the port closes with the last clone");
    ok &= check(accepted.take_error().map(|e| e.is_none()).unwrap_or(false), "no error on an open connection");
    client.abort();
    let mut byte = [0u8; 1];
    let mut reset = None;
    for _ in 0..100 {
        reset = accepted.take_error().unwrap();
        if reset.is_some() {
            break;
        }
        thread::sleep(core::time::Duration::from_millis(2));
    }
    ok &= check(reset.map(|e| e.kind()) == Some(ErrorKind::ConnectionReset), "take_error: the peer's reset");
    ok &= check(accepted.take_error().map(|e| e.is_none()).unwrap_or(false), "reported once");
    ok &= check((&accepted).read(&mut byte).map_err(|e| e.kind()) == Err(ErrorKind::ConnectionReset), "read: reset");
    println!("listener try_clone, take_error: ok");
    // Multicast and broadcast on the loopback.
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let server = UdpSocket::bind("127.0.0.1:7500").unwrap();
    server.set_read_timeout(Some(core::time::Duration::from_millis(200))).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let kind = |result: toro::io::Result<()>| result.map_err(|e| e.kind());
    ok &= check(kind(server.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)).is_ok(), "join 239.1.2.3 on lo");
    ok &= check(
        kind(server.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)) == Err(ErrorKind::AddrInUse),
        "joined twice",
    );
    ok &= check(
        kind(server.join_multicast_v4(&Ipv4Addr::LOCALHOST, &Ipv4Addr::UNSPECIFIED)) == Err(ErrorKind::InvalidInput),
        "not a group",
    );
    ok &= check(
        kind(server.join_multicast_v4(&Ipv4Addr::new(239, 9, 9, 9), &Ipv4Addr::new(10, 9, 9, 9)))
            == Err(ErrorKind::AddrNotAvailable),
        "no such interface",
    );
    client.send_to(b"to the group", (group, 7500)).unwrap();
    let mut buffer = [0u8; 32];
    let got = server.recv_from(&mut buffer).map(|(count, from)| (&buffer[..count] == b"to the group", from));
    ok &= check(got.ok() == Some((true, client.local_addr().unwrap())), "a datagram to the group");
    ok &= check(kind(server.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)).is_ok(), "leave");
    ok &= check(
        kind(server.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)) == Err(ErrorKind::AddrNotAvailable),
        "left twice",
    );
    client.send_to(b"after", (group, 7500)).unwrap();
    ok &= check(server.recv_from(&mut buffer).map_err(|e| e.kind()).err() == Some(ErrorKind::TimedOut), "left");
    let broadcast = "127.255.255.255:7500";
    ok &= check(!client.broadcast().unwrap(), "broadcast off by default");
    let refused = client.send_to(b"all", broadcast).map_err(|e| e.kind());
    ok &= check(refused == Err(ErrorKind::PermissionDenied), "a broadcast without set_broadcast");
    client.set_broadcast(true).unwrap();
    client.send_to(b"all", broadcast).unwrap();
    ok &= check(server.recv_from(&mut buffer).ok().map(|(count, _)| count) == Some(3), "a broadcast with it");
    let server6 = UdpSocket::bind("[::1]:7501").unwrap();
    let client6 = UdpSocket::bind("[::1]:0").unwrap();
    let group6: Ipv6Addr = "ff12::1234".parse().unwrap();
    ok &= check(kind(server6.join_multicast_v6(&group6, 1)).is_ok(), "join ff12::1234 on interface 1 (lo)");
    ok &= check(kind(server6.join_multicast_v6(&group6, 2)) == Err(ErrorKind::AddrNotAvailable), "not on eth0");
    client6.send_to(b"six", (group6, 7501)).unwrap();
    ok &= check(server6.recv_from(&mut buffer).ok().map(|(count, _)| count) == Some(3), "a datagram to the v6 group");
    println!("multicast, broadcast: ok");
    let lo = toro::net::interfaces().into_iter().find(|i| i.name == "lo").expect("lo");
    println!(
        "lo: {} frames, {} sockets, {} remote calls",
        lo.device.tx_frames, lo.stack.sockets, lo.counters.remote_calls
    );
    ok &=
        check(toro::net::ping(Ipv4Addr::LOCALHOST, 1, b"toro", core::time::Duration::from_secs(1)).is_ok(), "ping lo");
    if ok {
        println!("net loopback: all passed");
        0
    } else {
        1
    }
}
