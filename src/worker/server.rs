//! The worker's I/O thread: a tokio runtime that accepts on the inherited listeners,
//! runs hyper on each connection, enforces the keep-alive idle timeout, and drains
//! connections on a graceful stop. It never touches Python.

use crate::asgi::exchange::ConnInfo;
use crate::control::ListenerSpec;
use crate::http1::conn::{self, ConnShared};
use crate::worker::bridge::Event;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
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

pub fn start(listeners: &[ListenerSpec], shared: Arc<ConnShared>) -> std::io::Result<ServerHandle> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

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
                serve(bound, shared, shutdown_rx).await;
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

async fn serve(listeners: Vec<Listener>, shared: Arc<ConnShared>, shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Connections::default());
    let mut accepting = Vec::new();
    for listener in listeners {
        accepting.push(tokio::spawn(accept_loop(
            listener,
            shared.clone(),
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
    shared: Arc<ConnShared>,
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
            Ok((_, stream)) if over_limit(&shared, &connections) => {
                // A clean refusal, not a reset: the client learns why.
                crate::warn!("Refusing a connection: --worker-connections reached");
                let shared = shared.clone();
                tokio::spawn(async move {
                    let status = http::StatusCode::SERVICE_UNAVAILABLE;
                    match stream {
                        Stream::Tcp(s) => conn::reject_and_close(s, status, &shared).await,
                        Stream::Unix(s) => conn::reject_and_close(s, status, &shared).await,
                    }
                });
            }
            Ok((conn, stream)) => {
                connections.count.fetch_add(1, Ordering::AcqRel);
                let guard = ConnGuard(connections.clone());
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    match stream {
                        Stream::Tcp(s) => conn::serve(s, shared, conn, shutdown).await,
                        Stream::Unix(s) => conn::serve(s, shared, conn, shutdown).await,
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

fn over_limit(shared: &ConnShared, connections: &Connections) -> bool {
    shared
        .max_connections
        .is_some_and(|max| connections.count.load(Ordering::Acquire) >= max)
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
