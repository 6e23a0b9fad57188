//! Per-connection bounds (--max-requests-per-connection, --max-connection-age) and the
//! drain's grace window for idle keep-alive connections. HTTP/1.1 asks "is this request
//! the connection's last?" before it writes the response head (and then says
//! `connection: close`); HTTP/2 sends a graceful GOAWAY at the bound.

use super::options::{spread, RecyclingOptions};
use std::time::Duration;
use tokio::time::Instant;

/// The worker-wide settings, built once from the options.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnBounds {
    pub max_requests: Option<u64>,
    pub max_age: Option<Duration>,
    pub age_jitter: Duration,
    /// How long a draining worker keeps idle HTTP/1.1 keep-alive connections open.
    pub drain_idle_grace: Duration,
}

impl ConnBounds {
    pub fn new(options: &RecyclingOptions, keep_alive: Duration) -> Self {
        let secs = Duration::from_secs_f64;
        ConnBounds {
            max_requests: options.max_requests_per_connection,
            max_age: options.max_connection_age.map(secs),
            age_jitter: secs(options.max_connection_age_jitter),
            drain_idle_grace: secs(options.drain_idle_grace).min(keep_alive),
        }
    }

    /// The bounds of a connection opened now.
    pub fn open(&self) -> ConnBudget {
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ends_at = self.max_age.map(|age| {
            let salt = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let jitter = self.age_jitter.mul_f64(spread(salt));
            Instant::now() + age + jitter
        });
        ConnBudget {
            max_requests: self.max_requests,
            ends_at,
            served: 0,
        }
    }
}

/// One connection's bounds and the requests it has started.
#[derive(Debug)]
pub struct ConnBudget {
    max_requests: Option<u64>,
    ends_at: Option<Instant>,
    served: u64,
}

impl ConnBudget {
    /// Count a request started on the connection.
    pub fn start_request(&mut self) {
        self.served += 1;
    }

    /// The connection must end after the request(s) started so far.
    pub fn spent(&self) -> bool {
        self.max_requests.is_some_and(|max| self.served >= max)
            || self.ends_at.is_some_and(|at| Instant::now() >= at)
    }

    /// When the connection reaches --max-connection-age, if bounded.
    pub fn ends_at(&self) -> Option<Instant> {
        self.ends_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max_requests: Option<u64>, max_age: Option<f64>, jitter: f64) -> ConnBounds {
        ConnBounds {
            max_requests,
            max_age: max_age.map(Duration::from_secs_f64),
            age_jitter: Duration::from_secs_f64(jitter),
            drain_idle_grace: Duration::ZERO,
        }
    }

    #[test]
    fn request_bound() {
        let mut b = bounds(Some(2), None, 0.0).open();
        b.start_request();
        assert!(!b.spent());
        b.start_request();
        assert!(b.spent());
    }

    #[tokio::test(start_paused = true)]
    async fn age_bound_with_jitter() {
        let b = bounds(None, Some(10.0), 5.0).open();
        let at = b.ends_at().unwrap();
        let left = at - Instant::now();
        assert!(left >= Duration::from_secs(10) && left <= Duration::from_secs(15));
        assert!(!b.spent());
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(b.spent());
    }

    #[test]
    fn unbounded_never_spent() {
        let mut b = bounds(None, None, 0.0).open();
        for _ in 0..1000 {
            b.start_request();
        }
        assert!(!b.spent());
    }
}
