//! h2c by `Upgrade: h2c` (RFC 7540 3.2). The `h2` crate has no API for it, so after the
//! 101 we hand it the byte stream it would have seen had the client sent the upgraded
//! request as stream 1 itself: the client's preface and first SETTINGS frame, then a
//! HEADERS frame for stream 1 that we encode, then whatever the client sends next.
//!
//! The HEADERS block uses only HPACK literals "without indexing", which leave the
//! decoder's dynamic table untouched, so the client's own header compression state
//! stays in step with the server's.

use crate::conn_shared::ConnShared;
use crate::http1::parse::{self, H2_PREFACE};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Header fields that HTTP/2 forbids or that only meant something to the upgrade.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
];

/// Largest HEADERS payload every HTTP/2 server accepts (the default frame size).
const MAX_BLOCK: usize = 16_384;

/// Can this request be re-encoded as one HEADERS frame? Otherwise the upgrade is
/// ignored and the request answered over HTTP/1.1.
pub fn fits_upgrade(head: &parse::Head) -> bool {
    header_block(head).len() <= MAX_BLOCK
}

fn put_integer(out: &mut BytesMut, first_byte_flags: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.put_u8(first_byte_flags | value as u8);
        return;
    }
    out.put_u8(first_byte_flags | max as u8);
    value -= max;
    while value >= 128 {
        out.put_u8((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.put_u8(value as u8);
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_integer(out, 0x00, 7, s.len()); // H = 0: not Huffman-coded
    out.put_slice(s);
}

fn put_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0x00); // literal header field without indexing, new name
    put_string(out, name);
    put_string(out, value);
}

fn header_block(head: &parse::Head) -> BytesMut {
    let mut block = BytesMut::with_capacity(256);
    for (name, value) in stream_one_fields(head) {
        put_literal(&mut block, &name, &value);
    }
    block
}

/// Answer 101, read the client's preface and SETTINGS, and return the bytes h2 is to
/// read first. None if the client doesn't speak HTTP/2 after all.
pub(super) async fn switch<S>(
    io: &mut S,
    mut buf: BytesMut,
    head: &parse::Head,
    shared: &ConnShared,
) -> Option<BytesMut>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut response = BytesMut::with_capacity(128);
    response
        .put_slice(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n");
    crate::http1::encode::put_server_and_date(&mut response, &shared.head);
    response.put_slice(b"\r\n");
    io.write_all(&response).await.ok()?;

    // The preface, then a frame header (9 bytes) and the SETTINGS payload.
    loop {
        match splice(&buf, head) {
            Splice::Ready(spliced) => return Some(spliced),
            Splice::NotHttp2 => return None,
            Splice::NeedMore => {}
        }
        buf.reserve(4096);
        if io.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// What the bytes a client sent after the 101 amount to so far.
#[derive(Debug)]
pub enum Splice {
    /// A prefix of the preface and first SETTINGS frame: read more.
    NeedMore,
    /// Not an HTTP/2 client after all (wrong preface, or a first frame that isn't a
    /// SETTINGS frame of a sane size).
    NotHttp2,
    /// The bytes h2 is to read: preface, SETTINGS, our HEADERS frame for stream 1 (the
    /// upgraded request), then the rest of what the client sent.
    Ready(BytesMut),
}

/// Splice the upgraded request into the client's bytes as stream 1 (a pure function,
/// so the fuzz target `h2c_upgrade` can drive it with any bytes).
pub fn splice(buf: &[u8], head: &parse::Head) -> Splice {
    let preface_seen = buf.len().min(H2_PREFACE.len());
    if buf[..preface_seen] != H2_PREFACE[..preface_seen] {
        return Splice::NotHttp2;
    }
    if buf.len() < H2_PREFACE.len() + 9 {
        return Splice::NeedMore;
    }
    let frame = &buf[H2_PREFACE.len()..];
    let len = (usize::from(frame[0]) << 16) | (usize::from(frame[1]) << 8) | usize::from(frame[2]);
    if frame[3] != 0x4 || len > 6 * 64 {
        return Splice::NotHttp2; // the first frame must be SETTINGS
    }
    let settings_end = H2_PREFACE.len() + 9 + len;
    if buf.len() < settings_end {
        return Splice::NeedMore;
    }
    let block = header_block(head);
    let mut spliced = BytesMut::with_capacity(buf.len() + block.len() + 9);
    spliced.put_slice(&buf[..settings_end]);
    spliced.put_uint(block.len() as u64, 3);
    spliced.put_u8(0x1); // HEADERS
    spliced.put_u8(0x1 | 0x4); // END_STREAM | END_HEADERS: the upgrade request has no body
    spliced.put_u32(1);
    spliced.put_slice(&block);
    spliced.put_slice(&buf[settings_end..]);
    Splice::Ready(spliced)
}

/// The fields of stream 1's HEADERS block, in order: the pseudo-headers, then the
/// request's fields less those HTTP/2 forbids or that only served the upgrade.
pub fn stream_one_fields(head: &parse::Head) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = vec![
        (
            b":method".to_vec(),
            head.method.as_str().as_bytes().to_vec(),
        ),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), head.target.to_vec()),
    ];
    if let Some((_, host)) = head.headers.iter().find(|(n, _)| n.as_str() == "host") {
        fields.push((b":authority".to_vec(), host.to_vec()));
    }
    for (name, value) in &head.headers {
        if !DROPPED.contains(&name.as_str()) {
            fields.push((name.as_str().as_bytes().to_vec(), value.to_vec()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_follow_rfc_7541_c1() {
        // C.1.2: 1337 with a 5-bit prefix is 31, 154, 10.
        let mut out = BytesMut::new();
        put_integer(&mut out, 0, 5, 1337);
        assert_eq!(&out[..], &[31, 154, 10]);
        let mut out = BytesMut::new();
        put_integer(&mut out, 0, 7, 10);
        assert_eq!(&out[..], &[10]);
    }
}
