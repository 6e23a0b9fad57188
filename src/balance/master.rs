//! The master's side of the connection table: it creates the table before the first
//! worker, hands each new worker a free slot, and resets the slot when it reaps that
//! worker, so a dead worker's count never weighs on the mean.

use super::table::{Table, BOOTING, FREE, SLOTS};
use super::worker::SlotSpec;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub struct SlotTable {
    table: Table,
    fd: OwnedFd,
    /// Which slots belong to a worker that has not been reaped yet (the master's own
    /// bookkeeping; the shared state is only what workers report).
    used: Vec<bool>,
}

impl SlotTable {
    pub fn create() -> std::io::Result<SlotTable> {
        let (table, fd) = Table::create()?;
        Ok(SlotTable {
            table,
            fd,
            used: vec![false; SLOTS],
        })
    }

    /// The fd every worker inherits.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A slot for a worker about to be spawned; None when all are taken (that worker
    /// then accepts without balancing).
    pub fn claim(&mut self) -> Option<SlotSpec> {
        let index = self.used.iter().position(|u| !u)?;
        self.used[index] = true;
        self.table.reset(index, BOOTING);
        self.update_high_water();
        Some(SlotSpec {
            fd: self.fd(),
            index,
        })
    }

    /// The worker that had this slot has exited (or was never started).
    pub fn release(&mut self, index: usize) {
        if index < SLOTS {
            self.used[index] = false;
            self.table.reset(index, FREE);
            self.update_high_water();
        }
    }

    fn update_high_water(&self) {
        let high = self.used.iter().rposition(|u| *u).map_or(0, |i| i + 1);
        self.table.set_high_water(high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_after_release() {
        let mut slots = SlotTable::create().unwrap();
        let a = slots.claim().unwrap();
        let b = slots.claim().unwrap();
        assert_eq!((a.index, b.index), (0, 1));
        slots.release(a.index);
        assert_eq!(slots.claim().unwrap().index, 0);
    }
}
