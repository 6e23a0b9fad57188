//! The periodic heap trim of a worker (see the module above for why).

use std::time::{Duration, Instant};

/// Trims the heap every `interval` seconds for as long as the I/O thread runs; returns
/// at once if `interval` is 0 or the C library has no `malloc_trim`.
pub async fn run(interval: f64) {
    if interval <= 0.0 || !SUPPORTED {
        return;
    }
    let period = Duration::from_secs_f64(interval);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // After a long stall (a stopped process), one trim, not a burst of them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        trim_heap();
        crate::debug!("malloc_trim took {} us", started.elapsed().as_micros());
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SUPPORTED: bool = true;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const SUPPORTED: bool = false;

/// Gives every arena's free pages back to the kernel (glibc). It takes each arena's
/// lock in turn, so a thread allocating meanwhile waits at most one arena's walk.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only reads and updates glibc's own allocator state, under
    // its locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn zero_turns_it_off() {
        // Returns at once instead of looping forever.
        run(0.0).await;
    }
}
