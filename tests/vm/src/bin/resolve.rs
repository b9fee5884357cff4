//! Host names resolved by DNS, as `std::net::ToSocketAddrs` resolves them
//! (run by xtask's `dns-q35-2`: q35, 2 CPUs, a 2-queue tap whose network
//! namespace runs dnsmasq at 172.31.0.1, given by `toro.dns=`). From each
//! CPU (each resolves on its own queue pair, and tells the other pair its
//! queries' ports): a name with an A and an AAAA record gives both, IPv4
//! first; the tuple form, a trailing dot and
//! upper case say the same; a name the server does not know is
//! `NotFound`, a malformed one `InvalidInput`; TCP connections from each
//! CPU to the host all open (their answers may reach the other queue
//! pair, which hands them over); a connected UDP socket on each CPU is
//! told the host refused it (the ICMP may reach the other pair, which
//! hands it over); a connect to an address nobody has times out after
//! `toro.tcp_connect_timeout=1`, and with a longer timeout gives
//! `HostUnreachable` once ARP gave up (3 s); connects to 12 hosts on the
//! link at once from one CPU all reach them within that 1 s timeout (each
//! host asked for at once); connects the host answers
//! with ICMP unreachables fail at once; a multicast datagram sent from
//! either CPU reaches a member socket here unless loop-back is off;
//! `TcpStream::connect` by name reaches the server's own TCP port 53, and
//! once the host stops answering, that connection times out with data
//! unacknowledged after `toro.tcp_user_timeout=3`.

#![no_std]
#![no_main]

use toro::alloc::format;
use toro::alloc::vec::Vec;
use toro::io::ErrorKind;
use toro::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use toro::{cpu, println, thread};
use vm_tests::check;

/// Hosts on the link each round of simultaneous connects goes to (xtask
/// gives the namespace's host 24 more addresses of each family).
const LINK_HOSTS: u16 = 12;

fn resolved<A: ToSocketAddrs>(address: A) -> Result<Vec<SocketAddr>, ErrorKind> {
    address.to_socket_addrs().map(|addresses| addresses.collect()).map_err(|error| error.kind())
}

#[toro::main]
fn main() -> i32 {
    let mut ok = true;
    let peer: [SocketAddr; 2] =
        [(Ipv4Addr::new(172, 31, 0, 1), 53).into(), (Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, 1), 53).into()];
    for cpu in 0..cpu::count() {
        let found = thread::spawn_on(cpu, || resolved("peer.toro.test:53")).join();
        println!("resolve: peer.toro.test from cpu {cpu}: {found:?}");
        ok &= check(found.as_deref() == Ok(&peer[..]), &format!("peer.toro.test from cpu {cpu}: {found:?}"));
    }
    // Each queue pair told the other the ports of its queries (A and
    // AAAA), so an answer the tap hands to the other queue reaches it.
    for interface in toro::net::interfaces().iter().filter(|interface| interface.name.starts_with("eth0")) {
        let announced = interface.counters.dns_ports_announced;
        println!("resolve: {} announced {announced} DNS query ports", interface.name);
        ok &= check(announced >= 2, &format!("{}: {announced} DNS query ports announced", interface.name));
    }
    let same = resolved(("PEER.toro.test.", 53));
    println!("resolve: (\"PEER.toro.test.\", 53): {same:?}");
    ok &= check(same.as_deref() == Ok(&peer[..]), &format!("(\"PEER.toro.test.\", 53): {same:?}"));
    let missing = resolved("missing.toro.test:80");
    println!("resolve: missing.toro.test: {missing:?}");
    ok &= check(missing == Err(ErrorKind::NotFound), &format!("missing.toro.test: {missing:?}"));
    let bad = resolved("bad..name:80");
    ok &= check(bad == Err(ErrorKind::InvalidInput), &format!("bad..name: {bad:?}"));
    println!("resolve: bad..name: {bad:?}");
    // Outgoing connections from each CPU's queue pair: the tap may hand
    // their answers to the other pair's queue, which passes them on.
    for cpu in 0..cpu::count() {
        for round in 0..4 {
            let connected = thread::spawn_on(cpu, || {
                let server: SocketAddr = (Ipv4Addr::new(172, 31, 0, 1), 53).into();
                TcpStream::connect_timeout(&server, core::time::Duration::from_secs(5))
                    .map(|stream| stream.local_addr().map(|local| local.port()).unwrap_or(0))
                    .map_err(|error| error.kind())
            })
            .join();
            ok &= check(connected.is_ok(), &format!("connect from cpu {cpu}, round {round}: {connected:?}"));
        }
    }
    // A connected UDP socket on each CPU's queue pair hears that the host
    // has nothing on port 9 (ICMP port unreachable), whichever queue the
    // tap hands the ICMP to (it picks one by the ICMP packet's own flow,
    // not the datagram's; the other pair hands it over).
    for cpu in 0..cpu::count() {
        let refused = thread::spawn_on(cpu, || {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|error| error.kind())?;
            socket.connect("172.31.0.1:9").map_err(|error| error.kind())?;
            socket.set_read_timeout(Some(core::time::Duration::from_millis(500))).map_err(|error| error.kind())?;
            let mut buffer = [0u8; 16];
            // Linux limits its ICMP errors to a burst of 6, then 1 a second
            // per peer: ask a few times.
            let mut last = Err(ErrorKind::Other);
            for _ in 0..6 {
                socket.send(b"anyone?").map_err(|error| error.kind())?;
                last = socket.recv(&mut buffer).map_err(|error| error.kind());
                if last == Err(ErrorKind::ConnectionRefused) {
                    break;
                }
            }
            last
        })
        .join();
        println!("resolve: UDP to 172.31.0.1:9 from cpu {cpu}: {refused:?}");
        ok &= check(refused == Err(ErrorKind::ConnectionRefused), &format!("UDP refusal on cpu {cpu}: {refused:?}"));
    }
    // Multicast on a 2-queue card: a socket on 0.0.0.0 that joined a group
    // gets a copy of what a socket here sends to it, from each CPU's
    // queue pair (loop-back, on by default as on Linux), and none once the
    // sender turns it off; the TTL of datagrams to groups is 1 unless set.
    let member = UdpSocket::bind("0.0.0.0:7600").unwrap();
    let group = Ipv4Addr::new(239, 1, 2, 4);
    ok &= check(member.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED).is_ok(), "join 239.1.2.4");
    member.set_read_timeout(Some(core::time::Duration::from_millis(500))).unwrap();
    for cpu in 0..cpu::count() {
        for looping in [true, false] {
            let sent = thread::spawn_on(cpu, move || {
                let sender = UdpSocket::bind("0.0.0.0:0").map_err(|error| error.kind())?;
                let defaults = (sender.multicast_ttl_v4(), sender.multicast_loop_v4());
                sender.set_multicast_loop_v4(looping).map_err(|error| error.kind())?;
                sender.set_multicast_ttl_v4(4).map_err(|error| error.kind())?;
                let set = (sender.multicast_ttl_v4(), sender.multicast_loop_v4());
                sender.send_to(b"to the group", (group, 7600)).map_err(|error| error.kind())?;
                let ok = matches!(defaults, (Ok(1), Ok(true))) && matches!(set, (Ok(4), Ok(l)) if l == looping);
                Ok::<bool, ErrorKind>(ok)
            })
            .join();
            ok &= check(sent == Ok(true), &format!("multicast options from cpu {cpu}: {sent:?}"));
            let mut buffer = [0u8; 32];
            let got = member.recv_from(&mut buffer).map(|(count, _)| &buffer[..count] == b"to the group");
            let got = got.map_err(|error| error.kind());
            // No second copy (one copy per datagram, on every pair).
            thread::sleep(core::time::Duration::from_millis(200));
            member.set_nonblocking(true).unwrap();
            let extra = (0..8).take_while(|_| member.recv_from(&mut buffer).is_ok()).count();
            member.set_nonblocking(false).unwrap();
            println!("resolve: to 239.1.2.4 from cpu {cpu}, loop {looping}: {got:?}, {extra} more");
            ok &= check(extra == 0, &format!("{extra} more copies from cpu {cpu} (loop {looping})"));
            let expected = if looping { Ok(true) } else { Err(ErrorKind::TimedOut) };
            ok &= check(got == expected, &format!("looped back from cpu {cpu} (loop {looping}): {got:?}"));
        }
    }
    // A connect to an address nobody has (no ARP answer) gives up after
    // toro.tcp_connect_timeout=1 with TimedOut (smoltcp alone retries its
    // SYN for ever; std on Linux gives up after 127 s).
    let started = toro::time::Instant::now();
    let silent = TcpStream::connect("172.31.0.99:80").map(|_| ()).map_err(|error| error.kind());
    let waited = started.elapsed().as_millis();
    println!("resolve: connect to 172.31.0.99:80: {silent:?} after {waited} ms");
    ok &= check(silent == Err(ErrorKind::TimedOut), &format!("connect to nobody: {silent:?}"));
    ok &= check((900..5000).contains(&waited), &format!("connect to nobody gave up after {waited} ms, not about 1 s"));
    // From both CPUs at once (each on its own queue pair and stack): a
    // connect to an address on the link that nobody answers ARP for gives
    // HostUnreachable after 3 requests over about 3 s, as Linux's "no
    // route to host"; the 10 s timeout is not reached.
    let unresolved: Vec<_> = (0..cpu::count())
        .map(|cpu| {
            thread::spawn_on(cpu, || {
                let started = toro::time::Instant::now();
                let nobody: SocketAddr = (Ipv4Addr::new(172, 31, 0, 98), 80).into();
                let result = TcpStream::connect_timeout(&nobody, core::time::Duration::from_secs(10));
                (result.map(|_| ()).map_err(|error| error.kind()), started.elapsed().as_millis())
            })
        })
        .collect();
    for (cpu, thread) in unresolved.into_iter().enumerate() {
        let (result, waited) = thread.join();
        println!("resolve: connect to 172.31.0.98:80 from cpu {cpu}: {result:?} after {waited} ms");
        ok &= check(result == Err(ErrorKind::HostUnreachable), &format!("unresolved from cpu {cpu}: {result:?}"));
        ok &= check((2900..6000).contains(&waited), &format!("unresolved from cpu {cpu} after {waited} ms, not 3 s"));
    }
    // Connects to 12 hosts on the link at once (more addresses of the
    // namespace's host, nothing listening on port 9: each answers with a
    // RST), from each CPU, over IPv4 and IPv6: all refused within the 1 s
    // connect timeout, since the stack asks for each host at once.
    // smoltcp alone asks for one neighbour a second per interface, so
    // the rest timed out waiting for their turn.
    for (round, (cpu, v6)) in [(0, false), (1, true), (0, true), (1, false)].into_iter().enumerate() {
        let cpu = cpu % cpu::count();
        let started = toro::time::Instant::now();
        let connects: Vec<_> = (0..LINK_HOSTS)
            .map(|index| {
                let host = round as u16 / 2 * LINK_HOSTS + index;
                let address: SocketAddr = match v6 {
                    false => (Ipv4Addr::new(172, 31, 0, 100 + host as u8), 9).into(),
                    true => (Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, 0x100 + host), 9).into(),
                };
                (address, thread::spawn_on(cpu, move || TcpStream::connect(address).map(|_| ()).map_err(|e| e.kind())))
            })
            .collect();
        let mut refused = 0;
        for (address, connect) in connects {
            let result = connect.join();
            refused += usize::from(result == Err(ErrorKind::ConnectionRefused));
            ok &= check(result == Err(ErrorKind::ConnectionRefused), &format!("connect to {address}: {result:?}"));
        }
        println!(
            "resolve: {refused} of {LINK_HOSTS} connects to hosts on the link (v6 {v6}) from cpu {cpu} refused \
             after {} ms",
            started.elapsed().as_millis()
        );
    }
    // The stack asked for those hosts itself: smoltcp asked for the first
    // of each round.
    let solicited: u64 = toro::net::interfaces()
        .iter()
        .filter(|interface| interface.name.starts_with("eth0"))
        .map(|interface| interface.stack.neighbours_solicited)
        .sum();
    println!("resolve: {solicited} neighbours solicited by the stacks themselves");
    let least = 4 * (u64::from(LINK_HOSTS) - 1);
    ok &= check(solicited >= least, &format!("{solicited} neighbours solicited by the stacks, not {least} or more"));
    // The namespace's host routes 10.99.0.0/16 as unreachable and has no
    // route to 10.97.0.0/16: its ICMP host and network unreachables end
    // the connects from each CPU at once (the ICMP may reach the other
    // queue pair, which hands it over).
    for cpu in 0..cpu::count() {
        for (address, expected) in [
            (Ipv4Addr::new(10, 99, 0, 1), ErrorKind::HostUnreachable),
            (Ipv4Addr::new(10, 97, 0, 1), ErrorKind::NetworkUnreachable),
        ] {
            // Linux rate-limits the ICMP errors it sends as a router to
            // one a second per destination (a burst of 5; the UDP refusals
            // above drew on it too): a second apart, each SYN is answered.
            thread::sleep(core::time::Duration::from_millis(1100));
            let (result, waited) = thread::spawn_on(cpu, move || {
                let started = toro::time::Instant::now();
                let beyond: SocketAddr = (address, 80).into();
                let result = TcpStream::connect_timeout(&beyond, core::time::Duration::from_secs(5));
                (result.map(|_| ()).map_err(|error| error.kind()), started.elapsed().as_millis())
            })
            .join();
            println!("resolve: connect to {address}:80 from cpu {cpu}: {result:?} after {waited} ms");
            ok &= check(result == Err(expected), &format!("{address} from cpu {cpu}: {result:?}"));
            ok &= check(waited < 500, &format!("{address} from cpu {cpu} after {waited} ms, not at once"));
        }
    }
    match TcpStream::connect("peer.toro.test:53") {
        Ok(stream) => {
            ok &= check(stream.peer_addr().ok() == Some(peer[0]), "connected to 172.31.0.1:53 by name");
            ok &= dead_peer(stream);
        }
        Err(error) => ok &= check(false, &format!("TcpStream::connect(\"peer.toro.test:53\"): {error}")),
    }
    if ok {
        println!("resolve: all passed");
        0
    } else {
        1
    }
}

/// The connection to dnsmasq's TCP port, whose peer then vanishes (the
/// host routes the guest's address into a black hole on the line below):
/// data sent after that is never acknowledged, and after
/// `toro.tcp_user_timeout=3` the blocked read ends with `TimedOut`, as
/// Linux's `ETIMEDOUT`; so does the next write. Before, with its data
/// acknowledged, the idle connection outlives 4 s of silence.
fn dead_peer(mut stream: TcpStream) -> bool {
    use toro::io::{Read, Write};
    let mut ok = true;
    // Half a DNS length prefix: dnsmasq waits for the rest.
    let sent = stream.write_all(&[0]).map_err(|error| error.kind());
    ok &= check(sent == Ok(()), &format!("the first byte to 172.31.0.1:53: {sent:?}"));
    // Its ACK comes long before the host acts on the line.
    thread::sleep(core::time::Duration::from_millis(500));
    println!("resolve: cut the guest off now");
    thread::sleep(core::time::Duration::from_secs(4));
    ok &= check(stream.take_error().ok().flatten().is_none(), "idle with nothing unacknowledged: no error");
    let sent = stream.write_all(&[0]).map_err(|error| error.kind());
    ok &= check(sent == Ok(()), &format!("the second byte: {sent:?}"));
    let started = toro::time::Instant::now();
    let mut buffer = [0u8; 8];
    let read = stream.read(&mut buffer).map_err(|error| error.kind());
    let waited = started.elapsed().as_millis();
    println!("resolve: read from the vanished peer: {read:?} after {waited} ms");
    ok &= check(read == Err(ErrorKind::TimedOut), &format!("read from the vanished peer: {read:?}"));
    ok &= check((2900..8000).contains(&waited), &format!("timed out after {waited} ms, not about 3 s"));
    let again = stream.write(&[0]).map_err(|error| error.kind());
    ok &= check(again == Err(ErrorKind::TimedOut), &format!("a write after the timeout: {again:?}"));
    ok
}
