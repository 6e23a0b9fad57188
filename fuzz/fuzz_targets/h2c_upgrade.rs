//! Any bytes as an `Upgrade: h2c` exchange: the first part (up to a NUL byte) as the
//! HTTP/1.1 request head, the rest as what the client sends after the 101. The splice
//! must never panic, and when it answers Ready, the result must be exactly the client's
//! preface and SETTINGS frame, one HEADERS frame for stream 1 that decodes to the
//! request's fields, then the client's remaining bytes untouched.
#![no_main]

use _ferrocorn::conn_shared::Limits;
use _ferrocorn::http1::parse::{parse, Outcome, H2_PREFACE};
use _ferrocorn::http2::upgrade::{fits_upgrade, splice, stream_one_fields, Splice};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (request, after) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let limits = Limits {
        request_line: 8190,
        fields: 100,
        field_size: 8190,
        max_incomplete_head: None,
    };
    let mut buf = BytesMut::from(request);
    let Outcome::Complete(head) = parse(&mut buf, &limits) else {
        return;
    };
    if !fits_upgrade(&head) {
        return;
    }
    // The client's bytes: a real preface (most inputs would fail at it otherwise) and
    // the fuzzer's bytes after it, or the fuzzer's bytes alone when they start with 'P'.
    let client: Vec<u8> = if after.first() == Some(&b'P') {
        after.to_vec()
    } else {
        [H2_PREFACE, after].concat()
    };
    let Splice::Ready(spliced) = splice(&client, &head) else {
        return;
    };
    let settings_len =
        (usize::from(client[24]) << 16) | (usize::from(client[25]) << 8) | usize::from(client[26]);
    let settings_end = H2_PREFACE.len() + 9 + settings_len;
    assert_eq!(&spliced[..settings_end], &client[..settings_end]);
    let frame = &spliced[settings_end..];
    let len = (usize::from(frame[0]) << 16) | (usize::from(frame[1]) << 8) | usize::from(frame[2]);
    assert_eq!(frame[3], 0x1, "a HEADERS frame");
    assert_eq!(frame[4], 0x5, "END_STREAM | END_HEADERS");
    assert_eq!(&frame[5..9], &[0, 0, 0, 1], "stream 1");
    assert!(len <= 16_384, "within the default frame size");
    let block = &frame[9..9 + len];
    assert_eq!(decode_literals(block), stream_one_fields(&head));
    assert_eq!(&frame[9 + len..], &client[settings_end..]);
});

/// Decode a block of HPACK "literal without indexing, new name" fields with plain
/// (not Huffman-coded) strings: all the splice ever writes.
fn decode_literals(mut block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = Vec::new();
    while let Some((&kind, rest)) = block.split_first() {
        assert_eq!(kind, 0x00, "literal without indexing, new name");
        let (name, rest) = string(rest);
        let (value, rest) = string(rest);
        fields.push((name.to_vec(), value.to_vec()));
        block = rest;
    }
    fields
}

fn string(data: &[u8]) -> (&[u8], &[u8]) {
    let first = data[0];
    assert_eq!(first & 0x80, 0, "not Huffman-coded");
    let mut len = usize::from(first & 0x7F);
    let mut at = 1;
    if len == 0x7F {
        let mut shift = 0;
        loop {
            let b = data[at];
            at += 1;
            len += usize::from(b & 0x7F) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    (&data[at..at + len], &data[at + len..])
}
