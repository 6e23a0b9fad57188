//! The hot loop of the request runners (python/ferrocorn/_requests.py): the HTTP
//! requests of a batch wait here, and a runner Task calls `run` to start them one after
//! the other in its own context, until one suspends.
//!
//! Done in Rust because it runs once per request: the dispatcher queues a request with
//! no Python call, and the app coroutine's first step goes through `PyIter_Send`, which
//! reports "returned" without raising StopIteration.

use pyo3::exceptions::asyncio::CancelledError as PyCancelledError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::raw::c_int;

// pyo3-ffi 0.23 declares PyIter_Send without its result; this is the C signature
// (stable ABI since 3.10).
extern "C" {
    #[link_name = "PyIter_Send"]
    fn iter_send(
        iter: *mut ffi::PyObject,
        arg: *mut ffi::PyObject,
        presult: *mut *mut ffi::PyObject,
    ) -> c_int;
}
const PYGEN_RETURN: c_int = 0;
const PYGEN_NEXT: c_int = 1;

struct Pending {
    scope: PyObject,
    receive: PyObject,
    send: PyObject,
}

#[pyclass(unsendable, module = "ferrocorn._ferrocorn")]
pub struct RequestQueue {
    pending: RefCell<VecDeque<Pending>>,
    app: PyObject,
    recent: RefCell<Recent>,
    /// The base context's variables and values: a runner's context equal to it is fit
    /// for the next request.
    base: Vec<(PyObject, PyObject)>,
}

impl RequestQueue {
    /// Should this HTTP request get a Task of its own instead of a runner?
    pub fn prefers_tasks(&self) -> bool {
        self.recent.borrow_mut().prefers_tasks()
    }

    pub fn push(&self, scope: PyObject, receive: PyObject, send: PyObject) {
        self.pending.borrow_mut().push_back(Pending {
            scope,
            receive,
            send,
        });
    }
}

#[pymethods]
impl RequestQueue {
    #[new]
    fn new(app: PyObject, base_context: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut base = Vec::new();
        for item in base_context.call_method0("items")?.try_iter()? {
            base.push(item?.extract()?);
        }
        Ok(RequestQueue {
            pending: RefCell::new(VecDeque::new()),
            app,
            recent: RefCell::new(Recent::default()),
            base,
        })
    }

    fn __len__(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Has the request left `context` as the base context is: the same variables,
    /// holding the same objects?
    fn unchanged(&self, context: &Bound<'_, PyAny>) -> PyResult<bool> {
        if context.len()? != self.base.len() {
            return Ok(false);
        }
        for (var, value) in &self.base {
            if !context.get_item(var)?.is(value) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Start queued requests in `task` (the calling runner, whose context is `context`)
    /// until
    /// - one suspends: returns `(coroutine, what it waits on, send)`, and the runner
    ///   stays with that request;
    /// - the queue is empty: returns None;
    /// - a finished request left a cancellation owing to `task`, or `context` changed:
    ///   returns True, and the runner retires.
    ///
    /// An app's BaseException (not an Exception) is reported to its `send` and then
    /// raised, as a Task would end with it.
    fn run(
        &self,
        py: Python<'_>,
        task: &Bound<'_, PyAny>,
        context: &Bound<'_, PyAny>,
    ) -> PyResult<PyObject> {
        loop {
            let Some(request) = self.pending.borrow_mut().pop_front() else {
                return Ok(py.None());
            };
            let started = start_app(
                py,
                self.app.bind(py),
                request.scope,
                request.receive,
                request.send.clone_ref(py),
            );
            self.recent
                .borrow_mut()
                .count(matches!(started, Ok(Some(_))));
            match started {
                Ok(None) => {
                    request.send.call_method0(py, "app_done")?;
                }
                Ok(Some((coro, waits_on))) => {
                    let suspended = (coro, waits_on, request.send);
                    return Ok(suspended.into_pyobject(py)?.into_any().unbind());
                }
                Err(err) => {
                    // The exception object with its traceback attached: on 3.11 a
                    // fetched error keeps its traceback beside the value, and the log
                    // would show one line without where it was raised.
                    let value = err.clone_ref(py).into_value(py);
                    request.send.call_method1(py, "app_error", (value,))?;
                    // A cancellation ends the runner's Task, as it would end a
                    // request's own; SystemExit and KeyboardInterrupt end only the
                    // request, as under uvicorn (python/ferrocorn/_requests.py).
                    if err.is_instance_of::<PyCancelledError>(py) {
                        return Err(err);
                    }
                }
            }
            let owed = task.call_method0("cancelling")?.extract::<usize>()? > 0;
            if owed || !self.unchanged(context)? {
                return Ok(true.into_pyobject(py)?.to_owned().into_any().unbind());
            }
        }
    }
}

/// How many of the requests that runners started lately suspended.
///
/// A request that suspends costs a runner about what a Task costs (waking another
/// runner for the queue, the idle wait afterwards, two delegation levels per step), on
/// top of what the runner saves; so when most requests of late suspended, a Task each
/// is cheaper. While that is so, a few requests still go to runners, to see whether the
/// app changed its ways.
#[derive(Default)]
struct Recent {
    started: u32,
    suspended: u32,
    /// Requests routed while Tasks are preferred.
    routed: u32,
}

/// The counts are halved every this many started requests, to follow what the app does
/// now.
const RECENT: u32 = 64;
/// While Tasks are preferred, one request in this many still goes to a runner.
const PROBE_EVERY: u32 = 16;

impl Recent {
    fn count(&mut self, suspended: bool) {
        self.started += 1;
        self.suspended += u32::from(suspended);
        if self.started >= RECENT {
            self.started /= 2;
            self.suspended /= 2;
        }
    }

    fn prefers_tasks(&mut self) -> bool {
        if self.suspended * 2 <= self.started {
            return false;
        }
        self.routed = self.routed.wrapping_add(1);
        !self.routed.is_multiple_of(PROBE_EVERY)
    }
}

static COROUTINE_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Calls the app and takes the coroutine's first step. None when the app returned in
/// it, else `(coroutine, what it waits on)`.
fn start_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    scope: PyObject,
    receive: PyObject,
    send: PyObject,
) -> PyResult<Option<(PyObject, PyObject)>> {
    let awaitable = app.call1((scope, receive, send))?;
    let coroutine_type = COROUTINE_TYPE.import(py, "types", "CoroutineType")?;
    let coro = if awaitable.get_type().is(coroutine_type) {
        awaitable
    } else {
        awaitable.call_method0("__await__")?
    };
    let mut result: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: the GIL is held, `coro` is a live iterator, and `result` receives a new
    // reference on RETURN and NEXT.
    let status = unsafe { iter_send(coro.as_ptr(), ffi::Py_None(), &mut result) };
    match status {
        PYGEN_RETURN => {
            drop(unsafe { PyObject::from_owned_ptr(py, result) });
            Ok(None)
        }
        PYGEN_NEXT => {
            let waits_on = unsafe { PyObject::from_owned_ptr(py, result) };
            Ok(Some((coro.unbind(), waits_on)))
        }
        _ => Err(PyErr::fetch(py)),
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    fn routed_to_tasks(recent: &mut Recent, requests: usize) -> usize {
        (0..requests).filter(|_| recent.prefers_tasks()).count()
    }

    #[test]
    fn runners_while_most_requests_finish_in_their_first_step() {
        let mut recent = Recent::default();
        for i in 0..200 {
            recent.count(i % 3 == 0); // a third suspend
        }
        assert_eq!(routed_to_tasks(&mut recent, 100), 0);
    }

    #[test]
    fn tasks_when_most_suspend_with_a_probe_now_and_then() {
        let mut recent = Recent::default();
        for _ in 0..200 {
            recent.count(true);
        }
        assert_eq!(routed_to_tasks(&mut recent, 160), 150);
    }

    #[test]
    fn back_to_runners_when_the_probes_stop_suspending() {
        let mut recent = Recent::default();
        for _ in 0..200 {
            recent.count(true);
        }
        for _ in 0..RECENT_PROBES {
            recent.count(false);
        }
        assert_eq!(routed_to_tasks(&mut recent, 100), 0);
    }

    /// Enough non-suspending probes to outweigh a history of suspensions.
    const RECENT_PROBES: usize = 64;
}
