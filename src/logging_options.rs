//! Logging options that fit existing setups: uvicorn's `--log-config` and
//! `--use-colors`, gunicorn's access-log format, a JSON access log and path exclusion.
//! Flattened into `Config`, so workers receive them in the boot message too.

use clap::Args;
use serde::{Deserialize, Serialize};

#[derive(Args, Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoggingOptions {
    /// Python logging configuration, as uvicorn reads it: .json or .yaml/.yml
    /// (logging.config.dictConfig), anything else an .ini file (fileConfig); also .toml
    /// and hypercorn's json:PATH / toml:PATH. Applied in every worker before the app is
    /// imported; checked by the master first.
    #[arg(long, value_name = "PATH")]
    pub log_config: Option<String>,

    /// Colour the log level and the access line's status (default: when the output is
    /// a terminal).
    #[arg(long, overrides_with = "no_use_colors")]
    pub use_colors: bool,
    /// Never colour log lines.
    #[arg(long)]
    pub no_use_colors: bool,

    /// Access line in gunicorn's format, e.g. '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s
    /// %(b)s "%(f)s" "%(a)s"' (atoms in docs/logging.md). Written when the response ends.
    #[arg(long, alias = "access-logformat", value_name = "FORMAT")]
    pub access_log_format: Option<String>,

    /// Access log as one JSON object per line (time, client, method, path, query,
    /// status, bytes, duration, protocol, user_agent, referer, request_id).
    #[arg(long, conflicts_with = "access_log_format")]
    pub access_log_json: bool,

    /// No access line for requests to exactly this path (no query; repeatable), e.g.
    /// --access-log-exclude /health.
    #[arg(long = "access-log-exclude", value_name = "PATH")]
    pub access_log_exclude: Vec<String>,
}

impl LoggingOptions {
    /// --use-colors / --no-use-colors, or None to decide by whether the output is a terminal.
    pub fn colors(&self) -> Option<bool> {
        if self.no_use_colors {
            Some(false)
        } else if self.use_colors {
            Some(true)
        } else {
            None
        }
    }
}
