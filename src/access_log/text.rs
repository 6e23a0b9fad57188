//! Client bytes made safe for a log line (escaped text, JSON strings) and the times
//! the lines carry.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Client bytes for a text line: valid UTF-8 as is, except that `"` and `\` are
/// backslash-escaped and control characters (C0, DEL, C1) and invalid bytes become
/// `\xNN`, so nothing can end the line, open a new field or drive the terminal.
pub(super) fn push_escaped(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// A JSON string of client bytes: invalid UTF-8 bytes become the text `\xNN` (JSON
/// strings are Unicode), then serde_json escapes quotes, backslashes and controls.
pub(super) fn json_string(out: &mut String, bytes: &[u8]) {
    let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            let mut s = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                s.push_str(chunk.valid());
                for b in chunk.invalid() {
                    let _ = write!(s, "\\x{b:02x}");
                }
            }
            s.into()
        }
    };
    out.push_str(&serde_json::to_string(text.as_ref()).expect("a str serialises"));
}

pub(super) fn json_opt(out: &mut String, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => json_string(out, b),
        None => out.push_str("null"),
    }
}

fn broken_down(t: SystemTime, local: bool) -> (libc::tm, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: plain C calls that fill the struct we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe {
        if local {
            libc::localtime_r(&secs, &mut tm);
        } else {
            libc::gmtime_r(&secs, &mut tm);
        }
    }
    (tm, since.subsec_micros())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `[30/Nov/2026:21:58:00 +0100]`, local time, as gunicorn's %(t)s.
pub(super) fn clf_time(t: SystemTime) -> String {
    let (tm, _) = broken_down(t, true);
    let offset = tm.tm_gmtoff / 60;
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} {sign}{:02}{:02}]",
        tm.tm_mday,
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        offset.abs() / 60,
        offset.abs() % 60
    )
}

/// ISO 8601 in UTC with microseconds: `2026-11-30T21:58:00.123456Z`.
pub(super) fn iso_time(t: SystemTime) -> String {
    let (tm, micros) = broken_down(t, false);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_client_bytes() {
        let mut s = String::new();
        push_escaped(&mut s, b"/a\"b\\c\n\x1b[31m\xff\xc2\x85ok\xc3\xa9");
        assert_eq!(s, "/a\\\"b\\\\c\\x0a\\x1b[31m\\xff\\xc2\\x85ok\u{e9}");
        let mut j = String::new();
        json_string(&mut j, b"a\"\n\xff");
        assert_eq!(j, r#""a\"\n\\xff""#);
    }
}
