//! Options of the worker's memory upkeep, flattened into `Config`, so the workers
//! receive them with the rest of the configuration.

use clap::Args;
use serde::{Deserialize, Serialize};

/// Default of --malloc-trim-interval. A trim of a worker's heap took 13-300 us under
/// load (--log-level debug logs each one) and the pages it gives back are faulted in
/// again only if the worker needs them; between two trims 10 s apart a busy worker's
/// RSS rises by a few MB at most, given back at the next one.
pub const DEFAULT_MALLOC_TRIM_INTERVAL: f64 = 10.0;

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct MemoryOptions {
    /// Every this many seconds a worker gives the free memory of its heaps back to the
    /// system (glibc's malloc_trim for Python's, and ferrocorn's own allocator's), so its
    /// RSS stays flat under sustained load. 0 turns it off. The malloc_trim part has no
    /// effect with other C libraries (musl) or another allocator preloaded.
    #[arg(long, default_value_t = DEFAULT_MALLOC_TRIM_INTERVAL, value_name = "SECONDS",
          value_parser = non_negative)]
    pub malloc_trim_interval: f64,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of seconds >= 0, got {text:?}")),
    }
}
