//! The connection table the workers share: one slot per worker with its open
//! connection count, whether it is accepting, and when its I/O thread last ran.
//!
//! The master creates it (a memfd, so it can cross the `exec` that starts each worker
//! as a fresh interpreter; an anonymous MAP_SHARED mapping would not survive it), hands
//! each new worker the fd and a slot index, and resets a slot when it reaps the worker
//! that used it. Workers map it and only ever write their own slot; everything in it is
//! an atomic, read without locks. Nothing in here is trusted for correctness: a wrong
//! or stale number only makes a worker wait a few milliseconds longer before accepting
//! (see `accept`), never refuse a connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Room for this many workers at once (including the extra one of a rolling restart
/// and TTIN growth); a worker spawned beyond it simply accepts without balancing.
pub const SLOTS: usize = 512;
/// Written by the master, checked by a worker, so an fd that is not our table (a
/// version mismatch after an upgrade in place) is refused instead of misread.
const MAGIC: u64 = 0x6665_7272_6f62_616c; // "ferrobal"

/// The slot is not in use (its worker was reaped, or it was never handed out).
pub const FREE: u32 = 0;
/// Handed to a worker that has not started accepting yet.
pub const BOOTING: u32 = 1;
/// The worker accepts connections: its count is part of the mean.
pub const ACCEPTING: u32 = 2;
/// The worker stopped accepting (drain): its connections no longer count, so the
/// workers that stay take new connections evenly among themselves.
pub const DRAINING: u32 = 3;

/// One worker's numbers, alone on a cache line: each worker writes only its own slot
/// on every connection open and close, and must not make the others' lines bounce.
#[repr(C, align(64))]
pub struct Slot {
    pub state: AtomicU32,
    pub connections: AtomicU32,
    /// CLOCK_MONOTONIC in milliseconds (the same clock in every process) when the
    /// worker's I/O thread last ran; a slot that stops moving is left out of the mean.
    pub stamp_ms: AtomicU64,
}

#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    /// One past the highest slot handed out, so a worker reads a few slots, not all.
    high_water: AtomicU32,
}

#[repr(C)]
struct Layout {
    header: Header,
    slots: [Slot; SLOTS],
}

/// A mapping of the table (the master's or a worker's).
pub struct Table {
    layout: *const Layout,
}

// SAFETY: the mapping lives as long as the Table, and every field is an atomic.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.layout as *mut libc::c_void, size_of::<Layout>()) };
    }
}

impl Table {
    /// The master's side: a fresh, zeroed table in a memfd. The fd is close-on-exec;
    /// the spawner lets it through to workers only.
    pub fn create() -> io::Result<(Table, OwnedFd)> {
        let name = c"ferrocorn-accept-balance";
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size_of::<Layout>() as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let table = Table::map(fd.as_raw_fd())?;
        table.layout().header.magic.store(MAGIC, Ordering::Release);
        Ok((table, fd))
    }

    /// A worker's side: map the inherited fd, check it is a table, and close the fd so
    /// nothing the app starts inherits it.
    pub fn open(fd: RawFd) -> io::Result<Table> {
        // SAFETY: the master passed this fd for the table and nothing else uses it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let table = Table::map(fd.as_raw_fd())?;
        if table.layout().header.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::other(
                "the fd is not a ferrocorn connection table",
            ));
        }
        Ok(table)
    }

    fn map(fd: RawFd) -> io::Result<Table> {
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (stat.st_size as usize) < size_of::<Layout>() {
            return Err(io::Error::other("the connection table is too small"));
        }
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<Layout>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Table {
            layout: ptr as *const Layout,
        })
    }

    fn layout(&self) -> &Layout {
        // SAFETY: mapped for size_of::<Layout>() bytes, page-aligned, shared memory
        // that every process only touches through atomics.
        unsafe { &*self.layout }
    }

    pub fn slot(&self, index: usize) -> &Slot {
        &self.layout().slots[index]
    }

    /// Master: put a slot back to its unused state (its worker has exited).
    pub fn reset(&self, index: usize, state: u32) {
        let slot = self.slot(index);
        slot.connections.store(0, Ordering::Relaxed);
        slot.stamp_ms.store(0, Ordering::Relaxed);
        slot.state.store(state, Ordering::Release);
    }

    pub fn set_high_water(&self, high_water: usize) {
        self.layout()
            .header
            .high_water
            .store(high_water.min(SLOTS) as u32, Ordering::Release);
    }

    /// The connections of every worker that accepts and whose I/O thread ran lately:
    /// (sum, how many workers).
    pub fn live_totals(&self, now_ms: u64, stale_after_ms: u64) -> (u64, u32) {
        let high_water = self.layout().header.high_water.load(Ordering::Acquire) as usize;
        let mut sum = 0u64;
        let mut live = 0u32;
        for slot in &self.layout().slots[..high_water.min(SLOTS)] {
            if slot.state.load(Ordering::Acquire) != ACCEPTING {
                continue;
            }
            let stamp = slot.stamp_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(stamp) > stale_after_ms {
                continue;
            }
            sum += u64::from(slot.connections.load(Ordering::Relaxed));
            live += 1;
        }
        (sum, live)
    }
}

/// CLOCK_MONOTONIC in milliseconds: one clock for all processes of the machine.
pub fn now_ms() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_sees_what_another_writes() {
        let (master, fd) = Table::create().unwrap();
        let dup = unsafe { libc::dup(fd.as_raw_fd()) };
        let worker = Table::open(dup).unwrap();
        master.reset(0, BOOTING);
        master.reset(1, BOOTING);
        master.set_high_water(2);
        let now = now_ms();
        for (i, n) in [(0, 10), (1, 4)] {
            let slot = worker.slot(i);
            slot.connections.store(n, Ordering::Relaxed);
            slot.stamp_ms.store(now, Ordering::Relaxed);
            slot.state.store(ACCEPTING, Ordering::Release);
        }
        assert_eq!(master.live_totals(now, 1000), (14, 2));
        // A slot whose I/O thread stopped running is left out.
        worker.slot(1).stamp_ms.store(now - 5000, Ordering::Relaxed);
        assert_eq!(master.live_totals(now, 1000), (10, 1));
        // So is a draining one.
        worker.slot(0).state.store(DRAINING, Ordering::Release);
        assert_eq!(master.live_totals(now, 1000), (0, 0));
    }

    #[test]
    fn an_fd_that_is_not_a_table_is_refused() {
        let fd = unsafe { libc::memfd_create(c"other".as_ptr(), libc::MFD_CLOEXEC) };
        unsafe { libc::ftruncate(fd, size_of::<Layout>() as libc::off_t) };
        assert!(Table::open(fd).is_err());
    }
}
