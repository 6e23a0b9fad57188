//! Startup advice: a keep-alive timeout shorter than the balancer's idle timeout makes
//! the server close connections the balancer still thinks are reusable, and the
//! balancer then sends a request into a closing socket (a 502 for the client). Only
//! said when forwarded headers are trusted from beyond loopback, i.e. when a balancer
//! on another host is the likely client.

use crate::config::Config;

/// The shortest common idle timeout of balancers in front of app servers: AWS ALB
/// (60 s), nginx `keepalive_timeout` for upstreams (60 s), GCP HTTP(S) LB (600 s).
pub const BALANCER_IDLE_SECONDS: f64 = 60.0;

/// The warning to log once at startup, if any.
pub fn keep_alive_warning(config: &Config) -> Option<String> {
    let proxy = &config.proxy;
    if !proxy.proxy_headers_enabled() || config.timeout_keep_alive > BALANCER_IDLE_SECONDS {
        return None;
    }
    let list = crate::proxy::trust::TrustList::parse(&proxy.forwarded_allow_ips).ok()?;
    if !trusts_beyond_loopback(&list, &proxy.forwarded_allow_ips) {
        return None;
    }
    Some(format!(
        "--timeout-keep-alive {} is not longer than common balancer idle timeouts \
         (AWS ALB and nginx upstream keepalive_timeout: {BALANCER_IDLE_SECONDS} s): set it \
         above the balancer's, or the balancer's below it (docs/deployment.md)",
        config.timeout_keep_alive
    ))
}

fn trusts_beyond_loopback(list: &crate::proxy::trust::TrustList, text: &str) -> bool {
    if list.trusts_everything() {
        return true;
    }
    // Any entry that is not a loopback address or network (or "unix:").
    text.split(',').map(str::trim).any(|entry| {
        if entry.is_empty() || entry.eq_ignore_ascii_case("unix:") {
            return false;
        }
        let address = entry.split('/').next().unwrap_or(entry);
        match crate::proxy::trust::parse_ip(address) {
            Some(ip) => !ip.is_loopback(),
            None => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn warned(args: &[&str]) -> bool {
        let argv = [&["ferrocorn", "main:app"], args].concat();
        keep_alive_warning(&Config::try_parse_from(argv).unwrap()).is_some()
    }

    #[test]
    fn only_behind_a_balancer_with_a_short_keep_alive() {
        assert!(!warned(&[]));
        assert!(!warned(&[
            "--forwarded-allow-ips",
            "127.0.0.0/8,::1/128,unix:"
        ]));
        assert!(warned(&["--forwarded-allow-ips", "10.0.0.0/8"]));
        assert!(warned(&["--forwarded-allow-ips", "*"]));
        assert!(warned(&["--forwarded-allow-ips", "127.0.0.1,fd00::/8"]));
        assert!(!warned(&[
            "--forwarded-allow-ips",
            "*",
            "--no-proxy-headers"
        ]));
        assert!(warned(&[
            "--forwarded-allow-ips",
            "*",
            "--timeout-keep-alive",
            "60"
        ]));
        assert!(!warned(&[
            "--forwarded-allow-ips",
            "*",
            "--timeout-keep-alive",
            "61"
        ]));
    }
}
