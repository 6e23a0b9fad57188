//! The hot loop of the request runners (python/ferrocorn/_requests.py): the requests of
//! a batch wait here, and a runner Task calls `run` to start them one after the other,
//! each in a fresh copy of the base context, until one suspends.
//!
//! Done in Rust because it runs once per request: the dispatcher queues a request with
//! no Python call, and the app coroutine's first step goes through `PyIter_Send`, which
//! reports "returned" without raising StopIteration, inside a single `Context.run`.

use pyo3::exceptions::PyException;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyCFunction, PyType};
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
    /// `base_context.copy`: each request runs in a fresh copy, as a Task made from the
    /// base context would.
    copy_context: PyObject,
    /// `start_app`, handed to `Context.run`.
    start: Py<PyCFunction>,
}

impl RequestQueue {
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
    fn new(py: Python<'_>, app: PyObject, base_context: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(RequestQueue {
            pending: RefCell::new(VecDeque::new()),
            app,
            copy_context: base_context.getattr("copy")?.unbind(),
            start: wrap_pyfunction!(start_app, py)?.unbind(),
        })
    }

    fn __len__(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Start queued requests in `task` (the calling runner) until
    /// - one suspends: returns `(context, coroutine, what it waits on, send)`, and the
    ///   runner stays with that request;
    /// - the queue is empty: returns None;
    /// - a finished request left a cancellation owing to `task`: returns True, and the
    ///   runner retires.
    ///
    /// An app's BaseException (not an Exception) is reported to its `send` and then
    /// raised, as a Task would end with it.
    fn run(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        loop {
            let Some(request) = self.pending.borrow_mut().pop_front() else {
                return Ok(py.None());
            };
            let context = self.copy_context.call0(py)?;
            let started = context.call_method1(
                py,
                "run",
                (
                    &self.start,
                    &self.app,
                    request.scope,
                    request.receive,
                    &request.send,
                ),
            );
            match started {
                Ok(step) if step.is_none(py) => {
                    request.send.call_method0(py, "app_done")?;
                }
                Ok(step) => {
                    let (coro, waits_on): (PyObject, PyObject) = step.extract(py)?;
                    let suspended = (context, coro, waits_on, request.send);
                    return Ok(suspended.into_pyobject(py)?.into_any().unbind());
                }
                Err(err) => {
                    request
                        .send
                        .call_method1(py, "app_error", (err.value(py),))?;
                    if !err.is_instance_of::<PyException>(py) {
                        return Err(err);
                    }
                }
            }
            if task.call_method0("cancelling")?.extract::<usize>()? > 0 {
                return Ok(true.into_pyobject(py)?.to_owned().into_any().unbind());
            }
        }
    }
}

static COROUTINE_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();

/// Runs inside the request's context: calls the app and takes the coroutine's first
/// step. None when the app returned in it, else `(coroutine, what it waits on)`.
#[pyfunction]
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
