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
    /// Signals that were ignored when the master was started (`nohup` ignores SIGHUP, a
    /// shell script's `cmd &` ignores SIGINT and SIGQUIT). An ignored disposition
    /// survives exec, so plain `python` started the same way would begin with them
    /// ignored: every worker does too, whatever the master itself does with them.
    pub inherited_ignored: Vec<libc::c_int>,
}

/// The signals this process has ignored, as the kernel reports them (SigIgn in
/// /proc/self/status, which also covers glibc's reserved 32 and 33), less SIGPIPE and
/// SIGXFSZ: Python ignores those itself at startup, and the worker's interpreter does
/// that again. Read before the master installs any handler of its own.
pub fn ignored_at_start() -> Vec<libc::c_int> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    (1..=64)
        .filter(|sig| mask >> (sig - 1) & 1 == 1)
        .filter(|&sig| sig != libc::SIGPIPE && sig != libc::SIGXFSZ)
        .collect()
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
    let ignored = python.inherited_ignored.clone();

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
            reset_signal_state(&ignored);
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

/// Every disposition back to what the master was started with: default, or ignored
/// for `ignored` (see `PythonLaunch::inherited_ignored`), and an empty mask. Handlers
/// can't survive exec, but a disposition the master set to SIG_IGN would (python
/// ignores SIGPIPE and SIGXFSZ in the master), so each one is set explicitly.
unsafe fn reset_signal_state(ignored: &[libc::c_int]) {
    let disposition = |sig| {
        if ignored.contains(&sig) {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        }
    };
    let mut action: libc::sigaction = std::mem::zeroed();
    libc::sigemptyset(&mut action.sa_mask);
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            action.sa_sigaction = disposition(sig);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    // glibc refuses to touch the two real-time signals it reserves (32, 33): set them
    // with the raw system call (the kernel's struct: handler, flags, restorer, mask).
    for sig in [32, 33] {
        let kernel_action = [disposition(sig) as u64, 0, 0, 0];
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            kernel_action.as_ptr(),
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
