//! Any bytes as a request head: the parser must answer Partial, Complete or Reject,
//! never panic, and never consume more than it was given.
#![no_main]

use _ferrocorn::conn_shared::Limits;
use _ferrocorn::http1::parse::{parse, Outcome};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        request_line: 8190,
        fields: 100,
        field_size: 8190,
        max_incomplete_head: None,
    };
    let mut buf = BytesMut::from(data);
    if let Outcome::Complete(_) = parse(&mut buf, &limits) {
        assert!(buf.len() < data.len());
    }
});
