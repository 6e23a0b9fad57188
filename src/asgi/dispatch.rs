//! Runs on the asyncio loop's thread: takes a batch of events from the bridge (one GIL
//! acquisition for the whole batch) and turns each into Python work: an app call to run
//! for a new request or WebSocket, a completed future for a waiting receive()/send(), a
//! stop notice.

use super::exchange::Session;
use super::http::{self, HttpContext};
use super::runner::RequestQueue;
use super::scope::ScopeBuilder;
use super::websocket;
use crate::asgi::bridge::Event;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// How app calls start (python/ferrocorn/_requests.py).
pub struct Dispatcher {
    /// The runners' queue for HTTP requests, filled without a Python call; `kick()`
    /// starts the batch. None when every call gets a Task.
    queue: Option<Py<RequestQueue>>,
    kick: PyObject,
    /// A request was queued since the last kick.
    queued: bool,
    /// `loop.create_task`, `_requests.reported` and the app: an app call in a Task of
    /// its own is `create_task(reported(send, app, scope, receive, send))`, two C-level
    /// calls and no Python frame of ours. Every call by default; with runners, for
    /// WebSockets (they suspend at every message and last long enough to amortise a
    /// Task) and for HTTP requests when most of late suspended
    /// (`RequestQueue::prefers_tasks`).
    create_task: PyObject,
    reported: PyObject,
    app: PyObject,
    /// Called with "stop", "quit" or "drained".
    on_control: PyObject,
    state: Py<PyDict>,
    scopes: ScopeBuilder,
    http: Arc<HttpContext>,
    /// Called with uvicorn's access args (client, method, path, http_version, status)
    /// when access records go through Python logging.
    access_logger: Option<PyObject>,
    /// A BaseException that is not an Exception escaping an app call in the batch
    /// (`reported` lets only cancellations through; a KeyboardInterrupt delivered by a
    /// signal mid-step could still come). A Task that starts eagerly (Python 3.12+) runs
    /// the app's first step inside `create_task`, so such an exception reaches the
    /// dispatcher instead of the loop; it is raised from the loop callback once the
    /// batch is done, as the Task's step would have raised it.
    fatal: Option<PyErr>,
}

impl Dispatcher {
    pub fn new(
        requests: &Bound<'_, PyAny>,
        state: Py<PyDict>,
        on_control: PyObject,
        scopes: ScopeBuilder,
        http: HttpContext,
        access_logger: Option<PyObject>,
    ) -> PyResult<Self> {
        Ok(Dispatcher {
            queue: match requests.getattr("queue") {
                Ok(queue) => Some(queue.downcast_into::<RequestQueue>()?.unbind()),
                Err(_) => None,
            },
            kick: requests.getattr("kick")?.unbind(),
            queued: false,
            create_task: requests.getattr("create_task")?.unbind(),
            reported: requests
                .py()
                .import("ferrocorn._requests")?
                .getattr("reported")?
                .unbind(),
            app: requests.getattr("app")?.unbind(),
            on_control,
            state,
            scopes,
            http: Arc::new(http),
            access_logger,
            fatal: None,
        })
    }

    /// After the batch: start the requests it queued; then raise what must end the
    /// loop, if an app call raised it.
    pub fn end_of_batch(&mut self, py: Python<'_>) -> PyResult<()> {
        if std::mem::take(&mut self.queued) {
            if let Err(e) = self.kick.call0(py) {
                crate::error!("Internal error while starting requests: {e}");
                e.print(py);
            }
        }
        match self.fatal.take() {
            Some(e) => Err(e),
            None => Ok(()),
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
            Event::Access(r) => match &self.access_logger {
                Some(logger) => logger
                    .call1(
                        py,
                        (&r.client, &r.method, &r.path, r.http_version, r.status),
                    )
                    .map(drop),
                None => Ok(()),
            },
            // Dropped here, with the GIL held: plain decrefs (bridge::release_on_loop).
            Event::Release(conn) => {
                drop(conn);
                Ok(())
            }
        };
        if let Err(e) = result {
            if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                // SystemExit, KeyboardInterrupt: kept for the end of the batch.
                self.fatal.get_or_insert(e);
                return;
            }
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
        if let Session::Http(_) = head.session {
            crate::metrics::recorder::app_called(head.arrived);
        }
        let scope = self.scopes.build(py, head, self.state.bind(py))?;
        match (&head.session, &self.queue) {
            (Session::Http(exchange), Some(queue)) if !queue.borrow(py).prefers_tasks() => {
                let (receive, send) = http::callables(py, exchange, &self.http)?;
                let scope = scope.into_any().unbind();
                queue
                    .borrow(py)
                    .push(scope, receive.into_any(), send.into_any());
                self.queued = true;
            }
            (Session::Http(exchange), _) => {
                let (receive, send) = http::callables(py, exchange, &self.http)?;
                self.start_task(py, scope.into_any(), receive.into_any(), send.into_any())?;
            }
            (Session::WebSocket(session), _) => {
                let (receive, send) = websocket::callables(py, session, &self.http)?;
                self.start_task(py, scope.into_any(), receive.into_any(), send.into_any())?;
            }
        }
        Ok(())
    }

    fn start_task(
        &self,
        py: Python<'_>,
        scope: Bound<'_, PyAny>,
        receive: PyObject,
        send: PyObject,
    ) -> PyResult<()> {
        let coro = self
            .reported
            .call1(py, (&send, &self.app, scope, receive, &send))?;
        self.create_task.call1(py, (coro,))?;
        Ok(())
    }
}
