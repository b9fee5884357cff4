//! Pings the first interface's gateway (or `target=A.B.C.D`) `count=N`
//! times (default 4), one second apart, and prints each round trip; on
//! DHCP (`toro.dhcp=1`) it waits for the lease's gateway first. Exits
//! 0 if every request was answered, 1 otherwise, 2 with nothing to ping.

#![no_std]
#![no_main]

use core::time::Duration;

use toro::net::Ipv4Addr;
use toro::{println, system, thread};

/// How long to wait for each reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Between requests.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait for a DHCP lease to give a gateway.
const DHCP_WAIT: Duration = Duration::from_secs(10);
/// Bytes of payload (like `ping`'s default 56).
const PAYLOAD: [u8; 56] = [0x70; 56];

#[toro::main]
fn main() -> i32 {
    let count: u16 = system::argument("count").and_then(|count| count.parse().ok()).unwrap_or(4);
    let target = match system::argument("target") {
        Some(text) => match text.parse::<Ipv4Addr>() {
            Ok(address) => address,
            Err(_) => {
                println!("ping: target={text} is not an IPv4 address");
                return 2;
            }
        },
        None => match gateway() {
            Some(gateway) => gateway,
            None => {
                println!("ping: no interface has a gateway (no NIC?); give target=ADDR");
                return 2;
            }
        },
    };
    let mut answered = 0;
    for sequence in 1..=count {
        match toro::net::ping(target, sequence, &PAYLOAD, REPLY_TIMEOUT) {
            Ok(rtt) => {
                answered += 1;
                println!("ping {target}: seq={sequence} time={} us", rtt.as_micros());
            }
            Err(error) => println!("ping {target}: seq={sequence}: {error}"),
        }
        if sequence < count {
            thread::sleep(INTERVAL);
        }
    }
    println!("ping {target}: {count} sent, {answered} replies");
    if answered == count {
        0
    } else {
        1
    }
}

/// The first interface's gateway; while an interface waits for its DHCP
/// lease, up to [`DHCP_WAIT`] for one.
fn gateway() -> Option<Ipv4Addr> {
    let started = toro::time::Instant::now();
    let mut said = false;
    loop {
        let interfaces = toro::net::interfaces();
        if let Some(gateway) = interfaces.iter().find_map(|interface| interface.gateway) {
            return Some(gateway);
        }
        if !interfaces.iter().any(|interface| interface.dhcp) || started.elapsed() >= DHCP_WAIT {
            return None;
        }
        if !said {
            println!("ping: waiting for a DHCP lease");
            said = true;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
