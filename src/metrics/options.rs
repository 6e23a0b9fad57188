//! --metrics, --metrics-address, --metrics-port: their own struct, flattened into
//! `Config` (the workers read `metrics` from it to know whether to count at all).

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
}
