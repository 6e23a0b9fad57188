//! A worker's slot in the shared connection table, and the one decision it feeds:
//! accept this connection now, or give the other workers a moment to take it.
//!
//! Why a moment and not a refusal: every worker's event loop is woken for a new
//! connection on the shared listener, and the one that runs first takes it, which under
//! load is whichever worker is least busy with Python at that instant, not the one with
//! the fewest connections; measured, 8 workers, the busiest got about twice its fair
//! share. A worker above the mean of the accepting workers (by a small margin) now waits
//! a few milliseconds (`DEFER`, longer the further above it is, at most `DEFER_MAX`)
//! before it tries; a worker at or below the mean takes the connection at once in the
//! meantime. If nobody did (the others are busy, stuck, or there are none), the waiting
//! worker takes it after all, so a connection is delayed at most `DEFER_MAX` and never
//! dropped, and a worker left alone never waits (it is the mean).

use super::table::{self, Table, ACCEPTING, DRAINING};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker just above the mean lets the others take a connection first: long
/// enough for another worker's I/O thread to be scheduled (a few ms), short enough not
/// to show in a connection's setup time. A worker further above waits longer, up to
/// `DEFER_MAX`: on a machine whose CPUs are all busy the others may not run for tens of
/// milliseconds, and with a fixed 3 ms the workers that do run took the burst (measured
/// once at load average 10 on 2 cores: 3 workers with 75 connections, 5 with 35).
pub const DEFER: Duration = Duration::from_millis(3);
pub const DEFER_MAX: Duration = Duration::from_millis(20);
/// How often an accepting worker's I/O thread stamps its slot (and how a stopped or
/// starved worker is recognised: no stamp for `STALE_AFTER_MS`).
pub const STAMP_EVERY: Duration = Duration::from_millis(250);
const STALE_AFTER_MS: u64 = 1500;

/// What the master tells a worker about its slot (in the boot message).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy)]
pub struct SlotSpec {
    pub fd: i32,
    pub index: usize,
}

pub struct WorkerSlot {
    table: Table,
    index: usize,
}

impl WorkerSlot {
    /// Map the table the master passed; an error means this worker accepts without
    /// balancing (the caller logs it once).
    pub fn open(spec: SlotSpec) -> std::io::Result<Arc<WorkerSlot>> {
        if spec.index >= table::SLOTS {
            return Err(std::io::Error::other("slot index out of range"));
        }
        let table = Table::open(spec.fd)?;
        Ok(Arc::new(WorkerSlot {
            table,
            index: spec.index,
        }))
    }

    fn slot(&self) -> &table::Slot {
        self.table.slot(self.index)
    }

    /// From now on this worker's count is part of the mean.
    pub fn start_accepting(&self) {
        self.stamp();
        self.slot().state.store(ACCEPTING, Ordering::Release);
    }

    /// This worker accepts no more: leave the mean to the workers that stay.
    pub fn stop_accepting(&self) {
        self.slot().state.store(DRAINING, Ordering::Release);
    }

    pub fn stamp(&self) {
        self.slot()
            .stamp_ms
            .store(table::now_ms(), Ordering::Relaxed);
    }

    pub fn opened(&self) {
        self.slot().connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.slot().connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Some(wait) when this worker holds more connections than the mean of the
    /// accepting workers plus a margin: it lets the others take the next one first.
    pub fn deferral(&self) -> Option<Duration> {
        let now = table::now_ms();
        // Our own stamp is refreshed here too: a worker that accepts is alive.
        self.slot().stamp_ms.store(now, Ordering::Relaxed);
        let mine = u64::from(self.slot().connections.load(Ordering::Relaxed));
        let (sum, live) = self.table.live_totals(now, STALE_AFTER_MS);
        deferral(mine, sum, live)
    }
}

/// `DEFER` for each margin's worth of connections above the mean, at most `DEFER_MAX`.
fn deferral(mine: u64, sum: u64, live: u32) -> Option<Duration> {
    if !over_mean(mine, sum, live) {
        return None;
    }
    let live = u64::from(live);
    let mean_20 = sum * 20 / live;
    let margin_20 = (mean_20 / 20).max(20);
    let margins_over = (mine * 20 - mean_20) / margin_20;
    Some((DEFER * margins_over.clamp(1, 10) as u32).min(DEFER_MAX))
}

/// `mine` is above the mean of `live` workers holding `sum` connections by more than
/// the margin: one connection, or 5% of the mean, whichever is larger. The margin keeps
/// workers from trading connections back and forth over a difference of one, and the
/// 5% stays well inside the 1.1x bound asked of two workers (issue 17).
fn over_mean(mine: u64, sum: u64, live: u32) -> bool {
    if live <= 1 {
        return false;
    }
    // In twentieths, to stay in integers: mine > mean + max(1, mean / 20).
    let live = u64::from(live);
    let mean_20 = sum * 20 / live;
    let margin_20 = (mean_20 / 20).max(20);
    mine * 20 > mean_20 + margin_20
}

#[cfg(test)]
mod tests {
    use super::over_mean;

    #[test]
    fn only_a_worker_clearly_above_the_mean_defers() {
        // Alone: never.
        assert!(!over_mean(100, 100, 1));
        // Two workers, 10 and 6: mean 8, margin 1.
        assert!(over_mean(10, 16, 2));
        assert!(!over_mean(9, 17, 2));
        // Large counts: the margin is 5% of the mean (mean 200, margin 10).
        assert!(!over_mean(210, 400, 2));
        assert!(over_mean(211, 401, 2));
        // Nobody has a connection yet.
        assert!(!over_mean(0, 0, 8));
    }

    #[test]
    fn the_further_above_the_longer_the_wait() {
        use super::{deferral, DEFER, DEFER_MAX};
        assert_eq!(deferral(9, 17, 2), None);
        // Mean 8, margin 1: 10 is two margins above.
        assert_eq!(deferral(10, 16, 2), Some(DEFER * 2));
        // Mean 50, margin 2.5: 60 is four margins above.
        assert_eq!(deferral(60, 400, 8), Some(DEFER * 4));
        assert_eq!(deferral(200, 400, 8), Some(DEFER_MAX));
    }
}
