//! `toro::net`: TCP and UDP sockets shaped like `std::net`, over TCP/IP
//! instances dedicated to CPUs (docs/net.md).
//!
//! Each instance (a smoltcp stack and its device, `toro_net::Stack`) is
//! owned by one CPU. A socket lives in one instance; a call from a thread
//! on the owner CPU runs directly, a call from another CPU moves the thread
//! to the owner for the call and back (two cross-CPU hops; docs/net.md has
//! the cost). A listener bound to `0.0.0.0` listens on every instance: a
//! thread accepting on a CPU that owns instances gets the connections that
//! arrived there, so a server with one accepting thread per CPU serves each
//! connection on the CPU its packets reach, with no cross-CPU message.
//!
//! Blocking calls block the thread, not the CPU. Errors are `toro::io`
//! errors with std's kinds (`ConnectionRefused`, `ConnectionReset`,
//! `TimedOut`, `AddrInUse`, `WouldBlock`, ...). Host names are resolved by
//! DNS (`dns`: the card's servers); a failed lookup is `NotFound` (std's
//! kind for it is unstable, `Uncategorized`). Differences from std, by
//! design: a read
//! or write timeout reports `TimedOut` (std says the kind is
//! platform-specific); `TcpStream::flush` returns at once, as std's does
//! (each write is already queued for sending).

mod addr;
mod device;
mod dns;
pub(crate) mod instance;
mod tcp;
mod udp;
mod virtio_net;

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

pub use addr::ToSocketAddrs;
pub use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
pub use instance::InstanceCounters;
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use toro_net::device::DeviceStats;
pub use toro_net::StackStats;
pub use udp::UdpSocket;

use crate::io::{self, ErrorKind};
use toro_net::smoltcp::wire::{Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};
use toro_net::{Addressing, MemoryDevice, NetError, StackConfig};

/// Which halves of a connection to shut down (like `std::net::Shutdown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reads: later reads return end of stream.
    Read,
    /// No more writes: a FIN goes to the peer after what is queued.
    Write,
    /// Both.
    Both,
}

/// The loopback instance's MAC (locally administered, RFC 7042 section 2.1).
const LOOPBACK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The loopback interface's address.
const LOOPBACK_CIDR: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(127, 0, 0, 1), 8);
/// The loopback interface's IPv6 address, `::1` (it also has the
/// link-local address every Ethernet instance derives from its MAC).
const LOOPBACK_CIDR_V6: Ipv6Cidr = Ipv6Cidr::new(Ipv6Address::LOCALHOST, 128);

/// Maps the stack's error to std's kind.
pub(crate) fn to_io(error: NetError) -> io::Error {
    let kind = match error {
        NetError::WouldBlock => ErrorKind::WouldBlock,
        NetError::ConnectionReset => ErrorKind::ConnectionReset,
        NetError::ConnectionRefused => ErrorKind::ConnectionRefused,
        NetError::NotConnected | NetError::BadHandle => ErrorKind::NotConnected,
        NetError::BrokenPipe => ErrorKind::BrokenPipe,
        NetError::AddrInUse => ErrorKind::AddrInUse,
        NetError::AddrNotAvailable => ErrorKind::AddrNotAvailable,
        NetError::InvalidInput | NetError::TooLarge => ErrorKind::InvalidInput,
        NetError::Unreachable => ErrorKind::NetworkUnreachable,
        NetError::HostUnreachable => ErrorKind::HostUnreachable,
        NetError::PermissionDenied => ErrorKind::PermissionDenied,
        // Linux's ENOBUFS, which std leaves uncategorized.
        NetError::NoBufferSpace => ErrorKind::OutOfMemory,
        NetError::NotFound => ErrorKind::NotFound,
        NetError::TimedOut => ErrorKind::TimedOut,
    };
    io::Error::from_static(kind, error.message())
}

/// Maps the end of a blocking wait to std's kinds.
pub(crate) fn wait_to_io(error: instance::WaitError) -> io::Error {
    match error {
        instance::WaitError::Net(error) => to_io(error),
        instance::WaitError::TimedOut => io::Error::from_static(ErrorKind::TimedOut, "timed out"),
    }
}

/// A time-to-live as std takes it (`u32`) for the stack: 1-255, else
/// `InvalidInput` (Linux's `IP_TTL` refuses the rest with `EINVAL`).
pub(crate) fn ttl_byte(ttl: u32) -> io::Result<u8> {
    u8::try_from(ttl)
        .ok()
        .filter(|&ttl| ttl != 0)
        .ok_or(io::Error::from_static(ErrorKind::InvalidInput, "a time-to-live is 1 to 255"))
}

/// A timeout as std takes it: `Some(zero)` is `InvalidInput`.
pub(crate) fn timeout_micros(timeout: Option<Duration>) -> io::Result<u64> {
    match timeout {
        Some(duration) if duration.is_zero() => {
            Err(io::Error::from_static(ErrorKind::InvalidInput, "cannot set a 0 duration timeout"))
        }
        Some(duration) => Ok(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX - 1).max(1)),
        None => Ok(u64::MAX),
    }
}

/// The timeout and blocking-mode methods std gives both `TcpStream` and
/// `UdpSocket`, on a type with an `options(&self) -> &Options` method.
macro_rules! socket_options {
    ($socket:ty) => {
        impl $socket {
            /// Limits how long a read waits (`None`: forever); then `TimedOut`.
            pub fn set_read_timeout(&self, timeout: Option<core::time::Duration>) -> crate::io::Result<()> {
                self.options().set_read_timeout(timeout)
            }

            /// Limits how long a write waits for room (`None`: forever).
            pub fn set_write_timeout(&self, timeout: Option<core::time::Duration>) -> crate::io::Result<()> {
                self.options().set_write_timeout(timeout)
            }

            /// The read timeout.
            pub fn read_timeout(&self) -> crate::io::Result<Option<core::time::Duration>> {
                self.options().read_timeout()
            }

            /// The write timeout.
            pub fn write_timeout(&self) -> crate::io::Result<Option<core::time::Duration>> {
                self.options().write_timeout()
            }

            /// Makes calls return `WouldBlock` instead of waiting.
            pub fn set_nonblocking(&self, nonblocking: bool) -> crate::io::Result<()> {
                self.options().set_nonblocking(nonblocking)
            }
        }
    };
}
pub(crate) use socket_options;

/// A socket's timeouts and blocking mode (atomics, so sockets are `Sync`
/// like std's; plain loads and stores, no read-modify-write).
pub(crate) struct Options {
    /// Microseconds; `u64::MAX` for none.
    read_timeout: core::sync::atomic::AtomicU64,
    write_timeout: core::sync::atomic::AtomicU64,
    nonblocking: core::sync::atomic::AtomicBool,
}

impl Options {
    pub(crate) const fn new() -> Self {
        use core::sync::atomic::{AtomicBool, AtomicU64};
        Self {
            read_timeout: AtomicU64::new(u64::MAX),
            write_timeout: AtomicU64::new(u64::MAX),
            nonblocking: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(timeout_micros(timeout)?, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(timeout_micros(timeout)?, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The read timeout in microseconds.
    pub(crate) fn read_micros(&self) -> Option<u64> {
        Some(self.read_timeout.load(core::sync::atomic::Ordering::Relaxed)).filter(|&micros| micros != u64::MAX)
    }

    /// The write timeout in microseconds.
    pub(crate) fn write_micros(&self) -> Option<u64> {
        Some(self.write_timeout.load(core::sync::atomic::Ordering::Relaxed)).filter(|&micros| micros != u64::MAX)
    }

    pub(crate) fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_micros().map(Duration::from_micros))
    }

    pub(crate) fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_micros().map(Duration::from_micros))
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.nonblocking.store(nonblocking, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn nonblocking(&self) -> bool {
        self.nonblocking.load(core::sync::atomic::Ordering::Relaxed)
    }
}

/// Which instances exist and what they serve.
pub(crate) struct Topology {
    /// The loopback instance.
    pub loopback: Option<usize>,
    /// Instances with a NIC (or a NIC's queue pair), card by card.
    pub nics: Vec<usize>,
    /// The cards, in discovery order (`eth0`, `eth1`, ...).
    pub cards: Vec<CardRoute>,
}

/// What `route` knows of one card.
pub(crate) struct CardRoute {
    /// Its instances (one, or one per queue pair).
    pub instances: Vec<usize>,
    /// Its static IPv4 network (none with DHCP).
    pub subnet: Option<Ipv4Cidr>,
    /// Whether it has a static default gateway.
    pub gateway: bool,
}

static TOPOLOGY: crate::once::BootCell<Topology> = crate::once::BootCell::new();

/// How long a `TcpStream::connect` without a timeout waits, microseconds
/// (`toro.tcp_connect_timeout=`; `u64::MAX`: for ever). Written once by the
/// boot CPU in `init`, before any socket call.
static CONNECT_TIMEOUT_MICROS: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(toro_net::DEFAULT_CONNECT_TIMEOUT_SECS * 1_000_000);

/// The timeout of a connect given none (`None`: wait for ever).
pub(crate) fn default_connect_micros() -> Option<u64> {
    let micros = CONNECT_TIMEOUT_MICROS.load(core::sync::atomic::Ordering::Relaxed);
    (micros != u64::MAX).then_some(micros)
}

pub(crate) fn topology() -> &'static Topology {
    TOPOLOGY.get().expect("net::init runs before main")
}

/// QEMU user networking's addressing, the first card's default.
const USER_DEFAULT: Addressing =
    Addressing::Static { address: toro_net::QEMU_USER_ADDRESS, gateway: Some(toro_net::QEMU_USER_GATEWAY) };

/// Card `card`'s addressing, IPv6 set-up and DNS servers from the command
/// line (its stack's `config`); a bad value is reported (naming the word)
/// and the default used.
fn card_settings(name: &str, card: usize, config: StackConfig) -> (Addressing, StackConfig) {
    let words = || crate::system::command_line().split_whitespace();
    // The first card defaults to QEMU user networking's address (no DHCP
    // wait there); the others ask DHCP unless given an address.
    let default = if card == 0 { USER_DEFAULT } else { Addressing::Dhcp };
    let addressing = toro_net::addressing_for(words(), card, default).unwrap_or_else(|error| {
        match default {
            Addressing::Dhcp => log::warn!("net: {name}: {error}; asking DHCP"),
            Addressing::Static { .. } => log::warn!("net: {name}: {error}; using 10.0.2.15/24 via 10.0.2.2"),
        }
        default
    });
    let ipv6 = toro_net::ipv6_for(words(), card).unwrap_or_else(|error| {
        log::warn!("net: {name}: {error}; IPv6: link-local and SLAAC only");
        toro_net::Ipv6Config { slaac: true, ..Default::default() }
    });
    // QEMU user networking's address comes with its DNS server (10.0.2.3).
    let default_dns =
        if addressing == USER_DEFAULT { toro_net::DnsServers::QEMU_USER } else { toro_net::DnsServers::default() };
    let dns = toro_net::dns_for(words(), card).map(|dns| dns.unwrap_or(default_dns)).unwrap_or_else(|error| {
        log::warn!("net: {name}: {error}; DNS servers: {:?}", default_dns.to_vec());
        default_dns
    });
    (addressing, StackConfig { ipv6, dns, ..config })
}

/// Sets up the instances: the loopback on the boot CPU, and for every
/// virtio-net card (`eth0`, `eth1`, ... in discovery order) one instance
/// per queue pair, on the card's owner CPU (cards are spread over the
/// CPUs: `toro_core::dedicate::default_owner`), each card with its own
/// address (`toro.ethK.ip=`). Boot CPU, once, after the schedulers.
pub(crate) fn init() {
    let timeout =
        toro_net::connect_timeout_from(crate::system::command_line().split_whitespace()).unwrap_or_else(|error| {
            log::warn!("net: {error}; connects wait {} s", toro_net::DEFAULT_CONNECT_TIMEOUT_SECS);
            Some(toro_net::DEFAULT_CONNECT_TIMEOUT_SECS * 1_000_000)
        });
    CONNECT_TIMEOUT_MICROS.store(timeout.unwrap_or(u64::MAX), core::sync::atomic::Ordering::Relaxed);
    let user_timeout =
        toro_net::user_timeout_from(crate::system::command_line().split_whitespace()).unwrap_or_else(|error| {
            log::warn!("net: {error}; a silent peer ends a connection after {} s", toro_net::DEFAULT_USER_TIMEOUT_SECS);
            Some(toro_net::DEFAULT_USER_TIMEOUT_SECS * 1_000_000)
        });
    let config = StackConfig {
        random_seed: crate::time::Instant::now().ticks(),
        tcp_user_timeout_micros: user_timeout,
        ..StackConfig::default()
    };
    let mut plans = vec![instance::Plan {
        name: "lo",
        owner: 0,
        device: Box::new(|_| device::Device::Loopback(MemoryDevice::loopback(LOOPBACK_MAC))),
        addressing: Addressing::Static { address: LOOPBACK_CIDR, gateway: None },
        config: StackConfig {
            ipv6: toro_net::Ipv6Config { address: Some(LOOPBACK_CIDR_V6), gateway: None, slaac: false },
            ..config
        },
        siblings: Vec::new(),
    }];
    let found_cards: Vec<crate::virtio::discovery::FoundDevice> = crate::virtio::discovery::devices()
        .iter()
        .filter(|found| found.device_type == crate::virtio::device_type::NET)
        .copied()
        .collect();
    for (word, why) in toro_net::stray_card_words(crate::system::command_line().split_whitespace(), found_cards.len()) {
        log::warn!("net: {word}: {why} ({} cards found); ignored", found_cards.len());
    }
    let mut cards = Vec::new();
    let mut multi_queue = Vec::new();
    for (card, found) in found_cards.into_iter().enumerate() {
        let name: &'static str = Box::leak(alloc::format!("eth{card}").into_boxed_str());
        let (addressing, nic_config) = card_settings(name, card, config);
        let first = plans.len();
        if found.pci.is_some() {
            // One queue pair per CPU where the card has them (DHCP: one
            // pair, one lease; docs/net.md).
            let dhcp = matches!(addressing, Addressing::Dhcp);
            let max_pairs = if dhcp { 1 } else { crate::cpu::count().min(usize::from(virtio_net::MAX_PAIRS)) as u16 };
            match plan_pairs(name, found, max_pairs, addressing, nic_config, &mut plans) {
                Some(started) => multi_queue.push(started),
                None => continue,
            }
        } else {
            plans.push(instance::Plan {
                name,
                owner: found.owner,
                device: Box::new(move |starting| match virtio_net::VirtioNet::open(&found, starting) {
                    Ok(nic) => device::Device::Virtio(Box::new(nic)),
                    Err(error) => {
                        log::error!("virtio-net at {:#x}: {error}; left out", found.address);
                        device::Device::Loopback(MemoryDevice::loopback(LOOPBACK_MAC))
                    }
                }),
                addressing,
                config: nic_config,
                siblings: Vec::new(),
            });
        }
        let (subnet, gateway) = match addressing {
            Addressing::Static { address, gateway } => (Some(address), gateway.is_some()),
            Addressing::Dhcp => (None, false),
        };
        cards.push(CardRoute { instances: (first..plans.len()).collect(), subnet, gateway });
    }
    let nics = cards.iter().flat_map(|card| card.instances.iter().copied()).collect();
    instance::start(plans);
    for (card, address, pairs) in multi_queue {
        start_card(card, address, &pairs);
    }
    TOPOLOGY.set(Topology { loopback: Some(0), nics, cards });
}

/// Plans the instances of virtio-pci card `name`: its device-wide part
/// becomes a service on the card's owner CPU (`eth0.card`), which
/// negotiates and says how many queue pairs there are; pair k is instance
/// `eth0` (k = 0) or `eth0.qK` on CPU (owner + k) mod CPUs, with the
/// card's address and its own share of the ephemeral ports. Returns the
/// card's service, its address (for logs) and its pairs' instances.
#[allow(clippy::type_complexity)]
fn plan_pairs(
    name: &'static str,
    found: crate::virtio::discovery::FoundDevice,
    max_pairs: u16,
    addressing: Addressing,
    config: StackConfig,
    plans: &mut Vec<instance::Plan>,
) -> Option<(crate::service::Handle<virtio_net::Card>, u64, Vec<usize>)> {
    let started = crate::service::Builder::new(alloc::format!("{name}.card"))
        .cpu(found.owner)
        .try_start(move || virtio_net::Card::open(&found, max_pairs));
    let card = match started {
        Ok(card) => card,
        Err(error) => {
            log::error!("virtio-net at {:#x}: {error:?}; left out", found.address);
            return None;
        }
    };
    let pairs = card.call(|card| card.pairs());
    let cpus = crate::cpu::count().max(1);
    let first = plans.len();
    for pair in 0..pairs {
        let pair_name: &'static str =
            if pair == 0 { name } else { Box::leak(alloc::format!("{name}.q{pair}").into_boxed_str()) };
        plans.push(instance::Plan {
            name: pair_name,
            owner: (found.owner + usize::from(pair)) % cpus,
            device: Box::new(move |starting| match virtio_net::VirtioNet::open_pair(card, pair, starting) {
                Ok(nic) => device::Device::Virtio(Box::new(nic)),
                Err(error) => {
                    log::error!("virtio-net at {:#x}: queue pair {pair}: {error}; left out", found.address);
                    device::Device::Loopback(MemoryDevice::loopback(LOOPBACK_MAC))
                }
            }),
            addressing,
            config: StackConfig { ephemeral_share: (pair, pairs), ..config },
            siblings: (first..first + usize::from(pairs)).filter(|&id| id != first + usize::from(pair)).collect(),
        });
    }
    Some((card, found.address, (first..first + usize::from(pairs)).collect()))
}

/// Once every pair's instance runs: the card starts (`DRIVER_OK`, the
/// pairs set), then each pair may transmit (on its CPU).
fn start_card(card: crate::service::Handle<virtio_net::Card>, address: u64, pairs: &[usize]) {
    if let Err(error) = card.call(|card| card.start()) {
        log::error!("virtio-net at {address:#x}: {error}; left out");
        return;
    }
    for &id in pairs {
        instance::on_owner(id, || {
            instance::with_local(id, |instance| {
                instance.stack.device().go_live();
                instance.pump();
            })
        });
    }
}

/// The instance a new outgoing socket to `destination` uses from the
/// current CPU: the loopback for 127/8 (and with no NIC); else the card
/// whose static network holds the destination, else the first card with
/// a default gateway, else the first card; of that card, the queue pair
/// of this CPU, else its first.
pub(crate) fn route(destination: Option<IpAddr>) -> io::Result<usize> {
    let topology = topology();
    let loopback_destination = destination.is_some_and(|address| address.is_loopback());
    let here = crate::cpu::current();
    let nic = pick_card(&topology.cards, destination).and_then(|card| {
        card.instances.iter().copied().find(|&id| instance::owner(id) == here).or(card.instances.first().copied())
    });
    match (loopback_destination, nic, topology.loopback) {
        (false, Some(nic), _) => Ok(nic),
        (_, _, Some(loopback)) => Ok(loopback),
        (true, Some(nic), None) => Ok(nic),
        (_, None, None) => Err(io::Error::from_static(ErrorKind::NetworkDown, "no network interface")),
    }
}

/// The card for `destination` (see [`route`]; `toro_net::route_card`).
fn pick_card(cards: &[CardRoute], destination: Option<IpAddr>) -> Option<&CardRoute> {
    let destination = match destination {
        Some(IpAddr::V4(v4)) => Some(Ipv4Address::from(v4.octets())),
        _ => None,
    };
    toro_net::route_card(cards.iter().map(|card| (card.subnet, card.gateway)), destination).map(|card| &cards[card])
}

/// The instances a bind to `address` listens on: all for an unspecified
/// address, the loopback for 127/8, else those whose address it is.
pub(crate) fn instances_for(address: IpAddr) -> io::Result<Vec<usize>> {
    let topology = topology();
    let all: Vec<usize> = topology.loopback.iter().chain(topology.nics.iter()).copied().collect();
    if address.is_unspecified() {
        return Ok(all);
    }
    if address.is_loopback() {
        return topology
            .loopback
            .map(|id| vec![id])
            .ok_or(io::Error::from_static(ErrorKind::AddrNotAvailable, "no loopback interface"));
    }
    let matching: Vec<usize> = topology
        .nics
        .iter()
        .copied()
        .filter(|&id| {
            instance::on_owner(id, || {
                instance::with_local(id, |i| match address {
                    IpAddr::V4(v4) => i.stack.ipv4() == Some(Ipv4Address::from(v4.octets())),
                    IpAddr::V6(v6) => {
                        let wanted = Ipv6Address::from(v6.octets());
                        i.stack.ipv6_cidrs().iter().any(|cidr| cidr.address() == wanted)
                    }
                })
                .unwrap_or(false)
            })
        })
        .collect();
    if matching.is_empty() {
        Err(io::Error::from_static(ErrorKind::AddrNotAvailable, "not an address of this machine"))
    } else {
        Ok(matching)
    }
}

/// What one instance reports (for `/stats` and tests).
#[derive(Clone, Debug)]
pub struct InterfaceInfo {
    /// `lo`, `eth0`, `eth0.q1`, `eth1`, ...
    pub name: &'static str,
    /// The owner CPU.
    pub cpu: usize,
    /// Its IPv4 address and prefix, once it has one.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// Its default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 addresses and prefixes: link-local, static (`toro.ip6`),
    /// autoconfigured (SLAAC).
    pub ipv6: Vec<(Ipv6Addr, u8)>,
    /// Its DNS servers (`toro.dns=`, a DHCP lease's, or QEMU's 10.0.2.3
    /// with QEMU's default address).
    pub dns: Vec<IpAddr>,
    /// Whether it is configured by DHCP.
    pub dhcp: bool,
    /// The stack's counts.
    pub stack: StackStats,
    /// The device's counts.
    pub device: DeviceStats,
    /// Remote calls, wake-ups, timeouts.
    pub counters: InstanceCounters,
}

/// Every instance's figures (a call to each owner CPU).
pub fn interfaces() -> Vec<InterfaceInfo> {
    (0..instance::count())
        .filter_map(|id| {
            instance::on_owner(id, || {
                instance::with_local(id, |instance| {
                    use toro_net::NetDevice;
                    InterfaceInfo {
                        name: instance.name,
                        cpu: instance.owner,
                        ipv4: instance
                            .stack
                            .ipv4_cidr()
                            .map(|cidr| (Ipv4Addr::from(cidr.address().octets()), cidr.prefix_len())),
                        gateway: instance.stack.gateway().map(|gateway| Ipv4Addr::from(gateway.octets())),
                        ipv6: instance
                            .stack
                            .ipv6_cidrs()
                            .iter()
                            .map(|cidr| (Ipv6Addr::from(cidr.address().octets()), cidr.prefix_len()))
                            .collect(),
                        dns: instance.stack.dns_servers().iter().map(|&server| addr::from_ip_address(server)).collect(),
                        dhcp: instance.stack.uses_dhcp(),
                        stack: instance.stack.stats(),
                        device: instance.stack.device().stats(),
                        counters: instance.counters,
                    }
                })
            })
        })
        .collect()
}

/// Sends one ICMP echo request to `target` and waits up to `timeout` for
/// the reply; returns the round-trip time. Toro's addition (std has no
/// ping; it needs no raw socket here).
pub fn ping(target: Ipv4Addr, sequence: u16, payload: &[u8], timeout: Duration) -> io::Result<Duration> {
    let id = route(Some(IpAddr::V4(target)))?;
    let ident = (crate::time::Instant::now().ticks() as u16) | 1;
    let timeout = timeout_micros(Some(timeout))?;
    instance::on_owner(id, || {
        let handle = instance::with_local(id, |i| i.stack.icmp_open(ident))
            .ok_or(io::Error::from_static(ErrorKind::NotConnected, "no instance"))?
            .map_err(to_io)?;
        let start = crate::time::Instant::now();
        let target_address = Ipv4Address::from(target.octets());
        let sent = instance::wait_on(id, instance::Interest::IcmpReply(handle), Some(timeout), false, |i| {
            i.stack.icmp_echo(handle, target_address, ident, sequence, payload)
        });
        let result = sent.map_err(wait_to_io).and_then(|()| {
            instance::wait_on(id, instance::Interest::IcmpReply(handle), Some(timeout), false, |i| {
                match i.stack.icmp_reply(handle) {
                    Ok((seq, _, _)) if seq == sequence => Ok(()),
                    Ok(_) => Err(NetError::WouldBlock),
                    Err(error) => Err(error),
                }
            })
            .map_err(wait_to_io)
        });
        instance::with_local(id, |i| i.stack.icmp_close(handle));
        result.map(|()| start.elapsed())
    })
}
