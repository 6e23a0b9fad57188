//! A process's resident set size, read by the master from /proc (Linux). Sampling a
//! few workers every couple of seconds costs one small file read each.

/// Resident memory of `pid` in bytes; None if the process is gone or /proc is not there.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:` line of /proc/PID/status, in bytes (the kernel writes kB).
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_line() {
        let status = "Name:\tpython\nVmPeak:\t  1000 kB\nVmRSS:\t   53248 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(53248 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let rss = resident_bytes(std::process::id()).expect("/proc is mounted");
        assert!(rss > 0);
    }
}
