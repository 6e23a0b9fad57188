//! permessage-deflate (RFC 7692): negotiating it, and compressing and decompressing
//! whole messages with raw DEFLATE and a sync flush per message.

use super::frame::{Failure, INVALID_DATA, TOO_BIG};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What a client offer asked for that the server honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
}

/// Pick the first permessage-deflate offer we can honour from the client's
/// Sec-WebSocket-Extensions values; returns it with our response header value.
///
/// We compress with a full 32 KiB window, so an offer that limits the server's window
/// below 15 bits is declined (the client then falls back to its next offer or to no
/// compression). Any client window fits our decompressor.
pub fn negotiate(offers: &str) -> Option<(Params, String)> {
    'offers: for offer in offers.split(',') {
        let mut parts = offer.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            continue;
        }
        let mut params = Params::default();
        let mut server_bits = false;
        let mut seen = Vec::new();
        for param in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            if seen.contains(&name) {
                continue 'offers;
            }
            seen.push(name);
            match (name, value) {
                ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
                ("server_max_window_bits", Some("15")) => server_bits = true,
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v))
                    if v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)) => {}
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
        if server_bits {
            response.push_str("; server_max_window_bits=15");
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
    compress: Compress,
    decompress: Decompress,
}

impl Codec {
    pub fn new(params: Params) -> Codec {
        Codec {
            params,
            compress: Compress::new(Compression::fast(), false),
            decompress: Decompress::new(false),
        }
    }

    pub fn compress(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = self.compress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(data.len() / 4 + 64);
            }
            let consumed = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate of a valid stream does not fail");
            let consumed = (self.compress.total_in() - start) as usize;
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.params.server_no_context_takeover {
            self.compress.reset();
        }
        out
    }

    /// Inflate one message; more than `limit` bytes out closes with 1009 (no
    /// decompression bomb gets past --ws-max-size).
    pub fn decompress(&mut self, data: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
        let mut input = Vec::with_capacity(data.len() + TAIL.len());
        input.extend_from_slice(data);
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity((data.len() * 3).min(limit) + 64);
        let start_in = self.decompress.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.len().max(1024));
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
        let (p, r) = negotiate(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate; \
             server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(negotiate("x-webkit-deflate-frame").is_none());
        assert!(negotiate("permessage-deflate; bogus").is_none());
        assert!(negotiate("permessage-deflate; client_max_window_bits=20").is_none());
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for takeover in [false, true] {
            let params = Params {
                server_no_context_takeover: takeover,
                client_no_context_takeover: takeover,
            };
            let mut server = Codec::new(params);
            // Our own compressor stands in for the client's: same wire format.
            let mut client = Codec::new(params);
            for round in 0..3 {
                let msg = format!("hello {round} ").repeat(1000);
                let wire = server.compress(msg.as_bytes());
                assert!(wire.len() < msg.len() / 10);
                let back = client.decompress(&wire, 1 << 20).unwrap();
                assert_eq!(back, msg.as_bytes());
            }
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let mut codec = Codec::new(Params::default());
        let wire = codec.compress(&vec![0u8; 10 << 20]);
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
