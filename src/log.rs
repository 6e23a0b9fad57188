//! uvicorn-style logging written straight from Rust: `INFO:     message` on stderr (or
//! --error-logfile), and the access log on stdout (or --access-logfile). No Python call
//! per request. SIGUSR1 reopens the files (for logrotate). Level names are coloured as
//! uvicorn colours them with --use-colors, or by default on a terminal. How each access
//! line is made is src/access_log/; Python's logging of the `uvicorn.*` and
//! `ferrocorn.*` loggers writes through here too (python/ferrocorn/_logging.py).
//!
//! A log that can't be written (a full disk, /dev/full, a closed stdout pipe) never
//! stops the server: the line is dropped, the first failure is reported once where it
//! still can be (an access-log failure on the error log, an error-log file failure on
//! stderr), and the next line that gets through is preceded by a count of what was
//! lost. EPIPE is an error return here, not a signal: the interpreter of the master
//! and of every worker ignores SIGPIPE (and exec'd children get it back by default).

use crate::config::LogLevel;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
/// Colour the error log's level names / the access line (--use-colors), decided by
/// `set_colors` once the sinks are known.
static ERROR_COLORS: AtomicBool = AtomicBool::new(false);
static ACCESS_COLORS: AtomicBool = AtomicBool::new(false);

/// A log destination: a file opened in append mode, or the standard stream.
struct Sink {
    path: Option<String>,
    file: Option<File>,
    /// Set while writes fail: lines dropped since, and when the first one failed.
    outage: Option<Outage>,
}

struct Outage {
    since: Instant,
    lost_lines: u64,
}

impl Sink {
    const fn new() -> Self {
        Sink {
            path: None,
            file: None,
            outage: None,
        }
    }

    /// How the warnings name this destination.
    fn describe(&self, stdout: bool) -> String {
        match (&self.path, stdout) {
            (Some(path), true) => format!("the access log {path}"),
            (Some(path), false) => format!("the error log {path}"),
            (None, true) => "the access log (stdout)".into(),
            (None, false) => "the error log (stderr)".into(),
        }
    }
}

static ERROR_SINK: Mutex<Sink> = Mutex::new(Sink::new());
static ACCESS_SINK: Mutex<Sink> = Mutex::new(Sink::new());

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

/// --use-colors / --no-use-colors, or None: colour what goes to a terminal (uvicorn
/// looks at stdout only; a file is never coloured unless asked for).
pub fn set_colors(choice: Option<bool>) {
    let decide = |sink: &Mutex<Sink>, fd: i32| {
        choice.unwrap_or_else(|| {
            // SAFETY: isatty only asks the kernel about an fd number.
            sink.lock().unwrap().file.is_none() && unsafe { libc::isatty(fd) } == 1
        })
    };
    ERROR_COLORS.store(decide(&ERROR_SINK, libc::STDERR_FILENO), Ordering::Relaxed);
    ACCESS_COLORS.store(decide(&ACCESS_SINK, libc::STDOUT_FILENO), Ordering::Relaxed);
}

pub fn access_colors() -> bool {
    ACCESS_COLORS.load(Ordering::Relaxed)
}

pub fn error_colors() -> bool {
    ERROR_COLORS.load(Ordering::Relaxed)
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

fn write_raw(sink: &mut Sink, stdout: bool, bytes: &[u8]) -> std::io::Result<()> {
    match sink.file.as_mut() {
        Some(file) => file.write_all(bytes),
        None if stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()
        }
        None => std::io::stderr().lock().write_all(bytes),
    }
}

/// Write `line` (one or more whole lines); a failure drops it and is reported once.
fn write_line(sink_lock: &Mutex<Sink>, stdout: bool, line: &[u8]) {
    let mut sink = sink_lock.lock().unwrap();
    if let Some(outage) = &sink.outage {
        // Say what was lost before the first line that gets through again.
        let notice = format!(
            "{}{} log lines were lost: {} could not be written for {:.1}s\n",
            prefix(LogLevel::Warning, !stdout && error_colors()),
            outage.lost_lines,
            sink.describe(stdout),
            outage.since.elapsed().as_secs_f64()
        );
        if write_raw(&mut sink, stdout, notice.as_bytes()).is_ok() {
            sink.outage = None;
        }
    }
    let failed = match sink.outage {
        Some(_) => Some(None),
        None => write_raw(&mut sink, stdout, line).err().map(Some),
    };
    let Some(first_error) = failed else {
        return;
    };
    let lines = line.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
    let outage = sink.outage.get_or_insert(Outage {
        since: Instant::now(),
        lost_lines: 0,
    });
    outage.lost_lines += lines;
    let Some(error) = first_error else {
        return; // Already reported.
    };
    let warning = format!(
        "{} can't be written ({error}); dropping its lines until it can, then counting \
         what was lost",
        sink.describe(stdout)
    );
    let to_stderr = !stdout && sink.file.is_some();
    drop(sink);
    if stdout {
        // The error log is another destination (never the other way round, so the two
        // locks are only ever taken in this order).
        log(LogLevel::Warning, &warning);
    } else if to_stderr {
        // The error log file failed; stderr may still reach someone (a journal).
        let line = format!("{}{warning}\n", prefix(LogLevel::Warning, false));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    // An error log on stderr that fails has nowhere left to say so: the count of lost
    // lines is written when it works again.
}

/// `INFO:     `: the level name padded to ten columns as uvicorn's default formatter
/// does, its name coloured as uvicorn colours it when `colors`.
pub fn prefix(level: LogLevel, colors: bool) -> &'static str {
    match (level, colors) {
        (LogLevel::Trace, false) => "TRACE:    ",
        (LogLevel::Debug, false) => "DEBUG:    ",
        (LogLevel::Info, false) => "INFO:     ",
        (LogLevel::Warning, false) => "WARNING:  ",
        (LogLevel::Error, false) => "ERROR:    ",
        (LogLevel::Critical, false) => "CRITICAL: ",
        (LogLevel::Trace, true) => "\x1b[34mTRACE\x1b[0m:    ",
        (LogLevel::Debug, true) => "\x1b[36mDEBUG\x1b[0m:    ",
        (LogLevel::Info, true) => "\x1b[32mINFO\x1b[0m:     ",
        (LogLevel::Warning, true) => "\x1b[33mWARNING\x1b[0m:  ",
        (LogLevel::Error, true) => "\x1b[31mERROR\x1b[0m:    ",
        (LogLevel::Critical, true) => "\x1b[91mCRITICAL\x1b[0m: ",
    }
}

pub fn log(level: LogLevel, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(message.len() + 12);
    line.push_str(prefix(level, error_colors()));
    line.push_str(message);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_line(&ERROR_SINK, false, line.as_bytes());
}

thread_local! {
    /// Access lines made on a worker's I/O thread, written together when that thread
    /// runs out of work (`flush_access_batch`, called as its runtime parks): one write
    /// for all the responses of a busy turn instead of one write per line, which was
    /// most of what the access log cost (bench/: hello world, access log on vs off).
    /// A line is written before the thread sleeps, so it is never held back while the
    /// worker is idle; only a SIGKILL in the middle of a turn loses that turn's lines.
    static ACCESS_BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A batch this big is written at once, so a turn that never ends can't grow it.
const ACCESS_BATCH_MAX: usize = 64 * 1024;

/// Batch this thread's access lines until `flush_access_batch` (the I/O thread).
pub fn batch_access_on_this_thread() {
    ACCESS_BATCH.with(|b| *b.borrow_mut() = Some(Vec::with_capacity(8 * 1024)));
}

/// Write what this thread batched (its runtime is about to park, or stops).
pub fn flush_access_batch() {
    ACCESS_BATCH.with(|b| {
        if let Some(batch) = b.borrow_mut().as_mut().filter(|batch| !batch.is_empty()) {
            write_line(&ACCESS_SINK, true, batch);
            batch.clear();
        }
    });
}

/// One access-log line.
pub fn access(line: &str) {
    let batched = ACCESS_BATCH.with(|b| match b.borrow_mut().as_mut() {
        Some(batch) => {
            batch.extend_from_slice(line.as_bytes());
            if batch.len() >= ACCESS_BATCH_MAX {
                write_line(&ACCESS_SINK, true, batch);
                batch.clear();
            }
            true
        }
        None => false,
    });
    if !batched {
        write_line(&ACCESS_SINK, true, line.as_bytes());
    }
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
