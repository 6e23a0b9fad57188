//! One HTTP/2 stream as an `Exchange`: the same shared state the HTTP/1.1 connection
//! uses, so the app's receive()/send() are identical; here h2 does the framing and the
//! flow control.

use super::StreamGuard;
use crate::asgi::bridge::Event;
use crate::asgi::exchange::{ConnInfo, Exchange, Piece, RequestHead, Session, Watermarks};
use crate::asgi::pathsend::FileReader;
use crate::conn_shared::ConnShared;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Connection-specific fields HTTP/2 forbids in a response (RFC 9113 8.2.2).
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

pub async fn serve(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<ConnShared>,
    conn: Arc<ConnInfo>,
    open: StreamGuard,
) {
    let (parts, body) = request.into_parts();
    if parts.method == Method::GET || parts.method == Method::HEAD {
        let path = parts.uri.path().as_bytes();
        if let Some(probe) = shared.health.answer(path).filter(|_| body.is_end_stream()) {
            probe_response(
                &mut respond,
                probe.status(),
                parts.method == Method::HEAD,
                &shared,
            );
            return;
        }
    }
    let Some(guard) = shared.admit() else {
        error_response(&mut respond, StatusCode::SERVICE_UNAVAILABLE, &shared);
        return;
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let (Some(n), Some(limit)) = (declared, shared.limit_request_body) {
        if n > limit {
            crate::warn!("Request body of {n} bytes is over --limit-request-body");
            error_response(&mut respond, StatusCode::PAYLOAD_TOO_LARGE, &shared);
            return;
        }
    }
    let target = parts.uri.path_and_query().map_or_else(
        || Bytes::from_static(b"/"),
        |pq| Bytes::copy_from_slice(pq.as_str().as_bytes()),
    );
    let mut headers = scope_headers(&parts.headers, parts.uri.authority().map(|a| a.as_str()));
    let forwarded = shared.proxy.resolve(&conn, &mut headers);
    let access = shared.access_log.as_ref().and_then(|log| {
        let headers = &parts.headers;
        log.begin(
            crate::proxy::client(forwarded.as_deref(), &conn),
            &parts.method,
            &target,
            Version::HTTP_2,
            |name| headers.get(name).map(|v| v.as_bytes()),
        )
    });
    let metrics = crate::metrics::recorder::RequestMetrics::start(&parts.method, true);
    let water = Watermarks::for_http2_stream(open.open_streams());
    let ex = Arc::new(Exchange::new(shared.bridge.clone(), guard, water));
    let body = if body.is_end_stream() {
        ex.state().body_end = true;
        None
    } else {
        Some(body)
    };
    let head_request = parts.method == Method::HEAD;
    shared.bridge.push(Event::Request(Box::new(RequestHead {
        method: parts.method,
        target,
        version: Version::HTTP_2,
        headers,
        conn,
        session: Session::Http(ex.clone()),
        forwarded,
        arrived: metrics.as_ref().map(|m| m.arrived()),
    })));
    let mut stream = Stream {
        ex,
        shared: &shared,
        body,
        body_received: 0,
        respond,
        send: None,
        pending: None,
        head_request,
        file: None,
        declared: None,
        body_sent: 0,
        access,
        metrics,
        reset_by_client: false,
        body_timer: None,
        timed_out: false,
    };
    poll_fn(|cx| stream.poll(cx)).await;
    open.ended(stream.reset_by_client);
    if let Some(recycle) = &shared.recycle {
        recycle.request_done();
    }
}

/// The request's fields as the scope lists them: a `host` from `:authority` when the
/// client sent none, and every `cookie` field joined into one (RFC 9113 8.2.3).
fn scope_headers(headers: &HeaderMap, authority: Option<&str>) -> Vec<(HeaderName, Bytes)> {
    let mut out = Vec::with_capacity(headers.len() + 1);
    if let Some(authority) = authority.filter(|_| !headers.contains_key(http::header::HOST)) {
        out.push((
            http::header::HOST,
            Bytes::copy_from_slice(authority.as_bytes()),
        ));
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in headers {
        if *name == COOKIE {
            cookies.push(value.as_bytes());
        } else {
            out.push((name.clone(), Bytes::copy_from_slice(value.as_bytes())));
        }
    }
    if !cookies.is_empty() {
        out.push((COOKIE, Bytes::from(cookies.join(&b"; "[..]))));
    }
    out
}

fn error_response(respond: &mut SendResponse<Bytes>, status: StatusCode, shared: &ConnShared) {
    let body = status.canonical_reason().unwrap_or("Error");
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    add_server_and_date(headers, shared);
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from_static(body.as_bytes()), true);
    }
}

/// A --health-path / --ready-path answer; the app is not called.
fn probe_response(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    head_request: bool,
    shared: &ConnShared,
) {
    let body = status.canonical_reason().unwrap_or("");
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    add_server_and_date(headers, shared);
    if let Ok(mut send) = respond.send_response(response, head_request) {
        if !head_request {
            let _ = send.send_data(Bytes::from_static(body.as_bytes()), true);
        }
    }
}

fn add_server_and_date(headers: &mut HeaderMap, shared: &ConnShared) {
    for (name, value) in &shared.head.extra {
        headers.append(name.clone(), value.clone());
    }
    if shared.head.server_header && !headers.contains_key(http::header::SERVER) {
        headers.insert(http::header::SERVER, HeaderValue::from_static("ferrocorn"));
    }
    if shared.head.date_header && !headers.contains_key(http::header::DATE) {
        crate::http1::encode::with_date(|d| {
            if let Ok(v) = HeaderValue::from_bytes(d) {
                headers.insert(http::header::DATE, v);
            }
        });
    }
}

struct Stream<'a> {
    ex: Arc<Exchange>,
    shared: &'a ConnShared,
    /// None once the request body is complete.
    body: Option<RecvStream>,
    body_received: u64,
    respond: SendResponse<Bytes>,
    /// Set once the response head is sent (and the response has a body).
    send: Option<SendStream<Bytes>>,
    /// Response bytes waiting for flow-control window.
    pending: Option<Bytes>,
    head_request: bool,
    /// A pathsend file, read in pieces into `pending`.
    file: Option<FileReader>,
    /// The app's Content-Length: no more of a file is sent.
    declared: Option<u64>,
    body_sent: u64,
    /// What the access line needs until it is written.
    access: Option<crate::access_log::Entry>,
    /// --metrics: this request's counters.
    metrics: Option<crate::metrics::recorder::RequestMetrics>,
    /// The client cancelled the stream (RST_STREAM) before the response ended.
    reset_by_client: bool,
    /// Runs while the app waits for body bytes that don't come (--timeout-request-body).
    body_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The request body stopped coming: the stream was answered 408 or reset.
    timed_out: bool,
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        // A HEAD response's body is counted but never sent.
        let sent = if self.head_request { 0 } else { self.body_sent };
        if let Some(log) = &self.shared.access_log {
            log.response_end(&mut self.access, sent);
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.end(self.body_received, sent);
        }
    }
}

impl Stream<'_> {
    /// Ready when the stream is finished one way or another.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = self.poll_request_body(cx);
            if self.timed_out {
                return Poll::Ready(());
            }
            if self.send.is_none() {
                match self.poll_head(cx) {
                    Poll::Ready(true) => return Poll::Ready(()),
                    Poll::Ready(false) => progress = true,
                    Poll::Pending => {
                        if self.respond.poll_reset(cx).is_ready() {
                            self.ex.disconnect();
                            self.reset_by_client = true;
                            return Poll::Ready(());
                        }
                    }
                }
            }
            if self.send.is_some() {
                match self.poll_response_body(cx) {
                    Poll::Ready(()) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
                let send = self.send.as_mut().expect("checked");
                if send.poll_reset(cx).is_ready() {
                    self.ex.disconnect();
                    self.reset_by_client = true;
                    return Poll::Ready(());
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Read body data only while the app's receive() wants it; the window is given
    /// back as data is handed on, so a client can't make us buffer more than that.
    fn poll_request_body(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        if !self.ex.body_wanted() {
            return false;
        }
        match body.poll_data(cx) {
            Poll::Pending => {
                // --timeout-request-body, as on HTTP/1.1: without it a client could
                // open streams with a body it never sends (slow POST) and hold their
                // app calls, and the connection (never idle while streams are open),
                // for ever.
                let timeout = self.shared.body_timeout;
                let timer = self
                    .body_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_pending() {
                    return false;
                }
                crate::warn!("Request body not sent in time; ending the stream");
                self.ex.disconnect();
                self.body = None;
                if self.send.is_none() {
                    error_response(&mut self.respond, StatusCode::REQUEST_TIMEOUT, self.shared);
                    self.timed_out = true;
                } else if let Some(send) = self.send.as_mut() {
                    send.send_reset(Reason::CANCEL);
                    self.timed_out = true;
                }
                true
            }
            Poll::Ready(Some(Ok(data))) => {
                self.body_timer = None; // the client is sending: restart the clock
                let _ = body.flow_control().release_capacity(data.len());
                self.body_received += data.len() as u64;
                if self
                    .shared
                    .limit_request_body
                    .is_some_and(|limit| self.body_received > limit)
                {
                    crate::warn!("Request body over --limit-request-body");
                    self.ex.disconnect();
                    self.body = None;
                    self.respond.send_reset(Reason::CANCEL);
                    return true;
                }
                self.ex.push_body(data);
                if body.is_end_stream() {
                    self.ex.end_body();
                    self.body = None;
                }
                true
            }
            Poll::Ready(None) => {
                self.ex.end_body();
                self.body = None;
                true
            }
            Poll::Ready(Some(Err(_))) => {
                // Reset by the client or a broken connection.
                self.ex.disconnect();
                self.body = None;
                true
            }
        }
    }

    /// Ready(true): the stream is finished (a response without body, or an error).
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        for links in self.ex.take_hints() {
            // 103 Early Hints (RFC 8297) before the final response.
            let mut hint = Response::new(());
            *hint.status_mut() = StatusCode::EARLY_HINTS;
            for link in links {
                hint.headers_mut().append(http::header::LINK, link);
            }
            if self.respond.send_informational(hint).is_err() {
                self.ex.disconnect();
                return Poll::Ready(true);
            }
        }
        let Poll::Ready((head, exact, _trailers)) = self.ex.poll_head(cx) else {
            return Poll::Pending;
        };
        if let Some(log) = &self.shared.access_log {
            if let Some(record) = log.response_head(&mut self.access, head.status, &head.headers) {
                self.shared.bridge.push(Event::Access(record));
            }
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.status(head.status);
        }
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        let headers = response.headers_mut();
        // An app's `Transfer-Encoding: chunked` overrides its Content-Length (RFC 9112
        // 6.3); HTTP/2 has no chunking, so both go and the DATA frames delimit the body.
        let app_chunked = head.headers.iter().any(|f| {
            f.name == b"transfer-encoding" && crate::http1::encode::has_token(f.value, b"chunked")
        });
        head.headers.append_to(headers, |f| {
            !(CONNECTION_SPECIFIC.iter().any(|n| n.as_bytes() == f.name)
                || (app_chunked && f.name == b"content-length"))
        });
        self.declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if exact.is_some() && !headers.contains_key(CONTENT_LENGTH) && !self.head_request {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(exact.unwrap_or(0)));
        }
        add_server_and_date(headers, self.shared);
        let bodiless = self.head_request
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED
            || exact == Some(0);
        match self.respond.send_response(response, bodiless) {
            Err(_) => {
                self.ex.disconnect();
                Poll::Ready(true)
            }
            Ok(_) if bodiless => {
                self.ex.finish_response();
                Poll::Ready(true)
            }
            Ok(send) => {
                self.send = Some(send);
                Poll::Ready(false)
            }
        }
    }

    fn poll_response_body(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let send = self.send.as_mut().expect("head sent");
        loop {
            if self.pending.is_none() {
                if let Some(reader) = self.file.as_mut() {
                    match reader.poll_next(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(piece))) => self.pending = Some(piece),
                        Poll::Ready(None) => self.file = None,
                        Poll::Ready(Some(Err(e))) => {
                            crate::error!(
                                "http.response.pathsend: sending {:?} failed: {e}; resetting the stream",
                                reader.body.path
                            );
                            send.send_reset(Reason::INTERNAL_ERROR);
                            self.ex.disconnect();
                            return Poll::Ready(());
                        }
                    }
                    continue;
                }
                match self.ex.poll_chunk(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Piece::Data(chunk)) => {
                        self.body_sent += chunk.len() as u64;
                        if !chunk.is_empty() {
                            self.pending = Some(chunk);
                        }
                        continue;
                    }
                    Poll::Ready(Piece::File(mut body)) => {
                        if let Some(n) = self.declared {
                            body.remaining = body.remaining.min(n.saturating_sub(self.body_sent));
                        }
                        self.body_sent += body.remaining;
                        if body.remaining > 0 {
                            self.file = Some(FileReader::new(body));
                        }
                        continue;
                    }
                    Poll::Ready(Piece::End(trailers)) => {
                        match trailers.filter(|t| !t.is_empty()) {
                            Some(mut trailers) => {
                                for name in CONNECTION_SPECIFIC {
                                    trailers.remove(*name);
                                }
                                let _ = send.send_trailers(trailers);
                            }
                            None => {
                                let _ = send.send_data(Bytes::new(), true);
                            }
                        }
                        self.ex.finish_response();
                        return Poll::Ready(());
                    }
                    Poll::Ready(Piece::Abort) => {
                        // The app failed mid-response: the stream ends visibly broken.
                        send.send_reset(Reason::INTERNAL_ERROR);
                        self.ex.disconnect();
                        return Poll::Ready(());
                    }
                }
            }
            let chunk = self.pending.as_mut().expect("set above");
            send.reserve_capacity(chunk.len());
            match send.poll_capacity(cx) {
                Poll::Pending | Poll::Ready(Some(Ok(0))) => return Poll::Pending,
                Poll::Ready(Some(Ok(window))) => {
                    let piece = chunk.split_to(window.min(chunk.len()));
                    if chunk.is_empty() {
                        self.pending = None;
                    }
                    if send.send_data(piece, false).is_err() {
                        self.ex.disconnect();
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    self.ex.disconnect();
                    return Poll::Ready(());
                }
            }
        }
    }
}
