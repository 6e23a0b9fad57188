//! Forwarded headers: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! RFC 7239 `Forwarded`, resolved into the client, scheme and host the app sees.
//!
//! Only a connection whose peer is trusted (--forwarded-allow-ips) is looked at. Each
//! proxy appends one hop, so the hops are walked from the right, the nearest proxy
//! first: trusted hops are skipped, and the first untrusted one is the client. A client
//! that sends its own header therefore only adds hops to the left of the ones our
//! proxies add, and can't choose what we see. If every hop is trusted, the leftmost is
//! the client (as uvicorn does).
//!
//! The scheme and host come from the same hop as the client: in `Forwarded` they sit
//! in the same element; the X-Forwarded-* lists are aligned from the right (each proxy
//! appends one element to each). A hop without them takes the nearest one to its right.
//!
//! When a request carries both families, X-Forwarded-* wins and `Forwarded` is ignored
//! (docs/proxies.md says why). A header with anything malformed in it is ignored
//! whole, never an error response.

use super::trust::{self, TrustList};
use bytes::Bytes;
use http::HeaderName;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

/// What the forwarded headers of one request changed. Made only when they changed
/// something, so a request without them costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub client: Option<Client>,
    /// Some(true): the client used https (wss for a WebSocket).
    pub secure: Option<bool>,
    /// The Host the app sees (--forwarded-host only).
    pub host: Option<Bytes>,
}

/// The client a proxy named: an address, or a name it wrote instead of one
/// (`unknown`, an obfuscated `_identifier`), passed on as uvicorn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    Ip(SocketAddr),
    Name(Box<str>, u16),
}

impl Client {
    pub fn host_and_port(&self) -> (Cow<'_, str>, u16) {
        match self {
            Client::Ip(a) => (Cow::Owned(a.ip().to_string()), a.port()),
            Client::Name(n, p) => (Cow::Borrowed(n), *p),
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Ip(a) => a.fmt(f),
            Client::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// One hop as written in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node<'a> {
    Ip(IpAddr, u16),
    Name(&'a str, u16),
}

impl Node<'_> {
    fn trusted(&self, trust: &TrustList) -> bool {
        match *self {
            Node::Ip(ip, _) => trust.trusts_ip(ip),
            Node::Name(name, _) => trust.trusts_literal(name),
        }
    }

    fn to_client(self) -> Client {
        match self {
            Node::Ip(ip, port) => Client::Ip(SocketAddr::new(ip, port)),
            Node::Name(name, port) => Client::Name(name.into(), port),
        }
    }
}

/// --forwarded-allow-ips and --forwarded-host, per worker.
#[derive(Debug)]
pub struct ForwardedSettings {
    pub trust: TrustList,
    pub host: bool,
}

const XFF: &str = "x-forwarded-for";
const XFP: &str = "x-forwarded-proto";
const XFH: &str = "x-forwarded-host";
const FORWARDED: &str = "forwarded";

/// Resolve the forwarded headers of a request from a trusted peer. With
/// --forwarded-host the `host` header is rewritten in `headers`.
pub fn resolve(
    settings: &ForwardedSettings,
    headers: &mut Vec<(HeaderName, Bytes)>,
) -> Option<Box<Forwarded>> {
    let (mut x_family, mut forwarded) = (false, false);
    for (name, _) in headers.iter() {
        match name.as_str() {
            XFF | XFP => x_family = true,
            XFH if settings.host => x_family = true,
            FORWARDED => forwarded = true,
            _ => {}
        }
    }
    let result = if x_family {
        from_x_forwarded(settings, headers)
    } else if forwarded {
        from_forwarded(settings, headers)
    } else {
        return None;
    };
    if result.client.is_none() && result.secure.is_none() && result.host.is_none() {
        return None;
    }
    if let Some(host) = &result.host {
        set_host(headers, host.clone());
    }
    Some(Box::new(result))
}

fn set_host(headers: &mut Vec<(HeaderName, Bytes)>, host: Bytes) {
    match headers.iter_mut().find(|(n, _)| *n == http::header::HOST) {
        Some((_, value)) => *value = host,
        None => headers.insert(0, (http::header::HOST, host)),
    }
}

/// Every comma-separated element of every field called `name`, trimmed, in order.
fn list_elements<'a>(headers: &'a [(HeaderName, Bytes)], name: &str) -> Option<Vec<&'a str>> {
    let mut out = Vec::new();
    for (n, value) in headers {
        if n.as_str() == name {
            // Header values are bytes; anything that isn't ASCII text is garbage here.
            let text = std::str::from_utf8(value).ok().filter(|t| t.is_ascii())?;
            out.extend(text.split(',').map(str::trim));
        }
    }
    Some(out)
}

fn from_x_forwarded(settings: &ForwardedSettings, headers: &[(HeaderName, Bytes)]) -> Forwarded {
    let trust = &settings.trust;
    // Each list is all-or-nothing: one malformed element and the header is ignored.
    let hops: Option<Vec<Node>> = list_elements(headers, XFF)
        .and_then(|elements| elements.into_iter().map(parse_x_node).collect());
    let hops = hops.unwrap_or_default();
    // How many hops, counted from the right, were trusted and passed.
    let (client, passed) = match walk(hops.len(), |i| hops[i].trusted(trust)) {
        Some(i) => (Some(hops[i].to_client()), hops.len() - 1 - i),
        None => (None, 0),
    };
    // The element of a list of `len` that belongs to the client's hop.
    let aligned = |len: usize| (len > 0).then(|| (len - 1).saturating_sub(passed));
    let secure = list_elements(headers, XFP).and_then(|protos| {
        let protos: Vec<bool> = protos
            .iter()
            .map(|p| parse_scheme(p))
            .collect::<Option<_>>()?;
        aligned(protos.len()).map(|i| protos[i])
    });
    let host = if settings.host {
        list_elements(headers, XFH).and_then(|hosts| {
            if !hosts.iter().all(|h| valid_host(h)) {
                return None;
            }
            let i = aligned(hosts.len())?;
            Some(Bytes::copy_from_slice(hosts[i].as_bytes()))
        })
    } else {
        None
    };
    Forwarded {
        client,
        secure,
        host,
    }
}

/// Walk `n` hops from the right; the index of the client, or None without hops.
/// `trusted(i)` says whether hop i is a trusted proxy; a hop that names nobody (a
/// `Forwarded` element without `for=`) is not, and stops the walk.
fn walk(n: usize, trusted: impl Fn(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    // Every hop a trusted proxy: the leftmost is as far as we can see.
    Some((0..n).rev().find(|&i| !trusted(i)).unwrap_or(0))
}

/// An element of X-Forwarded-For: an address with an optional port (`1.2.3.4:80`,
/// `[::1]:80`, `::1`), or a name (`unknown`, `_hidden`, a host name).
fn parse_x_node(text: &str) -> Option<Node<'_>> {
    if text.starts_with('[') {
        return parse_bracketed(text);
    }
    if let Some(ip) = trust::parse_ip(text) {
        return Some(Node::Ip(ip, 0));
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, parse_port(port)?),
        None => (text, 0),
    };
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return Some(Node::Ip(IpAddr::V4(v4), port));
    }
    valid_name(host).then_some(Node::Name(host, port))
}

/// `[IPv6]` or `[IPv6]:port`; an obfuscated port (`_p`) counts as no port.
fn parse_bracketed(text: &str) -> Option<Node<'_>> {
    let end = text.find(']')?;
    let ip = trust::parse_ip(&text[1..end]).filter(|_| text[1..end].contains(':'))?;
    let port = match &text[end + 1..] {
        "" => 0,
        rest => parse_node_port(rest.strip_prefix(':')?)?,
    };
    Some(Node::Ip(ip, port))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// RFC 7239 node-port: a port or an obfuscated port, which tells us nothing (0).
fn parse_node_port(text: &str) -> Option<u16> {
    if is_obfuscated(text) {
        return Some(0);
    }
    parse_port(text)
}

fn is_obfuscated(text: &str) -> bool {
    text.len() > 1 && text.starts_with('_') && text.bytes().all(trust::is_literal_byte)
}

fn valid_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.bytes().all(trust::is_literal_byte)
}

/// http, https, ws or wss in any case: Some(true) if the client's connection was secure.
fn parse_scheme(text: &str) -> Option<bool> {
    ["http", "ws"]
        .iter()
        .any(|s| text.eq_ignore_ascii_case(s))
        .then_some(false)
        .or_else(|| {
            ["https", "wss"]
                .iter()
                .any(|s| text.eq_ignore_ascii_case(s))
                .then_some(true)
        })
}

/// A Host value: a name or IPv4 address, or a bracketed IPv6 address, with an
/// optional port. Anything else could smuggle separators into URLs the app builds.
fn valid_host(text: &str) -> bool {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => {
                let inside = &text[1..end];
                if inside.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (&text[..=end], &text[end + 1..])
            }
            None => return false,
        }
    } else {
        match text.find(':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, ""),
        }
    };
    let port_ok = port.is_empty() || port.strip_prefix(':').and_then(parse_port).is_some();
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~')));
    host_ok && port_ok
}

/// One element of `Forwarded`: a hop's for=, proto= and host=.
#[derive(Debug, Default, PartialEq, Eq)]
struct Element<'a> {
    node: Option<Node<'a>>,
    secure: Option<bool>,
    host: Option<Cow<'a, str>>,
}

fn from_forwarded(settings: &ForwardedSettings, headers: &[(HeaderName, Bytes)]) -> Forwarded {
    let mut elements = Vec::new();
    for (name, value) in headers {
        if name.as_str() == FORWARDED {
            match parse_forwarded(value) {
                Some(mut more) => elements.append(&mut more),
                None => return Forwarded::none(),
            }
        }
    }
    let trusted = |i: usize| elements[i].node.is_some_and(|n| n.trusted(&settings.trust));
    let Some(i) = walk(elements.len(), trusted) else {
        return Forwarded::none();
    };
    // The client's hop, or the trusted one to its right when it names nobody.
    let client = elements[i..]
        .iter()
        .find_map(|e| e.node)
        .map(Node::to_client);
    let secure = elements[i..].iter().find_map(|e| e.secure);
    let host = settings
        .host
        .then(|| elements[i..].iter().find_map(|e| e.host.as_ref()))
        .flatten()
        .map(|h| Bytes::copy_from_slice(h.as_bytes()));
    Forwarded {
        client,
        secure,
        host,
    }
}

impl Forwarded {
    fn none() -> Forwarded {
        Forwarded {
            client: None,
            secure: None,
            host: None,
        }
    }
}

/// RFC 7230 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse one `Forwarded` field into its elements; None if anything is malformed.
/// Unquoted values may also hold `:`, `[` and `]` (`for=[::1]:80`, which some proxies
/// write without the quotes RFC 7239 asks for): they can't be mistaken for separators.
fn parse_forwarded(value: &[u8]) -> Option<Vec<Element<'_>>> {
    let text = std::str::from_utf8(value).ok()?;
    let bytes = text.as_bytes();
    let mut elements = Vec::new();
    let mut element = Element::default();
    let mut seen = [false; 3];
    // Pairs in this element: an element without any is an empty list element, which
    // the list syntax allows and which is no hop.
    let mut pairs = 0;
    let mut pos = 0;
    let skip_ows = |pos: &mut usize| {
        while *pos < bytes.len() && matches!(bytes[*pos], b' ' | b'\t') {
            *pos += 1;
        }
    };
    loop {
        skip_ows(&mut pos);
        if pos < bytes.len() && bytes[pos] != b',' && bytes[pos] != b';' {
            // A pair: token "=" value.
            let start = pos;
            while pos < bytes.len() && is_tchar(bytes[pos]) {
                pos += 1;
            }
            let name = &text[start..pos];
            if name.is_empty() || bytes.get(pos) != Some(&b'=') {
                return None;
            }
            pos += 1;
            let value: Cow<str> = if bytes.get(pos) == Some(&b'"') {
                let (v, next) = parse_quoted(text, pos)?;
                pos = next;
                v
            } else {
                let start = pos;
                while pos < bytes.len() && (is_tchar(bytes[pos]) || b":[]".contains(&bytes[pos])) {
                    pos += 1;
                }
                if start == pos {
                    return None;
                }
                Cow::Borrowed(&text[start..pos])
            };
            pairs += 1;
            let slot = ["for", "proto", "host"]
                .iter()
                .position(|k| name.eq_ignore_ascii_case(k));
            if let Some(slot) = slot {
                if std::mem::replace(&mut seen[slot], true) {
                    return None; // a parameter twice in one element (RFC 7239 4)
                }
                match slot {
                    0 => element.node = Some(parse_forwarded_node(value)?),
                    // An unusable scheme or host is dropped; the hop still counts.
                    1 => element.secure = parse_scheme(&value),
                    _ => element.host = valid_host(&value).then_some(value),
                }
            }
            skip_ows(&mut pos);
        }
        match bytes.get(pos) {
            None => {
                if pairs > 0 {
                    elements.push(element);
                }
                return Some(elements);
            }
            Some(b';') => pos += 1,
            Some(b',') => {
                pos += 1;
                if std::mem::take(&mut pairs) > 0 {
                    elements.push(std::mem::take(&mut element));
                }
                seen = [false; 3];
            }
            Some(_) => return None,
        }
    }
}

/// A quoted-string starting at `start` (the opening quote): its unescaped content and
/// the position after the closing quote.
fn parse_quoted(text: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = text.as_bytes();
    let mut pos = start + 1;
    let mut owned: Option<String> = None;
    let mut run = pos;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                let value = match owned {
                    Some(mut s) => {
                        s.push_str(&text[run..pos]);
                        Cow::Owned(s)
                    }
                    None => Cow::Borrowed(&text[run..pos]),
                };
                return Some((value, pos + 1));
            }
            b'\\' => {
                let escaped = *bytes.get(pos + 1)?;
                if !(escaped == b'\t' || (0x20..0x7f).contains(&escaped)) {
                    return None;
                }
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&text[run..pos]);
                s.push(escaped as char);
                pos += 2;
                run = pos;
            }
            b'\t' | 0x20..=0x7e => pos += 1,
            _ => return None,
        }
    }
    None
}

/// RFC 7239 node: `IPv4[:port]`, `"[IPv6][:port]"`, `unknown`, `_obfuscated` (with an
/// optional port). A bare IPv6 address without brackets is tolerated.
fn parse_forwarded_node(value: Cow<'_, str>) -> Option<Node<'_>> {
    // A name must borrow from the header; one that needed unescaping can't, and no
    // legitimate proxy escapes characters in a name.
    match value {
        Cow::Borrowed(text) => parse_forwarded_node_text(text),
        Cow::Owned(text) => match parse_forwarded_node_text(&text)? {
            Node::Ip(ip, port) => Some(Node::Ip(ip, port)),
            Node::Name(..) => None,
        },
    }
}

fn parse_forwarded_node_text(text: &str) -> Option<Node<'_>> {
    if text.starts_with('[') {
        return parse_bracketed(text);
    }
    if let Ok(v6) = text.parse::<std::net::Ipv6Addr>() {
        return Some(Node::Ip(trust::canonical(IpAddr::V6(v6)), 0));
    }
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, parse_node_port(port)?),
        None => (text, 0),
    };
    if let Ok(v4) = name.parse::<std::net::Ipv4Addr>() {
        return Some(Node::Ip(IpAddr::V4(v4), port));
    }
    (name.eq_ignore_ascii_case("unknown") || is_obfuscated(name)).then_some(Node::Name(name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trust: &str, host: bool) -> ForwardedSettings {
        ForwardedSettings {
            trust: TrustList::parse(trust).unwrap(),
            host,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(HeaderName, Bytes)> {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    fn run(trust: &str, host: bool, pairs: &[(&str, &str)]) -> Option<Forwarded> {
        resolve(&settings(trust, host), &mut headers(pairs)).map(|b| *b)
    }

    fn client(text: &str) -> Option<Client> {
        let (host, port) = text.rsplit_once(':').unwrap();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(match host.parse::<IpAddr>() {
            Ok(ip) => Client::Ip(SocketAddr::new(ip, port.parse().unwrap())),
            Err(_) => Client::Name(host.into(), port.parse().unwrap()),
        })
    }

    #[test]
    fn nothing_to_do_without_headers() {
        assert_eq!(run("127.0.0.1", true, &[("host", "a")]), None);
    }

    #[test]
    fn x_forwarded_for_walks_from_the_right() {
        let r = run(
            "10.0.0.0/8",
            false,
            &[("x-forwarded-for", "1.2.3.4, 10.0.0.2")],
        );
        assert_eq!(r.unwrap().client, client("1.2.3.4:0"));
        // A spoofed leftmost entry is skipped: the first untrusted from the right wins.
        let r = run(
            "10.0.0.0/8",
            false,
            &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")],
        );
        assert_eq!(r.unwrap().client, client("1.2.3.4:0"));
        // All trusted: the leftmost.
        let r = run(
            "10.0.0.0/8",
            false,
            &[("x-forwarded-for", "10.1.1.1, 10.0.0.2")],
        );
        assert_eq!(r.unwrap().client, client("10.1.1.1:0"));
        // Ports and IPv6.
        let r = run(
            "127.0.0.1",
            false,
            &[("x-forwarded-for", "[2001:db8::1]:4711")],
        );
        assert_eq!(r.unwrap().client, client("[2001:db8::1]:4711"));
        let r = run("127.0.0.1", false, &[("x-forwarded-for", "1.2.3.4:80")]);
        assert_eq!(r.unwrap().client, client("1.2.3.4:80"));
        let r = run("127.0.0.1", false, &[("x-forwarded-for", "::ffff:1.2.3.4")]);
        assert_eq!(r.unwrap().client, client("1.2.3.4:0"));
        // Repeated fields are one list.
        let r = run(
            "10.0.0.0/8",
            false,
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "10.0.0.3"),
            ],
        );
        assert_eq!(r.unwrap().client, client("1.2.3.4:0"));
        // Names pass through as uvicorn passes them.
        let r = run("127.0.0.1", false, &[("x-forwarded-for", "unknown")]);
        assert_eq!(r.unwrap().client, client("unknown:0"));
    }

    #[test]
    fn garbage_is_ignored() {
        for bad in [
            "",
            "1.2.3.4, ",
            "<script>",
            "1.2.3.4:99999",
            "[::1",
            "a b",
            "1.2.3.4:x",
        ] {
            assert_eq!(
                run("127.0.0.1", false, &[("x-forwarded-for", bad)]),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(
            run("127.0.0.1", false, &[("x-forwarded-proto", "gopher")]),
            None
        );
        assert_eq!(
            run("127.0.0.1", false, &[("forwarded", "for=\"unterminated")]),
            None
        );
        assert_eq!(
            run(
                "127.0.0.1",
                false,
                &[("forwarded", "for=1.2.3.4;for=5.6.7.8")]
            ),
            None
        );
        assert_eq!(
            run("127.0.0.1", false, &[("forwarded", "for=not-an-ip")]),
            None
        );
        assert_eq!(
            run("127.0.0.1", false, &[("forwarded", "for 1.2.3.4")]),
            None
        );
        assert_eq!(
            run("127.0.0.1", true, &[("x-forwarded-host", "a.com/evil")]),
            None
        );
    }

    #[test]
    fn proto_and_host_align_with_the_client_hop() {
        let pairs = [
            ("x-forwarded-for", "1.2.3.4, 10.0.0.5"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "example.com, internal"),
        ];
        let r = run("10.0.0.0/8", true, &pairs).unwrap();
        assert_eq!(r.secure, Some(true));
        assert_eq!(r.host.as_deref(), Some(&b"example.com"[..]));
        // The middle proxy untrusted: its own view of the scheme.
        let r = run("127.0.0.1", true, &pairs).unwrap();
        assert_eq!(r.client, client("10.0.0.5:0"));
        assert_eq!(r.secure, Some(false));
        assert_eq!(r.host.as_deref(), Some(&b"internal"[..]));
        // One proto for a longer chain: that one (uvicorn).
        let r = run(
            "10.0.0.0/8",
            false,
            &[
                ("x-forwarded-for", "1.2.3.4, 10.0.0.5"),
                ("x-forwarded-proto", "HTTPS"),
            ],
        )
        .unwrap();
        assert_eq!(r.secure, Some(true));
        // X-Forwarded-Host only with --forwarded-host.
        let r = run("127.0.0.1", false, &[("x-forwarded-host", "example.com")]);
        assert_eq!(r, None);
    }

    #[test]
    fn host_header_is_rewritten() {
        let mut h = headers(&[
            ("host", "internal:8000"),
            ("x-forwarded-host", "example.com:443"),
        ]);
        resolve(&settings("127.0.0.1", true), &mut h).unwrap();
        assert_eq!(h[0].1, Bytes::from_static(b"example.com:443"));
        let mut h = headers(&[("forwarded", "host=\"[::1]:8080\"")]);
        resolve(&settings("127.0.0.1", true), &mut h).unwrap();
        assert_eq!(
            h[0],
            (http::header::HOST, Bytes::from_static(b"[::1]:8080"))
        );
    }

    #[test]
    fn rfc7239_forms() {
        let r = run(
            "127.0.0.1",
            true,
            &[(
                "forwarded",
                "for=192.0.2.60;proto=https;by=203.0.113.43;host=\"example.com\"",
            )],
        )
        .unwrap();
        assert_eq!(r.client, client("192.0.2.60:0"));
        assert_eq!(r.secure, Some(true));
        assert_eq!(r.host.as_deref(), Some(&b"example.com"[..]));
        let r = run(
            "127.0.0.1",
            false,
            &[("Forwarded", "For=\"[2001:db8:cafe::17]:4711\"")],
        );
        assert_eq!(r.unwrap().client, client("[2001:db8:cafe::17]:4711"));
        let r = run(
            "127.0.0.1",
            false,
            &[("forwarded", "for=_hidden, for=127.0.0.1")],
        );
        assert_eq!(r.unwrap().client, client("_hidden:0"));
        let r = run("127.0.0.1", false, &[("forwarded", "for=\"_gazonk\"")]);
        assert_eq!(r.unwrap().client, client("_gazonk:0"));
        let r = run(
            "127.0.0.1",
            false,
            &[("forwarded", "for=unknown;proto=http")],
        );
        let r = r.unwrap();
        assert_eq!(r.client, client("unknown:0"));
        assert_eq!(r.secure, Some(false));
        let r = run(
            "127.0.0.1",
            false,
            &[("forwarded", "for=\"198.51.100.17:_port\"")],
        );
        assert_eq!(r.unwrap().client, client("198.51.100.17:0"));
        let r = run("127.0.0.1", false, &[("forwarded", "for=[::1]:80")]);
        assert_eq!(r.unwrap().client, client("[::1]:80"));
        // Escapes inside a quoted string.
        let r = run("127.0.0.1", false, &[("forwarded", r#"for="\1\.2.3.4""#)]);
        assert_eq!(r.unwrap().client, client("1.2.3.4:0"));
        // Empty list elements and whitespace are fine.
        let r = run(
            "127.0.0.1",
            false,
            &[("forwarded", " , for=1.2.3.4 ; proto=https ,")],
        );
        assert_eq!(r.unwrap().secure, Some(true));
    }

    #[test]
    fn forwarded_chains() {
        let value = "for=6.6.6.6;proto=http, for=1.2.3.4;proto=https, for=10.0.0.1";
        let r = run("10.0.0.0/8", false, &[("forwarded", value)]).unwrap();
        assert_eq!(r.client, client("1.2.3.4:0"));
        assert_eq!(r.secure, Some(true));
        // A hop without for= stops the walk; the client is the trusted hop to its right.
        let r = run(
            "10.0.0.0/8",
            false,
            &[("forwarded", "proto=https, for=10.0.0.1")],
        )
        .unwrap();
        assert_eq!(r.client, client("10.0.0.1:0"));
        assert_eq!(r.secure, Some(true));
    }

    #[test]
    fn x_forwarded_wins_over_forwarded() {
        let pairs = [
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-for", "1.2.3.4"),
        ];
        let r = run("127.0.0.1", false, &pairs).unwrap();
        assert_eq!(r.client, client("1.2.3.4:0"));
        assert_eq!(r.secure, None);
        // X-Forwarded-Host alone doesn't count without --forwarded-host.
        let pairs = [("forwarded", "for=1.2.3.4"), ("x-forwarded-host", "a")];
        let r = run("127.0.0.1", false, &pairs).unwrap();
        assert_eq!(r.client, client("1.2.3.4:0"));
    }
}
