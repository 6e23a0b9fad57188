//! The master's metrics listener: a small HTTP/1.1 responder for GET /metrics on the
//! master's own runtime. One request per connection (`connection: close`); scrapers
//! open a connection per scrape anyway, and the master stays simple.

use super::fleet::Fleet;
use super::options::MetricsOptions;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request head bigger than this is not a scrape.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds --metrics-address:--metrics-port (before the workers start, so a bad address
/// stops the server at once, with one line).
pub fn bind(options: &MetricsOptions) -> Result<TcpListener, String> {
    let what = format!("{}:{}", options.metrics_address, options.metrics_port);
    let addrs: Vec<SocketAddr> = (options.metrics_address.as_str(), options.metrics_port)
        .to_socket_addrs()
        .map_err(|e| format!("--metrics-address {}: {e}", options.metrics_address))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("metrics listener {what}: {e}"))?;
                // The workers are spawned with only the fds they need; this one is
                // close-on-exec already (std opens sockets with CLOEXEC).
                return Ok(listener);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("Could not bind the metrics listener to {what}: {e}"),
        None => format!("--metrics-address {what}: no address"),
    })
}

/// Accepts scrapes until the master exits.
pub async fn serve(listener: TcpListener, fleet: Arc<Mutex<Fleet>>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::error!("Metrics listener: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let fleet = fleet.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT, answer(stream, fleet)).await;
                });
            }
            Err(e) => {
                crate::warn!("Metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: tokio::net::TcpStream, fleet: Arc<Mutex<Fleet>>) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = stream
                .write_all(&response("431 Request Header Fields Too Large", "", ""))
                .await;
            return;
        }
    }
    let out = reply(&head, || {
        fleet
            .lock()
            .unwrap()
            .render(crate::recycling::rss::resident_bytes)
    });
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// The answer to a request head; `render` makes the exposition.
fn reply(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            let mut r = response("200 OK", CONTENT_TYPE, &render());
            if method == b"HEAD" {
                let end = r
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(r.len(), |p| p + 4);
                r.truncate(end);
            }
            r
        }
        (b"GET" | b"HEAD", _) => response("404 Not Found", "text/plain", "Not Found\n"),
        _ => response(
            "405 Method Not Allowed",
            "text/plain",
            "Method Not Allowed\n",
        ),
    }
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("content-type: {content_type}\r\n"));
    }
    if status.starts_with("405") {
        out.push_str("allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(head: &str) -> String {
        String::from_utf8(reply(head.as_bytes(), || "a 1\n".into())).unwrap()
    }

    #[test]
    fn answers_metrics_and_nothing_else() {
        let ok = text("GET /metrics?x=1 HTTP/1.1\r\nhost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(ok.contains("content-length: 4\r\n"));
        assert!(ok.ends_with("\r\n\r\na 1\n"));
        let head = text("HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.contains("content-length: 4\r\n") && head.ends_with("\r\n\r\n"));
        assert!(text("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        let post = text("POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("allow: GET, HEAD\r\n"));
    }
}
