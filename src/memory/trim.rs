//! The periodic heap trim of a worker (see the module above for why).

use std::time::{Duration, Instant};

/// Trims the heaps every `interval` seconds for as long as the I/O thread runs; returns
/// at once if `interval` is 0.
pub async fn run(interval: f64) {
    if interval <= 0.0 {
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
        collect_own_heap();
        crate::debug!("heap trim took {} us", started.elapsed().as_micros());
    }
}

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

/// Gives the free pages of the extension's allocator (mimalloc, see the module above)
/// back to the kernel. mimalloc purges freed memory a second after it became free, but
/// only when it is called again: without this an idle worker kept what a burst left
/// (hello world, 10M requests: +0.115 MB per million settled, +0.000 with it;
/// bench/RESULTS.md, 2026-12-03 13:15). It runs on the I/O thread: that thread's pages,
/// and every arena's pending purges, which include the pages the Python thread freed.
fn collect_own_heap() {
    // SAFETY: mi_collect only walks the calling thread's heap and mimalloc's arenas,
    // under mimalloc's own synchronisation; any thread may call it at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn zero_turns_it_off() {
        // Returns at once instead of looping forever.
        run(0.0).await;
    }
}
