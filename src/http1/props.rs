//! Property tests: nothing a client sends can panic the parser or the body decoder,
//! and chunked bodies survive a round trip however the bytes are split on the wire.

use super::decode::{Decoder, Step};
use super::encode::{put_chunk, LAST_CHUNK};
use super::parse::{parse, Outcome};
use crate::conn_shared::Limits;
use bytes::BytesMut;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        request_line: 8190,
        fields: 100,
        field_size: 8190,
        max_incomplete_head: None,
    }
}

/// Bytes that look like HTTP often enough to reach deep into the parser.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"GET "[..],
        b"POST ",
        b"/",
        b"?a=1",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b"\r\n",
        b"\n",
        b"\r",
        b"Host: h",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"0",
        b"5",
        b"ff",
        b";x=y",
        b": ",
        b" ",
        b"\t",
        b"\0",
        b"-",
        b"chunked, gzip",
        b"abc",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat()),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(input in http_ish()) {
        let mut buf = BytesMut::from(&input[..]);
        let before = buf.len();
        if let Outcome::Complete(_) = parse(&mut buf, &limits()) {
            prop_assert!(buf.len() < before);
        }
    }

    #[test]
    fn chunked_decoder_never_panics(input in http_ish(), piece in 1usize..64) {
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::new();
        for part in input.chunks(piece) {
            buf.extend_from_slice(part);
            // Decode until the decoder wants more, ends, or refuses the input.
            while let Ok(Step::Data(_)) = decoder.step(&mut buf, 4096) {}
        }
    }

    #[test]
    fn chunked_round_trip(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        cuts in prop::collection::vec(1usize..700, 1..10),
        feed in 1usize..97,
    ) {
        let mut wire = BytesMut::new();
        let mut rest = &body[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
            put_chunk(&mut wire, chunk);
            rest = tail;
        }
        wire.extend_from_slice(LAST_CHUNK);
        wire.extend_from_slice(b"GET /next");
        let mut decoder = Decoder::chunked();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut done = false;
        for part in wire.chunks(feed) {
            buf.extend_from_slice(part);
            while !done {
                match decoder.step(&mut buf, 4096).unwrap() {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::NeedMore => break,
                    Step::Done => done = true,
                }
            }
        }
        prop_assert!(done);
        prop_assert_eq!(out, body);
        prop_assert_eq!(&buf[..], &b"GET /next"[..]);
    }
}
