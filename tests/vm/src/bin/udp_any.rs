//! A `UdpSocket` bound to `0.0.0.0` on a machine with two cards (QEMU user
//! networking; card 0 at 10.0.2.15 on CPU 1, card 1 at 10.0.3.15 on CPU 0)
//! and the loopback: it has a member on each, so it receives what is sent
//! to 127.0.0.1 (before, it lived on card 0 only and never did); its port
//! is taken on every member while it lives and given back after; receives
//! wait on every member at once, wake when a datagram reaches any (from a
//! thread on each CPU, two threads on one CPU), time out and refuse to
//! block as std's do; `local_addr` stays `0.0.0.0`. Binds to a card's
//! IPv6 addresses (static and link-local) land on that card.

#![no_std]
#![no_main]

use core::time::Duration;
use toro::alloc::sync::Arc;
use toro::io::ErrorKind;
use toro::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use toro::time::Instant;
use toro::{println, thread};
use vm_tests::check;

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

#[toro::main]
fn main() -> i32 {
    let mut ok = true;
    let cards: usize = toro::net::interfaces().iter().filter(|i| i.name.starts_with("eth")).count();
    ok &= check(cards == 2, "two cards");

    // The loopback's member: a datagram to 127.0.0.1 reaches a socket on 0.0.0.0.
    let server = UdpSocket::bind("0.0.0.0:7100").unwrap();
    ok &= check(server.local_addr().unwrap() == SocketAddr::new(IpAddr::V4(ANY), 7100), "local_addr 0.0.0.0:7100");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let client_address = client.local_addr().unwrap();
    client.send_to(b"over lo", "127.0.0.1:7100").unwrap();
    let mut buffer = [0u8; 64];
    match server.recv_from(&mut buffer) {
        Ok((count, from)) => {
            ok &= check(&buffer[..count] == b"over lo", "the datagram to 127.0.0.1 intact");
            ok &= check(from == client_address, "its sender");
            // The answer to 127.0.0.1 leaves by the loopback, from 127.0.0.1.
            server.send_to(b"back", from).unwrap();
            match client.recv_from(&mut buffer) {
                Ok((count, from)) => {
                    ok &= check(&buffer[..count] == b"back", "the answer intact");
                    ok &= check(from == SocketAddr::from(([127, 0, 0, 1], 7100)), "the answer from 127.0.0.1:7100");
                }
                Err(error) => ok &= check(false, &toro::alloc::format!("the answer: {error}")),
            }
        }
        Err(error) => ok &= check(false, &toro::alloc::format!("0.0.0.0 got nothing sent to 127.0.0.1: {error}")),
    }
    println!("udp any: loopback member ok");

    // The port is taken on every member while the socket lives.
    let any = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = any.local_addr().unwrap().port();
    ok &= check(port >= 49152 && any.local_addr().unwrap().ip() == IpAddr::V4(ANY), "0.0.0.0:0 picks a port");
    for address in ["127.0.0.1", "10.0.2.15", "10.0.3.15", "0.0.0.0"] {
        let taken = UdpSocket::bind((address, port)).map(|_| ()).map_err(|e| e.kind());
        ok &= check(taken == Err(ErrorKind::AddrInUse), &toro::alloc::format!("{address}:{port} taken"));
    }
    drop(any);
    for address in ["127.0.0.1", "10.0.2.15", "10.0.3.15"] {
        let socket = UdpSocket::bind((address, port));
        ok &= check(socket.is_ok(), &toro::alloc::format!("{address}:{port} free again"));
        if let Ok(socket) = socket {
            ok &= check(
                socket.local_addr().unwrap() == SocketAddr::from((address.parse::<Ipv4Addr>().unwrap(), port)),
                "local_addr of a bound address",
            );
        }
    }
    // A port held on one card only refuses 0.0.0.0 (none of its members stays).
    let one_card = UdpSocket::bind("10.0.3.15:7200").unwrap();
    let refused = UdpSocket::bind("0.0.0.0:7200").map(|_| ()).map_err(|e| e.kind());
    ok &= check(refused == Err(ErrorKind::AddrInUse), "0.0.0.0:7200 refused while 10.0.3.15:7200 is bound");
    ok &= check(UdpSocket::bind("127.0.0.1:7200").is_ok(), "127.0.0.1:7200 still free after the refused bind");
    drop(one_card);
    // IPv6 addresses of one card: its static one (toro.eth1.ip6=) and its
    // link-local one (from its MAC) bind there only; an address no card
    // has is AddrNotAvailable.
    for address in ["fd00:3::15", "fe80::5054:ff:fe12:3457"] {
        let address: IpAddr = address.parse().unwrap();
        let socket = UdpSocket::bind((address, 7300));
        ok &= check(
            socket.as_ref().ok().and_then(|s| s.local_addr().ok()) == Some(SocketAddr::new(address, 7300)),
            &toro::alloc::format!(
                "UDP bind to [{address}]:7300: {:?}",
                socket.as_ref().map(|_| ()).map_err(|e| e.kind())
            ),
        );
        let listener = toro::net::TcpListener::bind((address, 7300));
        ok &= check(listener.is_ok(), &toro::alloc::format!("TCP bind to [{address}]:7300"));
    }
    let foreign = UdpSocket::bind("[fd00:3::99]:7300").map(|_| ()).map_err(|e| e.kind());
    ok &= check(foreign == Err(ErrorKind::AddrNotAvailable), "a bind to an IPv6 address no card has");
    println!("udp any: ports ok");

    // Timeouts and non-blocking calls over several members.
    server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let timed_out = server.recv_from(&mut buffer).map(|_| ()).map_err(|e| e.kind());
    let waited = start.elapsed();
    ok &= check(timed_out == Err(ErrorKind::TimedOut), "recv_from times out");
    ok &= check(waited >= Duration::from_millis(50) && waited < Duration::from_secs(2), "after its timeout");
    server.set_nonblocking(true).unwrap();
    let would_block = server.recv_from(&mut buffer).map(|_| ()).map_err(|e| e.kind());
    ok &= check(would_block == Err(ErrorKind::WouldBlock), "non-blocking recv_from");
    server.set_nonblocking(false).unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    println!("udp any: timeouts ok");

    // Blocked receivers woken by a datagram to the loopback: one on each
    // CPU, then two on one CPU.
    let server = Arc::new(server);
    for cpus in [[0usize, 1], [1, 1], [0, 0]] {
        let receivers: toro::alloc::vec::Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let server = server.clone();
                thread::spawn_on(cpu, move || {
                    let mut buffer = [0u8; 64];
                    server.recv_from(&mut buffer).map(|(count, _)| count).map_err(|e| e.kind())
                })
            })
            .collect();
        // Let both block first.
        thread::sleep(Duration::from_millis(100));
        for _ in 0..cpus.len() {
            client.send_to(b"wake", "127.0.0.1:7100").unwrap();
        }
        for (receiver, cpu) in receivers.into_iter().zip(cpus) {
            let got = receiver.join();
            ok &= check(got == Ok(4), &toro::alloc::format!("a receiver on cpu {cpu} (of {cpus:?}) woken: {got:?}"));
        }
    }
    println!("udp any: wake-ups ok");

    if ok {
        println!("udp any: all passed");
        0
    } else {
        1
    }
}
