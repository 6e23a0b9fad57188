//! The one signal a worker handles itself: SIGTERM sent straight to its pid (systemd's
//! KillMode=control-group, `kill <worker pid>`) starts a graceful stop instead of
//! killing in-flight requests.
//!
//! The handler lives at the C level and only writes a byte to a pipe read by the
//! control thread; Python's signal module and the event loop never see it. A child
//! that the app forks gets SIGTERM's default disposition back from a `pthread_atfork`
//! hook, so it dies on SIGTERM exactly as under plain python (or keeps ignoring it, when
//! the worker was started with SIGTERM ignored), and the byte can never reach this
//! worker from a child.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static READ_FD: AtomicI32 = AtomicI32::new(-1);
/// SIGTERM's disposition when the worker started (SIG_DFL, or SIG_IGN when the master
/// was started with it ignored): what a forked child gets back.
static STARTED_WITH: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);

extern "C" fn on_sigterm(_: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // write(2) is async-signal-safe; a full pipe already holds a stop request.
        unsafe { libc::write(fd, b"T".as_ptr().cast(), 1) };
    }
}

extern "C" fn after_fork_in_child() {
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = STARTED_WITH.load(Ordering::Relaxed);
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        for fd in [&WRITE_FD, &READ_FD] {
            let raw = fd.swap(-1, Ordering::Relaxed);
            if raw >= 0 {
                libc::close(raw);
            }
        }
    }
}

/// Installs the handler; returns the pipe end the control thread watches.
pub fn install_sigterm() -> std::io::Result<OwnedFd> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    READ_FD.store(fds[0], Ordering::Relaxed);
    WRITE_FD.store(fds[1], Ordering::Relaxed);
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGTERM, &action, &mut previous) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if previous.sa_sigaction == libc::SIG_IGN {
            STARTED_WITH.store(libc::SIG_IGN, Ordering::Relaxed);
        }
        Ok(OwnedFd::from_raw_fd(fds[0]))
    }
}
