//! One WebSocket connection on the I/O thread: hand the handshake to the app, answer it
//! as the app decides (101, 403 or the app's own response), then move messages both
//! ways, answer pings, ping idle clients, and run the closing handshake.

use super::deflate::{self, Codec};
use super::frame::{self, Failure, FrameHead};
use super::handshake::{self, Upgrade};
use crate::asgi::bridge::Event;
use crate::asgi::exchange::{
    ConnInfo, InflightGuard, RequestHead, ResponseHead, Session, STREAM_WATER,
};
use crate::asgi::ws_session::{Decision, Message, Outgoing, WsSession};
use crate::conn_shared::{ConnShared, WsSettings};
use crate::http1::close::{linger_close, reject_and_close};
use crate::http1::encode::{self, BodyFraming, RequestFacts};
use crate::http1::parse;
use crate::proxy::Client;
use bytes::{Buf, BufMut, BytesMut};
use http::{Method, StatusCode, Version};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long we wait for the client's close frame after sending ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Outgoing frame bytes encoded ahead of the socket at most.
const WRITE_AHEAD: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Outgoing bytes past which we stop reading frames. The app's messages fill `out` only
/// up to WRITE_AHEAD; what goes beyond is our own answers to the client's frames
/// (pongs, close). Without this a client could send pings without ever reading the
/// pongs and have us queue them without end (a ping flood): past the limit we read
/// nothing more until the socket takes what is queued.
const ANSWER_BACKLOG: usize = 2 * WRITE_AHEAD;

pub async fn serve<S>(
    mut io: S,
    buf: BytesMut,
    head: parse::Head,
    upgrade: Upgrade,
    shared: Arc<ConnShared>,
    conn: Arc<ConnInfo>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = shared.ws.as_ref().expect("WebSockets are enabled");
    let _open = crate::metrics::recorder::connection(crate::metrics::recorder::Protocol::WebSocket);
    let (guard, _) = InflightGuard::enter(&shared.inflight);
    let session = Arc::new(WsSession::new(
        shared.bridge.clone(),
        guard,
        settings.max_queue,
    ));
    let target = String::from_utf8_lossy(&head.target).into_owned();
    let mut headers = head.headers;
    let forwarded = shared.proxy.resolve(&conn, &mut headers);
    let peer = crate::proxy::client(forwarded.as_deref(), &conn);
    let client = peer
        .as_ref()
        .map_or_else(|| "-".to_string(), |c| c.to_string());
    shared.bridge.push(Event::Request(Box::new(RequestHead {
        method: head.method,
        target: head.target,
        version: head.version,
        headers,
        conn: conn.clone(),
        session: Session::WebSocket(session.clone()),
        forwarded,
        arrived: None,
    })));

    let decision = loop {
        let changed = session.changed();
        if let Some(decision) = session.state().decision.take() {
            break decision;
        }
        changed.await;
    };
    match decision {
        Decision::Deny => {
            access(&shared, peer.as_ref(), &target, "403");
            reject_and_close(io, StatusCode::FORBIDDEN, &shared).await;
            session.finish();
        }
        Decision::Respond(response) => {
            access(&shared, peer.as_ref(), &target, response.status.as_str());
            respond(&mut io, &session, response, &shared).await;
            session.finish();
            linger_close(io).await;
        }
        Decision::Accept {
            subprotocol,
            headers,
        } => {
            access(&shared, peer.as_ref(), &target, "[accepted]");
            let negotiated = settings
                .per_message_deflate
                .then(|| deflate::negotiate(&upgrade.extensions))
                .flatten();
            let mut out = BytesMut::with_capacity(512);
            handshake::write_101(
                &mut out,
                &upgrade.key,
                subprotocol.as_deref(),
                negotiated.as_ref().map(|(_, header)| header.as_str()),
                &headers,
                &shared.head,
            );
            let codec = negotiated.map(|(params, _)| Codec::new(params));
            let mut ws = Connection {
                session: session.clone(),
                settings,
                codec,
                buf,
                out,
                partial: None,
                close_sent: false,
                close_received: false,
                failed: false,
                close_deadline: None,
                ping_sent: None,
                next_ping: settings.ping_interval.map(|i| Instant::now() + i),
            };
            ws.run(io, &shared).await;
            session.finish();
            crate::debug!("{client} - WebSocket {target} closed");
        }
    }
}

fn access(shared: &ConnShared, client: Option<&Client>, target: &str, outcome: &str) {
    if let Some(log) = &shared.access_log {
        log.websocket(client, target.as_bytes(), outcome);
    }
}

/// The app's denial response (websocket.http.response.*), sent as it comes.
async fn respond<S: AsyncWrite + Unpin>(
    io: &mut S,
    session: &Arc<WsSession>,
    response: ResponseHead,
    shared: &ConnShared,
) {
    let mut out = BytesMut::new();
    let exact = {
        let st = session.state();
        st.deny_complete
            .then(|| st.deny_body.iter().map(|b| b.len() as u64).sum())
    };
    let facts = RequestFacts {
        method: &Method::GET,
        version: Version::HTTP_11,
        keep_alive: false,
    };
    let (framing, _) = encode::write_head(
        &mut out,
        response.status,
        &response.headers,
        exact,
        &facts,
        &shared.head,
    );
    loop {
        let changed = session.changed();
        let complete = {
            let mut st = session.state();
            for chunk in st.deny_body.drain(..) {
                match framing {
                    BodyFraming::Chunked => encode::put_chunk(&mut out, &chunk),
                    BodyFraming::None => {}
                    _ => out.put_slice(&chunk),
                }
            }
            st.deny_complete
        };
        if complete && framing == BodyFraming::Chunked {
            out.put_slice(encode::LAST_CHUNK);
        }
        if io.write_all(&out).await.is_err() || complete {
            return;
        }
        out.clear();
        changed.await;
    }
}

/// A message arriving in several frames.
struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
}

struct Connection<'a> {
    session: Arc<WsSession>,
    settings: &'a WsSettings,
    codec: Option<Codec>,
    buf: BytesMut,
    out: BytesMut,
    partial: Option<Partial>,
    close_sent: bool,
    close_received: bool,
    /// The connection is being failed (protocol error, timeout): no more reading.
    failed: bool,
    close_deadline: Option<Instant>,
    ping_sent: Option<Instant>,
    next_ping: Option<Instant>,
}

impl Connection<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: S, shared: &ConnShared) {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut server_closing = shared.ws_close.subscribe();
        loop {
            if let Err(failure) = self.read_frames() {
                self.fail(failure);
            }
            self.take_outgoing();
            if self.out.is_empty() && self.close_sent && (self.close_received || self.failed) {
                break;
            }
            let reading = !self.close_received
                && !self.failed
                && self.out.len() < ANSWER_BACKLOG
                && self.session.state().incoming.len() < self.session.max_queue;
            let timer = self.next_timer(reading);
            if !reading {
                self.ping_sent = None; // a paused reader can't see pongs: don't count it
            }
            self.buf.reserve(READ_CHUNK);
            let changed = self.session.changed();
            tokio::select! {
                written = wr.write(&self.out), if !self.out.is_empty() => match written {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.out.advance(n),
                },
                read = rd.read_buf(&mut self.buf), if reading => match read {
                    Ok(0) | Err(_) => {
                        self.session.disconnected(1006, "");
                        break;
                    }
                    Ok(_) => {}
                },
                _ = changed => {}
                _ = server_closing.changed(), if !self.close_sent => {
                    // Graceful stop: tell the client to come back later (1012).
                    self.session.disconnected(1012, "");
                    frame::write_close(&mut self.out, 1012, "");
                    self.close_sent = true;
                    self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                }
                _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    self.on_timer();
                }
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    }

    fn next_timer(&self, reading: bool) -> Option<Instant> {
        let ping = if !reading || self.close_sent {
            None
        } else if let Some(sent) = self.ping_sent {
            Some(sent + self.settings.ping_timeout)
        } else {
            self.next_ping
        };
        match (ping, self.close_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.close_deadline.is_some_and(|d| d <= now) {
            // The client never answered our close: give up on it.
            self.failed = true;
            self.close_received = true;
            self.out.clear();
            return;
        }
        if let Some(sent) = self.ping_sent {
            if sent + self.settings.ping_timeout <= now {
                self.fail(Failure {
                    code: 1011,
                    reason: "keepalive ping timeout",
                });
            }
        } else if self.next_ping.is_some_and(|t| t <= now) {
            frame::write_frame(&mut self.out, frame::OP_PING, false, b"ferrocorn");
            self.ping_sent = Some(now);
        }
    }

    /// Fail the connection: send the close code, tell the app, stop reading.
    fn fail(&mut self, failure: Failure) {
        crate::debug!("Failing a WebSocket: {} ({})", failure.reason, failure.code);
        self.session.disconnected(failure.code, failure.reason);
        self.close_deadline
            .get_or_insert_with(|| Instant::now() + CLOSE_TIMEOUT);
        if !self.close_sent {
            frame::write_close(&mut self.out, failure.code, failure.reason);
            self.close_sent = true;
        }
        self.failed = true;
    }

    /// Handle every whole frame in the buffer.
    fn read_frames(&mut self) -> Result<(), Failure> {
        while !self.close_received && !self.failed {
            if self.session.state().incoming.len() >= self.session.max_queue {
                return Ok(()); // the app is behind: leave the rest in the socket
            }
            if self.out.len() >= ANSWER_BACKLOG {
                return Ok(()); // the client isn't reading our pongs: wait for it
            }
            let Some(head) = frame::parse_head(&self.buf)? else {
                return Ok(());
            };
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            if !head.is_control()
                && so_far as u64 + head.payload_len > self.settings.max_size as u64
            {
                return Err(Failure {
                    code: frame::TOO_BIG,
                    reason: "message too big",
                });
            }
            let total = head.head_len + head.payload_len as usize;
            if self.buf.len() < total {
                self.buf.reserve(total - self.buf.len());
                return Ok(());
            }
            let mut payload = self.buf.split_to(total);
            payload.advance(head.head_len);
            frame::unmask(&mut payload, head.mask);
            self.on_frame(head, payload)?;
        }
        Ok(())
    }

    fn on_frame(&mut self, head: FrameHead, payload: BytesMut) -> Result<(), Failure> {
        let protocol = |reason| Failure {
            code: frame::PROTOCOL_ERROR,
            reason,
        };
        match head.opcode {
            frame::OP_TEXT | frame::OP_BINARY => {
                if self.partial.is_some() {
                    return Err(protocol("new message before the last one ended"));
                }
                if head.rsv1 && self.codec.is_none() {
                    return Err(protocol("compressed frame without permessage-deflate"));
                }
                self.partial = Some(Partial {
                    text: head.opcode == frame::OP_TEXT,
                    compressed: head.rsv1,
                    data: payload,
                });
            }
            frame::OP_CONTINUATION => {
                if head.rsv1 {
                    return Err(protocol("RSV1 on a continuation frame"));
                }
                let partial = self
                    .partial
                    .as_mut()
                    .ok_or(protocol("continuation frame outside a message"))?;
                partial.data.extend_from_slice(&payload);
            }
            frame::OP_PING => {
                if head.rsv1 {
                    return Err(protocol("RSV1 on a control frame"));
                }
                if !self.close_sent {
                    frame::write_frame(&mut self.out, frame::OP_PONG, false, &payload);
                }
                return Ok(());
            }
            frame::OP_PONG => {
                self.ping_sent = None;
                self.next_ping = self.settings.ping_interval.map(|i| Instant::now() + i);
                return Ok(());
            }
            frame::OP_CLOSE => {
                let (code, reason) = frame::parse_close(&payload)?;
                self.close_received = true;
                self.session.disconnected(code, &reason);
                if !self.close_sent {
                    frame::write_close(&mut self.out, code, &reason);
                    self.close_sent = true;
                }
                return Ok(());
            }
            _ => return Err(protocol("unknown opcode")),
        }
        if head.fin {
            let partial = self.partial.take().expect("a message is being assembled");
            self.deliver(partial)?;
        }
        Ok(())
    }

    fn deliver(&mut self, partial: Partial) -> Result<(), Failure> {
        if self.close_sent {
            return Ok(()); // we are closing: the app won't read it
        }
        let data = if partial.compressed {
            let codec = self.codec.as_mut().expect("checked when the frame came");
            BytesMut::from(&codec.decompress(&partial.data, self.settings.max_size)?[..])
        } else {
            partial.data
        };
        let message = if partial.text {
            let text = String::from_utf8(data.to_vec()).map_err(|_| Failure {
                code: frame::INVALID_DATA,
                reason: "text message is not UTF-8",
            })?;
            Message::Text(text)
        } else {
            Message::Binary(data.freeze())
        };
        self.session.push_message(message);
        Ok(())
    }

    /// Encode what the app sent, up to the write-ahead limit.
    fn take_outgoing(&mut self) {
        let mut taken = Vec::new();
        {
            let mut st = self.session.state();
            if self.close_sent {
                // Nobody will read it: drop it, so a send() waiting on it resumes.
                st.outgoing.clear();
                st.queued_bytes = 0;
            }
            let mut budget = WRITE_AHEAD.saturating_sub(self.out.len());
            while budget > 0 {
                let Some(item) = st.outgoing.pop_front() else {
                    break;
                };
                if let Outgoing::Message(m) = &item {
                    let len = match m {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) => b.len(),
                    };
                    st.queued_bytes -= len;
                    budget = budget.saturating_sub(len + 14);
                }
                taken.push(item);
            }
            if st.tx_waiting && st.queued_bytes < STREAM_WATER.low {
                self.session.wake_python(st);
            }
        }
        for item in taken {
            match item {
                Outgoing::Message(m) => {
                    let (opcode, data): (u8, &[u8]) = match &m {
                        Message::Text(t) => (frame::OP_TEXT, t.as_bytes()),
                        Message::Binary(b) => (frame::OP_BINARY, b),
                    };
                    let packed = match self.codec.as_mut() {
                        Some(codec) if data.len() >= deflate::MIN_COMPRESS => codec.compress(data),
                        _ => None,
                    };
                    match packed {
                        Some(packed) => frame::write_frame(&mut self.out, opcode, true, &packed),
                        None => frame::write_frame(&mut self.out, opcode, false, data),
                    }
                }
                Outgoing::Close { code, reason } => {
                    frame::write_close(&mut self.out, code, &reason);
                    self.close_sent = true;
                    self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
                    break;
                }
            }
        }
    }
}
