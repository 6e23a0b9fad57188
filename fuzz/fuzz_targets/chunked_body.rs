//! Any bytes as a chunked body, fed in pieces whose size the first byte picks: the
//! decoder must never panic and never yield more bytes than it was given.
#![no_main]

use _ferrocorn::http1::decode::{Decoder, Step};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut decoder = Decoder::chunked();
    let mut buf = BytesMut::new();
    let mut out = 0;
    for part in body.chunks(piece) {
        buf.extend_from_slice(part);
        loop {
            match decoder.step(&mut buf, 1 << 16) {
                Ok(Step::Data(d)) => out += d.len(),
                Ok(Step::NeedMore) | Ok(Step::Done) | Err(_) => break,
            }
        }
    }
    assert!(out <= body.len());
});
