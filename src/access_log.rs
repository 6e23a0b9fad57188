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

use crate::proxy::Client;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One piece of a compiled --access-log-format.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    Text(String),
    /// h: the client's address (no port), "-" on a Unix socket.
    RemoteAddr,
    /// l: always "-" (no ident lookups).
    Dash,
    /// u: the user of HTTP Basic authorization; index of the `authorization` header.
    User(usize),
    /// t: the request's arrival, `[30/Nov/2026:21:58:00 +0000]` in local time.
    Time,
    /// r: `GET /path?q=1 HTTP/1.1`.
    RequestLine,
    /// m: the method.
    Method,
    /// U: the path, without the query.
    UrlPath,
    /// q: the query string, without `?`.
    Query,
    /// H: the protocol, `HTTP/1.1`.
    Protocol,
    /// s: the status code.
    Status,
    /// b: body bytes sent, "-" for none (Common Log Format).
    BytesOrDash,
    /// B: body bytes sent.
    Bytes,
    /// T, M, D, L: the request's duration in whole seconds, milliseconds,
    /// microseconds, or decimal seconds.
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    /// p: the worker's pid, `<1234>` as gunicorn writes it.
    Pid,
    /// f, a and `%({Name}i)s`: a request header (index into the captured list).
    RequestHeader(usize),
    /// `%({Name}o)s`: a response header.
    ResponseHeader(usize),
}

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
    response_headers: Vec<Option<HeaderValue>>,
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
        headers: &HeaderMap,
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
                    .map(|name| headers.get(name).cloned())
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

/// Compile a gunicorn access-log format; headers the atoms name are appended to the
/// lists so each request captures only those.
pub fn compile(
    format: &str,
    request_headers: &mut Vec<HeaderName>,
    response_headers: &mut Vec<HeaderName>,
) -> Result<Vec<Atom>, String> {
    fn index(list: &mut Vec<HeaderName>, name: HeaderName) -> usize {
        list.iter().position(|n| *n == name).unwrap_or_else(|| {
            list.push(name);
            list.len() - 1
        })
    }
    let mut atoms = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            text.push('%');
            rest = after;
            continue;
        }
        let Some(inner) = rest.strip_prefix('(') else {
            return Err("a lone % (write %% for a percent sign, atoms as %(h)s)".into());
        };
        let Some(close) = inner.find(')') else {
            return Err(format!(
                "unterminated atom %({inner} (atoms look like %(h)s)"
            ));
        };
        let key = &inner[..close];
        let Some(after) = inner[close + 1..].strip_prefix('s') else {
            return Err(format!(
                "%({key}) must be followed by s: atoms look like %({key})s (no widths or other conversions)"
            ));
        };
        rest = after;
        let atom = if let Some(name) = key.strip_prefix('{') {
            let (name, kind) = name.rsplit_once('}').ok_or_else(|| {
                format!("%({key})s: expected %({{Name}}i)s, %({{Name}}o)s or %({{NAME}}e)s")
            })?;
            match kind {
                "e" => Atom::Text(std::env::var(name).unwrap_or_else(|_| "-".into())),
                "i" | "o" => {
                    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| format!("%({key})s: {name:?} is not a header name"))?;
                    if kind == "i" {
                        Atom::RequestHeader(index(request_headers, header))
                    } else {
                        Atom::ResponseHeader(index(response_headers, header))
                    }
                }
                _ => {
                    return Err(format!(
                        "%({key})s: expected %({{Name}}i)s, %({{Name}}o)s or %({{NAME}}e)s"
                    ))
                }
            }
        } else {
            match key {
                "h" => Atom::RemoteAddr,
                "l" => Atom::Dash,
                "u" => Atom::User(index(request_headers, http::header::AUTHORIZATION)),
                "t" => Atom::Time,
                "r" => Atom::RequestLine,
                "m" => Atom::Method,
                "U" => Atom::UrlPath,
                "q" => Atom::Query,
                "H" => Atom::Protocol,
                "s" => Atom::Status,
                "b" => Atom::BytesOrDash,
                "B" => Atom::Bytes,
                "f" => Atom::RequestHeader(index(request_headers, http::header::REFERER)),
                "a" => Atom::RequestHeader(index(request_headers, http::header::USER_AGENT)),
                "T" => Atom::Seconds,
                "M" => Atom::Millis,
                "D" => Atom::Micros,
                "L" => Atom::DecimalSeconds,
                "p" => Atom::Pid,
                _ => return Err(format!("unknown atom %({key})s")),
            }
        };
        if !text.is_empty() {
            atoms.push(Atom::Text(std::mem::take(&mut text)));
        }
        atoms.push(atom);
    }
    text.push_str(rest);
    if !text.is_empty() {
        atoms.push(Atom::Text(text));
    }
    Ok(atoms)
}

fn render_format(atoms: &[Atom], r: &Rich, status: StatusCode, body_bytes: u64) -> String {
    let mut line = String::with_capacity(160);
    let elapsed = r.start.elapsed();
    let (path, query) = split_target(&r.target);
    for atom in atoms {
        match atom {
            Atom::Text(t) => line.push_str(t),
            Atom::RemoteAddr => match &r.client {
                Some(Client::Ip(a)) => {
                    let _ = write!(line, "{}", a.ip());
                }
                // A name a proxy wrote (`unknown`, `_hidden`): client bytes, escaped.
                Some(Client::Name(name, _)) => push_escaped(&mut line, name.as_bytes()),
                None => line.push('-'),
            },
            Atom::Dash => line.push('-'),
            Atom::User(i) => match r.request_headers[*i].as_deref().and_then(basic_user) {
                Some(user) => push_escaped(&mut line, &user),
                None => line.push('-'),
            },
            Atom::Time => line.push_str(&clf_time(r.arrived)),
            Atom::RequestLine => {
                let _ = write!(line, "{} ", r.method);
                push_escaped(&mut line, &r.target);
                let _ = write!(line, " {}", protocol(r.version));
            }
            Atom::Method => line.push_str(r.method.as_str()),
            Atom::UrlPath => push_escaped(&mut line, path),
            Atom::Query => push_escaped(&mut line, query.unwrap_or_default()),
            Atom::Protocol => line.push_str(protocol(r.version)),
            Atom::Status => {
                let _ = write!(line, "{}", status.as_u16());
            }
            Atom::BytesOrDash if body_bytes == 0 => line.push('-'),
            Atom::BytesOrDash | Atom::Bytes => {
                let _ = write!(line, "{body_bytes}");
            }
            Atom::Seconds => {
                let _ = write!(line, "{}", elapsed.as_secs());
            }
            Atom::Millis => {
                let _ = write!(line, "{}", elapsed.as_millis());
            }
            Atom::Micros => {
                let _ = write!(line, "{}", elapsed.as_micros());
            }
            Atom::DecimalSeconds => {
                let _ = write!(line, "{:.6}", elapsed.as_secs_f64());
            }
            Atom::Pid => {
                let _ = write!(line, "<{}>", std::process::id());
            }
            Atom::RequestHeader(i) => match &r.request_headers[*i] {
                Some(v) => push_escaped(&mut line, v),
                None => line.push('-'),
            },
            Atom::ResponseHeader(i) => match r.response_headers.get(*i).and_then(Option::as_ref) {
                Some(v) => push_escaped(&mut line, v.as_bytes()),
                None => line.push('-'),
            },
        }
    }
    line.push('\n');
    line
}

fn render_json(r: &Rich, status: StatusCode, body_bytes: u64) -> String {
    let (path, query) = split_target(&r.target);
    let mut line = String::with_capacity(256);
    line.push_str("{\"time\":");
    json_string(&mut line, iso_time(r.arrived).as_bytes());
    line.push_str(",\"client\":");
    json_opt(
        &mut line,
        r.client
            .as_ref()
            .map(|a| a.to_string())
            .as_deref()
            .map(str::as_bytes),
    );
    line.push_str(",\"method\":");
    json_string(&mut line, r.method.as_str().as_bytes());
    line.push_str(",\"path\":");
    json_string(&mut line, path);
    line.push_str(",\"query\":");
    json_string(&mut line, query.unwrap_or_default());
    let _ = write!(
        line,
        ",\"status\":{},\"bytes\":{body_bytes},\"duration\":{:.6},\"protocol\":",
        status.as_u16(),
        r.start.elapsed().as_secs_f64()
    );
    json_string(&mut line, protocol(r.version).as_bytes());
    line.push_str(",\"user_agent\":");
    json_opt(&mut line, r.request_headers[0].as_deref());
    line.push_str(",\"referer\":");
    json_opt(&mut line, r.request_headers[1].as_deref());
    if let Some(id) = &r.request_headers[2] {
        line.push_str(",\"request_id\":");
        json_string(&mut line, id);
    }
    line.push_str("}\n");
    line
}

fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    }
}

/// The user name of `Authorization: Basic base64(user:password)`.
fn basic_user(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let (scheme, credentials) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim_ascii())
        .ok()?;
    let end = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[..end].to_vec())
}

/// Client bytes for a text line: valid UTF-8 as is, except that `"` and `\` are
/// backslash-escaped and control characters (C0, DEL, C1) and invalid bytes become
/// `\xNN`, so nothing can end the line, open a new field or drive the terminal.
pub fn push_escaped(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// A JSON string of client bytes: invalid UTF-8 bytes become the text `\xNN` (JSON
/// strings are Unicode), then serde_json escapes quotes, backslashes and controls.
fn json_string(out: &mut String, bytes: &[u8]) {
    let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            let mut s = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                s.push_str(chunk.valid());
                for b in chunk.invalid() {
                    let _ = write!(s, "\\x{b:02x}");
                }
            }
            s.into()
        }
    };
    out.push_str(&serde_json::to_string(text.as_ref()).expect("a str serialises"));
}

fn json_opt(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => json_string(out, b),
        None => out.push_str("null"),
    }
}

fn broken_down(t: SystemTime, local: bool) -> (libc::tm, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: plain C calls that fill the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        if local {
            libc::localtime_r(&secs, &mut tm);
        } else {
            libc::gmtime_r(&secs, &mut tm);
        }
    }
    (tm, since.subsec_micros())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `[30/Nov/2026:21:58:00 +0100]`, local time, as gunicorn's %(t)s.
fn clf_time(t: SystemTime) -> String {
    let (tm, _) = broken_down(t, true);
    let offset = tm.tm_gmtoff / 60;
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} {sign}{:02}{:02}]",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset.abs() / 60,
        offset.abs() % 60
    )
}

/// ISO 8601 in UTC with microseconds: `2026-11-30T21:58:00.123456Z`.
fn iso_time(t: SystemTime) -> String {
    let (tm, micros) = broken_down(t, false);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_gunicorn_default_format() {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        let atoms = compile(
            r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %% %({X-Id}o)s"#,
            &mut req,
            &mut resp,
        )
        .unwrap();
        assert_eq!(atoms[0], Atom::RemoteAddr);
        assert!(atoms.contains(&Atom::Text("\" % ".into())));
        assert_eq!(req, ["authorization", "referer", "user-agent"]);
        assert_eq!(resp, ["x-id"]);
    }

    #[test]
    fn rejects_bad_formats() {
        let (mut req, mut resp) = (Vec::new(), Vec::new());
        for bad in [
            "%(zz)s",
            "100%",
            "%(h",
            "%({bad name}i)s",
            "%({X}z)s",
            "%(s)d %(h)s",
            "%(h)-9s",
        ] {
            assert!(compile(bad, &mut req, &mut resp).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_client_bytes() {
        let mut s = String::new();
        push_escaped(&mut s, b"/a\"b\\c\n\x1b[31m\xff\xc2\x85ok\xc3\xa9");
        assert_eq!(s, "/a\\\"b\\\\c\\x0a\\x1b[31m\\xff\\xc2\\x85ok\u{e9}");
        let mut j = String::new();
        json_string(&mut j, b"a\"\n\xff");
        assert_eq!(j, r#""a\"\n\\xff""#);
    }

    #[test]
    fn python_records_carry_uvicorns_quoted_path() {
        assert_eq!(uvicorn_full_path("", b"/health"), "/health");
        assert_eq!(
            uvicorn_full_path("/api", b"/a%20b/c:d?x=1&y=\"2\""),
            "/api/a%20b/c%3Ad?x=1&y=\"2\""
        );
        assert_eq!(uvicorn_full_path("", b"/q\"x?"), "/q%22x");
    }

    #[test]
    fn basic_auth_user() {
        assert_eq!(
            basic_user(b"Basic dXNlcjpwdw==").as_deref(),
            Some(&b"user"[..])
        );
        assert_eq!(basic_user(b"Bearer abc"), None);
    }
}
