//! Message heads (RFC 9112 §2–5), parsed in place: the start line and field lines become
//! offsets into the bytes that were read, so a head costs no allocation per field and the
//! bytes can be passed on unchanged where nothing needs changing. httparse tokenizes; this
//! module adds the limits and the CRLF rule (see the crate's doc).

use std::mem::MaybeUninit;

use crate::Error;

/// A piece of a head: `start..end` in the buffer the head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf`, which must be the buffer it was parsed from.
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Where `part` (a slice of `buf`) lies in `buf`. Heads are bounded far below 4 GiB
    /// ([`Limits::max_head_bytes`]), so the offsets fit. The tokenizer hands out a static `""`
    /// for some empty pieces (a missing reason phrase); an empty part is an empty span.
    fn within(buf: &[u8], part: &[u8]) -> Span {
        if part.is_empty() {
            return Span::default();
        }
        let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        assert!(
            start + part.len() <= buf.len(),
            "a parsed piece lies outside its buffer"
        );
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Span, target: Span },
    Response { status: u16, reason: Span },
}

/// One field line: its name as sent (compare without case) and its value without the
/// whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// Bounds on a head. The defaults are Envoy's (`max_request_headers_kb` 60,
/// `max_headers_count` 100), the sidecar Istio users know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head_bytes: usize,
    /// At most [`MAX_FIELDS`].
    pub max_fields: usize,
}

/// The most field lines any [`Limits`] can allow: the tokenizer's slots live on the stack.
pub const MAX_FIELDS: usize = 100;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 60 * 1024,
            max_fields: MAX_FIELDS,
        }
    }
}

/// A parsed head. Kept and reused across the messages of a connection, so its field list is
/// allocated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, the blank line included: the body (if any) starts here.
    pub len: usize,
    pub version: Version,
    pub line: StartLine,
    pub fields: Vec<Field>,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            len: 0,
            version: Version::Http11,
            line: StartLine::Response {
                status: 0,
                reason: Span::default(),
            },
            fields: Vec::new(),
        }
    }
}

/// What the tokenizer accepts beyond its defaults: nothing. Spelled out so a reader sees the
/// leniencies we do not take (each one is a known way for two parsers to disagree).
fn strict() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .ignore_invalid_headers_in_requests(false)
        .ignore_invalid_headers_in_responses(false);
    c
}

type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_FIELDS];

impl Head {
    /// Parses a request head from the start of `buf`. `Ok(false)`: the head is not complete
    /// yet (read more and call again with all bytes so far).
    pub fn parse_request(&mut self, buf: &[u8], limits: &Limits) -> Result<bool, Error> {
        let mut slots: Slots<'_> = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let n = limits.max_fields.min(MAX_FIELDS);
        let mut req = httparse::Request::new(&mut []);
        let parsed = strict().parse_request_with_uninit_headers(&mut req, buf, &mut slots[..n]);
        let Some(len) = complete(parsed, buf, limits)? else {
            return Ok(false);
        };
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(Error::Malformed("incomplete request line"));
        };
        self.fill(buf, len, version, req.headers)?;
        self.line = StartLine::Request {
            method: Span::within(buf, method.as_bytes()),
            target: Span::within(buf, target.as_bytes()),
        };
        Ok(true)
    }

    /// Parses a response head from the start of `buf`, as [`Head::parse_request`].
    pub fn parse_response(&mut self, buf: &[u8], limits: &Limits) -> Result<bool, Error> {
        let mut slots: Slots<'_> = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let n = limits.max_fields.min(MAX_FIELDS);
        let mut res = httparse::Response::new(&mut []);
        let parsed = strict().parse_response_with_uninit_headers(&mut res, buf, &mut slots[..n]);
        let Some(len) = complete(parsed, buf, limits)? else {
            return Ok(false);
        };
        let (Some(status), Some(version)) = (res.code, res.version) else {
            return Err(Error::Malformed("incomplete status line"));
        };
        // The reason phrase is optional (`HTTP/1.1 200\r\n`); an empty span then.
        let reason = res
            .reason
            .map_or(Span::default(), |r| Span::within(buf, r.as_bytes()));
        self.fill(buf, len, version, res.headers)?;
        self.line = StartLine::Response { status, reason };
        Ok(true)
    }

    fn fill(
        &mut self,
        buf: &[u8],
        len: usize,
        version: u8,
        headers: &[httparse::Header<'_>],
    ) -> Result<(), Error> {
        self.version = match version {
            0 => Version::Http10,
            1 => Version::Http11,
            _ => return Err(Error::Version),
        };
        self.len = len;
        self.fields.clear();
        self.fields.extend(headers.iter().map(|h| Field {
            name: Span::within(buf, h.name.as_bytes()),
            value: Span::within(buf, h.value),
        }));
        Ok(())
    }

    /// The first value of the field `name` (ASCII case-insensitive).
    pub fn get<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.get_all(buf, name).next()
    }

    /// Every value of the field `name`, in order.
    pub fn get_all<'a, 'b: 'a>(
        &'a self,
        buf: &'b [u8],
        name: &'a str,
    ) -> impl Iterator<Item = &'b [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| f.value.of(buf))
    }

    /// The request's method, target; empty for a response.
    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match self.line {
            StartLine::Request { method, .. } => method.of(buf),
            StartLine::Response { .. } => b"",
        }
    }

    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match self.line {
            StartLine::Request { target, .. } => target.of(buf),
            StartLine::Response { .. } => b"",
        }
    }

    /// The response's status; 0 for a request.
    pub fn status(&self) -> u16 {
        match self.line {
            StartLine::Response { status, .. } => status,
            StartLine::Request { .. } => 0,
        }
    }
}

/// The head's length once the tokenizer found all of it, checked against the limits and the
/// CRLF rule; `None` while it is still arriving.
fn complete(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<usize>, Error> {
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(Error::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyFields),
        Err(httparse::Error::Version) => return Err(Error::Version),
        Err(e) => return Err(Error::Malformed(describe(e))),
    };
    if len > limits.max_head_bytes {
        return Err(Error::HeadTooLarge);
    }
    if !crlf_only(&buf[..len]) {
        return Err(Error::BareLineEnding);
    }
    Ok(Some(len))
}

/// Every LF is preceded by CR. (The tokenizer already refuses a CR not followed by LF, and
/// takes a bare LF as a line end, which a parser behind us might not.) A head has a dozen
/// lines in hundreds of bytes: memchr finds the LFs, a byte loop would cost more than the
/// tokenizer itself.
fn crlf_only(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).all(|i| i > 0 && head[i - 1] == b'\r')
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}
