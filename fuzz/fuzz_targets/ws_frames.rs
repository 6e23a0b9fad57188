//! Any bytes as the client side of a WebSocket: frame heads, close payloads and
//! permessage-deflate data must never panic, and a decompressed message never exceeds
//! the limit it was given.
#![no_main]

use _ferrocorn::ws::deflate::{Codec, Params};
use _ferrocorn::ws::frame::{parse_close, parse_head, unmask};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut rest = data.to_vec();
    let mut codec = Codec::new(Params::default());
    while let Ok(Some(head)) = parse_head(&rest) {
        let Ok(len) = usize::try_from(head.payload_len) else {
            return;
        };
        let Some(end) = head.head_len.checked_add(len).filter(|&e| e <= rest.len()) else {
            return;
        };
        let mut payload = rest[head.head_len..end].to_vec();
        unmask(&mut payload, head.mask);
        if head.opcode == 0x8 {
            let _ = parse_close(&payload);
        } else if head.rsv1 {
            if let Ok(message) = codec.decompress(&payload, LIMIT) {
                assert!(message.len() <= LIMIT);
            }
        }
        rest.drain(..end);
    }
});
