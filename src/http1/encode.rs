//! Writing responses: the head (with the framing we choose), chunked data, the date.

use crate::conn_shared::HeadOptions;
use crate::fields::Fields;
use bytes::{BufMut, BytesMut};
use http::{Method, StatusCode, Version};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body may be sent (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the body ends when the connection closes.
    UntilClose,
}

/// What the request says about the response.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// Both sides may keep the connection open after this response.
    pub keep_alive: bool,
}

/// Write the head; returns the body framing and whether the connection stays open.
pub fn write_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &Fields,
    exact_len: Option<u64>,
    req: &RequestFacts<'_>,
    opts: &HeadOptions,
) -> (BodyFraming, bool) {
    let mut keep_alive = req.keep_alive;
    let mut app_length = None;
    // An app that sets `Transfer-Encoding: chunked` gets its body chunk-encoded, and
    // its Content-Length (if any) dropped: TE overrides CL and both must never be sent
    // (RFC 9112 6.1, 6.3). An HTTP/1.0 client can't read chunks: then the app's length
    // (or a close) delimits the body.
    let app_chunked = req.version == Version::HTTP_11
        && !headers.is_empty()
        && headers
            .iter()
            .any(|f| f.name == b"transfer-encoding" && has_token(f.value, b"chunked"));
    let mut has_server = false;
    let mut has_date = false;

    out.put_slice(if req.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
    put_extra_headers(out, opts);
    for field in headers {
        match field.name {
            b"content-length" => {
                if app_chunked {
                    continue;
                }
                app_length = std::str::from_utf8(field.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            }
            // Ours to write: only chunked is ever applied (other codings are the app's
            // business through content-encoding).
            b"transfer-encoding" => continue,
            b"connection" => {
                if field.value.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                }
                continue; // Ours to decide; written below.
            }
            b"server" => has_server = true,
            b"date" => has_date = true,
            _ => {}
        }
        // The app's line as it is: `name: value\r\n`.
        out.put_slice(field.line);
    }
    if opts.server_header && !has_server {
        out.put_slice(b"server: ferrocorn\r\n");
    }
    if opts.date_header && !has_date {
        out.put_slice(b"date: ");
        with_date(|d| out.put_slice(d));
        out.put_slice(b"\r\n");
    }

    let bodiless = *req.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        if app_chunked && *req.method == Method::HEAD {
            // The head a GET would get.
            out.put_slice(b"transfer-encoding: chunked\r\n");
        }
        BodyFraming::None
    } else if app_chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    } else if let Some(n) = app_length {
        BodyFraming::Length(n)
    } else if let Some(n) = exact_len {
        out.put_slice(b"content-length: ");
        out.put_slice(itoa::Buffer::new().format(n).as_bytes());
        out.put_slice(b"\r\n");
        BodyFraming::Length(n)
    } else if req.version == Version::HTTP_11 {
        out.put_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    } else {
        keep_alive = false;
        BodyFraming::UntilClose
    };
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    } else if req.version == Version::HTTP_10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    (framing, keep_alive)
}

/// --header's default headers, written before the app's own as uvicorn does.
pub fn put_extra_headers(out: &mut BytesMut, opts: &HeadOptions) {
    for (name, value) in &opts.extra {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// The server and date headers alone, for heads written outside `write_head` (101).
pub fn put_server_and_date(out: &mut BytesMut, opts: &HeadOptions) {
    if opts.server_header {
        out.put_slice(b"server: ferrocorn\r\n");
    }
    if opts.date_header {
        out.put_slice(b"date: ");
        with_date(|d| out.put_slice(d));
        out.put_slice(b"\r\n");
    }
}

/// A comma-separated field value lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

pub fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

pub fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return; // An empty chunk would end the body.
    }
    put_chunk_size(out, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The `size\r\n` line before a chunk's data (which the caller writes, then CRLF).
pub fn put_chunk_size(out: &mut BytesMut, len: usize) {
    let mut hex = [0u8; 16];
    let mut n = len;
    let mut i = hex.len();
    while n > 0 {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.put_slice(&hex[i..]);
    out.put_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

thread_local! {
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// The IMF-fixdate of the current second, formatted once per second per thread.
pub(crate) fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            cached.1.copy_from_slice(&text.as_bytes()[..29]);
            cached.0 = secs;
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        method: Method,
        version: Version,
        headers: &[(&str, &str)],
        exact: Option<u64>,
    ) -> (String, BodyFraming, bool) {
        let mut map = Fields::new();
        for (k, v) in headers {
            map.append(k.as_bytes(), v.as_bytes()).unwrap();
        }
        let mut out = BytesMut::new();
        let req = RequestFacts {
            method: &method,
            version,
            keep_alive: true,
        };
        let opts = HeadOptions {
            server_header: true,
            date_header: false,
            ..Default::default()
        };
        let (framing, ka) = write_head(&mut out, StatusCode::OK, &map, exact, &req, &opts);
        (String::from_utf8(out.to_vec()).unwrap(), framing, ka)
    }

    #[test]
    fn exact_length_becomes_content_length() {
        let (text, framing, ka) = head(Method::GET, Version::HTTP_11, &[], Some(13));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nserver: ferrocorn\r\ncontent-length: 13\r\n\r\n"
        );
        assert_eq!(framing, BodyFraming::Length(13));
        assert!(ka);
    }

    #[test]
    fn unknown_length_is_chunked_on_11_and_close_on_10() {
        assert_eq!(
            head(Method::GET, Version::HTTP_11, &[], None).1,
            BodyFraming::Chunked
        );
        let (text, framing, ka) = head(Method::GET, Version::HTTP_10, &[], None);
        assert_eq!(framing, BodyFraming::UntilClose);
        assert!(!ka);
        assert!(text.contains("connection: close"));
    }

    #[test]
    fn head_requests_keep_the_apps_length_and_send_no_body() {
        let (text, framing, _) = head(
            Method::HEAD,
            Version::HTTP_11,
            &[("content-length", "5")],
            None,
        );
        assert!(text.contains("content-length: 5"));
        assert_eq!(framing, BodyFraming::None);
    }

    #[test]
    fn app_chunked_overrides_and_drops_content_length() {
        let te_and_cl = [("content-length", "5"), ("transfer-encoding", "chunked")];
        let (text, framing, _) = head(Method::GET, Version::HTTP_11, &te_and_cl, Some(5));
        assert_eq!(framing, BodyFraming::Chunked);
        assert!(!text.contains("content-length"));
        assert_eq!(text.matches("transfer-encoding: chunked").count(), 1);
        // HTTP/1.0 can't read chunks: the app's length delimits the body, no TE.
        let (text, framing, _) = head(Method::GET, Version::HTTP_10, &te_and_cl, Some(5));
        assert_eq!(framing, BodyFraming::Length(5));
        assert!(!text.contains("transfer-encoding"));
        // Other codings are never claimed on the wire.
        let (text, framing, _) = head(
            Method::GET,
            Version::HTTP_11,
            &[("transfer-encoding", "gzip")],
            Some(3),
        );
        assert!(!text.contains("gzip"));
        assert_eq!(framing, BodyFraming::Length(3));
    }

    #[test]
    fn chunk_encoding() {
        let mut out = BytesMut::new();
        put_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[..4], b"1a\r\n");
    }
}
