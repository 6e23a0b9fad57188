//! The deployment options: `--shutdown-delay`, the built-in probes (`--health-path`,
//! `--ready-path`) and the systemd socket names (`--systemd-socket-name`).

use clap::Args;
use serde::{Deserialize, Serialize};

#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployOptions {
    /// On SIGTERM, keep serving normally for this many seconds (the --ready-path probe
    /// answers 503 meanwhile) before draining, so balancers stop sending first; a
    /// second SIGTERM drains at once. 0 (the default) drains at once.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_seconds)]
    pub shutdown_delay: f64,

    /// Liveness probe path, answered by the worker without calling the app: 200 while
    /// its event loop runs, 503 once the loop has been blocked for a few seconds.
    #[arg(long, value_parser = probe_path)]
    pub health_path: Option<String>,

    /// Readiness probe path, answered by the worker without calling the app: 200 once
    /// lifespan startup is done, 503 from SIGTERM on (and while the loop is blocked).
    #[arg(long, value_parser = probe_path)]
    pub ready_path: Option<String>,

    /// Under systemd socket activation, serve only the sockets with these names
    /// (FileDescriptorName=, comma-separated). Default: every socket systemd passes.
    #[arg(long, value_name = "NAMES")]
    pub systemd_socket_name: Option<String>,
}

impl DeployOptions {
    /// --systemd-socket-name as a list (empty: serve every socket).
    pub fn systemd_socket_names(&self) -> Vec<String> {
        self.systemd_socket_name
            .iter()
            .flat_map(|names| names.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    }
}

fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds >= 0")),
    }
}

/// A probe path is matched exactly against the request path (the query is ignored).
fn probe_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text.contains('?') || text.contains('#') {
        return Err(format!("{text:?} must be a path starting with \"/\""));
    }
    Ok(text.to_string())
}
