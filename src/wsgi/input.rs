//! `wsgi.input`: the request body as a file the app reads. Bytes come from the
//! exchange as the connection reads them (its read-ahead is bounded, see
//! http1/transaction.rs); a read that finds nothing waits with the GIL released until the
//! I/O thread brings more, reaches the end, or the client leaves (then OSError, the
//! `ClientDisconnected` of ASGI's send()). --limit-request-body and the body timeout
//! are enforced by the connection, which ends the exchange.

use super::pool::Progress;
use crate::asgi::exchange::Exchange;
use crate::asgi::http::ClientDisconnected;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::sync::Arc;
use std::time::Duration;

/// The waits are woken by the connection; this only bounds a wait that somehow isn't.
const WAIT_SLICE: Duration = Duration::from_secs(1);

#[pyclass(module = "ferrocorn._ferrocorn")]
pub struct Input {
    ex: Arc<Exchange>,
    progress: Arc<Progress>,
    slot: usize,
    /// Bytes taken from the exchange and not read by the app yet, from `start`.
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl Input {
    pub fn new(ex: Arc<Exchange>, progress: Arc<Progress>, slot: usize) -> Self {
        Input {
            ex,
            progress,
            slot,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Take more of the body into `buf`; false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // What already arrived is taken with the GIL held: no thread switch for it.
        let must_wait = {
            let st = self.ex.state();
            st.body.is_empty() && !st.body_end && !st.disconnected
        };
        if must_wait {
            // Waiting on the client is not the app hanging: the connection's body
            // timeout bounds it, not --timeout.
            self.progress.idle(self.slot);
            let ex = self.ex.clone();
            py.allow_threads(move || {
                let mut st = ex.state();
                while st.body.is_empty() && !st.body_end && !st.disconnected {
                    st.body_wanted = true;
                    st.rx_waiting = true;
                    ex.wake_io();
                    st = ex.wait(st, WAIT_SLICE);
                }
                st.rx_waiting = false;
            });
            self.progress.touch(self.slot);
        }
        let mut st = self.ex.state();
        if !st.body.is_empty() {
            for chunk in st.body.drain(..) {
                self.buf.extend_from_slice(&chunk);
            }
            // The read-ahead has room again: let the connection read on.
            st.body_wanted = false;
            let more = !st.body_end;
            drop(st);
            if more {
                self.ex.wake_io();
            }
            self.progress.touch(self.slot);
            return Ok(true);
        }
        if st.body_end {
            self.eof = true;
            return Ok(false);
        }
        Err(ClientDisconnected::new_err(
            "the client disconnected before sending the whole request body",
        ))
    }

    fn take(&mut self, py: Python<'_>, n: usize) -> Py<PyBytes> {
        let n = n.min(self.buf.len() - self.start);
        let out = PyBytes::new(py, &self.buf[self.start..self.start + n]);
        self.start += n;
        out.unbind()
    }

    /// The whole of the next line (up to `limit` bytes), or None at the end.
    fn line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Option<Py<PyBytes>>> {
        let mut scanned = 0;
        loop {
            let have = self.buffered();
            let window = limit.map_or(have.len(), |l| have.len().min(l));
            if let Some(nl) = have[scanned..window].iter().position(|&b| b == b'\n') {
                return Ok(Some(self.take(py, scanned + nl + 1)));
            }
            if limit.is_some_and(|l| have.len() >= l) {
                return Ok(Some(self.take(py, window)));
            }
            scanned = window;
            if !self.fill(py)? {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                let rest = self.buffered().len();
                return Ok(Some(self.take(py, rest)));
            }
        }
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok((n >= 0).then_some(n as usize))
        }
    }
}

#[pymethods]
impl Input {
    /// Up to `size` bytes (fewer only at the end of the body); all the rest without it.
    #[pyo3(signature = (size = None))]
    fn read(&mut self, py: Python<'_>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyBytes>> {
        let want = size_arg(size)?;
        while want.is_none_or(|n| self.buffered().len() < n) {
            if !self.fill(py)? {
                break;
            }
        }
        let n = want.unwrap_or(usize::MAX);
        Ok(self.take(py, n))
    }

    #[pyo3(signature = (size = None))]
    fn readline(
        &mut self,
        py: Python<'_>,
        size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyBytes>> {
        let limit = size_arg(size)?;
        if limit == Some(0) {
            return Ok(PyBytes::new(py, b"").unbind());
        }
        Ok(self
            .line(py, limit)?
            .unwrap_or_else(|| PyBytes::new(py, b"").unbind()))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines(
        &mut self,
        py: Python<'_>,
        hint: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyList>> {
        let hint = size_arg(hint)?.filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        while let Some(line) = self.line(py, None)? {
            total += line.bind(py).as_bytes().len();
            lines.append(line)?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines.unbind())
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        self.line(py, None)
    }
}
