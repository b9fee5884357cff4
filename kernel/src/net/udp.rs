//! `UdpSocket`, shaped like std's.
//!
//! A socket bound to one address lives in one instance (that address's
//! card, or the loopback). A socket bound to `0.0.0.0` where there are
//! several instances has a *member* in each: the loopback's and one per
//! card (of a multi-queue card, the queue pair of the binding CPU, to
//! which the card's other pairs hand its datagrams), all on the same
//! port. `recv_from` takes the first datagram any member has; `send_to`
//! leaves by the member whose network reaches the destination
//! (`toro_net::udp_member`), so a reply carries the address the peer
//! wrote to when the peer is on a card's network.
//!
//! Waiting on several members: each member's instance publishes, after
//! every poll, whether its socket holds a datagram (a flag per member,
//! written by that instance's CPU only) and wakes the threads waiting in
//! the socket's slots; a receiver looks at the flags, goes to the owner
//! CPU of one that is set to take the datagram, and otherwise publishes
//! itself in its CPU's slot, fences, looks again and blocks
//! (`toro_core::wake`'s hand-shake; no lock, no read-modify-write).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use toro_core::seq_words::SeqWords;
use toro_core::wake::WaiterSlot;
use toro_net::stack::UdpHandle;
use toro_net::{NetError, UdpMember};

use super::addr::{from_endpoint, resolve, to_endpoint, ToSocketAddrs};
use super::instance::{self, Interest};
use super::{to_io, wait_to_io};
use crate::io::{self, ErrorKind};
use crate::thread::scheduler;

/// How often a receiver polls the members' flags when another thread of
/// its CPU waits on the same socket already (each CPU has one slot).
const SHARED_WAIT_MICROS: u64 = 10_000;
/// Tries at a free port for `0.0.0.0:0` (the one a member picks may be
/// taken on another).
const PORT_TRIES: usize = 16;

/// A UDP socket, like `std::net::UdpSocket`: see the module docs for
/// where it lives. Its clones ([`UdpSocket::try_clone`]) share one socket.
pub struct UdpSocket {
    inner: Arc<Udp>,
}

/// The socket a `UdpSocket` and its clones share.
struct Udp {
    /// Its instances and their sockets: one, or (bound to `0.0.0.0` with
    /// several instances) the loopback's and one per card.
    members: Vec<Member>,
    /// With several members: what their instances publish for receivers.
    group: Option<Arc<UdpGroup>>,
    /// Each member's route, for `send_to` (`toro_net::udp_member`).
    routes: Vec<UdpMember>,
    /// The member `recv_from` looks at first (round robin over members
    /// with a datagram, so one busy card cannot starve the others).
    next: AtomicUsize,
    local: SocketAddr,
    /// The peer set by `connect` (`toro_net::socket_address_words`, all
    /// zeros for none): read by every `send` and `recv` on any CPU without
    /// a lock instruction, so the socket is `Sync` like std's.
    peer: SeqWords<3>,
    /// `set_broadcast`: datagrams to broadcast addresses allowed.
    broadcast: AtomicBool,
    options: super::Options,
}

/// Takes (or, `peek`, copies) the next datagram of `handle`.
fn take(
    stack: &mut toro_net::Stack<super::device::Device>,
    handle: UdpHandle,
    buffer: &mut [u8],
    peek: bool,
) -> Result<(usize, toro_net::smoltcp::wire::IpEndpoint), NetError> {
    match peek {
        true => stack.udp_peek_from(handle, buffer),
        false => stack.udp_recv_from(handle, buffer),
    }
}

/// One instance's part of a socket.
#[derive(Clone, Copy)]
struct Member {
    instance: usize,
    handle: UdpHandle,
}

/// What the members' instances of a socket bound to `0.0.0.0` publish
/// for its receivers.
pub(crate) struct UdpGroup {
    /// Per member: its socket holds a datagram (written by the member's
    /// owner CPU only: after each poll, and after a receive).
    readable: Vec<AtomicBool>,
    /// Per CPU: the thread of that CPU waiting for a datagram, if any
    /// (written by threads of that CPU only).
    waiting: Vec<WaiterSlot>,
}

impl UdpGroup {
    fn new(members: usize) -> Self {
        Self {
            readable: (0..members).map(|_| AtomicBool::new(false)).collect(),
            waiting: (0..crate::cpu::count().max(1)).map(|_| WaiterSlot::new()).collect(),
        }
    }

    fn any_readable(&self) -> bool {
        self.readable.iter().any(|flag| flag.load(Ordering::Acquire))
    }

    /// Member `member`'s instance (on its owner CPU) says whether its
    /// socket holds a datagram; if it does, the waiting receivers wake.
    #[inline]
    pub(crate) fn publish(&self, member: usize, readable: bool) {
        self.readable[member].store(readable, Ordering::Release);
        if !readable {
            return;
        }
        // The waker's side: flag, fence, then the slots.
        crate::cpu::full_fence();
        for slot in &self.waiting {
            if let Some(waiter) = slot.waiter(|| {}) {
                scheduler::wake(waiter.thread as *mut scheduler::Control, waiter.epoch);
            }
        }
    }

    /// Blocks the calling thread until a member may hold a datagram or
    /// TSC `deadline` (`u64::MAX`: none) passes.
    #[inline(never)]
    fn wait(&self, deadline: u64) {
        let slot = &self.waiting[crate::cpu::current() % self.waiting.len()];
        if slot.waiter(|| {}).is_some() {
            // Another thread of this CPU waits in the slot: look again
            // after a while (only this CPU writes the slot, and nothing
            // switches between the look and the publication below).
            let soon = instance::ticks_from_now(SHARED_WAIT_MICROS);
            scheduler::sleep_until(soon.min(deadline));
            return;
        }
        let epoch = scheduler::begin_wait();
        slot.publish(scheduler::current() as u64, epoch, crate::cpu::full_fence);
        if !self.any_readable() {
            if deadline == u64::MAX {
                scheduler::block();
            } else {
                scheduler::block_until(epoch, deadline);
            }
        }
        slot.clear();
    }
}

/// Whether a datagram from `from` comes from the connected `peer` (address
/// and port; a received IPv6 source carries no scope id).
fn same_peer(from: SocketAddr, peer: SocketAddr) -> bool {
    from.ip() == peer.ip() && from.port() == peer.port()
}

/// Opens a socket on `port` in instance `id` and tells the card's other
/// queue pairs.
fn bind_on(id: usize, port: u16) -> Result<(UdpHandle, u16), NetError> {
    instance::on_owner(id, || {
        let bound = instance::with_local(id, |i| i.stack.udp_bind(port)).unwrap_or(Err(NetError::BadHandle));
        if let Ok((_, port)) = bound {
            instance::announce_udp(id, port, true);
        }
        bound
    })
}

/// Closes member `member` (its socket, its group entry, the other pairs' hand-over).
fn close_on(member: &Member, port: u16) {
    let (id, handle) = (member.instance, member.handle);
    instance::on_owner(id, || {
        instance::with_local(id, |i| {
            i.stack.udp_close(handle);
            i.udp_groups.retain(|entry| entry.handle != handle);
            // What the socket queued leaves now (the stack keeps the
            // closed socket until it did).
            i.pump();
        });
        instance::announce_udp(id, port, false);
    });
}

/// Binds `port` (0: one free on every instance) in each of `instances`,
/// or none of them.
fn bind_members(port: u16, instances: &[(usize, UdpMember)]) -> Result<(Vec<Member>, u16), NetError> {
    let mut last = NetError::AddrInUse;
    for _ in 0..PORT_TRIES {
        let mut chosen = port;
        let mut members = Vec::new();
        let mut failed = None;
        for &(instance, _) in instances {
            match bind_on(instance, chosen) {
                Ok((handle, bound)) => {
                    chosen = bound;
                    members.push(Member { instance, handle });
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let Some(error) = failed else { return Ok((members, chosen)) };
        for member in &members {
            close_on(member, chosen);
        }
        last = error;
        // A port picked by the first member may be taken on another: pick again.
        if port != 0 || error != NetError::AddrInUse || members.is_empty() {
            break;
        }
    }
    Err(last)
}

/// The instances a socket bound to `0.0.0.0` has members in: the
/// loopback and, of every card, the queue pair of this CPU (else its
/// first).
fn unspecified_members() -> io::Result<Vec<(usize, UdpMember)>> {
    let topology = super::topology();
    let here = crate::cpu::current();
    let mut members: Vec<(usize, UdpMember)> = topology.loopback.iter().map(|&id| (id, UdpMember::Loopback)).collect();
    for card in &topology.cards {
        let pair =
            card.instances.iter().copied().find(|&id| instance::owner(id) == here).or(card.instances.first().copied());
        if let Some(id) = pair {
            members.push((id, UdpMember::Card { subnet: card.subnet, gateway: card.gateway }));
        }
    }
    if members.is_empty() {
        return Err(io::Error::from_static(ErrorKind::NetworkDown, "no network interface"));
    }
    Ok(members)
}

impl UdpSocket {
    /// Opens a socket on `address` (port 0 picks one): on `0.0.0.0`, a
    /// member in the loopback and in every card's instance; on
    /// `127.0.0.1`, the loopback; on a card's address, that card (the
    /// queue pair of this CPU on a multi-queue card).
    pub fn bind<A: ToSocketAddrs>(address: A) -> io::Result<UdpSocket> {
        let address = resolve(&address)?[0];
        let instances = if address.ip().is_unspecified() {
            unspecified_members()?
        } else {
            let ids = super::instances_for(address.ip())?;
            let here = crate::cpu::current();
            let id = ids.iter().copied().find(|&id| instance::owner(id) == here).unwrap_or(ids[0]);
            // One member: its route is never asked.
            alloc::vec![(id, UdpMember::Loopback)]
        };
        let (members, port) = bind_members(address.port(), &instances).map_err(to_io)?;
        let group = (members.len() > 1).then(|| {
            let group = Arc::new(UdpGroup::new(members.len()));
            for (index, member) in members.iter().enumerate() {
                let (id, handle, entry) = (member.instance, member.handle, group.clone());
                instance::on_owner(id, || {
                    instance::with_local(id, |i| {
                        let readable = i.stack.udp_readable(handle);
                        entry.publish(index, readable);
                        i.udp_groups.push(instance::UdpGroupEntry { handle, group: entry, member: index });
                    })
                });
            }
            group
        });
        let socket = Udp {
            members,
            group,
            routes: instances.iter().map(|&(_, route)| route).collect(),
            next: AtomicUsize::new(0),
            local: SocketAddr::new(address.ip(), port),
            peer: SeqWords::new([0; 3]),
            broadcast: AtomicBool::new(false),
            options: super::Options::new(),
        };
        Ok(UdpSocket { inner: Arc::new(socket) })
    }

    /// Another handle to the same socket, as std's: datagrams, the peer
    /// set by `connect` and the options are shared; the socket closes when
    /// the last handle is dropped.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket { inner: self.inner.clone() })
    }

    fn options(&self) -> &super::Options {
        &self.inner.options
    }

    /// The local address: the one bound (`0.0.0.0` stays `0.0.0.0`, as in
    /// std) with the port chosen for port 0.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local)
    }

    /// Sends one datagram to `address`, by the member whose network
    /// reaches it (see the module docs).
    pub fn send_to<A: ToSocketAddrs>(&self, data: &[u8], address: A) -> io::Result<usize> {
        let address = resolve(&address)?[0];
        let remote = to_endpoint(address);
        let member = match self.inner.members.len() {
            1 => self.inner.members[0],
            _ => self.inner.members[toro_net::udp_member(&self.inner.routes, address.ip()).unwrap_or(0)],
        };
        let (id, handle) = (member.instance, member.handle);
        let timeout = self.inner.options.write_micros();
        let nonblocking = self.inner.options.nonblocking();
        let broadcast = self.inner.broadcast.load(Ordering::Relaxed);
        instance::on_owner(id, || {
            instance::wait_on(id, Interest::UdpWritable(handle), timeout, nonblocking, |i| {
                i.stack.udp_send_to(handle, data, remote, broadcast)
            })
        })
        .map_err(wait_to_io)
    }

    /// Takes one datagram: its length (truncated to `buffer`) and sender;
    /// with several members, the first any of them has.
    pub fn recv_from(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.receive(buffer, false)
    }

    /// `recv_from` that leaves the datagram queued, as std's `peek_from`:
    /// the next receive returns it again.
    pub fn peek_from(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.receive(buffer, true)
    }

    fn receive(&self, buffer: &mut [u8], peek: bool) -> io::Result<(usize, SocketAddr)> {
        if let Some(group) = &self.inner.group {
            return self.recv_any(group, buffer, peek);
        }
        let (id, handle) = (self.inner.members[0].instance, self.inner.members[0].handle);
        let timeout = self.inner.options.read_micros();
        let nonblocking = self.inner.options.nonblocking();
        instance::on_owner(id, || {
            instance::wait_on(id, Interest::UdpReadable(handle), timeout, nonblocking, |i| {
                take(&mut i.stack, handle, buffer, peek)
            })
        })
        .map(|(count, from)| (count, from_endpoint(from)))
        .map_err(wait_to_io)
    }

    /// `recv_from` over several members: a member whose flag is set is
    /// asked on its owner CPU; with none, the thread waits in its CPU's
    /// slot of the group.
    #[inline(never)]
    fn recv_any(&self, group: &UdpGroup, buffer: &mut [u8], peek: bool) -> io::Result<(usize, SocketAddr)> {
        let nonblocking = self.inner.options.nonblocking();
        let deadline = self.inner.options.read_micros().map_or(u64::MAX, instance::ticks_from_now);
        let count = self.inner.members.len();
        loop {
            let first = self.inner.next.load(Ordering::Relaxed);
            for step in 0..count {
                let index = (first + step) % count;
                if !group.readable[index].load(Ordering::Acquire) {
                    continue;
                }
                let Member { instance: id, handle, .. } = self.inner.members[index];
                let taken = instance::on_owner(id, || {
                    instance::with_local(id, |i| {
                        let taken = take(&mut i.stack, handle, buffer, peek);
                        let readable = i.stack.udp_readable(handle);
                        group.publish(index, readable);
                        taken
                    })
                    .unwrap_or(Err(NetError::BadHandle))
                });
                match taken {
                    Ok((length, from)) => {
                        self.inner.next.store((index + 1) % count, Ordering::Relaxed);
                        return Ok((length, from_endpoint(from)));
                    }
                    Err(NetError::WouldBlock) => {}
                    Err(error) => return Err(to_io(error)),
                }
            }
            if nonblocking {
                return Err(to_io(NetError::WouldBlock));
            }
            if crate::time::Instant::now().ticks() >= deadline {
                return Err(wait_to_io(instance::WaitError::TimedOut));
            }
            group.wait(deadline);
        }
    }

    /// Sets the peer for `send` and `recv` (IPv4 or IPv6; no packet is
    /// sent, as with std on Linux). A datagram the peer refuses (an ICMP
    /// port unreachable comes back) makes the next `send`, `recv` or
    /// [`UdpSocket::take_error`] give `ConnectionRefused`, once. A socket bound to an address of one
    /// family cannot reach the other (`InvalidInput`; Linux: `EINVAL` for
    /// an IPv4 socket's IPv6 peer).
    pub fn connect<A: ToSocketAddrs>(&self, address: A) -> io::Result<()> {
        let peer = resolve(&address)?[0];
        if !self.inner.local.ip().is_unspecified() && self.inner.local.is_ipv4() != peer.is_ipv4() {
            return Err(io::Error::from_static(
                ErrorKind::InvalidInput,
                "the peer's address family is not the socket's",
            ));
        }
        self.inner.peer.write(toro_net::socket_address_words(peer));
        // Each member hears of the peer's port unreachables from now on
        // (`Stack::udp_set_peer`): `ConnectionRefused`, as on Linux.
        let remote = to_endpoint(peer);
        for &Member { instance: id, handle } in &self.inner.members {
            instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.udp_set_peer(handle, Some(remote)))
                    .unwrap_or(Err(NetError::BadHandle))
            })
            .map_err(to_io)?;
        }
        Ok(())
    }

    /// The socket's pending error, as std's (`SO_ERROR`): on a connected
    /// socket, `Some(ConnectionRefused)` once the peer answered a datagram
    /// with an ICMP port unreachable (no socket on its port) and no send
    /// or receive reported it yet (those give `ConnectionRefused` once
    /// too, as on Linux); then `None`. An unconnected socket has none.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        for &Member { instance: id, handle } in &self.inner.members {
            let error = instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.udp_take_error(handle)).unwrap_or(Err(NetError::BadHandle))
            })
            .map_err(to_io)?;
            if let Some(error) = error {
                return Ok(Some(to_io(error)));
            }
        }
        Ok(None)
    }

    /// The peer set by `connect`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        toro_net::socket_address_from_words(self.inner.peer.read())
            .ok_or(io::Error::from_static(ErrorKind::NotConnected, "not connected"))
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
            if same_peer(from, peer) {
                return Ok(count);
            }
        }
    }

    /// `recv` that leaves the datagram queued, as std's `peek`; datagrams
    /// from others before it are dropped, as `recv` drops them.
    pub fn peek(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let peer = self.peer_addr()?;
        loop {
            let (count, from) = self.peek_from(buffer)?;
            if same_peer(from, peer) {
                return Ok(count);
            }
            self.recv_from(&mut [])?;
        }
    }

    /// Sets the time-to-live of the socket's datagrams, on every member
    /// (1-255, else `InvalidInput`, as `TcpStream::set_ttl`).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let ttl = super::ttl_byte(ttl)?;
        self.each_member(|stack, handle| stack.udp_set_ttl(handle, ttl))
    }

    /// Allows (or again refuses) datagrams to broadcast addresses
    /// (255.255.255.255 and a card's subnet broadcast): without it
    /// `send_to` gives `PermissionDenied`, as std on Linux (`SO_BROADCAST`).
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.inner.broadcast.store(broadcast, Ordering::Relaxed);
        Ok(())
    }

    /// Whether datagrams to broadcast addresses are allowed (`false`
    /// unless set).
    pub fn broadcast(&self) -> io::Result<bool> {
        Ok(self.inner.broadcast.load(Ordering::Relaxed))
    }

    /// Joins IPv4 multicast group `multiaddr` on the interface with address
    /// `interface`, or on every interface the socket is bound on for
    /// `0.0.0.0` (Linux joins on the one its route to the group takes: a
    /// socket on `0.0.0.0` here hears the group on every card). Datagrams
    /// to the group then reach the socket; the membership is reported
    /// (IGMPv2) and ends with `leave_multicast_v4` or when the socket
    /// closes. `InvalidInput` for an address that is not multicast,
    /// `AddrInUse` if joined already, `AddrNotAvailable` for an interface
    /// address that is not one of the socket's.
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        let members = self.members_on_v4(interface)?;
        self.join(&members, IpAddr::V4(*multiaddr))
    }

    /// Leaves a group joined by `join_multicast_v4` (`AddrNotAvailable` if
    /// not joined).
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        let members = self.members_on_v4(interface)?;
        self.leave(&members, IpAddr::V4(*multiaddr))
    }

    /// Joins IPv6 multicast group `multiaddr` on interface number
    /// `interface`, or on every interface the socket is bound on for 0
    /// (reported by MLD). Interfaces are numbered as Linux numbers them on
    /// a VM with the same devices: 1 for the loopback, 2 for `eth0`, 3 for
    /// `eth1`, ... Errors as `join_multicast_v4`.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        let members = self.members_on_index(interface)?;
        self.join(&members, IpAddr::V6(*multiaddr))
    }

    /// Leaves a group joined by `join_multicast_v6`.
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        let members = self.members_on_index(interface)?;
        self.leave(&members, IpAddr::V6(*multiaddr))
    }

    /// Sets the time-to-live of the socket's datagrams to IPv4 multicast
    /// groups, on every member (1 unless set, as on Linux: a group's
    /// datagrams stay on the link; 1-255, else `InvalidInput`). The
    /// unicast TTL (`set_ttl`) does not apply to them. IPv6 multicast
    /// leaves with hop limit 1 (std has no call to change it).
    pub fn set_multicast_ttl_v4(&self, multicast_ttl_v4: u32) -> io::Result<()> {
        let ttl = super::ttl_byte(multicast_ttl_v4)?;
        self.each_member(|stack, handle| stack.udp_set_multicast_ttl(handle, ttl))
    }

    /// The time-to-live of its datagrams to IPv4 groups (1 unless set).
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.first_member(|stack, handle| stack.udp_multicast_ttl(handle)).map(u32::from)
    }

    /// Whether its datagrams to IPv4 groups are also delivered to the
    /// sockets of the sending interface that joined the group, this one
    /// included (on unless turned off, as on Linux).
    pub fn set_multicast_loop_v4(&self, multicast_loop_v4: bool) -> io::Result<()> {
        self.each_member(|stack, handle| stack.udp_set_multicast_loop(handle, false, multicast_loop_v4))
    }

    /// See [`UdpSocket::set_multicast_loop_v4`].
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.first_member(|stack, handle| stack.udp_multicast_loop(handle, false))
    }

    /// [`UdpSocket::set_multicast_loop_v4`] for IPv6 groups (a separate
    /// option, as on Linux).
    pub fn set_multicast_loop_v6(&self, multicast_loop_v6: bool) -> io::Result<()> {
        self.each_member(|stack, handle| stack.udp_set_multicast_loop(handle, true, multicast_loop_v6))
    }

    /// See [`UdpSocket::set_multicast_loop_v6`].
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.first_member(|stack, handle| stack.udp_multicast_loop(handle, true))
    }

    /// Runs `call` on every member's stack, on its owner CPU; the first
    /// error ends it.
    fn each_member(
        &self,
        call: impl Fn(&mut toro_net::Stack<super::device::Device>, UdpHandle) -> Result<(), NetError>,
    ) -> io::Result<()> {
        for &Member { instance: id, handle } in &self.inner.members {
            instance::on_owner(id, || {
                instance::with_local(id, |i| call(&mut i.stack, handle)).unwrap_or(Err(NetError::BadHandle))
            })
            .map_err(to_io)?;
        }
        Ok(())
    }

    /// Runs `call` on the first member's stack (the options are the same
    /// on every member).
    fn first_member<R>(
        &self,
        call: impl FnOnce(&mut toro_net::Stack<super::device::Device>, UdpHandle) -> Result<R, NetError>,
    ) -> io::Result<R> {
        let Member { instance: id, handle } = self.inner.members[0];
        instance::on_owner(id, || {
            instance::with_local(id, |i| call(&mut i.stack, handle)).unwrap_or(Err(NetError::BadHandle))
        })
        .map_err(to_io)
    }

    /// The members on the interface whose IPv4 address is `interface`
    /// (all for `0.0.0.0`).
    fn members_on_v4(&self, interface: &Ipv4Addr) -> io::Result<Vec<Member>> {
        if interface.is_unspecified() {
            return Ok(self.inner.members.clone());
        }
        let instances = super::instances_for(IpAddr::V4(*interface))?;
        self.members_among(&instances)
    }

    /// The members on interface number `index` (see `join_multicast_v6`;
    /// all for 0).
    fn members_on_index(&self, index: u32) -> io::Result<Vec<Member>> {
        if index == 0 {
            return Ok(self.inner.members.clone());
        }
        let topology = super::topology();
        let instances: Vec<usize> = match index {
            1 => topology.loopback.into_iter().collect(),
            card => topology.cards.get(card as usize - 2).map(|card| card.instances.clone()).unwrap_or_default(),
        };
        self.members_among(&instances)
    }

    /// The members on `instances`; `AddrNotAvailable` for none.
    fn members_among(&self, instances: &[usize]) -> io::Result<Vec<Member>> {
        let members: Vec<Member> =
            self.inner.members.iter().copied().filter(|member| instances.contains(&member.instance)).collect();
        match members.is_empty() {
            true => {
                Err(io::Error::from_static(ErrorKind::AddrNotAvailable, "the socket is not bound on that interface"))
            }
            false => Ok(members),
        }
    }

    /// Joins `group` on every one of `members`, undoing the joins made if
    /// one fails.
    fn join(&self, members: &[Member], group: IpAddr) -> io::Result<()> {
        let group = super::addr::to_ip_address(group);
        for (done, &Member { instance: id, handle }) in members.iter().enumerate() {
            let joined = instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.udp_join_multicast(handle, group))
                    .unwrap_or(Err(NetError::BadHandle))
            });
            if let Err(error) = joined {
                for &Member { instance: id, handle } in &members[..done] {
                    instance::on_owner(id, || {
                        instance::with_local(id, |i| i.stack.udp_leave_multicast(handle, group));
                    });
                }
                return Err(to_io(error));
            }
        }
        Ok(())
    }

    /// Leaves `group` on every one of `members` (the first error is
    /// returned after all were tried).
    fn leave(&self, members: &[Member], group: IpAddr) -> io::Result<()> {
        let group = super::addr::to_ip_address(group);
        let mut result = Ok(());
        for &Member { instance: id, handle } in members {
            let left = instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.udp_leave_multicast(handle, group))
                    .unwrap_or(Err(NetError::BadHandle))
            });
            if let (Err(error), Ok(())) = (left, &result) {
                result = Err(to_io(error));
            }
        }
        result
    }

    /// The time-to-live of its datagrams (64 unless set).
    pub fn ttl(&self) -> io::Result<u32> {
        self.first_member(|stack, handle| stack.udp_ttl(handle)).map(u32::from)
    }
}

impl Drop for Udp {
    fn drop(&mut self) {
        let port = self.local.port();
        for member in &self.members {
            close_on(member, port);
        }
    }
}

impl core::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let instances: Vec<usize> = self.inner.members.iter().map(|member| member.instance).collect();
        f.debug_struct("UdpSocket").field("local", &self.inner.local).field("instances", &instances).finish()
    }
}

super::socket_options!(UdpSocket);
