//! --statsd-host: gunicorn's statsd names, sent by the master once a second.
//!
//! gunicorn sends one UDP datagram per request from each worker. Here the workers only
//! count (the same counters as --metrics) and the master sends what changed since its
//! last flush, summed over the pod, in a few datagrams: the names and types are
//! gunicorn's, so existing dashboards keep working, at no per-request cost.
//!
//! What differs from gunicorn: `gunicorn.request.duration` is reported from the
//! duration histogram, one timer line per non-empty bucket with the bucket's upper
//! bound as its value (the +Inf bucket reports the last bound) and a sample rate of
//! 1/count, so a statsd server counts every request exactly and its percentiles have
//! the histogram's resolution. gunicorn's `gunicorn.log.*` counters are not sent.

use super::fleet::Fleet;
use super::options::MetricsOptions;
use super::snapshot::{Snapshot, DURATION_BOUNDS};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Datagrams stay under a typical MTU, as statsd clients do.
const MAX_DATAGRAM: usize = 1400;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where lines go: UDP host:port, or a unix datagram socket.
enum Sink {
    Udp(std::net::UdpSocket),
    Unix(std::os::unix::net::UnixDatagram),
}

impl Sink {
    fn open(host: &str) -> Result<Sink, String> {
        if let Some(path) = host.strip_prefix("unix:") {
            let path = path.trim_start_matches("//");
            let socket = std::os::unix::net::UnixDatagram::unbound()
                .and_then(|s| s.connect(path).map(|()| s))
                .map_err(|e| format!("--statsd-host {host}: {e}"))?;
            return Ok(Sink::Unix(socket));
        }
        let bind = if host.starts_with('[') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        std::net::UdpSocket::bind(bind)
            .and_then(|s| s.connect(host).map(|()| s))
            .map(Sink::Udp)
            .map_err(|e| format!("--statsd-host {host}: {e}"))
    }

    fn send(&self, datagram: &[u8]) {
        // Fire and forget, like every statsd client: a missing collector must not
        // disturb serving (ECONNREFUSED from an earlier datagram is simply dropped).
        let _ = match self {
            Sink::Udp(s) => s.send(datagram),
            Sink::Unix(s) => s.send(datagram),
        };
    }
}

/// What was last sent, to send only the differences.
pub struct Statsd {
    prefix: String,
    tags: String,
    sent: Snapshot,
}

impl Statsd {
    pub fn new(options: &MetricsOptions) -> Statsd {
        let mut prefix = options.statsd_prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('.') {
            prefix.push('.');
        }
        let tags = options.dogstatsd_tags.trim();
        Statsd {
            prefix,
            tags: if tags.is_empty() {
                String::new()
            } else {
                format!("|#{tags}")
            },
            sent: Snapshot::default(),
        }
    }

    /// The statsd lines for the change from the last call to `now`.
    pub fn lines(&mut self, now: &Snapshot, workers: usize) -> Vec<String> {
        let (p, t) = (&self.prefix, &self.tags);
        let mut lines = Vec::new();
        let finished = |s: &Snapshot| s.duration.count();
        let requests = finished(now).saturating_sub(finished(&self.sent));
        if requests > 0 {
            lines.push(format!("{p}gunicorn.requests:{requests}|c{t}"));
        }
        for &(code, n) in &now.statuses {
            let before = (self.sent.statuses.iter())
                .find(|&&(c, _)| c == code)
                .map_or(0, |&(_, n)| n);
            if n > before {
                lines.push(format!(
                    "{p}gunicorn.request.status.{code}:{}|c{t}",
                    n - before
                ));
            }
        }
        for (i, n) in now.duration.buckets.iter().enumerate() {
            let before = self.sent.duration.buckets.get(i).copied().unwrap_or(0);
            let n = n.saturating_sub(before);
            if n == 0 {
                continue;
            }
            let bound = DURATION_BOUNDS[i.min(DURATION_BOUNDS.len() - 1)];
            // Rounded to the microsecond: 0.025 s is "25", not "25.000000000000004".
            let ms = (bound * 1e6).round() / 1e3;
            let mut line = format!("{p}gunicorn.request.duration:{ms}|ms");
            if n > 1 {
                let _ = write!(line, "|@{:.9}", 1.0 / n as f64);
            }
            line.push_str(t);
            lines.push(line);
        }
        lines.push(format!("{p}gunicorn.workers:{workers}|g{t}"));
        self.sent = now.clone();
        lines
    }
}

/// Lines packed newline-separated into datagrams of at most `MAX_DATAGRAM` bytes.
fn datagrams(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some(d) if d.len() + 1 + line.len() <= MAX_DATAGRAM => {
                d.push('\n');
                d.push_str(line);
            }
            _ => out.push(line.clone()),
        }
    }
    out
}

/// The statsd socket and what it last sent; opened before the workers start, so a
/// bad address fails the start.
pub struct Sender {
    sink: Sink,
    statsd: Statsd,
}

impl Sender {
    /// None without --statsd-host.
    pub fn open(options: &MetricsOptions) -> Result<Option<Sender>, String> {
        let Some(host) = &options.statsd_host else {
            return Ok(None);
        };
        Ok(Some(Sender {
            sink: Sink::open(host)?,
            statsd: Statsd::new(options),
        }))
    }

    /// Flushes the fleet's totals every second, for the master's lifetime.
    pub fn spawn(mut self, fleet: Arc<Mutex<Fleet>>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let lines = {
                    let fleet = fleet.lock().unwrap();
                    self.statsd.lines(&fleet.totals(), fleet.serving())
                };
                for datagram in datagrams(&lines) {
                    self.sink.send(datagram.as_bytes());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::HistogramCounts;

    fn options(prefix: &str, tags: &str) -> MetricsOptions {
        MetricsOptions {
            metrics: false,
            metrics_address: String::new(),
            metrics_port: 0,
            statsd_host: Some("127.0.0.1:8125".into()),
            statsd_prefix: prefix.into(),
            dogstatsd_tags: tags.into(),
        }
    }

    fn snapshot(statuses: &[(u16, u64)], buckets: Vec<u64>) -> Snapshot {
        Snapshot {
            statuses: statuses.to_vec(),
            duration: HistogramCounts { buckets, sum_ns: 0 },
            ..Default::default()
        }
    }

    #[test]
    fn sends_differences_with_gunicorn_names() {
        let mut s = Statsd::new(&options("app", ""));
        let first = snapshot(&[(200, 3), (404, 1)], vec![4, 0]);
        assert_eq!(
            s.lines(&first, 2),
            [
                "app.gunicorn.requests:4|c",
                "app.gunicorn.request.status.200:3|c",
                "app.gunicorn.request.status.404:1|c",
                "app.gunicorn.request.duration:1|ms|@0.250000000",
                "app.gunicorn.workers:2|g",
            ]
        );
        let second = snapshot(&[(200, 4), (404, 1)], vec![4, 1]);
        assert_eq!(
            s.lines(&second, 2),
            [
                "app.gunicorn.requests:1|c",
                "app.gunicorn.request.status.200:1|c",
                "app.gunicorn.request.duration:2.5|ms",
                "app.gunicorn.workers:2|g",
            ]
        );
        assert_eq!(s.lines(&second, 1), ["app.gunicorn.workers:1|g"]);
    }

    #[test]
    fn tags_end_every_line_and_datagrams_stay_small() {
        let mut s = Statsd::new(&options("", "env:prod,pod:a"));
        let lines = s.lines(&snapshot(&[(500, 1)], vec![1]), 1);
        assert!(lines.iter().all(|l| l.ends_with("|#env:prod,pod:a")));
        let many: Vec<String> = (0..200).map(|i| format!("gunicorn.x{i}:1|c")).collect();
        let packed = datagrams(&many);
        assert!(packed.len() > 1);
        assert!(packed.iter().all(|d| d.len() <= MAX_DATAGRAM));
        assert_eq!(packed.iter().map(|d| d.lines().count()).sum::<usize>(), 200);
    }
}
