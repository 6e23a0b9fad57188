//! The master's view: each live worker's last snapshot, the counters left by workers
//! that exited, restarts by cause; rendered in the Prometheus text format 0.0.4.

use super::snapshot::{
    request_index, HistogramCounts, Snapshot, CONN_PROTOCOLS, DURATION_BOUNDS, METHODS,
    QUEUE_BOUNDS, REQUEST_PROTOCOLS, STATUS_CLASSES,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a worker was replaced: the arbiter's causes, as its log lines name them.
pub const RESTART_CAUSES: [&str; 6] =
    ["crash", "timeout", "max-requests", "lifetime", "rss", "hup"];

#[derive(Default)]
pub struct Fleet {
    /// By the arbiter's worker key (start order).
    live: BTreeMap<u64, LiveWorker>,
    /// Counters of the workers that exited, so a restart never lowers a total.
    retired: Snapshot,
    restarts: [u64; RESTART_CAUSES.len()],
}

struct LiveWorker {
    pid: u32,
    /// Ready and not draining.
    serving: bool,
    last: Snapshot,
}

impl Fleet {
    pub fn worker_started(&mut self, key: u64, pid: u32) {
        self.live.insert(
            key,
            LiveWorker {
                pid,
                serving: false,
                last: Snapshot::default(),
            },
        );
    }

    pub fn set_serving(&mut self, key: u64, serving: bool) {
        if let Some(w) = self.live.get_mut(&key) {
            w.serving = serving;
        }
    }

    /// A worker's latest counters. Counters only grow within one worker, so the
    /// latest snapshot replaces the one before.
    pub fn report(&mut self, key: u64, snapshot: Snapshot) {
        if let Some(w) = self.live.get_mut(&key) {
            w.last = snapshot;
        }
    }

    /// The worker is gone: what it counted stays in the totals; its gauges go.
    pub fn worker_exited(&mut self, key: u64) {
        if let Some(w) = self.live.remove(&key) {
            self.retired.add_counters(&w.last);
        }
    }

    pub fn restart(&mut self, cause: &str) {
        if let Some(i) = RESTART_CAUSES.iter().position(|c| *c == cause) {
            self.restarts[i] += 1;
        }
    }

    /// Every counter since the master started, and the live workers' gauges summed.
    pub fn totals(&self) -> Snapshot {
        let mut total = self.retired.clone();
        for w in self.live.values() {
            total.add_all(&w.last);
        }
        total
    }

    /// Workers ready and not draining.
    pub fn serving(&self) -> usize {
        self.live.values().filter(|w| w.serving).count()
    }

    /// The whole exposition. `rss` reads a process's resident memory (None: gone).
    pub fn render(&self, rss: impl Fn(u32) -> Option<u64>) -> String {
        let total = self.totals();
        let mut out = String::with_capacity(8 * 1024);

        header(
            &mut out,
            "ferrocorn_http_requests_total",
            "counter",
            "HTTP requests answered, by method, status class and protocol.",
        );
        for (p, protocol) in REQUEST_PROTOCOLS.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for (s, class) in STATUS_CLASSES.iter().enumerate() {
                    let n = total.requests.get(request_index(p, m, s)).copied();
                    if let Some(n) = n.filter(|&n| n > 0) {
                        let _ = writeln!(
                            out,
                            "ferrocorn_http_requests_total{{method=\"{method}\",\
                             status_class=\"{class}\",protocol=\"{protocol}\"}} {n}"
                        );
                    }
                }
            }
        }
        histogram(
            &mut out,
            "ferrocorn_http_request_duration_seconds",
            "Time from a request's head to the end of its response.",
            &DURATION_BOUNDS,
            &total.duration,
        );
        histogram(
            &mut out,
            "ferrocorn_http_request_queue_seconds",
            "Time from a request's head to the application's first call (queueing).",
            &QUEUE_BOUNDS,
            &total.queue,
        );
        gauge(
            &mut out,
            "ferrocorn_http_requests_in_flight",
            "HTTP requests being handled.",
            total.in_flight,
        );
        header(
            &mut out,
            "ferrocorn_connections_open",
            "gauge",
            "Open client connections, by protocol.",
        );
        for (i, protocol) in CONN_PROTOCOLS.iter().enumerate() {
            let n = total.connections.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "ferrocorn_connections_open{{protocol=\"{protocol}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "ferrocorn_connections_idle",
            "Kept-alive HTTP/1.1 connections waiting for their next request.",
            total.idle,
        );
        counter(
            &mut out,
            "ferrocorn_http_request_bytes_total",
            "Request body bytes received.",
            total.request_bytes,
        );
        counter(
            &mut out,
            "ferrocorn_http_response_bytes_total",
            "Response body bytes sent.",
            total.response_bytes,
        );
        header(
            &mut out,
            "ferrocorn_worker_restarts_total",
            "counter",
            "Workers replaced, by cause.",
        );
        for (cause, n) in RESTART_CAUSES.iter().zip(self.restarts) {
            let _ = writeln!(
                out,
                "ferrocorn_worker_restarts_total{{cause=\"{cause}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "ferrocorn_workers",
            "Workers ready and serving.",
            self.serving() as i64,
        );
        // `worker` numbers the live workers 0.. in start order; `pid` says which
        // process that is now.
        header(
            &mut out,
            "ferrocorn_worker_rss_bytes",
            "gauge",
            "Resident memory of each worker process.",
        );
        for (i, w) in self.live.values().enumerate() {
            if let Some(bytes) = rss(w.pid) {
                let _ = writeln!(
                    out,
                    "ferrocorn_worker_rss_bytes{{worker=\"{i}\",pid=\"{}\"}} {bytes}",
                    w.pid
                );
            }
        }
        header(
            &mut out,
            "ferrocorn_event_loop_lag_seconds",
            "gauge",
            "How late each worker's event loop ran its last heartbeat.",
        );
        for (i, w) in self.live.values().enumerate() {
            let _ = writeln!(
                out,
                "ferrocorn_event_loop_lag_seconds{{worker=\"{i}\",pid=\"{}\"}} {}",
                w.pid,
                float(w.last.loop_lag_seconds)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// `_bucket` lines are cumulative and end with +Inf, which equals `_count`.
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[f64], h: &HistogramCounts) {
    header(out, name, "histogram", help);
    let mut cumulative = 0u64;
    for (i, bound) in bounds.iter().enumerate() {
        cumulative += h.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            float(*bound)
        );
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", float(h.sum_ns as f64 / 1e9));
    let _ = writeln!(out, "{name}_count {count}");
}

/// Go's/Prometheus's float text: `{:?}` keeps a `.0` on whole numbers and never
/// uses an exponent for the values we have.
fn float(v: f64) -> String {
    format!("{v:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(requests: u64, bucket0: u64, bucket_inf: u64) -> Snapshot {
        let mut s = Snapshot {
            requests: vec![0; super::super::snapshot::REQUEST_SERIES],
            duration: HistogramCounts {
                buckets: vec![0; DURATION_BOUNDS.len() + 1],
                sum_ns: 1_500_000_000,
            },
            ..Default::default()
        };
        s.requests[request_index(0, 0, 1)] = requests;
        s.duration.buckets[0] = bucket0;
        s.duration.buckets[DURATION_BOUNDS.len()] = bucket_inf;
        s
    }

    #[test]
    fn counters_survive_a_worker_exit() {
        let mut fleet = Fleet::default();
        fleet.worker_started(0, 100);
        fleet.report(0, snapshot(5, 4, 1));
        let before = fleet.render(|_| None);
        assert!(before.contains(
            "ferrocorn_http_requests_total{method=\"GET\",status_class=\"2xx\",protocol=\"http1\"} 5"
        ));
        fleet.worker_exited(0);
        fleet.worker_started(1, 101);
        fleet.report(1, snapshot(2, 2, 0));
        fleet.restart("hup");
        let after = fleet.render(|_| Some(4096));
        assert!(after.contains(
            "ferrocorn_http_requests_total{method=\"GET\",status_class=\"2xx\",protocol=\"http1\"} 7"
        ));
        assert!(after.contains("ferrocorn_http_request_duration_seconds_bucket{le=\"0.001\"} 6"));
        assert!(after.contains("ferrocorn_http_request_duration_seconds_bucket{le=\"+Inf\"} 7"));
        assert!(after.contains("ferrocorn_http_request_duration_seconds_count 7"));
        assert!(after.contains("ferrocorn_http_request_duration_seconds_sum 3.0"));
        assert!(after.contains("ferrocorn_worker_restarts_total{cause=\"hup\"} 1"));
        assert!(after.contains("ferrocorn_worker_rss_bytes{worker=\"0\",pid=\"101\"} 4096"));
    }
}
