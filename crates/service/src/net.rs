//! Networks in CIDR notation: the trusted reverse proxies, and the client
//! networks exempt from the per-address lockout.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8`, `fd00::/8`; a bare address
/// is a network of one (`/32`, `/128`). IPv4-mapped IPv6 addresses
/// (`::ffff:10.1.2.3`, as a dual-stack listener reports IPv4 peers) are
/// taken as the IPv4 address they carry, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    /// The first address of the network (host bits cleared).
    addr: IpAddr,
    prefix: u8,
}

/// The address as IPv4 when it is an IPv4-mapped IPv6 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        (!0u128 << (width - prefix)) & if width == 128 { !0 } else { (1u128 << width) - 1 }
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, width) = bits(self.addr);
        let (b, _) = bits(ip);
        let m = mask(self.prefix, width);
        a & m == b & m
    }

    /// `127.0.0.0/8` and `::1`: a reverse proxy on this machine.
    pub fn loopback() -> Vec<Network> {
        vec![
            Network { addr: IpAddr::from([127, 0, 0, 0]), prefix: 8 },
            Network { addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), prefix: 128 },
        ]
    }

    /// Parse a list, naming the first entry that is not a network.
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<Network>, String> {
        items.iter().map(|s| s.as_ref().parse::<Network>()).collect()
    }
}

/// Whether any of `networks` holds `ip`.
pub fn any_contains(networks: &[Network], ip: IpAddr) -> bool {
    networks.iter().any(|n| n.contains(ip))
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let s = s.trim();
        let bad = || format!("`{s}` is not a network: expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let mapped = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        let ip = canonical(ip);
        let width = bits(ip).1;
        let prefix = match prefix {
            None => width,
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| bad())?;
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                let p = if mapped { p.checked_sub(96).ok_or_else(bad)? } else { p };
                if p > width {
                    return Err(bad());
                }
                p
            }
        };
        let (a, _) = bits(ip);
        let first = a & mask(prefix, width);
        let addr = match ip {
            IpAddr::V4(_) => IpAddr::from((first as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(first.to_be_bytes()),
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_hold_their_addresses_only() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peers are IPv4");
        assert!(!n.contains(ip("fd00::1")));
        let host: Network = "192.168.1.7".parse().unwrap();
        assert!(host.contains(ip("192.168.1.7")) && !host.contains(ip("192.168.1.8")));
        assert_eq!(host.to_string(), "192.168.1.7/32");
        let v6: Network = "fd00:ab::/32".parse().unwrap();
        assert!(v6.contains(ip("fd00:ab::1")) && !v6.contains(ip("fd00:ac::1")) && !v6.contains(ip("10.0.0.1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::2")));
        assert!("::/0".parse::<Network>().unwrap().contains(ip("2001:db8::1")));
        // Host bits are cleared; mapped networks become IPv4 networks.
        assert_eq!("10.1.2.3/8".parse::<Network>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("::ffff:10.0.0.0/104".parse::<Network>().unwrap().to_string(), "10.0.0.0/8");
        assert!(Network::loopback().iter().any(|n| n.contains(ip("127.0.0.1"))));
        assert!(Network::loopback().iter().any(|n| n.contains(ip("::1"))));
    }

    #[test]
    fn bad_networks_are_named() {
        for bad in ["", "10.0.0.0/33", "fd00::/129", "10.0.0/8", "example.com", "10.0.0.0/x", "::ffff:10.0.0.0/8"] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(e.contains("is not a network"), "{bad}: {e}");
        }
        assert_eq!(
            Network::parse_list(&["10.0.0.0/8", "nope"]).unwrap_err(),
            "`nope` is not a network: expected an address or address/prefix, e.g. 10.0.0.0/8 or fd00::/8"
        );
    }
}
