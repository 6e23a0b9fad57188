//! The ASGI `receive()` and `send()` callables of an http request.
//!
//! Both return an already-completed awaitable (`Ready`) when they don't need to wait,
//! so a normal request costs no extra event-loop iteration; they return an asyncio
//! Future only when they must wait for the I/O thread, which completes it through a
//! `Wake` event (see worker/bridge.rs).

use super::exchange::{Exchange, IoWakeups, ResponseHead, State};
use super::message::{
    body_of, convert_headers, convert_headers_into, field, header_bytes, protocol_error, required,
};
use super::pathsend::FileBody;
use crate::fields::Fields;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pyo3::create_exception!(
    _ferrocorn,
    ClientDisconnected,
    PyOSError,
    "send() was called after the client disconnected (ASGI spec 2.4)."
);

/// An awaitable whose result is already known: `await` finishes without suspending.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct Ready {
    value: Option<PyObject>,
}

impl Ready {
    pub fn new(value: PyObject) -> Ready {
        Ready { value: Some(value) }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        match &self.value {
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v.clone_ref(py),))),
        }
    }
}

/// Per-worker Python-side objects that receive() and send() need.
pub struct HttpContext {
    pub(crate) create_future: PyObject,
    call_soon: PyObject,
    /// `Ready(None)`, shared by every send() that doesn't wait.
    pub(crate) ready_none: Py<Ready>,
    work: Arc<IterationWork>,
    end_of_iteration: Py<EndOfIteration>,
}

/// What is left to do at the end of the current event loop iteration.
struct IterationWork {
    /// Responses started without a body yet; their heads are sent unless a body
    /// message comes first in this iteration.
    unflushed: Mutex<Vec<Arc<Exchange>>>,
    wakeups: Arc<IoWakeups>,
    scheduled: AtomicBool,
}

impl HttpContext {
    pub fn new(
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        wakeups: Arc<IoWakeups>,
    ) -> PyResult<Self> {
        let work = Arc::new(IterationWork {
            unflushed: Mutex::new(Vec::new()),
            wakeups,
            scheduled: AtomicBool::new(false),
        });
        Ok(HttpContext {
            create_future: event_loop.getattr("create_future")?.unbind(),
            call_soon: event_loop.getattr("call_soon")?.unbind(),
            ready_none: Py::new(py, Ready { value: None })?,
            end_of_iteration: Py::new(py, EndOfIteration { work: work.clone() })?,
            work,
        })
    }

    /// Run `EndOfIteration` once, after the callbacks of this loop iteration.
    fn schedule(&self, py: Python<'_>) -> PyResult<()> {
        if !self.work.scheduled.swap(true, Ordering::Relaxed) {
            self.call_soon
                .call1(py, (self.end_of_iteration.clone_ref(py),))?;
        }
        Ok(())
    }

    /// The I/O side of `ex` has something to do: wake it at the end of this iteration.
    pub(crate) fn wake_io(&self, py: Python<'_>, ex: &Arc<Exchange>) {
        self.work.wakeups.push(ex.clone());
        if let Err(e) = self.schedule(py) {
            // The loop is closing; wake at once rather than never.
            crate::debug!("call_soon failed ({e}); waking the I/O thread directly");
            self.work.wakeups.kick();
        }
    }
}

/// Sends the heads of responses whose app started them and then waited, then wakes
/// the I/O thread once for everything this iteration produced.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct EndOfIteration {
    work: Arc<IterationWork>,
}

#[pymethods]
impl EndOfIteration {
    fn __call__(&self) {
        self.work.scheduled.store(false, Ordering::Relaxed);
        let pending = std::mem::take(&mut *self.work.unflushed.lock().unwrap());
        for ex in pending {
            let mut st = ex.state();
            if !st.head_taken && !st.body_seen {
                st.head_flush = true;
                drop(st);
                self.work.wakeups.push(ex);
            }
        }
        self.work.wakeups.kick();
    }
}

#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct Receive {
    ex: Arc<Exchange>,
    ctx: Arc<HttpContext>,
}

#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct Send {
    ex: Arc<Exchange>,
    ctx: Arc<HttpContext>,
}

pub fn callables(
    py: Python<'_>,
    ex: &Arc<Exchange>,
    ctx: &Arc<HttpContext>,
) -> PyResult<(Py<Receive>, Py<Send>)> {
    let receive = Py::new(
        py,
        Receive {
            ex: ex.clone(),
            ctx: ctx.clone(),
        },
    )?;
    let send = Py::new(
        py,
        Send {
            ex: ex.clone(),
            ctx: ctx.clone(),
        },
    )?;
    Ok((receive, send))
}

/// The next receive() message if one is available now.
fn next_message(py: Python<'_>, st: &mut State) -> PyResult<Option<PyObject>> {
    if !st.body.is_empty() {
        let data = take_body(st);
        let more = !st.body_end;
        st.body_end_reported = !more;
        return request_message(py, &data, more).map(Some);
    }
    if st.body_end && !st.body_end_reported {
        st.body_end_reported = true;
        return request_message(py, b"", false).map(Some);
    }
    if st.disconnected || st.response_done {
        let msg = PyDict::new(py);
        msg.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
        return Ok(Some(msg.into_any().unbind()));
    }
    Ok(None)
}

fn take_body(st: &mut State) -> Bytes {
    if st.body.len() == 1 {
        return st.body.pop_front().unwrap();
    }
    let total = st.body.iter().map(Bytes::len).sum();
    let mut joined = BytesMut::with_capacity(total);
    for chunk in st.body.drain(..) {
        joined.extend_from_slice(&chunk);
    }
    joined.freeze()
}

fn request_message(py: Python<'_>, body: &[u8], more: bool) -> PyResult<PyObject> {
    let msg = PyDict::new(py);
    msg.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    msg.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    msg.set_item(intern!(py, "more_body"), more)?;
    Ok(msg.into_any().unbind())
}

#[pymethods]
impl Receive {
    fn __call__(&self, py: Python<'_>) -> PyResult<PyObject> {
        let mut st = self.ex.state();
        if let Some(msg) = next_message(py, &mut st)? {
            return Py::new(py, Ready { value: Some(msg) }).map(Py::into_any);
        }
        let want_body = !st.body_end;
        st.body_wanted = want_body;
        st.rx_waiting = true;
        drop(st);
        let fut = self.ctx.create_future.call0(py)?;
        self.ex.waiters.lock().unwrap().rx = Some(fut.clone_ref(py));
        if want_body {
            self.ctx.wake_io(py, &self.ex);
        }
        Ok(fut)
    }
}

#[pymethods]
impl Send {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let kind = required(message, intern!(py, "type"))?;
        let kind = kind.downcast::<PyString>()?;
        if kind.is(intern!(py, "http.response.body")) || kind == "http.response.body" {
            self.body(py, message)
        } else if kind.is(intern!(py, "http.response.start")) || kind == "http.response.start" {
            self.start(py, message)
        } else if kind == "http.response.pathsend" {
            self.pathsend(py, message)
        } else if kind == "http.response.early_hint" {
            self.early_hint(py, message)
        } else if kind == "http.response.trailers" {
            self.trailers(py, message)
        } else {
            Err(protocol_error(format!(
                "Unexpected ASGI message '{}' sent for an http request.",
                kind.to_cow()?
            )))
        }
    }

    /// Called by the request runner when the app returned.
    fn app_done(&self, py: Python<'_>) {
        let mut st = self.ex.state();
        if st.disconnected {
            // The app gave up on a client that left: nothing to answer, nothing wrong.
            st.complete = true;
        } else if !st.started {
            drop(st);
            crate::error!("ASGI callable returned without starting response.");
            self.fail(py, true);
        } else if !st.complete && !st.disconnected && !st.response_done {
            drop(st);
            crate::error!("ASGI callable returned without completing response.");
            self.fail(py, false);
        } else {
            st.complete = true;
        }
    }

    /// Called by the request runner when the app raised.
    fn app_error(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = exc.is_instance(&py.import("asyncio")?.getattr("CancelledError")?)?;
        let disconnected = self.ex.state().disconnected;
        if cancelled || disconnected {
            crate::debug!(
                "ASGI callable ended early: the request was cancelled or the client left"
            );
        } else {
            let tb = py
                .import("traceback")?
                .call_method1("format_exception", (exc,))?;
            let text: String = PyString::new(py, "")
                .call_method1("join", (tb,))?
                .extract()?;
            crate::error!("Exception in ASGI application\n{}", text.trim_end());
        }
        let started = self.ex.state().started;
        self.fail(py, !started);
        Ok(())
    }
}

impl Send {
    fn start(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let status = required(message, intern!(py, "status"))?;
        let status: u16 = status.extract().map_err(|_| {
            protocol_error(format!("Invalid status in http.response.start: {status}"))
        })?;
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| (200..600).contains(&s.as_u16()))
            .ok_or_else(|| protocol_error(format!("Invalid HTTP status code {status}")))?;
        // Into the connection's buffer from its last response when there is one: the
        // state is not locked meanwhile, since reading the headers may run Python code.
        let spare = std::mem::take(&mut self.ex.state().spare_fields);
        let headers = match field(message, intern!(py, "headers"))? {
            Some(h) if !h.is_none() => convert_headers_into(&h, spare)?,
            _ => spare,
        };
        let trailers = match field(message, intern!(py, "trailers"))? {
            Some(t) => t.is_truthy()?,
            None => false,
        };
        let mut st = self.ex.state();
        if st.started {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.start' sent, after response already started."
                    .into(),
            ));
        }
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        st.started = true;
        st.trailers_expected = trailers;
        st.head = Some(ResponseHead { status, headers });
        drop(st);
        self.ctx
            .work
            .unflushed
            .lock()
            .unwrap()
            .push(self.ex.clone());
        self.ctx.schedule(py)?;
        Ok(self.ctx.ready_none.clone_ref(py).into_any())
    }

    fn body(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let body = field(message, intern!(py, "body"))?;
        let more = match field(message, intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        // Converted before the state is locked: a copy may run Python code.
        let data = match body {
            Some(body) if !body.is_none() => Some(body_of(body)?),
            _ => None,
        };
        let mut st = self.ex.state();
        if !st.started {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.body' sent, before 'http.response.start'."
                    .into(),
            ));
        }
        if st.complete || st.body_done {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.body' sent, after response already completed."
                    .into(),
            ));
        }
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        if st.response_done {
            // A HEAD response: the connection already finished it; the body is not sent.
            st.body_done = !more;
            st.complete = !more && !st.trailers_expected;
            return Ok(self.ctx.ready_none.clone_ref(py).into_any());
        }
        if let Some(data) = data {
            if !data.is_empty() {
                st.queued_bytes += data.len();
                st.chunks.push_back(data);
            }
        }
        st.body_seen = true;
        st.body_done = !more;
        st.complete = !more && !st.trailers_expected;
        let must_wait = more && st.queued_bytes > self.ex.water.high;
        if must_wait {
            st.tx_waiting = true;
        }
        drop(st);
        self.ctx.wake_io(py, &self.ex);
        if !must_wait {
            return Ok(self.ctx.ready_none.clone_ref(py).into_any());
        }
        let fut = self.ctx.create_future.call0(py)?;
        self.ex.waiters.lock().unwrap().tx = Some(fut.clone_ref(py));
        Ok(fut)
    }

    /// The app failed: answer 500 if nothing was sent yet, else close the connection.
    fn fail(&self, py: Python<'_>, send_500: bool) {
        let mut st = self.ex.state();
        if send_500 && !st.started {
            answer_500(&mut st);
        } else if !st.complete {
            st.aborted = true;
        }
        drop(st);
        self.ctx.wake_io(py, &self.ex);
    }

    /// The body is a file the I/O thread sends (sendfile(2) where it can). The file is
    /// opened here: a missing file is a 500 while the head is not sent yet.
    fn pathsend(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let path = required(message, intern!(py, "path"))?;
        let path: String = path.extract().map_err(|_| {
            protocol_error(format!(
                "http.response.pathsend 'path' must be str, not {}",
                path.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        let opened = py.allow_threads(|| FileBody::open(&path));
        let mut st = self.ex.state();
        if !st.started {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.pathsend' sent, before 'http.response.start'."
                    .into(),
            ));
        }
        if st.complete || st.body_done {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.pathsend' sent, after response already completed."
                    .into(),
            ));
        }
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        st.body_seen = true;
        st.body_done = true;
        st.complete = !st.trailers_expected;
        if st.response_done {
            // A HEAD response, already finished: nothing to send.
            return Ok(self.ctx.ready_none.clone_ref(py).into_any());
        }
        let problem = match opened {
            Err(e) => Some(format!("cannot open {path:?}: {e}")),
            Ok(file) => {
                let declared = st.head.as_ref().and_then(|h| {
                    let v = h.headers.get(b"content-length")?;
                    std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok()
                });
                let available = st.queued_bytes as u64 + file.remaining;
                let problem = declared.filter(|&n| n > available).map(|n| {
                    format!("{path:?} has {available} bytes, fewer than its content-length {n}")
                });
                st.file = Some(file);
                problem
            }
        };
        if let Some(problem) = problem {
            crate::error!("http.response.pathsend failed: {problem}");
            st.file = None;
            if st.head_taken {
                st.aborted = true; // the head is out: end the response visibly broken
            } else {
                answer_500(&mut st);
            }
        }
        drop(st);
        self.ctx.wake_io(py, &self.ex);
        Ok(self.ctx.ready_none.clone_ref(py).into_any())
    }

    /// A 103 Early Hints response with these `link` values, before the final one.
    fn early_hint(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let links = required(message, intern!(py, "links"))?;
        let mut values = Vec::new();
        for link in links.try_iter()? {
            let link = link?;
            let raw = header_bytes(&link)?;
            let value = http::HeaderValue::from_bytes(&raw).map_err(|_| {
                protocol_error("Invalid link value in http.response.early_hint".into())
            })?;
            values.push(value);
        }
        let st = self.ex.state();
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        // A hint after the response started is pointless; it is dropped.
        let send = !st.started && !values.is_empty();
        drop(st);
        if send {
            self.ex.push_hint(values);
            self.ctx.wake_io(py, &self.ex);
        }
        Ok(self.ctx.ready_none.clone_ref(py).into_any())
    }

    /// Trailer fields after the last body message, when the start said `trailers: True`.
    fn trailers(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let headers = match field(message, intern!(py, "headers"))? {
            Some(h) if !h.is_none() => convert_headers(&h)?,
            _ => Fields::new(),
        };
        let more = match field(message, intern!(py, "more_trailers"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let mut st = self.ex.state();
        if !st.started || !st.trailers_expected {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.trailers' sent, without 'trailers': True in 'http.response.start'."
                    .into(),
            ));
        }
        if !st.body_done || st.complete {
            return Err(protocol_error(
                "Unexpected ASGI message 'http.response.trailers' sent, before the last body message or after the response completed."
                    .into(),
            ));
        }
        if st.disconnected {
            return Err(ClientDisconnected::new_err("client disconnected"));
        }
        headers.append_to(st.trailers.get_or_insert_with(HeaderMap::new), |_| true);
        st.complete = !more;
        drop(st);
        self.ctx.wake_io(py, &self.ex);
        Ok(self.ctx.ready_none.clone_ref(py).into_any())
    }
}

/// Make the not-yet-sent response a plain 500 that closes the connection.
pub(crate) fn answer_500(st: &mut State) {
    let mut headers = Fields::new();
    headers.push("content-type", "text/plain; charset=utf-8");
    headers.push("connection", "close");
    st.started = true;
    st.head = Some(ResponseHead {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers,
    });
    st.chunks.clear();
    st.file = None;
    st.trailers_expected = false;
    let body = Bytes::from_static(b"Internal Server Error");
    st.queued_bytes = body.len();
    st.chunks.push_back(body);
    st.body_seen = true;
    st.complete = true;
}

/// Completes whatever receive() / send() future of this exchange can complete now.
pub fn wake(py: Python<'_>, ex: &Arc<Exchange>, ctx: &HttpContext) -> PyResult<()> {
    let mut waiters = ex.waiters.lock().unwrap();
    if let Some(fut) = waiters.rx.take() {
        let mut st = ex.state();
        match next_message(py, &mut st)? {
            Some(msg) => {
                drop(st);
                resolve(py, &fut, Ok(msg))?;
            }
            None => {
                st.rx_waiting = true;
                let want = !st.body_end;
                st.body_wanted = want;
                drop(st);
                waiters.rx = Some(fut);
                if want {
                    ctx.wake_io(py, ex);
                }
            }
        }
    }
    if let Some(fut) = waiters.tx.take() {
        let mut st = ex.state();
        if st.disconnected {
            drop(st);
            let err = ClientDisconnected::new_err("client disconnected");
            resolve(py, &fut, Err(err))?;
        } else if st.response_done || st.aborted || st.queued_bytes < ex.water.low {
            drop(st);
            resolve(py, &fut, Ok(py.None()))?;
        } else {
            st.tx_waiting = true;
            drop(st);
            waiters.tx = Some(fut);
        }
    }
    Ok(())
}

pub(crate) fn resolve(py: Python<'_>, fut: &PyObject, outcome: PyResult<PyObject>) -> PyResult<()> {
    let fut = fut.bind(py);
    // The awaiting task may have been cancelled meanwhile.
    if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match outcome {
        Ok(v) => fut.call_method1(intern!(py, "set_result"), (v,))?,
        Err(e) => fut.call_method1(intern!(py, "set_exception"), (e.into_value(py),))?,
    };
    Ok(())
}
