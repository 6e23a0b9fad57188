//! The built-in probes (`--health-path`, `--ready-path`), answered by a worker's I/O
//! thread before anything reaches Python: a probe costs no GIL and no event-loop turn,
//! and still answers (503) when the loop is stuck, which is what liveness is for.
//!
//! - liveness: 200 while the event loop sends its heartbeat (once a second, from the
//!   loop thread, the same beat the master's --timeout watches); 503 once it has been
//!   silent for `LOOP_STALLED`, so the orchestrator restarts a wedged pod long before
//!   --timeout would (or when --timeout is 0).
//! - readiness: 200 once lifespan startup is done, 503 from the moment the worker hears
//!   of a shutdown (SIGTERM to the master, which then waits --shutdown-delay before the
//!   drain, or a drain itself), and 503 while the loop is stalled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats missed (one a second) before liveness fails.
pub const LOOP_STALLED: Duration = Duration::from_secs(5);

pub struct Health {
    liveness_path: Option<Box<[u8]>>,
    readiness_path: Option<Box<[u8]>>,
    /// Lifespan startup is done and the worker accepts.
    started: AtomicBool,
    /// A shutdown is coming: balancers should stop sending.
    leaving: AtomicBool,
    /// Milliseconds after `epoch` of the last heartbeat from the loop thread.
    last_beat_ms: AtomicU64,
    epoch: Instant,
}

/// What a probe request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Pass,
    Fail,
}

impl Probe {
    pub fn status(self) -> http::StatusCode {
        match self {
            Probe::Pass => http::StatusCode::OK,
            Probe::Fail => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl Health {
    pub fn new(options: &super::options::DeployOptions) -> Self {
        let path = |p: &Option<String>| p.as_ref().map(|p| p.as_bytes().into());
        Health {
            liveness_path: path(&options.health_path),
            readiness_path: path(&options.ready_path),
            started: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            last_beat_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// True when at least one probe path is configured (the per-request check is
    /// then one comparison or two).
    pub fn enabled(&self) -> bool {
        self.liveness_path.is_some() || self.readiness_path.is_some()
    }

    /// From the loop thread, once a second.
    pub fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    pub fn set_started(&self) {
        self.beat();
        self.started.store(true, Ordering::Release);
    }

    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    fn loop_alive(&self) -> bool {
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last) < LOOP_STALLED
    }

    /// The answer when `target` (the request-target as sent) is a probe path; None
    /// sends the request on to the app.
    pub fn answer(&self, target: &[u8]) -> Option<Probe> {
        if !self.enabled() {
            return None;
        }
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        let pass = if self.readiness_path.as_deref() == Some(path) {
            self.started.load(Ordering::Acquire)
                && !self.leaving.load(Ordering::Acquire)
                && self.loop_alive()
        } else if self.liveness_path.as_deref() == Some(path) {
            self.loop_alive()
        } else {
            return None;
        };
        Some(if pass { Probe::Pass } else { Probe::Fail })
    }
}

/// A probe answer on HTTP/1.1: a short text body, kept alive if the client asks.
pub fn write_http1(
    out: &mut bytes::BytesMut,
    probe: Probe,
    head: &crate::http1::parse::Head,
    keep_alive: bool,
    options: &crate::conn_shared::HeadOptions,
) -> bool {
    use bytes::BufMut;
    let status = probe.status();
    let body = status.canonical_reason().unwrap_or("");
    let mut headers = crate::fields::Fields::new();
    headers.push("content-type", "text/plain; charset=utf-8");
    headers.push("cache-control", "no-store");
    let req = crate::http1::encode::RequestFacts {
        method: &head.method,
        version: head.version,
        keep_alive,
    };
    let (_, keep_alive) = crate::http1::encode::write_head(
        out,
        status,
        &headers,
        Some(body.len() as u64),
        &req,
        options,
    );
    if head.method != http::Method::HEAD {
        out.put_slice(body.as_bytes());
    }
    keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(live: Option<&str>, ready: Option<&str>) -> Health {
        Health::new(&super::super::options::DeployOptions {
            health_path: live.map(String::from),
            ready_path: ready.map(String::from),
            ..Default::default()
        })
    }

    #[test]
    fn readiness_follows_the_worker_life() {
        let h = health(Some("/healthz"), Some("/readyz"));
        assert_eq!(h.answer(b"/readyz"), Some(Probe::Fail)); // lifespan not done
        assert_eq!(h.answer(b"/healthz"), Some(Probe::Pass));
        h.set_started();
        assert_eq!(h.answer(b"/readyz?verbose=1"), Some(Probe::Pass));
        h.set_leaving();
        assert_eq!(h.answer(b"/readyz"), Some(Probe::Fail));
        assert_eq!(h.answer(b"/healthz"), Some(Probe::Pass));
        assert_eq!(h.answer(b"/readyzz"), None);
        assert_eq!(h.answer(b"/"), None);
    }

    #[test]
    fn no_paths_means_no_probes() {
        let h = health(None, None);
        assert!(!h.enabled());
        assert_eq!(h.answer(b"/healthz"), None);
    }
}
