//! The access log: what each request keeps for its line, and how the line is made.
//!
//! One style per worker, chosen when it starts serving:
//! - `Uvicorn` (default): uvicorn's line, written as soon as the response status is
//!   known (as uvicorn does); its request half is made when the request arrives.
//! - `Format`: gunicorn's `%(x)s` atoms (--access-log-format), written when the response
//!   ends, since bytes and duration are only known then (as gunicorn does).
//! - `Json`: one JSON object per line (--access-log-json), also at the end.
//! - `Python`: the worker found handlers or filters on the `uvicorn.access` /
//!   `ferrocorn.access` logger after lifespan startup; each record goes to Python
//!   logging with uvicorn's args, at the response head. Only then does the access log
//!   cost a Python call per request.
//!
//! Every byte that comes from the client is escaped, so a path or a header can't end a
//! line early, forge a field, or smuggle terminal escapes into the log.
//!
//! The module keeps the per-request side (what a request captures, when its line is
//! written); `format` compiles and renders gunicorn's atoms and the JSON line; `text`
//! escapes client bytes and writes times.

mod format;
mod text;

pub use format::compile;
use format::{render_format, render_json, Atom};
use text::{iso_time, json_opt, json_string, push_escaped};

use crate::proxy::Client;
use bytes::Bytes;
use http::{HeaderName, Method, StatusCode, Version};
use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

/// How each access line is made (see the module comment).
pub enum Style {
    Uvicorn,
    Format(Vec<Atom>),
    Json,
    Python,
}

pub struct AccessLog {
    style: Style,
    /// --access-log-exclude: exact paths, compared with the path as the client sent it.
    exclude: Vec<Box<[u8]>>,
    root_path: Box<str>,
    colors: bool,
    /// The request headers the lines need, captured when a request arrives.
    request_headers: Vec<HeaderName>,
    /// The response headers the format needs (`%({Name}o)s`).
    response_headers: Vec<HeaderName>,
}

/// What a request keeps for its access line until the line is written.
pub enum Entry {
    /// uvicorn's request half, `127.0.0.1:5000 - "GET / HTTP/1.1"`.
    Uvicorn(Box<str>),
    Python(Box<PyAccess>),
    Rich(Box<Rich>),
}

/// A record for Python logging: the fields uvicorn passes as `record.args`.
pub struct PyAccess {
    pub client: String,
    pub method: String,
    pub path: String,
    pub http_version: &'static str,
    pub status: u16,
}

/// The facts a format or JSON line needs.
pub struct Rich {
    client: Option<Client>,
    method: Method,
    target: Bytes,
    version: Version,
    arrived: SystemTime,
    start: Instant,
    request_headers: Vec<Option<Bytes>>,
    status: Option<StatusCode>,
    response_headers: Vec<Option<Box<[u8]>>>,
}

const JSON_HEADERS: [&str; 3] = ["user-agent", "referer", "x-request-id"];

impl AccessLog {
    /// `python`: the worker routes records to Python logging (it overrides the format).
    pub fn new(
        options: &crate::logging_options::LoggingOptions,
        root_path: &str,
        python: bool,
    ) -> Result<AccessLog, String> {
        let mut request_headers = Vec::new();
        let mut response_headers = Vec::new();
        let style = if python {
            Style::Python
        } else if options.access_log_json {
            for name in JSON_HEADERS {
                request_headers.push(HeaderName::from_static(name));
            }
            Style::Json
        } else if let Some(format) = &options.access_log_format {
            Style::Format(compile(
                format,
                &mut request_headers,
                &mut response_headers,
            )?)
        } else {
            Style::Uvicorn
        };
        Ok(AccessLog {
            style,
            exclude: options
                .access_log_exclude
                .iter()
                .map(|p| p.as_bytes().into())
                .collect(),
            root_path: root_path.into(),
            colors: crate::log::access_colors(),
            request_headers,
            response_headers,
        })
    }

    /// A request arrived: what its line needs, or None when it has no line (excluded).
    /// `header` looks up a request header by its lower-case name.
    pub fn begin<'h>(
        &self,
        client: Option<Client>,
        method: &Method,
        target: &Bytes,
        version: Version,
        header: impl Fn(&HeaderName) -> Option<&'h [u8]>,
    ) -> Option<Entry> {
        if !self.exclude.is_empty() {
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            if self.exclude.iter().any(|p| **p == *path) {
                return None;
            }
        }
        Some(match self.style {
            Style::Uvicorn => {
                Entry::Uvicorn(self.uvicorn_request(client.as_ref(), method, target, version))
            }
            Style::Python => Entry::Python(Box::new(PyAccess {
                // As uvicorn's get_client_addr: "ip:port", "" without an address.
                client: client.as_ref().map_or_else(String::new, |a| a.to_string()),
                method: method.as_str().to_owned(),
                path: uvicorn_full_path(&self.root_path, target),
                http_version: match version {
                    Version::HTTP_10 => "1.0",
                    Version::HTTP_2 => "2",
                    _ => "1.1",
                },
                status: 0,
            })),
            Style::Format(_) | Style::Json => Entry::Rich(Box::new(Rich {
                client,
                method: method.clone(),
                target: target.clone(),
                version,
                arrived: SystemTime::now(),
                start: Instant::now(),
                request_headers: self
                    .request_headers
                    .iter()
                    .map(|name| header(name).map(Bytes::copy_from_slice))
                    .collect(),
                status: None,
                response_headers: Vec::new(),
            })),
        })
    }

    fn uvicorn_request(
        &self,
        client: Option<&Client>,
        method: &Method,
        target: &[u8],
        version: Version,
    ) -> Box<str> {
        // Empty without a client address (a Unix socket), as uvicorn writes it.
        let client = client.map_or_else(String::new, |a| a.to_string());
        let version = protocol(version);
        let mut line = String::with_capacity(client.len() + target.len() + 32);
        let _ = write!(line, "{client} - \"");
        if self.colors {
            line.push_str("\x1b[1m");
        }
        let _ = write!(line, "{method} {}", self.root_path);
        push_escaped(&mut line, target);
        let _ = write!(line, " {version}");
        if self.colors {
            line.push_str("\x1b[0m");
        }
        line.push('"');
        line.into_boxed_str()
    }

    /// The response head is known. Writes uvicorn's line now, or returns the record to
    /// hand to Python logging; a format or JSON line waits for `response_end`.
    #[must_use]
    pub fn response_head(
        &self,
        slot: &mut Option<Entry>,
        status: StatusCode,
        headers: &crate::fields::Fields,
    ) -> Option<Box<PyAccess>> {
        match slot.take()? {
            Entry::Uvicorn(request) => {
                self.write_uvicorn(&request, status);
                None
            }
            Entry::Python(mut record) => {
                record.status = status.as_u16();
                Some(record)
            }
            Entry::Rich(mut rich) => {
                rich.status = Some(status);
                rich.response_headers = self
                    .response_headers
                    .iter()
                    .map(|name| headers.get(name.as_str().as_bytes()).map(Box::from))
                    .collect();
                *slot = Some(Entry::Rich(rich));
                None
            }
        }
    }

    /// The exchange is over (done, failed or abandoned): a format or JSON line whose
    /// status was known is written now, with the body bytes sent.
    pub fn response_end(&self, slot: &mut Option<Entry>, body_bytes: u64) {
        if let Some(Entry::Rich(rich)) = slot.take() {
            if let Some(status) = rich.status {
                let line = match &self.style {
                    Style::Format(atoms) => render_format(atoms, &rich, status, body_bytes),
                    _ => render_json(&rich, status, body_bytes),
                };
                crate::log::access(&line);
            }
        }
    }

    fn write_uvicorn(&self, request: &str, status: StatusCode) {
        let reason = status.canonical_reason().unwrap_or("");
        let code = status.as_u16();
        let line = if self.colors {
            // uvicorn's colours by status class.
            let colour = match code {
                100..=199 => "\x1b[97m",
                200..=299 => "\x1b[32m",
                300..=399 => "\x1b[33m",
                400..=499 => "\x1b[31m",
                _ => "\x1b[91m",
            };
            format!(
                "{}{request} {colour}{code} {reason}\x1b[0m\n",
                crate::log::prefix(crate::config::LogLevel::Info, true)
            )
        } else {
            format!("INFO:     {request} {code} {reason}\n")
        };
        crate::log::access(&line);
    }

    /// The WebSocket handshake's line, in the style of this log.
    pub fn websocket(&self, client: Option<&Client>, target: &[u8], outcome: &str) {
        if !self.exclude.is_empty() {
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            if self.exclude.iter().any(|p| **p == *path) {
                return;
            }
        }
        let client_text = client.map_or_else(|| "-".to_string(), |a| a.to_string());
        let line = match self.style {
            Style::Json => {
                let mut line = String::from("{\"time\":");
                json_string(&mut line, iso_time(SystemTime::now()).as_bytes());
                line.push_str(",\"client\":");
                json_opt(
                    &mut line,
                    client.map(|a| a.to_string()).as_deref().map(str::as_bytes),
                );
                line.push_str(",\"protocol\":\"websocket\",\"path\":");
                json_string(
                    &mut line,
                    target.split(|&b| b == b'?').next().unwrap_or_default(),
                );
                line.push_str(",\"outcome\":");
                json_string(&mut line, outcome.as_bytes());
                line.push_str("}\n");
                line
            }
            _ => {
                let mut line = format!("INFO:     {client_text} - \"WebSocket ");
                push_escaped(&mut line, target);
                let _ = writeln!(line, "\" {outcome}");
                line
            }
        };
        crate::log::access(&line);
    }
}

/// What Python's `urllib.parse.quote` keeps: letters, digits, `_.-~` and `/`.
const QUOTE_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// The path uvicorn puts in its access record (`get_path_with_query_string`):
/// `quote(scope["path"])`, where the scope's path is the root path plus the decoded
/// request path, then `?` and the query string as sent. Filters compare against it.
fn uvicorn_full_path(root_path: &str, target: &[u8]) -> String {
    let (path, query) = split_target(target);
    let mut decoded = root_path.as_bytes().to_vec();
    decoded.extend(percent_encoding::percent_decode(path));
    let mut full = percent_encoding::percent_encode(&decoded, QUOTE_SAFE).to_string();
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        full.push('?');
        full.push_str(&String::from_utf8_lossy(query));
    }
    full
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_records_carry_uvicorns_quoted_path() {
        assert_eq!(uvicorn_full_path("", b"/health"), "/health");
        assert_eq!(
            uvicorn_full_path("/api", b"/a%20b/c:d?x=1&y=\"2\""),
            "/api/a%20b/c%3Ad?x=1&y=\"2\""
        );
        assert_eq!(uvicorn_full_path("", b"/q\"x?"), "/q%22x");
    }
}
