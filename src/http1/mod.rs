//! HTTP/1.1, split as hyper does: `parse` (the request head and its framing rules),
//! `decode` (request bodies), `encode` (responses), `conn` (one connection's life),
//! `transaction` (one request and its response on it), `deadline` (the connection's
//! timeout clock), `outq` (the response queue), `sendfile` (zero-copy file bodies),
//! `close` (refusing and closing without losing the response).
//!
//! Layers: `conn_shared` and `asgi` below; `ws` and `http2` above (they take over a
//! connection from here). The one look upwards is deliberate: `conn` asks
//! `ws::handshake::check` and `http2::fits_upgrade` whether a request that asks to
//! leave HTTP/1.1 may, because the answer decides how this connection goes on.

pub mod close;
pub mod conn;
pub mod deadline;
pub mod decode;
pub mod encode;
pub mod outq;
pub mod parse;
pub mod sendfile;
pub mod transaction;

#[cfg(test)]
mod props;
