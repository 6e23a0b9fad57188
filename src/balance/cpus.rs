//! `--workers auto`: one worker per CPU this process may actually use. A container
//! limited to 2 CPUs on a 64-core host must get 2 workers, not 64: the limit is the
//! cgroup CPU quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`)
//! of this cgroup and every ancestor, and the affinity mask (taskset, cpuset). The
//! smaller wins; a fractional quota is rounded up, so a quota of 1.5 CPUs is used whole
//! by 2 workers (rounding down would leave half a CPU idle).
//!
//! `FERROCORN_CGROUP_ROOT` names a directory read in place of the cgroup v2 mount, for
//! tests on machines where `cpu.max` can't be set.

use std::path::{Path, PathBuf};

/// How many workers "auto" means here, and a sentence saying where that came from.
pub fn auto_workers() -> (usize, String) {
    let affinity = affinity_cpus();
    let quota = cgroup_quota();
    let affinity_text = match affinity {
        Some(n) => format!("the affinity mask allows {n} CPU(s)"),
        None => "the affinity mask could not be read".to_string(),
    };
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut count = affinity.unwrap_or(online);
    let mut source = affinity_text.clone();
    match &quota {
        Some(q) => {
            let cpus = q.cpus();
            if cpus < count {
                count = cpus;
                source = format!("{}; {affinity_text}", q.describe());
            } else {
                source = format!("{affinity_text}; {}", q.describe());
            }
        }
        None => source.push_str("; no cgroup CPU quota"),
    }
    (count.max(1), source)
}

/// A CPU quota: `quota_us` of CPU time every `period_us`, read from `file`.
#[derive(Debug, Clone)]
pub struct Quota {
    quota_us: u64,
    period_us: u64,
    file: PathBuf,
}

impl Quota {
    pub fn cpus(&self) -> usize {
        (self.quota_us.div_ceil(self.period_us.max(1)) as usize).max(1)
    }

    fn describe(&self) -> String {
        format!(
            "the cgroup CPU quota {} / {} µs ({}) allows {} CPU(s)",
            self.quota_us,
            self.period_us,
            self.file.display(),
            self.cpus()
        )
    }

    fn tighter(self, other: Option<Quota>) -> Quota {
        match other {
            Some(o) if o.quota_us * self.period_us < self.quota_us * o.period_us => o,
            _ => self,
        }
    }
}

fn affinity_cpus() -> Option<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    ok.then(|| unsafe { libc::CPU_COUNT(&set) } as usize)
        .filter(|n| *n > 0)
}

/// The tightest quota of this process's cgroup and its ancestors.
fn cgroup_quota() -> Option<Quota> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Ok(root) = std::env::var("FERROCORN_CGROUP_ROOT") {
        return v2_quota(Path::new(&root), v2_path(&membership)?);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v2 = v2_path(&membership)
        .zip(mount_point(&mounts, |fstype, _| fstype == "cgroup2"))
        .and_then(|(path, root)| v2_quota(&root, path));
    let v1 = v1_path(&membership)
        .zip(mount_point(&mounts, |fstype, options| {
            fstype == "cgroup" && options.split(',').any(|o| o == "cpu")
        }))
        .and_then(|(path, root)| v1_quota(&root, path));
    match (v2, v1) {
        (Some(a), b) => Some(a.tighter(b)),
        (None, b) => b,
    }
}

/// "0::/path" in /proc/self/cgroup.
fn v2_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|l| l.strip_prefix("0::"))
}

/// "N:cpu,cpuacct:/path" in /proc/self/cgroup.
fn v1_path(membership: &str) -> Option<&str> {
    membership.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })
}

/// The mount point of the first mount whose type and super options match.
fn mount_point(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next()?, right.next()?, right.next()?);
        wanted(fstype, options).then(|| PathBuf::from(mount_point))
    })
}

/// Walks from this cgroup up to the mount's root: a limit set on any ancestor applies.
/// (A cgroup namespace shows the container's own cgroup as "/", the mount's root.)
fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut dir = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs
}

fn v2_quota(root: &Path, path: &str) -> Option<Quota> {
    let mut best: Option<Quota> = None;
    for dir in ancestors(root, path) {
        let file = dir.join("cpu.max");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(q) = parse_cpu_max(&text, file) {
            best = Some(q.tighter(best));
        }
    }
    best
}

/// cgroup v2 `cpu.max`: "max 100000" (no limit) or "200000 100000".
fn parse_cpu_max(text: &str, file: PathBuf) -> Option<Quota> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?.parse().ok()?;
    let period = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (period > 0).then_some(Quota {
        quota_us: quota,
        period_us: period,
        file,
    })
}

fn v1_quota(root: &Path, path: &str) -> Option<Quota> {
    let mut best: Option<Quota> = None;
    for dir in ancestors(root, path) {
        let read = |name: &str| -> Option<i64> {
            std::fs::read_to_string(dir.join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let (Some(quota), Some(period)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
        else {
            continue;
        };
        // -1: no limit.
        if quota > 0 && period > 0 {
            let q = Quota {
                quota_us: quota as u64,
                period_us: period as u64,
                file: dir.join("cpu.cfs_quota_us"),
            };
            best = Some(q.tighter(best));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_read_and_rounded_up() {
        let q = |t: &str| parse_cpu_max(t, PathBuf::from("cpu.max")).map(|q| q.cpus());
        assert_eq!(q("200000 100000\n"), Some(2));
        assert_eq!(q("150000 100000\n"), Some(2));
        assert_eq!(q("50000 100000\n"), Some(1));
        assert_eq!(q("max 100000\n"), None);
    }

    #[test]
    fn the_cgroup_paths_are_found() {
        let membership = "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/system.slice/app\n";
        assert_eq!(v2_path(membership), Some("/system.slice/app"));
        assert_eq!(v1_path(membership), Some("/docker/abc"));
        let mounts = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            mount_point(mounts, |t, _| t == "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mount_point(mounts, |t, o| t == "cgroup"
                && o.split(',').any(|x| x == "cpu")),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn an_ancestor_limit_applies() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-cpus-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/cpu.max"), "300000 100000\n").unwrap();
        std::fs::write(dir.join("a/b/cpu.max"), "max 100000\n").unwrap();
        assert_eq!(v2_quota(&dir, "/a/b").map(|q| q.cpus()), Some(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
