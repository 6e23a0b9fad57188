//! One request/response exchange, shared by the I/O thread (HTTP/1.1 or HTTP/2) and the Python
//! thread (the ASGI app's `receive()` and `send()`).
//!
//! The I/O side fills the request body and takes the response; the Python side takes
//! the request body and fills the response. Each side wakes the other only when the
//! other is actually waiting: the I/O side through `io_waker`, the Python side through
//! a `Wake` event on the bridge (batched, see worker/bridge.rs).

use crate::asgi::bridge::{Bridge, Event};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

/// Backpressure on `send()`: response bytes queued beyond `high` make it wait for the
/// socket, and a waiting `send()` resumes once the queue has drained below `low`.
#[derive(Clone, Copy, Debug)]
pub struct Watermarks {
    pub high: usize,
    pub low: usize,
}

/// An HTTP/1 connection carries one response at a time, so it can queue more: a 1 MiB
/// response in 64 KiB chunks then goes out without the app waiting for the socket between
/// chunks, which saves a wake-up of each thread per wait (1 MiB streamed: -7% CPU per
/// request, bench/RESULTS.md 2026-11-27).
pub const HTTP1_WATER: Watermarks = Watermarks {
    high: 1024 * 1024,
    low: 256 * 1024,
};
/// An HTTP/2 stream or a WebSocket: a connection may carry a hundred streams, so each
/// queues less.
pub const STREAM_WATER: Watermarks = Watermarks {
    high: 256 * 1024,
    low: 64 * 1024,
};
/// What the streams of one HTTP/2 connection may queue together, roughly: a client that
/// grants no window and opens a hundred streams would otherwise hold a hundred times
/// `STREAM_WATER.high` (docs/reliability.md, the zero-window reader).
pub const HTTP2_CONNECTION_QUEUE: usize = 1024 * 1024;
/// The least a stream may queue however many share its connection.
const STREAM_WATER_FLOOR: usize = 16 * 1024;

impl Watermarks {
    /// The marks of a new HTTP/2 stream while `open` streams (itself included) share the
    /// connection: an equal share of `HTTP2_CONNECTION_QUEUE`, between 16 KiB and
    /// `STREAM_WATER.high`. A stream keeps the marks it was born with, so the sum stays
    /// near the budget (about 4 MiB for a hundred streams opened at once) without
    /// retuning streams that are running.
    pub fn for_http2_stream(open: usize) -> Watermarks {
        let high =
            (HTTP2_CONNECTION_QUEUE / open.max(1)).clamp(STREAM_WATER_FLOOR, STREAM_WATER.high);
        Watermarks {
            high,
            low: high / 4,
        }
    }
}

/// Per-connection facts, shared by every request on the connection.
pub struct ConnInfo {
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// The scope's `client` and `server` tuples, made once per connection on the
    /// Python thread.
    pub py_client: OnceLock<Py<PyAny>>,
    pub py_server: OnceLock<Py<PyAny>>,
    /// The listening socket's path, for connections accepted on a Unix socket.
    pub unix_path: Option<Box<str>>,
    /// Set on TLS connections: the scope's scheme is https/wss and has a `tls` extension.
    pub tls: Option<crate::tls::TlsInfo>,
    /// The `tls` extension dict, made once per connection on the Python thread.
    pub py_tls: OnceLock<Py<PyAny>>,
    /// The peer is in --forwarded-allow-ips: requests' forwarded headers are read.
    pub forwarded_trusted: bool,
    /// WSGI: the connection's environ values (REMOTE_ADDR, REMOTE_PORT, SERVER_NAME,
    /// SERVER_PORT), made once per connection.
    pub py_wsgi_addrs: OnceLock<Py<PyAny>>,
}

impl ConnInfo {
    pub fn new(
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
        tls: Option<crate::tls::TlsInfo>,
    ) -> ConnInfo {
        ConnInfo {
            client,
            server,
            py_client: OnceLock::new(),
            py_server: OnceLock::new(),
            unix_path: None,
            tls,
            py_tls: OnceLock::new(),
            forwarded_trusted: false,
            py_wsgi_addrs: OnceLock::new(),
        }
    }

    /// Whether any of the Python objects made for the scope or environ is set.
    pub fn holds_python(&self) -> bool {
        self.py_client.get().is_some()
            || self.py_server.get().is_some()
            || self.py_tls.get().is_some()
            || self.py_wsgi_addrs.get().is_some()
    }
}

/// What the app is called for: an http request or a WebSocket.
pub enum Session {
    Http(Arc<Exchange>),
    WebSocket(Arc<crate::asgi::ws_session::WsSession>),
}

/// What the Python side needs to call the app for a new request.
pub struct RequestHead {
    pub method: Method,
    /// The request-target exactly as sent (origin-form "/p?q", absolute-form, or "*").
    pub target: bytes::Bytes,
    pub version: Version,
    /// Lower-cased names, in the order the client sent them.
    pub headers: Vec<(HeaderName, bytes::Bytes)>,
    pub conn: Arc<ConnInfo>,
    pub session: Session,
    /// What a trusted proxy's forwarded headers said about this request, if anything.
    pub forwarded: Option<Box<crate::proxy::Forwarded>>,
    /// When the head was received (only with --metrics: the queueing histogram).
    pub arrived: Option<std::time::Instant>,
}

pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: crate::fields::Fields,
}

#[derive(Default)]
pub struct State {
    // Request body: filled by the I/O side, consumed by receive().
    pub body: VecDeque<Bytes>,
    pub body_end: bool,
    pub body_end_reported: bool,
    /// receive() is waiting and wants the I/O side to read more of the body.
    pub body_wanted: bool,
    pub disconnected: bool,
    /// The last response byte was handed to the socket.
    pub response_done: bool,
    /// A receive() / send() future waits for a Wake event.
    pub rx_waiting: bool,
    pub tx_waiting: bool,

    // Response: filled by send(), consumed by the I/O side.
    pub started: bool,
    pub head: Option<ResponseHead>,
    pub head_taken: bool,
    /// Send the head even though no body message has come yet (a streaming app that
    /// waits after http.response.start).
    pub head_flush: bool,
    pub body_seen: bool,
    pub chunks: VecDeque<Bytes>,
    pub queued_bytes: usize,
    /// The app sent its last body message.
    pub complete: bool,
    /// The app failed after starting the response: the connection must be closed.
    pub aborted: bool,
    /// A pathsend file, sent after `chunks`.
    pub file: Option<super::pathsend::FileBody>,
    /// Early hints (`link` values of one 103 each) not sent yet.
    pub hints: Vec<Vec<HeaderValue>>,
    /// http.response.start said `trailers: True`: the response completes with the
    /// trailers message, after the last body message (`body_done`).
    pub trailers_expected: bool,
    pub body_done: bool,
    pub trailers: Option<HeaderMap>,
    /// An empty buffer for the response's fields, from the connection's last response
    /// (HTTP/1.1): allocated once per connection on the Python thread rather than once
    /// per response and freed on the I/O thread.
    pub spare_fields: crate::fields::Fields,
}

/// What the I/O side takes next from a response.
pub enum Piece {
    Data(Bytes),
    File(super::pathsend::FileBody),
    /// The end, with the trailers if the app sent any.
    End(Option<HeaderMap>),
    /// The app failed mid-response.
    Abort,
}

/// Counts a request as in flight (for --limit-concurrency) until the exchange is gone
/// from both the I/O and the Python side.
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    /// Returns the guard and the worker's in-flight count including this request.
    pub fn enter(worker: &Arc<AtomicUsize>) -> (Self, usize) {
        let count = worker.fetch_add(1, Ordering::Relaxed) + 1;
        (InflightGuard(worker.clone()), count)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Python -> I/O wakeups, batched. Waking a connection task from the Python thread
/// costs a syscall per wake (tokio unparks the I/O thread each time); instead the
/// Python side queues the exchanges it changed and kicks the I/O thread once per event
/// loop iteration (and early, for a burst: `push`), and one task there wakes them all
/// with thread-local wakes.
#[derive(Default)]
pub struct IoWakeups {
    pending: Mutex<Vec<Arc<Exchange>>>,
    kick: tokio::sync::Notify,
}

impl IoWakeups {
    /// A burst of this many is handed over without waiting for the loop iteration's
    /// end (see `push`).
    const KICK_AT: usize = 32;

    /// Python thread: the I/O side of `ex` has something to do (after the next kick).
    ///
    /// A big batch of requests (one per connection of a busy client) makes its
    /// responses in one loop iteration; kicking only at its end would leave the I/O
    /// thread idle until the last one is made, then leave the loop idle while the I/O
    /// thread writes them all and reads the clients' next requests. Handing the first
    /// `KICK_AT` over at once lets both threads work at the same time. Measured on
    /// hello world with 64 connections (bench/RESULTS.md, 2026-12-03): 4-6% more
    /// requests per second on Python 3.12 at the same CPU; on 3.11 about as many, for
    /// 0.3-0.5 µs more CPU per request (glibc's arena locks contend once both threads
    /// free each other's buffers at the same time); FastAPI, where the app's time
    /// dwarfs the I/O, serves as many.
    pub fn push(&self, ex: Arc<Exchange>) {
        let mut pending = self.pending.lock().unwrap();
        pending.push(ex);
        if pending.len() == Self::KICK_AT {
            drop(pending);
            self.kick.notify_one();
        }
    }

    /// Python thread, once per loop iteration.
    pub fn kick(&self) {
        if !self.pending.lock().unwrap().is_empty() {
            self.kick.notify_one();
        }
    }

    /// The I/O thread's task that hands the wakes out.
    pub async fn run(&self) {
        let mut batch = Vec::new();
        loop {
            self.kick.notified().await;
            std::mem::swap(&mut *self.pending.lock().unwrap(), &mut batch);
            for ex in batch.drain(..) {
                ex.wake_io();
            }
        }
    }
}

/// Python futures of a waiting receive() / send(); touched only with the GIL held.
#[derive(Default)]
pub struct PyWaiters {
    pub rx: Option<Py<PyAny>>,
    pub tx: Option<Py<PyAny>>,
}

pub struct Exchange {
    state: Mutex<State>,
    /// A WSGI thread blocked on this exchange (reading the body, waiting for socket
    /// space) waits here; the I/O side notifies it instead of queueing a `Wake` event.
    changed: Condvar,
    io_waker: AtomicWaker,
    bridge: Arc<Bridge>,
    pub waiters: Mutex<PyWaiters>,
    pub water: Watermarks,
    /// `State::hints` has something: checked without the lock on every poll.
    hints_pending: AtomicBool,
    _inflight: InflightGuard,
}

impl Exchange {
    pub fn new(bridge: Arc<Bridge>, inflight: InflightGuard, water: Watermarks) -> Self {
        Exchange {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            io_waker: AtomicWaker::new(),
            bridge,
            waiters: Mutex::new(PyWaiters::default()),
            water,
            hints_pending: AtomicBool::new(false),
            _inflight: inflight,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Wakes the connection task: on the I/O thread by `IoWakeups::run`, and straight
    /// from WSGI threads (which have no event loop iteration to batch wakes over).
    pub fn wake_io(&self) {
        self.io_waker.wake();
    }

    /// Called by the I/O side after a change; wakes Python only if it waits.
    fn wake_python(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        let wake = st.rx_waiting || st.tx_waiting;
        if wake {
            st.rx_waiting = false;
            st.tx_waiting = false;
        }
        drop(st);
        if wake {
            if self.bridge.blocking_requests() {
                self.changed.notify_all();
            } else {
                self.bridge.push(Event::Wake(self.clone()));
            }
        }
    }

    /// WSGI thread: wait (without the GIL: the caller released it) until the I/O side
    /// changes something, or `timeout` passes. The caller sets `rx_waiting` or
    /// `tx_waiting` first, under the same lock, so no notification is lost.
    pub fn wait<'a>(
        &self,
        st: MutexGuard<'a, State>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(st, timeout).unwrap().0
    }

    // ----- I/O side -------------------------------------------------------------

    pub fn push_body(self: &Arc<Self>, data: Bytes) {
        let mut st = self.state();
        st.body.push_back(data);
        st.body_wanted = false;
        self.wake_python(st);
    }

    pub fn end_body(self: &Arc<Self>) {
        let mut st = self.state();
        st.body_end = true;
        st.body_wanted = false;
        self.wake_python(st);
    }

    /// The client went away (or the connection failed) before the response was done.
    pub fn disconnect(self: &Arc<Self>) {
        let mut st = self.state();
        if st.response_done || st.disconnected {
            return;
        }
        st.disconnected = true;
        self.wake_python(st);
    }

    pub fn finish_response(self: &Arc<Self>) {
        let mut st = self.state();
        st.response_done = true;
        self.wake_python(st);
    }

    pub fn body_wanted(&self) -> bool {
        let st = self.state();
        st.body_wanted && !st.body_end && !st.disconnected
    }

    /// May the connection read more of the body ahead of the app, holding less than
    /// `limit` bytes the app hasn't taken yet?
    pub fn body_room(&self, limit: usize) -> bool {
        let st = self.state();
        !st.body_end && !st.disconnected && st.body.iter().map(Bytes::len).sum::<usize>() < limit
    }

    pub fn register_io(&self, cx: &Context<'_>) {
        self.io_waker.register(cx.waker());
    }

    /// The response head, once the app has sent http.response.start and either a body
    /// message or a flush. The body size is known exactly when the first body message
    /// was also the last, which lets the connection send content-length instead of chunked.
    /// The third value says the response ends with trailers.
    pub fn poll_head(&self, cx: &Context<'_>) -> Poll<(ResponseHead, Option<u64>, bool)> {
        self.io_waker.register(cx.waker());
        let mut st = self.state();
        if st.head.is_some() && (st.body_seen || st.head_flush || st.aborted) {
            st.head_taken = true;
            let head = st.head.take().unwrap();
            let file = st.file.as_ref().map_or(0, |f| f.remaining);
            let exact = (st.complete && !st.aborted && !st.trailers_expected)
                .then_some(st.queued_bytes as u64 + file);
            return Poll::Ready((head, exact, st.trailers_expected));
        }
        Poll::Pending
    }

    /// The next piece of the response body.
    pub fn poll_chunk(self: &Arc<Self>, cx: &Context<'_>) -> Poll<Piece> {
        self.io_waker.register(cx.waker());
        let mut st = self.state();
        if let Some(chunk) = st.chunks.pop_front() {
            st.queued_bytes -= chunk.len();
            if st.tx_waiting && st.queued_bytes < self.water.low {
                self.wake_python(st);
            }
            return Poll::Ready(Piece::Data(chunk));
        }
        if st.aborted {
            return Poll::Ready(Piece::Abort);
        }
        if let Some(file) = st.file.take() {
            return Poll::Ready(Piece::File(file));
        }
        if st.complete {
            return Poll::Ready(Piece::End(st.trailers.take()));
        }
        Poll::Pending
    }

    /// Python side: queue a 103 Early Hints response.
    pub fn push_hint(&self, links: Vec<HeaderValue>) {
        self.state().hints.push(links);
        self.hints_pending.store(true, Ordering::Release);
    }

    /// I/O side, before the head is sent: the early hints to send first.
    pub fn take_hints(&self) -> Vec<Vec<HeaderValue>> {
        if !self.hints_pending.load(Ordering::Relaxed)
            || !self.hints_pending.swap(false, Ordering::Acquire)
        {
            return Vec::new();
        }
        std::mem::take(&mut self.state().hints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_streams_share_the_connection_queue() {
        assert_eq!(Watermarks::for_http2_stream(1).high, STREAM_WATER.high);
        assert_eq!(Watermarks::for_http2_stream(8).high, 128 * 1024);
        assert_eq!(Watermarks::for_http2_stream(1000).high, STREAM_WATER_FLOOR);
        let w = Watermarks::for_http2_stream(16);
        assert_eq!((w.high, w.low), (64 * 1024, 16 * 1024));
        // A hundred streams opened one after another stay near the budget.
        let total: usize = (1..=100)
            .map(|n| Watermarks::for_http2_stream(n).high)
            .sum();
        assert!(total < 5 * HTTP2_CONNECTION_QUEUE, "{total}");
    }
}
