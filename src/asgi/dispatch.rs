//! Runs on the asyncio loop's thread: takes a batch of events from the bridge (one GIL
//! acquisition for the whole batch) and turns each into Python work: a task for a new
//! request or WebSocket, a completed future for a waiting receive()/send(), a stop
//! notice.

use super::exchange::Session;
use super::http::{self, HttpContext};
use super::scope::ScopeBuilder;
use super::websocket;
use crate::worker::bridge::Event;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

pub struct Dispatcher {
    app: PyObject,
    /// `async def run_http(app, scope, receive, send)`: calls the app, reports errors.
    runner: PyObject,
    tasks: TaskMaker,
    /// Called with "stop", "quit" or "drained".
    on_control: PyObject,
    state: Py<PyDict>,
    scopes: ScopeBuilder,
    http: Arc<HttpContext>,
}

/// Starts each request's asyncio Task.
enum TaskMaker {
    /// `asyncio.Task(coro, loop=loop, name="ferrocorn")` with one kwargs dict made once.
    /// `loop.create_task` (uvloop's included) lets the Task name itself "Task-N", a
    /// string formatted per request, and builds its own kwargs on every call; both
    /// showed in profiles.
    Direct { task: PyObject, kwargs: Py<PyDict> },
    /// The app installed a task factory (`loop.set_task_factory`): respect it.
    Factory(PyObject),
}

impl TaskMaker {
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<TaskMaker> {
        let py = event_loop.py();
        if !event_loop.call_method0("get_task_factory")?.is_none() {
            return Ok(TaskMaker::Factory(
                event_loop.getattr("create_task")?.unbind(),
            ));
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("loop", event_loop)?;
        kwargs.set_item("name", "ferrocorn")?;
        Ok(TaskMaker::Direct {
            task: py.import("asyncio")?.getattr("Task")?.unbind(),
            kwargs: kwargs.unbind(),
        })
    }

    fn spawn(&self, py: Python<'_>, coro: PyObject) -> PyResult<()> {
        match self {
            TaskMaker::Direct { task, kwargs } => {
                task.call(py, (coro,), Some(kwargs.bind(py)))?;
            }
            TaskMaker::Factory(create_task) => {
                create_task.call1(py, (coro,))?;
            }
        }
        Ok(())
    }
}

impl Dispatcher {
    pub fn new(
        event_loop: &Bound<'_, PyAny>,
        app: PyObject,
        runner: PyObject,
        state: Py<PyDict>,
        on_control: PyObject,
        scopes: ScopeBuilder,
        http: HttpContext,
    ) -> PyResult<Self> {
        Ok(Dispatcher {
            app,
            runner,
            tasks: TaskMaker::new(event_loop)?,
            on_control,
            state,
            scopes,
            http: Arc::new(http),
        })
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
        let app = self.app.clone_ref(py);
        let coro = match &head.session {
            Session::Http(exchange) => {
                let (receive, send) = http::callables(py, exchange, &self.http)?;
                self.runner.call1(py, (app, scope, receive, send))?
            }
            Session::WebSocket(session) => {
                let (receive, send) = websocket::callables(py, session, &self.http)?;
                self.runner.call1(py, (app, scope, receive, send))?
            }
        };
        self.tasks.spawn(py, coro)?;
        Ok(())
    }
}
