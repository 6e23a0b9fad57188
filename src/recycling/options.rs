//! Options of drains and recycling. Their own struct, flattened into `Config`, so the
//! workers receive them with the rest of the configuration.

use clap::Args;
use serde::{Deserialize, Serialize};

/// Default of --drain-idle-grace. An idle kept-alive HTTP/1.1 connection can only be
/// told to go away by closing it, and a close races the client's next request, which
/// may already be on the wire (uvicorn #2757, gunicorn #1236). During the grace
/// window every request that arrives is answered, with `connection: close`; only the
/// connections that stayed silent for the whole window are closed. Two seconds covers
/// a request already sent (one trip, milliseconds in a data centre) and the next
/// request of any client that is actively sending, while keeping a HUP or a
/// recycling drain short; it never exceeds --timeout-keep-alive, after which the
/// connection would be closed anyway.
pub const DEFAULT_DRAIN_IDLE_GRACE: f64 = 2.0;

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct RecyclingOptions {
    /// While a worker drains (TERM, HUP, recycling), keep idle keep-alive HTTP/1.1
    /// connections open this many seconds and answer their next request with
    /// "connection: close"; close only those that sent nothing. 0 closes idle
    /// connections at once. Capped at the keep-alive timeout (--timeout-keep-alive).
    #[arg(long, default_value_t = DEFAULT_DRAIN_IDLE_GRACE, value_name = "SECONDS",
          value_parser = non_negative)]
    pub drain_idle_grace: f64,

    /// End a connection after this many requests: the last response carries
    /// "connection: close" (HTTP/1.1), or a graceful GOAWAY is sent (HTTP/2), so
    /// clients behind an L4 balancer reconnect and reach new pods.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests_per_connection: Option<u64>,

    /// End a connection once it is this many seconds old, the same graceful way as
    /// --max-requests-per-connection.
    #[arg(long, value_name = "SECONDS", value_parser = positive)]
    pub max_connection_age: Option<f64>,

    /// Add a random 0..=J seconds to each connection's --max-connection-age, so
    /// connections opened together don't all end together.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS", value_parser = non_negative)]
    pub max_connection_age_jitter: f64,

    /// Replace a worker (the rolling way, one at a time) once its resident memory
    /// is over this many MiB for --workers-max-rss-samples samples in a row (the
    /// master reads it from /proc every --workers-max-rss-interval seconds).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub workers_max_rss: Option<u64>,

    /// Consecutive samples over --workers-max-rss before a worker is replaced, so a
    /// short peak that the allocator gives back doesn't cost a restart.
    #[arg(long, alias = "rss-samples", default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub workers_max_rss_samples: u32,

    /// Seconds between two samples of the workers' resident memory.
    #[arg(long, alias = "rss-sample-interval", default_value_t = 2.0, value_name = "SECONDS",
          value_parser = positive)]
    pub workers_max_rss_interval: f64,

    /// Replace each worker (the rolling way) after it has run this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = positive)]
    pub workers_lifetime: Option<f64>,

    /// Add a random 0..=J seconds to each worker's --workers-lifetime, so workers
    /// started together are not replaced together.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS", value_parser = non_negative)]
    pub workers_lifetime_jitter: f64,
}

fn number(text: &str) -> Result<f64, String> {
    let n: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    if !n.is_finite() {
        return Err(format!("'{text}' is not a finite number"));
    }
    Ok(n)
}

fn non_negative(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    if n < 0.0 {
        return Err("must be 0 or more".into());
    }
    Ok(n)
}

fn positive(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    if n <= 0.0 {
        return Err("must be more than 0".into());
    }
    Ok(n)
}

/// A random-enough value in 0..=1 for spreading restarts: any spread will do, it only
/// keeps workers and connections from ending in lockstep.
pub fn spread(salt: u64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    // splitmix64 of the clock and the salt.
    let mut z =
        (nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_stays_in_range() {
        for salt in 0..1000 {
            let s = spread(salt);
            assert!((0.0..=1.0).contains(&s), "{s}");
        }
    }

    #[test]
    fn values_are_checked() {
        assert!(non_negative("-1").is_err());
        assert!(positive("0").is_err());
        assert_eq!(positive("2.5"), Ok(2.5));
        assert!(number("nan").is_err());
    }
}
