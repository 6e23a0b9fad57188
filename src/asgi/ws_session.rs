//! One WebSocket, shared by the I/O thread (ws/conn.rs) and the Python thread (the
//! app's `receive()` and `send()`, asgi/websocket.rs).
//!
//! Same shape as the http `Exchange`: the I/O side fills `incoming` and takes
//! `outgoing`, the Python side the reverse; each wakes the other only when it waits
//! (the I/O side through a `Notify`, the Python side through a `WsWake` bridge event).

use super::exchange::{InflightGuard, ResponseHead};
use crate::asgi::bridge::{Bridge, Event};
use bytes::Bytes;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub enum Message {
    Text(String),
    Binary(Bytes),
}

/// What the app answered to `websocket.connect`.
pub enum Decision {
    Accept {
        subprotocol: Option<String>,
        headers: crate::fields::Fields,
    },
    /// `websocket.close` before accept: 403.
    Deny,
    /// `websocket.http.response.start` (or a failing app: 500); the body follows in
    /// `deny_body`.
    Respond(ResponseHead),
}

pub enum Outgoing {
    Message(Message),
    Close { code: u16, reason: String },
}

/// Why a WebSocket ended, as `websocket.disconnect` reports it.
#[derive(Clone)]
pub struct Disconnect {
    pub code: u16,
    pub reason: String,
}

#[derive(Default)]
pub struct WsState {
    pub connect_delivered: bool,
    /// Set by the app, taken by the I/O side.
    pub decision: Option<Decision>,
    pub decided: bool,
    pub accepted: bool,
    /// The app answers with an http response (websocket.http.response.start).
    pub responding: bool,
    pub deny_body: VecDeque<Bytes>,
    pub deny_complete: bool,

    pub incoming: VecDeque<Message>,
    /// The connection is closed (or closing) on the client's side; reported to the app
    /// once `incoming` is empty.
    pub disconnect: Option<Disconnect>,
    pub outgoing: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// The app sent websocket.close (or a denial).
    pub app_closed: bool,
    /// The I/O side is finished with the connection: send() has nobody to talk to.
    pub gone: bool,
    pub rx_waiting: bool,
    pub tx_waiting: bool,
}

/// Python futures of a waiting receive() / send(); touched only with the GIL held.
#[derive(Default)]
pub struct WsWaiters {
    pub rx: Option<Py<PyAny>>,
    pub tx: Option<Py<PyAny>>,
}

pub struct WsSession {
    state: Mutex<WsState>,
    io_notify: Notify,
    bridge: Arc<Bridge>,
    pub waiters: Mutex<WsWaiters>,
    /// Incoming messages buffered beyond this stop the I/O side from reading.
    pub max_queue: usize,
    _inflight: InflightGuard,
}

impl WsSession {
    pub fn new(bridge: Arc<Bridge>, inflight: InflightGuard, max_queue: usize) -> Self {
        WsSession {
            state: Mutex::new(WsState::default()),
            io_notify: Notify::new(),
            bridge,
            waiters: Mutex::new(WsWaiters::default()),
            max_queue: max_queue.max(1),
            _inflight: inflight,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, WsState> {
        self.state.lock().unwrap()
    }

    /// Python side: something the I/O side may wait for changed.
    pub fn wake_io(&self) {
        self.io_notify.notify_one();
    }

    /// I/O side: wait until the Python side changed something.
    pub async fn changed(&self) {
        self.io_notify.notified().await
    }

    /// I/O side, after a change: wakes Python only if it waits.
    pub fn wake_python(self: &Arc<Self>, mut st: MutexGuard<'_, WsState>) {
        let wake = st.rx_waiting || st.tx_waiting;
        st.rx_waiting = false;
        st.tx_waiting = false;
        drop(st);
        if wake {
            self.bridge.push(Event::WsWake(self.clone()));
        }
    }

    pub fn push_message(self: &Arc<Self>, message: Message) {
        let mut st = self.state();
        st.incoming.push_back(message);
        self.wake_python(st);
    }

    /// The closing handshake started or the connection dropped: the app's next
    /// receive() after the queued messages reports it. Only the first one counts.
    pub fn disconnected(self: &Arc<Self>, code: u16, reason: &str) {
        let mut st = self.state();
        if st.disconnect.is_none() {
            st.disconnect = Some(Disconnect {
                code,
                reason: reason.to_string(),
            });
        }
        self.wake_python(st);
    }

    /// The I/O side is done with this WebSocket.
    pub fn finish(self: &Arc<Self>) {
        let mut st = self.state();
        st.gone = true;
        if st.disconnect.is_none() {
            st.disconnect = Some(Disconnect {
                code: 1006,
                reason: String::new(),
            });
        }
        self.wake_python(st);
    }
}
