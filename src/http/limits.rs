//! Checks on a parsed request head, done before the app sees the request. hyper has
//! already rejected what it can't parse; these are the limits and framing rules it
//! leaves to us. Each failure is one precise status, and the connection is closed.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn reject(status: StatusCode, reason: &'static str) -> Option<Rejection> {
    Some(Rejection { status, reason })
}

pub fn check(
    limits: &Limits,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Option<Rejection> {
    // "METHOD SP request-target SP HTTP/1.1"
    let target_len = match (uri.authority(), uri.path_and_query()) {
        (Some(auth), pq) => {
            uri.scheme_str().map_or(0, |s| s.len() + 3)
                + auth.as_str().len()
                + pq.map_or(0, |p| p.as_str().len())
        }
        (None, Some(pq)) => pq.as_str().len(),
        (None, None) => 1,
    };
    if method.as_str().len() + 1 + target_len + 9 > limits.request_line {
        return reject(StatusCode::URI_TOO_LONG, "request line too long");
    }
    if headers.len() > limits.fields {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        );
    }
    for (name, value) in headers {
        if name.as_str().len() + 2 + value.len() > limits.field_size {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header field too large",
            );
        }
    }
    check_framing(version, headers)
}

/// Ambiguous message framing is how requests get smuggled past a proxy: refuse it.
fn check_framing(version: Version, headers: &HeaderMap) -> Option<Rejection> {
    let mut content_lengths = headers.get_all(CONTENT_LENGTH).iter();
    let has_cl = content_lengths.next().is_some();
    if content_lengths.next().is_some() {
        return reject(StatusCode::BAD_REQUEST, "repeated Content-Length");
    }
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(te) = encodings.next() {
        if has_cl {
            return reject(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            );
        }
        if encodings.next().is_some() {
            return reject(StatusCode::BAD_REQUEST, "repeated Transfer-Encoding");
        }
        if version == Version::HTTP_10 {
            return reject(StatusCode::BAD_REQUEST, "Transfer-Encoding on HTTP/1.0");
        }
        // chunked must be the final coding and appear once (RFC 9112 6.1); it is also
        // the only coding we decode.
        let codings: Vec<&[u8]> = te.as_bytes().split(|&b| b == b',').map(trim).collect();
        let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        if codings.iter().filter(|c| is_chunked(c)).count() != 1
            || !codings.last().is_some_and(|c| is_chunked(c))
        {
            return reject(StatusCode::BAD_REQUEST, "chunked not the final coding, once");
        }
        if codings.len() > 1 {
            return reject(StatusCode::NOT_IMPLEMENTED, "unsupported Transfer-Encoding");
        }
    }
    if version == Version::HTTP_11 {
        let mut hosts = headers.get_all(HOST).iter();
        if hosts.next().is_none() {
            return reject(StatusCode::BAD_REQUEST, "missing Host header");
        }
        if hosts.next().is_some() {
            return reject(StatusCode::BAD_REQUEST, "repeated Host header");
        }
    }
    None
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            request_line: 100,
            fields: 3,
            field_size: 50,
        }
    }

    fn run(uri: &str, headers: &[(&str, &str)]) -> Option<u16> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(
            &limits(),
            &Method::GET,
            &uri.parse().unwrap(),
            Version::HTTP_11,
            &map,
        )
        .map(|r| r.status.as_u16())
    }

    #[test]
    fn accepts_a_plain_request() {
        assert_eq!(run("/a?b=c", &[("host", "x")]), None);
    }

    #[test]
    fn long_request_line_is_414() {
        assert_eq!(run(&format!("/{}", "a".repeat(100)), &[("host", "x")]), Some(414));
    }

    #[test]
    fn field_limits_are_431() {
        let big = "v".repeat(60);
        assert_eq!(run("/", &[("host", "x"), ("a", &big)]), Some(431));
        let many = [("host", "x"), ("a", "1"), ("b", "1"), ("c", "1")];
        assert_eq!(run("/", &many), Some(431));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cl2 = [("host", "x"), ("content-length", "1"), ("content-length", "1")];
        assert_eq!(run("/", &cl2), Some(400));
        let clte = [
            ("host", "x"),
            ("content-length", "1"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(run("/", &clte), Some(400));
        let gzip = [("host", "x"), ("transfer-encoding", "gzip")];
        assert_eq!(run("/", &gzip), Some(400));
        let gzip_chunked = [("host", "x"), ("transfer-encoding", "gzip, chunked")];
        assert_eq!(run("/", &gzip_chunked), Some(501));
        let stacked = [("host", "x"), ("transfer-encoding", "chunked, chunked")];
        assert_eq!(run("/", &stacked), Some(400));
    }

    #[test]
    fn host_is_required_once() {
        assert_eq!(run("/", &[]), Some(400));
        assert_eq!(run("/", &[("host", "a"), ("host", "b")]), Some(400));
    }
}
