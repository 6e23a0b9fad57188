//! After parsing: the checks the drop-in options need (each failure one line, exit 2),
//! what gunicorn's and hypercorn's settings become, and the notes the master logs once
//! at startup about options that name another server's internals.

use super::{envfile, header, BindSpec};
use crate::config::{Config, HttpMode, TlsVersion};
use clap::parser::ValueSource;
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

/// gunicorn's WSGI worker classes: ferrocorn's WSGI thread pool serves them.
const WSGI_WORKER_CLASSES: [&str; 2] = ["sync", "gthread"];

/// gunicorn's green-thread worker classes: their monkey-patching has no equivalent.
const GREEN_WORKER_CLASSES: [&str; 3] = ["gevent", "eventlet", "tornado"];

/// hypercorn's worker classes: they name the event loop.
const LOOP_WORKER_CLASSES: [&str; 2] = ["asyncio", "uvloop"];

type Notes = Vec<String>;

pub fn review(config: &mut Config, matches: &ArgMatches) -> Result<(), String> {
    let mut notes = Notes::new();
    worker_class(config, matches, &mut notes)?;
    process_options(config, &mut notes)?;
    implementation_names(config, matches, &mut notes)?;
    tls(config)?;
    addresses_and_headers(config, matches)?;
    environment_and_directory(config)?;
    config.cli.notes = notes;
    Ok(())
}

/// `-k`: gunicorn's ASGI worker classes are ferrocorn's worker, its sync and gthread
/// ones the WSGI thread pool; hypercorn's name a loop.
fn worker_class(
    config: &mut Config,
    matches: &ArgMatches,
    notes: &mut Notes,
) -> Result<(), String> {
    let Some(class) = config.cli.worker_class.clone() else {
        return Ok(());
    };
    if LOOP_WORKER_CLASSES.contains(&class.as_str()) {
        if let Some(other) = raw(matches, "loop_kind").filter(|l| *l != class) {
            return Err(format!("--worker-class {class} contradicts --loop {other}"));
        }
        notes.push(format!(
            "--worker-class {class}: hypercorn's worker class names the event loop; using \
             --loop {class}"
        ));
        config.loop_kind = class;
        return Ok(());
    }
    if WSGI_WORKER_CLASSES.contains(&class.as_str()) {
        use crate::wsgi::options::Interface;
        if let Some(other) = raw(matches, "interface").filter(|i| i != "wsgi") {
            return Err(format!(
                "--worker-class {class} contradicts --interface {other}"
            ));
        }
        config.interface.interface = Interface::Wsgi;
        // gunicorn runs one request at a time per sync worker, and gthread's --threads
        // defaults to 1: an app that isn't thread-safe keeps that unless --threads says.
        if raw(matches, "threads").is_none() {
            config.interface.threads = 1;
        }
        notes.push(format!(
            "--worker-class {class}: the app is served as WSGI on ferrocorn's thread pool \
             ({} thread(s) per worker, --threads)",
            config.interface.threads
        ));
        return Ok(());
    }
    if GREEN_WORKER_CLASSES.contains(&class.as_str()) {
        return Err(format!(
            "--worker-class {class}: ferrocorn has no green-thread workers; serve the app \
             with -k gthread --threads N (WSGI on a thread pool) or as an ASGI app"
        ));
    }
    if class == "trio" {
        return Err(
            "--worker-class trio: ferrocorn runs apps on asyncio (trio is not supported)".into(),
        );
    }
    if !ASGI_WORKER_CLASSES.contains(&class.as_str()) {
        return Err(format!(
            "--worker-class {class}: unknown worker class; ferrocorn takes -k asgi (or \
             uvicorn.workers.UvicornWorker) for ASGI apps and -k sync or -k gthread for WSGI"
        ));
    }
    if class != "asgi" && class != "ferrocorn" {
        notes.push(format!(
            "--worker-class {class}: ferrocorn's own ASGI worker serves the app (Rust HTTP, \
             asyncio loop)"
        ));
    }
    Ok(())
}

/// gunicorn's process options that ferrocorn leaves to the supervisor, or has no use for.
fn process_options(config: &Config, notes: &mut Notes) -> Result<(), String> {
    let o = &config.cli;
    if o.daemon {
        return Err(
            "--daemon: ferrocorn does not daemonize; run it under systemd, a container or \
                    supervisord (docs/migrating.md)"
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
    if o.preload {
        notes.push(
            "--preload: the master never imports the app; each worker imports it in a fresh \
             interpreter"
                .into(),
        );
    }
    Ok(())
}

/// uvicorn's implementation choices: accepted, with what ferrocorn uses instead.
fn implementation_names(
    config: &Config,
    matches: &ArgMatches,
    notes: &mut Notes,
) -> Result<(), String> {
    match raw(matches, "http").as_deref() {
        Some(http @ ("h11" | "httptools")) => notes.push(format!(
            "--http {http}: ferrocorn parses HTTP/1.1 in Rust; serving HTTP/1.1 only, as \
             uvicorn with {http} does"
        )),
        Some("zttp") => notes.push(
            "--http zttp: ferrocorn serves HTTP/1.1 and HTTP/2 with its own Rust stack".into(),
        ),
        _ => {}
    }
    if config.cli.http2 {
        if config.http == HttpMode::Http1 {
            return Err("--http2 asks for HTTP/2 but --http allows HTTP/1.1 only".into());
        }
        notes.push("--http2: ferrocorn serves HTTP/2 with --http auto (the default)".into());
    }
    if let Some(ws @ ("websockets" | "websockets-sansio" | "wsproto")) =
        raw(matches, "ws").as_deref()
    {
        notes.push(format!(
            "--ws {ws}: ferrocorn's WebSocket protocol is implemented in Rust"
        ));
    }
    Ok(())
}

/// `--ssl-version` (Python's ssl.PROTOCOL_* numbers) and `--ssl-ciphers`, as far as
/// rustls can honour them (src/tls.rs applies them).
fn tls(config: &Config) -> Result<(), String> {
    let version = config.cli.ssl_version;
    match version {
        2 | 17 => {}
        5 if config.ssl_min_version == TlsVersion::Tls13 => {
            return Err("--ssl-version 5 (TLS 1.2 only) contradicts --ssl-min-version 1.3".into());
        }
        5 => {}
        0 | 1 => {
            return Err(format!(
                "--ssl-version {version}: SSLv2/SSLv3 are not supported (TLS 1.2 and 1.3 are)"
            ));
        }
        3 | 4 => {
            return Err(format!(
                "--ssl-version {version} (TLS 1.{}): ferrocorn's TLS (rustls) supports TLS 1.2 \
                 and 1.3 only",
                version - 3
            ));
        }
        16 => {
            return Err(
                "--ssl-version 16 is PROTOCOL_TLS_CLIENT, a client protocol; use 17".into(),
            );
        }
        other => {
            return Err(format!(
                "--ssl-version {other}: not one of Python's ssl.PROTOCOL_* numbers ferrocorn \
                 serves (17 or 2: TLS 1.2 and 1.3; 5: TLS 1.2 only)"
            ));
        }
    }
    if let Some(spec) = &config.cli.ssl_ciphers {
        super::tls12_suites(spec)?;
    }
    Ok(())
}

fn addresses_and_headers(config: &Config, matches: &ArgMatches) -> Result<(), String> {
    let o = &config.cli;
    for text in &o.header {
        header::parse(text)?;
    }
    for spec in &o.bind {
        BindSpec::parse(spec)?;
    }
    if !o.bind.is_empty() {
        for id in ["host", "port"] {
            if matches.value_source(id) != Some(ValueSource::DefaultValue) {
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
    Ok(())
}

/// The env file checked (and made absolute, so SIGHUP reads the same file after
/// --chdir), --chdir applied, and gunicorn's "-" for the standard streams.
fn environment_and_directory(config: &mut Config) -> Result<(), String> {
    let env_file = config.cli.env_file.clone().map(absolute);
    envfile::worker_environment(env_file.as_deref(), &config.cli.env)?;
    config.cli.env_file = env_file;
    if let Some(dir) = &config.cli.chdir {
        std::env::set_current_dir(dir).map_err(|e| format!("--chdir {dir}: {e}"))?;
    }
    for path in [&mut config.error_logfile, &mut config.access_logfile] {
        if path.as_deref() == Some("-") {
            *path = None;
        }
    }
    Ok(())
}

/// The value as typed (lowercase), None when the default applies.
fn raw(matches: &ArgMatches, id: &str) -> Option<String> {
    if matches.value_source(id) == Some(ValueSource::DefaultValue) {
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
