//! The ASGI `http.response.pathsend` extension: a response body that is a file, sent by
//! the I/O thread rather than read by the app.
//!
//! send() opens the file on the Python thread (so a missing file is known before the
//! response head goes out, and answers 500); the I/O side then either hands it to the
//! kernel with `sendfile(2)` (plain TCP or Unix socket, HTTP/1.1: see
//! `http1::sendfile`), or reads it in bounded pieces on tokio's blocking pool
//! (`FileReader`: TLS and HTTP/2, where the bytes must pass through our code). Either
//! way the I/O thread's event loop never waits on the disk.

use bytes::Bytes;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// Bytes read from the file per blocking read (and the most a reader holds at once).
const READ_PIECE: usize = 256 * 1024;

/// The file of a pathsend response, opened by send().
pub struct FileBody {
    file: Arc<File>,
    /// Where to send from next.
    pub offset: u64,
    /// Bytes left to send: the file's size when it was opened, or less once the
    /// connection limits it to the response's Content-Length.
    pub remaining: u64,
    /// For error messages.
    pub path: Box<str>,
}

impl FileBody {
    /// Open `path` for a response: a regular file, read from its start.
    pub fn open(path: &str) -> io::Result<FileBody> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(FileBody {
            file: Arc::new(file),
            offset: 0,
            remaining: meta.len(),
            path: path.into(),
        })
    }

    /// A file the app already opened (WSGI's `wsgi.file_wrapper`): sent from `offset`
    /// to its end. `file` must be a regular file.
    pub fn from_file(file: File, offset: u64, path: &str) -> io::Result<FileBody> {
        let size = file.metadata()?.len();
        Ok(FileBody {
            file: Arc::new(file),
            offset,
            remaining: size.saturating_sub(offset),
            path: path.into(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Account for `n` bytes sent.
    pub fn advance(&mut self, n: u64) {
        self.offset += n;
        self.remaining -= n.min(self.remaining);
    }

    /// The file ended before `remaining` bytes could be sent (it shrank since it was
    /// opened).
    pub fn short_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file ended {} bytes early", self.remaining),
        )
    }
}

/// Reads a `FileBody` in pieces of at most 256 KiB on tokio's blocking pool, one piece
/// at a time: the caller asks for the next piece once it has queued the last one, so
/// memory stays bounded by the caller's own write-ahead limit plus one piece.
pub struct FileReader {
    pub body: FileBody,
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl FileReader {
    pub fn new(body: FileBody) -> FileReader {
        FileReader {
            body,
            reading: None,
        }
    }

    /// The next piece: `None` once `remaining` bytes were read, an error if reading
    /// failed or the file ended early.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.body.remaining == 0 && self.reading.is_none() {
            return Poll::Ready(None);
        }
        let handle = self.reading.get_or_insert_with(|| {
            let file = self.body.file.clone();
            let offset = self.body.offset;
            let want = self.body.remaining.min(READ_PIECE as u64) as usize;
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            })
        });
        let joined = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
        self.reading = None;
        let piece = match joined {
            Ok(Ok(piece)) => piece,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        if piece.is_empty() {
            return Poll::Ready(Some(Err(self.body.short_error())));
        }
        self.body.advance(piece.len() as u64);
        Poll::Ready(Some(Ok(Bytes::from(piece))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_a_file_in_bounded_pieces() {
        let dir = std::env::temp_dir().join(format!("ferrocorn-pathsend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        let data: Vec<u8> = (0..READ_PIECE * 2 + 123).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let mut reader = FileReader::new(FileBody::open(path.to_str().unwrap()).unwrap());
            let mut got = Vec::new();
            while let Some(piece) = std::future::poll_fn(|cx| reader.poll_next(cx)).await {
                let piece = piece.unwrap();
                assert!(piece.len() <= READ_PIECE);
                got.extend_from_slice(&piece);
            }
            got
        });
        assert_eq!(got, data);
        assert!(FileBody::open(dir.to_str().unwrap()).is_err()); // a directory
        assert!(FileBody::open(dir.join("missing").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
