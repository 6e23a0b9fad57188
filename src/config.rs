//! Command-line options. One struct serves the master (which parses argv) and the
//! workers (which receive it as JSON over the control channel), so both always agree.
//!
//! Flag names follow uvicorn where uvicorn has the option, gunicorn for the process
//! options uvicorn lacks (`--timeout`, `--graceful-timeout`, `--max-requests-jitter`,
//! `--limit-request-*`).

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LifespanMode {
    Auto,
    On,
    Off,
}

/// `--loop`: a name ferrocorn knows, or a `module:function` loop factory.
fn parse_loop(value: &str) -> Result<String, String> {
    let known = ["auto", "asyncio", "uvloop", "zuvloop", "none"];
    let lower = value.to_ascii_lowercase();
    if known.contains(&lower.as_str()) {
        return Ok(lower);
    }
    match value.split_once(':') {
        Some((module, function)) if !module.is_empty() && !function.is_empty() => Ok(value.into()),
        _ => Err(format!(
            "expected one of {} or module:function",
            known.join(", ")
        )),
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// `--ws`: WebSocket support. The uvicorn implementation names mean `auto`: ferrocorn
/// has one implementation, in Rust.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WsMode {
    Auto,
    None,
    Websockets,
    WebsocketsSansio,
    Wsproto,
}

/// `--http`: which HTTP versions a connection may speak.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// HTTP/1.1, and HTTP/2 by ALPN, by prior knowledge or by `Upgrade: h2c`.
    #[value(alias = "zttp")]
    Auto,
    /// HTTP/1.1 only.
    #[value(name = "1", alias = "h11", alias = "httptools")]
    #[serde(rename = "1")]
    Http1,
    /// HTTP/2 only.
    #[value(name = "2")]
    #[serde(rename = "2")]
    Http2,
}

/// `--task-impl`: how HTTP requests run on the event loop (python/ferrocorn/_requests.py).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskImpl {
    /// An asyncio Task per request, as uvicorn makes them; on Python 3.12+ it starts
    /// eagerly: its first step runs when the request is dispatched (README).
    Task,
    /// An asyncio Task per request made by `loop.create_task` on every Python, its
    /// first step on the loop's next turn: exactly uvicorn's.
    #[serde(rename = "create-task")]
    CreateTask,
    /// Requests that finish without suspending run inline in a few long-lived runner
    /// Tasks: faster, but `asyncio.all_tasks()` lists the runners and a done-callback
    /// added to `current_task()` runs when the runner ends (README).
    Runner,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    #[serde(rename = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(
    name = "ferrocorn",
    version,
    about = "A fast ASGI application server with a gunicorn-grade process manager.",
    after_help = "Example: ferrocorn main:app --host 0.0.0.0 --port 8000 --workers 4"
)]
pub struct Config {
    /// The ASGI application, as "module:attribute" (attribute may be dotted).
    #[arg(value_name = "APP")]
    pub app: String,

    /// Bind socket to this host. IPv6 addresses are accepted ("::1", "::").
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Bind socket to this port. 0 picks a free port (logged at startup).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Bind to a UNIX domain socket instead of host/port.
    #[arg(long)]
    pub uds: Option<String>,

    /// Serve on an already-bound listening socket inherited as this file descriptor.
    #[arg(long)]
    pub fd: Option<i32>,

    /// Maximum number of pending connections in the listen queue.
    #[arg(long, default_value_t = 2048)]
    pub backlog: i32,

    /// Number of worker processes, or "auto": one per CPU this process may use (the
    /// cgroup CPU quota and the affinity mask; logged at startup).
    #[arg(long, env = "WEB_CONCURRENCY", default_value = "1",
          value_parser = crate::balance::WorkerCount::parse)]
    pub workers: crate::balance::WorkerCount,

    /// Look for APP in this directory (prepended to sys.path).
    #[arg(long, default_value = ".")]
    pub app_dir: String,

    /// Treat APP as a factory: call it with no arguments to get the application.
    #[arg(long)]
    pub factory: bool,

    /// Lifespan protocol: "auto" tolerates apps without it, "on" requires it.
    #[arg(long, value_enum, default_value = "auto")]
    pub lifespan: LifespanMode,

    /// Event loop: "auto" uses uvloop when it is installed; "asyncio", "uvloop",
    /// "zuvloop", "none" (asyncio's default policy), or "module:function" returning a
    /// new event loop, as uvicorn's custom loop factory.
    #[arg(long = "loop", default_value = "auto", value_name = "LOOP",
          value_parser = parse_loop)]
    pub loop_kind: String,

    /// How HTTP requests run: "task" (an asyncio Task each, as uvicorn) or "runner"
    /// (opt-in speed-up; see the README for what an app can observe).
    #[arg(long, value_enum, default_value = "task")]
    pub task_impl: TaskImpl,

    /// ASGI root_path for apps mounted below a URL prefix.
    #[arg(long, default_value = "")]
    pub root_path: String,

    /// Close keep-alive connections idle for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout_keep_alive: f64,

    /// Close connections that have not sent complete request headers within this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout_request_header: f64,

    /// Seconds to let in-flight requests finish on a graceful stop before cancelling them.
    #[arg(long)]
    pub timeout_graceful_shutdown: Option<f64>,

    /// Log level.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,

    /// Write an access log line per request (on by default).
    #[arg(long, overrides_with = "no_access_log")]
    pub access_log: bool,
    /// Do not write the access log.
    #[arg(long)]
    pub no_access_log: bool,

    /// Send a "server: ferrocorn" header (on by default).
    #[arg(long, overrides_with = "no_server_header")]
    pub server_header: bool,
    /// Do not send the server header.
    #[arg(long)]
    pub no_server_header: bool,

    /// Send a "date" header (on by default).
    #[arg(long, overrides_with = "no_date_header")]
    pub date_header: bool,
    /// Do not send the date header.
    #[arg(long)]
    pub no_date_header: bool,

    /// Answer 503 when a worker already has this many requests in flight.
    #[arg(long)]
    pub limit_concurrency: Option<usize>,

    /// Maximum size of the request line in bytes (414 beyond it).
    #[arg(long, default_value_t = 8190)]
    pub limit_request_line: usize,

    /// Maximum number of request header fields (431 beyond it).
    #[arg(long, default_value_t = 100)]
    pub limit_request_fields: usize,

    /// Maximum size of one request header field, name and value, in bytes (431 beyond it).
    #[arg(long, default_value_t = 8190)]
    pub limit_request_field_size: usize,

    /// Largest request body accepted, in bytes (413 beyond it). Off by default.
    #[arg(long)]
    pub limit_request_body: Option<u64>,

    /// Close a request whose body stops arriving for this many seconds while the app
    /// waits for it (408 if the app hasn't been called yet).
    #[arg(long, default_value_t = 30.0)]
    pub timeout_request_body: f64,

    /// Most simultaneous connections per worker; beyond it a new connection gets 503
    /// and is closed. Off by default.
    #[arg(long)]
    pub worker_connections: Option<usize>,

    /// Restart a worker (the rolling way) after it has served this many requests.
    #[arg(long, alias = "limit-max-requests")]
    pub max_requests: Option<u64>,

    /// Add a random 0..=J to each worker's --max-requests, so workers don't all restart
    /// at once.
    #[arg(long, alias = "limit-max-requests-jitter", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Kill and replace a worker whose event loop has been blocked this many seconds
    /// (its Python stacks are logged first). 0 disables.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,

    /// Seconds the master waits for stopping workers before killing them (default:
    /// --timeout-graceful-shutdown plus 5 s when that is set, else no limit).
    #[arg(long)]
    pub graceful_timeout: Option<f64>,

    /// Write the error log to this file instead of stderr (reopened on SIGUSR1).
    #[arg(long)]
    pub error_logfile: Option<String>,

    /// Write the access log to this file instead of stdout (reopened on SIGUSR1).
    #[arg(long)]
    pub access_logfile: Option<String>,

    /// Write the master's pid to this file.
    #[arg(long)]
    pub pid: Option<String>,

    /// WebSocket support; "none" serves upgrade requests as plain HTTP.
    #[arg(long, value_enum, default_value = "auto")]
    pub ws: WsMode,

    /// Largest incoming WebSocket message in bytes (close 1009 beyond it).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub ws_max_size: usize,

    /// Incoming WebSocket messages buffered for the app before the server stops reading.
    #[arg(long, default_value_t = 32)]
    pub ws_max_queue: usize,

    /// Seconds between the server's pings to a WebSocket client; 0 disables them.
    #[arg(long, default_value_t = 20.0)]
    pub ws_ping_interval: f64,

    /// Close a WebSocket (1011) whose client has not answered a ping within this many seconds.
    #[arg(long, default_value_t = 20.0)]
    pub ws_ping_timeout: f64,

    /// Negotiate permessage-deflate compression when the client offers it.
    #[arg(long, default_value = "true", value_name = "BOOL", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ws_per_message_deflate: bool,

    /// HTTP versions: "auto" (1.1 and 2), "1" (1.1 only), "2" (2 only).
    #[arg(long, value_enum, default_value = "auto")]
    pub http: HttpMode,

    /// Streams one HTTP/2 client may have open at once.
    #[arg(long, default_value_t = 100)]
    pub http2_max_concurrent_streams: u32,

    /// Largest HTTP/2 header list accepted, in bytes.
    #[arg(long, default_value_t = 65536)]
    pub http2_max_header_list_size: u32,

    /// Largest HTTP/2 frame accepted, in bytes (16384 to 16777215).
    #[arg(long, default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(16384..=16_777_215))]
    pub http2_max_frame_size: u32,

    /// TLS certificate chain (PEM). With --ssl-keyfile, serves HTTPS.
    #[arg(long)]
    pub ssl_certfile: Option<String>,

    /// TLS private key (PEM).
    #[arg(long)]
    pub ssl_keyfile: Option<String>,

    /// Password of an encrypted --ssl-keyfile.
    #[arg(long)]
    pub ssl_keyfile_password: Option<String>,

    /// CA certificates (PEM) to verify client certificates against.
    #[arg(long)]
    pub ssl_ca_certs: Option<String>,

    /// Client certificates: 0 not asked for, 1 optional, 2 required (as Python's ssl.CERT_*).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub ssl_cert_reqs: u8,

    /// Oldest TLS version accepted.
    #[arg(long, value_enum, default_value = "1.2")]
    pub ssl_min_version: TlsVersion,

    #[command(flatten)]
    #[serde(flatten)]
    pub cli: crate::cli::DropinOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub logging: crate::logging_options::LoggingOptions,

    /// Internal, for `ferrocorn check` (python/ferrocorn/_check.py): each worker writes
    /// its plain-python contract report into this directory once lifespan startup is done.
    #[arg(long, hide = true)]
    pub check_report: Option<String>,

    #[command(flatten)]
    #[serde(flatten)]
    pub proxy: crate::proxy::options::ProxyOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub reload: crate::master::reload::ReloadOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub interface: crate::wsgi::options::InterfaceOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub deploy: crate::deploy::options::DeployOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub recycling: crate::recycling::RecyclingOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub balance: crate::balance::BalanceOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub metrics: crate::metrics::MetricsOptions,

    #[command(flatten)]
    #[serde(flatten)]
    pub memory: crate::memory::MemoryOptions,
}

impl Config {
    pub fn access_log_enabled(&self) -> bool {
        !self.no_access_log
    }
    pub fn server_header_enabled(&self) -> bool {
        !self.no_server_header
    }
    pub fn date_header_enabled(&self) -> bool {
        !self.no_date_header
    }
    pub fn websockets_enabled(&self) -> bool {
        self.ws != WsMode::None
    }
    pub fn tls_enabled(&self) -> bool {
        self.ssl_certfile.is_some()
    }
}
