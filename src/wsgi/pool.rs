//! The per-worker queue of requests and the threads' loop over it.

use super::environ::EnvironBuilder;
use super::input::Input;
use super::response::{FileWrapper, Response, StartResponse};
use crate::asgi::bridge::RequestSink;
use crate::asgi::exchange::{RequestHead, Session};
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long queued requests may go untaken, while some thread is awake, before a
/// sleeping thread is woken for them.
const STALL: Duration = Duration::from_millis(1);

/// Requests waiting for a thread. Its length is bounded by --limit-concurrency (the
/// in-flight count includes queued requests, so the connection answers 503 beyond it)
/// and otherwise by --worker-connections and HTTP/2's stream limit.
///
/// Which thread takes a request: a thread that finishes one takes the next queued one
/// at once, GIL held. A new request wakes a sleeping thread only when no thread is
/// awake; otherwise the awake ones will take it, and the watchdog (on the I/O thread)
/// wakes a sleeper only if nothing was taken from the queue for `STALL` (the awake
/// threads are blocked: in a database call, say). So an app that only computes runs
/// on one hot thread without GIL hand-offs between threads, and an app that waits
/// gets more threads, one per `STALL`, as long as requests wait.
/// (Measured, hello world, one worker: waking a thread per request gave 28k req/s at
/// 8 threads against 42k with 1 thread.)
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    watch: tokio::sync::Notify,
    threads: usize,
}

#[derive(Default)]
struct QueueState {
    heads: VecDeque<Box<RequestHead>>,
    closed: bool,
    /// Threads asleep in `pop` and not yet told to wake. A notify costs a futex
    /// syscall even with nobody to wake.
    sleeping: usize,
    /// Wakes handed out and not yet taken by a woken thread (a woken thread counts as
    /// awake from the notify on, so a burst of requests doesn't wake every thread
    /// before the first one runs).
    wakes: usize,
    /// Requests taken so far: the watchdog's sign of progress.
    taken: u64,
    /// The watchdog is watching the queue.
    watched: bool,
}

impl RequestSink for Queue {
    fn push(&self, head: Box<RequestHead>) {
        let mut st = self.state.lock().unwrap();
        st.heads.push_back(head);
        if st.sleeping == 0 {
            return; // every thread is busy: the first one free takes it
        }
        if st.sleeping >= self.threads {
            self.wake_one(st); // nobody awake would take it
            return;
        }
        if !std::mem::replace(&mut st.watched, true) {
            drop(st);
            self.watch.notify_one();
        }
    }

    fn io_task(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        Some(Box::pin(self.watchdog()))
    }
}

impl Queue {
    pub fn new(threads: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            watch: tokio::sync::Notify::new(),
            threads,
        }
    }

    /// Wakes a sleeping thread when queued requests stop being taken (see `Queue`).
    async fn watchdog(&self) {
        loop {
            self.watch.notified().await;
            let mut taken = self.state.lock().unwrap().taken;
            loop {
                tokio::time::sleep(STALL).await;
                let mut st = self.state.lock().unwrap();
                if st.heads.is_empty() || st.closed {
                    st.watched = false;
                    break;
                }
                if st.taken == taken && st.sleeping > 0 {
                    self.wake_one(st);
                } else {
                    taken = st.taken;
                }
            }
        }
    }

    /// Blocks (the caller released the GIL) until a request comes; None once closed.
    fn pop(&self) -> Option<Box<RequestHead>> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(head) = st.heads.pop_front() {
                st.taken += 1;
                return Some(head);
            }
            if st.closed {
                return None;
            }
            st.sleeping += 1;
            loop {
                st = self.ready.wait(st).unwrap();
                if st.wakes > 0 {
                    st.wakes -= 1; // `wake_one` counted us awake already
                    break;
                }
                if st.closed {
                    st.sleeping -= 1;
                    break;
                }
                // A spurious wake-up: still asleep.
            }
        }
    }

    fn wake_one(&self, mut st: std::sync::MutexGuard<'_, QueueState>) {
        if st.sleeping > 0 {
            st.sleeping -= 1;
            st.wakes += 1;
            drop(st);
            self.ready.notify_one();
        }
    }

    /// A request already waiting, if any: taken without giving up the GIL.
    fn try_pop(&self) -> Option<Box<RequestHead>> {
        let mut st = self.state.lock().unwrap();
        let head = st.heads.pop_front();
        st.taken += head.is_some() as u64;
        head
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }
}

/// When each thread's current request last made progress, for hung-request detection:
/// milliseconds since `epoch`, 0 while the thread is idle.
pub struct Progress {
    epoch: Instant,
    slots: Box<[AtomicU64]>,
}

impl Progress {
    fn new(threads: usize) -> Self {
        Progress {
            epoch: Instant::now(),
            slots: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub fn touch(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.store(self.now(), Ordering::Relaxed);
        }
    }

    pub fn idle(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.store(0, Ordering::Relaxed);
        }
    }

    /// How long the most stuck busy thread has made no progress.
    pub fn longest_stall(&self) -> Duration {
        let now = self.now();
        let oldest = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min();
        Duration::from_millis(oldest.map_or(0, |t| now.saturating_sub(t)))
    }
}

/// What the threads share: the app, the queue, the environ template.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct WsgiPool {
    pub queue: Arc<Queue>,
    app: PyObject,
    environ: EnvironBuilder,
    pub progress: Arc<Progress>,
    write_timeout: Duration,
}

impl WsgiPool {
    pub fn new(
        py: Python<'_>,
        app: PyObject,
        threads: usize,
        multiprocess: bool,
        root_path: &str,
        tls: bool,
        write_timeout: Duration,
    ) -> PyResult<Self> {
        Ok(WsgiPool {
            queue: Arc::new(Queue::new(threads)),
            app,
            environ: EnvironBuilder::new(py, root_path, tls, threads > 1, multiprocess)?,
            progress: Arc::new(Progress::new(threads)),
            write_timeout,
        })
    }

    fn serve_one(&self, py: Python<'_>, head: Box<RequestHead>, slot: usize) {
        let Session::Http(ex) = &head.session else {
            return; // WebSockets are off in a WSGI worker.
        };
        if ex.state().disconnected {
            return; // The client left while the request waited in the queue.
        }
        crate::metrics::recorder::app_called(head.arrived);
        let response = Arc::new(Response::new(
            ex.clone(),
            self.write_timeout,
            self.progress.clone(),
            slot,
        ));
        let outcome = (|| -> PyResult<()> {
            let input = Py::new(py, Input::new(ex.clone(), self.progress.clone(), slot))?;
            let environ = self.environ.build(py, &head, input.into_any())?;
            let start_response = Py::new(py, StartResponse::new(response.clone()))?;
            let iterable = self.app.call1(py, (environ, start_response))?;
            response.send_iterable(py, iterable.bind(py))
        })();
        if let Err(e) = outcome {
            if e.is_instance_of::<crate::asgi::http::ClientDisconnected>(py) {
                crate::debug!("WSGI response ended early: the client left");
            } else {
                log_exception(py, &e);
            }
            response.fail();
        } else {
            response.finish();
        }
    }
}

fn log_exception(py: Python<'_>, e: &PyErr) {
    let text = (|| -> PyResult<String> {
        let tb = py.import("traceback")?.call_method1(
            "format_exception",
            (e.get_type(py), e.value(py), e.traceback(py)),
        )?;
        PyString::new(py, "").call_method1("join", (tb,))?.extract()
    })()
    .unwrap_or_else(|_| e.to_string());
    crate::error!("Exception in WSGI application\n{}", text.trim_end());
}

#[pymethods]
impl WsgiPool {
    /// A pool thread's life: serve requests until the pool closes. `slot` numbers the
    /// thread (0..threads) for hung-request detection.
    fn run(&self, py: Python<'_>, slot: usize) {
        loop {
            // Under load the next request is usually queued already: take it with the
            // GIL still held, so a busy thread serves a run of requests without a GIL
            // hand-off (and a context switch) between each.
            let head = match self.queue.try_pop() {
                Some(head) => head,
                None => {
                    let queue = self.queue.clone();
                    match py.allow_threads(move || queue.pop()) {
                        Some(head) => head,
                        None => return,
                    }
                }
            };
            self.progress.touch(slot);
            self.serve_one(py, head, slot);
            self.progress.idle(slot);
        }
    }

    /// Let the threads go once the queue is empty (the worker is stopping).
    fn close(&self) {
        self.queue.close();
    }

    /// `wsgi.file_wrapper`, for tests and for apps that look it up here.
    #[getter]
    fn file_wrapper<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyType> {
        py.get_type::<FileWrapper>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busy_threads_count_as_stalled() {
        let progress = Progress::new(2);
        assert_eq!(progress.longest_stall(), Duration::ZERO);
        progress.touch(0);
        std::thread::sleep(Duration::from_millis(30));
        progress.touch(1);
        let stall = progress.longest_stall();
        assert!(stall >= Duration::from_millis(25), "{stall:?}");
        progress.idle(0);
        assert!(progress.longest_stall() < Duration::from_millis(25));
        progress.idle(1);
        assert_eq!(progress.longest_stall(), Duration::ZERO);
        progress.touch(7); // a slot that doesn't exist is ignored
    }
}
