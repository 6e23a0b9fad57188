//! Request body decoding: a byte count, or chunked transfer coding held strictly to
//! RFC 9112 section 7.1 (CRLF only, hex sizes without sign or prefix, bounded chunk
//! extensions and trailers, trailers parsed and dropped).

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (size, extensions, CRLF) we accept.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer bytes we accept after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// Nothing more can be decoded from what's buffered.
    NeedMore,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub struct BodyError(pub &'static str);

#[derive(Debug)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunked),
}

#[derive(Debug)]
pub enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers { seen: usize },
    Done,
}

impl Decoder {
    pub fn chunked() -> Self {
        Decoder::Chunked(Chunked::Size)
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Length(0) | Decoder::Chunked(Chunked::Done))
    }

    /// Decode the next piece from `buf`, consuming what it uses. `limit` caps one piece.
    pub fn step(&mut self, buf: &mut BytesMut, limit: usize) -> Result<Step, BodyError> {
        match self {
            Decoder::Length(0) => Ok(Step::Done),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = (*remaining).min(buf.len() as u64).min(limit as u64) as usize;
                *remaining -= n as u64;
                Ok(Step::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(state) => state.step(buf, limit),
        }
    }
}

impl Chunked {
    fn step(&mut self, buf: &mut BytesMut, limit: usize) -> Result<Step, BodyError> {
        loop {
            match self {
                Chunked::Done => return Ok(Step::Done),
                Chunked::Size => {
                    let Some(line_len) = find_crlf(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = parse_size_line(&buf[..line_len])?;
                    buf.advance(line_len + 2);
                    *self = if size == 0 {
                        Chunked::Trailers { seen: 0 }
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = (*remaining).min(buf.len() as u64).min(limit as u64) as usize;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        *self = Chunked::DataEnd;
                    }
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers { seen } => {
                    let Some(line_len) = find_crlf(buf, MAX_TRAILERS - *seen)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line_len == 0 {
                        buf.advance(2);
                        *self = Chunked::Done;
                        return Ok(Step::Done);
                    }
                    check_trailer(&buf[..line_len])?;
                    *seen += line_len + 2;
                    buf.advance(line_len + 2);
                }
            }
        }
    }
}

/// Length of the line before CRLF, if a whole line is buffered. A bare CR or LF, or a
/// line longer than `max`, is an error.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, BodyError> {
    for (i, &b) in buf.iter().enumerate() {
        if i > max {
            return Err(BodyError("chunk line or trailers too long"));
        }
        match b {
            b'\n' => return Err(BodyError("bare LF in chunked framing")),
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(BodyError("bare CR in chunked framing")),
                    None => Ok(None),
                }
            }
            _ => {}
        }
    }
    if buf.len() > max {
        return Err(BodyError("chunk line or trailers too long"));
    }
    Ok(None)
}

/// `1*HEXDIG [ ; ext ]`: at most 16 hex digits (fits u64), no sign, no `0x`.
fn parse_size_line(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError("invalid chunk size"));
    }
    if digits > 16 {
        return Err(BodyError("chunk size overflows"));
    }
    let rest = &line[digits..];
    let rest_trimmed = rest
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .map_or(&rest[rest.len()..], |p| &rest[p..]);
    if !rest_trimmed.is_empty() && rest_trimmed[0] != b';' {
        return Err(BodyError("invalid chunk size"));
    }
    if rest_trimmed
        .iter()
        .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(BodyError("control character in chunk extension"));
    }
    let hex = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    u64::from_str_radix(hex, 16).map_err(|_| BodyError("chunk size overflows"))
}

fn check_trailer(line: &[u8]) -> Result<(), BodyError> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(BodyError("trailer field without a colon"));
    };
    if http::HeaderName::from_bytes(&line[..colon]).is_err() {
        return Err(BodyError("invalid trailer field name"));
    }
    if line[colon + 1..]
        .iter()
        .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(BodyError("control character in trailer field"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, usize), BodyError> {
        let mut buf = BytesMut::from(input);
        let mut d = Decoder::chunked();
        let mut out = Vec::new();
        loop {
            match d.step(&mut buf, usize::MAX)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::NeedMore => return Ok((out, false, buf.len())),
                Step::Done => return Ok((out, true, buf.len())),
            }
        }
    }

    #[test]
    fn decodes_chunks_and_leaves_the_next_request() {
        let (data, done, left) =
            decode_all(b"3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET").unwrap();
        assert_eq!(data, b"abc0123456789");
        assert!(done);
        assert_eq!(left, 3);
    }

    #[test]
    fn waits_for_more() {
        let (data, done, _) = decode_all(b"5\r\nab").unwrap();
        assert_eq!(data, b"ab");
        assert!(!done);
    }

    #[test]
    fn strict_framing() {
        for bad in [
            &b"-1\r\n"[..],
            b"0x5\r\nhello\r\n",
            b"+5\r\n",
            b"11111111111111111\r\n",
            b"3\r\nabcd\r\n",
            b"3\nabc\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"3;a\rb\r\nabc\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b" 3\r\nabc\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn length_body() {
        let mut buf = BytesMut::from(&b"helloGET"[..]);
        let mut d = Decoder::Length(5);
        assert_eq!(
            d.step(&mut buf, 3).unwrap(),
            Step::Data(Bytes::from_static(b"hel"))
        );
        assert_eq!(
            d.step(&mut buf, 9).unwrap(),
            Step::Data(Bytes::from_static(b"lo"))
        );
        assert_eq!(d.step(&mut buf, 9).unwrap(), Step::Done);
        assert_eq!(&buf[..], b"GET");
    }
}
