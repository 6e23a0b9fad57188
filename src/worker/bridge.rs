//! The batched Rust -> Python handoff (shared/DESIGN.md, "Inside a worker").
//!
//! I/O threads push events into one queue; only the push that finds the queue idle
//! writes to the eventfd the asyncio loop watches. The loop then takes the whole batch
//! with one call into Rust and one GIL acquisition, instead of a `call_soon_threadsafe`
//! (GIL + Handle + self-pipe write) per event.

use crate::asgi::exchange::Exchange;
use crate::asgi::exchange::RequestHead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub enum Event {
    /// A new request: the app is to be called.
    Request(Box<RequestHead>),
    /// Something a receive() or send() of this exchange may be waiting for changed.
    Wake(Arc<Exchange>),
    /// A WebSocket's receive() or send() may be able to complete.
    WsWake(Arc<crate::asgi::ws_session::WsSession>),
    /// The master (or a SIGTERM) asked the worker to stop; `graceful` lets requests finish.
    Stop { graceful: bool },
    /// Every connection is closed after a graceful stop was requested.
    Drained,
}

pub struct Bridge {
    queue: Mutex<Vec<Event>>,
    pending: AtomicBool,
    eventfd: OwnedFd,
}

impl Bridge {
    pub fn new() -> std::io::Result<Bridge> {
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Bridge {
            queue: Mutex::new(Vec::with_capacity(256)),
            pending: AtomicBool::new(false),
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub fn push(&self, event: Event) {
        self.queue.lock().unwrap().push(event);
        if !self.pending.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Take every queued event. Clearing `pending` before taking the queue means an
    /// event pushed after the swap always writes the eventfd again.
    pub fn take(&self, into: &mut Vec<Event>) {
        let mut counter: u64 = 0;
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        self.pending.store(false, Ordering::Release);
        std::mem::swap(&mut *self.queue.lock().unwrap(), into);
    }
}
