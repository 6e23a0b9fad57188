//! systemd socket activation: `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, read
//! without libsystemd. The sockets start at fd 3. The variables are removed from the
//! environment (they describe the master's fds, not a worker's or a subprocess's), and
//! every passed fd gets close-on-exec: the spawner hands the chosen ones to workers
//! explicitly, and nothing the app execs inherits them.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

pub struct ActivatedSocket {
    pub fd: OwnedFd,
    /// `FileDescriptorName=` of the socket unit; systemd's default is the unit name.
    pub name: String,
}

/// The sockets systemd passed to this process, or None when it passed none (or passed
/// them to another pid: the variables were inherited, not meant for us). Must run
/// before any other thread exists (it edits the environment).
pub fn take_from_env() -> Option<Vec<ActivatedSocket>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    if pid?.trim().parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let count: RawFd = count?.trim().parse().ok().filter(|&n| n > 0)?;
    let names: Vec<String> = names
        .map(|n| n.split(':').map(String::from).collect())
        .unwrap_or_default();
    let mut sockets = Vec::new();
    for i in 0..count {
        let fd = FIRST_FD + i;
        // SAFETY: systemd passed fds 3..3+LISTEN_FDS to this pid; nothing else owns them.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 {
                continue; // Closed before we got here: nothing to adopt.
            }
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            sockets.push(ActivatedSocket {
                fd: OwnedFd::from_raw_fd(fd),
                name: names
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
            });
        }
    }
    Some(sockets)
}

/// The sockets to serve: all of them, or those named by --systemd-socket-name (the
/// others are closed). An asked-for name that systemd did not pass is an error.
pub fn select(
    sockets: Vec<ActivatedSocket>,
    wanted: &[String],
) -> Result<Vec<ActivatedSocket>, String> {
    if wanted.is_empty() {
        return Ok(sockets);
    }
    for name in wanted {
        if !sockets.iter().any(|s| &s.name == name) {
            let passed: Vec<&str> = sockets.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "--systemd-socket-name {name}: systemd passed no socket of that name \
                 (LISTEN_FDNAMES: {})",
                passed.join(":")
            ));
        }
    }
    Ok(sockets
        .into_iter()
        .filter(|s| wanted.contains(&s.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets(names: &[&str]) -> Vec<ActivatedSocket> {
        names
            .iter()
            .map(|name| ActivatedSocket {
                fd: std::fs::File::open("/dev/null").unwrap().into(),
                name: name.to_string(),
            })
            .collect()
    }

    #[test]
    fn select_by_name() {
        let names = |v: Vec<ActivatedSocket>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(sockets(&["web", "admin"]), &[]).unwrap()),
            ["web", "admin"]
        );
        let admin = select(sockets(&["web", "admin"]), &["admin".into()]).unwrap();
        assert_eq!(names(admin), ["admin"]);
        let err = select(sockets(&["web"]), &["api".into()]).err().unwrap();
        assert!(err.contains("LISTEN_FDNAMES: web"), "{err}");
    }
}
