//! --metrics, --metrics-address, --metrics-port and the statsd options: their own
//! struct, flattened into `Config` (the workers read it to know whether to count).

use clap::Args;
use serde::{Deserialize, Serialize};

pub const DEFAULT_METRICS_PORT: u16 = 9090;

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct MetricsOptions {
    /// Serve Prometheus metrics (GET /metrics) from the master process on its own
    /// port, summed over every worker.
    #[arg(long)]
    pub metrics: bool,

    /// Address the metrics listener binds (with --metrics).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
    pub metrics_address: String,

    /// Port of the metrics listener (with --metrics); 0 picks a free port and logs it.
    #[arg(long, default_value_t = DEFAULT_METRICS_PORT, value_name = "PORT")]
    pub metrics_port: u16,

    /// Send gunicorn's statsd metrics (gunicorn.requests, gunicorn.request.status.N,
    /// gunicorn.request.duration, gunicorn.workers) to HOST:PORT over UDP, or to
    /// unix:PATH, once a second from the master.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd_host: Option<String>,

    /// Prefix of every statsd name (with --statsd-host); a dot is added if missing.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub statsd_prefix: String,

    /// Comma-separated DogStatsD tags added to every statsd line (with --statsd-host).
    #[arg(long, default_value = "", value_name = "TAGS")]
    pub dogstatsd_tags: String,
}

impl MetricsOptions {
    /// Whether workers count requests at all: only for a consumer of the counts.
    pub fn counting(&self) -> bool {
        self.metrics || self.statsd_host.is_some()
    }
}
