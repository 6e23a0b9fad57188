//! Starting a worker as a fresh interpreter (`python -m ferrocorn.worker`), never by
//! fork of a running master: the worker then begins with exactly plain python's state.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// How to start the user's interpreter, as the master's own Python reported it.
#[derive(Clone, Debug)]
pub struct PythonLaunch {
    pub executable: String,
    /// `-X ...`, `-O`, ... so workers run under the same interpreter flags.
    pub interpreter_flags: Vec<String>,
}

pub struct Spawned {
    pub child: Child,
    pub control: UnixStream,
}

/// `env`: variables set in the worker on top of the master's environment (--env-file,
/// --env).
pub fn spawn_worker(
    python: &PythonLaunch,
    listener_fds: &[RawFd],
    env: &[(String, String)],
) -> io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let theirs: OwnedFd = theirs.into();
    let control_fd = theirs.as_raw_fd();
    let mut keep: Vec<RawFd> = listener_fds.to_vec();
    keep.push(control_fd);

    let mut cmd = Command::new(&python.executable);
    cmd.args(&python.interpreter_flags)
        .args(["-m", "ferrocorn.worker", "--control-fd"])
        .arg(control_fd.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .kill_on_drop(false);
    // SAFETY: the closure only makes async-signal-safe calls (sigaction, sigprocmask,
    // fcntl, close_range, prctl), as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            reset_signal_state();
            keep_only(&keep);
            // Workers learn of a dead master by EOF on the control channel; this is the
            // backstop when the master is SIGKILLed. A child the app forks doesn't keep it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok(Spawned {
        child,
        control: ours,
    })
}

/// Every disposition back to default and an empty mask: a disposition set to SIG_IGN
/// (python ignores SIGPIPE and SIGXFSZ in the master) would otherwise survive exec.
unsafe fn reset_signal_state() {
    let mut action: libc::sigaction = std::mem::zeroed();
    action.sa_sigaction = libc::SIG_DFL;
    libc::sigemptyset(&mut action.sa_mask);
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    // glibc refuses to touch the two real-time signals it reserves (32, 33), so an
    // environment that ignores them would leak that into workers: reset them with the
    // raw system call (the kernel's struct: handler, flags, restorer, mask).
    let default_action = [0u64; 4];
    for sig in [32, 33] {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            default_action.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
}

/// Mark every fd from 3 up close-on-exec, then let through only the listeners and the
/// control socket: no master state (pipes, logs, the other workers' channels) leaks.
unsafe fn keep_only(keep: &[RawFd]) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    libc::syscall(
        libc::SYS_close_range,
        3 as libc::c_uint,
        libc::c_uint::MAX,
        CLOSE_RANGE_CLOEXEC,
    );
    for &fd in keep {
        libc::fcntl(fd, libc::F_SETFD, 0);
    }
}
