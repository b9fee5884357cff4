//! `ToSocketAddrs` like std's (host names by DNS), and conversions between
//! `core::net` addresses and smoltcp's.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use toro_net::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv6Address};

use crate::io::{self, ErrorKind};

/// Things that name socket addresses, like `std::net::ToSocketAddrs`:
/// `SocketAddr`s, `(IpAddr, u16)`, and strings `"10.0.2.15:80"`,
/// `("10.0.2.15", 80)`, `("localhost", 80)` (127.0.0.1 then ::1), and host
/// names, asked of the DNS servers (`super::dns`; a lookup blocks the
/// thread, as std's does).
pub trait ToSocketAddrs {
    /// The addresses' iterator.
    type Iter: Iterator<Item = SocketAddr>;
    /// The addresses named.
    fn to_socket_addrs(&self) -> io::Result<Self::Iter>;
}

impl ToSocketAddrs for SocketAddr {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        Ok(Some(*self).into_iter())
    }
}

impl ToSocketAddrs for SocketAddrV4 {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        SocketAddr::V4(*self).to_socket_addrs()
    }
}

impl ToSocketAddrs for SocketAddrV6 {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        SocketAddr::V6(*self).to_socket_addrs()
    }
}

impl ToSocketAddrs for (IpAddr, u16) {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        SocketAddr::new(self.0, self.1).to_socket_addrs()
    }
}

impl ToSocketAddrs for (Ipv4Addr, u16) {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        SocketAddr::new(IpAddr::V4(self.0), self.1).to_socket_addrs()
    }
}

impl ToSocketAddrs for (Ipv6Addr, u16) {
    type Iter = core::option::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        SocketAddr::new(IpAddr::V6(self.0), self.1).to_socket_addrs()
    }
}

fn host_port(host: &str, port: u16) -> io::Result<alloc::vec::IntoIter<SocketAddr>> {
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(alloc::vec![SocketAddr::new(address, port)].into_iter());
    }
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        let addresses = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        return Ok(addresses.map(|address| SocketAddr::new(address, port)).to_vec().into_iter());
    }
    Ok(super::dns::lookup(host, port)?.into_iter())
}

impl ToSocketAddrs for (&str, u16) {
    type Iter = alloc::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        host_port(self.0, self.1)
    }
}

impl ToSocketAddrs for (String, u16) {
    type Iter = alloc::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        host_port(&self.0, self.1)
    }
}

impl ToSocketAddrs for str {
    type Iter = alloc::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        if let Ok(address) = self.parse::<SocketAddr>() {
            return Ok(alloc::vec![address].into_iter());
        }
        let (host, port) =
            self.rsplit_once(':').ok_or(io::Error::from_static(ErrorKind::InvalidInput, "invalid socket address"))?;
        let port: u16 =
            port.parse().map_err(|_| io::Error::from_static(ErrorKind::InvalidInput, "invalid port value"))?;
        host_port(host, port)
    }
}

impl ToSocketAddrs for String {
    type Iter = alloc::vec::IntoIter<SocketAddr>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        self.as_str().to_socket_addrs()
    }
}

impl<'a> ToSocketAddrs for &'a [SocketAddr] {
    type Iter = core::iter::Cloned<core::slice::Iter<'a, SocketAddr>>;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        Ok(self.iter().cloned())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {
    type Iter = T::Iter;
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        (**self).to_socket_addrs()
    }
}

/// The addresses `addresses` names, or the error std gives for none.
pub(crate) fn resolve<A: ToSocketAddrs + ?Sized>(addresses: &A) -> io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = addresses.to_socket_addrs()?.collect();
    if all.is_empty() {
        return Err(io::Error::from_static(ErrorKind::InvalidInput, "could not resolve to any addresses"));
    }
    Ok(all)
}

pub(crate) fn to_endpoint(address: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(to_ip_address(address.ip()), address.port())
}

/// std's address as smoltcp's.
pub(crate) fn to_ip_address(address: IpAddr) -> IpAddress {
    match address {
        IpAddr::V4(v4) => IpAddress::Ipv4(Ipv4Address::from(v4.octets())),
        IpAddr::V6(v6) => IpAddress::Ipv6(Ipv6Address::from(v6.octets())),
    }
}

pub(crate) fn from_endpoint(endpoint: IpEndpoint) -> SocketAddr {
    SocketAddr::new(from_ip_address(endpoint.addr), endpoint.port)
}

/// smoltcp's address as std's.
pub(crate) fn from_ip_address(address: IpAddress) -> IpAddr {
    match address {
        IpAddress::Ipv4(v4) => IpAddr::V4(Ipv4Addr::from(v4.octets())),
        IpAddress::Ipv6(v6) => IpAddr::V6(Ipv6Addr::from(v6.octets())),
    }
}
