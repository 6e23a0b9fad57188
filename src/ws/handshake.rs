//! The opening handshake: recognising an upgrade request, checking it, and writing the
//! 101 response once the app accepts.

use crate::conn_shared::HeadOptions;
use crate::http1::encode::{put_header, put_server_and_date};
use crate::http1::parse::Head;
use base64::Engine;
use bytes::{BufMut, BytesMut};
use http::{Method, StatusCode, Version};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub struct Upgrade {
    pub key: String,
    /// Sec-WebSocket-Protocol values, in the client's order.
    pub subprotocols: Vec<String>,
    /// Sec-WebSocket-Extensions values joined with ", ".
    pub extensions: String,
}

pub enum Check {
    NotWebSocket,
    WebSocket(Upgrade),
    /// An upgrade to websocket that can't be honoured: answer this and close.
    Bad(StatusCode, &'static str),
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn header_values<'a>(head: &'a Head, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.headers
        .iter()
        .filter(move |(n, _)| n.as_str() == name)
        .map(|(_, v)| v.as_ref())
}

/// Join every value of a header with ", ", as one list.
fn joined(head: &Head, name: &str) -> String {
    header_values(head, name)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn check(head: &Head) -> Check {
    if !header_values(head, "upgrade").any(|v| has_token(v, "websocket")) {
        return Check::NotWebSocket;
    }
    if head.method != Method::GET || head.version != Version::HTTP_11 {
        return Check::Bad(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade needs GET HTTP/1.1",
        );
    }
    if !header_values(head, "connection").any(|v| has_token(v, "upgrade")) {
        return Check::Bad(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade without Connection: upgrade",
        );
    }
    let version = joined(head, "sec-websocket-version");
    if version.trim() != "13" {
        return Check::Bad(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version",
        );
    }
    let key = joined(head, "sec-websocket-key");
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
    if !decoded.is_ok_and(|k| k.len() == 16) {
        return Check::Bad(StatusCode::BAD_REQUEST, "invalid Sec-WebSocket-Key");
    }
    let subprotocols = header_values(head, "sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|p| String::from_utf8_lossy(p.trim_ascii()).into_owned())
        .filter(|p| !p.is_empty())
        .collect();
    Check::WebSocket(Upgrade {
        key: key.trim().to_string(),
        subprotocols,
        extensions: joined(head, "sec-websocket-extensions"),
    })
}

pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// The headers a WebSocket response sets itself; the app's copies are dropped.
fn ours(name: &[u8]) -> bool {
    matches!(
        name,
        b"upgrade"
            | b"connection"
            | b"sec-websocket-accept"
            | b"sec-websocket-extensions"
            | b"sec-websocket-protocol"
            | b"content-length"
            | b"transfer-encoding"
    )
}

pub fn write_101(
    out: &mut BytesMut,
    key: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
    app_headers: &crate::fields::Fields,
    opts: &HeadOptions,
) {
    out.put_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
    );
    put_header(out, b"sec-websocket-accept", accept_key(key).as_bytes());
    if let Some(p) = subprotocol {
        put_header(out, b"sec-websocket-protocol", p.as_bytes());
    }
    if let Some(e) = extensions {
        put_header(out, b"sec-websocket-extensions", e.as_bytes());
    }
    let mut has_server = false;
    let mut has_date = false;
    crate::http1::encode::put_extra_headers(out, opts);
    for field in app_headers.iter().filter(|f| !ours(f.name)) {
        has_server |= field.name == b"server";
        has_date |= field.name == b"date";
        out.put_slice(field.line);
    }
    put_server_and_date(
        out,
        &HeadOptions {
            server_header: opts.server_header && !has_server,
            date_header: opts.date_header && !has_date,
            extra: Vec::new(),
        },
    );
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
