//! HTTP/1.1, split as hyper does: `parse` (the request head and its framing rules),
//! `decode` (request bodies), `encode` (responses), `conn` (one connection's life), `deadline` (its timeout clock).

pub mod conn;
pub mod deadline;
pub mod decode;
pub mod encode;
pub mod outq;
pub mod parse;
pub mod sendfile;

#[cfg(test)]
mod props;
