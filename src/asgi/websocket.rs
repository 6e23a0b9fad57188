//! The ASGI `receive()` and `send()` callables of a WebSocket (ASGI spec 2.4).
//!
//! Like the http ones they answer with an already-completed awaitable when they need
//! not wait, and with an asyncio Future completed by a `WsWake` event when they must.

use super::exchange::{ResponseHead, STREAM_WATER};
use super::http::{resolve, ClientDisconnected, HttpContext, Ready};
use super::message::{body_bytes, convert_headers, field, protocol_error, required};
use super::ws_session::{Decision, Message, Outgoing, WsSession, WsState};
use crate::fields::Fields;
use bytes::Bytes;
use http::StatusCode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};
use std::sync::Arc;

#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct WsReceive {
    ws: Arc<WsSession>,
    ctx: Arc<HttpContext>,
}

#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct WsSend {
    ws: Arc<WsSession>,
    ctx: Arc<HttpContext>,
}

pub fn callables(
    py: Python<'_>,
    ws: &Arc<WsSession>,
    ctx: &Arc<HttpContext>,
) -> PyResult<(Py<WsReceive>, Py<WsSend>)> {
    let receive = Py::new(
        py,
        WsReceive {
            ws: ws.clone(),
            ctx: ctx.clone(),
        },
    )?;
    let send = Py::new(
        py,
        WsSend {
            ws: ws.clone(),
            ctx: ctx.clone(),
        },
    )?;
    Ok((receive, send))
}

/// The next receive() message if one is available now. Taking a message off a full
/// queue lets the I/O side read the socket again.
fn next_message(py: Python<'_>, ws: &WsSession, st: &mut WsState) -> PyResult<Option<PyObject>> {
    let msg = PyDict::new(py);
    if !st.connect_delivered {
        st.connect_delivered = true;
        msg.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
        return Ok(Some(msg.into_any().unbind()));
    }
    if let Some(message) = st.incoming.pop_front() {
        if st.incoming.len() + 1 == ws.max_queue {
            ws.wake_io();
        }
        msg.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
        match message {
            Message::Text(text) => msg.set_item(intern!(py, "text"), PyString::new(py, &text))?,
            Message::Binary(data) => msg.set_item(intern!(py, "bytes"), PyBytes::new(py, &data))?,
        }
        return Ok(Some(msg.into_any().unbind()));
    }
    if let Some(disconnect) = &st.disconnect {
        msg.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
        msg.set_item(intern!(py, "code"), disconnect.code)?;
        msg.set_item(intern!(py, "reason"), PyString::new(py, &disconnect.reason))?;
        return Ok(Some(msg.into_any().unbind()));
    }
    Ok(None)
}

#[pymethods]
impl WsReceive {
    fn __call__(&self, py: Python<'_>) -> PyResult<PyObject> {
        let mut st = self.ws.state();
        if let Some(msg) = next_message(py, &self.ws, &mut st)? {
            return Py::new(py, Ready::new(msg)).map(Py::into_any);
        }
        st.rx_waiting = true;
        drop(st);
        let fut = self.ctx.create_future.call0(py)?;
        self.ws.waiters.lock().unwrap().rx = Some(fut.clone_ref(py));
        Ok(fut)
    }
}

fn unexpected(kind: &str, when: &str) -> PyErr {
    protocol_error(format!("Unexpected ASGI message '{kind}' sent, {when}."))
}

#[pymethods]
impl WsSend {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let kind = required(message, intern!(py, "type"))?;
        let kind = kind.downcast::<PyString>()?.to_cow()?;
        let mut st = self.ws.state();
        let must_wait = match kind.as_ref() {
            "websocket.send" => {
                if !st.accepted {
                    return Err(unexpected(&kind, "before 'websocket.accept'"));
                }
                if st.app_closed {
                    return Err(unexpected(&kind, "after sending 'websocket.close'"));
                }
                if st.gone || st.disconnect.is_some() {
                    return Err(ClientDisconnected::new_err("client disconnected"));
                }
                let outgoing = data_message(py, message)?;
                let len = match &outgoing {
                    Message::Text(t) => t.len(),
                    Message::Binary(b) => b.len(),
                };
                st.queued_bytes += len;
                st.outgoing.push_back(Outgoing::Message(outgoing));
                let wait = st.queued_bytes > STREAM_WATER.high;
                st.tx_waiting |= wait;
                wait
            }
            "websocket.accept" => {
                if st.decided {
                    return Err(unexpected(&kind, "after the handshake was answered"));
                }
                let subprotocol = match field(message, intern!(py, "subprotocol"))? {
                    Some(p) if !p.is_none() => Some(p.extract::<String>()?),
                    _ => None,
                };
                let headers = match field(message, intern!(py, "headers"))? {
                    Some(h) if !h.is_none() => convert_headers(&h)?,
                    _ => Fields::new(),
                };
                st.decided = true;
                st.accepted = true;
                st.decision = Some(Decision::Accept {
                    subprotocol,
                    headers,
                });
                false
            }
            "websocket.close" => {
                if !st.decided {
                    st.decided = true;
                    st.app_closed = true;
                    st.decision = Some(Decision::Deny);
                } else if st.app_closed || !st.accepted {
                    return Err(unexpected(&kind, "after sending 'websocket.close'"));
                } else if st.gone || st.disconnect.is_some() {
                    return Err(ClientDisconnected::new_err("client disconnected"));
                } else {
                    let code = match field(message, intern!(py, "code"))? {
                        Some(c) if !c.is_none() => c.extract::<u16>()?,
                        _ => 1000,
                    };
                    let reason = match field(message, intern!(py, "reason"))? {
                        Some(r) if !r.is_none() => r.extract::<String>()?,
                        _ => String::new(),
                    };
                    st.app_closed = true;
                    st.outgoing.push_back(Outgoing::Close { code, reason });
                }
                false
            }
            "websocket.http.response.start" => {
                if st.decided {
                    return Err(unexpected(&kind, "after the handshake was answered"));
                }
                let status: u16 = required(message, intern!(py, "status"))?.extract()?;
                let status = StatusCode::from_u16(status)
                    .map_err(|_| protocol_error(format!("Invalid HTTP status code {status}")))?;
                let headers = match field(message, intern!(py, "headers"))? {
                    Some(h) if !h.is_none() => convert_headers(&h)?,
                    _ => Fields::new(),
                };
                st.decided = true;
                st.app_closed = true;
                st.responding = true;
                st.decision = Some(Decision::Respond(ResponseHead { status, headers }));
                false
            }
            "websocket.http.response.body" => {
                if !st.responding || st.deny_complete {
                    return Err(unexpected(
                        &kind,
                        "outside a 'websocket.http.response.start' response",
                    ));
                }
                if let Some(body) = field(message, intern!(py, "body"))? {
                    let data = body.downcast::<PyBytes>().map_err(|_| {
                        protocol_error("websocket.http.response.body 'body' must be bytes".into())
                    })?;
                    if !data.as_bytes().is_empty() {
                        st.deny_body
                            .push_back(Bytes::copy_from_slice(data.as_bytes()));
                    }
                }
                let more = match field(message, intern!(py, "more_body"))? {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                st.deny_complete = !more;
                false
            }
            other => {
                return Err(protocol_error(format!(
                    "Unexpected ASGI message '{other}' sent for a websocket."
                )))
            }
        };
        drop(st);
        self.ws.wake_io();
        if !must_wait {
            return Ok(self.ctx.ready_none.clone_ref(py).into_any());
        }
        let fut = self.ctx.create_future.call0(py)?;
        self.ws.waiters.lock().unwrap().tx = Some(fut.clone_ref(py));
        Ok(fut)
    }

    /// Called by the request runner when the app returned.
    fn app_done(&self) {
        let mut st = self.ws.state();
        if !st.decided {
            drop(st);
            crate::error!("ASGI callable returned without sending handshake.");
            self.fail();
            return;
        }
        if !st.accepted {
            st.deny_complete = true;
        } else if !st.app_closed {
            // Returning ends the WebSocket normally.
            st.app_closed = true;
            st.outgoing.push_back(Outgoing::Close {
                code: 1000,
                reason: String::new(),
            });
        }
        drop(st);
        self.ws.wake_io();
    }

    /// Called by the request runner when the app raised.
    fn app_error(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) -> PyResult<()> {
        let cancelled = exc.is_instance(&py.import("asyncio")?.getattr("CancelledError")?)?;
        let quiet = cancelled
            || exc.is_instance_of::<ClientDisconnected>()
            || self.ws.state().disconnect.is_some();
        if quiet {
            crate::debug!("WebSocket handler ended early: cancelled or the client left");
        } else {
            let tb = py
                .import("traceback")?
                .call_method1("format_exception", (exc,))?;
            let text: String = PyString::new(py, "")
                .call_method1("join", (tb,))?
                .extract()?;
            crate::error!("Exception in ASGI application\n{}", text.trim_end());
        }
        self.fail();
        Ok(())
    }
}

impl WsSend {
    /// The app failed (or returned without answering): 500 before the handshake,
    /// close 1011 after it.
    fn fail(&self) {
        let mut st = self.ws.state();
        if !st.decided {
            let mut headers = Fields::new();
            headers.push("content-type", "text/plain; charset=utf-8");
            st.decided = true;
            st.app_closed = true;
            st.responding = true;
            st.decision = Some(Decision::Respond(ResponseHead {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers,
            }));
            st.deny_body
                .push_back(Bytes::from_static(b"Internal Server Error"));
            st.deny_complete = true;
        } else if st.accepted && !st.app_closed {
            st.app_closed = true;
            st.outgoing.push_back(Outgoing::Close {
                code: 1011,
                reason: String::new(),
            });
        } else {
            st.deny_complete = true;
        }
        drop(st);
        self.ws.wake_io();
    }
}

fn data_message(py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Message> {
    if let Some(b) = field(message, intern!(py, "bytes"))? {
        if !b.is_none() {
            return Ok(Message::Binary(bytes_like(py, &b)?));
        }
    }
    if let Some(t) = field(message, intern!(py, "text"))? {
        if !t.is_none() {
            let text = t
                .downcast::<PyString>()
                .map_err(|_| protocol_error("websocket.send 'text' must be str".into()))?;
            return Ok(Message::Text(text.to_cow()?.into_owned()));
        }
    }
    Err(protocol_error(
        "websocket.send needs 'bytes' or 'text'".into(),
    ))
}

/// The `bytes` of a websocket.send: `bytes`, or the bytes-like `bytearray` and
/// `memoryview` (any format or layout: its bytes in C order, as `tobytes()` gives).
fn bytes_like(py: Python<'_>, b: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(data) = b.downcast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(data.as_bytes()));
    }
    if let Ok(array) = b.downcast::<PyByteArray>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    if b.is_instance_of::<PyMemoryView>() {
        // tobytes() makes the one copy; a big one is then kept, not copied again.
        let copy = b.call_method0(intern!(py, "tobytes"))?;
        return Ok(body_bytes(copy.downcast_into::<PyBytes>()?));
    }
    Err(protocol_error(format!(
        "websocket.send 'bytes' must be bytes, bytearray or memoryview, not {}",
        b.get_type().name()?
    )))
}

/// Completes whatever receive() / send() future of this WebSocket can complete now.
pub fn wake(py: Python<'_>, ws: &Arc<WsSession>) -> PyResult<()> {
    let mut waiters = ws.waiters.lock().unwrap();
    if let Some(fut) = waiters.rx.take() {
        let mut st = ws.state();
        match next_message(py, ws, &mut st)? {
            Some(msg) => {
                drop(st);
                resolve(py, &fut, Ok(msg))?;
            }
            None => {
                st.rx_waiting = true;
                waiters.rx = Some(fut);
            }
        }
    }
    if let Some(fut) = waiters.tx.take() {
        let mut st = ws.state();
        if st.gone || st.disconnect.is_some() {
            drop(st);
            resolve(
                py,
                &fut,
                Err(ClientDisconnected::new_err("client disconnected")),
            )?;
        } else if st.queued_bytes < STREAM_WATER.low {
            drop(st);
            resolve(py, &fut, Ok(py.None()))?;
        } else {
            st.tx_waiting = true;
            waiters.tx = Some(fut);
        }
    }
    Ok(())
}
