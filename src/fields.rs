//! The header fields of a response (or of a WebSocket accept), kept as the lines
//! HTTP/1.1 writes: `name: value\r\n` after each other in one buffer, names lower-cased.
//!
//! Why not an `http::HeaderMap`: the fields are built on the Python thread and written
//! on the I/O thread. A HeaderMap costs two tables plus one allocation per value, all
//! freed on the other thread (where glibc's arena locks then contend); these lines are
//! one allocation, which HTTP/1.1 copies out as they are. HTTP/2 and trailers, which
//! need a HeaderMap, build one on the I/O thread (`append_to`).
//!
//! Validation is the http crate's, so the conversion never fails: a name is a token
//! (RFC 9110 5.6.2), lower-cased; a value has no control byte but tab, so no CR or LF
//! can end the head early.

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Fields {
    lines: Vec<u8>,
}

/// One field, borrowed from the lines.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Lower-case.
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// `name: value\r\n`, as HTTP/1.1 writes it.
    pub line: &'a [u8],
}

/// Why a field was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    Name,
    Value,
}

/// The http crate's longest name.
const MAX_NAME: usize = (1 << 16) - 1;

/// A typical response's fields fit without growing (content-type, content-length and a
/// couple more).
const TYPICAL: usize = 128;

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    /// Room for about `count` typical fields (nothing to do in a reused buffer that
    /// has it already).
    pub fn reserve_for(&mut self, count: usize) {
        let bytes = count.saturating_mul(40).clamp(TYPICAL, 4096);
        self.lines.reserve(bytes.saturating_sub(self.lines.len()));
    }

    /// Add a field after checking it (a name is lower-cased on the way in).
    pub fn append(&mut self, name: &[u8], value: &[u8]) -> Result<(), Invalid> {
        if name.is_empty() || name.len() > MAX_NAME || !name.iter().all(|&b| is_token(b)) {
            return Err(Invalid::Name);
        }
        if !value.iter().all(|&b| is_value_byte(b)) {
            return Err(Invalid::Value);
        }
        self.lines.reserve(name.len() + value.len() + 4);
        self.lines.extend(name.iter().map(u8::to_ascii_lowercase));
        self.push_rest(value);
        Ok(())
    }

    /// Add one of our own fields, known to be valid.
    pub fn push(&mut self, name: &'static str, value: &'static str) {
        debug_assert!(self
            .clone()
            .append(name.as_bytes(), value.as_bytes())
            .is_ok());
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        self.lines.extend_from_slice(name.as_bytes());
        self.push_rest(value.as_bytes());
    }

    fn push_rest(&mut self, value: &[u8]) {
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
    }

    /// Empty, keeping the buffer for the next response (see `State::spare_fields`).
    pub fn clear(&mut self) {
        self.lines.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.lines }
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|f| f.name == name).map(|f| f.value)
    }

    /// The same fields without any named `name` (lower-case).
    pub fn without(&self, name: &[u8]) -> Fields {
        let mut kept = Fields {
            lines: Vec::with_capacity(self.lines.len()),
        };
        for field in self.iter().filter(|f| f.name != name) {
            kept.lines.extend_from_slice(field.line);
        }
        kept
    }

    /// Append the fields `keep` accepts to a HeaderMap (HTTP/2, trailers).
    pub fn append_to(&self, map: &mut HeaderMap, mut keep: impl FnMut(&Field<'_>) -> bool) {
        for field in self.iter().filter(|f| keep(f)) {
            // Checked on the way in by the same rules as the http crate's, so neither
            // conversion fails; a field that somehow did would be left out, not sent.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(field.name),
                HeaderValue::from_bytes(field.value),
            ) {
                map.append(name, value);
            }
        }
    }
}

pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        // Names hold no ':' and values no '\n' (both checked in `append`), so the first
        // of each ends the name and the line.
        let end = self.rest.iter().position(|&b| b == b'\n')? + 1;
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        let colon = line.iter().position(|&b| b == b':')?;
        Some(Field {
            name: &line[..colon],
            value: &line[colon + 2..line.len() - 2],
            line,
        })
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = Field<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// RFC 9110 tchar.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What http's HeaderValue accepts: visible ASCII, space, tab and obs-text.
fn is_value_byte(b: u8) -> bool {
    (b >= 0x20 && b != 0x7f) || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_wire_form_with_lower_case_names() {
        let mut f = Fields::new();
        f.append(b"Content-Type", b"text/plain").unwrap();
        f.append(b"x-a", b"").unwrap();
        f.push("content-length", "5");
        assert_eq!(
            f.iter().map(|f| f.line).collect::<Vec<_>>().concat(),
            b"content-type: text/plain\r\nx-a: \r\ncontent-length: 5\r\n"
        );
        let pairs: Vec<_> = f.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(
            pairs,
            [
                (&b"content-type"[..], &b"text/plain"[..]),
                (b"x-a", b""),
                (b"content-length", b"5")
            ]
        );
        assert_eq!(f.get(b"content-length"), Some(&b"5"[..]));
        assert_eq!(f.without(b"x-a").get(b"x-a"), None);
        assert_eq!(f.without(b"x-a").iter().count(), 2);
    }

    #[test]
    fn refuses_what_http_refuses() {
        let mut f = Fields::new();
        assert_eq!(f.append(b"", b"v"), Err(Invalid::Name));
        assert_eq!(f.append(b"a b", b"v"), Err(Invalid::Name));
        assert_eq!(f.append(b"a:b", b"v"), Err(Invalid::Name));
        assert_eq!(f.append(b"a", b"x\r\ny: z"), Err(Invalid::Value));
        assert_eq!(f.append(b"a", b"x\0"), Err(Invalid::Value));
        assert!(f.is_empty());
        // Values may carry colons, tabs and obs-text; each converts as http would.
        f.append(b"X-Tab", b"a:\tb \xe9").unwrap();
        let mut map = HeaderMap::new();
        f.append_to(&mut map, |_| true);
        assert_eq!(map["x-tab"].as_bytes(), b"a:\tb \xe9");
        for b in 0..=255u8 {
            let name = [b];
            assert_eq!(
                Fields::new().append(&name, b"v").is_ok(),
                HeaderName::from_bytes(&name).is_ok(),
                "name byte {b}"
            );
            assert_eq!(
                Fields::new().append(b"v", &name).is_ok(),
                HeaderValue::from_bytes(&name).is_ok(),
                "value byte {b}"
            );
        }
    }
}
