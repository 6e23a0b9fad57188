//! `wsload HOST:PORT PATH CONNECTIONS SECONDS`: each connection sends a 32-byte text
//! message and waits for its echo, in a loop. Prints one line of JSON: round trips, the
//! elapsed seconds and the p99 round-trip time in milliseconds.
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MESSAGE: &[u8; 32] = b"ferrocorn websocket echo bench!!";

async fn handshake(addr: &str, path: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(s)
}

async fn client(addr: String, path: String, until: Instant) -> std::io::Result<Vec<u32>> {
    let mut s = handshake(&addr, &path).await?;
    // A masked text frame (mask 0: the payload is sent as is, which RFC 6455 allows).
    let mut frame = vec![0x81, 0x80 | MESSAGE.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(MESSAGE);
    let mut latencies = Vec::new();
    let mut reply = [0u8; 2 + 32];
    while Instant::now() < until {
        let t = Instant::now();
        s.write_all(&frame).await?;
        s.read_exact(&mut reply).await?;
        if reply[0] != 0x81 || reply[1] as usize != MESSAGE.len() || &reply[2..] != MESSAGE {
            return Err(std::io::Error::other("unexpected echo frame"));
        }
        latencies.push(t.elapsed().as_micros() as u32);
    }
    let _ = s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).await;
    Ok(latencies)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: wsload HOST:PORT PATH CONNECTIONS SECONDS");
        std::process::exit(2);
    }
    let (addr, path) = (args[1].clone(), args[2].clone());
    let connections: usize = args[3].parse().expect("connections");
    let seconds: f64 = args[4].parse().expect("seconds");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (all, elapsed) = runtime.block_on(async move {
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(client(addr.clone(), path.clone(), until)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            match task.await.expect("client task") {
                Ok(l) => all.extend(l),
                Err(e) => {
                    eprintln!("wsload: {e}");
                    std::process::exit(1);
                }
            }
        }
        (all, start.elapsed().as_secs_f64())
    });
    let mut sorted = all.clone();
    sorted.sort_unstable();
    let p99 = sorted
        .get(sorted.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    println!(
        "{{\"round_trips\": {}, \"seconds\": {:.3}, \"p99_ms\": {:.3}}}",
        all.len(),
        elapsed,
        f64::from(p99) / 1000.0
    );
}
