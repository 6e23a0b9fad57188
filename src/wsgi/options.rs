//! `--interface` and the WSGI thread-pool options, flattened into `Config`.

use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// How the app is called.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// Tell ASGI 3, ASGI 2 and WSGI apart by the app's signature.
    Auto,
    Asgi3,
    Asgi2,
    Wsgi,
}

/// Threads per worker for WSGI apps when `--threads` is not given. Measured with
/// bench/ (one worker, wrk -c64): see docs/wsgi.md.
pub const DEFAULT_THREADS: usize = 8;

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceOptions {
    /// Application interface: auto tells ASGI 3, ASGI 2 and WSGI apps apart by their
    /// signature (and says so when it can't).
    #[arg(long, value_enum, default_value = "auto")]
    pub interface: Interface,

    /// WSGI: threads per worker that run the app (gunicorn's --threads). Requests
    /// beyond them wait in the worker's queue (bounded by --limit-concurrency).
    #[arg(long, default_value_t = DEFAULT_THREADS, value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub threads: usize,

    /// WSGI: give up on a client that accepts no response bytes for this many seconds,
    /// so a slow client can't hold a thread longer (the iterable is then closed).
    #[arg(long, default_value_t = 30.0)]
    pub timeout_write: f64,
}
