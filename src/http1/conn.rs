//! One HTTP/1.1 connection: read a head, decide what it is (a request for the app, a
//! probe, a WebSocket or h2c upgrade, something to refuse), run each request as a
//! `Transaction`, then read the next one (keep-alive, pipelining in order) until the
//! connection closes or leaves HTTP/1.1.

use super::close::{linger_close, reject_and_close};
use super::deadline::Deadline;
use super::parse::{self, Framing, Outcome, Rejection, H2_PREFACE};
use super::sendfile::SendFile;
use super::transaction::{ConnEnd, Done, Lent, Transaction};
use crate::asgi::exchange::ConnInfo;
use crate::conn_shared::ConnShared;
use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use std::future::poll_fn;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// Bytes asked of the socket per read.
pub(super) const READ_CHUNK: usize = 64 * 1024;

enum Next {
    Head(parse::Head),
    /// The connection opened with the HTTP/2 preface (h2c by prior knowledge).
    Http2,
    Reject(Rejection),
    Close,
}

/// The connection leaves HTTP/1.1: the caller goes on with the socket and the bytes
/// already read from it.
pub enum Handoff {
    WebSocket {
        head: parse::Head,
        upgrade: crate::ws::handshake::Upgrade,
    },
    /// h2c: by prior knowledge (no head), or by `Upgrade: h2c` on this request.
    Http2 { upgrade: Option<parse::Head> },
}

/// Serve HTTP/1.1 requests until the connection closes, or until it switches protocol:
/// then the socket and what was read ahead are handed back.
pub async fn serve<S>(
    mut io: S,
    shared: Arc<ConnShared>,
    conn: Arc<ConnInfo>,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(S, BytesMut, Handoff)>
where
    S: AsyncRead + AsyncWrite + SendFile + Unpin,
{
    let _open = crate::metrics::recorder::connection(crate::metrics::recorder::Protocol::Http1);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    // Lent to each response for its header fields (transaction.rs).
    let mut spare_fields = crate::fields::Fields::new();
    let mut first = true;
    let mut budget = shared.bounds.open();
    let mut clock = Deadline::new(Instant::now() + shared.keep_alive);
    loop {
        // A served connection waiting for its next request is idle (--metrics).
        let idle = if first {
            None
        } else {
            crate::metrics::recorder::idle()
        };
        let next = read_head(&mut io, &mut buf, &shared, &mut shutdown, first, &mut clock);
        let next = next.await;
        drop(idle);
        let head = match next {
            Next::Head(h) => h,
            Next::Http2 => return Some((io, buf, Handoff::Http2 { upgrade: None })),
            Next::Close => return None,
            Next::Reject(r) => {
                crate::warn!("Invalid HTTP request received: {}", r.reason);
                reject_and_close(io, r.status, &shared).await;
                return None;
            }
        };
        if shared.ws.is_some() {
            match crate::ws::handshake::check(&head) {
                crate::ws::handshake::Check::NotWebSocket => {}
                crate::ws::handshake::Check::WebSocket(upgrade) => {
                    return Some((io, buf, Handoff::WebSocket { head, upgrade }));
                }
                crate::ws::handshake::Check::Bad(status, reason) => {
                    crate::warn!("Invalid WebSocket handshake: {reason}");
                    reject_and_close(io, status, &shared).await;
                    return None;
                }
            }
        }
        if shared.http2.upgrade && conn.tls.is_none() && is_h2c_upgrade(&head) {
            return Some((
                io,
                buf,
                Handoff::Http2 {
                    upgrade: Some(head),
                },
            ));
        }
        if let Some(probe) = probe_of(&head, &shared) {
            // A probe is not a request to the app: no concurrency slot, no access log,
            // no --max-requests count.
            let mut out = BytesMut::with_capacity(256);
            let keep = head.keep_alive && !*shutdown.borrow();
            let keep =
                crate::deploy::health::write_http1(&mut out, probe, &head, keep, &shared.head);
            first = false;
            if tokio::io::AsyncWriteExt::write_all(&mut io, &out)
                .await
                .is_err()
            {
                return None;
            }
            if keep {
                continue;
            }
            linger_close(io).await;
            return None;
        }
        if let (Framing::Length(n), Some(limit)) = (head.framing, shared.limit_request_body) {
            if n > limit {
                crate::warn!("Request body of {n} bytes is over --limit-request-body");
                reject_and_close(io, StatusCode::PAYLOAD_TOO_LARGE, &shared).await;
                return None;
            }
        }
        let Some(guard) = shared.admit() else {
            reject_and_close(io, StatusCode::SERVICE_UNAVAILABLE, &shared).await;
            return None;
        };
        first = false;
        budget.start_request();
        let ending = ConnEnd {
            shutdown: &shutdown,
            budget: &budget,
        };
        let mut tx = Transaction::new(
            head,
            &mut io,
            Lent {
                buf: &mut buf,
                fields: &mut spare_fields,
            },
            &shared,
            &conn,
            guard,
            ending,
        );
        let outcome = poll_fn(|cx| tx.poll(cx)).await;
        drop(tx);
        if let Some(recycle) = &shared.recycle {
            recycle.request_done();
        }
        match outcome {
            // The response promised the client it may send another request, so we
            // read one even when a drain started since: read_head keeps the idle
            // connection for the drain's grace window and the answer says close.
            Done::KeepAlive => continue,
            Done::Close => {
                linger_close(io).await;
                return None;
            }
            Done::Reject(r) => {
                crate::warn!("Invalid HTTP request received: {}", r.reason);
                reject_and_close(io, r.status, &shared).await;
                return None;
            }
        }
    }
}

/// Wait for a whole request head. Idle connections close after the keep-alive timeout.
/// On a drain, a connection that has been served stays open for --drain-idle-grace:
/// its client may already have sent the next request, and closing now would lose it
/// (the request is answered with `connection: close`); only a connection silent for
/// the whole window is closed. A connection just accepted still gets its first request
/// answered, within the keep-alive timeout. A started head must be complete within the
/// header timeout.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    shared: &ConnShared,
    shutdown: &mut watch::Receiver<bool>,
    first: bool,
    clock: &mut Deadline,
) -> Next {
    let idle_deadline = Instant::now() + shared.keep_alive;
    let mut header_deadline = None;
    let mut drain_ends = None;
    loop {
        // h2c by prior knowledge: the preface, or a prefix of it so far.
        let mut maybe_preface = false;
        if first && shared.http2.prior_knowledge && !buf.is_empty() {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] == H2_PREFACE[..n] {
                if n == H2_PREFACE.len() {
                    return Next::Http2;
                }
                maybe_preface = true;
                header_deadline.get_or_insert_with(|| Instant::now() + shared.header_timeout);
            }
        }
        if !buf.is_empty() && !maybe_preface {
            match parse::parse(buf, &shared.limits) {
                Outcome::Complete(head) => return Next::Head(head),
                Outcome::Reject(r) => return Next::Reject(r),
                Outcome::Partial => {
                    header_deadline.get_or_insert_with(|| Instant::now() + shared.header_timeout);
                }
            }
        } else if !first && *shutdown.borrow() {
            let grace = shared.bounds.drain_idle_grace;
            drain_ends.get_or_insert_with(|| Instant::now() + grace);
        }
        let idle_ends = drain_ends.map_or(idle_deadline, |d: Instant| d.min(idle_deadline));
        clock.set(header_deadline.unwrap_or(idle_ends));
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            },
            _ = clock.elapsed() => {
                if header_deadline.is_some() {
                    crate::debug!("Closing a connection that did not send its headers in time");
                }
                return Next::Close;
            }
            changed = shutdown.changed(), if buf.is_empty() && !first && drain_ends.is_none() => {
                if changed.is_err() {
                    return Next::Close;
                }
            }
        }
    }
}

/// The probe answer when this is a bodiless GET or HEAD of --health-path or
/// --ready-path; anything else on those paths goes to the app.
fn probe_of(head: &parse::Head, shared: &ConnShared) -> Option<crate::deploy::health::Probe> {
    if !shared.health.enabled()
        || !matches!(head.framing, Framing::Empty)
        || !(head.method == Method::GET || head.method == Method::HEAD)
    {
        return None;
    }
    shared.health.answer(&head.target)
}

/// `Upgrade: h2c` on a request without a body (RFC 7540 3.2): with a body we answer
/// over HTTP/1.1, which a server may always do.
fn is_h2c_upgrade(head: &parse::Head) -> bool {
    let has = |name: &str, token: &str| {
        head.headers.iter().any(|(n, v)| {
            n.as_str() == name
                && v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    head.version == Version::HTTP_11
        && matches!(head.framing, Framing::Empty)
        && has("upgrade", "h2c")
        && has("connection", "upgrade")
        && head
            .headers
            .iter()
            .any(|(n, _)| n.as_str() == "http2-settings")
        && crate::http2::fits_upgrade(head)
}
