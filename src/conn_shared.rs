//! What every connection of a worker shares, whatever protocol it speaks: the bridge to
//! the event loop, the request counters, timeouts, and each protocol's settings. It
//! sits below the protocol modules (http1, http2, ws): they all use it, and it names
//! none of them.

use crate::asgi::bridge::Bridge;
use crate::asgi::exchange::InflightGuard;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every connection of a worker shares.
pub struct ConnShared {
    pub bridge: Arc<Bridge>,
    pub inflight: Arc<AtomicUsize>,
    pub limits: Limits,
    pub limit_concurrency: Option<usize>,
    pub head: HeadOptions,
    /// None with --no-access-log.
    pub access_log: Option<crate::access_log::AccessLog>,
    pub keep_alive: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub limit_request_body: Option<u64>,
    /// --worker-connections.
    pub max_connections: Option<usize>,
    /// Counts requests for --max-requests.
    pub recycle: Option<crate::worker::control::Recycle>,
    /// Python -> I/O wakeups of http exchanges, handed out by one task.
    pub wakeups: Arc<crate::asgi::exchange::IoWakeups>,
    /// None with --ws none.
    pub ws: Option<WsSettings>,
    /// Set once on a graceful stop: open WebSockets close with 1012.
    pub ws_close: watch::Sender<bool>,
    pub http2: H2Settings,
    /// Set when serving HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Forwarded headers and the PROXY protocol.
    pub proxy: crate::proxy::ProxySettings,
    /// --health-path and --ready-path, answered before the app.
    pub health: Arc<crate::deploy::health::Health>,
    /// --max-requests-per-connection, --max-connection-age, --drain-idle-grace.
    pub bounds: crate::recycling::conn_budget::ConnBounds,
}

impl ConnShared {
    /// Counts a new request in, or refuses it (None, logged) when that would go over
    /// --limit-concurrency; the caller then answers 503. HTTP/1 and HTTP/2 share it.
    pub fn admit(&self) -> Option<InflightGuard> {
        let (guard, inflight) = InflightGuard::enter(&self.inflight);
        if self.limit_concurrency.is_some_and(|limit| inflight > limit) {
            crate::warn!("Exceeded concurrency limit.");
            return None;
        }
        Some(guard)
    }
}

/// Request-head limits (--limit-request-line, --limit-request-fields,
/// --limit-request-field-size, --h11-max-incomplete-event-size).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
    /// A cap on the whole head while it is incomplete (uvicorn's h11 option).
    pub max_incomplete_head: Option<usize>,
}

impl Limits {
    /// The most bytes a head may take; beyond it the client is refused.
    pub fn max_head(&self) -> usize {
        let by_fields = self.request_line + 2 + self.fields * (self.field_size + 2) + 2;
        self.max_incomplete_head
            .map_or(by_fields, |cap| cap.min(by_fields))
    }
}

/// Response-head options (--server-header, --date-header, --header).
#[derive(Default)]
pub struct HeadOptions {
    pub server_header: bool,
    pub date_header: bool,
    /// --header: sent before the app's own headers, as uvicorn does (an app header of
    /// the same name is sent too).
    pub extra: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Per-worker WebSocket options (--ws-*).
pub struct WsSettings {
    pub max_size: usize,
    pub max_queue: usize,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    pub per_message_deflate: bool,
}

/// Per-worker HTTP/2 options (--http, --http2-*).
#[derive(Clone, Copy)]
pub struct H2Settings {
    /// Cleartext connections may open with the HTTP/2 preface.
    pub prior_knowledge: bool,
    /// `Upgrade: h2c` is honoured.
    pub upgrade: bool,
    /// Every connection speaks HTTP/2 (--http 2).
    pub only: bool,
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub max_frame_size: u32,
}
