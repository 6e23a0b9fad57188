//! Frames: parsing client frames (which must be masked) and writing server frames
//! (which must not be).

use bytes::{BufMut, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub reason: &'static str,
}

pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;

fn protocol(reason: &'static str) -> Failure {
    Failure {
        code: PROTOCOL_ERROR,
        reason,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// Set on the first frame of a compressed message (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// Bytes of the head itself.
    pub head_len: usize,
}

impl FrameHead {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parse a client frame head. `Ok(None)`: more bytes needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, Failure> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x30 != 0 {
        return Err(protocol("reserved bits set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(protocol("client frames must be masked"));
    }
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(protocol("frame length out of range"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if buf.len() < pos + 4 {
        return Ok(None);
    }
    let mask = buf[pos..pos + 4].try_into().expect("4 bytes");
    pos += 4;
    let head = FrameHead {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode,
        mask,
        payload_len,
        head_len: pos,
    };
    if head.is_control() && (!head.fin || payload_len > 125) {
        return Err(protocol(
            "control frames must be whole and at most 125 bytes",
        ));
    }
    Ok(Some(head))
}

pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Append one unmasked server frame.
pub fn write_frame(out: &mut BytesMut, opcode: u8, rsv1: bool, payload: &[u8]) {
    out.put_u8(0x80 | if rsv1 { 0x40 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= 0xFFFF {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
}

/// Append a close frame; 1005 ("no code") is sent as an empty close.
pub fn write_close(out: &mut BytesMut, code: u16, reason: &str) {
    if code == 1005 {
        write_frame(out, OP_CLOSE, false, &[]);
        return;
    }
    let mut reason = reason;
    // A control frame carries at most 125 bytes: 2 for the code, 123 for the reason.
    while reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    write_frame(out, OP_CLOSE, false, &payload);
}

/// The code and reason of a client's close frame (1005 when it has no code).
pub fn parse_close(payload: &[u8]) -> Result<(u16, String), Failure> {
    match payload.len() {
        0 => Ok((1005, String::new())),
        1 => Err(protocol("close frame of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| Failure {
                code: INVALID_DATA,
                reason: "close reason is not UTF-8",
            })?;
            Ok((code, reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![b0];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn parses_masked_frames_of_every_length_form() {
        for len in [0usize, 125, 126, 300, 70000] {
            let payload = vec![7u8; len];
            let mut frame = if len <= 0xFFFF {
                client_frame(0x82, &payload)
            } else {
                let mut f = vec![0x82, 0x80 | 127];
                f.extend_from_slice(&(len as u64).to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 0]);
                f.extend_from_slice(&payload);
                f
            };
            let head = parse_head(&frame).unwrap().unwrap();
            assert_eq!(head.payload_len, len as u64);
            assert!(head.fin);
            let body = &mut frame[head.head_len..];
            unmask(body, head.mask);
            assert!(body.iter().all(|&b| b == 7));
            // Any shorter prefix of the head asks for more bytes.
            for cut in 0..head.head_len {
                assert_eq!(parse_head(&frame[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn rejects_what_rfc_6455_forbids() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert_eq!(parse_head(&unmasked).unwrap_err().code, PROTOCOL_ERROR);
        assert!(parse_head(&client_frame(0xA1, b"x")).is_err()); // RSV2
        assert!(parse_head(&client_frame(0x83, b"x")).is_err()); // opcode 3
        assert!(parse_head(&client_frame(0x09, b"x")).is_err()); // fragmented ping
        assert!(parse_head(&client_frame(0x89, &[0; 126])).is_err()); // long ping
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close(&[]).unwrap(), (1005, String::new()));
        assert_eq!(
            parse_close(&[0x0F, 0xA1, b'o', b'k']).unwrap(),
            (4001, "ok".into())
        );
        assert!(parse_close(&[3]).is_err());
        assert_eq!(parse_close(&[0x03, 0xED]).unwrap_err().code, PROTOCOL_ERROR); // 1005
        assert_eq!(
            parse_close(&[0x03, 0xE8, 0xFF]).unwrap_err().code,
            INVALID_DATA
        );
        let mut out = BytesMut::new();
        write_close(&mut out, 4001, &"é".repeat(100));
        assert!(out.len() <= 127);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
