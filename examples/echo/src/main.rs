//! TCP and UDP echo servers on port 7 (or `port=N`).
//!
//! TCP: one listener on `0.0.0.0` listens on every network instance; each
//! CPU that owns an instance accepts the connections that reached it and
//! echoes each in a thread of its own on that CPU. UDP: one socket echoes
//! every datagram to its sender; `group=ADDR` makes it a member of that
//! multicast group (IPv4 or IPv6) on every interface, so datagrams to the
//! group are echoed too (from the card's own address). `selftest=1` echoes 1 B to 16 MiB over the
//! loopback, checks every byte, prints `echo selftest: all passed` and
//! exits.

#![no_std]
#![no_main]

use toro::alloc::sync::Arc;
use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::io::{Read, Write};
use toro::net::{IpAddr, Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use toro::{println, system, thread};

/// Bytes moved per read.
const CHUNK: usize = 16 * 1024;

#[toro::main]
fn main() -> i32 {
    let port: u16 = system::argument("port").and_then(|port| port.parse().ok()).unwrap_or(7);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => Arc::new(listener),
        Err(error) => {
            println!("echo: cannot listen on tcp port {port}: {error}");
            return 1;
        }
    };
    let udp = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(socket) => socket,
        Err(error) => {
            println!("echo: cannot bind udp port {port}: {error}");
            return 1;
        }
    };
    if let Some(group) = system::argument("group") {
        let joined = match group.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => udp.join_multicast_v4(&v4, &Ipv4Addr::UNSPECIFIED),
            Ok(IpAddr::V6(v6)) => udp.join_multicast_v6(&v6, 0),
            Err(_) => Err(toro::io::Error::from_static(toro::io::ErrorKind::InvalidInput, "not an IP address")),
        };
        match joined {
            Ok(()) => println!("echo: udp port {port} is a member of group {group}"),
            Err(error) => println!("echo: group={group}: {error}; not joined"),
        }
    }
    let mut cpus: Vec<usize> = toro::net::interfaces().iter().map(|interface| interface.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    for &cpu in &cpus {
        let listener = listener.clone();
        // Dropping a handle detaches the thread, as in std.
        if let Err(error) = thread::Builder::new().name("echo-accept").spawn_on(cpu, move || accept_loop(&listener)) {
            println!("echo: no accepting thread on cpu {cpu}: {error}");
        }
    }
    if let Err(error) = thread::Builder::new().name("echo-udp").spawn(move || udp_loop(&udp)) {
        println!("echo: no udp thread: {error}");
    }
    println!("echo: tcp and udp port {port} on cpus {cpus:?}");
    if system::argument("selftest") == Some("1") {
        return selftest(port);
    }
    toro::park()
}

fn accept_loop(listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let cpu = toro::cpu::current();
                // Dropped at once (detached), so its stack comes back when it ends.
                let _ = thread::Builder::new().name("echo").spawn_on(cpu, move || echo(stream));
            }
            Err(error) => {
                println!("echo: accept: {error}");
                thread::sleep(core::time::Duration::from_millis(10));
            }
        }
    }
}

/// Echoes until the peer ends its side, then ends ours.
fn echo(mut stream: TcpStream) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => {
                if stream.write_all(&buffer[..count]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn udp_loop(socket: &UdpSocket) {
    let mut buffer = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((count, from)) => {
                let _ = socket.send_to(&buffer[..count], from);
            }
            Err(error) => {
                println!("echo: udp: {error}");
                thread::sleep(core::time::Duration::from_millis(10));
            }
        }
    }
}

fn selftest(port: u16) -> i32 {
    let mut ok = true;
    let mut size = 1usize;
    while size <= 16 << 20 {
        let data: Vec<u8> = (0..size).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8).collect();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let start = toro::time::Instant::now();
        let mut echoed = Vec::with_capacity(size);
        let mut sent = 0;
        let mut buffer = vec![0u8; CHUNK];
        while echoed.len() < size {
            if sent < size {
                let end = (sent + CHUNK).min(size);
                stream.write_all(&data[sent..end]).expect("write");
                sent = end;
                if sent == size {
                    stream.shutdown(Shutdown::Write).expect("shutdown");
                }
            }
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => echoed.extend_from_slice(&buffer[..count]),
                Err(error) => {
                    println!("echo selftest: read: {error}");
                    break;
                }
            }
        }
        let good = echoed == data;
        ok &= good;
        let micros = start.elapsed().as_micros().max(1);
        println!("echo tcp {size} B: {} ({} MB/s)", if good { "ok" } else { "MISMATCH" }, size as u128 / micros);
        size *= 16;
    }
    let client = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    client.set_read_timeout(Some(core::time::Duration::from_secs(2))).unwrap();
    for size in [1usize, 512, 1472] {
        let data = vec![size as u8; size];
        client.send_to(&data, ("127.0.0.1", port)).expect("send_to");
        let mut buffer = [0u8; 2048];
        let good = matches!(client.recv_from(&mut buffer), Ok((count, _)) if buffer[..count] == data[..]);
        ok &= good;
        println!("echo udp {size} B: {}", if good { "ok" } else { "FAILED" });
    }
    if ok {
        println!("echo selftest: all passed");
        0
    } else {
        1
    }
}
