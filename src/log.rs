//! uvicorn-style logging written straight from Rust: `INFO:     message` on stderr, and
//! the access log on stdout. No Python call per request.

use crate::config::LogLevel;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
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
    // One write per line so lines of concurrent processes don't interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One access-log line, on stdout as uvicorn writes it.
pub fn access(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Info, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Warning, &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::config::LogLevel::Error, &format!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::enabled($crate::config::LogLevel::Debug) { $crate::log::log($crate::config::LogLevel::Debug, &format!($($t)*)) } } }
