//! Binding the listening sockets. The master binds them once; every worker serves the
//! same sockets (inherited fds), so a worker restart never drops queued connections.

use crate::cli::BindSpec;
use crate::config::Config;
use crate::control::ListenerSpec;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Listener {
    /// Keeps the socket open for the master's lifetime (workers inherit it).
    pub socket: OwnedFd,
    pub unix: bool,
    /// How the startup log names it, e.g. "http://127.0.0.1:8000".
    pub display: String,
    /// Unix socket path to remove when the master exits.
    pub unix_path: Option<String>,
}

impl Listener {
    pub fn spec(&self) -> ListenerSpec {
        ListenerSpec {
            fd: self.socket.as_raw_fd(),
            unix: self.unix,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub fn bind(config: &Config) -> io::Result<Vec<Listener>> {
    if !config.cli.bind.is_empty() {
        // gunicorn's --bind, each one a listener every worker serves.
        return config
            .cli
            .bind
            .iter()
            .map(|spec| match BindSpec::parse(spec) {
                Ok(BindSpec::Tcp { host, port }) => bind_tcp(&host, port, config.backlog),
                Ok(BindSpec::Unix(path)) => bind_unix(&path, config.backlog),
                Ok(BindSpec::Fd(fd)) => inherited(fd),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
            })
            .collect();
    }
    if let Some(fd) = config.fd {
        return Ok(vec![inherited(fd)?]);
    }
    if let Some(path) = &config.uds {
        return Ok(vec![bind_unix(path, config.backlog)?]);
    }
    Ok(vec![bind_tcp(&config.host, config.port, config.backlog)?])
}

fn bind_tcp(host: &str, port: u16, backlog: i32) -> io::Result<Listener> {
    let host_trimmed = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host_trimmed {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => other.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid host address {host:?}"),
            )
        })?,
    };
    let addr = SocketAddr::new(ip, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .expect("a TCP socket has an IP address");
    let display = match bound {
        SocketAddr::V4(a) => format!("http://{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
    };
    Ok(Listener {
        socket: socket.into(),
        unix: false,
        display,
        unix_path: None,
    })
}

fn bind_unix(path: &str, backlog: i32) -> io::Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    // A stale socket file from a previous run would make bind fail; remove it, but
    // never remove something that isn't a socket.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    // As uvicorn does: any local user may connect; restrict with the directory's mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(Listener {
        socket: socket.into(),
        unix: true,
        display: format!("unix socket {path}"),
        unix_path: Some(path.to_string()),
    })
}

/// systemd socket activation (src/deploy/activation.rs): each passed socket must be a
/// listening stream socket.
pub fn adopt_activated(
    sockets: Vec<crate::deploy::activation::ActivatedSocket>,
) -> io::Result<Vec<Listener>> {
    use std::os::fd::IntoRawFd;
    if sockets.is_empty() {
        return Err(io::Error::other("systemd passed no socket to serve on"));
    }
    sockets
        .into_iter()
        .map(|s| {
            let name = s.name;
            let fd = s.fd.into_raw_fd();
            let mut accepting: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let ok = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ACCEPTCONN,
                    (&mut accepting as *mut libc::c_int).cast(),
                    &mut len,
                )
            } == 0;
            if !ok || accepting == 0 {
                unsafe { libc::close(fd) };
                return Err(io::Error::other(format!(
                    "the socket systemd passed as {name:?} (fd {fd}) is not a listening \
                     stream socket (ListenStream= is needed)"
                )));
            }
            let mut listener = inherited(fd)?;
            if listener.unix {
                listener.display = match unix_path_of(&listener.socket) {
                    Some(path) => format!("unix socket {path}"),
                    None => format!("systemd socket {name:?}"),
                };
            }
            Ok(listener)
        })
        .collect()
}

fn unix_path_of(socket: &OwnedFd) -> Option<String> {
    let sock = socket2::SockRef::from(socket);
    let addr = sock.local_addr().ok()?;
    addr.as_pathname().map(|p| p.display().to_string())
}

fn inherited(fd: i32) -> io::Result<Listener> {
    // SAFETY: the user told us this fd is ours to serve on; we check it is a socket.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    let addr = socket
        .local_addr()
        .map_err(|e| io::Error::new(e.kind(), format!("--fd {fd} is not a usable socket: {e}")))?;
    // The master must keep it away from anything it execs except workers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    let (unix, display) = match addr.as_socket() {
        Some(SocketAddr::V4(a)) => (false, format!("http://{}:{}", a.ip(), a.port())),
        Some(SocketAddr::V6(a)) => (false, format!("http://[{}]:{}", a.ip(), a.port())),
        None => (true, format!("socket fd {fd}")),
    };
    Ok(Listener {
        socket: socket.into(),
        unix,
        display,
        unix_path: None,
    })
}
