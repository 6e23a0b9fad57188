//! The worker's end of the control channel: the boot message, reports to the master,
//! and a thread that turns the master's orders (and a direct SIGTERM) into bridge events.

use crate::asgi::bridge::{Bridge, Event};
use crate::control::{encode, ToMaster, ToWorker};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

pub struct ControlChannel {
    writer: Mutex<UnixStream>,
}

/// Counts served requests and asks the master once for a replacement at the limit.
pub struct Recycle {
    served: std::sync::atomic::AtomicU64,
    limit: u64,
    control: Arc<ControlChannel>,
}

impl Recycle {
    pub fn new(limit: u64, control: Arc<ControlChannel>) -> Self {
        Recycle {
            served: std::sync::atomic::AtomicU64::new(0),
            limit,
            control,
        }
    }

    pub fn request_done(&self) {
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n == self.limit {
            self.control.send(&ToMaster::Recycle);
        }
    }
}

impl ControlChannel {
    pub fn send(&self, msg: &ToMaster) {
        // The master may be gone; the reader thread then starts a stop.
        let _ = self.writer.lock().unwrap().write_all(&encode(msg));
    }
}

/// Takes over the inherited control fd and reads the boot message from it.
pub fn connect(fd: i32) -> std::io::Result<(ControlChannel, UnixStream, ToWorker, Vec<u8>)> {
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // The fd was inherited without CLOEXEC; the app's own children must not get it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut reader = stream.try_clone()?;
    let mut buf = Vec::new();
    let boot = loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            break serde_json::from_slice::<ToWorker>(&line)
                .map_err(|e| std::io::Error::other(format!("bad boot message: {e}")))?;
        }
        let mut chunk = [0u8; 8192];
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("master closed the control channel"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Ok((
        ControlChannel {
            writer: Mutex::new(stream),
        },
        reader,
        boot,
        buf,
    ))
}

/// Watches the control socket and the SIGTERM pipe until the process ends.
pub fn spawn_reader(
    mut reader: UnixStream,
    mut pending: Vec<u8>,
    sigterm: OwnedFd,
    bridge: Arc<Bridge>,
    health: Arc<crate::deploy::health::Health>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ferrocorn-control".into())
        .spawn(move || {
            let mut master_alive = true;
            loop {
                while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    match serde_json::from_slice::<ToWorker>(&line) {
                        Ok(ToWorker::Stop) => {
                            health.set_leaving();
                            bridge.push(Event::Stop { graceful: true });
                        }
                        Ok(ToWorker::Quit) => {
                            health.set_leaving();
                            bridge.push(Event::Stop { graceful: false });
                        }
                        Ok(ToWorker::Leaving) => health.set_leaving(),
                        Ok(ToWorker::DumpStacks) => {
                            if !super::stacks::dump_python_stacks(crate::log::error_fd()) {
                                crate::error!("This interpreter can't dump Python stacks");
                            }
                        }
                        Ok(ToWorker::ReopenLogs) => {
                            if let Err(e) = crate::log::reopen() {
                                crate::error!("Could not reopen the log files: {e}");
                            }
                        }
                        Ok(ToWorker::Boot { .. }) => {}
                        Err(e) => crate::warn!("unreadable control message: {e}"),
                    }
                }
                let mut fds = [
                    libc::pollfd {
                        fd: if master_alive { reader.as_raw_fd() } else { -1 },
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: sigterm.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                    continue; // EINTR
                }
                if fds[1].revents != 0 {
                    let mut sink = [0u8; 64];
                    unsafe { libc::read(sigterm.as_raw_fd(), sink.as_mut_ptr().cast(), 64) };
                    health.set_leaving();
                    bridge.push(Event::Stop { graceful: true });
                }
                if fds[0].revents != 0 {
                    let mut chunk = [0u8; 4096];
                    match reader.read(&mut chunk) {
                        Ok(0) | Err(_) => {
                            // The master is gone: nobody will ever order a stop, so stop.
                            crate::warn!("Master process is gone; stopping worker");
                            master_alive = false;
                            health.set_leaving();
                            bridge.push(Event::Stop { graceful: true });
                        }
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        })?;
    Ok(())
}
