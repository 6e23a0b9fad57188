//! gunicorn's `--bind` addresses: `HOST:PORT`, `[IPv6]:PORT`, `HOST` (port 8000),
//! `unix:PATH` and `fd://N`.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindSpec {
    Tcp { host: String, port: u16 },
    Unix(String),
    Fd(i32),
}

/// gunicorn's port when an address has none.
const DEFAULT_PORT: u16 = 8000;

impl BindSpec {
    pub fn parse(text: &str) -> Result<BindSpec, String> {
        let bad = |why: &str| format!("--bind {text:?}: {why}");
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a path"));
            }
            return Ok(BindSpec::Unix(path.to_string()));
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            return fd
                .parse::<i32>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(BindSpec::Fd)
                .ok_or_else(|| bad("fd:// needs a file descriptor number"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in an IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("expected :PORT after ']'"))?,
                    ),
                ),
            }
        } else if text.matches(':').count() > 1 {
            return Err(bad("write an IPv6 address in brackets: [::1]:8000"));
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| bad("the port must be a number from 0 to 65535"))?,
        };
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("the host must be an IP address or localhost"));
        }
        Ok(BindSpec::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> BindSpec {
        BindSpec::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn gunicorn_forms() {
        assert_eq!(
            BindSpec::parse("127.0.0.1:9000"),
            Ok(tcp("127.0.0.1", 9000))
        );
        assert_eq!(BindSpec::parse("[::1]:9000"), Ok(tcp("::1", 9000)));
        assert_eq!(BindSpec::parse("[::1]"), Ok(tcp("::1", 8000)));
        assert_eq!(BindSpec::parse("0.0.0.0"), Ok(tcp("0.0.0.0", 8000)));
        assert_eq!(BindSpec::parse(":9000"), Ok(tcp("0.0.0.0", 9000)));
        assert_eq!(BindSpec::parse("localhost:1"), Ok(tcp("localhost", 1)));
        assert_eq!(
            BindSpec::parse("unix:/tmp/a.sock"),
            Ok(BindSpec::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(BindSpec::parse("fd://3"), Ok(BindSpec::Fd(3)));
    }

    #[test]
    fn bad_forms_name_the_problem() {
        for bad in [
            "::1:80",
            "[::1:80",
            "1.2.3.4:x",
            "1.2.3.4:70000",
            "unix:",
            "fd://x",
            "example.com:80",
        ] {
            let err = BindSpec::parse(bad).unwrap_err();
            assert!(err.starts_with("--bind"), "{err}");
        }
    }
}
