//! Ending an HTTP/1.1 connection without losing what we sent: a short error response
//! for a request we refuse, and a lingering close. Used by the HTTP/1.1 connection and
//! by the WebSocket handshake, which refuses on the same HTTP/1.1 socket.

use super::encode::{self, RequestFacts};
use crate::conn_shared::ConnShared;
use bytes::{BufMut, BytesMut};
use http::{Method, StatusCode, Version};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Answer a request we refuse, then close without resetting the connection.
pub async fn reject_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    status: StatusCode,
    shared: &ConnShared,
) {
    let mut out = BytesMut::with_capacity(256);
    write_error_response(&mut out, status, shared);
    if io.write_all(&out).await.is_ok() {
        linger_close(io).await;
    }
}

/// A short plain-text error response that closes the connection.
pub(crate) fn write_error_response(out: &mut BytesMut, status: StatusCode, shared: &ConnShared) {
    let body = status.canonical_reason().unwrap_or("Error");
    let mut headers = crate::fields::Fields::new();
    headers.push("content-type", "text/plain; charset=utf-8");
    let req = RequestFacts {
        method: &Method::GET,
        version: Version::HTTP_11,
        keep_alive: false,
    };
    encode::write_head(
        out,
        status,
        &headers,
        Some(body.len() as u64),
        &req,
        &shared.head,
    );
    out.put_slice(body.as_bytes());
}

/// Close our side, then read and drop what the client still sends for a moment: closing
/// with unread data would reset the connection and could destroy the response we sent.
pub async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let _ = io.flush().await;
    let _ = io.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut budget = 1024 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while budget > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget -= n.min(budget),
            }
        }
    })
    .await;
}
