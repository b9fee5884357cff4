//! How a stack gets its address: `toro.ip=ADDR/PREFIX toro.gw=ADDR` on the
//! kernel command line, DHCP when no address is given, `toro.dhcp=1` to
//! force it.

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
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadAddress => "toro.ip must be ADDR/PREFIX, e.g. 10.0.2.15/24",
            Self::BadGateway => "toro.gw must be an IPv4 address, e.g. 10.0.2.2",
            Self::BadDhcp => "toro.dhcp must be 0 or 1",
            Self::BadAddress6 => "toro.ip6 must be a unicast ADDR/PREFIX, e.g. fd00::2/64",
            Self::BadGateway6 => "toro.gw6 must be a unicast IPv6 address, e.g. fd00::1 or fe80::1",
            Self::BadSlaac => "toro.slaac must be 0 or 1",
        })
    }
}

/// Reads the addressing from `key=value` words; `default` applies when
/// neither `toro.ip` nor `toro.dhcp=1` is given.
pub fn addressing_from<'a>(
    words: impl IntoIterator<Item = &'a str>,
    default: Addressing,
) -> Result<Addressing, ConfigError> {
    let mut address = None;
    let mut gateway = None;
    let mut dhcp = None;
    for word in words {
        let Some((key, value)) = word.split_once('=') else { continue };
        match key {
            "toro.ip" => address = Some(parse_cidr(value).ok_or(ConfigError::BadAddress)?),
            "toro.gw" => gateway = Some(value.parse::<Ipv4Address>().map_err(|_| ConfigError::BadGateway)?),
            "toro.dhcp" => {
                dhcp = Some(match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(ConfigError::BadDhcp),
                })
            }
            _ => {}
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

/// Reads the IPv6 set-up from `key=value` words.
pub fn ipv6_from<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Ipv6Config, ConfigError> {
    let mut config = Ipv6Config { slaac: true, ..Ipv6Config::default() };
    let unicast = |address: &Ipv6Address| !address.is_multicast() && !address.is_unspecified();
    for word in words {
        let Some((key, value)) = word.split_once('=') else { continue };
        match key {
            "toro.ip6" => {
                let (address, prefix) = value.split_once('/').ok_or(ConfigError::BadAddress6)?;
                let address: Ipv6Address = address.parse().map_err(|_| ConfigError::BadAddress6)?;
                let prefix: u8 = prefix.parse().map_err(|_| ConfigError::BadAddress6)?;
                if prefix > 128 || !unicast(&address) || address.is_loopback() {
                    return Err(ConfigError::BadAddress6);
                }
                config.address = Some(Ipv6Cidr::new(address, prefix));
            }
            "toro.gw6" => {
                let gateway: Ipv6Address = value.parse().map_err(|_| ConfigError::BadGateway6)?;
                if !unicast(&gateway) {
                    return Err(ConfigError::BadGateway6);
                }
                config.gateway = Some(gateway);
            }
            "toro.slaac" => {
                config.slaac = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(ConfigError::BadSlaac),
                }
            }
            _ => {}
        }
    }
    Ok(config)
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
    fn link_local_is_the_modified_eui_64() {
        // QEMU's default MAC, as Linux derives it.
        let address = link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(address, Ipv6Cidr::new("fe80::5054:ff:fe12:3456".parse().unwrap(), 64));
    }
}
