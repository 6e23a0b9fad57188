//! Runs on the asyncio loop's thread: takes a batch of events from the bridge (one GIL
//! acquisition for the whole batch) and turns each into Python work: an app call to run
//! for a new request or WebSocket, a completed future for a waiting receive()/send(), a
//! stop notice.

use super::exchange::Session;
use super::http::{self, HttpContext};
use super::runner::RequestQueue;
use super::scope::ScopeBuilder;
use super::websocket;
use crate::worker::bridge::Event;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

pub struct Dispatcher {
    /// Where a request's app call is queued; `kick()` starts the batch
    /// (python/ferrocorn/_requests.py).
    submit: Submit,
    kick: PyObject,
    /// A request was submitted since the last kick.
    submitted: bool,
    /// Called with "stop", "quit" or "drained".
    on_control: PyObject,
    state: Py<PyDict>,
    scopes: ScopeBuilder,
    http: Arc<HttpContext>,
}

enum Submit {
    /// The runners' queue, filled without a Python call.
    Queue(Py<RequestQueue>),
    /// `submit((scope, receive, send))`: a Task per request.
    Call(PyObject),
}

impl Dispatcher {
    pub fn new(
        requests: &Bound<'_, PyAny>,
        state: Py<PyDict>,
        on_control: PyObject,
        scopes: ScopeBuilder,
        http: HttpContext,
    ) -> PyResult<Self> {
        Ok(Dispatcher {
            submit: match requests.getattr("queue") {
                Ok(queue) if queue.is_instance_of::<RequestQueue>() => {
                    Submit::Queue(queue.downcast_into::<RequestQueue>()?.unbind())
                }
                _ => Submit::Call(requests.getattr("submit")?.unbind()),
            },
            kick: requests.getattr("kick")?.unbind(),
            submitted: false,
            on_control,
            state,
            scopes,
            http: Arc::new(http),
        })
    }

    /// After the batch: start the requests it submitted.
    pub fn end_of_batch(&mut self, py: Python<'_>) {
        if std::mem::take(&mut self.submitted) {
            if let Err(e) = self.kick.call0(py) {
                crate::error!("Internal error while starting requests: {e}");
                e.print(py);
            }
        }
    }

    pub fn handle(&mut self, py: Python<'_>, event: Event) {
        let result = match event {
            Event::Request(head) => self.start_request(py, &head),
            Event::Wake(exchange) => http::wake(py, &exchange, &self.http),
            Event::WsWake(session) => websocket::wake(py, &session),
            Event::Stop { graceful } => self
                .on_control
                .call1(py, (if graceful { "stop" } else { "quit" },))
                .map(drop),
            Event::Drained => self.on_control.call1(py, ("drained",)).map(drop),
        };
        if let Err(e) = result {
            // One bad event must not lose the rest of the batch.
            crate::error!("Internal error while dispatching: {e}");
            e.print(py);
        }
    }

    fn start_request(
        &mut self,
        py: Python<'_>,
        head: &super::exchange::RequestHead,
    ) -> PyResult<()> {
        let scope = self.scopes.build(py, head, self.state.bind(py))?;
        let (receive, send) = match &head.session {
            Session::Http(exchange) => {
                let (receive, send) = http::callables(py, exchange, &self.http)?;
                (receive.into_any(), send.into_any())
            }
            Session::WebSocket(session) => {
                let (receive, send) = websocket::callables(py, session, &self.http)?;
                (receive.into_any(), send.into_any())
            }
        };
        match &self.submit {
            Submit::Queue(queue) => queue
                .borrow(py)
                .push(scope.into_any().unbind(), receive, send),
            Submit::Call(submit) => {
                submit.call1(py, ((scope, receive, send),))?;
            }
        }
        self.submitted = true;
        Ok(())
    }
}
