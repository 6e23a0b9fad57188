//! The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 (text) and 2
//! (binary): a load balancer opens each connection with a header naming the client it
//! accepted. Parsing is pure here (bytes in, verdict out); reading the bytes off the
//! socket without taking more than the header is in `accept.rs`.
//!
//! Strict: anything the specification doesn't allow is an error and the connection is
//! closed. Bounded: a v1 header is at most 107 bytes, a v2 header at most
//! `V2_MAX_PAYLOAD` bytes after its fixed 16.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The v2 signature: a sequence no HTTP request or TLS record starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family, length.
pub const V2_FIXED: usize = 16;
/// The most address and TLV bytes we accept after the fixed part. The specification
/// asks receivers to take at least 216 (a Unix address pair); TLVs from load balancers
/// (AWS VPC endpoint ids, SSL facts, unique ids) stay well inside 4 KiB.
pub const V2_MAX_PAYLOAD: usize = 4096;
const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version a connection's first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    V1,
    V2,
    /// Neither signature: the connection speaks its protocol straight away.
    None,
    /// Too few bytes yet to tell.
    NeedMore,
}

pub fn detect(bytes: &[u8]) -> Detected {
    let is_prefix = |sig: &[u8]| {
        let n = bytes.len().min(sig.len());
        bytes[..n] == sig[..n]
    };
    match (is_prefix(V1_PREFIX), is_prefix(&V2_SIGNATURE)) {
        (false, false) => Detected::None,
        (true, _) if bytes.len() >= V1_PREFIX.len() => Detected::V1,
        (_, true) if bytes.len() >= V2_SIGNATURE.len() => Detected::V2,
        _ => Detected::NeedMore,
    }
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied TCP connection: the client's address and the one it connected to.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The connection is the proxy's own (v2 LOCAL, a health check), or of a kind
    /// without IP addresses (v1 UNKNOWN, v2 UNSPEC or UNIX): keep the socket's address.
    Local,
}

/// How long a header is, once enough of it is there to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Complete(usize),
    NeedMore,
}

/// The length of the v1 header at the start of `bytes` (which start with "PROXY ").
pub fn v1_length(bytes: &[u8]) -> Result<Length, String> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Length::Complete(end + 2)),
        None if bytes.len() >= V1_MAX => Err(format!("v1 header longer than {V1_MAX} bytes")),
        None => Ok(Length::NeedMore),
    }
}

/// The length of the v2 header at the start of `bytes` (which start with the signature).
pub fn v2_length(bytes: &[u8]) -> Result<Length, String> {
    if bytes.len() < V2_FIXED {
        return Ok(Length::NeedMore);
    }
    let payload = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    if payload > V2_MAX_PAYLOAD {
        return Err(format!(
            "v2 header of {payload} bytes after the fixed part (at most {V2_MAX_PAYLOAD})"
        ));
    }
    Ok(Length::Complete(V2_FIXED + payload))
}

/// Parse a complete v1 header: `PROXY TCP4|TCP6 src dst sport dport\r\n` or
/// `PROXY UNKNOWN...\r\n`.
pub fn parse_v1(header: &[u8]) -> Result<Header, String> {
    let line = header
        .strip_suffix(b"\r\n")
        .and_then(|l| l.strip_prefix(V1_PREFIX))
        .ok_or("v1 header without PROXY prefix or CRLF")?;
    let line = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or("v1 header with non-printable bytes")?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The specification: ignore what follows UNKNOWN, use the socket's addresses.
        return Ok(Header::Local);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else {
        return Err(format!("v1 header with {} fields, not 6", fields.len() + 1));
    };
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| "bad v1 source address")?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| "bad v1 destination address")?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| "bad v1 source address")?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| "bad v1 destination address")?
                .into(),
        ),
        _ => return Err("v1 header with an unknown protocol family".into()),
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    })
}

/// A decimal port without leading zeros, 0 to 65535.
fn v1_port(text: &str) -> Result<u16, String> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    match text.parse::<u16>() {
        Ok(port) if digits && canonical => Ok(port),
        _ => Err("bad v1 port".into()),
    }
}

/// Parse a complete v2 header (its length as `v2_length` said).
pub fn parse_v2(header: &[u8]) -> Result<Header, String> {
    if header.len() < V2_FIXED || header[..12] != V2_SIGNATURE {
        return Err("v2 header too short or without signature".into());
    }
    let (version, command) = (header[12] >> 4, header[12] & 0x0f);
    if version != 2 {
        return Err(format!("v2 header with version {version}"));
    }
    let (family, transport) = (header[13] >> 4, header[13] & 0x0f);
    let payload = &header[V2_FIXED..];
    if payload.len() != u16::from_be_bytes([header[14], header[15]]) as usize {
        return Err("v2 header length does not match".into());
    }
    let address_len = match family {
        0 => 0,   // AF_UNSPEC
        1 => 12,  // AF_INET: two addresses of 4, two ports of 2
        2 => 36,  // AF_INET6: 16 + 16 + 2 + 2
        3 => 216, // AF_UNIX: two paths of 108
        _ => return Err(format!("v2 header with address family {family}")),
    };
    if transport > 2 {
        return Err(format!("v2 header with transport {transport}"));
    }
    if payload.len() < address_len {
        return Err("v2 header shorter than its addresses".into());
    }
    check_tlvs(&payload[address_len..])?;
    match command {
        // LOCAL: the proxy's own connection; whatever the addresses say is ignored.
        0 => return Ok(Header::Local),
        1 => {}
        _ => return Err(format!("v2 header with command {command}")),
    }
    if family == 0 || family == 3 {
        return Ok(Header::Local);
    }
    // An HTTP server is reached over a stream: a datagram's addresses are a lie.
    if transport != 1 {
        return Err("v2 PROXY header for a non-stream transport".into());
    }
    let a = payload;
    let (source, destination) = if family == 1 {
        let ip = |i: usize| IpAddr::from([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |i: usize| {
            let octets: [u8; 16] = a[i..i + 16].try_into().expect("16 bytes");
            IpAddr::from(octets)
        };
        let port = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    };
    Ok(Header::Proxied {
        source,
        destination,
    })
}

/// TLVs are skipped, but must tile what follows the addresses exactly: a header whose
/// framing is off is not one we understand.
fn check_tlvs(mut rest: &[u8]) -> Result<(), String> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err("v2 header with a truncated TLV".into());
        }
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        if rest.len() < 3 + len {
            return Err("v2 header with a TLV longer than the header".into());
        }
        rest = &rest[3 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn detects_versions_from_few_bytes() {
        assert_eq!(detect(b""), Detected::NeedMore);
        assert_eq!(detect(b"PRO"), Detected::NeedMore);
        assert_eq!(detect(b"PROXY "), Detected::V1);
        assert_eq!(detect(b"PRI * HTTP/2.0"), Detected::None);
        assert_eq!(detect(b"GET / HTTP/1.1"), Detected::None);
        assert_eq!(detect(b"\x16\x03\x01"), Detected::None);
        assert_eq!(detect(b"\r\n\r\n"), Detected::NeedMore);
        assert_eq!(detect(b"\r\n\r\nGET"), Detected::None);
        assert_eq!(detect(&V2_SIGNATURE), Detected::V2);
    }

    #[test]
    fn v1_valid() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        assert_eq!(v1_length(h).unwrap(), Length::Complete(h.len()));
        assert_eq!(
            parse_v1(h).unwrap(),
            Header::Proxied {
                source: addr("192.0.2.1:56324"),
                destination: addr("198.51.100.2:443"),
            }
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
        assert_eq!(
            parse_v1(h).unwrap(),
            Header::Proxied {
                source: addr("[2001:db8::1]:65535"),
                destination: addr("[2001:db8::2]:0"),
            }
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), Header::Local);
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap(),
            Header::Local
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
            b"PROXY TCP4 192.0.2.\x001 198.51.100.2 1 2\r\n",
            b"PROXY \r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(v1_length(&long).is_err());
        assert_eq!(v1_length(b"PROXY TCP4 1.2").unwrap(), Length::NeedMore);
    }

    #[test]
    fn v2_valid() {
        let mut p = vec![192, 0, 2, 1, 198, 51, 100, 2];
        p.extend_from_slice(&56324u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        // A TLV (PP2_TYPE_AUTHORITY) and a NOOP, skipped.
        p.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b', 0x04, 0, 0]);
        let h = v2(1, 0x11, &p);
        assert_eq!(v2_length(&h).unwrap(), Length::Complete(h.len()));
        assert_eq!(
            parse_v2(&h).unwrap(),
            Header::Proxied {
                source: addr("192.0.2.1:56324"),
                destination: addr("198.51.100.2:443"),
            }
        );
        let mut p = Vec::new();
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0, 80, 1, 187]);
        assert_eq!(
            parse_v2(&v2(1, 0x21, &p)).unwrap(),
            Header::Proxied {
                source: addr("[2001:db8::1]:80"),
                destination: addr("[2001:db8::2]:443"),
            }
        );
        assert_eq!(parse_v2(&v2(0, 0x00, &[])).unwrap(), Header::Local);
        assert_eq!(parse_v2(&v2(0, 0x11, &[0; 12])).unwrap(), Header::Local);
        assert_eq!(parse_v2(&v2(1, 0x00, &[])).unwrap(), Header::Local);
        assert_eq!(parse_v2(&v2(1, 0x31, &[0; 216])).unwrap(), Header::Local);
    }

    #[test]
    fn v2_malformed() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        for bad in [
            bad_version,
            v2(2, 0x11, &[0; 12]), // unknown command
            v2(1, 0x41, &[0; 12]), // unknown family
            v2(1, 0x13, &[0; 12]), // unknown transport
            v2(1, 0x12, &[0; 12]), // datagram
            v2(1, 0x11, &[0; 8]),  // addresses cut short
            v2(1, 0x21, &[0; 12]), // v6 with v4 room
            v2(1, 0x11, &[0; 14]), // a two-byte TLV stub
            v2(1, 0x11, &[[0; 12].as_slice(), &[1, 0, 9, 1]].concat()), // TLV past the end
        ] {
            assert!(parse_v2(&bad).is_err(), "{bad:?}");
        }
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(v2_length(&huge).is_err());
        assert_eq!(v2_length(&V2_SIGNATURE).unwrap(), Length::NeedMore);
    }
}
