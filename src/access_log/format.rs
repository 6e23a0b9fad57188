//! gunicorn's --access-log-format (`%(h)s %(r)s ...`): compiled once into atoms, then
//! rendered for each request at its end; and the --access-log-json line.

use super::text::{clf_time, iso_time, json_opt, json_string, push_escaped};
use super::{protocol, split_target, Rich};
use crate::proxy::Client;
use http::{HeaderName, StatusCode};
use std::fmt::Write as _;

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

pub(super) fn render_format(
    atoms: &[Atom],
    r: &Rich,
    status: StatusCode,
    body_bytes: u64,
) -> String {
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
                Some(v) => push_escaped(&mut line, v),
                None => line.push('-'),
            },
        }
    }
    line.push('\n');
    line
}

pub(super) fn render_json(r: &Rich, status: StatusCode, body_bytes: u64) -> String {
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
    fn basic_auth_user() {
        assert_eq!(
            basic_user(b"Basic dXNlcjpwdw==").as_deref(),
            Some(&b"user"[..])
        );
        assert_eq!(basic_user(b"Bearer abc"), None);
    }
}
