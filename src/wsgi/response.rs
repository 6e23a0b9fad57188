//! `start_response`, `write()`, the response iterable and `wsgi.file_wrapper`.
//!
//! The head waits in `Response` until the first non-empty body bytes (or the end of
//! the iterable), as PEP 3333 asks, so an app can still replace it with `exc_info`
//! until then. Body chunks go to the exchange as the app produces them; a list (or
//! tuple) is handed over whole with one wake of the I/O thread, which then knows the
//! length and sends Content-Length; other iterables are handed over chunk by chunk
//! (chunked on HTTP/1.1 unless the app set Content-Length). When more than the
//! exchange's high-water mark is queued the thread waits, GIL released, for the socket
//! to take it, at most --timeout-write without progress.

use super::pool::Progress;
use crate::asgi::exchange::{Exchange, ResponseHead};
use crate::asgi::http::{answer_500, ClientDisconnected};
use crate::asgi::message::{body_bytes, convert_headers};
use crate::asgi::pathsend::FileBody;
use bytes::Bytes;
use http::StatusCode;
use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT_SLICE: Duration = Duration::from_secs(1);

pub struct Response {
    ex: Arc<Exchange>,
    state: Mutex<Head>,
    write_timeout: Duration,
    progress: Arc<Progress>,
    slot: usize,
}

#[derive(Default)]
struct Head {
    /// Set by start_response, until the head is handed to the exchange.
    pending: Option<ResponseHead>,
    /// start_response was called.
    called: bool,
    /// The head went to the exchange: it can no longer change.
    committed: bool,
}

impl Response {
    pub fn new(
        ex: Arc<Exchange>,
        write_timeout: Duration,
        progress: Arc<Progress>,
        slot: usize,
    ) -> Self {
        Response {
            ex,
            state: Mutex::new(Head::default()),
            write_timeout,
            progress,
            slot,
        }
    }

    fn start(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let mut head = self.state.lock().unwrap();
        if let Some(exc_info) = exc_info {
            if head.committed {
                // PEP 3333: too late to change the response; the error goes on up.
                let value = exc_info.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
        } else if head.called {
            return Err(PyAssertionError::new_err(
                "start_response() called a second time without exc_info",
            ));
        }
        let status = parse_status(status)?;
        if !headers.is_instance_of::<PyList>() {
            return Err(PyTypeError::new_err(format!(
                "start_response() headers must be a list, not {}",
                headers.get_type().name()?
            )));
        }
        let headers = convert_headers(headers)?;
        head.pending = Some(ResponseHead { status, headers });
        head.called = true;
        Ok(())
    }

    /// Hand the head to the exchange, once.
    fn commit(&self) -> PyResult<()> {
        let mut head = self.state.lock().unwrap();
        if head.committed {
            return Ok(());
        }
        let Some(pending) = head.pending.take() else {
            return Err(PyAssertionError::new_err(
                "the response body was written before start_response() was called",
            ));
        };
        head.committed = true;
        drop(head);
        let mut st = self.ex.state();
        st.started = true;
        st.head = Some(pending);
        Ok(())
    }

    /// One body chunk. `wake`: let the I/O thread send it now (else at the end).
    pub fn push(&self, py: Python<'_>, data: Bytes, wake: bool) -> PyResult<()> {
        if data.is_empty() && !self.state.lock().unwrap().committed {
            return Ok(()); // PEP 3333: the head waits for non-empty bytes.
        }
        self.commit()?;
        let mut st = self.ex.state();
        if st.disconnected || st.aborted {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        if st.response_done {
            return Ok(()); // HEAD: the connection already ended the response.
        }
        if !data.is_empty() {
            st.queued_bytes += data.len();
            st.chunks.push_back(data);
        }
        st.body_seen = true;
        let over = st.queued_bytes > self.ex.water.high;
        drop(st);
        if wake || over {
            self.ex.wake_io();
        }
        self.progress.touch(self.slot);
        if over {
            self.wait_for_room(py)?;
        }
        Ok(())
    }

    /// A whole response body known at once (a list or tuple): the head, the chunks and
    /// the end handed over under one lock, so the connection always sees the length
    /// and sends Content-Length. False (nothing done) when it is too big to queue.
    fn push_whole(&self, chunks: &[Bytes]) -> PyResult<bool> {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        if total > self.ex.water.high {
            return Ok(false);
        }
        let pending = {
            let mut head = self.state.lock().unwrap();
            if !head.committed && head.pending.is_none() {
                return Err(PyAssertionError::new_err(
                    "the application returned without calling start_response()",
                ));
            }
            head.committed = true;
            head.pending.take()
        };
        let mut st = self.ex.state();
        if let Some(pending) = pending {
            st.started = true;
            st.head = Some(pending);
        }
        if st.disconnected || st.aborted {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        if !st.response_done {
            for data in chunks.iter().filter(|d| !d.is_empty()) {
                st.queued_bytes += data.len();
                st.chunks.push_back(data.clone());
            }
        }
        st.body_seen = true;
        st.body_done = true;
        st.complete = true;
        drop(st);
        self.ex.wake_io();
        self.progress.touch(self.slot);
        Ok(true)
    }

    /// Wait, GIL released, until the socket took the queue down to the low-water
    /// mark; a client that takes nothing for --timeout-write is given up on.
    fn wait_for_room(&self, py: Python<'_>) -> PyResult<()> {
        let ex = self.ex.clone();
        let timeout = self.write_timeout;
        let (progress, slot) = (self.progress.clone(), self.slot);
        // Waiting on the client is not the app hanging: --timeout-write bounds it.
        self.progress.idle(self.slot);
        let outcome = py.allow_threads(move || {
            let mut st = ex.state();
            let mut deadline = Instant::now() + timeout;
            let mut queued = st.queued_bytes;
            loop {
                if st.disconnected || st.aborted {
                    return Err(());
                }
                if st.response_done || st.queued_bytes < ex.water.low {
                    return Ok(());
                }
                if st.queued_bytes < queued {
                    queued = st.queued_bytes;
                    deadline = Instant::now() + timeout;
                }
                let now = Instant::now();
                if now >= deadline {
                    crate::warn!(
                        "The client took no response bytes for {timeout:?} (--timeout-write); closing the connection"
                    );
                    st.aborted = true;
                    drop(st);
                    ex.wake_io();
                    return Err(());
                }
                st.tx_waiting = true;
                st = ex.wait(st, WAIT_SLICE.min(deadline - now));
            }
        });
        progress.touch(slot);
        outcome.map_err(|()| ClientDisconnected::new_err("client disconnected"))
    }

    /// The app's iterable, sent and closed. `close()` is called whatever happens:
    /// error, client gone, write timeout.
    pub fn send_iterable(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
        let sent = self.send_items(py, iterable);
        let closed = match iterable.getattr(pyo3::intern!(py, "close")) {
            Ok(close) => close.call0().map(drop),
            Err(_) => Ok(()),
        };
        sent.and(closed)
    }

    fn send_items(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(wrapper) = iterable.downcast::<FileWrapper>() {
            if self.send_file(py, wrapper.get())? {
                return Ok(());
            }
        }
        let whole = if let Ok(list) = iterable.downcast::<PyList>() {
            Some(list.iter().map(chunk).collect::<PyResult<Vec<_>>>()?)
        } else if let Ok(tuple) = iterable.downcast::<PyTuple>() {
            Some(tuple.iter().map(chunk).collect::<PyResult<Vec<_>>>()?)
        } else {
            None
        };
        if let Some(chunks) = whole {
            if self.push_whole(&chunks)? {
                return Ok(());
            }
            for data in chunks {
                self.push(py, data, false)?;
            }
            return Ok(());
        }
        for item in iterable.try_iter()? {
            self.push(py, chunk(item?)?, true)?;
        }
        Ok(())
    }

    /// A file_wrapper around a real file: the connection sends it (sendfile(2) where
    /// the socket allows, else read in pieces off the Python thread). False when the
    /// file-like object has no usable descriptor: it is then iterated.
    fn send_file(&self, py: Python<'_>, wrapper: &FileWrapper) -> PyResult<bool> {
        let filelike = wrapper.filelike.bind(py);
        let Some(fd) = filelike
            .call_method0("fileno")
            .ok()
            .and_then(|n| n.extract::<i32>().ok())
        else {
            return Ok(false);
        };
        let Some(offset) = filelike
            .call_method0("tell")
            .ok()
            .and_then(|n| n.extract::<u64>().ok())
        else {
            return Ok(false);
        };
        // Our own descriptor: the app may close its file as soon as we return.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Ok(false);
        }
        let file = unsafe { std::fs::File::from_raw_fd(dup) };
        if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Ok(false);
        }
        let name = filelike
            .getattr("name")
            .and_then(|n| n.extract::<String>())
            .unwrap_or_else(|_| "<file_wrapper>".into());
        crate::debug!("file_wrapper: {name} from byte {offset}, sent by the connection");
        let body = FileBody::from_file(file, offset, &name)
            .map_err(|e| PyRuntimeError::new_err(format!("file_wrapper: {e}")))?;
        self.commit()?;
        let mut st = self.ex.state();
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        st.body_seen = true;
        if !st.response_done {
            st.file = Some(body);
        }
        // The end in the same step: the connection sees the file's length with the head.
        st.body_done = true;
        st.complete = true;
        drop(st);
        self.ex.wake_io();
        Ok(true)
    }

    /// The app returned and its iterable is done: end the response.
    pub fn finish(&self) {
        if self.ex.state().complete {
            return; // push_whole ended it
        }
        if let Err(e) = self.commit() {
            crate::error!("WSGI application error: {e}");
            return self.fail();
        }
        let mut st = self.ex.state();
        st.body_seen = true;
        st.body_done = true;
        st.complete = true;
        drop(st);
        self.ex.wake_io();
    }

    /// The app failed: a 500 if nothing was sent yet, else the connection closes.
    pub fn fail(&self) {
        let committed = self.state.lock().unwrap().committed;
        let mut st = self.ex.state();
        if !committed && !st.started {
            answer_500(&mut st);
        } else if !st.complete {
            st.aborted = true;
        }
        drop(st);
        self.ex.wake_io();
    }
}

/// "200 OK" -> 200.
fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<StatusCode> {
    let text = status.downcast::<PyString>().map_err(|_| {
        PyTypeError::new_err("start_response() status must be a str such as '200 OK'")
    })?;
    let text = text.to_cow()?;
    let code = text
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
    let valid_rest = text.len() == 3 || text.as_bytes().get(3) == Some(&b' ');
    code.filter(|_| valid_rest)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c) && !(100..200).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| PyValueError::new_err(format!("invalid WSGI status {text:?}")))
}

fn chunk(item: Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.downcast_into::<PyBytes>() {
        Ok(b) => Ok(body_bytes(b)),
        Err(e) => Err(PyTypeError::new_err(format!(
            "WSGI response bodies must be bytes, not {}",
            e.into_inner().get_type().name()?
        ))),
    }
}

/// The `start_response` callable of one request.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct StartResponse {
    response: Arc<Response>,
}

impl StartResponse {
    pub fn new(response: Arc<Response>) -> Self {
        StartResponse { response }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        self.response.start(status, headers, exc_info)?;
        Ok(Write {
            response: self.response.clone(),
        })
    }
}

/// The legacy `write()` callable start_response returns.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct Write {
    response: Arc<Response>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: Bound<'_, PyAny>) -> PyResult<()> {
        self.response.push(py, chunk(data)?, true)
    }
}

/// `wsgi.file_wrapper`: iterates a file-like object in blocks; when the server gets it
/// back as the response and the object has a real file descriptor, the connection
/// sends the file itself (sendfile(2) on plain HTTP/1.1).
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct FileWrapper {
    #[pyo3(get)]
    filelike: PyObject,
    #[pyo3(get)]
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: PyObject, blksize: usize) -> Self {
        FileWrapper { filelike, blksize }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let data = self.filelike.call_method1(py, "read", (self.blksize,))?;
        Ok((data.bind(py).len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Ok(close) = self.filelike.getattr(py, "close") {
            close.call0(py)?;
        }
        Ok(())
    }
}
