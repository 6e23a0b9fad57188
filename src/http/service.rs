//! The hyper service of a worker: checks each request head, hands it to the Python
//! side as an `Exchange`, and streams the app's response back.

use super::limits::{self, Limits};
use crate::asgi::exchange::{ConnInfo, Exchange, InflightGuard, RequestHead};
use crate::worker::bridge::{Bridge, Event};
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, EXPECT, SERVER};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Request-body bytes read ahead before the app is called, so a small body reaches the
/// app with the request instead of one cross-thread round trip later.
const PREFETCH_LIMIT: usize = 64 * 1024;

/// What every connection of a worker shares.
pub struct WorkerShared {
    pub bridge: Arc<Bridge>,
    pub inflight: Arc<AtomicUsize>,
    pub limits: Limits,
    pub limit_concurrency: Option<usize>,
    pub server_header: bool,
    pub access_log: bool,
}

#[derive(Clone)]
pub struct AsgiService {
    pub shared: Arc<WorkerShared>,
    pub conn: Arc<ConnInfo>,
}

impl hyper::service::Service<Request<Incoming>> for AsgiService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> ResponseFuture {
        let shared = &self.shared;
        if let Some(r) = limits::check(
            &shared.limits,
            req.method(),
            req.uri(),
            req.version(),
            req.headers(),
        ) {
            crate::warn!("Invalid HTTP request received: {}", r.reason);
            return ResponseFuture::immediate(error_response(r.status, true, shared));
        }
        let (guard, inflight) = InflightGuard::enter(&shared.inflight, &self.conn.activity);
        if shared.limit_concurrency.is_some_and(|limit| inflight > limit) {
            crate::warn!("Exceeded concurrency limit.");
            return ResponseFuture::immediate(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                false,
                shared,
            ));
        }

        let (parts, body) = req.into_parts();
        let access = shared.access_log.then(|| access_prefix(&parts, &self.conn));
        let exchange = Arc::new(Exchange::new(shared.bridge.clone(), guard, access));
        // Reading ahead would answer `Expect: 100-continue` before the app asked for
        // the body; the app decides that by calling receive().
        let expects_continue = parts.headers.contains_key(EXPECT);
        let incoming = if body.is_end_stream() {
            exchange.state().body_end = true;
            None
        } else {
            Some(body)
        };
        let prefetch = incoming.is_some() && !expects_continue;
        let head_request = parts.method == http::Method::HEAD;
        let head = Box::new(RequestHead {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            conn: self.conn.clone(),
            exchange: exchange.clone(),
        });
        ResponseFuture {
            inner: Some(Inner {
                exchange,
                pump: BodyPump { incoming },
                request: Some(head),
                prefetch,
                bridge: shared.bridge.clone(),
                server_header: shared.server_header,
                head_request,
            }),
            immediate: None,
        }
    }
}

/// `127.0.0.1:51234 - "GET /path HTTP/1.1"`, the status is appended when known.
fn access_prefix(parts: &http::request::Parts, conn: &ConnInfo) -> Box<str> {
    let client = conn
        .client
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_string());
    format!(
        "{client} - \"{} {target} {:?}\"",
        parts.method, parts.version
    )
    .into_boxed_str()
}

pub fn error_response(
    status: StatusCode,
    close: bool,
    shared: &WorkerShared,
) -> Response<ResponseBody> {
    let text = status.canonical_reason().unwrap_or("Error");
    let mut resp = Response::new(ResponseBody::Full(Some(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if shared.server_header {
        h.insert(SERVER, HeaderValue::from_static("ferrocorn"));
    }
    resp
}

/// Reads the request body from hyper only while receive() asks for it (backpressure).
pub struct BodyPump {
    incoming: Option<Incoming>,
}

impl BodyPump {
    fn poll(&mut self, cx: &mut Context<'_>, ex: &Arc<Exchange>) {
        while self.incoming.is_some() && ex.body_wanted() {
            match self.poll_frame(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(data))) => ex.push_body(data),
                Poll::Ready(None) => ex.end_body(),
                Poll::Ready(Some(Err(()))) => ex.disconnect(),
            }
        }
    }

    /// Read what is already there (up to PREFETCH_LIMIT) before the app is called.
    /// Ready once something was read or the body ended.
    fn prefetch(&mut self, cx: &mut Context<'_>, ex: &Arc<Exchange>) -> Poll<()> {
        let mut read = 0;
        while self.incoming.is_some() && read < PREFETCH_LIMIT {
            match self.poll_frame(cx) {
                Poll::Pending if read == 0 => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(Some(Ok(data))) => {
                    read += data.len();
                    ex.state().body.push_back(data);
                }
                Poll::Ready(None) => ex.state().body_end = true,
                Poll::Ready(Some(Err(()))) => ex.state().disconnected = true,
            }
        }
        Poll::Ready(())
    }

    /// One data frame; trailers are skipped. The body is dropped once it ends or fails.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ()>>> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let result = match Pin::new(&mut *incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(None) => None,
                Poll::Ready(Some(Err(_))) => Some(Err(())),
            };
            self.incoming = None;
            return Poll::Ready(result);
        }
    }
}

struct Inner {
    exchange: Arc<Exchange>,
    pump: BodyPump,
    /// The request, until it is handed to the Python side.
    request: Option<Box<RequestHead>>,
    prefetch: bool,
    bridge: Arc<Bridge>,
    server_header: bool,
    head_request: bool,
}

pub struct ResponseFuture {
    inner: Option<Inner>,
    immediate: Option<Response<ResponseBody>>,
}

impl ResponseFuture {
    fn immediate(resp: Response<ResponseBody>) -> Self {
        ResponseFuture {
            inner: None,
            immediate: Some(resp),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(resp) = self.immediate.take() {
            return Poll::Ready(Ok(resp));
        }
        let inner = self.inner.as_mut().expect("polled after completion");
        if inner.request.is_some() {
            if inner.prefetch && inner.pump.prefetch(cx, &inner.exchange).is_pending() {
                return Poll::Pending;
            }
            let request = inner.request.take().unwrap();
            inner.bridge.push(Event::Request(request));
        }
        inner.pump.poll(cx, &inner.exchange);
        let Poll::Ready((head, exact_len)) = inner.exchange.poll_head(cx) else {
            return Poll::Pending;
        };
        let inner = self.inner.take().unwrap();
        if let Some(prefix) = &inner.exchange.access {
            crate::log::access(&format!(
                "INFO:     {prefix} {}\n",
                head.status.as_u16()
            ));
        }
        let mut resp = Response::new(ResponseBody::Stream {
            exchange: inner.exchange,
            pump: inner.pump,
            exact_len,
            done: false,
            head_request: inner.head_request,
        });
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        if inner.server_header && !resp.headers().contains_key(SERVER) {
            resp.headers_mut()
                .insert(SERVER, HeaderValue::from_static("ferrocorn"));
        }
        Poll::Ready(Ok(resp))
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        // hyper drops the future without polling it to the end when the client is gone.
        if let Some(inner) = &self.inner {
            inner.exchange.disconnect();
        }
    }
}

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream {
        exchange: Arc<Exchange>,
        pump: BodyPump,
        exact_len: Option<u64>,
        done: bool,
        /// hyper writes no body for HEAD and may drop it unpolled: that is no disconnect.
        head_request: bool,
    },
}

#[derive(Debug)]
pub struct AppAborted;

impl std::fmt::Display for AppAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the application failed while sending the response")
    }
}

impl std::error::Error for AppAborted {}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = AppAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AppAborted>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream {
                exchange,
                pump,
                done,
                ..
            } => {
                pump.poll(cx, exchange);
                match exchange.poll_chunk(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Poll::Ready(Some(Err(()))) => Poll::Ready(Some(Err(AppAborted))),
                    Poll::Ready(None) => {
                        *done = true;
                        exchange.finish_response();
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            // Always polled to its end, so the exchange learns the response is done.
            ResponseBody::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream {
                exact_len: Some(n), ..
            } => SizeHint::with_exact(*n),
            ResponseBody::Stream { .. } => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Stream {
            exchange,
            done: false,
            head_request,
            ..
        } = self
        {
            if *head_request {
                exchange.finish_response();
            } else {
                exchange.disconnect();
            }
        }
    }
}
