//! Building the ASGI `http` scope with as few Python allocations as possible: keys are
//! interned, constant values are made once per worker, header names are cached, and
//! the client/server tuples are made once per connection.

use super::exchange::{RequestHead, Session};
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
    root_path_raw: Vec<u8>,
    root_path_text: String,
    header_names: HashMap<HeaderName, Py<PyBytes>>,
    empty_bytes: Py<PyBytes>,
    /// `{"websocket.http.response": {}}`: denial responses are supported.
    ws_extensions: Py<PyDict>,
    /// The http response extensions served (pathsend, early hints, trailers).
    http_extensions: Py<PyDict>,
    /// Every key of an http / websocket scope, with this worker's constant values and
    /// None for the rest: a scope is a copy of its template (one fast C-level copy of
    /// an already-sized table) with the per-request values written over the Nones.
    http_template: Py<PyDict>,
    ws_template: Py<PyDict>,
}

fn template<'py>(
    py: Python<'py>,
    kind: &str,
    scheme: &str,
    asgi: &Bound<'py, PyDict>,
    root_path: &Bound<'py, PyString>,
) -> PyResult<Py<PyDict>> {
    let t = PyDict::new(py);
    let none = py.None();
    t.set_item(intern!(py, "type"), PyString::intern(py, kind))?;
    t.set_item(intern!(py, "asgi"), asgi)?;
    t.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    if kind == "http" {
        t.set_item(intern!(py, "method"), &none)?;
    }
    t.set_item(intern!(py, "scheme"), PyString::intern(py, scheme))?;
    for key in ["path", "raw_path", "query_string"] {
        t.set_item(PyString::intern(py, key), &none)?;
    }
    t.set_item(intern!(py, "root_path"), root_path)?;
    for key in ["headers", "client", "server", "state"] {
        t.set_item(PyString::intern(py, key), &none)?;
    }
    if kind == "websocket" {
        t.set_item(intern!(py, "subprotocols"), &none)?;
    }
    t.set_item(intern!(py, "extensions"), &none)?;
    Ok(t.unbind())
}

impl ScopeBuilder {
    pub fn new(py: Python<'_>, root_path: &str, tls: bool) -> PyResult<Self> {
        // uvicorn's spec versions: 2.3 for http, so that Starlette keeps listening for
        // http.disconnect while it streams (with 2.4 it waits for send() to fail, and a
        // generator that never sends again would outlive its client); 2.4 for websocket.
        let asgi_dict = |spec: &str| -> PyResult<Bound<'_, PyDict>> {
            let asgi = PyDict::new(py);
            asgi.set_item("version", "3.0")?;
            asgi.set_item("spec_version", spec)?;
            Ok(asgi)
        };
        let http_asgi = asgi_dict("2.3")?;
        let ws_asgi = asgi_dict("2.4")?;
        let root = PyString::new(py, root_path);
        let (http_scheme, ws_scheme) = if tls {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let http_template = template(py, "http", http_scheme, &http_asgi, &root)?;
        let ws_template = template(py, "websocket", ws_scheme, &ws_asgi, &root)?;
        Ok(ScopeBuilder {
            http_template,
            ws_template,
            root_path_raw: root_path.as_bytes().to_vec(),
            root_path_text: root_path.to_string(),
            header_names: HashMap::new(),
            empty_bytes: PyBytes::new(py, b"").unbind(),
            http_extensions: {
                let ext = PyDict::new(py);
                for name in [
                    "http.response.pathsend",
                    "http.response.early_hint",
                    "http.response.trailers",
                ] {
                    ext.set_item(name, PyDict::new(py))?;
                }
                ext.unbind()
            },
            ws_extensions: {
                let ext = PyDict::new(py);
                ext.set_item("websocket.http.response", PyDict::new(py))?;
                ext.unbind()
            },
        })
    }

    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        head: &RequestHead,
        state: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let websocket = matches!(head.session, Session::WebSocket(_));
        let scope = if websocket {
            let scope = self.ws_template.bind(py).copy()?;
            scope.set_item(intern!(py, "subprotocols"), subprotocols(py, head)?)?;
            scope
        } else {
            let scope = self.http_template.bind(py).copy()?;
            scope.set_item(intern!(py, "method"), method(py, &head.method))?;
            scope
        };
        if head.version != Version::HTTP_11 {
            scope.set_item(intern!(py, "http_version"), http_version(py, head.version))?;
        }

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

        let headers = PyList::empty(py);
        for (name, value) in &head.headers {
            let name = self.header_name(py, name);
            let pair = PyTuple::new(py, [name.into_any(), PyBytes::new(py, value).into_any()])?;
            headers.append(pair)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;

        let forwarded = head.forwarded.as_deref();
        match forwarded.and_then(|f| f.client.as_ref()) {
            // Named by a trusted proxy: this request's own, not the connection's.
            Some(client) => {
                let (host, port) = client.host_and_port();
                let client = (host.as_ref(), port).into_bound_py_any(py)?;
                scope.set_item(intern!(py, "client"), client)?;
            }
            None => {
                let client = cached_addr(py, &head.conn.py_client, head.conn.client)?;
                scope.set_item(intern!(py, "client"), client)?;
            }
        }
        if let Some(secure) = forwarded.and_then(|f| f.secure) {
            let scheme = match (websocket, secure) {
                (false, false) => intern!(py, "http"),
                (false, true) => intern!(py, "https"),
                (true, false) => intern!(py, "ws"),
                (true, true) => intern!(py, "wss"),
            };
            scope.set_item(intern!(py, "scheme"), scheme)?;
        }
        let server = match &head.conn.unix_path {
            // As uvicorn and the ASGI spec: [path, None] on a Unix socket.
            Some(path) if head.conn.server.is_none() => match head.conn.py_server.get() {
                Some(obj) => obj.bind(py).clone(),
                None => {
                    let obj = (path.as_ref(), py.None()).into_bound_py_any(py)?;
                    let _ = head.conn.py_server.set(obj.clone().unbind());
                    obj
                }
            },
            _ => cached_addr(py, &head.conn.py_server, head.conn.server)?,
        };
        scope.set_item(intern!(py, "server"), server)?;
        scope.set_item(intern!(py, "state"), state.copy()?)?;
        {
            let extensions = if websocket {
                self.ws_extensions.bind(py).copy()?
            } else {
                self.http_extensions.bind(py).copy()?
            };
            if let Some(tls) = &head.conn.tls {
                let ext = match head.conn.py_tls.get() {
                    Some(ext) => ext.bind(py).clone(),
                    None => {
                        let ext = tls_extension(py, tls)?;
                        let _ = head.conn.py_tls.set(ext.clone().unbind());
                        ext
                    }
                };
                extensions.set_item(intern!(py, "tls"), ext)?;
            }
            scope.set_item(intern!(py, "extensions"), extensions)?;
        }
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

fn subprotocols<'py>(py: Python<'py>, head: &RequestHead) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (name, value) in &head.headers {
        if name.as_str() == "sec-websocket-protocol" {
            for p in value.split(|&b| b == b',') {
                let p = String::from_utf8_lossy(p.trim_ascii());
                if !p.is_empty() {
                    list.append(PyString::new(py, &p))?;
                }
            }
        }
    }
    Ok(list)
}

/// The ASGI TLS extension (asgiref's tls.rst) for one connection.
fn tls_extension<'py>(py: Python<'py>, tls: &crate::tls::TlsInfo) -> PyResult<Bound<'py, PyAny>> {
    let ext = PyDict::new(py);
    ext.set_item("server_cert", py.None())?;
    ext.set_item("client_cert_chain", PyList::new(py, &tls.client_chain)?)?;
    ext.set_item("client_cert_name", tls.client_name.as_deref())?;
    ext.set_item("client_cert_error", py.None())?;
    ext.set_item("tls_version", tls.version)?;
    ext.set_item("cipher_suite", tls.cipher_suite)?;
    Ok(ext.into_any())
}

/// The path and query of a request-target; absolute-form targets
/// ("http://host/p?q") give their path, "*" stays "*". A `#fragment` (which clients
/// should not send) belongs to neither. The WSGI environ splits targets the same way.
pub(crate) fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut rest = match target.iter().position(|&b| b == b'#') {
        Some(f) => &target[..f],
        None => target,
    };
    if !rest.starts_with(b"/") && !rest.starts_with(b"*") {
        if let Some(scheme_end) = rest.windows(3).position(|w| w == b"://") {
            let after = &rest[scheme_end + 3..];
            // An absolute-form target with no path ("http://host" or "http://host?q")
            // asks for "/" (RFC 9112 3.2.2).
            match after.iter().position(|&b| b == b'/' || b == b'?') {
                Some(p) if after[p] == b'/' => rest = &after[p..],
                Some(p) => return (b"/", Some(&after[p + 1..])),
                None => return (b"/", None),
            }
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

/// The method as an interned string (the common ones); the WSGI environ uses it too.
pub(crate) fn method<'py>(py: Python<'py>, m: &Method) -> Bound<'py, PyString> {
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

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split_into_path_and_query() {
        assert_eq!(split_target(b"/a?b=1"), (&b"/a"[..], Some(&b"b=1"[..])));
        assert_eq!(split_target(b"http://h/x?y"), (&b"/x"[..], Some(&b"y"[..])));
        assert_eq!(split_target(b"http://h?y"), (&b"/"[..], Some(&b"y"[..])));
        assert_eq!(split_target(b"/p#frag"), (&b"/p"[..], None));
        assert_eq!(split_target(b"*"), (&b"*"[..], None));
    }
}
