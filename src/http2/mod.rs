//! HTTP/2 (RFC 9113) with the `h2` crate: framing, HPACK and flow control are h2's;
//! ours is the connection lifecycle (idle timeout, graceful stop), the h2c ways in
//! (prior knowledge, `Upgrade: h2c`), and turning each stream into an `Exchange`.

mod stream;
pub mod upgrade;

use crate::asgi::exchange::ConnInfo;
use crate::conn_shared::ConnShared;
use crate::http1::parse;
use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

pub use upgrade::fits_upgrade;

/// Stream window: how much request body a client may send ahead of the app.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// A graceful GOAWAY waits for the answer to its PING (one round trip, milliseconds)
/// before naming the last stream. A client that doesn't answer within this time isn't
/// reading: once its open streams are done, the connection ends with a GOAWAY naming
/// the last stream taken, so such a client can't hold a drain open forever.
const GOAWAY_PING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Streams a client may cancel (RST_STREAM before its response ended) on one connection
/// before it is told ENHANCE_YOUR_CALM, plus one for every `RESETS_EARNED_PER` streams
/// it let finish. HTTP/2 Rapid Reset (CVE-2023-44487) opens streams and cancels them at
/// once: a cancelled stream no longer counts against max_concurrent_streams, but the app
/// call it started still runs. h2's own limit (max_pending_accept_reset_streams) only
/// covers streams reset before we accept them; a client that waits a moment before each
/// reset gets every stream to the app. Browsers cancel some requests (navigation,
/// superseded fetches), never most of them.
const RESET_ALLOWANCE: usize = 100;
const RESETS_EARNED_PER: usize = 4;

/// Serve one HTTP/2 connection. `read_ahead` holds bytes already read from the socket
/// (the preface, when HTTP/1.1 code recognised it); `upgrade` is the HTTP/1.1 request
/// that asked for `Upgrade: h2c`, answered as stream 1.
pub async fn serve<S>(
    mut io: S,
    read_ahead: BytesMut,
    upgrade: Option<parse::Head>,
    shared: Arc<ConnShared>,
    conn: Arc<ConnInfo>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = crate::metrics::recorder::connection(crate::metrics::recorder::Protocol::Http2);
    let settings = shared.http2;
    let read_ahead = match upgrade {
        None => read_ahead,
        Some(head) => {
            let switched = tokio::time::timeout(
                shared.header_timeout,
                upgrade::switch(&mut io, read_ahead, &head, &shared),
            )
            .await;
            match switched {
                Ok(Some(bytes)) => bytes,
                _ => return,
            }
        }
    };
    let io = Prefixed {
        prefix: read_ahead,
        io,
    };
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .max_frame_size(settings.max_frame_size)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let handshake = tokio::time::timeout(shared.header_timeout, builder.handshake(io)).await;
    let mut h2 = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            crate::debug!("HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let open = Arc::new(StreamCounts::default());
    let mut calm_asked = false;
    let mut idle_since = Instant::now();
    let mut closing = false;
    // --max-requests-per-connection and --max-connection-age end the connection with a
    // graceful GOAWAY, as a drain does: h2 first sends GOAWAY with the highest stream
    // id and a PING, and only after the PING's answer the GOAWAY naming the last stream
    // it took, so requests the client sent meanwhile are still served.
    let mut budget = shared.bounds.open();
    let age_limit = budget.ends_at();
    // Once the graceful GOAWAY is started: when to stop waiting for its PING's answer.
    let mut ping_wait_ends: Option<Instant> = None;
    let mut ended_without_pong = false;
    loop {
        if closing && ping_wait_ends.is_none() {
            ping_wait_ends = Some(Instant::now() + GOAWAY_PING_WAIT);
        }
        let idle = open.open.load(Ordering::Acquire) == 0;
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((request, respond))) => {
                    idle_since = Instant::now();
                    if open.over_reset_budget() {
                        if !calm_asked {
                            crate::warn!(
                                "HTTP/2 client cancelled {} streams: closing the connection (rapid reset)",
                                open.resets.load(Ordering::Acquire)
                            );
                            h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                            calm_asked = true;
                        }
                        continue; // dropping `respond` resets this stream unanswered
                    }
                    let guard = StreamGuard::enter(&open);
                    tokio::spawn(stream::serve(request, respond, shared.clone(), conn.clone(), guard));
                    budget.start_request();
                    if !closing && budget.spent() {
                        h2.graceful_shutdown();
                        closing = true;
                    }
                }
                Some(Err(e)) => {
                    crate::debug!("HTTP/2 connection error: {e}");
                    break;
                }
                None => break,
            },
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    h2.graceful_shutdown();
                    closing = true;
                }
            }
            _ = sleep_until_some(ping_wait_ends), if closing && !ended_without_pong => {
                if open.open.load(Ordering::Acquire) == 0 {
                    // No stream to lose: GOAWAY with the last stream taken, then close.
                    h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                    ended_without_pong = true;
                } else {
                    // Streams still run: look again in a moment.
                    ping_wait_ends = Some(Instant::now() + std::time::Duration::from_millis(200));
                }
            }
            _ = sleep_until_some(age_limit), if !closing => {
                h2.graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_since + shared.keep_alive), if idle && !closing => {
                if open.open.load(Ordering::Acquire) == 0 {
                    h2.graceful_shutdown();
                    closing = true;
                } else {
                    idle_since = Instant::now();
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One connection's streams: how many are open (for the idle timeout), and how many
/// ended cancelled by the client or finished (for the rapid-reset budget).
#[derive(Default)]
struct StreamCounts {
    open: AtomicUsize,
    resets: AtomicUsize,
    finished: AtomicUsize,
}

impl StreamCounts {
    fn over_reset_budget(&self) -> bool {
        let earned = self.finished.load(Ordering::Acquire) / RESETS_EARNED_PER;
        self.resets.load(Ordering::Acquire) > RESET_ALLOWANCE + earned
    }
}

/// One open stream, counted while it lives.
struct StreamGuard(Arc<StreamCounts>);

impl StreamGuard {
    fn enter(counts: &Arc<StreamCounts>) -> StreamGuard {
        counts.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(counts.clone())
    }

    /// Streams open on the connection now, this one included.
    fn open_streams(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// How the stream ended: cancelled by the client before its response was complete,
    /// or not.
    fn ended(&self, reset_by_client: bool) {
        let count = if reset_by_client {
            &self.0.resets
        } else {
            &self.0.finished
        };
        count.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, with bytes already read from it served first.
struct Prefixed<S> {
    prefix: BytesMut,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_budget_grows_with_finished_streams() {
        let counts = Arc::new(StreamCounts::default());
        let end = |reset: bool| StreamGuard::enter(&counts).ended(reset);
        for _ in 0..RESET_ALLOWANCE {
            end(true);
        }
        assert!(!counts.over_reset_budget());
        end(true);
        assert!(counts.over_reset_budget());
        // Streams that finish earn the client more cancels: one per RESETS_EARNED_PER.
        for _ in 0..RESETS_EARNED_PER {
            end(false);
        }
        assert!(!counts.over_reset_budget());
        assert_eq!(counts.open.load(Ordering::Acquire), 0);
    }
}
