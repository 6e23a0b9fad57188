//! Any bytes as a PROXY protocol header, as forwarded headers and as a trust list:
//! every parser must answer, never panic, and stay within its bounds.
#![no_main]

use _ferrocorn::proxy::forwarded::{resolve, ForwardedSettings};
use _ferrocorn::proxy::protocol::{self, Detected, Length};
use _ferrocorn::proxy::trust::TrustList;
use bytes::Bytes;
use http::HeaderName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // PROXY protocol: a length is never past the specification's bounds, and a
    // complete header parses to a verdict.
    let length = match protocol::detect(data) {
        Detected::V1 => protocol::v1_length(data),
        Detected::V2 => protocol::v2_length(data),
        Detected::None | Detected::NeedMore => return fuzz_forwarded(data),
    };
    if let Ok(Length::Complete(len)) = length {
        assert!(len <= protocol::V1_MAX.max(protocol::V2_FIXED + protocol::V2_MAX_PAYLOAD));
        if len <= data.len() {
            let _ = protocol::parse_v1(&data[..len]);
            let _ = protocol::parse_v2(&data[..len]);
        }
    }
    fuzz_forwarded(data);
});

fn fuzz_forwarded(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TrustList::parse(text);
    }
    let settings = ForwardedSettings {
        trust: TrustList::parse("127.0.0.1,10.0.0.0/8,fd00::/8,unix:,proxy").unwrap(),
        host: true,
    };
    // The input split at its first two NUL bytes gives three header values.
    let mut parts = data.splitn(3, |&b| b == 0);
    let names = ["forwarded", "x-forwarded-for", "x-forwarded-proto"];
    let mut headers: Vec<(HeaderName, Bytes)> = names
        .iter()
        .zip(&mut parts)
        .map(|(n, v)| (HeaderName::from_static(n), Bytes::copy_from_slice(v)))
        .collect();
    headers.push((
        HeaderName::from_static("x-forwarded-host"),
        Bytes::copy_from_slice(data),
    ));
    let before = headers.len();
    if let Some(result) = resolve(&settings, &mut headers) {
        if let Some(host) = &result.host {
            assert!(headers.iter().any(|(n, v)| n == "host" && v == host));
        }
    }
    assert!(headers.len() <= before + 1);
}
