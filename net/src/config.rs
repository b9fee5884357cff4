//! How a stack gets its address: `toro.ip=ADDR/PREFIX toro.gw=ADDR` on the
//! kernel command line, DHCP when no address is given, `toro.dhcp=1` to
//! force it. Those words are the first card's (`eth0`; `toro.eth0.ip=...`
//! says the same); card K's are `toro.ethK.ip=`, `toro.ethK.gw=`,
//! `toro.ethK.dhcp=`, `toro.ethK.ip6=`, `toro.ethK.gw6=`, `toro.ethK.slaac=`,
//! `toro.ethK.dns=` (DNS servers: [`dns_for`]).

use smoltcp::wire::{Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

/// Where the interface's IPv4 address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// A fixed address and optional default gateway.
    Static {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default gateway.
        gateway: Option<Ipv4Address>,
    },
    /// Ask a DHCPv4 server.
    Dhcp,
}

/// QEMU user networking's guest address (slirp's default 10.0.2.15/24).
pub const QEMU_USER_ADDRESS: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24);
/// QEMU user networking's gateway (slirp's default).
pub const QEMU_USER_GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

/// A command-line value that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `toro.ip` is not `A.B.C.D/PREFIX` with a prefix of 0-32.
    BadAddress,
    /// `toro.gw` is not `A.B.C.D`.
    BadGateway,
    /// `toro.dhcp` is not `0` or `1`.
    BadDhcp,
    /// `toro.ip6` is not `ADDR/PREFIX` with a prefix of 0-128, or is not
    /// a unicast address.
    BadAddress6,
    /// `toro.gw6` is not a unicast IPv6 address.
    BadGateway6,
    /// `toro.slaac` is not `0` or `1`.
    BadSlaac,
    /// `toro.dns` is not 1 to 4 comma-separated IP addresses.
    BadDns,
}

impl ConfigError {
    /// The setting at fault and what it must be.
    fn parts(self) -> (&'static str, &'static str) {
        match self {
            Self::BadAddress => ("ip", "ADDR/PREFIX, e.g. 10.0.2.15/24"),
            Self::BadGateway => ("gw", "an IPv4 address, e.g. 10.0.2.2"),
            Self::BadDhcp => ("dhcp", "0 or 1"),
            Self::BadAddress6 => ("ip6", "a unicast ADDR/PREFIX, e.g. fd00::2/64"),
            Self::BadGateway6 => ("gw6", "a unicast IPv6 address, e.g. fd00::1 or fe80::1"),
            Self::BadSlaac => ("slaac", "0 or 1"),
            Self::BadDns => ("dns", "1 to 4 comma-separated IP addresses, e.g. 10.0.2.3 or 10.0.2.3,fd00::3"),
        }
    }
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        CardError { card: 0, error: *self }.fmt(f)
    }
}

/// A bad value in card `card`'s words: says `toro.ethK.SETTING` (card 0:
/// `toro.SETTING`) and what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardError {
    /// The card (`eth0`, `eth1`, ...).
    pub card: usize,
    /// What is wrong.
    pub error: ConfigError,
}

impl core::fmt::Display for CardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (setting, rule) = self.error.parts();
        match self.card {
            0 => write!(f, "toro.{setting} must be {rule}"),
            card => write!(f, "toro.eth{card}.{setting} must be {rule}"),
        }
    }
}

/// The settings a card takes (`toro.ethK.SETTING=`).
pub const CARD_SETTINGS: [&str; 7] = ["ip", "gw", "dhcp", "ip6", "gw6", "slaac", "dns"];

/// Whose setting a command-line key is: `Some((K, "ip"))` for
/// `toro.ethK.ip`, `Some((0, "ip"))` for `toro.ip` (any other `toro.X`
/// too: the caller picks the settings it knows), `None` for keys that
/// are not `toro.` ones. `Err` for a `toro.eth...` key whose card is not
/// a number (or has no `.SETTING`).
fn card_setting(key: &str) -> Option<Result<(usize, &str), ()>> {
    let rest = key.strip_prefix("toro.")?;
    let Some(card_and_setting) = rest.strip_prefix("eth") else {
        return Some(Ok((0, rest)));
    };
    let Some((card, setting)) = card_and_setting.split_once('.') else {
        return Some(Err(()));
    };
    if card.is_empty() || !card.bytes().all(|byte| byte.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(card.parse::<usize>().map(|card| (card, setting)).map_err(|_| ()))
}

/// The value of card `card`'s `setting` in `word`, if the word sets it.
fn value_for<'a>(word: &'a str, card: usize, setting: &str) -> Option<&'a str> {
    let (key, value) = word.split_once('=')?;
    match card_setting(key)? {
        Ok((named, named_setting)) if named == card && named_setting == setting => Some(value),
        _ => None,
    }
}

/// The `toro.ethK.` words that apply to no card of the `cards` there
/// are, each with why: a card that does not exist, a setting cards do
/// not take, a card that is not a number. (`toro.SETTING` words are
/// card 0's and not reported.)
pub fn stray_card_words<'a>(
    words: impl IntoIterator<Item = &'a str>,
    cards: usize,
) -> impl Iterator<Item = (&'a str, &'static str)> {
    words.into_iter().filter_map(move |word| {
        let key = word.split_once('=').map_or(word, |(key, _)| key);
        if !key.starts_with("toro.eth") {
            return None;
        }
        match card_setting(key)? {
            Err(()) => Some((word, "the card must be a number: toro.ethK.SETTING=VALUE")),
            Ok((_, setting)) if !CARD_SETTINGS.contains(&setting) => {
                Some((word, "unknown setting; cards take ip, gw, dhcp, ip6, gw6, slaac, dns"))
            }
            Ok((card, _)) if card >= cards => Some((word, "there is no such card")),
            Ok(_) => None,
        }
    })
}

/// Reads the first card's addressing from `key=value` words; `default`
/// applies when neither `toro.ip` nor `toro.dhcp=1` is given.
pub fn addressing_from<'a>(
    words: impl IntoIterator<Item = &'a str>,
    default: Addressing,
) -> Result<Addressing, ConfigError> {
    addressing_for(words, 0, default).map_err(|error| error.error)
}

/// Reads card `card`'s addressing (`toro.ethK.ip=`, `.gw=`, `.dhcp=`; for
/// card 0 also `toro.ip=`, ...; the last word wins); `default` applies
/// when it gets neither an address nor `dhcp=1`.
pub fn addressing_for<'a>(
    words: impl IntoIterator<Item = &'a str>,
    card: usize,
    default: Addressing,
) -> Result<Addressing, CardError> {
    let error = |error| CardError { card, error };
    let mut address = None;
    let mut gateway = None;
    let mut dhcp = None;
    for word in words {
        if let Some(value) = value_for(word, card, "ip") {
            address = Some(parse_cidr(value).ok_or(error(ConfigError::BadAddress))?);
        } else if let Some(value) = value_for(word, card, "gw") {
            gateway = Some(value.parse::<Ipv4Address>().map_err(|_| error(ConfigError::BadGateway))?);
        } else if let Some(value) = value_for(word, card, "dhcp") {
            dhcp = Some(match value {
                "1" => true,
                "0" => false,
                _ => return Err(error(ConfigError::BadDhcp)),
            });
        }
    }
    Ok(match (dhcp, address) {
        (Some(true), _) => Addressing::Dhcp,
        (_, Some(address)) => Addressing::Static { address, gateway },
        (Some(false), None) | (None, None) => match default {
            Addressing::Static { address, gateway: default_gateway } => {
                Addressing::Static { address, gateway: gateway.or(default_gateway) }
            }
            Addressing::Dhcp => Addressing::Dhcp,
        },
    })
}

/// Which card an outgoing connection to `destination` leaves by, of
/// cards given as (static network, has a default gateway) in order: the
/// first whose network holds the destination, else the first with a
/// gateway, else the first. `None` with no card.
pub fn route_card(
    cards: impl Iterator<Item = (Option<Ipv4Cidr>, bool)> + Clone,
    destination: Option<Ipv4Address>,
) -> Option<usize> {
    let on_link = cards.clone().position(|(subnet, _)| match (subnet, destination) {
        (Some(subnet), Some(destination)) => subnet.contains_addr(&destination),
        _ => false,
    });
    on_link.or_else(|| cards.clone().position(|(_, gateway)| gateway)).or_else(|| cards.clone().next().map(|_| 0))
}

/// One instance of a UDP socket bound to the unspecified address, as
/// [`udp_member`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpMember {
    /// The loopback (127.0.0.0/8).
    Loopback,
    /// A card's instance: its static IPv4 network (none with DHCP) and
    /// whether it has a static default gateway.
    Card {
        /// Its static network.
        subnet: Option<Ipv4Cidr>,
        /// Whether it has a default gateway.
        gateway: bool,
    },
}

/// Which member of a UDP socket bound to `0.0.0.0` (an instance for the
/// loopback and one per card) a datagram to `destination` leaves by, and
/// so whose address is its source, as Linux picks the source of such a
/// socket by the route to the destination: the loopback for 127.0.0.0/8
/// and `::1`; else the card whose static network holds the destination,
/// else the first card with a default gateway, else the first card
/// ([`route_card`], the rule of outgoing connections); with no card, the
/// loopback. `None` with no member.
pub fn udp_member(members: &[UdpMember], destination: core::net::IpAddr) -> Option<usize> {
    let loopback = members.iter().position(|member| *member == UdpMember::Loopback);
    if destination.is_loopback() && loopback.is_some() {
        return loopback;
    }
    let cards = members.iter().enumerate().filter_map(|(index, member)| match *member {
        UdpMember::Card { subnet, gateway } => Some((index, subnet, gateway)),
        UdpMember::Loopback => None,
    });
    let destination = match destination {
        core::net::IpAddr::V4(v4) => Some(Ipv4Address::from(v4.octets())),
        core::net::IpAddr::V6(_) => None,
    };
    route_card(cards.clone().map(|(_, subnet, gateway)| (subnet, gateway)), destination)
        .and_then(|card| cards.clone().nth(card))
        .map(|(index, _, _)| index)
        .or(loopback)
}

/// An interface's IPv6 set-up. Every Ethernet interface also gets its
/// link-local address (fe80::/64 with the EUI-64 of its MAC, RFC 4291
/// appendix A), whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Config {
    /// A static address (`toro.ip6=ADDR/PREFIX`).
    pub address: Option<Ipv6Cidr>,
    /// The default router (`toro.gw6=ADDR`).
    pub gateway: Option<Ipv6Address>,
    /// Stateless autoconfiguration from router advertisements (RFC 4862;
    /// `toro.slaac=0` turns it off; on by default, as on Linux).
    pub slaac: bool,
}

/// Reads the first card's IPv6 set-up from `key=value` words.
pub fn ipv6_from<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Ipv6Config, ConfigError> {
    ipv6_for(words, 0).map_err(|error| error.error)
}

/// Reads card `card`'s IPv6 set-up (`toro.ethK.ip6=`, `.gw6=`, `.slaac=`;
/// for card 0 also `toro.ip6=`, ...).
pub fn ipv6_for<'a>(words: impl IntoIterator<Item = &'a str>, card: usize) -> Result<Ipv6Config, CardError> {
    let error = |error| CardError { card, error };
    let mut config = Ipv6Config { slaac: true, ..Ipv6Config::default() };
    let unicast = |address: &Ipv6Address| !address.is_multicast() && !address.is_unspecified();
    for word in words {
        if let Some(value) = value_for(word, card, "ip6") {
            let bad = || error(ConfigError::BadAddress6);
            let (address, prefix) = value.split_once('/').ok_or_else(bad)?;
            let address: Ipv6Address = address.parse().map_err(|_| bad())?;
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            if prefix > 128 || !unicast(&address) || address.is_loopback() {
                return Err(bad());
            }
            config.address = Some(Ipv6Cidr::new(address, prefix));
        } else if let Some(value) = value_for(word, card, "gw6") {
            let gateway: Ipv6Address = value.parse().map_err(|_| error(ConfigError::BadGateway6))?;
            if !unicast(&gateway) {
                return Err(error(ConfigError::BadGateway6));
            }
            config.gateway = Some(gateway);
        } else if let Some(value) = value_for(word, card, "slaac") {
            config.slaac = match value {
                "1" => true,
                "0" => false,
                _ => return Err(error(ConfigError::BadSlaac)),
            };
        }
    }
    Ok(config)
}

/// A card's DNS servers: at most 4 (smoltcp's resolver asks them in
/// order); `Copy`, so it rides in `StackConfig`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsServers {
    servers: [Option<smoltcp::wire::IpAddress>; 4],
}

impl DnsServers {
    /// QEMU user networking's DNS server (slirp's 10.0.2.3), the first
    /// card's when it has QEMU's default address.
    pub const QEMU_USER: DnsServers =
        DnsServers { servers: [Some(smoltcp::wire::IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 3))), None, None, None] };

    /// The servers, in order.
    pub fn to_vec(&self) -> alloc::vec::Vec<smoltcp::wire::IpAddress> {
        self.servers.iter().flatten().copied().collect()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.servers[0].is_none()
    }
}

/// Reads card `card`'s DNS servers (`toro.ethK.dns=A[,B...]`, for card 0
/// also `toro.dns=`; the last word wins): `None` when no word sets them
/// (the caller's default applies: DHCP's, or QEMU's for its default
/// address). Unicast IPv4 or IPv6 addresses, 1 to 4.
pub fn dns_for<'a>(words: impl IntoIterator<Item = &'a str>, card: usize) -> Result<Option<DnsServers>, CardError> {
    let bad = || CardError { card, error: ConfigError::BadDns };
    let mut found = None;
    for word in words {
        let Some(value) = value_for(word, card, "dns") else { continue };
        let mut servers = DnsServers::default();
        for (count, text) in value.split(',').enumerate() {
            let address: core::net::IpAddr = text.parse().map_err(|_| bad())?;
            if count == servers.servers.len() || address.is_unspecified() || address.is_multicast() {
                return Err(bad());
            }
            servers.servers[count] = Some(match address {
                core::net::IpAddr::V4(v4) => smoltcp::wire::IpAddress::Ipv4(Ipv4Address::from(v4.octets())),
                core::net::IpAddr::V6(v6) => smoltcp::wire::IpAddress::Ipv6(Ipv6Address::from(v6.octets())),
            });
        }
        found = Some(servers);
    }
    Ok(found)
}

/// How long `TcpStream::connect` without a timeout waits for an answer
/// to its SYN by default: what Linux's 6 SYN retransmissions take (1, 2,
/// 4, 8, 16, 32 and 64 s), after which std's connect there fails with
/// `TimedOut`. smoltcp retransmits a SYN for ever.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 127;

/// How long a TCP connection's peer may stay silent while data waits for
/// its ACK before the connection ends with `TimedOut`, by default: about
/// what Linux's 15 retransmissions take (`tcp_retries2`: 924.6 s, the
/// figure `tcp(7)` gives). smoltcp retransmits for ever.
pub const DEFAULT_USER_TIMEOUT_SECS: u64 = 925;

/// The longest timeout a `toro.tcp_*_timeout=` word takes (a day).
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// A bad `toro.tcp_connect_timeout=` or `toro.tcp_user_timeout=` value:
/// the setting's name (`tcp_connect_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadTimeout(pub &'static str);

impl core::fmt::Display for BadTimeout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "toro.{} must be SECONDS (1-{MAX_TIMEOUT_SECS}) or off", self.0)
    }
}

/// Reads `toro.tcp_connect_timeout=SECONDS|off` (the last word wins): the
/// microseconds a connect without a timeout waits, `None` for `off` (for
/// ever); [`DEFAULT_CONNECT_TIMEOUT_SECS`] when no word sets it.
pub fn connect_timeout_from<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Option<u64>, BadTimeout> {
    timeout_from(words, "tcp_connect_timeout", DEFAULT_CONNECT_TIMEOUT_SECS)
}

/// Reads `toro.tcp_user_timeout=SECONDS|off` (the last word wins): the
/// microseconds a connection's peer may stay silent while data waits for
/// its ACK (Linux's `TCP_USER_TIMEOUT`, for every connection), `None` for
/// `off` (retransmit for ever); [`DEFAULT_USER_TIMEOUT_SECS`] when no word
/// sets it.
pub fn user_timeout_from<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Option<u64>, BadTimeout> {
    timeout_from(words, "tcp_user_timeout", DEFAULT_USER_TIMEOUT_SECS)
}

fn timeout_from<'a>(
    words: impl IntoIterator<Item = &'a str>,
    setting: &'static str,
    default_secs: u64,
) -> Result<Option<u64>, BadTimeout> {
    let mut timeout = Some(default_secs * 1_000_000);
    for word in words {
        let Some(value) = word.strip_prefix("toro.").and_then(|rest| rest.strip_prefix(setting)) else { continue };
        let Some(value) = value.strip_prefix('=') else { continue };
        timeout = match value {
            "off" => None,
            seconds => match seconds.parse::<u64>() {
                Ok(seconds) if (1..=MAX_TIMEOUT_SECS).contains(&seconds) => Some(seconds * 1_000_000),
                _ => return Err(BadTimeout(setting)),
            },
        };
    }
    Ok(timeout)
}

/// The link-local address of the interface with `mac`: fe80::/64 and the
/// modified EUI-64 interface identifier (RFC 4291 appendix A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Cidr {
    let id = [mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    let mut octets = [0u8; 16];
    octets[0] = 0xfe;
    octets[1] = 0x80;
    octets[8..].copy_from_slice(&id);
    Ipv6Cidr::new(Ipv6Address::from(octets), 64)
}

fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Address = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then(|| Ipv4Cidr::new(address, prefix))
}

/// A socket address as three words (a `UdpSocket`'s peer, kept in a
/// `toro_core::seq_words::SeqWords<3>` so that every CPU reads it without
/// a lock): the IPv6 address (or, for IPv4, 0 and the address), then a
/// word of [`PEER_SET`], [`PEER_V6`], the scope id << 16 and the port. The
/// flow label is not kept: Linux reports 0 for a connected peer's too.
/// [`socket_address_from_words`] undoes it; all zeros is "no address".
pub fn socket_address_words(address: core::net::SocketAddr) -> [u64; 3] {
    match address {
        core::net::SocketAddr::V4(v4) => [0, u64::from(v4.ip().to_bits()), PEER_SET | u64::from(v4.port())],
        core::net::SocketAddr::V6(v6) => {
            let bits = v6.ip().to_bits();
            let flags = PEER_SET | PEER_V6 | (u64::from(v6.scope_id()) << 16) | u64::from(v6.port());
            [(bits >> 64) as u64, bits as u64, flags]
        }
    }
}

/// The address [`socket_address_words`] made, `None` for all zeros.
pub fn socket_address_from_words(words: [u64; 3]) -> Option<core::net::SocketAddr> {
    let [high, low, flags] = words;
    if flags & PEER_SET == 0 {
        return None;
    }
    let port = flags as u16;
    Some(match flags & PEER_V6 != 0 {
        false => core::net::SocketAddr::new(core::net::Ipv4Addr::from_bits(low as u32).into(), port),
        true => {
            let ip = core::net::Ipv6Addr::from_bits(u128::from(high) << 64 | u128::from(low));
            core::net::SocketAddr::V6(core::net::SocketAddrV6::new(ip, port, 0, (flags >> 16) as u32))
        }
    })
}

/// Marks the words of [`socket_address_words`] as holding an address.
pub const PEER_SET: u64 = 1 << 63;
/// Marks the words of [`socket_address_words`] as holding an IPv6 address.
pub const PEER_V6: u64 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Addressing = Addressing::Static { address: QEMU_USER_ADDRESS, gateway: Some(QEMU_USER_GATEWAY) };

    #[test]
    fn static_address_and_gateway() {
        let got = addressing_from(["toro.ip=192.168.7.2/24", "toro.gw=192.168.7.1"], Addressing::Dhcp).unwrap();
        assert_eq!(
            got,
            Addressing::Static {
                address: Ipv4Cidr::new(Ipv4Address::new(192, 168, 7, 2), 24),
                gateway: Some(Ipv4Address::new(192, 168, 7, 1))
            }
        );
    }

    #[test]
    fn default_applies_without_words_and_dhcp_overrides() {
        assert_eq!(addressing_from(["toro.log=info"], USER).unwrap(), USER);
        assert_eq!(addressing_from(["toro.dhcp=1"], USER).unwrap(), Addressing::Dhcp);
        assert_eq!(addressing_from([], Addressing::Dhcp).unwrap(), Addressing::Dhcp);
    }

    #[test]
    fn bad_values_are_errors() {
        assert_eq!(addressing_from(["toro.ip=10.0.2.15"], USER), Err(ConfigError::BadAddress));
        assert_eq!(addressing_from(["toro.ip=10.0.2.15/33"], USER), Err(ConfigError::BadAddress));
        assert_eq!(addressing_from(["toro.ip=300.0.2.15/24"], USER), Err(ConfigError::BadAddress));
        assert_eq!(addressing_from(["toro.gw=x"], USER), Err(ConfigError::BadGateway));
        assert_eq!(addressing_from(["toro.dhcp=yes"], USER), Err(ConfigError::BadDhcp));
    }

    #[test]
    fn ipv6_static_gateway_and_slaac() {
        let got = ipv6_from(["toro.ip6=fd00::2/64", "toro.gw6=fe80::1", "toro.slaac=0"]).unwrap();
        assert_eq!(got.address, Some(Ipv6Cidr::new("fd00::2".parse().unwrap(), 64)));
        assert_eq!(got.gateway, Some("fe80::1".parse().unwrap()));
        assert!(!got.slaac);
        assert_eq!(ipv6_from(["toro.ip=10.0.2.15/24"]).unwrap(), Ipv6Config { slaac: true, ..Ipv6Config::default() });
    }

    #[test]
    fn bad_ipv6_values_are_errors() {
        for word in [
            "toro.ip6=fd00::2",
            "toro.ip6=fd00::2/129",
            "toro.ip6=ff02::1/64",
            "toro.ip6=::/0",
            "toro.ip6=::1/128",
            "toro.ip6=fd00:::2/64",
            "toro.ip6=/64",
            "toro.ip6=10.0.2.15/24",
        ] {
            assert_eq!(ipv6_from([word]), Err(ConfigError::BadAddress6), "{word}");
        }
        for word in ["toro.gw6=ff02::2", "toro.gw6=::", "toro.gw6=fe80::1%eth0", "toro.gw6="] {
            assert_eq!(ipv6_from([word]), Err(ConfigError::BadGateway6), "{word}");
        }
        assert_eq!(ipv6_from(["toro.slaac=yes"]), Err(ConfigError::BadSlaac));
    }

    #[test]
    fn each_card_reads_its_own_words() {
        let words = [
            "toro.ip=172.31.0.2/24",
            "toro.gw=172.31.0.1",
            "toro.eth1.ip=172.31.1.2/24",
            "toro.eth2.dhcp=1",
            "toro.eth1.ip6=fd00:1::2/64",
            "toro.eth1.slaac=0",
        ];
        let cidr = |a, b, c, d| Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), 24);
        assert_eq!(
            addressing_for(words, 0, Addressing::Dhcp).unwrap(),
            Addressing::Static { address: cidr(172, 31, 0, 2), gateway: Some(Ipv4Address::new(172, 31, 0, 1)) }
        );
        assert_eq!(
            addressing_for(words, 1, Addressing::Dhcp).unwrap(),
            Addressing::Static { address: cidr(172, 31, 1, 2), gateway: None }
        );
        assert_eq!(addressing_for(words, 2, USER).unwrap(), Addressing::Dhcp);
        assert_eq!(addressing_for(words, 3, Addressing::Dhcp).unwrap(), Addressing::Dhcp);
        assert_eq!(addressing_for(words, 3, USER).unwrap(), USER);
        // `toro.eth0.` is the first card's too; the later word wins.
        assert_eq!(
            addressing_from(["toro.ip=10.0.0.2/24", "toro.eth0.ip=10.9.0.2/24"], Addressing::Dhcp).unwrap(),
            Addressing::Static { address: cidr(10, 9, 0, 2), gateway: None }
        );
        let six = ipv6_for(words, 1).unwrap();
        assert_eq!(six.address, Some(Ipv6Cidr::new("fd00:1::2".parse().unwrap(), 64)));
        assert!(!six.slaac);
        assert_eq!(ipv6_for(words, 0).unwrap(), Ipv6Config { slaac: true, ..Ipv6Config::default() });
        assert_eq!(stray_card_words(words, 3).count(), 0);
    }

    #[test]
    fn a_bad_value_is_its_own_cards_error_and_names_its_word() {
        let words = ["toro.eth1.ip=172.31.1.2", "toro.eth1.gw=nowhere", "toro.eth2.ip6=ff02::1/64"];
        let bad = addressing_for(words, 1, Addressing::Dhcp).unwrap_err();
        assert_eq!(bad, CardError { card: 1, error: ConfigError::BadAddress });
        assert_eq!(bad.to_string(), "toro.eth1.ip must be ADDR/PREFIX, e.g. 10.0.2.15/24");
        assert_eq!(addressing_for(words, 0, USER), Ok(USER), "card 0 is not touched by eth1's words");
        let gateway = addressing_for(["toro.eth1.gw=nowhere"], 1, USER).unwrap_err();
        assert_eq!(gateway.to_string(), "toro.eth1.gw must be an IPv4 address, e.g. 10.0.2.2");
        assert_eq!(addressing_for(["toro.eth1.dhcp=2"], 1, USER).unwrap_err().error, ConfigError::BadDhcp);
        assert_eq!(ipv6_for(words, 2).unwrap_err(), CardError { card: 2, error: ConfigError::BadAddress6 });
        assert_eq!(ipv6_for(["toro.eth3.slaac=no"], 3).unwrap_err().to_string(), "toro.eth3.slaac must be 0 or 1");
        // Card 0's messages name the short form, as before.
        assert_eq!(ConfigError::BadDhcp.to_string(), "toro.dhcp must be 0 or 1");
        assert_eq!(addressing_for(["toro.eth0.dhcp=x"], 0, USER).unwrap_err().to_string(), "toro.dhcp must be 0 or 1");
        // Keys naming no card number are nobody's, and reported as stray.
        let nobody =
            ["toro.ethX.ip=bad", "toro.eth.ip=bad", "toro.eth-1.ip=bad", "toro.eth99999999999999999999.ip=bad"];
        for word in nobody {
            assert_eq!(addressing_for([word], 0, USER), Ok(USER), "{word}");
            assert_eq!(addressing_for([word], 1, USER), Ok(USER), "{word}");
        }
        let stray: Vec<_> = stray_card_words(nobody, 2).map(|(word, _)| word).collect();
        assert_eq!(stray, nobody);
    }

    #[test]
    fn words_for_missing_cards_or_unknown_settings_are_stray() {
        let words = [
            "toro.eth1.ip=172.31.1.2/24",
            "toro.eth2.ip=172.31.2.2/24",
            "toro.eth1.mtu=9000",
            "toro.eth1",
            "toro.ip=10.0.0.2/24",
            "toro.log=info",
            "toro.eth0.gw=10.0.0.1",
        ];
        let stray: Vec<_> = stray_card_words(words, 2).collect();
        assert_eq!(
            stray,
            [
                ("toro.eth2.ip=172.31.2.2/24", "there is no such card"),
                ("toro.eth1.mtu=9000", "unknown setting; cards take ip, gw, dhcp, ip6, gw6, slaac, dns"),
                ("toro.eth1", "the card must be a number: toro.ethK.SETTING=VALUE"),
            ]
        );
        assert_eq!(stray_card_words(words, 3).count(), 2);
    }

    #[test]
    fn connections_leave_by_the_card_on_their_network() {
        let net = |a, b, c| Some(Ipv4Cidr::new(Ipv4Address::new(a, b, c, 2), 24));
        let cards = [(net(172, 31, 0), false), (net(172, 31, 1), true), (None, false)];
        let route = |destination: Option<Ipv4Address>| route_card(cards.iter().copied(), destination);
        assert_eq!(route(Some(Ipv4Address::new(172, 31, 0, 1))), Some(0));
        assert_eq!(route(Some(Ipv4Address::new(172, 31, 1, 1))), Some(1));
        // Off every network: the card with a gateway.
        assert_eq!(route(Some(Ipv4Address::new(8, 8, 8, 8))), Some(1));
        assert_eq!(route(None), Some(1));
        // No gateway anywhere: the first card.
        let no_gateway = [(net(172, 31, 0), false), (net(172, 31, 1), false)];
        assert_eq!(route_card(no_gateway.iter().copied(), Some(Ipv4Address::new(9, 9, 9, 9))), Some(0));
        assert_eq!(route_card(core::iter::empty(), None), None);
    }

    #[test]
    fn datagrams_leave_by_the_member_on_their_network() {
        let net = |a, b, c| Some(Ipv4Cidr::new(Ipv4Address::new(a, b, c, 2), 24));
        let v4 = |a, b, c, d| core::net::IpAddr::V4(core::net::Ipv4Addr::new(a, b, c, d));
        // The loopback, card 0 with the gateway, card 1 on its own network.
        let members = [
            UdpMember::Loopback,
            UdpMember::Card { subnet: net(172, 31, 0), gateway: true },
            UdpMember::Card { subnet: net(172, 31, 1), gateway: false },
        ];
        assert_eq!(udp_member(&members, v4(127, 0, 0, 1)), Some(0));
        assert_eq!(udp_member(&members, v4(127, 9, 9, 9)), Some(0));
        assert_eq!(udp_member(&members, core::net::IpAddr::V6(core::net::Ipv6Addr::LOCALHOST)), Some(0));
        // A peer on card 1's network is answered by card 1, whatever the order.
        assert_eq!(udp_member(&members, v4(172, 31, 1, 1)), Some(2));
        assert_eq!(udp_member(&members, v4(172, 31, 0, 1)), Some(1));
        // Off every network: the card with the gateway, not the first listed.
        let gateway_second = [
            UdpMember::Card { subnet: net(172, 31, 0), gateway: false },
            UdpMember::Loopback,
            UdpMember::Card { subnet: net(172, 31, 1), gateway: true },
        ];
        assert_eq!(udp_member(&gateway_second, v4(8, 8, 8, 8)), Some(2));
        assert_eq!(udp_member(&gateway_second, v4(172, 31, 0, 7)), Some(0));
        // IPv6 off the loopback: the gateway's card.
        assert_eq!(udp_member(&gateway_second, core::net::IpAddr::V6("fd00:31::1".parse().unwrap())), Some(2));
        // No gateway: the first card; a DHCP card (no network) only so.
        let dhcp = [UdpMember::Loopback, UdpMember::Card { subnet: None, gateway: false }];
        assert_eq!(udp_member(&dhcp, v4(10, 0, 2, 2)), Some(1));
        // No card: the loopback, for any destination; no member: none.
        assert_eq!(udp_member(&[UdpMember::Loopback], v4(10, 0, 2, 2)), Some(0));
        assert_eq!(udp_member(&[], v4(127, 0, 0, 1)), None);
    }

    #[test]
    fn link_local_is_the_modified_eui_64() {
        // QEMU's default MAC, as Linux derives it.
        let address = link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(address, Ipv6Cidr::new("fe80::5054:ff:fe12:3456".parse().unwrap(), 64));
    }

    #[test]
    fn socket_addresses_survive_their_words() {
        for text in ["10.0.2.2:7", "0.0.0.0:0", "255.255.255.255:65535", "[::1]:9", "[fe80::1%4]:53", "[::]:0"] {
            let address: core::net::SocketAddr = text.parse().unwrap();
            assert_eq!(socket_address_from_words(socket_address_words(address)), Some(address), "{text}");
        }
        assert_eq!(socket_address_from_words([0; 3]), None);
    }

    proptest::proptest! {
        /// Any address and port (a flow label is dropped, as documented).
        #[test]
        fn any_socket_address_survives_its_words(bits: u128, v4: u32, port: u16, scope: u32, flow: u32, six: bool) {
            let address = match six {
                false => core::net::SocketAddr::new(core::net::Ipv4Addr::from_bits(v4).into(), port),
                true => core::net::SocketAddr::V6(core::net::SocketAddrV6::new(core::net::Ipv6Addr::from_bits(bits), port, flow, scope)),
            };
            let back = socket_address_from_words(socket_address_words(address)).unwrap();
            proptest::prop_assert_eq!(back.ip(), address.ip());
            proptest::prop_assert_eq!(back.port(), port);
            if let (core::net::SocketAddr::V6(back), core::net::SocketAddr::V6(sent)) = (back, address) {
                proptest::prop_assert_eq!((back.scope_id(), back.flowinfo()), (sent.scope_id(), 0));
            }
        }
    }

    #[test]
    fn dns_servers_come_from_the_command_line() {
        let v4 = |text: &str| smoltcp::wire::IpAddress::Ipv4(text.parse().unwrap());
        let v6 = |text: &str| smoltcp::wire::IpAddress::Ipv6(text.parse().unwrap());
        assert_eq!(dns_for(["toro.ip=10.0.2.15/24"], 0), Ok(None));
        let one = dns_for(["toro.dns=10.0.2.3"], 0).unwrap().unwrap();
        assert_eq!(one.to_vec(), [v4("10.0.2.3")]);
        assert_eq!(one, DnsServers::QEMU_USER);
        let two = dns_for(["toro.eth1.dns=172.31.1.1,fd00:31::1", "toro.dns=9.9.9.9"], 1).unwrap().unwrap();
        assert_eq!(two.to_vec(), [v4("172.31.1.1"), v6("fd00:31::1")]);
        assert_eq!(dns_for(["toro.dns=1.1.1.1", "toro.dns=8.8.8.8"], 0).unwrap().unwrap().to_vec(), [v4("8.8.8.8")]);
        for bad in [
            "toro.dns=",
            "toro.dns=10.0.2",
            "toro.dns=1.1.1.1,",
            "toro.dns=0.0.0.0",
            "toro.dns=224.0.0.1",
            "toro.dns=1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4,5.5.5.5",
            "toro.dns=example.com",
        ] {
            let error = dns_for([bad], 0).unwrap_err();
            assert_eq!(error.error, ConfigError::BadDns, "{bad}");
            assert!(error.to_string().starts_with("toro.dns must be"), "{error}");
        }
        assert!(DnsServers::default().is_empty() && !one.is_empty());
        assert_eq!(stray_card_words(["toro.eth0.dns=1.1.1.1"], 1).count(), 0, "a card setting");
    }

    #[test]
    fn the_connect_timeout_comes_from_the_command_line() {
        let default = Some(DEFAULT_CONNECT_TIMEOUT_SECS * 1_000_000);
        assert_eq!(connect_timeout_from(["toro.log=info"]), Ok(default));
        assert_eq!(connect_timeout_from(["toro.tcp_connect_timeout=5"]), Ok(Some(5_000_000)));
        assert_eq!(connect_timeout_from(["toro.tcp_connect_timeout=off"]), Ok(None));
        assert_eq!(
            connect_timeout_from(["toro.tcp_connect_timeout=off", "toro.tcp_connect_timeout=2"]),
            Ok(Some(2_000_000))
        );
        for bad in ["0", "-1", "1.5", "", "86401", "99999999999999999999", "OFF", "5s"] {
            let word = format!("toro.tcp_connect_timeout={bad}");
            assert_eq!(connect_timeout_from([word.as_str()]), Err(BadTimeout("tcp_connect_timeout")), "{bad:?}");
        }
        assert_eq!(
            BadTimeout("tcp_connect_timeout").to_string(),
            "toro.tcp_connect_timeout must be SECONDS (1-86400) or off"
        );
    }

    #[test]
    fn the_user_timeout_comes_from_the_command_line() {
        let default = Some(DEFAULT_USER_TIMEOUT_SECS * 1_000_000);
        assert_eq!(user_timeout_from(["toro.tcp_connect_timeout=5"]), Ok(default), "the other setting");
        assert_eq!(user_timeout_from(["toro.tcp_user_timeout=3"]), Ok(Some(3_000_000)));
        assert_eq!(user_timeout_from(["toro.tcp_user_timeout=off"]), Ok(None));
        assert_eq!(user_timeout_from(["toro.tcp_user_timeoutx=3"]), Ok(default), "a longer word is not it");
        assert_eq!(user_timeout_from(["toro.tcp_user_timeout=0"]), Err(BadTimeout("tcp_user_timeout")));
        assert_eq!(
            connect_timeout_from(["toro.tcp_user_timeout=0"]),
            Ok(Some(DEFAULT_CONNECT_TIMEOUT_SECS * 1_000_000))
        );
        assert_eq!(
            BadTimeout("tcp_user_timeout").to_string(),
            "toro.tcp_user_timeout must be SECONDS (1-86400) or off"
        );
    }
}
