//! The PEP 3333 `environ` dict. Every key that is the same for all requests of a worker
//! is in a template made once; a request's environ is a C-level copy of it with the
//! request's values written in. `HTTP_*` keys are cached per header name.

use super::response::FileWrapper;
use crate::asgi::exchange::RequestHead;
use crate::asgi::scope::{method, split_target};
use http::{HeaderName, Version};
use percent_encoding::percent_decode;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::collections::HashMap;
use std::sync::Mutex;

/// Header names seen so far as `HTTP_*` keys. Bounded, so a client sending random
/// names can't grow it.
const HEADER_KEY_CACHE: usize = 256;

pub struct EnvironBuilder {
    template: Py<PyDict>,
    root_path: String,
    /// Only touched with the GIL held, so never contended.
    header_keys: Mutex<HashMap<HeaderName, Py<PyString>>>,
}

/// Bytes as text, one char per byte: PEP 3333's "bytes decoded as latin-1".
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

impl EnvironBuilder {
    pub fn new(
        py: Python<'_>,
        root_path: &str,
        tls: bool,
        multithread: bool,
        multiprocess: bool,
    ) -> PyResult<Self> {
        let t = PyDict::new(py);
        t.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        t.set_item("wsgi.url_scheme", if tls { "https" } else { "http" })?;
        t.set_item("wsgi.multithread", multithread)?;
        t.set_item("wsgi.multiprocess", multiprocess)?;
        t.set_item("wsgi.run_once", false)?;
        t.set_item("wsgi.input_terminated", true)?;
        t.set_item("wsgi.errors", Py::new(py, ErrorStream)?)?;
        t.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        t.set_item("SCRIPT_NAME", root_path)?;
        t.set_item("SERVER_PROTOCOL", "HTTP/1.1")?;
        t.set_item(
            "SERVER_SOFTWARE",
            concat!("ferrocorn/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(EnvironBuilder {
            template: t.unbind(),
            root_path: root_path.trim_end_matches('/').to_string(),
            header_keys: Mutex::new(HashMap::new()),
        })
    }

    pub fn build<'py>(
        &self,
        py: Python<'py>,
        head: &RequestHead,
        input: PyObject,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.template.bind(py).copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), method(py, &head.method))?;
        if head.version != Version::HTTP_11 {
            let protocol = match head.version {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            };
            env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
        }
        let (raw_path, query) = split_target(&head.target);
        let decoded: Vec<u8> = percent_decode(raw_path).collect();
        let mut path = latin1(&decoded);
        if !self.root_path.is_empty() && path.starts_with(&self.root_path) {
            let rest = &path[self.root_path.len()..];
            if rest.is_empty() || rest.starts_with('/') {
                path = rest.to_string();
            }
        }
        env.set_item(intern!(py, "PATH_INFO"), path)?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(query.unwrap_or(b"")))?;
        env.set_item(intern!(py, "RAW_URI"), latin1(&head.target))?;

        let addrs = match head.conn.py_wsgi_addrs.get() {
            Some(addrs) => addrs.bind(py).clone(),
            None => {
                let addrs = connection_values(py, &head.conn)?.into_any();
                let _ = head.conn.py_wsgi_addrs.set(addrs.clone().unbind());
                addrs
            }
        };
        env.update(addrs.downcast::<PyDict>()?.as_mapping())?;
        if let Some(forwarded) = head.forwarded.as_deref() {
            // A trusted proxy named the client and its scheme (--forwarded-allow-ips):
            // the app sees them as it would in an ASGI scope. HTTP_HOST already holds a
            // forwarded host (--forwarded-host rewrote the header).
            if let Some(client) = &forwarded.client {
                let (host, port) = client.host_and_port();
                env.set_item(intern!(py, "REMOTE_ADDR"), host.as_ref())?;
                env.set_item(intern!(py, "REMOTE_PORT"), port.to_string())?;
            }
            if let Some(secure) = forwarded.secure {
                let scheme = if secure { "https" } else { "http" };
                env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
            }
        }

        let mut keys = self.header_keys.lock().unwrap();
        for (name, value) in &head.headers {
            let key = match name.as_str() {
                "content-type" => intern!(py, "CONTENT_TYPE").clone(),
                "content-length" => intern!(py, "CONTENT_LENGTH").clone(),
                _ => header_key(py, &mut keys, name),
            };
            let value = latin1(value);
            match env.get_item(&key)? {
                // Repeated fields are one value, joined as RFC 9110 5.3 allows (cookies
                // with "; ", as HTTP/2 splits them, RFC 9113 8.2.3).
                Some(earlier) => {
                    let sep = if name == http::header::COOKIE {
                        "; "
                    } else {
                        ","
                    };
                    let joined = format!("{}{sep}{value}", earlier.extract::<String>()?);
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, value)?,
            }
        }
        drop(keys);
        env.set_item(intern!(py, "wsgi.input"), input)?;
        Ok(env)
    }
}

/// The environ values that are the same for every request of a connection.
fn connection_values<'py>(
    py: Python<'py>,
    conn: &crate::asgi::exchange::ConnInfo,
) -> PyResult<Bound<'py, PyDict>> {
    let values = PyDict::new(py);
    match conn.server {
        Some(addr) => {
            values.set_item("SERVER_NAME", addr.ip().to_string())?;
            values.set_item("SERVER_PORT", addr.port().to_string())?;
        }
        None => {
            // A Unix socket: no address of our own.
            values.set_item("SERVER_NAME", "localhost")?;
            values.set_item("SERVER_PORT", if conn.tls.is_some() { "443" } else { "80" })?;
        }
    }
    if let Some(client) = conn.client {
        values.set_item("REMOTE_ADDR", client.ip().to_string())?;
        values.set_item("REMOTE_PORT", client.port().to_string())?;
    }
    Ok(values)
}

fn header_key<'py>(
    py: Python<'py>,
    cache: &mut HashMap<HeaderName, Py<PyString>>,
    name: &HeaderName,
) -> Bound<'py, PyString> {
    if let Some(key) = cache.get(name) {
        return key.bind(py).clone();
    }
    let mut key = String::with_capacity(5 + name.as_str().len());
    key.push_str("HTTP_");
    for c in name.as_str().chars() {
        key.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    let key = PyString::intern(py, &key);
    if cache.len() < HEADER_KEY_CACHE {
        cache.insert(name.clone(), key.clone().unbind());
    }
    key
}

/// `wsgi.errors`: what the app writes goes to the error log, a line at a time.
#[pyclass(frozen, module = "ferrocorn._ferrocorn")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        let line = text.trim_end_matches(['\n', '\r']);
        if !line.trim().is_empty() {
            crate::log::log(crate::config::LogLevel::Error, line);
        }
        text.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_maps_each_byte_to_one_char() {
        assert_eq!(latin1(b"/caf\xe9"), "/caf\u{e9}");
        assert_eq!(latin1(b"\xff\x00"), "\u{ff}\u{0}");
    }
}
