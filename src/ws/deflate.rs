//! permessage-deflate (RFC 7692): negotiating it, and compressing and decompressing
//! whole messages with raw DEFLATE and a sync flush per message.

use super::frame::{Failure, INVALID_DATA, TOO_BIG};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a client offer asked for that the server honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window the server may use, 8..=15 (RFC 7692 7.1.2.1).
    pub server_max_window_bits: u8,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
        }
    }
}

/// A window-bits value: a decimal 8..=15 without leading zeros (RFC 7692 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [b'8'] => Some(8),
        [b'9'] => Some(9),
        [b'1', d @ b'0'..=b'5'] => Some(10 + (d - b'0')),
        _ => None,
    }
}

/// Pick the first permessage-deflate offer we can honour from the client's
/// Sec-WebSocket-Extensions values; returns it with our response header value.
///
/// Every valid offer is accepted; an invalid one (unknown or repeated parameter, bad
/// value) is skipped for the client's next offer. `server_max_window_bits=N` is
/// honoured and echoed: we compress with a 2^N window. zlib can't make a raw deflate
/// stream with a 256-byte window, so for N = 8 we accept but send every message
/// uncompressed (RSV1 clear, which RFC 7692 allows per message) rather than break the
/// limit with a 512-byte window. `client_max_window_bits` (with or without a value) is
/// only a hint to us: our decompressor has a 32 KiB window, which inflates any client
/// window, so it is not echoed and the client keeps whatever window it offered.
pub fn negotiate(offers: &str) -> Option<(Params, String)> {
    'offers: for offer in offers.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        let mut params = Params::default();
        let mut server_bits = None;
        let mut seen = Vec::new();
        for param in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => {
                    let v = v.trim();
                    // A quoted-string value is the same value (RFC 7692 section 5).
                    let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                        Some(inner) => inner,
                        None => v,
                    };
                    (n.trim(), Some(v))
                }
                None => (param, None),
            };
            if seen.contains(&name) {
                continue 'offers;
            }
            seen.push(name);
            match (name, value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some(v)) => match window_bits(v) {
                    Some(bits) => server_bits = Some(bits),
                    None => continue 'offers,
                },
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v)) if window_bits(v).is_some() => {}
                _ => continue 'offers,
            }
        }
        let mut response = String::from("permessage-deflate");
        if params.server_no_context_takeover {
            response.push_str("; server_no_context_takeover");
        }
        if params.client_no_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = server_bits {
            params.server_max_window_bits = bits;
            response.push_str(&format!("; server_max_window_bits={bits}"));
        }
        return Some((params, response));
    }
    None
}

/// Messages shorter than this are sent uncompressed (RSV1 clear): not worth the CPU.
pub const MIN_COMPRESS: usize = 64;

const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

pub struct Codec {
    params: Params,
    /// None when the negotiated window is too small for zlib (8 bits): messages then go
    /// out uncompressed.
    compress: Option<Compress>,
    decompress: Decompress,
}

impl Codec {
    pub fn new(params: Params) -> Codec {
        let bits = params.server_max_window_bits;
        Codec {
            params,
            compress: (9..=15)
                .contains(&bits)
                .then(|| Compress::new_with_window_bits(Compression::fast(), false, bits)),
            decompress: Decompress::new(false),
        }
    }

    /// Deflate one whole message, ending with a sync flush whose 00 00 FF FF tail is
    /// stripped (RFC 7692 7.2.1); None when this message must go out uncompressed.
    ///
    /// zlib's contract: a flush is complete once a call returns with output space left
    /// over; a call that fills the buffer must be repeated with the same flush and more
    /// room. Keeping more than 6 bytes free avoids a duplicate flush marker. (miniz_oxide,
    /// flate2's default backend, broke this contract: a call that only drained output
    /// left over from a full buffer returned with room to spare while up to 4 KiB of
    /// input still sat in its lookahead, unflushed, which truncated such messages.)
    pub fn compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let compress = self.compress.as_mut()?;
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = compress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let consumed = (compress.total_in() - start) as usize;
            compress
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate of a valid stream does not fail");
            let consumed = (compress.total_in() - start) as usize;
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        // A completed sync flush always ends with an empty stored block.
        assert!(out.ends_with(&TAIL), "sync flush did not complete");
        out.truncate(out.len() - TAIL.len());
        if self.params.server_no_context_takeover {
            compress.reset();
        }
        Some(out)
    }

    /// Inflate one message; more than `limit` bytes out closes with 1009 (no
    /// decompression bomb gets past --ws-max-size). The check runs after every step of
    /// inflation, and the output buffer never grows past `limit` plus a little, so a
    /// bomb costs at most --ws-max-size of memory, not what it would inflate to (nor
    /// twice the limit, as doubling growth would allow).
    pub fn decompress(&mut self, data: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
        let mut input = Vec::with_capacity(data.len() + TAIL.len());
        input.extend_from_slice(data);
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity((data.len() * 3).min(limit) + 64);
        let start_in = self.decompress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                // out.len() <= limit here: the check below returned otherwise.
                let room = out.len().max(1024).min(limit + 64 - out.len());
                out.reserve_exact(room);
            }
            let consumed = (self.decompress.total_in() - start_in) as usize;
            let before = (consumed, out.len());
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| Failure {
                    code: INVALID_DATA,
                    reason: "invalid compressed data",
                })?;
            if out.len() > limit {
                return Err(Failure {
                    code: TOO_BIG,
                    reason: "message too big",
                });
            }
            let consumed = (self.decompress.total_in() - start_in) as usize;
            let stuck = (consumed, out.len()) == before;
            if status == Status::StreamEnd
                || (consumed == input.len() && out.len() < out.capacity())
                || stuck
            {
                break;
            }
        }
        if self.params.client_no_context_takeover {
            self.decompress.reset(false);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let (p, r) = negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(p, Params::default());
        assert_eq!(r, "permessage-deflate");
        // A smaller server window is honoured and echoed.
        let (p, r) = negotiate(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate; \
             server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
        assert_eq!(r, "permessage-deflate; server_max_window_bits=10");
        // Every parameter at once, a quoted value, and the client's window hint.
        let (p, r) = negotiate(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=\"8\"; client_max_window_bits=9",
        )
        .unwrap();
        assert_eq!(
            p,
            Params {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 8,
            }
        );
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=8"
        );
        assert!(negotiate("x-webkit-deflate-frame").is_none());
        assert!(negotiate("permessage-deflate; bogus").is_none());
        for bad in ["20", "7", "08", "", "x", "15.0"] {
            let offer = format!("permessage-deflate; client_max_window_bits={bad}");
            assert!(negotiate(&offer).is_none(), "{offer}");
            let offer = format!("permessage-deflate; server_max_window_bits={bad}");
            assert!(negotiate(&offer).is_none(), "{offer}");
        }
        // server_max_window_bits needs a value; no parameter may repeat.
        assert!(negotiate("permessage-deflate; server_max_window_bits").is_none());
        assert!(negotiate(
            "permessage-deflate; server_max_window_bits=9; server_max_window_bits=9"
        )
        .is_none());
        assert!(negotiate("permessage-deflate; server_no_context_takeover=1").is_none());
        // An invalid offer falls through to the client's next one.
        let (p, r) = negotiate(
            "permessage-deflate; server_max_window_bits=16, x-other, \
             permessage-deflate; client_max_window_bits=8; server_max_window_bits=12",
        )
        .unwrap();
        assert_eq!(p.server_max_window_bits, 12);
        assert_eq!(r, "permessage-deflate; server_max_window_bits=12");
    }

    /// Inflate with flate2's own reader (not our Codec): an independent check that the
    /// wire bytes are a complete raw deflate stream up to the sync flush.
    fn inflate(wire: &[u8], expect_len: usize) -> Vec<u8> {
        let mut input = wire.to_vec();
        input.extend_from_slice(&TAIL);
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(expect_len + 1024);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("valid raw deflate");
        assert_eq!(
            d.total_in() as usize,
            input.len(),
            "stream has unread bytes"
        );
        out
    }

    /// xorshift64: incompressible bytes without a dependency.
    pub(super) fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    /// Issue #11: 4 KiB of zeros then 60 KiB of noise came back 3 KiB short.
    #[test]
    fn compressible_start_then_noise_survives() {
        let mut msg = vec![0u8; 4096];
        msg.extend(noise(61440, 7));
        for bits in 9..=15 {
            for takeover in [false, true] {
                let params = Params {
                    server_no_context_takeover: takeover,
                    client_no_context_takeover: takeover,
                    server_max_window_bits: bits,
                };
                let mut server = Codec::new(params);
                let mut client = Codec::new(params);
                for _ in 0..3 {
                    let wire = server.compress(&msg).unwrap();
                    assert!(!wire.ends_with(&TAIL));
                    if takeover {
                        assert_eq!(inflate(&wire, msg.len()), msg);
                    }
                    assert_eq!(client.decompress(&wire, 1 << 20).unwrap(), msg);
                }
            }
        }
        let mut big = noise(128 << 10, 3);
        big[..8192].fill(b'a');
        let wire = Codec::new(Params::default()).compress(&big).unwrap();
        assert_eq!(inflate(&wire, big.len()), big);
    }

    /// With the output buffer capped at the limit: a message of exactly --ws-max-size
    /// still inflates, one byte more is refused with 1009.
    #[test]
    fn inflation_stops_at_the_limit() {
        let limit = 100_000;
        let params = Params {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Params::default()
        };
        let mut client = Codec::new(params);
        let mut server = Codec::new(params);
        let at_limit = client.compress(&vec![b'z'; limit]).unwrap();
        assert_eq!(server.decompress(&at_limit, limit).unwrap().len(), limit);
        let over = client.compress(&vec![b'z'; limit + 1]).unwrap();
        assert_eq!(server.decompress(&over, limit).unwrap_err().code, TOO_BIG);
    }

    #[test]
    fn an_eight_bit_window_sends_uncompressed() {
        let params = Params {
            server_max_window_bits: 8,
            ..Params::default()
        };
        let mut codec = Codec::new(params);
        assert!(codec.compress(&[b'a'; 1000]).is_none());
        // The client's compressed messages still inflate.
        let wire = Codec::new(Params::default())
            .compress(&[b'b'; 1000])
            .unwrap();
        assert_eq!(codec.decompress(&wire, 1 << 20).unwrap(), [b'b'; 1000]);
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for takeover in [false, true] {
            let params = Params {
                server_no_context_takeover: takeover,
                client_no_context_takeover: takeover,
                server_max_window_bits: 15,
            };
            let mut server = Codec::new(params);
            // Our own compressor stands in for the client's: same wire format.
            let mut client = Codec::new(params);
            for round in 0..3 {
                let msg = format!("hello {round} ").repeat(1000);
                let wire = server.compress(msg.as_bytes()).unwrap();
                assert!(wire.len() < msg.len() / 10);
                let back = client.decompress(&wire, 1 << 20).unwrap();
                assert_eq!(back, msg.as_bytes());
            }
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let mut codec = Codec::new(Params::default());
        let wire = codec.compress(&vec![0u8; 10 << 20]).unwrap();
        let mut other = Codec::new(Params::default());
        assert_eq!(other.decompress(&wire, 1 << 20).unwrap_err().code, TOO_BIG);
        assert_eq!(
            Codec::new(Params::default())
                .decompress(&[0xFF; 16], 1000)
                .unwrap_err()
                .code,
            INVALID_DATA
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A message of runs: zeros, repeated text and noise, in any order and size, so
    /// compressible and incompressible stretches meet at every offset.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let run = (0u8..3, 1usize..40_000, any::<u64>()).prop_map(|(kind, len, seed)| match kind {
            0 => vec![0u8; len],
            1 => b"ferrocorn ".iter().copied().cycle().take(len).collect(),
            _ => super::tests::noise(len, seed | 1),
        });
        prop::collection::vec(run, 1..6).prop_map(|runs| runs.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn messages_round_trip(
            msgs in prop::collection::vec(message(), 1..4),
            bits in 9u8..=15,
            takeover in any::<bool>(),
        ) {
            let params = Params {
                server_no_context_takeover: takeover,
                client_no_context_takeover: takeover,
                server_max_window_bits: bits,
            };
            let mut server = Codec::new(params);
            let mut client = Codec::new(params);
            for msg in &msgs {
                let wire = server.compress(msg).unwrap();
                prop_assert_eq!(&client.decompress(&wire, 1 << 24).unwrap(), msg);
            }
        }
    }
}
