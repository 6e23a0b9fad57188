//! Trust lists: `--forwarded-allow-ips` and `--proxy-allow-from`. A comma-separated list
//! of IP addresses, CIDR networks (v4 and v6), `*` (trust everything), and literals.
//!
//! Literals are what uvicorn keeps for entries that are not addresses: they match a hop
//! of X-Forwarded-For / Forwarded written the same way (a proxy that writes a name
//! there). Two literals also name Unix-socket peers, which have no address: `unix:`
//! (any Unix-socket peer, as proposed for uvicorn in its PR #2760) and the socket's
//! own path (`/run/app.sock`, as uvicorn's help text suggests).
//!
//! Unlike uvicorn, which silently keeps a mistyped network as a literal that never
//! matches, anything that looks like an address or a network but isn't one is an
//! error, reported before any worker starts. As gunicorn (24.1.1), a network with
//! host bits set (`10.0.0.1/8`) is refused too: it usually means a typo.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A parsed trust list. Matching costs no allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustList {
    everything: bool,
    addresses: Vec<IpAddr>,
    networks: Vec<Network>,
    literals: Vec<Box<str>>,
    /// `unix:` was listed: every Unix-socket peer is trusted.
    unix: bool,
}

/// The literal that trusts every peer connected through a Unix socket.
pub const UNIX_LITERAL: &str = "unix:";

impl TrustList {
    /// Parse a comma-separated list. The error says which entry is wrong and why.
    pub fn parse(text: &str) -> Result<TrustList, String> {
        let mut list = TrustList::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                list.everything = true;
            } else if entry == UNIX_LITERAL {
                list.unix = true;
            } else if entry.starts_with('/') || entry.starts_with(UNIX_LITERAL) {
                // A socket path: a literal, never a network.
                list.literals.push(entry.into());
            } else if let Some((addr, prefix)) = entry.split_once('/') {
                list.networks.push(parse_network(entry, addr, prefix)?);
            } else if let Some(ip) = parse_ip(entry) {
                list.addresses.push(ip);
            } else if looks_like_address(entry) {
                return Err(format!("{entry:?} is not a valid IP address"));
            } else if entry.bytes().all(is_literal_byte) {
                list.literals.push(entry.into());
            } else {
                return Err(format!(
                    "{entry:?} is not an IP address, a network or a name"
                ));
            }
        }
        Ok(list)
    }

    pub fn trusts_everything(&self) -> bool {
        self.everything
    }

    pub fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.everything
            || self.addresses.contains(&ip)
            || self.networks.iter().any(|n| n.contains(ip))
    }

    /// A hop written as a name (not an address) in a forwarded header.
    pub fn trusts_literal(&self, name: &str) -> bool {
        self.everything || self.literals.iter().any(|l| l.as_ref() == name)
    }

    /// The peer of a connection accepted on a Unix socket listening at `path`.
    pub fn trusts_unix_peer(&self, path: Option<&str>) -> bool {
        self.everything
            || self.unix
            || path.is_some_and(|p| self.literals.iter().any(|l| l.as_ref() == p))
    }

    /// The peer of a connection: its address (TCP, or what a PROXY header said), or
    /// the Unix socket it came through.
    pub fn trusts_peer(&self, client: Option<std::net::SocketAddr>, unix: Option<&str>) -> bool {
        match client {
            Some(addr) => self.trusts_ip(addr.ip()),
            None => self.trusts_unix_peer(unix),
        }
    }
}

/// Parse an address as it may appear in a list or a header: IPv4-mapped IPv6
/// addresses count as the IPv4 address they carry, so `::ffff:10.0.0.1` matches
/// `10.0.0.0/8` as it does on a dual-stack socket.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(canonical)
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_network(entry: &str, addr: &str, prefix: &str) -> Result<Network, String> {
    let bad = |why: &str| format!("{entry:?} is not a valid network: {why}");
    // Not canonicalised: `::ffff:0:0/96` is a network of IPv6 addresses.
    let base: IpAddr = addr
        .parse()
        .map_err(|_| bad("not an IP address before '/'"))?;
    let max = if base.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix.parse() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
    };
    let network = Network { base, prefix };
    let masked = match base {
        IpAddr::V4(b) => {
            let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(b) & mask))
        }
        IpAddr::V6(b) => {
            let mask = u128::MAX.checked_shl(128 - prefix as u32).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(b) & mask))
        }
    };
    if masked != base {
        return Err(bad(&format!(
            "host bits are set (did you mean {masked}/{prefix}?)"
        )));
    }
    Ok(network)
}

/// Digits and dots only, or hex digits and colons with a colon: meant as an address.
fn looks_like_address(entry: &str) -> bool {
    let v4ish = entry.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let v6ish = entry.contains(':')
        && entry
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.' || b == b'[' || b == b']');
    v4ish || v6ish
}

/// Names, obfuscated identifiers (`_hidden`) and `unknown`.
pub fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_networks_and_star() {
        let t = TrustList::parse("127.0.0.1, 10.0.0.0/8,2001:db8::/32 , ::1").unwrap();
        assert!(t.trusts_ip(ip("127.0.0.1")));
        assert!(t.trusts_ip(ip("10.255.1.2")));
        assert!(!t.trusts_ip(ip("11.0.0.1")));
        assert!(t.trusts_ip(ip("2001:db8:1::5")));
        assert!(!t.trusts_ip(ip("2001:db9::5")));
        assert!(t.trusts_ip(ip("::1")));
        assert!(t.trusts_ip(ip("::ffff:10.1.2.3")), "v4-mapped counts as v4");
        assert!(!t.trusts_unix_peer(Some("/tmp/s")));
        let star = TrustList::parse("*").unwrap();
        assert!(star.trusts_ip(ip("203.0.113.9")));
        assert!(star.trusts_unix_peer(None));
        assert!(star.trusts_literal("anything"));
        let all = TrustList::parse("0.0.0.0/0,::/0").unwrap();
        assert!(all.trusts_ip(ip("203.0.113.9")) && all.trusts_ip(ip("2001:db8::1")));
    }

    #[test]
    fn unix_peers_and_literals() {
        let t = TrustList::parse("unix:,proxy-1").unwrap();
        assert!(t.trusts_unix_peer(None));
        assert!(t.trusts_literal("proxy-1"));
        assert!(!t.trusts_literal("proxy-2"));
        let t = TrustList::parse("/run/app.sock").unwrap();
        assert!(t.trusts_unix_peer(Some("/run/app.sock")));
        assert!(!t.trusts_unix_peer(Some("/run/other.sock")));
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "abc/8",
            "10.0.0.1/8",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "300.1.1.1",
            "1.2.3",
            "fe80::zz",
            "a b",
            "10.0.0.0/8/8",
        ] {
            let err = TrustList::parse(bad).unwrap_err();
            assert!(err.contains(bad.split('/').next().unwrap()), "{bad}: {err}");
        }
        assert!(TrustList::parse("").unwrap() == TrustList::default());
    }
}
