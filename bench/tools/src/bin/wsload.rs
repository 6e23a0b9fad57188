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
    while Instant::now() < until {
        let t = Instant::now();
        s.write_all(&frame).await?;
        read_echo(&mut s).await?;
        latencies.push(t.elapsed().as_micros() as u32);
    }
    let _ = s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).await;
    Ok(latencies)
}

/// Reads frames until the echo of MESSAGE. A server's ping (ferrocorn and uvicorn ping
/// every 20 s by default) is answered with a pong, as a browser would, so runs longer
/// than that work.
async fn read_echo(s: &mut TcpStream) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await?;
        let len = usize::from(head[1] & 0x7f);
        if head[1] & 0x80 != 0 || len > 125 {
            return Err(std::io::Error::other("unexpected frame from the server"));
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await?;
        match head[0] {
            0x81 if payload == MESSAGE => return Ok(()),
            0x89 => {
                // A masked pong (mask 0) carrying the ping's payload.
                let mut pong = vec![0x8A, 0x80 | len as u8, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                s.write_all(&pong).await?;
            }
            0x8A => {} // an unsolicited pong: ignored, as RFC 6455 says
            _ => return Err(std::io::Error::other("unexpected echo frame")),
        }
    }
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
