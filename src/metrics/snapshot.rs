//! What a worker reports: its counters at one moment, with the label tables and
//! histogram bounds both ends agree on (the same binary builds master and worker).

use serde::{Deserialize, Serialize};

/// Methods counted by name; every other method is "other", so a client can't grow
/// the number of series.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];
/// The `protocol` of a request.
pub const REQUEST_PROTOCOLS: [&str; 2] = ["http1", "http2"];
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The `protocol` of an open connection.
pub const CONN_PROTOCOLS: [&str; 3] = ["http1", "http2", "websocket"];

/// Request duration buckets, in seconds (head received to response sent).
pub const DURATION_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Queueing buckets, in seconds (head received to the app's first call): finer at
/// the bottom, where a healthy worker is.
pub const QUEUE_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The status codes counted one by one (`Snapshot::statuses`).
pub const STATUS_MIN: u16 = 100;
pub const STATUS_MAX: u16 = 599;

pub const REQUEST_SERIES: usize = REQUEST_PROTOCOLS.len() * METHODS.len() * STATUS_CLASSES.len();

/// Index of a request's series in `Snapshot::requests`.
pub fn request_index(protocol: usize, method: usize, status_class: usize) -> usize {
    (protocol * METHODS.len() + method) * STATUS_CLASSES.len() + status_class
}

/// A histogram's counts per bucket (not cumulative; the last is +Inf) and its sum.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct HistogramCounts {
    pub buckets: Vec<u64>,
    /// Sum of the observations, in nanoseconds (an integer, so adding is exact).
    pub sum_ns: u64,
}

impl HistogramCounts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn add(&mut self, other: &HistogramCounts) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }
}

/// One worker's counters (monotonic) and gauges (its present state).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Finished requests by protocol, method and status class (`request_index`).
    pub requests: Vec<u64>,
    /// Finished requests by exact status code, ascending; only codes seen are present.
    /// (Pairs, not a map: the control channel's tagged JSON can't read integer keys.)
    #[serde(default)]
    pub statuses: Vec<(u16, u64)>,
    pub duration: HistogramCounts,
    pub queue: HistogramCounts,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Gauges: requests in flight, open connections by `CONN_PROTOCOLS`, idle
    /// kept-alive HTTP/1.1 connections, and the last event-loop lag seen.
    pub in_flight: i64,
    pub connections: Vec<i64>,
    pub idle: i64,
    pub loop_lag_seconds: f64,
}

impl Snapshot {
    /// Adds the counters of `other` (not its gauges): what a worker that exited
    /// leaves behind.
    pub fn add_counters(&mut self, other: &Snapshot) {
        if self.requests.len() < other.requests.len() {
            self.requests.resize(other.requests.len(), 0);
        }
        for (a, b) in self.requests.iter_mut().zip(&other.requests) {
            *a += b;
        }
        for &(code, n) in &other.statuses {
            match self.statuses.binary_search_by_key(&code, |&(c, _)| c) {
                Ok(i) => self.statuses[i].1 += n,
                Err(i) => self.statuses.insert(i, (code, n)),
            }
        }
        self.duration.add(&other.duration);
        self.queue.add(&other.queue);
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }

    /// Adds counters and gauges: live workers summed for the pod.
    pub fn add_all(&mut self, other: &Snapshot) {
        self.add_counters(other);
        self.in_flight += other.in_flight;
        if self.connections.len() < other.connections.len() {
            self.connections.resize(other.connections.len(), 0);
        }
        for (a, b) in self.connections.iter_mut().zip(&other.connections) {
            *a += b;
        }
        self.idle += other.idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_cover_every_series_once() {
        let mut seen = std::collections::HashSet::new();
        for p in 0..REQUEST_PROTOCOLS.len() {
            for m in 0..METHODS.len() {
                for s in 0..STATUS_CLASSES.len() {
                    assert!(seen.insert(request_index(p, m, s)));
                }
            }
        }
        assert_eq!(seen.len(), REQUEST_SERIES);
        assert!(seen.iter().all(|&i| i < REQUEST_SERIES));
    }

    #[test]
    fn counters_add_and_gauges_only_with_add_all() {
        let one = Snapshot {
            requests: vec![1, 2],
            statuses: vec![(200, 2), (404, 1)],
            duration: HistogramCounts {
                buckets: vec![1, 0, 2],
                sum_ns: 10,
            },
            in_flight: 3,
            connections: vec![1, 1, 0],
            ..Default::default()
        };
        let mut total = Snapshot::default();
        total.add_counters(&one);
        total.add_counters(&one);
        assert_eq!(total.requests, vec![2, 4]);
        total.add_counters(&Snapshot {
            statuses: vec![(201, 5), (404, 1)],
            ..Default::default()
        });
        assert_eq!(total.statuses, vec![(200, 4), (201, 5), (404, 3)]);
        assert_eq!(total.duration.buckets, vec![2, 0, 4]);
        assert_eq!(total.duration.sum_ns, 20);
        assert_eq!(total.in_flight, 0);
        total.add_all(&one);
        assert_eq!(total.in_flight, 3);
        assert_eq!(total.connections, vec![1, 1, 0]);
    }
}
