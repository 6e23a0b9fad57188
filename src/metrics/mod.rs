//! Prometheus metrics (--metrics).
//!
//! Workers count; the master serves. Each worker keeps plain atomic counters
//! (`recorder`), written on the I/O thread with relaxed adds: no lock and no
//! allocation per request, and no cost at all without --metrics. With its heartbeat,
//! and once more when its drain is over, a worker sends a `Snapshot` of them to the
//! master over the control channel. The master (`fleet`) keeps each live worker's last
//! snapshot and folds the counters of workers that exited into a running total, so a
//! restart never makes a counter go backwards; it adds what only it knows (restarts by
//! cause, resident memory per worker, worker count) and answers GET /metrics on its own
//! listener (`endpoint`), so one scrape sees the whole pod. With --statsd-host it also
//! sends gunicorn's statsd names from the same totals (`statsd`).

pub mod endpoint;
pub mod fleet;
pub mod options;
pub mod recorder;
pub mod snapshot;
pub mod statsd;

pub use options::MetricsOptions;
