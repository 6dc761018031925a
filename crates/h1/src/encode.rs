//! Writing heads and chunk framing. A relay writes what it parsed (already checked) and values
//! of its own (checked here: a value with CR, LF or NUL would start a new field or message).

use crate::head::Version;
use crate::Error;

/// The last chunk of a body without trailers (with trailers: [`LAST_CHUNK`], the trailer
/// lines, then CRLF).
pub const END_CHUNKED: &[u8] = b"0\r\n\r\n";
pub const LAST_CHUNK: &[u8] = b"0\r\n";

fn version(v: Version) -> &'static [u8] {
    match v {
        Version::Http10 => b"HTTP/1.0",
        Version::Http11 => b"HTTP/1.1",
    }
}

/// `METHOD target HTTP/1.x` CRLF.
pub fn request_line(out: &mut Vec<u8>, method: &[u8], target: &[u8], v: Version) {
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.push(b' ');
    out.extend_from_slice(version(v));
    out.extend_from_slice(b"\r\n");
}

/// `HTTP/1.x status reason` CRLF (the status as three digits).
pub fn status_line(out: &mut Vec<u8>, v: Version, status: u16, reason: &[u8]) {
    out.extend_from_slice(version(v));
    out.push(b' ');
    let s = status.min(999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// `name: value` CRLF, for a field parsed by this crate (its octets were checked then).
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: value` CRLF for a field the relay adds: the name must be a token and the value
/// visible octets, spaces and tabs (RFC 9110 §5.5), so it cannot end the line early.
pub fn checked_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), Error> {
    if name.is_empty() || !name.iter().all(|&b| crate::chunked::is_tchar(b)) {
        return Err(Error::Malformed("invalid header name"));
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
    {
        return Err(Error::Malformed("invalid header value"));
    }
    field(out, name, value);
    Ok(())
}

/// The blank line that ends a head.
pub fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line, `<hex>` CRLF, for `len` bytes of data (never 0: that is the last
/// chunk). The data and its CRLF follow.
#[derive(Clone, Copy)]
pub struct ChunkHeader {
    bytes: [u8; 18],
    len: u8,
}

impl AsRef<[u8]> for ChunkHeader {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

pub fn chunk_header(len: u64) -> ChunkHeader {
    debug_assert!(len > 0, "a zero-length chunk ends the body");
    let digits = (16 - len.leading_zeros() as usize / 4).max(1);
    let mut bytes = [0u8; 18];
    for (i, b) in bytes[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    bytes[digits] = b'\r';
    bytes[digits + 1] = b'\n';
    ChunkHeader {
        bytes,
        len: (digits + 2) as u8,
    }
}
