//! uvicorn-style logging written straight from Rust: `INFO:     message` on stderr (or
//! --error-logfile), and the access log on stdout (or --access-logfile). No Python call
//! per request. SIGUSR1 reopens the files (for logrotate).

use crate::config::LogLevel;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

/// A log destination: a file opened in append mode, or the standard stream.
struct Sink {
    path: Option<String>,
    file: Option<File>,
}

static ERROR_SINK: Mutex<Sink> = Mutex::new(Sink {
    path: None,
    file: None,
});
static ACCESS_SINK: Mutex<Sink> = Mutex::new(Sink {
    path: None,
    file: None,
});

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

fn open(path: &str) -> std::io::Result<File> {
    // Append mode: each line is one write, so processes sharing a file don't interleave.
    OpenOptions::new().create(true).append(true).open(path)
}

/// Send the error log and/or the access log to files instead of stderr/stdout.
pub fn set_files(error: Option<&str>, access: Option<&str>) -> std::io::Result<()> {
    for (sink, path) in [(&ERROR_SINK, error), (&ACCESS_SINK, access)] {
        let mut sink = sink.lock().unwrap();
        sink.file = path.map(open).transpose()?;
        sink.path = path.map(str::to_string);
    }
    Ok(())
}

/// Reopen the log files at their paths (after logrotate moved them away).
pub fn reopen() -> std::io::Result<()> {
    for sink in [&ERROR_SINK, &ACCESS_SINK] {
        let mut sink = sink.lock().unwrap();
        if let Some(path) = sink.path.clone() {
            sink.file = Some(open(&path)?);
        }
    }
    Ok(())
}

fn write_line(sink: &Mutex<Sink>, stdout: bool, line: &[u8]) {
    let mut sink = sink.lock().unwrap();
    match sink.file.as_mut() {
        Some(file) => {
            let _ = file.write_all(line);
        }
        None if stdout => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line);
            let _ = out.flush();
        }
        None => {
            let _ = std::io::stderr().lock().write_all(line);
        }
    }
}

fn prefix(level: LogLevel) -> &'static str {
    // Padded to ten columns as uvicorn's default formatter does.
    match level {
        LogLevel::Trace => "TRACE:    ",
        LogLevel::Debug => "DEBUG:    ",
        LogLevel::Info => "INFO:     ",
        LogLevel::Warning => "WARNING:  ",
        LogLevel::Error => "ERROR:    ",
        LogLevel::Critical => "CRITICAL: ",
    }
}

pub fn log(level: LogLevel, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(message.len() + 12);
    line.push_str(prefix(level));
    line.push_str(message);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_line(&ERROR_SINK, false, line.as_bytes());
}

/// One access-log line.
pub fn access(line: &str) {
    write_line(&ACCESS_SINK, true, line.as_bytes());
}

/// The start of an HTTP access line, made when the request arrives:
/// `127.0.0.1:51234 - "GET /root/path?q=1 HTTP/1.1"`. As uvicorn, the path includes the
/// root path the app is mounted at.
pub fn access_request(
    client: Option<&dyn std::fmt::Display>,
    method: &http::Method,
    root_path: &str,
    target: &[u8],
    version: &str,
) -> Box<str> {
    // Empty without a client address (a Unix socket), as uvicorn writes it. The
    // client is the one forwarded headers named, if a trusted proxy sent them.
    let client = client.map_or_else(String::new, |a| a.to_string());
    let target = String::from_utf8_lossy(target);
    format!("{client} - \"{method} {root_path}{target} {version}\"").into_boxed_str()
}

/// The access line once the status is known, with its reason phrase as uvicorn
/// writes it: `... "GET / HTTP/1.1" 200 OK`.
pub fn access_response(request: &str, status: http::StatusCode) {
    let reason = status.canonical_reason().unwrap_or("");
    access(&format!(
        "INFO:     {request} {} {reason}\n",
        status.as_u16()
    ));
}

/// Where a raw dump (e.g. Python stacks) must go: the error log's fd.
pub fn error_fd() -> i32 {
    use std::os::fd::AsRawFd;
    let sink = ERROR_SINK.lock().unwrap();
    sink.file
        .as_ref()
        .map_or(libc::STDERR_FILENO, |f| f.as_raw_fd())
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Info, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Warning, &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Error, &format!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::enabled($crate::config::LogLevel::Debug) { $crate::log::log($crate::config::LogLevel::Debug, &format!($($t)*)) } } }
