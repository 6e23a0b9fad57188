//! `sd_notify` without libsystemd: one datagram per message to `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading '@').
//!
//! The master sends `READY=1` once every worker is ready, `RELOADING=1` with
//! `MONOTONIC_USEC=` on HUP and `READY=1` when the new workers serve, `STOPPING=1`,
//! `STATUS=` lines with the worker count, and `WATCHDOG=1` every half `$WATCHDOG_USEC`
//! while the workers' event loops send their heartbeats. The variables are removed
//! from the environment at startup: they belong to the master (a worker or a
//! subprocess of the app that notified would confuse systemd; plain-python contract).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// Half of `$WATCHDOG_USEC`, when the watchdog is on and meant for us.
    watchdog_every: Option<Duration>,
}

impl Notifier {
    /// Reads and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Must run
    /// before any other thread exists (it edits the environment).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let path = path?.into_string().ok()?;
        let address = match address_of(&path) {
            Ok(a) => a,
            Err(e) => {
                crate::warn!("NOTIFY_SOCKET={path:?} is not usable ({e}); not notifying systemd");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                crate::warn!("Could not open a socket to notify systemd: {e}");
                return None;
            }
        };
        let ours = watchdog_pid.is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog_every = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u) / 2);
        Some(Notifier {
            socket,
            address,
            watchdog_every,
        })
    }

    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// One message: newline-separated `KEY=value` assignments.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            crate::debug!("Could not notify systemd ({message:?}): {e}");
        }
    }
}

fn address_of(path: &str) -> io::Result<SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return SocketAddr::from_abstract_name(name.as_bytes());
    }
    if !path.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name",
        ));
    }
    SocketAddr::from_pathname(path)
}

/// `MONOTONIC_USEC=` wants CLOCK_MONOTONIC in microseconds, as systemd reads it.
pub fn monotonic_usec() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}
