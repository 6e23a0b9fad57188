//! Reading the messages an app sends: a field of the message dict, its headers as
//! `Fields`, a body as `Bytes`. Shared by the http and WebSocket callables and by
//! the WSGI response, which all accept what the ASGI spec allows (any iterable of
//! pairs, bytes-like values) and refuse the rest with the same errors.

use crate::fields::{Fields, Invalid};
use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use std::borrow::Cow;

/// `message[key]`, or None when the key is absent. ASGI messages are dicts, so this is
/// one dict lookup that raises nothing for an optional key (a KeyError raised and
/// caught per message was measurable); any other mapping still works.
pub(crate) fn field<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(dict) = message.downcast::<PyDict>() {
        return dict.get_item(key);
    }
    match message.get_item(key) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_instance_of::<PyKeyError>(message.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `message[key]` for a key the message must have.
pub(crate) fn required<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    field(message, key)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
}

pub(crate) fn protocol_error(msg: String) -> PyErr {
    PyRuntimeError::new_err(msg)
}

pub(crate) fn convert_headers(headers: &Bound<'_, PyAny>) -> PyResult<Fields> {
    convert_headers_into(headers, Fields::new())
}

/// `convert_headers` into an empty `Fields` whose buffer is reused.
pub(crate) fn convert_headers_into(
    headers: &Bound<'_, PyAny>,
    mut map: Fields,
) -> PyResult<Fields> {
    debug_assert!(map.is_empty());
    map.reserve_for(headers.len().unwrap_or(0));
    // The usual shape, a list of (bytes, bytes) tuples, is read without iterators.
    if let Ok(list) = headers.downcast::<PyList>() {
        for item in list.iter() {
            append_header(&mut map, &item)?;
        }
    } else {
        for item in headers.try_iter()? {
            append_header(&mut map, &item?)?;
        }
    }
    Ok(map)
}

/// One `(name, value)` pair: a tuple, or any iterable of exactly two items (ASGI allows
/// `[name, value]` lists, which Datasette sends).
fn append_header(map: &mut Fields, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let invalid = || protocol_error(format!("Invalid header in http.response.start: {item}"));
    let (name, value) = if let Ok(t) = item.downcast::<PyTuple>() {
        if t.len() != 2 {
            return Err(invalid());
        }
        (t.get_item(0)?, t.get_item(1)?)
    } else if item.is_instance_of::<PyBytes>() || item.is_instance_of::<PyString>() {
        return Err(invalid()); // iterable, but not a pair
    } else {
        let mut it = item.try_iter().map_err(|_| invalid())?;
        let (Some(name), Some(value), None) = (it.next(), it.next(), it.next()) else {
            return Err(invalid());
        };
        (name?, value?)
    };
    let name = header_bytes(&name)?;
    let value = header_bytes(&value)?;
    if name.eq_ignore_ascii_case(b"content-length") {
        check_content_length(map, &value)?;
    }
    // Refuses CR, LF and NUL in a value: it can't end the header block early.
    map.append(&name, &value).map_err(|invalid| match invalid {
        Invalid::Name => protocol_error(format!(
            "Invalid header name {:?} in http.response.start",
            String::from_utf8_lossy(&name)
        )),
        Invalid::Value => protocol_error(format!(
            "Invalid value for header {:?} in http.response.start",
            String::from_utf8_lossy(&name).to_ascii_lowercase()
        )),
    })
}

/// A content-length the app sets must be a number, and the same number if repeated:
/// anything else would leave the client unable to find the end of the body.
fn check_content_length(map: &Fields, value: &[u8]) -> PyResult<()> {
    let parse = |v: &[u8]| {
        let v = v.trim_ascii();
        (!v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit))
            .then(|| v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let n = parse(value).ok_or_else(|| {
        protocol_error(format!(
            "Invalid content-length {:?} in http.response.start",
            String::from_utf8_lossy(value)
        ))
    })?;
    if let Some(earlier) = map.get(b"content-length") {
        if parse(earlier) != Some(n) {
            return Err(protocol_error(
                "Conflicting content-length headers in http.response.start".into(),
            ));
        }
    }
    Ok(())
}

/// A header name or value as bytes, borrowed from a `bytes` object (the usual case).
pub(crate) fn header_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    // Lenient as uvicorn is: latin-1 text is accepted too.
    if let Ok(s) = obj.downcast::<PyString>() {
        let s = s.to_cow()?;
        return s
            .chars()
            .map(|c| u8::try_from(c as u32))
            .collect::<Result<Vec<u8>, _>>()
            .map(Cow::Owned)
            .map_err(|_| protocol_error("header text must be latin-1".into()));
    }
    if let Some(copy) = buffer_copy(obj)? {
        return Ok(Cow::Owned(copy.as_bytes().to_vec()));
    }
    Err(protocol_error(format!(
        "Header names and values must be bytes, not {}",
        obj.get_type().name()?
    )))
}

/// A copy, as `bytes`, of a bytearray or memoryview; None for anything else.
fn buffer_copy<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyBytes>>> {
    if !obj.is_instance_of::<PyByteArray>() && !obj.is_instance_of::<PyMemoryView>() {
        return Ok(None);
    }
    // SAFETY: a C-API call on a live object with the GIL held; PyBytes_FromObject
    // returns a new reference or NULL with an exception set.
    unsafe {
        let copy = pyo3::ffi::PyBytes_FromObject(obj.as_ptr());
        Bound::from_owned_ptr_or_err(obj.py(), copy)
            .and_then(|b| Ok(b.downcast_into::<PyBytes>()?))
            .map(Some)
    }
}

/// An `http.response.body` body as `Bytes`: a `bytes` object as it is (zero-copy when
/// big), any other bytes-like object (bytearray, memoryview) copied, since the app may
/// change it after send() returns.
pub(crate) fn body_of(body: Bound<'_, PyAny>) -> PyResult<Bytes> {
    match body.downcast_into::<PyBytes>() {
        Ok(b) => Ok(body_bytes(b)),
        Err(e) => {
            let body = e.into_inner();
            match buffer_copy(&body)? {
                Some(copy) => Ok(body_bytes(copy)),
                None => Err(protocol_error(format!(
                    "http.response.body 'body' must be bytes, bytearray or memoryview, not {}",
                    body.get_type().name()?
                ))),
            }
        }
    }
}

/// Bodies at least this big are not copied: the bytes object itself is kept (and
/// released, through pyo3's deferred decref, once written).
const ZERO_COPY_MIN: usize = 16 * 1024;

/// A Python `bytes` body as `Bytes`.
pub(crate) fn body_bytes(body: Bound<'_, PyBytes>) -> Bytes {
    let data = body.as_bytes();
    if data.len() < ZERO_COPY_MIN {
        return Bytes::copy_from_slice(data);
    }
    let (ptr, len) = (data.as_ptr(), data.len());
    Bytes::from_owner(PyBytesOwner {
        _object: body.unbind(),
        ptr,
        len,
    })
}

/// Keeps a `bytes` object alive while the I/O thread reads its buffer.
struct PyBytesOwner {
    _object: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a `bytes` object is immutable and its buffer lives as long as the object,
// which `_object` keeps alive; reading it needs no GIL. Dropping the `Py` without the
// GIL is deferred by pyo3 to the next time the GIL is taken.
unsafe impl std::marker::Send for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see above; ptr/len come from the live object's buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
