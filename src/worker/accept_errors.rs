//! Failed accepts, logged once per burst instead of once per failure.
//!
//! When a worker runs out of file descriptors (EMFILE/ENFILE) or memory, accept fails
//! on every retry until a connection closes. The accept loop backs off between retries
//! (no busy loop), and this keeps the log to two lines per burst: the first failure,
//! and, once accepts have succeeded for `QUIET`, a summary with the count. Failures
//! that come and go (an app leaking fds fails one accept per request) are one burst, not
//! two lines per request. A burst that goes on has a reminder every `REMIND_EVERY`, so
//! a worker that never recovers is not silent either.

use std::time::{Duration, Instant};

/// The longest a worker waits before retrying after accept failed for lack of
/// resources (it retries sooner when one of its connections closes).
pub const BACKOFF: Duration = Duration::from_millis(100);
/// A burst is over once no accept has failed for this long.
const QUIET: Duration = Duration::from_secs(2);
/// A burst that goes on this long is summarised again, without waiting for its end.
const REMIND_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct AcceptErrors {
    burst: Option<Burst>,
}

struct Burst {
    started: Instant,
    failures: u64,
    last_failure: Instant,
    last_reported: Instant,
}

impl AcceptErrors {
    /// accept failed: log it if it starts a burst (or a reminder is due).
    pub fn failed(&mut self, error: &std::io::Error) {
        let now = Instant::now();
        let Some(burst) = &mut self.burst else {
            crate::error!(
                "accept failed: {error}; retrying (at most every {} ms), further failures \
                 are counted until accepts succeed for {} s",
                BACKOFF.as_millis(),
                QUIET.as_secs()
            );
            self.burst = Some(Burst {
                started: now,
                failures: 1,
                last_failure: now,
                last_reported: now,
            });
            return;
        };
        burst.failures += 1;
        burst.last_failure = now;
        if now.duration_since(burst.last_reported) >= REMIND_EVERY {
            crate::error!(
                "accept still failing: {} accepts failed in the last {:.1}s ({error})",
                burst.failures,
                now.duration_since(burst.started).as_secs_f64()
            );
            burst.last_reported = now;
        }
    }

    /// Resolves when the open burst has been quiet for `QUIET` (never if none is open);
    /// `end_burst` then logs its summary.
    pub async fn burst_over(&self) {
        match &self.burst {
            Some(burst) => tokio::time::sleep_until((burst.last_failure + QUIET).into()).await,
            None => std::future::pending().await,
        }
    }

    pub fn end_burst(&mut self) {
        if let Some(burst) = self.burst.take() {
            crate::warn!(
                "accept recovered: {} accepts failed in the last {:.1}s",
                burst.failures,
                burst
                    .last_failure
                    .duration_since(burst.started)
                    .as_secs_f64()
            );
        }
    }
}

/// Errors that concern one connection that is already gone (it was reset while it
/// waited in the backlog): the next accept can succeed at once, so no back-off.
pub fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM)
    )
}
