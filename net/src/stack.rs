//! One TCP/IP instance: a smoltcp `Interface`, its `SocketSet` and the
//! device it drives, owned by one CPU. Sockets are named by small handles;
//! every call is non-blocking (`NetError::WouldBlock`), the kernel blocks
//! threads on top.
//!
//! What smoltcp lacks and this adds:
//! - **listen backlog**: smoltcp answers a SYN only with a socket in
//!   `Listen` on that port, so a listening port keeps a pool of such
//!   sockets; [`Stack::tcp_accept`] hands out one that left `Listen` and
//!   puts a fresh one in its place.
//! - **closing sockets**: a socket the application closed stays in the set
//!   until its FIN exchange ends, then is removed ([`Stack::poll`]).
//! - **request/response defaults**: Nagle and delayed ACK off.
//! - **DHCP**: a DHCPv4 socket when no static address is given; its lease
//!   configures the interface.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, dns, icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Address, Ipv4Cidr,
    Ipv6Address, Ipv6Cidr,
};

use crate::config::Addressing;
use crate::device::{NetDevice, Port, Watch};
use crate::error::NetError;

/// Sizes and defaults of one stack.
#[derive(Clone, Copy, Debug)]
pub struct StackConfig {
    /// Receive buffer of each TCP socket (also its largest window) beyond
    /// the first `tcp_large_sockets`.
    pub tcp_rx_bytes: usize,
    /// Send buffer of each TCP socket (the most data in flight) beyond the
    /// first `tcp_large_sockets`.
    pub tcp_tx_bytes: usize,
    /// Both buffers of a socket made while fewer than `tcp_large_sockets`
    /// of the stack's TCP sockets have them. smoltcp's buffers are
    /// allocated whole when a socket is made and never grow (Linux's are
    /// limits, filled as data comes): one connection moves at most a
    /// buffer per round trip, so a bulk transfer wants a large one, but
    /// 1000 idle connections with large buffers would take 256 MiB. So a
    /// few sockets (listening pool sockets too, so the first connections
    /// of a port) get large buffers and the rest small ones; a large
    /// socket's budget is freed with it.
    pub tcp_large_bytes: usize,
    /// How many of the stack's TCP sockets may have `tcp_large_bytes`.
    pub tcp_large_sockets: usize,
    /// Idle listening sockets kept ready per listening port: how many
    /// SYNs one received frame batch can take before the pool grows.
    pub listen_pool: usize,
    /// Most connections per listening port in their handshake or waiting
    /// for `accept` (the listen backlog, as `listen(2)`'s): the pool grows
    /// after every received frame while connections arrive, up to this,
    /// and shrinks back to `listen_pool` idle sockets after the burst.
    /// Beyond it a SYN is dropped, as Linux drops one when a listen
    /// queue overflows: the client retransmits it after its timeout (about
    /// 1 s) and is taken once `accept` made room; counted in
    /// `StackStats::listen_drops`.
    pub listen_backlog: usize,
    /// Datagrams buffered per UDP socket, each way.
    pub udp_packets: usize,
    /// Payload bytes buffered per UDP socket, each way.
    pub udp_bytes: usize,
    /// Sockets closed by the application still finishing their FIN
    /// exchange; beyond this the oldest is reset.
    pub max_closing: usize,
    /// How long a closed socket may take to finish its FIN exchange
    /// (deliver what was queued, see the peer's FIN): then it is reset and
    /// freed. Without it a peer that keeps its window shut, or vanishes,
    /// keeps the socket forever (smoltcp has no FIN-WAIT or orphan timer;
    /// Linux's `tcp_fin_timeout` is 60 s).
    pub close_timeout_micros: u64,
    /// How long the peer of an open connection may stay silent while data
    /// this side sent waits for its ACK: then the connection ends and its
    /// reads and writes give `TimedOut` (`None`: retransmit for ever, as
    /// smoltcp does by itself). Linux's `TCP_USER_TIMEOUT`; its default
    /// there comes from `tcp_retries2` (about 15 min). A peer that answers
    /// (ACKs, even of a shut window) is never timed out; an idle
    /// connection with nothing to send is not either.
    pub tcp_user_timeout_micros: Option<u64>,
    /// How long a TCP connection may hold back the ACK of data it received
    /// (`None`: ACK at once). A server that answers within this time sends
    /// its answer with the ACK in it, one frame instead of two (a bare ACK
    /// at the poll that received the request, then the answer): about half
    /// the frames a request/response connection sends. smoltcp still ACKs
    /// at once when more than a full segment waits for its ACK, so a bulk
    /// sender is not held back. Linux holds an ACK back for 40 ms and more;
    /// this is kept short because a peer with Nagle on that sends two small
    /// writes waits for the first one's ACK before sending the second.
    pub ack_delay_micros: Option<u64>,
    /// Seed for smoltcp's initial sequence numbers and ports.
    pub random_seed: u64,
    /// IPv6 beyond the link-local address every interface gets.
    pub ipv6: crate::config::Ipv6Config,
    /// DNS servers (`toro.dns=`): a DHCP lease's do not replace them.
    /// With none, a lease's are used.
    pub dns: crate::config::DnsServers,
    /// This stack's share of the ephemeral ports, `(index, count)`: it
    /// hands out only the ports `p` with `(p - EPHEMERAL_FIRST) % count ==
    /// index`. Stacks that share one address (the queue pairs of a
    /// multi-queue card) take disjoint shares, so two of them never pick
    /// the same local port toward the same peer. `(0, 1)`: all.
    pub ephemeral_share: (u16, u16),
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            tcp_rx_bytes: 32 * 1024,
            tcp_tx_bytes: 32 * 1024,
            tcp_large_bytes: 128 * 1024,
            tcp_large_sockets: 8,
            listen_pool: 8,
            listen_backlog: 128,
            udp_packets: 64,
            udp_bytes: 64 * 1024,
            max_closing: 1024,
            close_timeout_micros: 15_000_000,
            tcp_user_timeout_micros: Some(crate::config::DEFAULT_USER_TIMEOUT_SECS * 1_000_000),
            ack_delay_micros: Some(1_000),
            random_seed: 0x746f_726f_6e65_7421,
            ipv6: crate::config::Ipv6Config { address: None, gateway: None, slaac: false },
            dns: crate::config::DnsServers::default(),
            ephemeral_share: (0, 1),
        }
    }
}

/// How long a closed UDP socket's datagrams may wait for a neighbour's
/// MAC before they are dropped (a neighbour is given up after 3 s).
const UDP_DRAIN_MICROS: u64 = 3_000_000;

/// First port handed out for outgoing connections and unbound UDP sockets
/// (IANA dynamic range, RFC 6335 section 6).
pub const EPHEMERAL_FIRST: u16 = 49152;

/// A TCP socket of a stack (listening pools keep theirs internal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TcpHandle(SocketHandle);

/// A UDP socket of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UdpHandle(SocketHandle);

/// An ICMP echo socket of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IcmpHandle(SocketHandle);

/// Addresses shown each after a space (formatted only if the log line is
/// written).
struct Spaced<'a>(&'a [IpAddress]);

impl core::fmt::Display for Spaced<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|address| write!(f, " {address}"))
    }
}

/// DNS queries one stack has in flight at once.
const DNS_QUERIES: usize = 8;

/// A DNS query of a stack (`Stack::dns_start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DnsHandle(u64);

/// The record type a DNS query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    Aaaa,
}

/// How far an outgoing connection got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectState {
    /// Still in the handshake.
    Pending,
    /// Established (or already past it, with data to read).
    Established,
}

/// Counts shown by `/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Sockets in use (listening pools, connections, closing, UDP): the
    /// set's, less the spare ones.
    pub sockets: usize,
    /// Closed TCP sockets kept for the next connection or listening pool
    /// socket (their buffers allocated already; at most `MAX_SPARE`).
    pub spare: usize,
    /// TCP sockets taken from the spares instead of allocated.
    pub reused: u64,
    /// Connections handed out by `tcp_accept`.
    pub accepted: u64,
    /// Outgoing connections started.
    pub connected: u64,
    /// Sockets closed by the application still in their FIN exchange.
    pub closing: usize,
    /// Polls that found work.
    pub busy_polls: u64,
    /// Closing sockets reset because too many were closing.
    pub closing_evicted: u64,
    /// Closing sockets reset because their FIN exchange outlasted
    /// `close_timeout_micros`.
    pub closing_timed_out: u64,
    /// Pool sockets recycled after a handshake failed (reset, timeout).
    pub handshakes_failed: u64,
    /// DHCP leases applied.
    pub dhcp_leases: u64,
    /// Gratuitous ARPs sent (one per IPv4 address set).
    pub announcements: u64,
    /// SYNs dropped because their port's listen backlog was full (the
    /// client retransmits them; Linux counts these as ListenDrops).
    pub listen_drops: u64,
    /// Connects ended before an answer because a router or the peer sent
    /// an ICMP destination unreachable for their SYN, or because their
    /// next hop never answered ARP or neighbour discovery
    /// (`tcp_connect_state` gives the error).
    pub connects_unreachable: u64,
    /// Connections ended because their peer stayed silent longer than
    /// `tcp_user_timeout_micros` while data waited for its ACK.
    pub connections_timed_out: u64,
    /// Times a neighbour on the link was taught to smoltcp from a frame it
    /// sent (`neighbour::Learned`) instead of being asked for: each new
    /// one, a changed MAC, and a renewal every 20 s while it sends.
    pub neighbours_learned: u64,
    /// ARP requests and neighbour solicitations the stack sent itself for
    /// the next hops that connects and datagrams wait for
    /// (`solicit_neighbours`), besides the ones smoltcp sends.
    pub neighbours_solicited: u64,
}

/// The two port spaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
}

/// An open connection with data waiting for its ACK (`Stack::unacknowledged`).
struct Unacknowledged {
    handle: SocketHandle,
    /// Its endpoints, which smoltcp forgets when the connection ends.
    local_port: u16,
    peer: IpEndpoint,
    /// What the network said of it meanwhile: an ICMP destination
    /// unreachable for its segments, or its next hop given up (Linux's
    /// soft error, `sk_err_soft`): the error it ends with if it times out.
    soft_error: Option<NetError>,
}

struct Listener {
    port: u16,
    pool: Vec<SocketHandle>,
    /// The time-to-live its sockets get (`None`: the default).
    ttl: Option<u8>,
}

/// A received (or peeked) datagram copied into `buffer`, truncated to it.
fn copy_datagram(
    received: Result<(&[u8], udp::UdpMetadata), udp::RecvError>,
    buffer: &mut [u8],
) -> Result<(usize, IpEndpoint), NetError> {
    match received {
        Ok((data, meta)) => {
            let count = data.len().min(buffer.len());
            buffer[..count].copy_from_slice(&data[..count]);
            Ok((count, meta.endpoint))
        }
        Err(udp::RecvError::Exhausted) => Err(NetError::WouldBlock),
        Err(udp::RecvError::Truncated) => Err(NetError::TooLarge),
    }
}

/// The time-to-live of packets by default: smoltcp's and Linux's
/// (`net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// A time-to-live for smoltcp (which panics on 0): 0 is `InvalidInput`.
fn hop_limit(ttl: u8) -> Result<Option<u8>, NetError> {
    match ttl {
        0 => Err(NetError::InvalidInput),
        DEFAULT_TTL => Ok(None),
        ttl => Ok(Some(ttl)),
    }
}

/// One TCP/IP instance over device `D`.
pub struct Stack<D: NetDevice> {
    device: RefCell<D>,
    interface: Interface,
    sockets: SocketSet<'static>,
    config: StackConfig,
    listeners: Vec<Listener>,
    /// Listening ports whose backlog is full (`top_up_listeners`).
    full_ports: Vec<u16>,
    /// Ports listened on since the stack started (`Divert`).
    listened: Vec<u16>,
    /// Connected UDP sockets (`udp_set_peer`), three lists in step: the
    /// socket, its (local port, peer), and whether a port unreachable
    /// came back from the peer and was not reported yet (set by `Port`).
    udp_connected: Vec<SocketHandle>,
    udp_peers: Vec<(u16, IpEndpoint)>,
    udp_refused: Vec<bool>,
    /// TCP segments this queue pair received for another pair's outgoing
    /// connections (`take_diverted`).
    diverted: Vec<(u16, Vec<u8>)>,
    /// The DNS servers queries go to (`set_dns_servers`, or a DHCP
    /// lease's when none were set).
    dns_servers: Vec<IpAddress>,
    /// Whether `dns_servers` were set (a lease does not replace them).
    dns_static: bool,
    /// The DNS socket, made with the first query.
    dns: Option<SocketHandle>,
    /// Queries in flight, by handle; and answers taken from smoltcp by
    /// `dns_ready` and not yet by `dns_result`.
    dns_queries: Vec<(DnsHandle, smoltcp::socket::dns::QueryHandle)>,
    dns_answers: Vec<(DnsHandle, Result<Vec<IpAddress>, NetError>)>,
    next_dns: u64,
    /// Source ports of the DNS queries sent, not yet taken
    /// (`take_dns_ports`).
    dns_sent: RefCell<Vec<u16>>,
    /// While connects exist: the (local port, sequence number) of the SYNs
    /// sent and not yet answered (`device::Watch`), the ICMP destination
    /// unreachables received for TCP segments, and the neighbours asked
    /// for and not answered (`fail_connects`).
    syns_sent: RefCell<Vec<(u16, u32)>>,
    tcp_unreachable: Vec<crate::device::TcpUnreachable>,
    unresolved: RefCell<crate::neighbour::Unresolved>,
    /// The neighbours taught to smoltcp from the frames they sent
    /// (`device::Learn`); the interface's IPv4 and IPv6 addresses and
    /// prefixes, as of this poll; the ARP reply (or neighbour
    /// advertisement) that teaches one, and whether the frame that taught
    /// it waits in `frame` to be handed to smoltcp next.
    learned: crate::neighbour::Learned,
    subnets: Vec<Ipv4Cidr>,
    subnets6: Vec<Ipv6Cidr>,
    teaching: Vec<u8>,
    held: bool,
    /// Destinations that connects and datagrams went to since the last
    /// poll, whose next hop the stack asks for itself if it is not known
    /// (`solicit_neighbours`); at most `MAX_SOLICITING`.
    soliciting: Vec<IpAddress>,
    /// The UDP sockets' group memberships, multicast options and
    /// looped-back datagrams.
    multicast: crate::device::Multicast,
    /// Why connects failed (`fail_connects`), until their socket is closed.
    connect_errors: BTreeMap<SocketHandle, NetError>,
    /// Open connections with sent data not yet acknowledged, on which
    /// smoltcp's timeout is set to the user timeout (`tcp_send` arms it,
    /// `sweep_unacknowledged` disarms it once everything was ACKed).
    unacknowledged: Vec<Unacknowledged>,
    /// While `unacknowledged` has any: the RSTs received in this poll, as
    /// (local port, peer): a connection that smoltcp closed without one
    /// timed out (`device::Watch`).
    resets_received: RefCell<Vec<(u16, IpEndpoint)>>,
    /// Connections that timed out (`sweep_unacknowledged`), until closed,
    /// with the error their reads and writes give: `TimedOut`, or the
    /// soft error they had.
    timed_out: BTreeMap<SocketHandle, NetError>,
    /// Sockets handed to the application (connections, UDP, ICMP): a set,
    /// since every socket call checks its handle here (a `Vec` scan made
    /// each wake-up pass over 1000 waiting connections 1000 x 1000
    /// comparisons: the NIC's CPU stalled for seconds).
    open: BTreeSet<SocketHandle>,
    /// The open ones of them that `tcp_connect` made: a listen on their
    /// local port conflicts with them, not with accepted connections or
    /// closing sockets (`tcp_listen`).
    outgoing: BTreeSet<SocketHandle>,
    /// Closed sockets still in their FIN exchange, oldest first, each with
    /// the time (microseconds) it is reset if not done by then.
    closing: Vec<(SocketHandle, u64)>,
    /// TCP sockets whose connection ended (Closed or TIME-WAIT), kept in
    /// the set for the next socket a connect or a listening pool needs
    /// (`take_tcp_socket`): smoltcp allocates and zeroes both buffers
    /// whole for each new socket, which under TCG cost a connection more
    /// than its handshake.
    spare: Vec<SocketHandle>,
    /// The time of the last poll (microseconds).
    now_micros: u64,
    dhcp: Option<SocketHandle>,
    next_port: u16,
    stats: StackStats,
    gateway: Option<Ipv4Address>,
    /// Where a received frame is copied for smoltcp (see `device::Port`).
    frame: Vec<u8>,
    /// An IPv4 address was set and not yet announced (`announce`).
    unannounced: bool,
    /// `poll` is polling again for looped-back datagrams.
    looping: bool,
    /// Closed UDP sockets whose datagrams wait to leave (for a neighbour's
    /// MAC), each with the time (microseconds) it is dropped anyway.
    udp_draining: Vec<(SocketHandle, u64)>,
}

fn to_instant(micros: u64) -> Instant {
    Instant::from_micros(micros.min(i64::MAX as u64) as i64)
}

impl<D: NetDevice> Stack<D> {
    /// A stack on `device` with `addressing`; `now_micros` is the
    /// monotonic clock every later call uses.
    pub fn new(device: D, addressing: Addressing, config: StackConfig, now_micros: u64) -> Self {
        let device = RefCell::new(device);
        let mac = device.borrow().mac();
        let mut interface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        interface_config.random_seed = config.random_seed;
        interface_config.slaac = config.ipv6.slaac;
        let mut frame = Vec::new();
        let interface = Interface::new(interface_config, &mut Port::new(&device, &mut frame), to_instant(now_micros));
        let mut stack = Self {
            device,
            interface,
            sockets: SocketSet::new(Vec::new()),
            config,
            listeners: Vec::new(),
            full_ports: Vec::new(),
            listened: Vec::new(),
            udp_connected: Vec::new(),
            udp_peers: Vec::new(),
            udp_refused: Vec::new(),
            diverted: Vec::new(),
            dns_servers: Vec::new(),
            dns_static: false,
            dns: None,
            dns_queries: Vec::new(),
            dns_answers: Vec::new(),
            next_dns: 0,
            dns_sent: RefCell::new(Vec::new()),
            syns_sent: RefCell::new(Vec::new()),
            tcp_unreachable: Vec::new(),
            unresolved: RefCell::new(crate::neighbour::Unresolved::default()),
            learned: crate::neighbour::Learned::default(),
            subnets: Vec::new(),
            subnets6: Vec::new(),
            teaching: Vec::new(),
            held: false,
            soliciting: Vec::new(),
            connect_errors: BTreeMap::new(),
            unacknowledged: Vec::new(),
            resets_received: RefCell::new(Vec::new()),
            timed_out: BTreeMap::new(),
            looping: false,
            udp_draining: Vec::new(),
            multicast: crate::device::Multicast {
                every_group: config.ephemeral_share.1 > 1,
                ..crate::device::Multicast::default()
            },
            open: BTreeSet::new(),
            outgoing: BTreeSet::new(),
            closing: Vec::new(),
            spare: Vec::new(),
            now_micros,
            dhcp: None,
            next_port: EPHEMERAL_FIRST + (config.random_seed % 1024) as u16,
            stats: StackStats::default(),
            gateway: None,
            frame,
            unannounced: false,
        };
        stack.set_ipv6(config.ipv6.address, config.ipv6.gateway);
        stack.set_dns_servers(&config.dns.to_vec());
        match addressing {
            Addressing::Static { address, gateway } => stack.set_ipv4(Some(address), gateway),
            Addressing::Dhcp => {
                let handle = stack.sockets.add(dhcpv4::Socket::new());
                stack.dhcp = Some(handle);
            }
        }
        stack
    }

    /// Sets (or clears) the IPv4 address and default gateway.
    pub fn set_ipv4(&mut self, address: Option<Ipv4Cidr>, gateway: Option<Ipv4Address>) {
        // smoltcp flushes its neighbour cache with any address change.
        self.learned.forget_all();
        self.interface.update_ip_addrs(|addresses| {
            addresses.retain(|cidr| !matches!(cidr, IpCidr::Ipv4(_)));
            if let Some(address) = address {
                // Capacity is IFACE_MAX_ADDR_COUNT (at least 2); one IPv4
                // address always fits after the retain above.
                let _ = addresses.push(IpCidr::Ipv4(address));
            }
        });
        self.interface.routes_mut().remove_default_ipv4_route();
        self.unannounced = address.is_some();
        self.gateway = address.and(gateway);
        if let (Some(_), Some(gateway)) = (address, gateway) {
            // Fails only when the route table is full; it has just lost
            // its default IPv4 route.
            let _ = self.interface.routes_mut().add_default_ipv4_route(gateway);
        }
    }

    /// Sets the interface's link-local address (from its MAC), the static
    /// IPv6 address `address` if any, and the default IPv6 router.
    /// Addresses SLAAC configured stay.
    pub fn set_ipv6(&mut self, address: Option<Ipv6Cidr>, gateway: Option<Ipv6Address>) {
        let link_local = crate::config::link_local(self.device.borrow().mac());
        let previous = self.config.ipv6.address;
        self.learned.forget_all();
        self.interface.update_ip_addrs(|addresses| {
            addresses
                .retain(|cidr| *cidr != IpCidr::Ipv6(link_local) && previous.is_none_or(|p| *cidr != IpCidr::Ipv6(p)));
            // Room for IPv4, these two and SLAAC's (iface-max-addr-count-6).
            let _ = addresses.push(IpCidr::Ipv6(link_local));
            if let Some(address) = address {
                let _ = addresses.push(IpCidr::Ipv6(address));
            }
        });
        self.config.ipv6.address = address;
        self.config.ipv6.gateway = gateway;
        self.interface.routes_mut().remove_default_ipv6_route();
        if let Some(gateway) = gateway {
            // Fails only when the route table is full; it has just lost its
            // default IPv6 route.
            let _ = self.interface.routes_mut().add_default_ipv6_route(gateway);
        }
    }

    /// The interface's IPv6 addresses (link-local, static, autoconfigured).
    pub fn ipv6_cidrs(&self) -> Vec<Ipv6Cidr> {
        self.interface
            .ip_addrs()
            .iter()
            .filter_map(|cidr| match cidr {
                IpCidr::Ipv6(cidr) => Some(*cidr),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .collect()
    }

    /// The default IPv4 gateway, if one is set.
    pub fn gateway(&self) -> Option<Ipv4Address> {
        self.gateway
    }

    /// The interface's IPv4 address, once it has one.
    pub fn ipv4(&self) -> Option<Ipv4Address> {
        self.interface.ipv4_addr()
    }

    /// The interface's IPv4 address with its prefix.
    pub fn ipv4_cidr(&self) -> Option<Ipv4Cidr> {
        self.interface.ip_addrs().iter().find_map(|cidr| match cidr {
            IpCidr::Ipv4(cidr) => Some(*cidr),
            #[allow(unreachable_patterns)]
            _ => None,
        })
    }

    /// The device (to read its counts, or for a driver's housekeeping).
    pub fn device(&self) -> core::cell::RefMut<'_, D> {
        self.device.borrow_mut()
    }

    /// The stack's counts.
    pub fn stats(&self) -> StackStats {
        let mut stats = self.stats;
        stats.sockets = self.sockets.iter().count() - self.spare.len();
        stats.spare = self.spare.len();
        stats.neighbours_learned = self.learned.taught;
        stats.closing = self.closing.len();
        stats
    }

    /// Moves frames both ways, runs timers, reaps closed sockets, applies
    /// DHCP leases. Returns whether any socket may have changed state.
    pub fn poll(&mut self, now_micros: u64) -> bool {
        self.now_micros = now_micros;
        let now = to_instant(now_micros);
        // smoltcp's `poll`, written out so the listen pools are topped up
        // after every received frame: smoltcp has no backlog, and a SYN
        // that finds no socket in `Listen` is reset. A SYN for a port
        // whose backlog is full is dropped before smoltcp sees it (`Port`).
        let mut changed = false;
        let mut relearn = maintain(&mut self.interface, now);
        if relearn {
            self.learned.forget_all();
        }
        self.subnets.clear();
        self.subnets6.clear();
        for cidr in self.interface.ip_addrs() {
            match *cidr {
                IpCidr::Ipv4(cidr) => self.subnets.push(cidr),
                IpCidr::Ipv6(cidr) => self.subnets6.push(cidr),
            }
        }
        let mac = self.device.borrow().mac();
        // Rebuilt where used: it borrows fields that calls in between change.
        macro_rules! watch {
            () => {{
                let connects = !self.outgoing.is_empty();
                let waiting = connects || !self.unacknowledged.is_empty() || !self.soliciting.is_empty();
                Watch {
                    dns_sent: (!self.dns_queries.is_empty()).then_some(&self.dns_sent),
                    syns_sent: connects.then_some(&self.syns_sent),
                    unresolved: waiting.then_some(&self.unresolved),
                    now_micros,
                    multicast: Some(&self.multicast),
                    resets: (!self.unacknowledged.is_empty()).then_some(&self.resets_received),
                }
            }};
        }
        loop {
            // Connects and connections waiting for ACKs hear of ICMP
            // unreachables.
            let waiting = !self.outgoing.is_empty() || !self.unacknowledged.is_empty();
            let divert = (self.config.ephemeral_share.1 > 1).then(|| crate::device::Divert {
                share: self.config.ephemeral_share,
                listened: &self.listened,
                out: &mut self.diverted,
            });
            let mut port = Port {
                device: &self.device,
                frame: &mut self.frame,
                full: &self.full_ports,
                dropped_syns: 0,
                divert,
                udp_peers: &self.udp_peers,
                refused: &mut self.udp_refused,
                watch: watch!(),
                tcp_unreachable: waiting.then_some(&mut self.tcp_unreachable),
                learn: Some(crate::device::Learn {
                    mac,
                    subnets: &self.subnets,
                    subnets6: &self.subnets6,
                    learned: &mut self.learned,
                    reply: &mut self.teaching,
                    held: &mut self.held,
                    now_micros,
                }),
            };
            let result = self.interface.poll_ingress_single(now, &mut port, &mut self.sockets);
            self.stats.listen_drops += port.dropped_syns;
            match result {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => changed = true,
            }
            self.top_up_listeners();
        }
        changed |= self.fail_connects();
        let mut port = Port::new(&self.device, &mut self.frame);
        port.watch = watch!();
        // Again, so that the address a router advertisement just gave
        // (and the flush that comes with it) is there before egress.
        if maintain(&mut self.interface, now) {
            relearn = true;
            self.learned.forget_all();
        }
        while self.interface.poll_egress(now, &mut port, &mut self.sockets) == PollResult::SocketStateChanged {
            changed = true;
        }
        self.solicit_neighbours();
        if relearn && self.ipv4().is_some() {
            // smoltcp forgot every neighbour: ask ARP for the gateway
            // again (with the announcement) now, not when a packet for it
            // must wait (see `maintain`).
            self.unannounced = true;
        }
        if self.unannounced {
            self.announce();
        }
        self.device.borrow_mut().flush();
        changed |= self.fail_connects();
        let looped = core::mem::take(self.multicast.looped.get_mut());
        let loop_back = !looped.is_empty();
        for frame in looped {
            self.device.borrow_mut().loop_back(frame);
        }
        changed |= self.sweep_unacknowledged();
        self.poll_dhcp();
        self.reap_closing();
        self.reap_draining();
        self.recycle_failed_handshakes();
        self.top_up_listeners();
        if changed {
            self.stats.busy_polls += 1;
        }
        // The looped-back datagrams reach their sockets now (once: what
        // the sockets send in turn goes out with the next poll).
        if loop_back && !self.looping {
            self.looping = true;
            changed |= self.poll(now_micros);
            self.looping = false;
        }
        changed
    }

    /// How long until the stack needs polling again with nothing arriving
    /// (`None`: not until a frame arrives or a socket call).
    pub fn poll_delay_micros(&mut self, now_micros: u64) -> Option<u64> {
        let stack = self.interface.poll_delay(to_instant(now_micros), &self.sockets).map(|delay| delay.total_micros());
        // A closing socket's deadline, which smoltcp does not know of (a
        // socket waiting for a silent peer's FIN has no timer of its own).
        let closing = self.closing.iter().map(|&(_, deadline)| deadline).min().filter(|&d| d != u64::MAX);
        let closing = closing.map(|deadline| deadline.saturating_sub(now_micros));
        // The next request for, or give-up of, a neighbour something waits
        // for (`solicit_neighbours`, `fail_connects`).
        let waiting = !self.outgoing.is_empty() || !self.unacknowledged.is_empty();
        let neighbour = waiting
            .then(|| self.unresolved.get_mut().next_deadline())
            .flatten()
            .map(|deadline| deadline.saturating_sub(now_micros));
        [stack, closing, neighbour].into_iter().flatten().min()
    }

    /// Notes that a connect or a datagram goes to `address`: the next poll
    /// asks the link for its next hop unless it is known
    /// (`solicit_neighbours`).
    fn want_neighbour(&mut self, address: IpAddress) {
        if !self.soliciting.contains(&address) && self.soliciting.len() < MAX_SOLICITING {
            self.soliciting.push(address);
        }
    }

    /// Asks the link itself (ARP, or IPv6 neighbour solicitation) for the
    /// next hops that connects and datagrams wait for, after smoltcp's own
    /// egress. Defect fixed: smoltcp asks for one unknown neighbour a
    /// second per interface and holds a packet for another one until its
    /// turn, so connects to several hosts on the link at once went out
    /// one a second (and, to hosts that never answer, failed after 3 s
    /// per host, in turn). Linux asks for each neighbour on its own timer.
    /// Here a destination's next hop is asked for at once, unless it was
    /// taught to smoltcp lately (`neighbour::Learned`) or just asked for
    /// (by smoltcp in this egress, or by us within a second); an
    /// unanswered one is asked again once a second, 3 times in all, then
    /// given up (`fail_connects`). The answer goes to smoltcp, which fills
    /// its cache from any ARP reply or advertisement for one of its
    /// addresses, and the waiting packet leaves at the next poll.
    fn solicit_neighbours(&mut self) {
        let now = self.now_micros;
        let wanted = core::mem::take(&mut self.soliciting);
        let waiting = !self.outgoing.is_empty() || !self.unacknowledged.is_empty();
        if wanted.is_empty() && (!waiting || self.unresolved.get_mut().is_empty()) {
            return;
        }
        // Asked again unless an answer came meanwhile (the answers are
        // watched only while something waits; `Learned` hears them all).
        let mut asks = Vec::new();
        for hop in self.unresolved.get_mut().due(now) {
            match self.learned.knows(hop, now) {
                true => self.unresolved.get_mut().answered(hop),
                false => asks.push(hop),
            }
        }
        for address in wanted {
            let Some(hop) = self.next_hop(address) else { continue };
            let special = match hop {
                IpAddress::Ipv4(v4) => v4.is_multicast() || self.is_broadcast(hop) || v4.is_loopback(),
                IpAddress::Ipv6(v6) => v6.is_multicast() || v6.is_loopback(),
            };
            if special
                || hop.is_unspecified()
                || self.interface.has_ip_addr(hop)
                || asks.contains(&hop)
                || self.learned.knows(hop, now)
                || self.unresolved.get_mut().asked_lately(hop, now)
            {
                continue;
            }
            asks.push(hop);
        }
        let mac = self.device.borrow().mac();
        let mut frame = core::mem::take(&mut self.teaching);
        for hop in asks {
            let source = self.interface.get_source_address(&hop);
            match (hop, source) {
                (IpAddress::Ipv4(target), Some(IpAddress::Ipv4(us))) => {
                    crate::device::arp_request(&mut frame, target, us, mac)
                }
                (IpAddress::Ipv6(target), Some(IpAddress::Ipv6(us))) if self.interface.has_ip_addr(us) => {
                    crate::device::neighbour_solicitation(&mut frame, target, us, mac)
                }
                _ => continue,
            }
            // No transmit room: smoltcp's own request, or ours a second
            // later, asks instead.
            let sent = self.device.borrow_mut().transmit(frame.len(), |buffer| buffer.copy_from_slice(&frame));
            if sent.is_some() {
                self.unresolved.get_mut().asked(hop, now);
                self.stats.neighbours_solicited += 1;
            }
        }
        self.teaching = frame;
    }

    /// Sends a gratuitous ARP for the IPv4 address (RFC 5227, 2.3: an
    /// ARP request whose sender and target address are both ours) and an
    /// ARP request for the gateway, once per address set, at the first
    /// poll after it. Neighbours learn our
    /// MAC before they need it: QEMU's user network only learns a guest's
    /// MAC from the guest's ARP, so without this the first connection
    /// forwarded to the guest waited for slirp's ARP request to be retried
    /// (about 250 ms after the web server listened, test
    /// `gratuitous_arp_announces_the_address`). smoltcp has no call for
    /// it, so the frame is written here (42 bytes, no padding: the device
    /// pads).
    fn announce(&mut self) {
        let Some(address) = self.ipv4() else {
            self.unannounced = false;
            return;
        };
        let mac = self.device.borrow().mac();
        let mut gratuitous = Vec::new();
        crate::device::arp_request(&mut gratuitous, address, address, mac);
        // And a request for the gateway, so its MAC is known before the
        // first packet for it: smoltcp drops a packet whose next hop it
        // must ask ARP for (the first SYN-ACK to QEMU's user network was
        // lost that way, and the connection waited for a retransmitted SYN).
        let ask_gateway = self.gateway.filter(|&gateway| gateway != address).map(|gateway| {
            let mut request = Vec::new();
            crate::device::arp_request(&mut request, gateway, address, mac);
            request
        });
        let mut device = self.device.borrow_mut();
        let mut send = |frame: &[u8]| device.transmit(frame.len(), |buffer| buffer.copy_from_slice(frame));
        // No transmit room now: the next poll tries again.
        if send(&gratuitous).is_some() {
            if let Some(request) = ask_gateway {
                let _ = send(&request);
            }
            self.unannounced = false;
            self.stats.announcements += 1;
        }
    }

    fn poll_dhcp(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let event = self.sockets.get_mut::<dhcpv4::Socket>(handle).poll();
        match event {
            None => {}
            Some(dhcpv4::Event::Configured(lease)) => {
                let (address, router) = (lease.address, lease.router);
                let servers: Vec<IpAddress> = lease.dns_servers.iter().map(|&s| IpAddress::Ipv4(s)).collect();
                self.set_ipv4(Some(address), router);
                if !self.dns_static {
                    self.use_dns_servers(&servers);
                }
                // The DNS servers in use: the lease's, or those set.
                let dns = Spaced(&self.dns_servers);
                log::info!("net: DHCP lease {address}, gateway {router:?}, DNS servers:{dns}");
                self.stats.dhcp_leases += 1;
            }
            Some(dhcpv4::Event::Deconfigured) => {
                log::warn!("net: DHCP lease lost");
                self.set_ipv4(None, None);
            }
        }
    }

    /// Frees the closed UDP sockets whose datagrams left (or whose time
    /// ran out).
    fn reap_draining(&mut self) {
        if self.udp_draining.is_empty() {
            return;
        }
        let now = self.now_micros;
        let (sockets, multicast) = (&mut self.sockets, &mut self.multicast);
        self.udp_draining.retain(|&(handle, deadline)| {
            let done = sockets.get::<udp::Socket>(handle).send_queue() == 0 || now >= deadline;
            if done {
                remove_udp_socket(sockets, multicast, handle);
            }
            !done
        });
    }

    /// Ends the connects that cannot succeed, as Linux does: one whose SYN
    /// a router or the peer answered with an ICMP destination unreachable
    /// (the answer must quote the SYN's port, peer and sequence number),
    /// and one whose next hop never answered ARP or neighbour discovery
    /// (`neighbour::Unresolved`: 3 requests over 3 s). Their socket is
    /// closed and `tcp_connect_state` gives the error. Returns whether any
    /// ended.
    fn fail_connects(&mut self) -> bool {
        let reports = core::mem::take(&mut self.tcp_unreachable);
        let given_up = self.unresolved.get_mut().take_given_up(self.now_micros);
        self.note_soft_errors(&reports, &given_up);
        if self.syns_sent.get_mut().is_empty() && given_up.is_empty() {
            return false;
        }
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        for &handle in &self.outgoing {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            let (Some(local), Some(remote)) = (socket.local_endpoint(), socket.remote_endpoint()) else {
                continue;
            };
            if socket.state() != tcp::State::SynSent {
                continue;
            }
            let syns = self.syns_sent.get_mut();
            let syn = syns.iter().find(|&&(port, _)| port == local.port).map(|&(_, sequence)| sequence);
            let answer = reports.iter().find(|report| {
                report.local_port == local.port && report.peer == remote && Some(report.sequence) == syn
            });
            let error = match answer {
                Some(answer) => Some(answer.error),
                None => {
                    self.next_hop(remote.addr).filter(|hop| given_up.contains(hop)).map(|_| NetError::HostUnreachable)
                }
            };
            match error {
                Some(error) => failed.push((handle, error)),
                None => waiting.push(local.port),
            }
        }
        // The SYNs of connects no longer waiting are forgotten.
        self.syns_sent.get_mut().retain(|(port, _)| waiting.contains(port));
        for &(handle, error) in &failed {
            forget_connect(self.sockets.get_mut::<tcp::Socket>(handle));
            self.connect_errors.insert(handle, error);
            self.stats.connects_unreachable += 1;
        }
        !failed.is_empty()
    }

    /// What the network said of the connections waiting for ACKs (Linux's
    /// soft errors: an established connection goes on retransmitting, and
    /// the error is the one it ends with if it times out): an ICMP
    /// destination unreachable for a segment between its endpoints, or
    /// its next hop given up (`HostUnreachable`). Unlike a connect's, the
    /// sequence number quoted is not checked (smoltcp does not say which
    /// are in flight): a forged ICMP changes no more than that error.
    fn note_soft_errors(&mut self, reports: &[crate::device::TcpUnreachable], given_up: &[IpAddress]) {
        if reports.is_empty() && given_up.is_empty() {
            return;
        }
        for index in 0..self.unacknowledged.len() {
            let Unacknowledged { local_port, peer, .. } = self.unacknowledged[index];
            let report = reports.iter().find(|report| report.local_port == local_port && report.peer == peer);
            let error = match report {
                Some(report) => Some(report.error),
                None => {
                    self.next_hop(peer.addr).filter(|hop| given_up.contains(hop)).map(|_| NetError::HostUnreachable)
                }
            };
            if error.is_some() {
                self.unacknowledged[index].soft_error = error;
            }
        }
    }

    /// The neighbour a packet to `address` goes to: the address itself
    /// on one of the interface's networks (or IPv6 link-local), else the
    /// family's default router.
    fn next_hop(&self, address: IpAddress) -> Option<IpAddress> {
        let link_local = matches!(address, IpAddress::Ipv6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if link_local || self.interface.ip_addrs().iter().any(|cidr| cidr.contains_addr(&address)) {
            return Some(address);
        }
        let routes = self.interface.routes();
        let route = match address {
            IpAddress::Ipv4(_) => routes.get_default_ipv4_route(),
            IpAddress::Ipv6(_) => routes.get_default_ipv6_route(),
        };
        route.map(|route| route.via_router)
    }

    /// Refills the listening pools (`top_up_listeners`).
    fn top_up_listeners(&mut self) {
        let Self { listeners, sockets, spare, config, full_ports, stats, .. } = self;
        top_up_listeners(listeners, sockets, spare, config, full_ports, stats);
    }

    /// Goes over the connections with data waiting for its ACK (after a
    /// poll): one that smoltcp closed without a RST from the peer timed out
    /// (its timeout, the user timeout, is set only on these); one whose
    /// data was all acknowledged has its timeout taken off again. Returns
    /// whether a connection timed out.
    fn sweep_unacknowledged(&mut self) -> bool {
        if self.unacknowledged.is_empty() {
            return false;
        }
        let resets = core::mem::take(self.resets_received.get_mut());
        let (sockets, timed_out, stats) = (&mut self.sockets, &mut self.timed_out, &mut self.stats);
        let before = stats.connections_timed_out;
        self.unacknowledged.retain(|entry| {
            let socket = sockets.get_mut::<tcp::Socket>(entry.handle);
            match socket.state() {
                tcp::State::Closed => {
                    if !resets.contains(&(entry.local_port, entry.peer)) {
                        timed_out.insert(entry.handle, entry.soft_error.unwrap_or(NetError::TimedOut));
                        stats.connections_timed_out += 1;
                        // smoltcp's RST has not left if the peer's MAC is
                        // unknown (its neighbour entry expired): Linux sends
                        // none on a timeout, and that one would ask ARP for
                        // the vanished peer every second, holding back other
                        // sockets' requests, as long as the socket lives.
                        if socket.local_endpoint().is_some() && socket.recv_queue() == 0 {
                            forget_connect(socket);
                        }
                    }
                    false
                }
                _ if socket.send_queue() > 0 => true,
                _ => {
                    socket.set_timeout(None);
                    false
                }
            }
        });
        stats.connections_timed_out != before
    }

    fn reap_closing(&mut self) {
        let (sockets, now, stats, spare) = (&mut self.sockets, self.now_micros, &mut self.stats, &mut self.spare);
        self.closing.retain_mut(|(handle, deadline)| {
            let socket = sockets.get_mut::<tcp::Socket>(*handle);
            if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                // A reset socket that still has its peer has not sent its
                // RST: it waits for the peer's MAC. Until the deadline;
                // then it is dropped, as Linux drops what waits for a
                // neighbour that never answers (smoltcp would ask ARP for
                // it every second, holding back other sockets' requests,
                // for as long as the socket is kept).
                if socket.state() == tcp::State::Closed && socket.local_endpoint().is_some() {
                    if now < *deadline {
                        return true;
                    }
                    forget_connect(socket);
                }
                // A TIME-WAIT socket kept still answers a retransmitted
                // FIN until it is used again.
                match spare.len() < MAX_SPARE {
                    true => spare.push(*handle),
                    false => {
                        sockets.remove(*handle);
                    }
                }
                return false;
            }
            if now >= *deadline {
                // Out of time: reset. The next poll sends the RST, the
                // reap after it finds the socket closed and frees it (or,
                // if the RST waits for ARP, at the latest by then).
                socket.abort();
                stats.closing_timed_out += 1;
                *deadline = now.saturating_add(RST_ARP_WAIT_MICROS);
            }
            true
        });
    }

    /// A pool socket whose handshake failed (reset, timed out) went back to
    /// `Closed`: listen again.
    fn recycle_failed_handshakes(&mut self) {
        for listener in &self.listeners {
            for &handle in &listener.pool {
                let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                if socket.state() == tcp::State::Closed {
                    // Listen fails only on port 0 or an open socket.
                    let _ = socket.listen(listener.port);
                    self.stats.handshakes_failed += 1;
                }
            }
        }
    }

    fn port_in_use(&self, port: u16, protocol: Protocol) -> bool {
        self.listeners.iter().any(|listener| listener.port == port && protocol == Protocol::Tcp)
            || self.sockets.iter().any(|(_, socket)| match socket {
                smoltcp::socket::Socket::Udp(udp) => protocol == Protocol::Udp && udp.endpoint().port == port,
                smoltcp::socket::Socket::Tcp(tcp) if protocol == Protocol::Tcp => {
                    tcp.local_endpoint().is_some_and(|endpoint| endpoint.port == port)
                        && tcp.state() != tcp::State::Closed
                }
                _ => false,
            })
    }

    /// Whether a listen on `port` conflicts: with a listener on it, or
    /// with an open connection this stack opened from it. Not with the
    /// connections a listener on it accepted, open or closing: a server
    /// that drops its listener and listens again while they finish gets
    /// the port, as std's `TcpListener::bind` does on Linux (it sets
    /// `SO_REUSEADDR`; a restarted server would otherwise wait out every
    /// TIME-WAIT). smoltcp hands a SYN only to a listening socket and a
    /// segment of a connection only to the socket of its four-tuple, so
    /// they share the port.
    fn listen_conflict(&self, port: u16) -> bool {
        self.listeners.iter().any(|listener| listener.port == port)
            || self.outgoing.iter().any(|&handle| {
                let socket = self.sockets.get::<tcp::Socket>(handle);
                socket.local_endpoint().is_some_and(|endpoint| endpoint.port == port)
            })
    }

    fn ephemeral_port(&mut self, protocol: Protocol) -> Result<u16, NetError> {
        let span = u16::MAX - EPHEMERAL_FIRST + 1;
        let count = self.config.ephemeral_share.1.max(1);
        let index = self.config.ephemeral_share.0 % count;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == u16::MAX { EPHEMERAL_FIRST } else { port + 1 };
            if (port - EPHEMERAL_FIRST) % count != index {
                continue;
            }
            if !self.port_in_use(port, protocol) {
                return Ok(port);
            }
        }
        Err(NetError::AddrNotAvailable)
    }

    /// Starts listening on `port` (0 picks one) with the configured pool;
    /// returns the port.
    pub fn tcp_listen(&mut self, port: u16) -> Result<u16, NetError> {
        let port = if port == 0 { self.ephemeral_port(Protocol::Tcp)? } else { port };
        if self.listen_conflict(port) {
            return Err(NetError::AddrInUse);
        }
        self.listeners.push(Listener { port, pool: Vec::with_capacity(self.config.listen_pool), ttl: None });
        if !self.listened.contains(&port) {
            self.listened.push(port);
        }
        self.top_up_listeners();
        Ok(port)
    }

    /// Stops listening on `port`: handshakes in progress are reset.
    pub fn tcp_unlisten(&mut self, port: u16) {
        let Some(position) = self.listeners.iter().position(|listener| listener.port == port) else { return };
        let listener = self.listeners.swap_remove(position);
        // A SYN for it is reset again, not dropped as for a full backlog.
        self.full_ports.retain(|&full| full != port);
        let deadline = self.close_deadline();
        for handle in listener.pool {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
            self.closing.push((handle, deadline));
        }
    }

    /// A connection that arrived on `port`, if one finished its handshake
    /// (or already closed with data in it).
    pub fn tcp_accept(&mut self, port: u16) -> Result<TcpHandle, NetError> {
        let listener =
            self.listeners.iter_mut().find(|listener| listener.port == port).ok_or(NetError::InvalidInput)?;
        let sockets = &self.sockets;
        let ready = listener.pool.iter().position(|&handle| {
            let state = sockets.get::<tcp::Socket>(handle).state();
            !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed)
        });
        let Some(position) = ready else { return Err(NetError::WouldBlock) };
        let handle = listener.pool.swap_remove(position);
        self.top_up_listeners();
        self.open.insert(handle);
        self.stats.accepted += 1;
        Ok(TcpHandle(handle))
    }

    /// Whether `port` has a connection ready for `tcp_accept`.
    pub fn tcp_accept_ready(&self, port: u16) -> bool {
        self.listeners.iter().filter(|listener| listener.port == port).flat_map(|listener| &listener.pool).any(
            |&handle| {
                let state = self.sockets.get::<tcp::Socket>(handle).state();
                !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed)
            },
        )
    }

    /// Starts a connection to `remote`; see [`Stack::tcp_connect_state`].
    pub fn tcp_connect(&mut self, remote: IpEndpoint) -> Result<TcpHandle, NetError> {
        if remote.port == 0 || remote.addr.is_unspecified() {
            return Err(NetError::InvalidInput);
        }
        let local = self.ephemeral_port(Protocol::Tcp)?;
        let handle = take_tcp_socket(&mut self.sockets, &mut self.spare, &self.config, &mut self.stats);
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if let Err(error) = socket.connect(self.interface.context(), remote, local) {
            self.spare.push(handle);
            return Err(match error {
                tcp::ConnectError::Unaddressable => NetError::Unreachable,
                tcp::ConnectError::InvalidState => NetError::InvalidInput,
            });
        }
        self.open.insert(handle);
        self.outgoing.insert(handle);
        self.stats.connected += 1;
        self.want_neighbour(remote.addr);
        Ok(TcpHandle(handle))
    }

    fn tcp(&mut self, handle: TcpHandle) -> Result<&mut tcp::Socket<'static>, NetError> {
        if !self.open.contains(&handle.0) {
            return Err(NetError::BadHandle);
        }
        Ok(self.sockets.get_mut::<tcp::Socket>(handle.0))
    }

    fn tcp_ref(&self, handle: TcpHandle) -> Result<&tcp::Socket<'static>, NetError> {
        if !self.open.contains(&handle.0) {
            return Err(NetError::BadHandle);
        }
        Ok(self.sockets.get::<tcp::Socket>(handle.0))
    }

    /// How an outgoing connection stands: `ConnectionRefused` if the peer
    /// reset it (or it timed out) before it was established.
    pub fn tcp_connect_state(&self, handle: TcpHandle) -> Result<ConnectState, NetError> {
        let socket = self.tcp_ref(handle)?;
        if let Some(&error) = self.connect_errors.get(&handle.0) {
            return Err(error);
        }
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(ConnectState::Pending),
            tcp::State::Closed if socket.recv_queue() == 0 => Err(NetError::ConnectionRefused),
            _ => Ok(ConnectState::Established),
        }
    }

    /// Reads what has arrived: `Ok(0)` at end of stream (the peer's FIN),
    /// `WouldBlock` when nothing waits yet, `ConnectionReset` when the
    /// connection broke without a FIN.
    pub fn tcp_recv(&mut self, handle: TcpHandle, buffer: &mut [u8]) -> Result<usize, NetError> {
        let socket = self.tcp(handle)?;
        if buffer.is_empty() {
            return Ok(0);
        }
        match socket.recv_slice(buffer) {
            Ok(0) => Err(NetError::WouldBlock),
            Ok(count) => Ok(count),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Err(self.broken_error(handle)),
        }
    }

    /// `tcp_recv` that leaves the data in the socket (std's `peek`): the
    /// same results, the bytes read again by the next receive. May return
    /// fewer bytes than are queued (the part before the ring wraps).
    pub fn tcp_peek(&mut self, handle: TcpHandle, buffer: &mut [u8]) -> Result<usize, NetError> {
        let socket = self.tcp(handle)?;
        if buffer.is_empty() {
            return Ok(0);
        }
        match socket.peek(buffer.len()) {
            Ok([]) => Err(NetError::WouldBlock),
            Ok(data) => {
                buffer[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Err(self.broken_error(handle)),
        }
    }

    /// The error of a connection that broke without the peer's FIN:
    /// `TimedOut` (or the soft error it had, as Linux reports) if its peer
    /// went silent (`sweep_unacknowledged`), else `ConnectionReset` (a
    /// reset, sent or received).
    fn broken_error(&self, handle: TcpHandle) -> NetError {
        self.timed_out.get(&handle.0).copied().unwrap_or(NetError::ConnectionReset)
    }

    /// If the connection broke without the peer's FIN (a reset, or the
    /// user timeout) and nothing it received before is left to read: the
    /// error `tcp_recv` and `tcp_send` now give (`ConnectionReset` or
    /// `TimedOut`), for `take_error`.
    pub fn tcp_broken(&mut self, handle: TcpHandle) -> Result<Option<NetError>, NetError> {
        let socket = self.tcp(handle)?;
        let broken = socket.state() == tcp::State::Closed
            && socket.recv_queue() == 0
            && socket.peek(0) == Err(tcp::RecvError::InvalidState);
        Ok(broken.then(|| self.broken_error(handle)))
    }

    /// Whether `tcp_recv` would not block (data, end of stream or error).
    pub fn tcp_readable(&self, handle: TcpHandle) -> bool {
        match self.tcp_ref(handle) {
            Ok(socket) => socket.can_recv() || !socket.may_recv() && socket.state() != tcp::State::SynSent,
            Err(_) => true,
        }
    }

    /// Queues `data` for sending: how much fit (`WouldBlock` if nothing
    /// did), `BrokenPipe` after this side shut down, `ConnectionReset` if
    /// the connection broke (`TimedOut` if its peer went silent).
    pub fn tcp_send(&mut self, handle: TcpHandle, data: &[u8]) -> Result<usize, NetError> {
        let user_timeout = self.config.tcp_user_timeout_micros.map(Duration::from_micros);
        let socket = self.tcp(handle)?;
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => return Err(NetError::WouldBlock),
            tcp::State::Closed => return Err(self.broken_error(handle)),
            _ => {}
        }
        if !socket.may_send() {
            return Err(NetError::BrokenPipe);
        }
        if data.is_empty() {
            return Ok(0);
        }
        match socket.send_slice(data) {
            Ok(0) => Err(NetError::WouldBlock),
            Ok(count) => {
                // The user timeout runs while sent data waits for its ACK.
                // smoltcp's own timeout is that, counted from the last
                // segment the peer sent (from the first transmit when the
                // queue was empty), but it also ends an idle connection:
                // so it is set only while data waits.
                if user_timeout.is_some() && socket.timeout().is_none() {
                    if let (Some(local), Some(peer)) = (socket.local_endpoint(), socket.remote_endpoint()) {
                        socket.set_timeout(user_timeout);
                        let local_port = local.port;
                        let entry = Unacknowledged { handle: handle.0, local_port, peer, soft_error: None };
                        self.unacknowledged.push(entry);
                    }
                }
                Ok(count)
            }
            Err(tcp::SendError::InvalidState) => Err(NetError::BrokenPipe),
        }
    }

    /// Whether `tcp_send` would not block.
    pub fn tcp_writable(&self, handle: TcpHandle) -> bool {
        match self.tcp_ref(handle) {
            Ok(socket) => match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => false,
                _ => socket.can_send() || !socket.may_send(),
            },
            Err(_) => true,
        }
    }

    /// Bytes queued and not yet acknowledged by the peer.
    pub fn tcp_unacked(&self, handle: TcpHandle) -> usize {
        self.tcp_ref(handle).map_or(0, |socket| socket.send_queue())
    }

    /// Sends a FIN after what is queued (`shutdown(Write)`).
    pub fn tcp_shutdown_write(&mut self, handle: TcpHandle) -> Result<(), NetError> {
        self.tcp(handle)?.close();
        Ok(())
    }

    /// Closes the socket: queued data still goes out, then a FIN; the
    /// socket leaves the set when the exchange ends. The handle is dead
    /// after this.
    pub fn tcp_close(&mut self, handle: TcpHandle) {
        if !self.open.remove(&handle.0) {
            return;
        }
        self.outgoing.remove(&handle.0);
        self.connect_errors.remove(&handle.0);
        self.timed_out.remove(&handle.0);
        // A closing socket has its own deadline (`close_timeout_micros`).
        self.unacknowledged.retain(|entry| entry.handle != handle.0);
        let socket = self.sockets.get_mut::<tcp::Socket>(handle.0);
        if socket.state() == tcp::State::SynSent {
            forget_connect(socket);
        } else if socket.recv_queue() > 0 {
            // Unread data: like Linux, reset rather than pretend a clean end.
            socket.abort();
        } else {
            socket.close();
        }
        if self.closing.len() >= self.config.max_closing {
            let (oldest, _) = self.closing.remove(0);
            self.sockets.get_mut::<tcp::Socket>(oldest).abort();
            self.sockets.remove(oldest);
            self.stats.closing_evicted += 1;
        }
        let deadline = self.close_deadline();
        self.closing.push((handle.0, deadline));
    }

    /// When a socket closed now is reset if its FIN exchange has not ended.
    fn close_deadline(&self) -> u64 {
        self.now_micros.saturating_add(self.config.close_timeout_micros)
    }

    /// Resets the connection (RST) and frees the socket at the next poll.
    pub fn tcp_abort(&mut self, handle: TcpHandle) {
        if let Ok(socket) = self.tcp(handle) {
            // A connect not answered yet is forgotten by `tcp_close`.
            if socket.state() != tcp::State::SynSent {
                socket.abort();
            }
        }
        self.tcp_close(handle);
    }

    /// The peer's address.
    pub fn tcp_peer(&self, handle: TcpHandle) -> Result<IpEndpoint, NetError> {
        self.tcp_ref(handle)?.remote_endpoint().ok_or(NetError::NotConnected)
    }

    /// This side's address.
    pub fn tcp_local(&self, handle: TcpHandle) -> Result<IpEndpoint, NetError> {
        self.tcp_ref(handle)?.local_endpoint().ok_or(NetError::NotConnected)
    }

    /// Nagle's algorithm off (`true`, the default here) or on.
    pub fn tcp_set_nodelay(&mut self, handle: TcpHandle, nodelay: bool) -> Result<(), NetError> {
        self.tcp(handle)?.set_nagle_enabled(!nodelay);
        Ok(())
    }

    /// Whether Nagle's algorithm is off.
    pub fn tcp_nodelay(&self, handle: TcpHandle) -> Result<bool, NetError> {
        Ok(!self.tcp_ref(handle)?.nagle_enabled())
    }

    /// The IP time-to-live (IPv6 hop limit) of the connection's packets;
    /// 0 is refused (`InvalidInput`), as by Linux.
    pub fn tcp_set_ttl(&mut self, handle: TcpHandle, ttl: u8) -> Result<(), NetError> {
        let ttl = hop_limit(ttl)?;
        self.tcp(handle)?.set_hop_limit(ttl);
        Ok(())
    }

    /// The connection's time-to-live.
    pub fn tcp_ttl(&self, handle: TcpHandle) -> Result<u8, NetError> {
        Ok(self.tcp_ref(handle)?.hop_limit().unwrap_or(DEFAULT_TTL))
    }

    /// The time-to-live of listening port `port`'s connections: its
    /// listening sockets now, those it makes later, and so the connections
    /// `tcp_accept` hands out from then on.
    pub fn tcp_listen_set_ttl(&mut self, port: u16, ttl: u8) -> Result<(), NetError> {
        let ttl = hop_limit(ttl)?;
        let listener =
            self.listeners.iter_mut().find(|listener| listener.port == port).ok_or(NetError::InvalidInput)?;
        listener.ttl = ttl;
        for &handle in &listener.pool {
            self.sockets.get_mut::<tcp::Socket>(handle).set_hop_limit(ttl);
        }
        Ok(())
    }

    /// Listening port `port`'s time-to-live.
    pub fn tcp_listen_ttl(&self, port: u16) -> Result<u8, NetError> {
        let listener = self.listeners.iter().find(|listener| listener.port == port).ok_or(NetError::InvalidInput)?;
        Ok(listener.ttl.unwrap_or(DEFAULT_TTL))
    }

    /// The connection's state (for tests and `/stats`).
    pub fn tcp_state(&self, handle: TcpHandle) -> Result<tcp::State, NetError> {
        Ok(self.tcp_ref(handle)?.state())
    }

    /// Opens a UDP socket on `port` (0 picks one); returns it and its port.
    pub fn udp_bind(&mut self, port: u16) -> Result<(UdpHandle, u16), NetError> {
        let port = if port == 0 { self.ephemeral_port(Protocol::Udp)? } else { port };
        // A closed socket still sending on the port gives it up (smoltcp
        // would hand the new socket's datagrams to the first of the two).
        let (sockets, multicast) = (&mut self.sockets, &mut self.multicast);
        self.udp_draining.retain(|&(handle, _)| {
            let holds = sockets.get::<udp::Socket>(handle).endpoint().port == port;
            if holds {
                remove_udp_socket(sockets, multicast, handle);
            }
            !holds
        });
        if self.port_in_use(port, Protocol::Udp) {
            return Err(NetError::AddrInUse);
        }
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; self.config.udp_packets],
                vec![0u8; self.config.udp_bytes],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(IpListenEndpoint { addr: None, port }).map_err(|_| NetError::InvalidInput)?;
        let handle = self.sockets.add(socket);
        self.open.insert(handle);
        Ok((UdpHandle(handle), port))
    }

    fn udp(&mut self, handle: UdpHandle) -> Result<&mut udp::Socket<'static>, NetError> {
        if !self.open.contains(&handle.0) {
            return Err(NetError::BadHandle);
        }
        Ok(self.sockets.get_mut::<udp::Socket>(handle.0))
    }

    /// Queues one datagram to `remote`; `TooLarge` if it does not fit one
    /// frame (smoltcp is built without IP fragmentation);
    /// `PermissionDenied` for a broadcast address (255.255.255.255 or the
    /// interface's subnet broadcast) unless `broadcast` (Linux's
    /// `SO_BROADCAST`: `EACCES` without it).
    pub fn udp_send_to(
        &mut self,
        handle: UdpHandle,
        data: &[u8],
        remote: IpEndpoint,
        broadcast: bool,
    ) -> Result<usize, NetError> {
        if remote.port == 0 || remote.addr.is_unspecified() {
            return Err(NetError::InvalidInput);
        }
        if !broadcast && self.is_broadcast(remote.addr) {
            return Err(NetError::PermissionDenied);
        }
        // No IP fragmentation: a datagram must fit one frame (Ethernet,
        // IPv4 and UDP headers: 14 + 20 + 8 bytes).
        let max = self.config.udp_bytes.min(self.device.borrow().capabilities().max_frame.saturating_sub(42));
        self.udp_refusal(handle)?;
        let socket = self.udp(handle)?;
        if data.len() > max {
            return Err(NetError::TooLarge);
        }
        match socket.send_slice(data, remote) {
            Ok(()) => {
                self.want_neighbour(remote.addr);
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(NetError::WouldBlock),
            Err(udp::SendError::Unaddressable) => Err(NetError::Unreachable),
        }
    }

    /// Whether `address` is an IPv4 broadcast address here: the limited
    /// broadcast 255.255.255.255 or the subnet broadcast of the
    /// interface's address (a /31 or /32 has none).
    pub fn is_broadcast(&self, address: IpAddress) -> bool {
        let IpAddress::Ipv4(address) = address else {
            return false;
        };
        address.is_broadcast() || self.ipv4_cidr().and_then(|cidr| cidr.broadcast()) == Some(address)
    }

    /// Makes the interface a member of multicast `group` for `handle`
    /// (Linux's `IP_ADD_MEMBERSHIP`, `IPV6_ADD_MEMBERSHIP`): datagrams to
    /// the group reach the UDP socket bound to their port, and the
    /// interface reports its membership (IGMP, MLD) to the routers.
    /// `InvalidInput` for an address that is not multicast, `AddrInUse`
    /// if `handle` joined it already (as Linux), `NoBufferSpace` when the
    /// interface's group table is full.
    pub fn udp_join_multicast(&mut self, handle: UdpHandle, group: IpAddress) -> Result<(), NetError> {
        self.udp(handle)?;
        if !group.is_multicast() {
            return Err(NetError::InvalidInput);
        }
        if self.multicast.memberships.contains(&(handle.0, group)) {
            return Err(NetError::AddrInUse);
        }
        if !self.multicast.memberships.iter().any(|&(_, joined)| joined == group) {
            self.interface.join_multicast_group(group).map_err(|error| match error {
                smoltcp::iface::MulticastError::GroupTableFull => NetError::NoBufferSpace,
                smoltcp::iface::MulticastError::Unaddressable => NetError::InvalidInput,
            })?;
        }
        self.multicast.memberships.push((handle.0, group));
        Ok(())
    }

    /// Ends `handle`'s membership of `group`; the interface leaves the
    /// group (and says so) when no socket has it. `AddrNotAvailable` if
    /// `handle` is not a member (Linux's `EADDRNOTAVAIL`).
    pub fn udp_leave_multicast(&mut self, handle: UdpHandle, group: IpAddress) -> Result<(), NetError> {
        self.udp(handle)?;
        let position = self
            .multicast
            .memberships
            .iter()
            .position(|&entry| entry == (handle.0, group))
            .ok_or(NetError::AddrNotAvailable)?;
        self.multicast.memberships.swap_remove(position);
        self.leave_if_unused(group);
        Ok(())
    }

    /// Whether the interface is a member of multicast `group`.
    pub fn in_multicast_group(&self, group: IpAddress) -> bool {
        self.interface.has_multicast_group(group)
    }

    fn leave_if_unused(&mut self, group: IpAddress) {
        if !self.multicast.memberships.iter().any(|&(_, joined)| joined == group) {
            // Fails only for an address that is not multicast; joined
            // groups are.
            let _ = self.interface.leave_multicast_group(group);
        }
    }

    /// Takes one datagram: its length (truncated to `buffer`, like std)
    /// and sender.
    pub fn udp_recv_from(&mut self, handle: UdpHandle, buffer: &mut [u8]) -> Result<(usize, IpEndpoint), NetError> {
        self.udp_refusal(handle)?;
        copy_datagram(self.udp(handle)?.recv(), buffer)
    }

    /// `udp_recv_from` that leaves the datagram in the socket (std's
    /// `peek_from`): the next receive takes it.
    pub fn udp_peek_from(&mut self, handle: UdpHandle, buffer: &mut [u8]) -> Result<(usize, IpEndpoint), NetError> {
        self.udp_refusal(handle)?;
        copy_datagram(self.udp(handle)?.peek().map(|(data, meta)| (data, *meta)), buffer)
    }

    /// The time-to-live of the socket's datagrams (0: `InvalidInput`).
    pub fn udp_set_ttl(&mut self, handle: UdpHandle, ttl: u8) -> Result<(), NetError> {
        let ttl = hop_limit(ttl)?;
        self.udp(handle)?.set_hop_limit(ttl);
        Ok(())
    }

    /// The socket's time-to-live.
    pub fn udp_ttl(&mut self, handle: UdpHandle) -> Result<u8, NetError> {
        Ok(self.udp(handle)?.hop_limit().unwrap_or(DEFAULT_TTL))
    }

    /// Sets the time-to-live of the socket's datagrams to IPv4 multicast
    /// groups (1-255; 1 unless set, as Linux's `IP_MULTICAST_TTL`).
    pub fn udp_set_multicast_ttl(&mut self, handle: UdpHandle, ttl: u8) -> Result<(), NetError> {
        let port = self.udp_port(handle)?;
        hop_limit(ttl)?;
        let ttls = &mut self.multicast.ttls;
        ttls.retain(|&(known, _)| known != port);
        if ttl != crate::device::DEFAULT_MULTICAST_TTL {
            ttls.push((port, ttl));
        }
        Ok(())
    }

    /// The time-to-live of the socket's datagrams to IPv4 groups.
    pub fn udp_multicast_ttl(&mut self, handle: UdpHandle) -> Result<u8, NetError> {
        let port = self.udp_port(handle)?;
        Ok(self.multicast.ttl(port))
    }

    /// Whether the socket's datagrams to IPv4 (IPv6 when `v6`) groups
    /// this interface joined are also delivered to the sockets here that
    /// joined them (on unless turned off, as Linux's `IP_MULTICAST_LOOP`
    /// and `IPV6_MULTICAST_LOOP`).
    pub fn udp_set_multicast_loop(&mut self, handle: UdpHandle, v6: bool, on: bool) -> Result<(), NetError> {
        let port = self.udp_port(handle)?;
        let no_loop = &mut self.multicast.no_loop;
        no_loop.retain(|&known| known != (port, v6));
        if !on {
            no_loop.push((port, v6));
        }
        Ok(())
    }

    /// See [`Stack::udp_set_multicast_loop`].
    pub fn udp_multicast_loop(&mut self, handle: UdpHandle, v6: bool) -> Result<bool, NetError> {
        let port = self.udp_port(handle)?;
        Ok(self.multicast.loops(port, v6))
    }

    /// Whether a datagram (or a refusal, `udp_set_peer`) waits.
    pub fn udp_readable(&mut self, handle: UdpHandle) -> bool {
        let refused =
            self.udp_connected.iter().position(|&entry| entry == handle.0).is_some_and(|i| self.udp_refused[i]);
        refused || self.udp(handle).map_or(true, |socket| socket.can_recv())
    }

    /// Sets (or, `None`, clears) the peer a UDP socket is connected to
    /// (std's `UdpSocket::connect`): a port unreachable that comes back
    /// for a datagram the socket sent there is then reported once, by the
    /// next send, receive or `udp_take_error`, as `ConnectionRefused`, as
    /// Linux reports it on a connected socket (an unconnected one never
    /// hears of it). A new peer clears a refusal not yet reported.
    pub fn udp_set_peer(&mut self, handle: UdpHandle, peer: Option<IpEndpoint>) -> Result<(), NetError> {
        let port = self.udp(handle)?.endpoint().port;
        if let Some(index) = self.udp_connected.iter().position(|&entry| entry == handle.0) {
            self.udp_connected.swap_remove(index);
            self.udp_peers.swap_remove(index);
            self.udp_refused.swap_remove(index);
        }
        if let Some(peer) = peer {
            self.udp_connected.push(handle.0);
            self.udp_peers.push((port, peer));
            self.udp_refused.push(false);
        }
        Ok(())
    }

    /// Takes the refusal a connected socket has not reported yet
    /// (`udp_set_peer`), as std's `take_error`.
    pub fn udp_take_error(&mut self, handle: UdpHandle) -> Result<Option<NetError>, NetError> {
        self.udp(handle)?;
        Ok(self.udp_refusal(handle).err())
    }

    /// `Err(ConnectionRefused)`, once, if a refusal waits for `handle`
    /// (`Ok` for a handle that is not a connected socket's).
    fn udp_refusal(&mut self, handle: UdpHandle) -> Result<(), NetError> {
        match self.udp_connected.iter().position(|&entry| entry == handle.0) {
            Some(index) if self.udp_refused[index] => {
                self.udp_refused[index] = false;
                Err(NetError::ConnectionRefused)
            }
            _ => Ok(()),
        }
    }

    /// Whether a datagram can be queued.
    pub fn udp_writable(&mut self, handle: UdpHandle) -> bool {
        self.udp(handle).map_or(true, |socket| socket.can_send())
    }

    /// The UDP socket's local port.
    pub fn udp_port(&mut self, handle: UdpHandle) -> Result<u16, NetError> {
        Ok(self.udp(handle)?.endpoint().port)
    }

    /// Closes a UDP socket.
    pub fn udp_close(&mut self, handle: UdpHandle) {
        let _ = self.udp_set_peer(handle, None);
        // Datagrams `send_to` took still leave, as on Linux (its send hands
        // them to the device at once): a sender that sent and closed at
        // once lost them. The socket, closed to the application, stays
        // until the next polls sent them, for up to `UDP_DRAIN_MICROS`
        // (one may wait for a neighbour's MAC).
        if self.open.remove(&handle.0) {
            if self.sockets.get::<udp::Socket>(handle.0).send_queue() > 0 {
                let deadline = self.now_micros.saturating_add(UDP_DRAIN_MICROS);
                self.udp_draining.push((handle.0, deadline));
            } else {
                remove_udp_socket(&mut self.sockets, &mut self.multicast, handle.0);
            }
            // Its multicast groups go with it (as a closed socket's do on Linux).
            let groups: Vec<IpAddress> = self
                .multicast
                .memberships
                .iter()
                .filter(|&&(member, _)| member == handle.0)
                .map(|&(_, group)| group)
                .collect();
            self.multicast.memberships.retain(|&(member, _)| member != handle.0);
            for group in groups {
                self.leave_if_unused(group);
            }
        }
    }

    /// Sets the DNS servers (at most 4 are used; `toro.dns=`); a DHCP
    /// lease's servers no longer replace them. An empty list clears them
    /// and lets a lease's count again.
    pub fn set_dns_servers(&mut self, servers: &[IpAddress]) {
        self.dns_static = !servers.is_empty();
        self.use_dns_servers(servers);
    }

    fn use_dns_servers(&mut self, servers: &[IpAddress]) {
        self.dns_servers = servers.iter().copied().filter(|s| !s.is_unspecified()).take(4).collect();
        if let Some(handle) = self.dns {
            self.sockets.get_mut::<dns::Socket>(handle).update_servers(&self.dns_servers);
        }
    }

    /// The TCP segments this queue pair received since the last call that
    /// belong to another pair's outgoing connection, each with the index
    /// of the pair whose share of the ephemeral ports holds its port (see
    /// `StackConfig::ephemeral_share`): the host's tap picks a queue by
    /// the flow's hash, and does not always send the answers to a
    /// connection the guest opened to the queue it opened it from. The
    /// caller delivers them to that pair; here smoltcp would reset them.
    pub fn take_diverted(&mut self) -> Vec<(u16, Vec<u8>)> {
        core::mem::take(&mut self.diverted)
    }

    /// This stack's share of the ephemeral ports: (index, pairs).
    pub fn ephemeral_share(&self) -> (u16, u16) {
        self.config.ephemeral_share
    }

    /// Whether the address comes from DHCP.
    pub fn uses_dhcp(&self) -> bool {
        self.dhcp.is_some()
    }

    /// The DNS servers queries go to.
    pub fn dns_servers(&self) -> &[IpAddress] {
        &self.dns_servers
    }

    /// Starts a query for `name`'s `record`s (sent at the next poll; each
    /// server is asked again after 1, 2, 4 s and given up after 10 s, then
    /// the next). `AddrNotAvailable` without a DNS server, `InvalidInput`
    /// for a name that is not one (an empty label, a label over 63 bytes,
    /// over 255 bytes in all), `NoBufferSpace` with 8 queries in flight.
    pub fn dns_start(&mut self, name: &str, record: DnsRecord) -> Result<DnsHandle, NetError> {
        if self.dns_servers.is_empty() {
            return Err(NetError::AddrNotAvailable);
        }
        let socket = match self.dns {
            Some(handle) => handle,
            None => {
                let handle = self
                    .sockets
                    .add(dns::Socket::new(&self.dns_servers, (0..DNS_QUERIES).map(|_| None).collect::<Vec<_>>()));
                self.dns = Some(handle);
                handle
            }
        };
        let kind = match record {
            DnsRecord::A => smoltcp::wire::DnsQueryType::A,
            DnsRecord::Aaaa => smoltcp::wire::DnsQueryType::Aaaa,
        };
        let socket = self.sockets.get_mut::<dns::Socket>(socket);
        let query = socket.start_query(self.interface.context(), name, kind).map_err(|error| match error {
            dns::StartQueryError::NoFreeSlot => NetError::NoBufferSpace,
            dns::StartQueryError::InvalidName | dns::StartQueryError::NameTooLong => NetError::InvalidInput,
        })?;
        let handle = DnsHandle(self.next_dns);
        self.next_dns += 1;
        self.dns_queries.push((handle, query));
        Ok(handle)
    }

    /// The source ports of the DNS queries sent since the last call (each
    /// once): smoltcp picks a random one per query. On a multi-queue card
    /// the answer may reach another queue pair, which must hand it here
    /// (as for a UDP socket bound here).
    pub fn take_dns_ports(&mut self) -> Vec<u16> {
        let mut ports = core::mem::take(&mut *self.dns_sent.borrow_mut());
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Whether DNS queries are in flight (started, their answer not yet
    /// taken).
    pub fn dns_pending(&self) -> bool {
        !self.dns_queries.is_empty()
    }

    /// Whether query `handle` has its answer (or failed, or is unknown):
    /// then `dns_result` returns at once.
    pub fn dns_ready(&mut self, handle: DnsHandle) -> bool {
        let Some(position) = self.dns_queries.iter().position(|&(h, _)| h == handle) else { return true };
        let Some(socket) = self.dns else { return true };
        let query = self.dns_queries[position].1;
        let answer = match self.sockets.get_mut::<dns::Socket>(socket).get_query_result(query) {
            Err(dns::GetQueryResultError::Pending) => return false,
            Err(dns::GetQueryResultError::Failed) => Err(NetError::NotFound),
            Ok(addresses) => Ok(addresses.iter().copied().collect()),
        };
        self.dns_queries.swap_remove(position);
        self.dns_answers.push((handle, answer));
        true
    }

    /// The addresses query `handle` found: `WouldBlock` while it waits for
    /// its answer, `NotFound` when the name has no such record or no
    /// server answered (smoltcp does not tell these apart), `BadHandle`
    /// for a query already answered or cancelled.
    pub fn dns_result(&mut self, handle: DnsHandle) -> Result<Vec<IpAddress>, NetError> {
        if !self.dns_ready(handle) {
            return Err(NetError::WouldBlock);
        }
        let position = self.dns_answers.iter().position(|&(h, _)| h == handle).ok_or(NetError::BadHandle)?;
        self.dns_answers.swap_remove(position).1
    }

    /// Forgets query `handle` (its answer, or the query itself: a late
    /// answer is dropped).
    pub fn dns_cancel(&mut self, handle: DnsHandle) {
        self.dns_answers.retain(|&(h, _)| h != handle);
        if let Some(position) = self.dns_queries.iter().position(|&(h, _)| h == handle) {
            let (_, query) = self.dns_queries.swap_remove(position);
            if let Some(socket) = self.dns {
                self.sockets.get_mut::<dns::Socket>(socket).cancel_query(query);
            }
        }
    }

    /// Opens an ICMP socket for echo replies to `ident`.
    pub fn icmp_open(&mut self, ident: u16) -> Result<IcmpHandle, NetError> {
        let buffer = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0u8; 4096]);
        let mut socket = icmp::Socket::new(buffer(), buffer());
        socket.bind(icmp::Endpoint::Ident(ident)).map_err(|_| NetError::AddrInUse)?;
        let handle = self.sockets.add(socket);
        self.open.insert(handle);
        Ok(IcmpHandle(handle))
    }

    /// Sends an echo request (`seq`, `payload`) to `target`.
    pub fn icmp_echo(
        &mut self,
        handle: IcmpHandle,
        target: Ipv4Address,
        ident: u16,
        seq: u16,
        payload: &[u8],
    ) -> Result<(), NetError> {
        use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
        if !self.open.contains(&handle.0) {
            return Err(NetError::BadHandle);
        }
        let checksum = smoltcp::phy::ChecksumCapabilities::default();
        let repr = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: payload };
        let socket = self.sockets.get_mut::<icmp::Socket>(handle.0);
        let buffer = socket.send(repr.buffer_len(), IpAddress::Ipv4(target)).map_err(|error| match error {
            icmp::SendError::BufferFull => NetError::WouldBlock,
            icmp::SendError::Unaddressable => NetError::Unreachable,
        })?;
        repr.emit(&mut Icmpv4Packet::new_unchecked(buffer), &checksum);
        Ok(())
    }

    /// Takes one echo reply: its sequence number, sender and payload size.
    pub fn icmp_reply(&mut self, handle: IcmpHandle) -> Result<(u16, IpAddress, usize), NetError> {
        use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
        if !self.open.contains(&handle.0) {
            return Err(NetError::BadHandle);
        }
        let checksum = smoltcp::phy::ChecksumCapabilities::default();
        let socket = self.sockets.get_mut::<icmp::Socket>(handle.0);
        loop {
            let (data, from) = socket.recv().map_err(|_| NetError::WouldBlock)?;
            let Ok(packet) = Icmpv4Packet::new_checked(data) else { continue };
            if let Ok(Icmpv4Repr::EchoReply { seq_no, data, .. }) = Icmpv4Repr::parse(&packet, &checksum) {
                return Ok((seq_no, from, data.len()));
            }
        }
    }

    /// Whether an ICMP packet waits.
    pub fn icmp_readable(&mut self, handle: IcmpHandle) -> bool {
        !self.open.contains(&handle.0) || self.sockets.get_mut::<icmp::Socket>(handle.0).can_recv()
    }

    /// Closes an ICMP socket.
    pub fn icmp_close(&mut self, handle: IcmpHandle) {
        if self.open.remove(&handle.0) {
            self.sockets.remove(handle.0);
        }
    }

    /// Sockets in use (the set's, less the spare ones).
    pub fn sockets_in_use(&self) -> usize {
        self.sockets.iter().count() - self.spare.len()
    }

    /// Sets smoltcp's per-socket inactivity timeout on a connection: a
    /// peer silent this long gets the connection reset.
    pub fn tcp_set_timeout(&mut self, handle: TcpHandle, timeout_micros: Option<u64>) -> Result<(), NetError> {
        self.tcp(handle)?.set_timeout(timeout_micros.map(Duration::from_micros));
        Ok(())
    }
}

/// How long a closing socket's RST may wait for the peer's MAC after the
/// close deadline reset it: what a neighbour is given (3 requests, 1 s
/// apart) before it is given up.
const RST_ARP_WAIT_MICROS: u64 = 3_000_000;

/// Spare TCP sockets a stack keeps at most (`Stack::spare`).
const MAX_SPARE: usize = 16;

/// Destinations noted for `solicit_neighbours` between two polls, at most.
const MAX_SOLICITING: usize = 64;

/// Ends a connect that got no answer without the RST smoltcp would send
/// (it sends one for any socket closed with a peer set). The peer never
/// synchronized, so RFC 9293 (3.10.4, ABORT in SYN-SENT) and Linux send
/// nothing; and a RST to a host that never answered ARP would wait for
/// its neighbour, asking for it every second and holding back every
/// other socket's ARP requests (smoltcp sends one a second in all).
/// A connection that timed out is ended the same way when its RST is
/// still waiting for the peer's MAC (`sweep_unacknowledged`).
/// smoltcp has no call that only forgets the peer; on a closed socket
/// `listen` does it (it resets the socket first), and `close` leaves
/// `Listen` for `Closed`.
fn forget_connect(socket: &mut tcp::Socket<'static>) {
    let port = socket.local_endpoint().map(|local| local.port).filter(|&port| port != 0);
    socket.abort();
    if port.is_some_and(|port| socket.listen(port).is_ok()) {
        socket.close();
    }
}

/// Removes a UDP socket from the set, with its multicast options (kept by
/// port until then: datagrams a closed socket still sends keep them).
fn remove_udp_socket(sockets: &mut SocketSet<'static>, multicast: &mut crate::device::Multicast, handle: SocketHandle) {
    let port = sockets.get::<udp::Socket>(handle).endpoint().port;
    multicast.ttls.retain(|&(known, _)| known != port);
    multicast.no_loop.retain(|&(known, _)| known != port);
    sockets.remove(handle);
}

/// A TCP socket in `sockets` for a connect or a listen, its options the
/// defaults: the last spare one (closed, its buffers allocated already)
/// if there is one, else a new one (`new_tcp_socket`).
fn take_tcp_socket(
    sockets: &mut SocketSet<'static>,
    spare: &mut Vec<SocketHandle>,
    config: &StackConfig,
    stats: &mut StackStats,
) -> SocketHandle {
    let Some(handle) = spare.pop() else { return sockets.add(new_tcp_socket(config, sockets)) };
    stats.reused += 1;
    let socket = sockets.get_mut::<tcp::Socket>(handle);
    // `connect` and `listen` reset the connection's state; the options
    // stay, so they are set back to the defaults here.
    socket.set_hop_limit(None);
    socket.set_timeout(None);
    socket.set_keep_alive(None);
    configure_tcp_socket(socket, config);
    handle
}

/// A TCP socket for a stack whose sockets are `sockets`: with large
/// buffers while fewer than `tcp_large_sockets` have them (see
/// `StackConfig::tcp_large_bytes`), else small ones.
fn new_tcp_socket(config: &StackConfig, sockets: &SocketSet<'static>) -> tcp::Socket<'static> {
    let large = config.tcp_large_bytes;
    let large_ones = match config.tcp_large_sockets {
        0 => 0,
        _ => sockets
            .iter()
            .filter(|(_, socket)| matches!(socket, smoltcp::socket::Socket::Tcp(tcp) if tcp.recv_capacity() == large))
            .count(),
    };
    let (rx_bytes, tx_bytes) = match large_ones < config.tcp_large_sockets {
        true => (large, large),
        false => (config.tcp_rx_bytes, config.tcp_tx_bytes),
    };
    let rx = tcp::SocketBuffer::new(vec![0u8; rx_bytes]);
    let tx = tcp::SocketBuffer::new(vec![0u8; tx_bytes]);
    let mut socket = tcp::Socket::new(rx, tx);
    configure_tcp_socket(&mut socket, config);
    socket
}

/// Request/response traffic: send each write at once; ACK with the answer
/// when it comes soon enough (`StackConfig::ack_delay_micros`).
fn configure_tcp_socket(socket: &mut tcp::Socket<'static>, config: &StackConfig) {
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(config.ack_delay_micros.map(Duration::from_micros));
}

/// smoltcp's timed upkeep (SLAAC: a router advertisement's new prefix, or
/// an expired one, changes the addresses); true if the addresses changed.
/// smoltcp then flushes its whole neighbour cache (`update_ip_addrs`),
/// IPv4 entries too, and asks for a neighbour at most once a second per
/// interface: a SYN-ACK to a forgotten neighbour within a second of any
/// other request is dropped, and the connection waits for the peer's
/// retransmitted SYN (`/stats` after the SLAAC step of
/// `webserver-tap-cloud-hypervisor-2` took 1.1 s in half the runs, test
/// `a_router_advertisement_does_not_cost_the_gateways_next_connection_a_second`).
fn maintain(interface: &mut Interface, now: Instant) -> bool {
    // A copy without allocating (IFACE_MAX_ADDR_COUNT is 6).
    let mut before = [None; 8];
    for (slot, cidr) in before.iter_mut().zip(interface.ip_addrs()) {
        *slot = Some(*cidr);
    }
    let count = interface.ip_addrs().len();
    interface.poll_maintenance(now);
    let after = interface.ip_addrs();
    after.len() != count || after.iter().zip(&before).any(|(cidr, old)| Some(*cidr) != *old)
}

/// Keeps `listen_pool` sockets in `Listen` on every listening port while
/// the port's pool is below `listen_backlog`, and drops idle ones beyond
/// `listen_pool` once a burst is over; `full` becomes the ports whose
/// backlog is full (no socket left in `Listen`: a SYN for one is dropped).
/// A few handle lookups per listener: cheap enough to run after every
/// received frame.
fn top_up_listeners(
    listeners: &mut [Listener],
    sockets: &mut SocketSet<'static>,
    spare: &mut Vec<SocketHandle>,
    config: &StackConfig,
    full: &mut Vec<u16>,
    stats: &mut StackStats,
) {
    let wanted = config.listen_pool.max(1);
    let backlog = config.listen_backlog.max(wanted);
    full.clear();
    for listener in listeners {
        let idle = |sockets: &SocketSet<'static>, handle: SocketHandle| {
            sockets.get::<tcp::Socket>(handle).state() == tcp::State::Listen
        };
        let mut listening = listener.pool.iter().filter(|&&handle| idle(sockets, handle)).count();
        while listening < wanted && listener.pool.len() < backlog {
            let handle = take_tcp_socket(sockets, spare, config, stats);
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            socket.set_hop_limit(listener.ttl);
            // Fails only on port 0, which is never a listener's.
            if socket.listen(listener.port).is_err() {
                spare.push(handle);
                break;
            }
            listener.pool.push(handle);
            listening += 1;
        }
        while listening > wanted {
            let Some(position) = listener.pool.iter().rposition(|&handle| idle(sockets, handle)) else { break };
            sockets.remove(listener.pool.swap_remove(position));
            listening -= 1;
        }
        if listening == 0 {
            full.push(listener.port);
        }
    }
}
