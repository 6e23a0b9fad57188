//! Reading a PROXY header right after accept, before TLS or HTTP see the connection.
//!
//! The header is read without taking a byte more than it has: the socket is peeked
//! (recv with MSG_PEEK) until the header's length is known, then exactly that many
//! bytes are read. Whatever follows stays in the socket for rustls or the HTTP parser,
//! so neither needs to be told about bytes read ahead.
//!
//! Peeking doesn't consume, so the socket stays readable; when a peek shows nothing
//! new, the closure reports WouldBlock, which makes tokio clear the readiness and wait
//! for the next arrival instead of spinning.

use super::options::ProxyProtocolMode;
use super::protocol::{self, Detected, Header, Length};
use super::trust::TrustList;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};

/// --proxy-protocol and --proxy-allow-from, per worker.
#[derive(Debug)]
pub struct ProxyProtocol {
    pub mode: ProxyProtocolMode,
    pub allow: TrustList,
    /// --timeout-request-header: the whole header must be there by then.
    pub timeout: Duration,
    /// --timeout-keep-alive: a connection that sends nothing at all is closed by then,
    /// as an idle HTTP connection is (and a graceful stop isn't held up longer).
    pub idle: Duration,
}

/// A socket that can be peeked: plain TCP and Unix streams.
pub trait Peek: AsyncRead + AsRawFd + Unpin {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! impl_peek {
    ($t:ty) => {
        impl Peek for $t {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$t>::try_io(self, interest, f)
            }
        }
    };
}

impl_peek!(tokio::net::TcpStream);
impl_peek!(tokio::net::UnixStream);

/// What to do with a connection once its first bytes were looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it with the socket's own address.
    Keep,
    /// Serve it as coming from this client (the PROXY header's source).
    Client(SocketAddr),
    /// Close it; the reason is logged once.
    Close(String),
    /// The peer went away or the header didn't come in time: close without a word
    /// above debug (as a slow or silent HTTP client is treated).
    Gone(&'static str),
}

impl ProxyProtocol {
    /// Look for a PROXY header on a connection from `peer` (None: a Unix socket peer,
    /// `unix_path` its listener). Only the header is consumed.
    pub async fn accept<S: Peek>(
        &self,
        stream: &mut S,
        peer: Option<SocketAddr>,
        unix_path: Option<&str>,
    ) -> Verdict {
        let allowed = self.allow.trusts_peer(peer, unix_path);
        match tokio::time::timeout(self.timeout, self.read(stream, allowed)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::Gone("no complete PROXY header in time"),
        }
    }

    async fn read<S: Peek>(&self, stream: &mut S, allowed: bool) -> Verdict {
        let mut peeked = [0u8; protocol::V1_MAX];
        let mut seen = 0;
        loop {
            let peek = peek_more(stream, &mut peeked, seen);
            let peeked_now = if seen == 0 {
                match tokio::time::timeout(self.idle, peek).await {
                    Ok(result) => result,
                    Err(_) => return Verdict::Gone("nothing sent"),
                }
            } else {
                peek.await
            };
            let n = match peeked_now {
                Ok(0) => return Verdict::Gone("closed before sending anything"),
                Ok(n) => n,
                Err(_) => return Verdict::Gone("read error"),
            };
            seen = n;
            let bytes = &peeked[..n];
            let detected = protocol::detect(bytes);
            if !allowed {
                return match detected {
                    Detected::NeedMore => continue,
                    Detected::None => Verdict::Keep,
                    // Only peers we trust may say who the client is.
                    Detected::V1 | Detected::V2 => {
                        Verdict::Close("PROXY header from a peer not in --proxy-allow-from".into())
                    }
                };
            }
            let length = match (detected, self.mode) {
                (Detected::NeedMore, _) => continue,
                (Detected::None, ProxyProtocolMode::Auto) => return Verdict::Keep,
                (Detected::None, _) => return Verdict::Close("no PROXY header".into()),
                (Detected::V1, ProxyProtocolMode::V2) => {
                    return Verdict::Close("PROXY v1 header, but --proxy-protocol v2".into())
                }
                (Detected::V2, ProxyProtocolMode::V1) => {
                    return Verdict::Close("PROXY v2 header, but --proxy-protocol v1".into())
                }
                (Detected::V1, _) => protocol::v1_length(bytes),
                (Detected::V2, _) => protocol::v2_length(bytes),
            };
            let length = match length {
                Ok(Length::NeedMore) if n < peeked.len() => continue,
                // A full peek buffer always has a length; never wait on a full buffer.
                Ok(Length::NeedMore) => return Verdict::Close("PROXY header too long".into()),
                Ok(Length::Complete(len)) => len,
                Err(why) => return Verdict::Close(why),
            };
            let mut header = vec![0u8; length];
            if stream.read_exact(&mut header).await.is_err() {
                return Verdict::Gone("closed inside the PROXY header");
            }
            let parsed = match detected {
                Detected::V1 => protocol::parse_v1(&header),
                _ => protocol::parse_v2(&header),
            };
            return match parsed {
                Ok(Header::Proxied { source, .. }) => Verdict::Client(normalise(source)),
                Ok(Header::Local) => Verdict::Keep,
                Err(why) => Verdict::Close(why),
            };
        }
    }
}

/// Peek into `buf` until it holds more than the `seen` bytes it held last time (or is
/// full). Ok(0): the peer closed.
async fn peek_more<S: Peek>(stream: &S, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    let fd = stream.as_raw_fd();
    loop {
        poll_fn(|cx| stream.poll_read_ready(cx)).await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            // SAFETY: buf is valid for buf.len() bytes; fd is the stream's open socket.
            let n = unsafe {
                libc::recv(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n != 0 && n == seen && n < buf.len() {
                // Nothing new: clear readiness and wait for the next arrival.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match peeked {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            result => return result,
        }
    }
}

/// As the accept loop reports addresses: IPv4-mapped IPv6 as plain IPv4.
fn normalise(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(super::trust::canonical(addr.ip()), addr.port())
}
