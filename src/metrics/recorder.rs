//! A worker's counters. One `Recorder` per worker process, made once at boot with
//! --metrics and never otherwise: every hook below starts with `get()`, a single load
//! that finds nothing when metrics are off.
//!
//! Requests are counted on the I/O thread with relaxed atomic adds on counters no
//! other thread writes, so they stay in that core's cache: a handful of uncontended
//! adds per request, no lock. The queueing histogram is written by the threads that
//! call the app (the event loop, WSGI threads) and sits on its own cache lines.

use super::snapshot::{
    request_index, HistogramCounts, Snapshot, CONN_PROTOCOLS, DURATION_BOUNDS, METHODS,
    QUEUE_BOUNDS, REQUEST_SERIES, STATUS_MAX, STATUS_MIN,
};
use crate::control::ToMaster;
use crate::worker::control::ControlChannel;
use http::{Method, StatusCode};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

static RECORDER: OnceLock<Recorder> = OnceLock::new();

/// Turns counting on for this worker; snapshots go to the master over `control`.
pub fn enable(control: Arc<ControlChannel>) {
    RECORDER.get_or_init(|| Recorder::new(control));
}

#[inline]
pub fn get() -> Option<&'static Recorder> {
    RECORDER.get()
}

/// Sends the counters to the master now (with each heartbeat, and once more when the
/// worker has drained, so the master holds a worker's final counts before its exit).
pub fn report() {
    if let Some(r) = get() {
        r.control.send(&ToMaster::Metrics {
            snapshot: Box::new(r.snapshot()),
        });
    }
}

/// The event loop ran its heartbeat `lag` later than it was scheduled.
pub fn loop_lag(lag: Duration) {
    if let Some(r) = get() {
        r.lag_ns.store(nanos(lag), Relaxed);
    }
}

/// The app is being called for a request that arrived at `arrived`.
#[inline]
pub fn app_called(arrived: Option<Instant>) {
    if let (Some(r), Some(at)) = (get(), arrived) {
        r.queue.0.observe(at.elapsed());
    }
}

/// An open connection of the given `CONN_PROTOCOLS` index, counted while it lives.
#[inline]
pub fn connection(protocol: Protocol) -> Option<GaugeGuard> {
    get().map(|r| GaugeGuard::enter(&r.connections[protocol as usize]))
}

/// A kept-alive HTTP/1.1 connection waiting for its next request.
#[inline]
pub fn idle() -> Option<GaugeGuard> {
    get().map(|r| GaugeGuard::enter(&r.idle))
}

#[derive(Clone, Copy)]
pub enum Protocol {
    Http1 = 0,
    Http2 = 1,
    WebSocket = 2,
}

pub struct Recorder {
    control: Arc<ControlChannel>,
    requests: Box<[AtomicU64]>,
    /// By exact status code (100..=599), for statsd's gunicorn.request.status.N.
    statuses: Box<[AtomicU64]>,
    duration: Histogram,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    in_flight: AtomicI64,
    connections: [AtomicI64; CONN_PROTOCOLS.len()],
    idle: AtomicI64,
    lag_ns: AtomicU64,
    queue: CacheLines<Histogram>,
}

/// Keeps what another thread writes off the I/O thread's cache lines.
#[repr(align(128))]
struct CacheLines<T>(T);

impl Recorder {
    fn new(control: Arc<ControlChannel>) -> Recorder {
        Recorder {
            control,
            requests: (0..REQUEST_SERIES).map(|_| AtomicU64::new(0)).collect(),
            statuses: (STATUS_MIN..=STATUS_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
            duration: Histogram::new(&DURATION_BOUNDS),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            connections: Default::default(),
            idle: AtomicI64::new(0),
            lag_ns: AtomicU64::new(0),
            queue: CacheLines(Histogram::new(&QUEUE_BOUNDS)),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.iter().map(|c| c.load(Relaxed)).collect(),
            statuses: (STATUS_MIN..=STATUS_MAX)
                .zip(self.statuses.iter())
                .map(|(code, n)| (code, n.load(Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            duration: self.duration.counts(),
            queue: self.queue.0.counts(),
            request_bytes: self.request_bytes.load(Relaxed),
            response_bytes: self.response_bytes.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            connections: self.connections.iter().map(|c| c.load(Relaxed)).collect(),
            idle: self.idle.load(Relaxed),
            loop_lag_seconds: self.lag_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// One request, from its head to its end: in flight meanwhile, then counted by its
/// status (a request that got no status, its client gone first, is only in flight).
pub struct RequestMetrics {
    recorder: &'static Recorder,
    arrived: Instant,
    series: usize,
    status: u16,
}

impl RequestMetrics {
    /// None without --metrics.
    #[inline]
    pub fn start(method: &Method, http2: bool) -> Option<RequestMetrics> {
        let recorder = get()?;
        recorder.in_flight.fetch_add(1, Relaxed);
        let method = match method.as_str() {
            "GET" => 0,
            "HEAD" => 1,
            "POST" => 2,
            "PUT" => 3,
            "DELETE" => 4,
            "CONNECT" => 5,
            "OPTIONS" => 6,
            "TRACE" => 7,
            "PATCH" => 8,
            _ => METHODS.len() - 1,
        };
        Some(RequestMetrics {
            recorder,
            arrived: Instant::now(),
            series: request_index(usize::from(http2), method, 0),
            status: 0,
        })
    }

    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    pub fn status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }

    /// The response is over (or abandoned); `received` and `sent` are body bytes.
    pub fn end(self, received: u64, sent: u64) {
        let r = self.recorder;
        r.request_bytes.fetch_add(received, Relaxed);
        r.response_bytes.fetch_add(sent, Relaxed);
        if (STATUS_MIN..=STATUS_MAX).contains(&self.status) {
            // The histogram first: a report never shows more requests than durations.
            r.duration.observe(self.arrived.elapsed());
            let class = usize::from(self.status / 100 - 1);
            r.statuses[usize::from(self.status - STATUS_MIN)].fetch_add(1, Relaxed);
            r.requests[self.series + class].fetch_add(1, Relaxed);
        }
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.recorder.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Counts one in a gauge while it lives.
pub struct GaugeGuard(&'static AtomicI64);

impl GaugeGuard {
    fn enter(gauge: &'static AtomicI64) -> GaugeGuard {
        gauge.fetch_add(1, Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct Histogram {
    bounds_ns: Box<[u64]>,
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds_ns: bounds.iter().map(|s| (s * 1e9).round() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let ns = nanos(elapsed);
        // Prometheus buckets are "less than or equal".
        let i = self
            .bounds_ns
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(self.bounds_ns.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn counts(&self) -> HistogramCounts {
        HistogramCounts {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_ns: self.sum_ns.load(Relaxed),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_less_or_equal_and_overflow_to_inf() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(3));
        let c = h.counts();
        assert_eq!(c.buckets, vec![1, 1, 1]);
        assert_eq!(c.sum_ns, 3_006_000_000);
        assert_eq!(c.count(), 3);
    }
}
