//! Request heads: parsed with httparse, then held to RFC 9110/9112's framing rules.
//! Anything ambiguous is refused with one precise status before the app sees it.

use crate::conn_shared::Limits;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, Method, StatusCode, Version};

/// The client preface every HTTP/2 connection starts with (RFC 9113 3.4): a port that
/// speaks HTTP/1.1 must tell it from a request line (prior knowledge).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn reject(status: StatusCode, reason: &'static str) -> Outcome {
    Outcome::Reject(Rejection { status, reason })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The request-target exactly as sent.
    pub target: Bytes,
    pub version: Version,
    /// Lower-cased names in the order the client sent them.
    pub headers: Vec<(HeaderName, Bytes)>,
    pub framing: Framing,
    pub expect_continue: bool,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
}

#[derive(Debug)]
pub enum Outcome {
    /// Not a whole head yet: read more.
    Partial,
    Complete(Head),
    Reject(Rejection),
}

/// Parse one head from the front of `buf`, consuming it when complete.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Outcome {
    // Header slots on the stack for the usual limits; uninitialised, so they cost nothing.
    let mut stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut heap = Vec::new();
    let slots = if limits.fields < stack.len() {
        &mut stack[..limits.fields + 1]
    } else {
        heap.resize_with(limits.fields + 1, std::mem::MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return partial(buf, limits),
        Err(httparse::Error::TooManyHeaders) => {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            )
        }
        Err(httparse::Error::Version) => return bad_version(buf),
        Err(_) => return reject(StatusCode::BAD_REQUEST, "malformed request head"),
    };
    if req.headers.len() > limits.fields {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        );
    }
    let method_bytes = req.method.unwrap_or("").as_bytes();
    let target_len = req.path.map_or(0, str::len);
    if method_bytes.len() + 1 + target_len + 9 > limits.request_line {
        return reject(StatusCode::URI_TOO_LONG, "request line too long");
    }
    let Ok(method) = Method::from_bytes(method_bytes) else {
        return reject(StatusCode::BAD_REQUEST, "invalid method");
    };
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    let target_at = req.path.map_or(0, |p| offset(p.as_bytes()));
    // A copy, not a split: the head goes to the Python thread, and a split would keep the
    // whole read buffer alive there. With the copy the connection's buffer stays ours
    // alone, so the next read reuses it instead of allocating 64 KiB per request, and
    // no large block is freed across threads (glibc serialises that on its arena lock).
    // Copied before the fields are checked so that each value becomes a slice of it at
    // once (the same offsets hold in the copy).
    let head = Bytes::copy_from_slice(&buf[..head_len]);
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if h.name.len() + 2 + h.value.len() > limits.field_size {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header field too large",
            );
        }
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return reject(StatusCode::BAD_REQUEST, "invalid header name");
        };
        let start = offset(h.value);
        headers.push((name, head.slice(start..start + h.value.len())));
    }
    let target = head.slice(target_at..target_at + target_len);
    buf.advance(head_len);
    check_semantics(method, target, version, headers)
}

/// A partial head that is already over a limit is refused without waiting for more.
fn partial(buf: &BytesMut, limits: &Limits) -> Outcome {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.map_or(buf.len(), |e| e + 1) > limits.request_line + 2 {
        return reject(StatusCode::URI_TOO_LONG, "request line too long");
    }
    if buf.len() > limits.max_head() {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        );
    }
    Outcome::Partial
}

/// `HTTP/2.0` or `HTTP/3` on a request line is a version we don't speak (505); any
/// other garbage there is a bad request.
fn bad_version(buf: &[u8]) -> Outcome {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let version = parts.last().copied().unwrap_or(b"");
    let looks_like_http = parts.len() == 3
        && version.len() >= 6
        && version.starts_with(b"HTTP/")
        && version[5..]
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b'.');
    if looks_like_http {
        reject(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "unsupported HTTP version",
        )
    } else {
        reject(StatusCode::BAD_REQUEST, "malformed request line")
    }
}

fn check_semantics(
    method: Method,
    target: Bytes,
    version: Version,
    headers: Vec<(HeaderName, Bytes)>,
) -> Outcome {
    use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te: Option<&Bytes> = None;
    let mut te_count = 0;
    let mut hosts = 0;
    let mut expect_continue = false;
    let mut keep_alive = version == Version::HTTP_11;
    for (name, value) in &headers {
        if *name == CONTENT_LENGTH {
            cl_count += 1;
            match parse_length(value) {
                Some(n) => content_length = Some(n),
                None => return reject(StatusCode::BAD_REQUEST, "invalid Content-Length"),
            }
        } else if *name == TRANSFER_ENCODING {
            te_count += 1;
            te = Some(value);
        } else if *name == HOST {
            hosts += 1;
        } else if *name == CONNECTION {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep_alive = true;
                }
            }
        } else if *name == EXPECT {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return reject(StatusCode::EXPECTATION_FAILED, "unsupported expectation");
            }
        }
    }
    if cl_count > 1 {
        return reject(StatusCode::BAD_REQUEST, "repeated Content-Length");
    }
    let framing = match (te, content_length) {
        (Some(_), Some(_)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            )
        }
        (Some(te), None) => {
            if te_count > 1 {
                return reject(StatusCode::BAD_REQUEST, "repeated Transfer-Encoding");
            }
            if version == Version::HTTP_10 {
                return reject(StatusCode::BAD_REQUEST, "Transfer-Encoding on HTTP/1.0");
            }
            // chunked must be the final coding, once (RFC 9112 6.1); it is also the only
            // coding we decode.
            let codings: Vec<&[u8]> = te.split(|&b| b == b',').map(trim).collect();
            let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
            if codings.iter().filter(|c| is_chunked(c)).count() != 1
                || !codings.last().is_some_and(|c| is_chunked(c))
            {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "chunked is not the final transfer coding, once",
                );
            }
            if codings.len() > 1 {
                return reject(StatusCode::NOT_IMPLEMENTED, "unsupported transfer coding");
            }
            Framing::Chunked
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    if version == Version::HTTP_11 && hosts != 1 {
        let reason = if hosts == 0 {
            "missing Host header"
        } else {
            "repeated Host header"
        };
        return reject(StatusCode::BAD_REQUEST, reason);
    }
    if target.is_empty() {
        return reject(StatusCode::BAD_REQUEST, "empty request target");
    }
    // RFC 3986 targets are ASCII; raw bytes above 0x7f would be decoded differently by
    // each hop (uvicorn answers 400 too).
    if !target.is_ascii() {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid character in request target",
        );
    }
    Outcome::Complete(Head {
        method,
        target,
        version,
        headers,
        framing,
        expect_continue: expect_continue && framing != Framing::Empty,
        keep_alive,
    })
}

/// 1*DIGIT, nothing else: no sign, no spaces inside, no list, no overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            request_line: 100,
            fields: 4,
            field_size: 60,
            max_incomplete_head: None,
        }
    }

    fn status_of(raw: &str) -> Option<u16> {
        let mut buf = BytesMut::from(raw.as_bytes());
        match parse(&mut buf, &limits()) {
            Outcome::Complete(_) => None,
            Outcome::Partial => Some(0),
            Outcome::Reject(r) => Some(r.status.as_u16()),
        }
    }

    #[test]
    fn parses_a_request_and_keeps_header_order() {
        let mut buf = BytesMut::from(
            &b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nB: 1\r\nA: 2\r\nb: 3\r\n\r\nrest"[..],
        );
        let Outcome::Complete(head) = parse(&mut buf, &limits()) else {
            panic!("not complete")
        };
        assert_eq!(&head.target[..], b"/a%20b?x=1");
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "b", "a", "b"]);
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn partial_until_the_blank_line() {
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: h\r\n"), Some(0));
    }

    #[test]
    fn limits_give_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(100));
        assert_eq!(status_of(&long), Some(414));
        let long_partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(status_of(&long_partial), Some(414));
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(60));
        assert_eq!(status_of(&big), Some(431));
        let many = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
        assert_eq!(status_of(many), Some(431));
    }

    #[test]
    fn framing_rules() {
        let cases = [
            ("Content-Length: 1\r\nContent-Length: 1\r\n", 400),
            ("Content-Length: 1, 1\r\n", 400),
            ("Content-Length: +1\r\n", 400),
            ("Content-Length: 0x1\r\n", 400),
            ("Content-Length: 99999999999999999999\r\n", 400),
            ("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n", 400),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                400,
            ),
            ("Transfer-Encoding: chunked, chunked\r\n", 400),
            ("Transfer-Encoding: gzip\r\n", 400),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            ("Expect: something\r\n", 417),
            ("Host: again\r\n", 400),
        ];
        for (extra, status) in cases {
            let raw = format!("POST / HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
            assert_eq!(status_of(&raw), Some(status), "{extra:?}");
        }
        assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(
            status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
    }

    #[test]
    fn versions_and_syntax() {
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), Some(505));
        assert_eq!(status_of("GET / FOO/1.1\r\nHost: h\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), Some(400));
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: h\0\r\n\r\n"), Some(400));
        assert_eq!(status_of("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), Some(400));
    }
}
