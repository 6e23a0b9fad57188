//! Building the ASGI `http` scope with as few Python allocations as possible: keys are
//! interned, constant values are made once per worker, header names are cached, and
//! the client/server tuples are made once per connection.

use super::exchange::RequestHead;
use http::{HeaderName, Method, Version};
use percent_encoding::percent_decode;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Header names seen so far, as the bytes objects the scope holds. Bounded, so a client
/// sending random names can't grow it.
const HEADER_NAME_CACHE: usize = 256;

pub struct ScopeBuilder {
    asgi: Py<PyDict>,
    root_path: Py<PyString>,
    root_path_raw: Vec<u8>,
    root_path_text: String,
    header_names: HashMap<HeaderName, Py<PyBytes>>,
    empty_bytes: Py<PyBytes>,
}

impl ScopeBuilder {
    pub fn new(py: Python<'_>, root_path: &str) -> PyResult<Self> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        Ok(ScopeBuilder {
            asgi: asgi.unbind(),
            root_path: PyString::new(py, root_path).unbind(),
            root_path_raw: root_path.as_bytes().to_vec(),
            root_path_text: root_path.to_string(),
            header_names: HashMap::new(),
            empty_bytes: PyBytes::new(py, b"").unbind(),
        })
    }

    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        head: &RequestHead,
        state: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = PyDict::new(py);
        scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
        scope.set_item(intern!(py, "asgi"), self.asgi.bind(py))?;
        scope.set_item(intern!(py, "http_version"), http_version(py, head.version))?;
        scope.set_item(intern!(py, "method"), method(py, &head.method))?;
        scope.set_item(intern!(py, "scheme"), intern!(py, "http"))?;

        let (raw_path, query) = split_target(&head.target);
        let decoded = percent_decode(raw_path).decode_utf8_lossy();
        if self.root_path_raw.is_empty() {
            scope.set_item(intern!(py, "path"), PyString::new(py, &decoded))?;
            scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
        } else {
            // As uvicorn: path and raw_path include the root_path prefix.
            let path = format!("{}{}", self.root_path_text, decoded);
            scope.set_item(intern!(py, "path"), PyString::new(py, &path))?;
            let mut raw = self.root_path_raw.clone();
            raw.extend_from_slice(raw_path);
            scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw))?;
        }
        let query = match query {
            Some(q) => PyBytes::new(py, q),
            None => self.empty_bytes.bind(py).clone(),
        };
        scope.set_item(intern!(py, "query_string"), query)?;
        scope.set_item(intern!(py, "root_path"), self.root_path.bind(py))?;

        let headers = PyList::empty(py);
        for (name, value) in &head.headers {
            let name = self.header_name(py, name);
            let pair = PyTuple::new(py, [name.into_any(), PyBytes::new(py, value).into_any()])?;
            headers.append(pair)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;

        let client = cached_addr(py, &head.conn.py_client, head.conn.client)?;
        scope.set_item(intern!(py, "client"), client)?;
        let server = cached_addr(py, &head.conn.py_server, head.conn.server)?;
        scope.set_item(intern!(py, "server"), server)?;
        scope.set_item(intern!(py, "state"), state.copy()?)?;
        Ok(scope)
    }

    fn header_name<'py>(&mut self, py: Python<'py>, name: &HeaderName) -> Bound<'py, PyBytes> {
        if let Some(cached) = self.header_names.get(name) {
            return cached.bind(py).clone();
        }
        let bytes = PyBytes::new(py, name.as_str().as_bytes());
        if self.header_names.len() < HEADER_NAME_CACHE {
            self.header_names
                .insert(name.clone(), bytes.clone().unbind());
        }
        bytes
    }
}

/// The path and query of a request-target; absolute-form targets
/// ("http://host/p?q") give their path, "*" stays "*".
fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut rest = target;
    if !rest.starts_with(b"/") && !rest.starts_with(b"*") {
        if let Some(scheme_end) = rest.windows(3).position(|w| w == b"://") {
            let after = &rest[scheme_end + 3..];
            rest = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .map_or(&b"/"[..], |p| &after[p..]);
        }
    }
    match rest.iter().position(|&b| b == b'?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    }
}

fn cached_addr<'py>(
    py: Python<'py>,
    cell: &std::sync::OnceLock<Py<PyAny>>,
    addr: Option<SocketAddr>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(obj) = cell.get() {
        return Ok(obj.bind(py).clone());
    }
    let obj = match addr {
        Some(a) => (a.ip().to_string(), a.port()).into_bound_py_any(py)?,
        None => py.None().into_bound(py),
    };
    let _ = cell.set(obj.clone().unbind());
    Ok(obj)
}

fn http_version(py: Python<'_>, v: Version) -> &Bound<'_, PyString> {
    match v {
        Version::HTTP_10 => intern!(py, "1.0"),
        Version::HTTP_2 => intern!(py, "2"),
        _ => intern!(py, "1.1"),
    }
}

fn method<'py>(py: Python<'py>, m: &Method) -> Bound<'py, PyString> {
    let s = match *m {
        Method::GET => intern!(py, "GET"),
        Method::POST => intern!(py, "POST"),
        Method::PUT => intern!(py, "PUT"),
        Method::DELETE => intern!(py, "DELETE"),
        Method::HEAD => intern!(py, "HEAD"),
        Method::OPTIONS => intern!(py, "OPTIONS"),
        Method::PATCH => intern!(py, "PATCH"),
        _ => return PyString::new(py, m.as_str()),
    };
    s.clone()
}
