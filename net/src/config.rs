//! How a stack gets its address: `toro.ip=ADDR/PREFIX toro.gw=ADDR` on the
//! kernel command line, DHCP when no address is given, `toro.dhcp=1` to
//! force it.

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

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
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadAddress => "toro.ip must be ADDR/PREFIX, e.g. 10.0.2.15/24",
            Self::BadGateway => "toro.gw must be an IPv4 address, e.g. 10.0.2.2",
            Self::BadDhcp => "toro.dhcp must be 0 or 1",
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
}
