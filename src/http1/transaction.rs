//! One request and its response on an HTTP/1.1 connection (`conn` runs one after the
//! other): hand the request to Python as an `Exchange`, move the request body in (only
//! while the app's receive() asks for it, with a bounded read-ahead), encode the
//! response out as the app sends it (pathsend files by sendfile(2) or a read loop),
//! and tell the connection whether it may carry another request.

use super::close::write_error_response;
use super::conn::READ_CHUNK;
use super::decode::{Decoder, Step};
use super::encode::{self, BodyFraming, RequestFacts};
use super::outq::OutQueue;
use super::parse::{self, Framing, Rejection};
use super::sendfile::SendFile;
use crate::asgi::bridge::Event;
use crate::asgi::exchange::{
    ConnInfo, Exchange, InflightGuard, Piece, RequestHead, Session, HTTP1_WATER,
};
use crate::asgi::pathsend::FileReader;
use crate::conn_shared::ConnShared;
use crate::fields::Fields;
use bytes::{BufMut, BytesMut};
use http::{Method, StatusCode, Version};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Request-body bytes handed to the app in one receive() at most.
const BODY_PIECE: usize = 1024 * 1024;
/// Request-body bytes read ahead of the app's receive() at most: a receive() then takes
/// all that arrived while the app was busy in one piece (a 20 MB multipart upload in
/// 64 KiB pieces, one per read, cost FastAPI 1.5x the time it takes under uvicorn).
const BODY_READ_AHEAD: usize = 256 * 1024;
/// Response bytes encoded ahead of the socket at most; beyond it we wait for the socket.
const WRITE_AHEAD: usize = 256 * 1024;
/// While the app runs we keep reading (to notice a disconnect), buffering pipelined
/// requests up to this much.
const PIPELINE_BUFFER: usize = 256 * 1024;
/// File bytes sent with sendfile(2) in one turn before other connections get theirs.
const SENDFILE_TURN: u64 = 4 * 1024 * 1024;

/// Whether the connection must end after the current request: a drain started, or
/// the connection reached --max-requests-per-connection or --max-connection-age.
/// Asked when the response head is written, so the last response says so.
pub(super) struct ConnEnd<'a> {
    pub(super) shutdown: &'a watch::Receiver<bool>,
    pub(super) budget: &'a crate::recycling::ConnBudget,
}

impl ConnEnd<'_> {
    fn now(&self) -> bool {
        *self.shutdown.borrow() || self.budget.spent()
    }
}

/// The connection's buffers, lent to each of its transactions in turn.
pub(super) struct Lent<'a> {
    /// Bytes read from the socket and not used yet.
    pub(super) buf: &'a mut BytesMut,
    /// An empty buffer for the response's fields (see `State::spare_fields`).
    pub(super) fields: &'a mut Fields,
}

pub(super) enum Done {
    KeepAlive,
    Close,
    Reject(Rejection),
}

/// One request/response on a connection.
pub(super) struct Transaction<'a, S> {
    io: &'a mut S,
    buf: &'a mut BytesMut,
    /// The buffer of the connection's response fields, lent to each response in turn.
    spare_fields: &'a mut Fields,
    shared: &'a ConnShared,
    ex: Arc<Exchange>,
    /// The request until it is handed to Python.
    request: Option<Box<RequestHead>>,
    /// None once the request body is complete (or there is none).
    decoder: Option<Decoder>,
    body_received: u64,
    /// Armed while we wait for request-body bytes the app (or the read-ahead) wants.
    body_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    expect_continue: bool,
    method: Method,
    version: Version,
    keep_alive: bool,
    out: OutQueue,
    /// Set once the response head is written.
    framing: Option<BodyFraming>,
    body_sent: u64,
    /// What the access line needs until it is written.
    access: Option<crate::access_log::Entry>,
    /// --metrics: this request's counters.
    metrics: Option<crate::metrics::recorder::RequestMetrics>,
    response_ended: bool,
    /// The connection can't be reused (app failure, framing error, client gone).
    broken: bool,
    finished: bool,
    /// The client sent `TE: trailers`.
    trailers_ok: bool,
    /// The response is chunked and ends with the app's trailer fields.
    send_trailers: bool,
    /// A pathsend file being sent; no other piece is taken until it is done.
    file: Option<FileSend>,
    /// sendfile(2) used up its turn: let other tasks run before going on.
    yield_now: bool,
    ending: ConnEnd<'a>,
}

/// A pathsend body on its way: through the kernel (sendfile) or read in pieces.
struct FileSend {
    reader: FileReader,
    kernel: bool,
    /// Chunked framing: the chunk (one for the whole file) ends with CRLF.
    chunked: bool,
}

impl<'a, S: AsyncRead + AsyncWrite + SendFile + Unpin> Transaction<'a, S> {
    pub(super) fn new(
        mut head: parse::Head,
        io: &'a mut S,
        lent: Lent<'a>,
        shared: &'a ConnShared,
        conn: &Arc<ConnInfo>,
        guard: InflightGuard,
        ending: ConnEnd<'a>,
    ) -> Self {
        let forwarded = shared.proxy.resolve(conn, &mut head.headers);
        let access = shared.access_log.as_ref().and_then(|log| {
            let headers = &head.headers;
            log.begin(
                crate::proxy::client(forwarded.as_deref(), conn),
                &head.method,
                &head.target,
                head.version,
                |name| headers.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..]),
            )
        });
        let metrics = crate::metrics::recorder::RequestMetrics::start(&head.method, false);
        let ex = Arc::new(Exchange::new(shared.bridge.clone(), guard, HTTP1_WATER));
        let decoder = {
            let mut st = ex.state();
            st.spare_fields = std::mem::take(lent.fields);
            match head.framing {
                Framing::Empty => {
                    st.body_end = true;
                    None
                }
                Framing::Length(n) => Some(Decoder::Length(n)),
                Framing::Chunked => Some(Decoder::chunked()),
            }
        };
        let trailers_ok = head.headers.iter().any(|(name, value)| {
            *name == http::header::TE && encode::has_token(value, b"trailers")
        });
        let request = Box::new(RequestHead {
            method: head.method.clone(),
            target: head.target,
            version: head.version,
            headers: head.headers,
            conn: conn.clone(),
            session: Session::Http(ex.clone()),
            forwarded,
            arrived: metrics.as_ref().map(|m| m.arrived()),
        });
        Transaction {
            io,
            buf: lent.buf,
            spare_fields: lent.fields,
            shared,
            ex,
            request: Some(request),
            decoder,
            body_received: 0,
            body_timer: None,
            expect_continue: head.expect_continue,
            method: head.method,
            version: head.version,
            keep_alive: head.keep_alive && !ending.now(),
            out: OutQueue::default(),
            framing: None,
            body_sent: 0,
            access,
            metrics,
            response_ended: false,
            broken: false,
            finished: false,
            trailers_ok,
            send_trailers: false,
            file: None,
            yield_now: false,
            ending,
        }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Done> {
        loop {
            if self.request.is_some() {
                match self.poll_dispatch(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(done)) => {
                        self.finished = true;
                        return Poll::Ready(done);
                    }
                    Poll::Ready(None) => {}
                }
            }
            let mut progress = self.poll_request_body(cx);
            progress |= self.poll_response(cx);
            match self.poll_write(cx) {
                Poll::Ready(Err(())) => {
                    self.ex.disconnect();
                    self.finished = true;
                    return Poll::Ready(Done::Close);
                }
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Pending => {}
            }
            if self.response_ended && self.out.is_empty() {
                self.finished = true;
                if self.broken {
                    self.ex.disconnect();
                    return Poll::Ready(Done::Close);
                }
                self.ex.finish_response();
                let reusable = self.keep_alive && self.decoder.is_none();
                return Poll::Ready(if reusable {
                    Done::KeepAlive
                } else {
                    Done::Close
                });
            }
            if self.broken && !self.response_ended {
                // The client is gone or sent a bad body: nobody to answer.
                self.finished = true;
                self.ex.disconnect();
                return Poll::Ready(Done::Close);
            }
            if self.yield_now {
                self.yield_now = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Read ahead what is already there of the body, then hand the request to Python,
    /// so a small body reaches the app with the request (no extra round trip).
    /// Ready(Some) ends the transaction before the app ever sees the request.
    fn poll_dispatch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        loop {
            if self.expect_continue || self.decoder.is_none() {
                break;
            }
            match self.decode_buffered() {
                Err(rejection) => return Poll::Ready(Some(Done::Reject(rejection))),
                Ok(true) => break,
                Ok(false) => {}
            }
            match self.poll_read(cx) {
                Poll::Pending if self.body_timed_out(cx) => {
                    return Poll::Ready(Some(Done::Reject(Rejection {
                        status: StatusCode::REQUEST_TIMEOUT,
                        reason: "request body not sent in time",
                    })))
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(false) => return Poll::Ready(Some(Done::Close)),
                Poll::Ready(true) => {}
            }
        }
        let request = self.request.take().expect("dispatched once");
        self.shared.bridge.push(Event::Request(request));
        Poll::Ready(None)
    }

    /// Decode what the buffer holds into the exchange. Ok(true) if anything came.
    fn decode_buffered(&mut self) -> Result<bool, Rejection> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(false);
        };
        let mut got = false;
        loop {
            let step = decoder.step(self.buf, BODY_PIECE).map_err(|e| Rejection {
                status: StatusCode::BAD_REQUEST,
                reason: e.0,
            })?;
            match step {
                Step::Data(data) => {
                    got = true;
                    self.body_received += data.len() as u64;
                    if self
                        .shared
                        .limit_request_body
                        .is_some_and(|limit| self.body_received > limit)
                    {
                        return Err(Rejection {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            reason: "request body over --limit-request-body",
                        });
                    }
                    self.ex.push_body(data);
                }
                Step::NeedMore => return Ok(got),
                Step::Done => {
                    self.decoder = None;
                    self.ex.end_body();
                    return Ok(true);
                }
            }
        }
    }

    /// While waiting for body bytes: has the client been silent for --timeout-request-body?
    fn body_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.shared.body_timeout;
        let timer = self
            .body_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Read into the buffer. Ready(false) when the client closed or the read failed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.buf.reserve(READ_CHUNK);
        let spare = self.buf.spare_capacity_mut();
        let mut read_buf = ReadBuf::uninit(spare);
        match Pin::new(&mut *self.io).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Ready(Ok(())) => {
                let n = read_buf.filled().len();
                // SAFETY: poll_read initialised the first n bytes of the spare capacity.
                unsafe { self.buf.advance_mut(n) };
                if n > 0 {
                    self.body_timer = None; // the client is sending: restart the clock
                }
                Poll::Ready(n > 0)
            }
        }
    }

    /// Feed the request body to a waiting receive(); once the body is complete, keep
    /// watching the socket so a client that leaves is noticed (http.disconnect).
    fn poll_request_body(&mut self, cx: &mut Context<'_>) -> bool {
        if self.broken {
            return false;
        }
        if self.decoder.is_none() {
            if self.response_ended || self.buf.len() >= PIPELINE_BUFFER {
                return false;
            }
            return match self.poll_read(cx) {
                Poll::Ready(true) => true,
                Poll::Ready(false) => {
                    self.broken = true;
                    true
                }
                Poll::Pending => false,
            };
        }
        if !self.ex.body_wanted() && (self.expect_continue || !self.ex.body_room(BODY_READ_AHEAD)) {
            return false;
        }
        if self.expect_continue {
            // The app asked for the body: now the client may send it.
            self.expect_continue = false;
            if self.framing.is_none() {
                self.out.tail().put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
        }
        match self.decode_buffered() {
            Err(r) => {
                crate::warn!("Invalid HTTP request body: {}", r.reason);
                self.fail_request(r.status);
                return true;
            }
            Ok(true) => return true,
            Ok(false) => {}
        }
        match self.poll_read(cx) {
            Poll::Ready(true) => true,
            Poll::Ready(false) => {
                self.broken = true;
                true
            }
            Poll::Pending if self.body_timed_out(cx) => {
                crate::warn!("Request body not sent in time; closing the connection");
                self.fail_request(StatusCode::REQUEST_TIMEOUT);
                true
            }
            Poll::Pending => false,
        }
    }

    /// The request body turned out bad after the app was called: the app sees a
    /// disconnect, and the client gets the error unless the app's response had started.
    fn fail_request(&mut self, status: StatusCode) {
        self.ex.disconnect();
        self.broken = true;
        if self.framing.is_none() {
            if let Some(metrics) = &mut self.metrics {
                metrics.status(status);
            }
            write_error_response(self.out.tail(), status, self.shared);
            self.framing = Some(BodyFraming::None);
            self.response_ended = true;
        }
    }

    /// Encode the response head and body chunks the app has sent so far.
    fn poll_response(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if self.framing.is_none() {
            for links in self.ex.take_hints() {
                // 103 Early Hints (RFC 8297); an HTTP/1.0 client can't take a 1xx.
                if self.version == Version::HTTP_11 {
                    let out = self.out.tail();
                    out.put_slice(b"HTTP/1.1 103 Early Hints\r\n");
                    for link in links {
                        encode::put_header(out, b"link", link.as_bytes());
                    }
                    out.put_slice(b"\r\n");
                    progress = true;
                }
            }
            let Poll::Ready((head, exact, trailers)) = self.ex.poll_head(cx) else {
                return progress;
            };
            if let Some(log) = &self.shared.access_log {
                if let Some(record) =
                    log.response_head(&mut self.access, head.status, &head.headers)
                {
                    self.shared.bridge.push(Event::Access(record));
                }
            }
            if let Some(metrics) = &mut self.metrics {
                metrics.status(head.status);
            }
            // A drain or a connection bound reached while the app ran: this is the
            // last response, and it says so.
            self.keep_alive &= !self.ending.now();
            let facts = RequestFacts {
                method: &self.method,
                version: self.version,
                keep_alive: self.keep_alive,
            };
            // Trailers need chunks; a client that didn't ask for them gets the body
            // framed as usual, without them.
            self.send_trailers = trailers && self.trailers_ok && self.version == Version::HTTP_11;
            let chunked_headers;
            let headers = if self.send_trailers {
                let mut h = head
                    .headers
                    .without(b"content-length")
                    .without(b"transfer-encoding");
                h.push("transfer-encoding", "chunked");
                chunked_headers = h;
                &chunked_headers
            } else {
                &head.headers
            };
            let (framing, keep_alive) = encode::write_head(
                self.out.tail(),
                head.status,
                headers,
                exact,
                &facts,
                &self.shared.head,
            );
            self.send_trailers &= framing == BodyFraming::Chunked;
            let mut fields = head.headers;
            fields.clear();
            *self.spare_fields = fields;
            self.framing = Some(framing);
            self.keep_alive = keep_alive;
            progress = true;
        }
        let framing = self.framing.expect("head written");
        progress |= self.poll_file_reader(cx);
        while !self.response_ended && self.file.is_none() && self.out.len() < WRITE_AHEAD {
            match self.ex.poll_chunk(cx) {
                Poll::Pending => break,
                Poll::Ready(Piece::Data(data)) => {
                    progress = true;
                    self.body_sent += data.len() as u64;
                    match framing {
                        BodyFraming::None => {}
                        BodyFraming::Chunked if data.is_empty() => {}
                        BodyFraming::Chunked => {
                            encode::put_chunk_size(self.out.tail(), data.len());
                            self.out.push(data);
                            self.out.tail().put_slice(b"\r\n");
                        }
                        BodyFraming::UntilClose => self.out.push(data),
                        BodyFraming::Length(n) => {
                            if self.body_sent > n {
                                crate::error!("Response content longer than Content-Length");
                                let fits = data.len() - (self.body_sent - n) as usize;
                                self.out.push(data.slice(..fits));
                                self.broken = true;
                                self.response_ended = true;
                            } else {
                                self.out.push(data);
                            }
                        }
                    }
                }
                Poll::Ready(Piece::File(mut body)) => {
                    progress = true;
                    if let BodyFraming::Length(n) = framing {
                        // The app's Content-Length is what the client reads.
                        body.remaining = body.remaining.min(n.saturating_sub(self.body_sent));
                    }
                    if framing == BodyFraming::None || body.remaining == 0 {
                        continue;
                    }
                    self.body_sent += body.remaining;
                    let chunked = framing == BodyFraming::Chunked;
                    if chunked {
                        encode::put_chunk_size(self.out.tail(), body.remaining as usize);
                    }
                    self.file = Some(FileSend {
                        reader: FileReader::new(body),
                        kernel: self.io.can_sendfile(),
                        chunked,
                    });
                    progress |= self.poll_file_reader(cx);
                }
                Poll::Ready(Piece::End(trailers)) => {
                    progress = true;
                    self.response_ended = true;
                    match framing {
                        BodyFraming::Chunked => match trailers.filter(|_| self.send_trailers) {
                            Some(trailers) => {
                                let out = self.out.tail();
                                out.put_slice(b"0\r\n");
                                for (name, value) in &trailers {
                                    if !FORBIDDEN_TRAILERS.contains(name) {
                                        encode::put_header(
                                            out,
                                            name.as_str().as_bytes(),
                                            value.as_bytes(),
                                        );
                                    }
                                }
                                out.put_slice(b"\r\n");
                            }
                            None => self.out.tail().put_slice(encode::LAST_CHUNK),
                        },
                        BodyFraming::Length(n) if self.body_sent < n => {
                            crate::error!("Response content shorter than Content-Length");
                            self.broken = true;
                        }
                        BodyFraming::UntilClose => self.keep_alive = false,
                        _ => {}
                    }
                }
                Poll::Ready(Piece::Abort) => {
                    // The app failed mid-response: end it visibly incomplete.
                    progress = true;
                    self.broken = true;
                    self.response_ended = true;
                }
            }
        }
        progress
    }

    /// A file read in pieces (TLS): queue what the reader has, up to the write-ahead.
    fn poll_file_reader(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Some(send) = self.file.as_mut().filter(|f| !f.kernel) {
            if self.out.len() >= WRITE_AHEAD {
                break;
            }
            match send.reader.poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(piece))) => {
                    progress = true;
                    self.out.push(piece);
                }
                Poll::Ready(None) => {
                    progress = true;
                    self.file_done();
                }
                Poll::Ready(Some(Err(e))) => {
                    progress = true;
                    self.file_failed(&e);
                }
            }
        }
        progress
    }

    fn file_done(&mut self) {
        if let Some(send) = self.file.take() {
            if send.chunked {
                self.out.tail().put_slice(b"\r\n");
            }
        }
    }

    /// Reading the file failed after the head went out: the response can only end
    /// broken, by closing the connection.
    fn file_failed(&mut self, e: &std::io::Error) {
        if let Some(send) = self.file.take() {
            crate::error!(
                "http.response.pathsend: sending {:?} failed: {e}; closing the connection",
                send.reader.body.path
            );
        }
        self.broken = true;
        self.response_ended = true;
    }

    /// The out queue is empty and a file goes next through sendfile(2).
    /// Ready(Ok(true)) if anything was sent, Ready(Err) if the socket failed.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ()>> {
        let mut sent = 0u64;
        loop {
            let Some(send) = self.file.as_mut().filter(|f| f.kernel) else {
                return Poll::Ready(Ok(sent > 0));
            };
            let body = &mut send.reader.body;
            if body.remaining == 0 {
                self.file_done();
                return Poll::Ready(Ok(true));
            }
            if sent >= SENDFILE_TURN {
                self.yield_now = true;
                return Poll::Ready(Ok(true));
            }
            let (fd, offset, count) = (body.fd(), body.offset, body.remaining);
            match self.io.poll_sendfile(cx, fd, offset, count) {
                None | Some(Poll::Pending) => {
                    return if sent > 0 {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    }
                }
                Some(Poll::Ready(Ok(0))) => {
                    let e = body.short_error();
                    self.file_failed(&e);
                    return Poll::Ready(Ok(true));
                }
                Some(Poll::Ready(Ok(n))) => {
                    body.advance(n as u64);
                    sent += n as u64;
                }
                Some(Poll::Ready(Err(e))) => {
                    use std::io::ErrorKind::*;
                    if matches!(
                        e.kind(),
                        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
                    ) {
                        return Poll::Ready(Err(()));
                    }
                    self.file_failed(&e);
                    return Poll::Ready(Ok(true));
                }
            }
        }
    }

    /// Write what is encoded. Ready(Ok(true)) if anything was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, ()>> {
        let mut wrote = false;
        while !self.out.is_empty() {
            match self.out.poll_write(&mut *self.io, cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(_)) => wrote = true,
                Poll::Pending => {
                    return if wrote {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    }
                }
            }
        }
        if self.file.is_some() {
            return match self.poll_sendfile(cx) {
                Poll::Ready(Ok(sent)) => Poll::Ready(Ok(wrote || sent)),
                Poll::Pending if wrote => Poll::Ready(Ok(true)),
                other => other,
            };
        }
        Poll::Ready(Ok(wrote))
    }
}

impl<S> Drop for Transaction<'_, S> {
    fn drop(&mut self) {
        if !self.finished {
            self.ex.disconnect();
        }
        // A HEAD response's body is counted but never sent.
        let sent = if self.method == Method::HEAD {
            0
        } else {
            self.body_sent
        };
        if let Some(log) = &self.shared.access_log {
            log.response_end(&mut self.access, sent);
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.end(self.body_received, sent);
        }
    }
}

/// Fields a trailer section must not carry (RFC 9110 6.5.1): framing and routing.
const FORBIDDEN_TRAILERS: &[http::HeaderName] = &[
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::HOST,
    http::header::TRAILER,
    http::header::TE,
];
