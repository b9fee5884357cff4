//! Sockets over the loopback instance (owned by CPU 0): TCP echo from a
//! client on another CPU (every call a remote call) with payloads from 1 B
//! to 1 MiB checked byte for byte, UDP, refused connects, timeouts,
//! non-blocking calls, port conflicts; and the cost of a remote call.

#![no_std]
#![no_main]

use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::io::{ErrorKind, Read, Write};
use toro::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
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

/// Serves echo on `listener` for `connections` connections, one by one.
fn echo_server(listener: TcpListener, connections: usize) {
    for _ in 0..connections {
        let (mut stream, _) = listener.accept().expect("accept");
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
    let server = thread::spawn_on(0, move || echo_server(listener, 3));

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
            TcpStream::connect("example.com:80").map(|_| ()).map_err(|e| e.kind()) == Err(ErrorKind::InvalidInput),
            "no resolver",
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

        ok
    });
    ok &= client.join();
    server.join();

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
    client.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 8];
    const CALLS: u32 = 2000;
    let start = Instant::now();
    for _ in 0..CALLS {
        let _ = client.recv_from(&mut buffer);
    }
    println!("local socket call (cpu 0): {} ns", start.elapsed().as_nanos() as u64 / u64::from(CALLS));
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
