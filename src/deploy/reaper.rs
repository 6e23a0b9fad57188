//! PID 1 in a container: the kernel hands every orphaned process of the namespace to
//! PID 1, and only PID 1 can reap it. Without an init (`docker run` without `--init`,
//! a Kubernetes pod without `shareProcessNamespace`) that is the master, so it reaps.
//!
//! It reaps only processes that are not its workers: a worker's exit status belongs to
//! the worker's own waiter (the arbiter), and a worker's children are never touched (they
//! are the worker's until the worker dies; only then does the kernel reparent them).
//! `waitid(P_ALL, WNOWAIT)` looks at a zombie child without reaping it; it is reaped by
//! its own pid only when it is not a worker. Outside PID 1 the master never reaps (no
//! PR_SET_CHILD_SUBREAPER): there an init does that job, and adopting a host's orphans
//! would make the master the owner of processes it knows nothing about.

/// True when this process is its pid namespace's init.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Reaps every exited child that isn't a worker (`is_worker`); returns how many. Stops
/// at a worker's zombie: its waiter reaps it, and the next call goes on from there.
pub fn reap_orphans(is_worker: impl Fn(u32) -> bool) -> usize {
    let mut reaped = 0;
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let peeked = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if peeked != 0 {
            return reaped; // ECHILD: no children at all.
        }
        let pid = unsafe { info.si_pid() };
        if pid <= 0 || is_worker(pid as u32) {
            return reaped;
        }
        let mut status = 0;
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
        } else {
            return reaped;
        }
    }
}
