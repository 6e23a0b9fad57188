//! After parsing: the checks the drop-in options need (each failure one line, exit 2),
//! what gunicorn-only settings become, and the notes the master logs once at startup
//! about options that name another server's internals.

use super::{envfile, BindSpec};
use crate::config::{Config, HttpMode, TlsVersion};
use clap::ArgMatches;

/// gunicorn worker classes that are ASGI workers: ferrocorn's own worker serves them.
const ASGI_WORKER_CLASSES: [&str; 6] = [
    "asgi",
    "ferrocorn",
    "uvicorn.workers.UvicornWorker",
    "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker.UvicornWorker",
    "uvicorn_worker.UvicornH11Worker",
];

/// hypercorn's worker classes: they name the event loop.
const LOOP_WORKER_CLASSES: [&str; 2] = ["asyncio", "uvloop"];

pub fn review(config: &mut Config, matches: &ArgMatches) -> Result<(), String> {
    let mut notes = Vec::new();
    if let Some(class) = config.cli.worker_class.clone() {
        if LOOP_WORKER_CLASSES.contains(&class.as_str()) {
            if let Some(other) = raw(matches, "loop_kind").filter(|l| *l != class) {
                return Err(format!("--worker-class {class} contradicts --loop {other}"));
            }
            notes.push(format!(
                "--worker-class {class}: hypercorn's worker class names the event loop; using \
                 --loop {class}"
            ));
            config.loop_kind = class;
        } else if class == "trio" {
            return Err(
                "--worker-class trio: ferrocorn runs apps on asyncio (trio is not \
                        supported)"
                    .into(),
            );
        }
    }
    let o = &config.cli;

    if o.daemon {
        return Err(
            "--daemon: ferrocorn does not daemonize; run it under systemd, a container \
                    or supervisord (docs/migrating.md)"
                .into(),
        );
    }
    for (flag, value) in [("--user", &o.user), ("--group", &o.group)] {
        if value.is_some() {
            return Err(format!(
                "{flag}: ferrocorn does not switch users; start it as the user it should run \
                 as (systemd User=/Group=, docker --user) (docs/migrating.md)"
            ));
        }
    }
    if let Some(class) = o
        .worker_class
        .as_ref()
        .filter(|c| !LOOP_WORKER_CLASSES.contains(&c.as_str()))
    {
        if !ASGI_WORKER_CLASSES.contains(&class.as_str()) {
            return Err(format!(
                "--worker-class {class}: ferrocorn has ASGI workers only; use -k asgi (or \
                 uvicorn.workers.UvicornWorker)"
            ));
        }
        if class != "asgi" && class != "ferrocorn" {
            notes.push(format!(
                "--worker-class {class}: ferrocorn's own ASGI worker serves the app (Rust HTTP, \
                 asyncio loop)"
            ));
        }
    }
    if o.preload {
        notes.push(
            "--preload: the master never imports the app; each worker imports it in a fresh \
             interpreter"
                .into(),
        );
    }

    // Implementation names of uvicorn: what ferrocorn uses instead.
    if let Some(http) = raw(matches, "http") {
        if matches!(http.as_str(), "h11" | "httptools") {
            notes.push(format!(
                "--http {http}: ferrocorn parses HTTP/1.1 in Rust; serving HTTP/1.1 only, as \
                 uvicorn with {http} does"
            ));
        } else if http == "zttp" {
            notes.push(
                "--http zttp: ferrocorn serves HTTP/1.1 and HTTP/2 with its own Rust stack".into(),
            );
        }
    }
    if o.http2 {
        if config.http == HttpMode::Http1 {
            return Err("--http2 asks for HTTP/2 but --http allows HTTP/1.1 only".into());
        }
        notes.push("--http2: ferrocorn serves HTTP/2 with --http auto (the default)".into());
    }
    if let Some(ws) = raw(matches, "ws") {
        if matches!(ws.as_str(), "websockets" | "websockets-sansio" | "wsproto") {
            notes.push(format!(
                "--ws {ws}: ferrocorn's WebSocket protocol is implemented in Rust"
            ));
        }
    }

    // TLS.
    match o.ssl_version {
        2 | 17 => {}
        5 => {
            if config.ssl_min_version == TlsVersion::Tls13 {
                return Err(
                    "--ssl-version 5 (TLS 1.2 only) contradicts --ssl-min-version 1.3".into(),
                );
            }
        }
        0 | 1 => {
            return Err(format!(
                "--ssl-version {}: SSLv2/SSLv3 are not supported (TLS 1.2 and 1.3 are)",
                o.ssl_version
            ))
        }
        3 | 4 => {
            return Err(format!(
            "--ssl-version {} (TLS 1.{}): ferrocorn's TLS (rustls) supports TLS 1.2 and 1.3 only",
            o.ssl_version,
            o.ssl_version - 3
        ))
        }
        16 => {
            return Err("--ssl-version 16 is PROTOCOL_TLS_CLIENT, a client protocol; use 17".into())
        }
        other => {
            return Err(format!(
            "--ssl-version {other}: not one of Python's ssl.PROTOCOL_* numbers ferrocorn serves \
             (17 or 2: TLS 1.2 and 1.3; 5: TLS 1.2 only)"
        ))
        }
    }
    if let Some(spec) = &o.ssl_ciphers {
        super::tls12_suites(spec)?;
    }

    for header in &o.header {
        parse_header(header)?;
    }
    for spec in &o.bind {
        BindSpec::parse(spec)?;
    }
    if !o.bind.is_empty() {
        for id in ["host", "port"] {
            if matches.value_source(id) != Some(clap::parser::ValueSource::DefaultValue) {
                return Err(format!("--bind replaces --{id}; give one or the other"));
            }
        }
    }
    // NaN and negatives alike.
    if o.timeout_worker_healthcheck
        .is_some_and(|t| t.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
    {
        return Err("--timeout-worker-healthcheck must be above 0".into());
    }

    // Paths relative to where ferrocorn was started, before --chdir moves away.
    let env_file = o.env_file.clone().map(absolute);
    envfile::worker_environment(env_file.as_deref(), &o.env)?;
    if let Some(dir) = &o.chdir {
        std::env::set_current_dir(dir).map_err(|e| format!("--chdir {dir}: {e}"))?;
    }

    // gunicorn writes "-" for the standard streams.
    for path in [&mut config.error_logfile, &mut config.access_logfile] {
        if path.as_deref() == Some("-") {
            *path = None;
        }
    }
    config.cli.env_file = env_file;
    config.cli.notes = notes;
    Ok(())
}

fn raw(matches: &ArgMatches, id: &str) -> Option<String> {
    if matches.value_source(id) == Some(clap::parser::ValueSource::DefaultValue) {
        return None;
    }
    let value = matches.get_raw(id)?.next()?;
    Some(value.to_string_lossy().to_ascii_lowercase())
}

fn absolute(path: String) -> String {
    match std::path::absolute(&path) {
        Ok(p) => p.to_string_lossy().into_owned(),
        Err(_) => path,
    }
}

/// `Name:Value` as uvicorn splits it (at the first colon, the value's spaces trimmed).
pub fn parse_header(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let bad = |why: &str| format!("--header {text:?}: {why}");
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| bad("expected Name:Value"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad("not a valid header name"))?;
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| bad("the value has characters a header can't carry"))?;
    Ok((name, value))
}
