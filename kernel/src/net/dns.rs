//! Host names to addresses, for `ToSocketAddrs`: smoltcp's DNS client
//! (`toro_net::Stack::dns_start`) on a card's instance, asked from the
//! calling thread's CPU like any socket call.
//!
//! The servers are the card's (`toro.dns=`/`toro.ethK.dns=`, else its DHCP
//! lease's; the first card with QEMU user networking's default address
//! asks slirp's 10.0.2.3). The first card that has servers resolves, on
//! the queue pair of the calling CPU where it has several. A and AAAA are
//! asked at once; the IPv4 addresses come first (Toro's routes prefer
//! IPv4; Linux's `getaddrinfo` sorts by RFC 6724). No cache, no search
//! domains, no `/etc/hosts` (`localhost` is known without DNS).

use alloc::vec::Vec;
use core::net::SocketAddr;

use toro_net::{DnsRecord, NetError};

use super::addr::from_endpoint;
use super::instance::{self, Interest, WaitError};
use crate::io::{self, ErrorKind};

/// How long a lookup may take in all (smoltcp gives up on a server after
/// 10 s and then asks the next).
const LOOKUP_MICROS: u64 = 45_000_000;

/// The addresses of `host` (a name, not an address literal), each with
/// `port`. `NotFound` when no server knows it or none answered, or when
/// no card has a DNS server; `InvalidInput` for a malformed name.
pub(crate) fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let id = resolver()
        .ok_or(io::Error::from_static(ErrorKind::NotFound, "no DNS server configured (toro.dns=ADDR or DHCP)"))?;
    let started = crate::time::Instant::now();
    let answers = instance::on_owner(id, || {
        let start =
            |record| instance::with_local(id, |i| i.stack.dns_start(host, record)).unwrap_or(Err(NetError::BadHandle));
        let queries = [start(DnsRecord::A)?, start(DnsRecord::Aaaa)?];
        let mut answers = Vec::new();
        for query in queries {
            let left = LOOKUP_MICROS.saturating_sub(started.elapsed().as_micros() as u64).max(1);
            let answer = instance::wait_on(id, Interest::Dns(query), Some(left), false, |i| i.stack.dns_result(query));
            if matches!(answer, Err(WaitError::TimedOut)) {
                instance::with_local(id, |i| i.stack.dns_cancel(query));
            }
            answers.push(answer);
        }
        Ok::<_, NetError>(answers)
    })
    .map_err(super::to_io)?;
    let mut found = Vec::new();
    let mut failure = None;
    for answer in answers {
        match answer {
            Ok(addresses) => found.extend(addresses.into_iter().map(|address| from_endpoint((address, port).into()))),
            Err(error) => failure = Some(error),
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    Err(match failure {
        Some(WaitError::TimedOut) => io::Error::from_static(ErrorKind::TimedOut, "DNS lookup timed out"),
        _ => io::Error::from_static(ErrorKind::NotFound, "failed to look up the host name: no address found"),
    })
}

/// The instance that resolves: of the first card with DNS servers, the
/// queue pair of this CPU, else its first.
fn resolver() -> Option<usize> {
    let here = crate::cpu::current();
    super::topology().cards.iter().find_map(|card| {
        let first = *card.instances.first()?;
        let has_servers = instance::on_owner(first, || {
            instance::with_local(first, |i| !i.stack.dns_servers().is_empty()).unwrap_or(false)
        });
        has_servers.then(|| card.instances.iter().copied().find(|&id| instance::owner(id) == here).unwrap_or(first))
    })
}
