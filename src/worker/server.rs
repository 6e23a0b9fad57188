//! The worker's I/O thread: a tokio runtime that accepts on the inherited listeners,
//! runs hyper on each connection, enforces the keep-alive idle timeout, and drains
//! connections on a graceful stop. It never touches Python.

use crate::asgi::exchange::ConnInfo;
use crate::config::Config;
use crate::control::ListenerSpec;
use crate::http::io::{Activity, Tracked};
use crate::http::service::{AsgiService, WorkerShared};
use crate::worker::bridge::Event;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

/// Orders from the Python side to the I/O thread.
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
}

impl ServerHandle {
    /// Stop accepting and close connections once their current request is done.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
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

pub fn start(
    config: &Config,
    listeners: &[ListenerSpec],
    shared: Arc<WorkerShared>,
) -> std::io::Result<ServerHandle> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs_f64(config.timeout_request_header))
        .max_headers(config.limit_request_fields)
        .auto_date_header(config.date_header_enabled());
    // Memory for one request head is bounded by the limits the app server enforces.
    let head_budget = config.limit_request_line
        + config.limit_request_fields * (config.limit_request_field_size + 4)
        + 4096;
    builder.max_buf_size(head_budget.max(8192));
    let builder = Arc::new(builder);
    let keep_alive = Duration::from_secs_f64(config.timeout_keep_alive);

    // Sockets must be registered with the runtime from inside it.
    let listeners: Vec<ListenerSpec> = listeners.to_vec();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("ferrocorn-io".into())
        .spawn(move || {
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
                serve(bound, shared, builder, keep_alive, shutdown_rx).await;
            })
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("I/O thread failed to start"))??;
    Ok(ServerHandle {
        shutdown: shutdown_tx,
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

async fn serve(
    listeners: Vec<Listener>,
    shared: Arc<WorkerShared>,
    builder: Arc<http1::Builder>,
    keep_alive: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Connections::default());
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            builder.clone(),
            keep_alive,
            shutdown.clone(),
            connections.clone(),
        )));
    }
    for task in accepting {
        let _ = task.await;
    }
    // Accepting has stopped (graceful stop): wait for the open connections to finish.
    loop {
        let closed = connections.all_closed.notified();
        if connections.count.load(Ordering::Acquire) == 0 {
            break;
        }
        closed.await;
    }
    shared.bridge.push(Event::Drained);
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<WorkerShared>,
    builder: Arc<http1::Builder>,
    keep_alive: Duration,
    mut shutdown: watch::Receiver<bool>,
    connections: Arc<Connections>,
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
            Ok((conn, stream)) => {
                connections.count.fetch_add(1, Ordering::AcqRel);
                let guard = ConnGuard(connections.clone());
                let service = AsgiService {
                    shared: shared.clone(),
                    conn,
                };
                let builder = builder.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    match stream {
                        Stream::Tcp(s) => {
                            serve_connection(s, service, &builder, keep_alive, shutdown).await
                        }
                        Stream::Unix(s) => {
                            serve_connection(s, service, &builder, keep_alive, shutdown).await
                        }
                    }
                    drop(guard);
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

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Arc<ConnInfo>, Stream)> {
    let (client, server, stream) = match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr().ok();
            (Some(normalise(peer)), local.map(normalise), Stream::Tcp(s))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            (None, None, Stream::Unix(s))
        }
    };
    let info = ConnInfo {
        client,
        server,
        py_client: OnceLock::new(),
        py_server: OnceLock::new(),
        activity: Arc::new(Activity::default()),
    };
    Ok((Arc::new(info), stream))
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

async fn serve_connection<S>(
    stream: S,
    service: AsgiService,
    builder: &http1::Builder,
    keep_alive: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = service.conn.activity.clone();
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        if !closing && *shutdown.borrow() {
            closing = true;
            conn.as_mut().graceful_shutdown();
        }
        // While a request is active the idle timer is off; re-check every keep-alive
        // period so it starts again once the request is done.
        let idle_at = activity
            .idle_deadline(keep_alive)
            .unwrap_or_else(|| tokio::time::Instant::now() + keep_alive);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    crate::debug!("connection closed with error: {e}");
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                // A dropped sender also means stop.
                if changed.is_err() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.idle_deadline(keep_alive).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
