//! The bytes a connection has yet to write: small pieces (heads, chunk sizes, small
//! bodies) are copied into a tail buffer, big body chunks are kept as they are and
//! written with vectored writes, so a large response is never copied on the I/O thread.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Chunks at least this big are queued, not copied.
const BIG: usize = 16 * 1024;
/// Slices handed to one writev.
const MAX_SLICES: usize = 32;
/// The tail's first allocation: room for a typical response head (status line, the
/// app's few headers, date and server) and a small body, so that writing them doesn't
/// grow the buffer five times over (heaptrack: 5 reallocations per hello-world response
/// when it started empty).
const TAIL_CAPACITY: usize = 512;

pub struct OutQueue {
    /// Written first, in order.
    segments: VecDeque<Bytes>,
    /// Written after the segments; appending to it keeps the order.
    tail: BytesMut,
    len: usize,
}

impl Default for OutQueue {
    fn default() -> Self {
        OutQueue {
            segments: VecDeque::new(),
            tail: BytesMut::with_capacity(TAIL_CAPACITY),
            len: 0,
        }
    }
}

impl OutQueue {
    pub fn len(&self) -> usize {
        self.len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For small writes: the buffer at the end of the queue.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queue a body chunk: kept as is when big, copied when small.
    pub fn push(&mut self, data: Bytes) {
        if data.len() < BIG {
            self.tail.extend_from_slice(&data);
            return;
        }
        if !self.tail.is_empty() {
            let small = self.tail.split().freeze();
            self.len += small.len();
            self.segments.push_back(small);
        }
        self.len += data.len();
        self.segments.push_back(data);
    }

    /// Write as much as the socket takes. Ready(Ok(n)) with n > 0, Pending, or an error.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        let n = if self.segments.is_empty() {
            std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.tail))?
        } else {
            let mut slices = Vec::with_capacity(MAX_SLICES);
            slices.extend(
                self.segments
                    .iter()
                    .take(MAX_SLICES - 1)
                    .map(|s| IoSlice::new(s)),
            );
            if !self.tail.is_empty() && slices.len() == self.segments.len() {
                slices.push(IoSlice::new(&self.tail));
            }
            std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
        };
        self.advance(n);
        Poll::Ready(Ok(n))
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.len -= step;
            n -= step;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_small_and_big_pieces() {
        let mut q = OutQueue::default();
        q.tail().extend_from_slice(b"head;");
        q.push(Bytes::from(vec![b'A'; BIG]));
        q.tail().extend_from_slice(b";mid;");
        q.push(Bytes::from_static(b"small"));
        q.push(Bytes::from(vec![b'B'; BIG]));
        q.tail().extend_from_slice(b";end");
        let mut written = Vec::new();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        while !q.is_empty() {
            // A writer that takes at most 7000 bytes at a time.
            let mut sink = Limited(&mut written);
            let Poll::Ready(Ok(n)) = q.poll_write(&mut sink, &mut cx) else {
                panic!("a Vec never blocks");
            };
            assert!(n > 0);
        }
        let mut expected = b"head;".to_vec();
        expected.extend(vec![b'A'; BIG]);
        expected.extend(b";mid;small");
        expected.extend(vec![b'B'; BIG]);
        expected.extend(b";end");
        assert_eq!(written, expected);
    }

    struct Limited<'a>(&'a mut Vec<u8>);

    impl AsyncWrite for Limited<'_> {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(7000);
            self.get_mut().0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            let mut budget = 7000;
            let mut total = 0;
            for b in bufs {
                let n = b.len().min(budget);
                this.0.extend_from_slice(&b[..n]);
                budget -= n;
                total += n;
                if budget == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(total))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
