//! The batched Rust -> Python handoff (shared/DESIGN.md, "Inside a worker").
//!
//! I/O threads push events into one queue; only the push that finds the queue idle
//! writes to the eventfd the asyncio loop watches. The loop then takes the whole batch
//! with one call into Rust and one GIL acquisition, instead of a `call_soon_threadsafe`
//! (GIL + Handle + self-pipe write) per event.
//!
//! On the I/O thread the eventfd write waits for the tasks that were ready before the
//! first push to run: the push wakes a flusher task (`run_flusher`), which tokio's
//! current-thread scheduler runs after them. A burst of readable connections then
//! reaches Python as one batch and one wake-up, instead of a wake-up for its first
//! request that preempts the I/O thread and leaves the rest for the next. (A park hook
//! would wait for an empty run queue, which a busy I/O thread may never have.)

use crate::asgi::exchange::{ConnInfo, Exchange, RequestHead};
use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// Where new http requests go instead of the event loop: a WSGI worker's thread pool.
/// Its threads wait on each exchange's condition variable (`Exchange::wait`) rather
/// than on futures completed by the loop.
pub trait RequestSink: Send + Sync {
    fn push(&self, head: Box<RequestHead>);

    /// A task the sink needs on the I/O thread for the life of the server.
    fn io_task(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        None
    }
}

/// A deferred batch this long is handed over at once.
const FLUSH_AT: usize = 64;

thread_local! {
    /// Set on the I/O thread, where the flusher task runs.
    static DEFER_NOTIFY: Cell<bool> = const { Cell::new(false) };
}

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
    /// An access record for Python logging (the access logger has handlers or filters).
    Access(Box<crate::access_log::PyAccess>),
    /// A closed connection's facts, holding Python objects (the scope's cached `client`,
    /// `server` and `tls`), to be dropped where the GIL is held (`release_on_loop`).
    Release(Box<ConnInfo>),
}

/// Hands a closed connection's facts to the loop's thread if they hold Python objects
/// and this was the last reference. Dropped on the I/O thread instead, those objects
/// would go through pyo3's deferred-decref pool, and once that pool exists every later
/// call into the extension, on every request, locks its mutex.
pub fn release_on_loop(bridge: &Bridge, conn: Arc<ConnInfo>) {
    if let Some(conn) = Arc::into_inner(conn) {
        if conn.holds_python() {
            bridge.push(Event::Release(Box::new(conn)));
        }
    }
}

pub struct Bridge {
    queue: Mutex<Vec<Event>>,
    /// The eventfd was written and Python has not taken the queue since.
    pending: AtomicBool,
    /// Events were queued on the I/O thread without writing the eventfd yet.
    deferred: AtomicBool,
    flusher: Notify,
    eventfd: OwnedFd,
    /// Set once in a WSGI worker, before serving starts.
    sink: OnceLock<Arc<dyn RequestSink>>,
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
            deferred: AtomicBool::new(false),
            flusher: Notify::new(),
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            sink: OnceLock::new(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Marks the calling thread as the I/O thread: its pushes wait for `flush`.
    pub fn defer_notify_on_this_thread() {
        DEFER_NOTIFY.with(|d| d.set(true));
    }

    /// Send http requests to `sink` (a WSGI thread pool) from now on; the loop still
    /// gets the control events (stop, drained).
    pub fn set_request_sink(&self, sink: Arc<dyn RequestSink>) {
        let _ = self.sink.set(sink);
    }

    /// Requests are served by threads that block on their exchange (WSGI).
    pub fn blocking_requests(&self) -> bool {
        self.sink.get().is_some()
    }

    pub fn push(&self, event: Event) {
        let event = match (event, self.sink.get()) {
            (Event::Request(head), Some(sink)) => return sink.push(head),
            (event, _) => event,
        };
        let queued = {
            let mut queue = self.queue.lock().unwrap();
            queue.push(event);
            queue.len()
        };
        if queued < FLUSH_AT && DEFER_NOTIFY.with(|d| d.get()) {
            if !self.deferred.swap(true, Ordering::Relaxed) {
                self.flusher.notify_one();
            }
        } else {
            self.notify();
        }
    }

    /// The I/O thread's task that hands deferred events over (see the module doc).
    pub async fn run_flusher(&self) {
        let flusher = async {
            loop {
                self.flusher.notified().await;
                self.flush();
            }
        };
        match self.sink.get().and_then(|sink| sink.io_task()) {
            Some(sink_task) => {
                tokio::join!(flusher, sink_task);
            }
            None => flusher.await,
        }
    }

    /// Wakes Python for what the I/O thread queued.
    pub fn flush(&self) {
        if self.deferred.swap(false, Ordering::Relaxed) {
            self.notify();
        }
    }

    fn notify(&self) {
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
