//! A multi-core HTTP/1.1 web server on Toro.
//!
//! One listener on `0.0.0.0:PORT` (80, or `port=N` on the command line)
//! listens on every network instance. Each CPU that owns an instance runs
//! an accepting thread; it takes the connections that reached its CPU and
//! serves each in a thread of its own on that CPU, so a connection's
//! packets, its socket calls and its requests never cross CPUs.
//!
//! With a disk mounted (`cargo xtask run --disk FOLDER`), the files under
//! `webroot=` (default `/`) are served instead of the built-in `/` (see
//! `files`); `/live`, `/stats` and `/echo` stay.
//!
//! Pages: `/` (612 bytes, like nginx's default page), `/live` (per-CPU
//! figures refreshed every second) and `/stats` (text, or JSON with
//! `?format=json` or `Accept: application/json`). Protocol details (keep-
//! alive, pipelining, chunked bodies, limits and error statuses) are in
//! `toro_net::http`; per connection: 10 s to finish a request once begun,
//! 30 s idle between keep-alive requests, then 408 or a close; 10 s for a
//! client to take a response (a client that stopped reading), then a reset.
//!
//! Textual responses go gzip-coded to clients that send `Accept-Encoding:
//! gzip` (`gzip=off` or a level 1-9 on the command line; see `coding`).
//!
//! `selftest=1` runs clients on the other CPUs over the loopback (keep-
//! alive, pipelining, bad requests, concurrent and idle clients), prints
//! `webserver selftest: all passed` and exits: the in-VM test.

#![no_std]
#![no_main]

mod coding;
mod files;
mod selftest;
mod site;
mod stats;

use toro::alloc::string::String;
use toro::alloc::sync::Arc;
use toro::alloc::vec;
use toro::alloc::vec::Vec;
use toro::io::{ErrorKind, Read, Write};
use toro::net::{Shutdown, TcpListener, TcpStream};
use toro::{println, system, thread};
use toro_net::http::{Connection, Limits, Outcome};

/// How long a begun request may take to arrive whole.
const REQUEST_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(10);
/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(30);
/// How long a response may wait for the client to take it (a client that
/// stopped reading, its window full): then the connection is reset.
const WRITE_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Bytes of a streamed body (a large file) read and sent at a time.
const STREAM_PIECE: usize = 64 * 1024;

#[toro::main]
fn main() -> i32 {
    let port: u16 = match system::argument("port").map(str::parse) {
        None => 80,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            println!("webserver: port= must be a number 1-65535; using 80");
            80
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => Arc::new(listener),
        Err(error) => {
            println!("webserver: cannot listen on port {port}: {error}");
            return 1;
        }
    };
    let mut cpus: Vec<usize> = toro::net::interfaces().iter().map(|interface| interface.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    for interface in toro::net::interfaces() {
        match interface.ipv4 {
            Some((address, prefix)) => {
                println!("webserver: {} on cpu {}: http://{address}:{port}/ (/{prefix})", interface.name, interface.cpu)
            }
            None => println!("webserver: {} on cpu {}: no address yet", interface.name, interface.cpu),
        }
        for (address, prefix) in &interface.ipv6 {
            println!("webserver: {} on cpu {}: http://[{address}]:{port}/ (/{prefix})", interface.name, interface.cpu);
        }
    }
    coding::init();
    // Before any connection is accepted: whether the disk's files are served.
    if let Some(root) = files::init() {
        println!("webserver: serving the files under {root} (webroot=)");
    }
    for &cpu in &cpus {
        let listener = listener.clone();
        let started = thread::Builder::new().name("accept").spawn_on(cpu, move || accept_loop(&listener));
        // Dropping a handle detaches the thread, as in std.
        if let Err(error) = started {
            println!("webserver: no accepting thread on cpu {cpu}: {error}");
        }
    }
    println!("webserver: serving port {port} on cpus {cpus:?} of {}", toro::cpu::count());
    if system::argument("selftest") == Some("1") {
        return selftest::run(port);
    }
    toro::park()
}

/// Takes the connections that reach this CPU; each gets a thread here.
fn accept_loop(listener: &TcpListener) {
    let cpu = toro::cpu::current();
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // One connection gone before it was taken: said (the kernel's
            // accept skips those, test webserver-storms-qemu-2 watches for
            // the line), then the next one at once.
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::NotConnected) => {
                println!("webserver: accept on cpu {cpu}: {error} (one connection; skipped)");
                continue;
            }
            Err(error) => {
                println!("webserver: accept on cpu {cpu}: {error}");
                thread::sleep(core::time::Duration::from_millis(10));
                continue;
            }
        };
        stats::connection_opened();
        // The handle is dropped at once: that detaches the thread and lets
        // its stack come back when it ends (`mem::forget` kept every stack:
        // after about 256 connections on a 128 MiB VM the server refused
        // every new one; test webserver-storms-qemu-2).
        let spawned = thread::Builder::new().name("http").spawn_on(cpu, move || serve(stream));
        if spawned.is_err() {
            // No thread stack left: refuse this one, keep serving.
            stats::connection_closed();
            stats::refused();
        }
    }
}

/// The `Date` header's value, if the machine has a wall clock (the CMOS
/// RTC on q35; microvm has none, and RFC 9110 section 6.6.1 says a server
/// without a clock sends no `Date`).
fn http_date() -> Option<String> {
    let now = toro::time::SystemTime::try_now().ok()?;
    let seconds = now.duration_since(toro::time::UNIX_EPOCH).ok()?.as_secs();
    let mut text = String::new();
    toro_net::http::http_date(seconds, &mut text);
    Some(text)
}

/// Sends `out` (then empties it); false if the connection failed.
/// A write that timed out (the client stopped reading) sets `stalled`.
fn send(stream: &mut TcpStream, out: &mut Vec<u8>, stalled: &mut bool) -> bool {
    if out.is_empty() {
        return true;
    }
    if let Err(error) = stream.write_all(out) {
        if error.kind() == ErrorKind::TimedOut {
            stats::timed_out();
            *stalled = true;
        }
        return false;
    }
    stats::bytes_out(out.len());
    out.clear();
    true
}

/// Answers every complete request buffered and sends the answers: a
/// streamed body goes out in pieces of [`STREAM_PIECE`], then the requests
/// pipelined behind it are answered. `None` if the connection failed.
fn answer(
    connection: &mut Connection,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    stalled: &mut bool,
) -> Option<Outcome> {
    loop {
        let before = connection.stats().requests;
        let date = http_date();
        let outcome = connection.respond(out, date.as_deref(), site::respond);
        stats::requests(connection.stats().requests - before);
        if !send(stream, out, stalled) {
            return None;
        }
        if !connection.streaming() {
            return Some(outcome);
        }
        while connection.streaming() {
            let failed = connection.stream_into(out, STREAM_PIECE).is_err();
            if !send(stream, out, stalled) || failed {
                return None;
            }
        }
    }
}

/// Serves one connection until it closes, errs or times out.
fn serve(mut stream: TcpStream) {
    let mut connection = Connection::new(Limits::default());
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut out = Vec::new();
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // Set when a write timed out: the client stopped reading.
    let mut stalled = false;
    loop {
        let timeout = if connection.has_partial_request() { REQUEST_TIMEOUT } else { IDLE_TIMEOUT };
        let _ = stream.set_read_timeout(Some(timeout));
        let room = connection.input_room().clamp(1, READ_CHUNK);
        let count = match stream.read(&mut buffer[..room]) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == ErrorKind::TimedOut => {
                connection.timeout(&mut out, http_date().as_deref());
                stats::timed_out();
                stalled = stream.write_all(&out).is_err_and(|error| error.kind() == ErrorKind::TimedOut);
                break;
            }
            Err(_) => break,
        };
        stats::bytes_in(count);
        connection.feed(&buffer[..count]);
        let Some(outcome) = answer(&mut connection, &mut stream, &mut out, &mut stalled) else { break };
        if outcome == Outcome::Close {
            let _ = stream.shutdown(Shutdown::Write);
            break;
        }
    }
    if stalled {
        // Its unsent responses would hold the closed socket open for as
        // long as the client keeps its window shut.
        stream.abort();
    }
    stats::rejected(connection.stats().rejected);
    stats::connection_closed();
}
