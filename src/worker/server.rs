//! The worker's I/O thread: a tokio runtime that accepts on the inherited listeners,
//! reads a PROXY protocol header when configured (src/proxy), does the TLS handshake,
//! picks the protocol of each connection (HTTP/1.1, HTTP/2 by ALPN, prior knowledge or
//! upgrade, WebSocket by upgrade), and drains connections on a graceful stop: HTTP
//! first, then WebSockets are closed with 1012. It never touches Python.

use crate::asgi::bridge::{Bridge, Event};
use crate::asgi::exchange::ConnInfo;
use crate::conn_shared::ConnShared;
use crate::control::ListenerSpec;
use crate::http1::close::reject_and_close;
use crate::http1::conn::{self, Handoff};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Orders from the Python side to the I/O thread.
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    shared: Arc<ConnShared>,
}

impl ServerHandle {
    /// Stop accepting and close connections once their current request is done.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Close every open WebSocket with 1012 now (the drain timed out or a quick stop).
    pub fn close_websockets(&self) {
        let _ = self.shared.ws_close.send(true);
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Live connections, so a graceful stop knows when the last one is gone.
#[derive(Default)]
struct Connections {
    count: AtomicUsize,
    all_closed: Notify,
}

struct ConnGuard(Arc<Connections>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// `trim_interval`: seconds between two trims of the heap (--malloc-trim-interval).
pub fn start(
    listeners: &[ListenerSpec],
    shared: Arc<ConnShared>,
    trim_interval: f64,
) -> std::io::Result<ServerHandle> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Access lines are batched per turn of the I/O thread (log::access).
        .on_thread_park(crate::log::flush_access_batch)
        .build()?;

    // Sockets must be registered with the runtime from inside it.
    let listeners: Vec<ListenerSpec> = listeners.to_vec();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle_shared = shared.clone();
    std::thread::Builder::new()
        .name("ferrocorn-io".into())
        .spawn(move || {
            Bridge::defer_notify_on_this_thread();
            crate::log::batch_access_on_this_thread();
            runtime.block_on(async move {
                let mut bound = Vec::new();
                for spec in &listeners {
                    match adopt(spec) {
                        Ok(l) => bound.push(l),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                // Ends with the runtime, when `serve` returns.
                tokio::spawn(crate::memory::trim::run(trim_interval));
                serve(bound, shared, shutdown_rx).await;
            });
            crate::log::flush_access_batch();
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("I/O thread failed to start"))??;
    Ok(ServerHandle {
        shutdown: shutdown_tx,
        shared: handle_shared,
    })
}

fn adopt(spec: &ListenerSpec) -> std::io::Result<Listener> {
    // The fd is inherited from the master and is ours alone in this process.
    if spec.unix {
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(spec.fd) };
        l.set_nonblocking(true)?;
        Ok(Listener::Unix(tokio::net::UnixListener::from_std(l)?))
    } else {
        let l = unsafe { std::net::TcpListener::from_raw_fd(spec.fd) };
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
    }
}

/// HTTP connections and WebSockets, counted apart: a graceful stop waits for HTTP
/// requests to finish, and only then closes the WebSockets (which would otherwise
/// hold the drain open forever).
#[derive(Default)]
struct Counts {
    http: Arc<Connections>,
    websockets: Arc<Connections>,
}

async fn serve(listeners: Vec<Listener>, shared: Arc<ConnShared>, shutdown: watch::Receiver<bool>) {
    let counts = Arc::new(Counts::default());
    let wakeups = shared.wakeups.clone();
    tokio::spawn(async move { wakeups.run().await });
    let bridge = shared.bridge.clone();
    tokio::spawn(async move { bridge.run_flusher().await });
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
            counts.clone(),
        )));
    }
    for task in accepting {
        let _ = task.await;
    }
    // Accepting has stopped (graceful stop): wait for the open connections to finish.
    counts.http.wait_closed().await;
    let _ = shared.ws_close.send(true);
    counts.websockets.wait_closed().await;
    shared.bridge.push(Event::Drained);
    // `serve` ends here and the runtime with it: no flusher task runs after this push.
    shared.bridge.flush();
    // Every request is counted by now: the master gets the final counts before the
    // worker exits, so none are lost across a restart.
    crate::metrics::recorder::report();
}

impl Connections {
    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    async fn wait_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<ConnShared>,
    mut shutdown: watch::Receiver<bool>,
    counts: Arc<Counts>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok(accepted) if over_limit(&shared, &counts) => {
                // A clean refusal, not a reset: the client learns why.
                crate::warn!("Refusing a connection: --worker-connections reached");
                let shared = shared.clone();
                tokio::spawn(async move {
                    let status = http::StatusCode::SERVICE_UNAVAILABLE;
                    match accepted.stream {
                        Stream::Tcp(s) => reject_and_close(s, status, &shared).await,
                        Stream::Unix(s, _) => reject_and_close(s, status, &shared).await,
                    }
                });
            }
            Ok(accepted) => {
                let guard = counts.http.enter();
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                let counts = counts.clone();
                tokio::spawn(async move {
                    let Accepted {
                        mut client,
                        server,
                        mut stream,
                    } = accepted;
                    if let Some(proxy_protocol) = &shared.proxy.protocol {
                        match read_proxy_header(proxy_protocol, &mut stream, client).await {
                            Some(proxied) => client = proxied,
                            None => return,
                        }
                    }
                    match stream {
                        Stream::Tcp(s) => match shared.tls.clone() {
                            None => {
                                let conn = conn_info(&shared, client, server, None, None);
                                connection(s, shared, conn, shutdown, guard, counts).await
                            }
                            Some(acceptor) => {
                                let handshake =
                                    tokio::time::timeout(shared.header_timeout, acceptor.accept(s));
                                let tls = match handshake.await {
                                    Ok(Ok(tls)) => tls,
                                    Ok(Err(e)) => {
                                        crate::debug!("TLS handshake failed: {e}");
                                        return;
                                    }
                                    Err(_) => return,
                                };
                                let info = crate::tls::TlsInfo::of(tls.get_ref().1);
                                let h2 = info.alpn.as_deref() == Some(b"h2");
                                let conn = conn_info(&shared, client, server, Some(info), None);
                                if h2 {
                                    let empty = bytes::BytesMut::new();
                                    crate::http2::serve(tls, empty, None, shared, conn, shutdown)
                                        .await;
                                } else {
                                    connection(tls, shared, conn, shutdown, guard, counts).await
                                }
                            }
                        },
                        Stream::Unix(s, path) => {
                            // `client` is None unless a PROXY header named one.
                            let conn = conn_info(&shared, client, None, None, path);
                            connection(s, shared, conn, shutdown, guard, counts).await
                        }
                    }
                });
            }
            Err(e) => {
                // Out of fds or memory: back off instead of spinning on accept.
                crate::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The facts of a new connection, with whether its peer may send forwarded headers.
fn conn_info(
    shared: &ConnShared,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    tls: Option<crate::tls::TlsInfo>,
    unix_path: Option<Box<str>>,
) -> Arc<ConnInfo> {
    let mut conn = ConnInfo {
        unix_path,
        ..ConnInfo::new(client, server, tls)
    };
    conn.forwarded_trusted = shared.proxy.trusts_forwarded_from(&conn);
    Arc::new(conn)
}

/// --proxy-protocol: read the connection's PROXY header, before TLS and HTTP. Some:
/// serve it, as from this client; None: it was closed (logged once if refused).
async fn read_proxy_header(
    proxy_protocol: &crate::proxy::accept::ProxyProtocol,
    stream: &mut Stream,
    client: Option<SocketAddr>,
) -> Option<Option<SocketAddr>> {
    use crate::proxy::accept::Verdict;
    let verdict = match stream {
        Stream::Tcp(s) => proxy_protocol.accept(s, client, None).await,
        Stream::Unix(s, path) => proxy_protocol.accept(s, None, path.as_deref()).await,
    };
    let peer = || client.map_or_else(|| "a Unix socket peer".into(), |a| a.to_string());
    match verdict {
        Verdict::Keep => Some(client),
        Verdict::Client(source) => Some(Some(source)),
        Verdict::Close(why) => {
            crate::warn!(
                "PROXY protocol: {why}; closing the connection from {}",
                peer()
            );
            None
        }
        Verdict::Gone(why) => {
            crate::debug!(
                "PROXY protocol: {why}; closing the connection from {}",
                peer()
            );
            None
        }
    }
}

fn over_limit(shared: &ConnShared, counts: &Counts) -> bool {
    shared.max_connections.is_some_and(|max| {
        counts.http.count.load(Ordering::Acquire) + counts.websockets.count.load(Ordering::Acquire)
            >= max
    })
}

/// A cleartext or TLS connection after accept: HTTP/1.1, unless it turns out to be
/// (or switches to) HTTP/2 or a WebSocket.
async fn connection<S>(
    io: S,
    shared: Arc<ConnShared>,
    conn: Arc<ConnInfo>,
    shutdown: watch::Receiver<bool>,
    guard: ConnGuard,
    counts: Arc<Counts>,
) where
    S: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + crate::http1::sendfile::SendFile
        + Unpin
        + Send
        + 'static,
{
    if shared.http2.only {
        let empty = bytes::BytesMut::new();
        crate::http2::serve(io, empty, None, shared, conn, shutdown).await;
        return;
    }
    match conn::serve(io, shared.clone(), conn.clone(), shutdown.clone()).await {
        None => {}
        Some((io, buf, Handoff::Http2 { upgrade })) => {
            crate::http2::serve(io, buf, upgrade, shared, conn, shutdown).await;
        }
        Some((io, buf, Handoff::WebSocket { head, upgrade })) => {
            // A WebSocket no longer holds up the HTTP drain.
            let _ws = counts.websockets.enter();
            drop(guard);
            crate::ws::conn::serve(io, buf, head, upgrade, shared, conn).await;
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    /// With the listener's path, for the scope's `server`.
    Unix(tokio::net::UnixStream, Option<Box<str>>),
}

struct Accepted {
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    stream: Stream,
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    let (client, server, stream) = match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr().ok();
            (Some(normalise(peer)), local.map(normalise), Stream::Tcp(s))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            let path = s.local_addr().ok().and_then(|a| {
                a.as_pathname()
                    .map(|p| p.to_string_lossy().into_owned().into_boxed_str())
            });
            (None, None, Stream::Unix(s, path))
        }
    };
    Ok(Accepted {
        client,
        server,
        stream,
    })
}

/// IPv4 clients of a dual-stack socket show up as ::ffff:a.b.c.d; report a.b.c.d.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}
