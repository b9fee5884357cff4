//! `UdpSocket`, shaped like std's.

use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering};

use toro_net::stack::UdpHandle;
use toro_net::NetError;

use super::addr::{from_endpoint, resolve, to_endpoint, ToSocketAddrs};
use super::instance::{self, Interest};
use super::{to_io, wait_to_io};
use crate::io::{self, ErrorKind};

/// A UDP socket, like `std::net::UdpSocket`. It lives in one instance:
/// the loopback for `127.0.0.1`, otherwise the binding CPU's NIC instance
/// (or the first NIC's).
pub struct UdpSocket {
    instance: usize,
    handle: UdpHandle,
    local: SocketAddr,
    /// The peer set by `connect`: [`PEER_SET`] | IPv4 address << 16 |
    /// port, 0 for none (an atomic, so the socket is `Sync` like std's).
    peer: AtomicU64,
    options: super::Options,
}

/// Marks `UdpSocket::peer` as set.
const PEER_SET: u64 = 1 << 63;

impl UdpSocket {
    /// Opens a socket on `address` (port 0 picks one).
    pub fn bind<A: ToSocketAddrs>(address: A) -> io::Result<UdpSocket> {
        let address = resolve(&address)?[0];
        let ids = super::instances_for(address.ip())?;
        let id = if address.ip().is_unspecified() { super::route(None)? } else { ids[0] };
        let (handle, port) = instance::on_owner(id, || {
            let bound =
                instance::with_local(id, |i| i.stack.udp_bind(address.port())).unwrap_or(Err(NetError::BadHandle));
            if let Ok((_, port)) = bound {
                instance::announce_udp(id, port, true);
            }
            bound
        })
        .map_err(to_io)?;
        Ok(UdpSocket {
            instance: id,
            handle,
            local: SocketAddr::new(address.ip(), port),
            peer: AtomicU64::new(0),
            options: super::Options::new(),
        })
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Sends one datagram to `address`.
    pub fn send_to<A: ToSocketAddrs>(&self, data: &[u8], address: A) -> io::Result<usize> {
        let remote = to_endpoint(resolve(&address)?[0]);
        let (id, handle) = (self.instance, self.handle);
        let timeout = self.options.write_micros();
        let nonblocking = self.options.nonblocking();
        instance::on_owner(id, || {
            instance::wait_on(id, Interest::UdpWritable(handle), timeout, nonblocking, |i| {
                i.stack.udp_send_to(handle, data, remote)
            })
        })
        .map_err(wait_to_io)
    }

    /// Takes one datagram: its length (truncated to `buffer`) and sender.
    pub fn recv_from(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (id, handle) = (self.instance, self.handle);
        let timeout = self.options.read_micros();
        let nonblocking = self.options.nonblocking();
        instance::on_owner(id, || {
            instance::wait_on(id, Interest::UdpReadable(handle), timeout, nonblocking, |i| {
                i.stack.udp_recv_from(handle, buffer)
            })
        })
        .map(|(count, from)| (count, from_endpoint(from)))
        .map_err(wait_to_io)
    }

    /// Sets the peer for `send` and `recv`.
    pub fn connect<A: ToSocketAddrs>(&self, address: A) -> io::Result<()> {
        match resolve(&address)?[0] {
            SocketAddr::V4(v4) => {
                let packed = PEER_SET | (u64::from(v4.ip().to_bits()) << 16) | u64::from(v4.port());
                self.peer.store(packed, Ordering::Relaxed);
                Ok(())
            }
            SocketAddr::V6(_) => Err(io::Error::from_static(ErrorKind::AddrNotAvailable, "no IPv6 address configured")),
        }
    }

    /// The peer set by `connect`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let packed = self.peer.load(Ordering::Relaxed);
        if packed & PEER_SET == 0 {
            return Err(io::Error::from_static(ErrorKind::NotConnected, "not connected"));
        }
        let ip = core::net::Ipv4Addr::from_bits((packed >> 16) as u32);
        Ok(SocketAddr::new(core::net::IpAddr::V4(ip), packed as u16))
    }

    /// Sends to the peer set by `connect`.
    pub fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.send_to(data, self.peer_addr()?)
    }

    /// Receives from the peer set by `connect` (datagrams from others are
    /// dropped).
    pub fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let peer = self.peer_addr()?;
        loop {
            let (count, from) = self.recv_from(buffer)?;
            if from == peer {
                return Ok(count);
            }
        }
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let (id, handle, port) = (self.instance, self.handle, self.local.port());
        instance::on_owner(id, || {
            instance::with_local(id, |i| i.stack.udp_close(handle));
            instance::announce_udp(id, port, false);
        });
    }
}

super::socket_options!(UdpSocket);
