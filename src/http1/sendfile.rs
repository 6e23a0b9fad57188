//! `sendfile(2)` for pathsend responses on sockets the kernel can write a file to
//! directly (plain TCP and Unix sockets): the file's pages go from the page cache to
//! the socket without passing through user space. The socket stays nonblocking; when
//! its buffer is full we wait for writability through tokio, like any other write.
//! A TLS stream can't: its bytes must be encrypted by us, so it reports `None`.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::task::{Context, Poll};
use tokio::io::Interest;

/// Bytes handed to one sendfile call at most, so one response can't hold the I/O
/// thread for long when the socket keeps taking data.
const SENDFILE_MAX: usize = 1024 * 1024;

/// A connection's socket, as far as pathsend is concerned.
pub trait SendFile {
    /// This stream can take a file with sendfile(2).
    fn can_sendfile(&self) -> bool;

    /// Send up to `count` bytes of `file` from `offset` straight to the socket.
    /// `None`: this stream can't (TLS); `Some(Ready(Ok(0)))`: the file ended.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: RawFd,
        offset: u64,
        count: u64,
    ) -> Option<Poll<io::Result<usize>>>;
}

fn sendfile_once(socket: RawFd, file: RawFd, offset: u64, count: u64) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    let count = count.min(SENDFILE_MAX as u64) as usize;
    // SAFETY: both fds are open for the duration of the call; `off` is a valid pointer.
    let n = unsafe { libc::sendfile(socket, file, &mut off, count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

macro_rules! impl_sendfile {
    ($t:ty) => {
        impl SendFile for $t {
            fn can_sendfile(&self) -> bool {
                true
            }

            fn poll_sendfile(
                &mut self,
                cx: &mut Context<'_>,
                file: RawFd,
                offset: u64,
                count: u64,
            ) -> Option<Poll<io::Result<usize>>> {
                Some(loop {
                    match self.poll_write_ready(cx) {
                        Poll::Pending => break Poll::Pending,
                        Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let fd = self.as_raw_fd();
                    match self.try_io(Interest::WRITABLE, || {
                        sendfile_once(fd, file, offset, count)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        result => break Poll::Ready(result),
                    }
                })
            }
        }
    };
}

impl_sendfile!(tokio::net::TcpStream);
impl_sendfile!(tokio::net::UnixStream);

impl<S> SendFile for tokio_rustls::server::TlsStream<S> {
    fn can_sendfile(&self) -> bool {
        false
    }

    fn poll_sendfile(
        &mut self,
        _: &mut Context<'_>,
        _: RawFd,
        _: u64,
        _: u64,
    ) -> Option<Poll<io::Result<usize>>> {
        None
    }
}
