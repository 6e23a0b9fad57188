//! The worker's I/O thread: a tokio runtime that accepts on the inherited listeners,
//! reads a PROXY protocol header when configured (src/proxy), does the TLS handshake,
//! picks the protocol of each connection (HTTP/1.1, HTTP/2 by ALPN, prior knowledge or
//! upgrade, WebSocket by upgrade), and drains connections on a graceful stop: HTTP
//! first, then WebSockets are closed with 1012. It never touches Python.

use super::accept_errors::{self, AcceptErrors};
use crate::asgi::bridge::{self, Bridge, Event};
use crate::asgi::exchange::ConnInfo;
use crate::balance::worker::WorkerSlot;
use crate::conn_shared::ConnShared;
use crate::control::ListenerSpec;
use crate::http1::close::reject_and_close;
use crate::http1::conn::{self, Handoff};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
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

/// A listening socket, watched by the runtime but accepted from by hand (`accept`): a
/// worker must be able to see that a connection is waiting without taking it, which
/// tokio's own listeners can't do.
enum Listener {
    Tcp(AsyncFd<std::net::TcpListener>),
    Unix(AsyncFd<std::os::unix::net::UnixListener>),
}

/// Live connections, so a graceful stop knows when the last one is gone; also counted
/// in this worker's slot of the shared connection table, for balanced accepting.
struct Connections {
    count: AtomicUsize,
    all_closed: Notify,
    slot: Option<Arc<WorkerSlot>>,
    /// Any one closed: an accept that failed for lack of fds may succeed now.
    one_closed: Notify,
}

struct ConnGuard(Arc<Connections>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(slot) = &self.0.slot {
            slot.closed();
        }
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
        self.0.one_closed.notify_waiters();
    }
}

/// `trim_interval`: seconds between two trims of the heap (--malloc-trim-interval).
pub fn start(
    listeners: &[ListenerSpec],
    shared: Arc<ConnShared>,
    balance: Option<Arc<WorkerSlot>>,
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
                serve(bound, shared, shutdown_rx, balance).await;
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
    // SAFETY (registration): the std listener owns its fd, which stays open and the
    // same for as long as the AsyncFd holds it.
    if spec.unix {
        let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(spec.fd) };
        l.set_nonblocking(true)?;
        let fd = unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) };
        Ok(Listener::Unix(fd.map_err(std::io::Error::from)?))
    } else {
        let l = unsafe { std::net::TcpListener::from_raw_fd(spec.fd) };
        l.set_nonblocking(true)?;
        let fd = unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) };
        Ok(Listener::Tcp(fd.map_err(std::io::Error::from)?))
    }
}

/// HTTP connections and WebSockets, counted apart: a graceful stop waits for HTTP
/// requests to finish, and only then closes the WebSockets (which would otherwise
/// hold the drain open forever).
struct Counts {
    http: Arc<Connections>,
    websockets: Arc<Connections>,
    /// This worker's slot in the shared connection table (src/balance), if any.
    balance: Option<Arc<WorkerSlot>>,
}

impl Counts {
    fn new(balance: Option<Arc<WorkerSlot>>) -> Counts {
        let connections = || {
            Arc::new(Connections {
                count: AtomicUsize::new(0),
                all_closed: Notify::new(),
                slot: balance.clone(),
                one_closed: Notify::new(),
            })
        };
        Counts {
            http: connections(),
            websockets: connections(),
            balance: balance.clone(),
        }
    }
}

async fn serve(
    listeners: Vec<Listener>,
    shared: Arc<ConnShared>,
    shutdown: watch::Receiver<bool>,
    balance: Option<Arc<WorkerSlot>>,
) {
    let counts = Arc::new(Counts::new(balance.clone()));
    let stamper = balance.clone().map(|slot| {
        slot.start_accepting();
        // Keeps the slot's stamp fresh while no connection comes, so the other
        // workers know this one is alive (a stopped one is left out of the mean).
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::balance::worker::STAMP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                slot.stamp();
            }
        })
    });
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
    if let Some(slot) = &balance {
        slot.stop_accepting();
    }
    if let Some(stamper) = stamper {
        stamper.abort();
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
        if let Some(slot) = &self.slot {
            slot.opened();
        }
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
    let mut errors = AcceptErrors::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let accepted = tokio::select! {
            a = accept(&listener, counts.balance.as_deref()) => a,
            _ = errors.burst_over() => {
                errors.end_burst();
                continue;
            }
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
            Err(e) if accept_errors::is_per_connection(&e) => {
                crate::debug!("accept: a queued connection was already gone: {e}");
            }
            Err(e) => {
                // Out of fds or memory: back off instead of spinning on accept (the
                // listener stays readable), and log the burst, not every retry.
                // A closed connection frees an fd: retry then rather than wait it out.
                errors.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(accept_errors::BACKOFF) => {}
                    _ = counts.http.one_closed.notified() => {}
                    _ = counts.websockets.one_closed.notified() => {}
                    _ = shutdown.changed() => return,
                }
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
    serve_protocols(io, shared.clone(), conn.clone(), shutdown, guard, counts).await;
    bridge::release_on_loop(&shared.bridge, conn);
}

async fn serve_protocols<S>(
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

/// The next connection. With a slot in the connection table, a worker that holds more
/// than its share waits a few milliseconds first (`WorkerSlot::deferral`), giving the other workers (woken for the same
/// connection) the chance to take it; then it takes it itself if it is still there.
async fn accept(listener: &Listener, balance: Option<&WorkerSlot>) -> std::io::Result<Accepted> {
    loop {
        let accepted = match listener {
            Listener::Tcp(fd) => {
                let mut ready = fd.readable().await?;
                defer_if_over(balance).await;
                match ready.try_io(|l| accept4(l.as_raw_fd())) {
                    Ok(result) => result.map(|(s, peer)| {
                        let s = std::net::TcpStream::from(s);
                        (s, peer.as_socket())
                    }),
                    Err(_would_block) => continue,
                }
                .and_then(|(s, peer)| {
                    let s = tokio::net::TcpStream::from_std(s)?;
                    let _ = s.set_nodelay(true);
                    let local = s.local_addr().ok();
                    Ok(Accepted {
                        client: peer.map(normalise),
                        server: local.map(normalise),
                        stream: Stream::Tcp(s),
                    })
                })
            }
            Listener::Unix(fd) => {
                let mut ready = fd.readable().await?;
                defer_if_over(balance).await;
                match ready.try_io(|l| accept4(l.as_raw_fd())) {
                    Ok(result) => result,
                    Err(_would_block) => continue,
                }
                .and_then(|(s, _)| {
                    let s = tokio::net::UnixStream::from_std(s.into())?;
                    let path = s.local_addr().ok().and_then(|a| {
                        a.as_pathname()
                            .map(|p| p.to_string_lossy().into_owned().into_boxed_str())
                    });
                    Ok(Accepted {
                        client: None,
                        server: None,
                        stream: Stream::Unix(s, path),
                    })
                })
            }
        };
        match accepted {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

async fn defer_if_over(balance: Option<&WorkerSlot>) {
    if let Some(wait) = balance.and_then(WorkerSlot::deferral) {
        tokio::time::sleep(wait).await;
    }
}

/// accept4 with the new socket already non-blocking and close-on-exec (one system
/// call, as tokio's own accept does).
fn accept4(listener: RawFd) -> std::io::Result<(OwnedFd, socket2::SockAddr)> {
    // SAFETY: accept4 writes at most `len` bytes of address into the storage that
    // try_init provides, and returns a new fd that we own.
    unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(
                listener,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(OwnedFd::from_raw_fd(fd))
            }
        })
    }
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
