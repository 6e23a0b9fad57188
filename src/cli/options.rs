//! The options that make ferrocorn a drop-in for the start commands people already run:
//! the rest of uvicorn 0.54's options, gunicorn's process options that don't clash with
//! uvicorn's, and the configuration sources (`--config`, `--env-file`, `--env`).
//!
//! They live apart from src/config.rs (flattened into `Config`) so that every helper
//! adding options keeps to its own struct; workers receive them with the rest of the
//! configuration.

use clap::Args;
use serde::{Deserialize, Serialize};

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct DropinOptions {
    /// Read options from this TOML file: any long option name as a key (dashes or
    /// underscores). The command line wins over FERROCORN_* variables, which win over
    /// the file.
    #[arg(short = 'c', long, value_name = "PATH")]
    pub config: Option<String>,

    /// Read environment variables from this dotenv file and give them to every worker
    /// (variables already set win, as with uvicorn). Read again on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<String>,

    /// Set an environment variable in every worker, as gunicorn's --env (repeatable;
    /// wins over the environment and --env-file).
    #[arg(short = 'e', long, value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    pub env: Vec<String>,

    /// A default response header, as "Name:Value" (repeatable). Sent on every HTTP/1,
    /// HTTP/2 and WebSocket handshake response, before the app's own headers.
    #[arg(long, value_name = "NAME:VALUE", action = clap::ArgAction::Append)]
    pub header: Vec<String>,

    /// Listen on this address (repeatable), as gunicorn: HOST:PORT, [IPv6]:PORT, HOST
    /// (port 8000), unix:PATH or fd://N. Replaces --host/--port/--uds/--fd.
    #[arg(short = 'b', long, value_name = "ADDRESS", action = clap::ArgAction::Append,
          conflicts_with_all = ["uds", "fd"])]
    pub bind: Vec<String>,

    /// Change to this directory before binding and loading the app (gunicorn's --chdir).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,

    /// gunicorn's worker class: "asgi" and uvicorn's worker classes
    /// (uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker, ...) are accepted;
    /// every ferrocorn worker is an ASGI worker.
    #[arg(short = 'k', long, value_name = "CLASS")]
    pub worker_class: Option<String>,

    /// gunicorn's --preload: accepted, with no effect: ferrocorn's master never imports
    /// the app (each worker imports it in a fresh interpreter).
    #[arg(long)]
    pub preload: bool,

    /// gunicorn's --daemon: refused; run ferrocorn under systemd, a container or
    /// another supervisor instead.
    #[arg(long)]
    pub daemon: bool,

    /// gunicorn's --user: refused; start ferrocorn as the user it should run as
    /// (systemd User=, docker --user).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// gunicorn's --group: refused, as --user.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// uvicorn's h11 limit on a request head still incomplete, in bytes: a head that
    /// grows past it is refused (431).
    #[arg(long, value_name = "BYTES")]
    pub h11_max_incomplete_event_size: Option<usize>,

    /// Seconds a worker started by a rolling restart (SIGHUP, --max-requests) has to
    /// become ready; past it, it is killed and the old worker keeps serving (uvicorn's
    /// meaning). No limit by default. A hung worker is caught by --timeout.
    #[arg(long, value_name = "SECONDS")]
    pub timeout_worker_healthcheck: Option<f64>,

    /// Run each request in a fresh, empty contextvars.Context, as uvicorn's option:
    /// hides context variables set during the lifespan startup or at import time.
    #[arg(long)]
    pub reset_contextvars: bool,

    /// Python's ssl protocol number, as uvicorn: 2 or 17 (TLS 1.2 and 1.3, the
    /// default) or 5 (TLS 1.2 only); TLS 1.0/1.1 (3, 4) are refused (rustls lacks them).
    #[arg(long, default_value_t = 17, value_name = "INT")]
    pub ssl_version: u32,

    /// TLS 1.2 cipher suites in OpenSSL's cipher-list syntax (names or keywords such
    /// as ECDHE+AESGCM:!aNULL). TLS 1.3 suites are always on, as with OpenSSL.
    #[arg(long, value_name = "CIPHERS")]
    pub ssl_ciphers: Option<String>,

    /// uvicorn's --http2 (needed there for HTTP/2): accepted; ferrocorn serves HTTP/2
    /// with --http auto (the default).
    #[arg(long)]
    pub http2: bool,

    /// What the master logs once at startup about options that name another server's
    /// internals. Filled by the parser; not an option.
    #[arg(skip)]
    #[serde(skip)]
    pub notes: Vec<String>,
}
