//! `selftest=1`: clients on the other CPUs talk to the server over the
//! loopback and check what it answers; the in-VM test of the server.

use toro::alloc::string::String;
use toro::alloc::vec::Vec;
use toro::io::{Read, Write};
use toro::net::TcpStream;
use toro::{println, thread};

use crate::site::INDEX;
use crate::stats;

/// A client connection that reads responses one by one (pipelining-safe).
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// One parsed response.
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("selftest: connect");
        stream.set_read_timeout(Some(core::time::Duration::from_secs(20))).unwrap();
        Client { stream, pending: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("selftest: write");
    }

    /// Reads more into `pending`; false at end of stream or error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 2048];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(count) => {
                self.pending.extend_from_slice(&chunk[..count]);
                true
            }
        }
    }

    /// The next response; `None` if the connection ended first. `head`:
    /// the request was HEAD (no body follows).
    fn reply(&mut self, head: bool) -> Option<Reply> {
        let head_end = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let headers = String::from_utf8_lossy(&self.pending[..head_end]).into_owned();
        let status = headers.get(9..12)?.parse().ok()?;
        let length: usize = headers
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        let length = if head { 0 } else { length };
        while self.pending.len() < head_end + length {
            if !self.fill() {
                return None;
            }
        }
        let body = self.pending[head_end..head_end + length].to_vec();
        self.pending.drain(..head_end + length);
        Some(Reply { status, headers, body })
    }

    /// Whether the server closed the connection (reads end of stream).
    fn closed(&mut self) -> bool {
        !self.fill()
    }
}

fn check(condition: bool, what: &str) -> bool {
    if !condition {
        println!("selftest FAILED: {what}");
    }
    condition
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: toro\r\n\r\n";

fn total_open() -> u64 {
    (0..toro::cpu::count().min(stats::MAX_CPUS))
        .map(|cpu| stats::of(cpu).open.load(core::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// Runs the checks from a thread on each other CPU in turn; returns the
/// exit status.
pub fn run(port: u16) -> i32 {
    let cpus = toro::cpu::count();
    let client_cpu = cpus.saturating_sub(1);
    let ok = thread::spawn_on(client_cpu, move || protocol_checks(port)).join();
    let ok = ok && concurrent_and_idle(port, cpus);
    if ok {
        println!("webserver selftest: all passed");
        0
    } else {
        1
    }
}

fn protocol_checks(port: u16) -> bool {
    let mut ok = true;
    // Keep-alive: many requests on one connection.
    let mut client = Client::connect(port);
    for _ in 0..20 {
        client.send(GET);
        let reply = client.reply(false).expect("reply");
        ok &= check(reply.status == 200 && reply.body == INDEX, "GET / keep-alive: 200 and the page");
        ok &= check(reply.body.len() == 612, "the index page is 612 bytes");
        let dated = reply.headers.contains("\r\nDate: ");
        ok &= check(dated == toro::time::SystemTime::try_now().is_ok(), "Date exactly when there is a wall clock");
    }
    if toro::time::SystemTime::try_now().is_ok() {
        println!("selftest: dated responses");
    }
    // gzip for the clients that ask; pipelined with uncoded requests.
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br, gzip\r\n\r\nGET /live HTTP/1.1\r\nHost: t\r\n\r\n");
    let (coded, plain) = (client.reply(false), client.reply(false));
    match crate::coding::level() {
        Some(_) => {
            let coded = coded.filter(|r| r.status == 200 && r.headers.contains("\r\nContent-Encoding: gzip\r\n"));
            let decoded = coded.as_ref().and_then(|r| toro_net::gzip::decompress(&r.body, 1 << 20).ok());
            ok &= check(decoded.as_deref() == Some(INDEX), "gzip-coded GET /: the page once decoded");
            ok &= check(coded.is_some_and(|r| r.body.len() < INDEX.len()), "and smaller");
            ok &= check(
                plain.is_some_and(|r| {
                    r.headers.contains("\r\nVary: Accept-Encoding\r\n") && !r.headers.contains("Content-Encoding")
                }),
                "uncoded /live for a client that did not ask, with Vary",
            );
            println!("selftest: gzip-coded responses");
        }
        None => {
            let uncoded = coded.is_some_and(|r| r.body == INDEX && !r.headers.contains("Content-Encoding"));
            ok &= check(uncoded && plain.is_some(), "gzip=off: every response uncoded");
        }
    }
    // Pipelined requests, answered in order; HEAD has no body.
    client.send(
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let statuses = [client.reply(false), client.reply(false), client.reply(true)].map(|r| r.map(|r| r.status));
    ok &= check(statuses == [Some(200), Some(404), Some(200)], "pipelined: 200, 404, 200 in order");
    // A body, by length and chunked.
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    ok &= check(client.reply(false).is_some_and(|r| r.body == b"hello"), "POST with Content-Length");
    client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    ok &= check(client.reply(false).is_some_and(|r| r.body == b"abc"), "POST chunked");
    client.send(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    ok &= check(
        client.reply(false).is_some_and(|r| r.status == 405 && r.headers.contains("Allow: GET, HEAD")),
        "405 with Allow",
    );
    client.send(b"GET /stats?format=json HTTP/1.1\r\nHost: t\r\n\r\n");
    let stats_reply = client.reply(false);
    ok &= check(
        stats_reply.as_ref().is_some_and(|r| r.status == 200 && r.body.starts_with(b"{\"cpus\":[")),
        "/stats as JSON",
    );
    client.send(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ok &=
        check(client.reply(false).is_some_and(|r| r.status == 200 && r.headers.contains("Connection: close")), "close");
    ok &= check(client.closed(), "the server closes after Connection: close");
    drop(client);

    // Without keep-alive: a connection per request.
    for _ in 0..10 {
        let mut client = Client::connect(port);
        client.send(b"GET / HTTP/1.0\r\n\r\n");
        ok &= check(client.reply(false).is_some_and(|r| r.status == 200), "HTTP/1.0 GET");
        ok &= check(client.closed(), "HTTP/1.0 closes");
    }

    // Bad input: each gets its status and a close; the server goes on.
    let big_header = {
        let mut request = Vec::from(&b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: "[..]);
        request.extend(core::iter::repeat_n(b'a', 9000));
        request.extend_from_slice(b"\r\n\r\n");
        request
    };
    let cases: [(&[u8], u16); 5] = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n", 413),
        (&big_header, 431),
    ];
    for (request, status) in cases {
        let mut client = Client::connect(port);
        client.send(request);
        let got = client.reply(false).map(|r| r.status);
        ok &= check(got == Some(status), "bad request gets its status");
        ok &= check(client.closed(), "and a close");
    }
    // Random bytes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..5 {
        let mut client = Client::connect(port);
        let junk: Vec<u8> = (0..600)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        client.send(&junk);
        let got = client.reply(false).map(|r| r.status);
        ok &=
            check(matches!(got, Some(400 | 414 | 431 | 501 | 505) | None), "random bytes: an error status or a close");
    }
    // A header split over many small writes.
    let mut client = Client::connect(port);
    for piece in GET.chunks(3) {
        client.send(piece);
        thread::sleep(core::time::Duration::from_millis(1));
    }
    ok &= check(client.reply(false).is_some_and(|r| r.status == 200), "a request in 3-byte pieces");
    // A client that resets right after asking (unread response).
    for _ in 0..5 {
        let mut client = Client::connect(port);
        client.send(GET);
        thread::sleep(core::time::Duration::from_millis(2));
        drop(client); // unread data: the close is a reset
    }
    let mut client = Client::connect(port);
    client.send(GET);
    ok &= check(client.reply(false).is_some_and(|r| r.status == 200), "serving after resets");
    println!("selftest: protocol checks done");
    ok
}

fn concurrent_and_idle(port: u16, cpus: usize) -> bool {
    let mut ok = true;
    thread::sleep(core::time::Duration::from_millis(50));
    let baseline_open = total_open();
    // Idle connections (some with half a request) held open meanwhile.
    let idle_cpu = if cpus > 1 { 1 } else { 0 };
    let idle = thread::spawn_on(idle_cpu, move || {
        let mut held = Vec::new();
        for index in 0..40 {
            let mut client = Client::connect(port);
            if index % 2 == 0 {
                client.send(b"GET / HT");
            }
            held.push(client);
        }
        held
    })
    .join();
    // Concurrent clients on every CPU.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 25;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|index| {
            thread::spawn_on(index % cpus, move || {
                let mut client = Client::connect(port);
                let mut good = 0;
                for _ in 0..REQUESTS {
                    client.send(GET);
                    if client.reply(false).is_some_and(|r| r.status == 200 && r.body == INDEX) {
                        good += 1;
                    }
                }
                good
            })
        })
        .collect();
    let served: usize = workers.into_iter().map(|worker| worker.join()).sum();
    ok &= check(served == CLIENTS * REQUESTS, "every concurrent request served while idle connections are held");
    println!("selftest: {served} concurrent requests, {} idle connections held", idle.len());
    ok &= check(total_open() >= baseline_open + 40, "the idle connections count as open");
    drop(idle);
    // Back near the baseline once they are gone.
    let mut settled = false;
    for _ in 0..200 {
        if total_open() <= baseline_open {
            settled = true;
            break;
        }
        thread::sleep(core::time::Duration::from_millis(10));
    }
    ok &= check(settled, "open connections back to the baseline");
    let lo = toro::net::interfaces().into_iter().find(|i| i.name == "lo");
    if let Some(lo) = lo {
        println!("selftest: lo has {} sockets, {} closing after the storm", lo.stack.sockets, lo.stack.closing);
    }
    ok
}
