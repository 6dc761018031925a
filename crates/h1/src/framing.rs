//! Where a message's body ends and what happens to the connection after it (RFC 9112 §6,
//! §9.3), decided once per head from its few framing fields. Anything another parser could
//! read differently is an error here, not a guess: see the crate's doc for the rules.

use crate::head::{Head, Span, StartLine, Version};
use crate::target::Target;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (no framing fields; HEAD, 1xx, 204 and 304 responses).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without a length: its body ends when the server closes.
    UntilClose,
    /// After this head the connection carries another protocol: a 101 to an upgrade request,
    /// a 2xx to CONNECT.
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// A request's target form (`Origin` for a response, which has none).
    pub target: Target,
    pub body: Body,
    /// The connection can carry another message after this exchange.
    pub keep_alive: bool,
    /// A request asks to switch protocols (`Connection: upgrade` with `Upgrade`, or CONNECT).
    pub upgrade: bool,
    /// A request that waits for `100 Continue` before sending its body (HTTP/1.1 only).
    pub expect_continue: bool,
    /// A 1xx response other than 101: the final response follows on the same connection.
    pub interim: bool,
    /// The request's one `Host` value.
    pub host: Option<Span>,
}

/// The framing of a request. Errors carry the status to answer with ([`Error::status`]).
pub fn request_framing(head: &Head, buf: &[u8]) -> Result<Framing, Error> {
    let f = Fields::scan(head, buf)?;
    let http11 = head.version == Version::Http11;
    match (f.hosts, http11) {
        (1, _) | (0, false) => {}
        _ => return Err(Error::Host),
    }
    if let Some(host) = f.host {
        let host = host.of(buf);
        // RFC 9110 §7.2: empty when the target has no authority.
        if !host.is_empty() && crate::target::authority(host).is_none() {
            return Err(Error::Host);
        }
    }
    let StartLine::Request { method, target } = head.line else {
        return Err(Error::Malformed("a response where a request was expected"));
    };
    let target = crate::target::classify(method.of(buf), target, buf)?;
    let connect = target == Target::Authority;
    Ok(Framing {
        target,
        body: f.body(head.version, Body::Empty)?,
        keep_alive: f.keep_alive(head.version),
        upgrade: connect || (http11 && f.connection_upgrade && f.upgrade),
        expect_continue: http11 && f.expect_continue,
        interim: false,
        host: f.host,
    })
}

/// The framing of a response to a request with `method` that did (`upgrade`) or did not ask
/// to switch protocols. Every error here is the proxy's 502 to its client.
pub fn response_framing(
    head: &Head,
    buf: &[u8],
    method: &[u8],
    upgrade: bool,
) -> Result<Framing, Error> {
    let f = Fields::scan(head, buf)?;
    let status = head.status();
    // The tokenizer takes any three digits; 000-099 mean nothing, and hyper's client refuses
    // them (and what a 6xx means, nobody says).
    if !(100..=599).contains(&status) {
        return Err(Error::Malformed("a status outside 100-599"));
    }
    let mut framing = Framing {
        target: Target::Origin,
        body: Body::Empty,
        keep_alive: f.keep_alive(head.version),
        upgrade: false,
        expect_continue: false,
        interim: false,
        host: None,
    };
    match status {
        101 if upgrade && head.version == Version::Http11 && method != b"CONNECT" => {
            framing.body = Body::Tunnel;
            framing.keep_alive = false;
        }
        101 => {
            return Err(Error::Malformed(
                "101 Switching Protocols to a request that did not ask",
            ))
        }
        100..=199 => framing.interim = true,
        200..=299 if method == b"CONNECT" => {
            framing.body = Body::Tunnel;
            framing.keep_alive = false;
        }
        // No body, whatever the fields say (RFC 9112 §6.3 rule 1); an encoder passing this
        // head on drops Transfer-Encoding and, for 204, Content-Length.
        204 | 304 => {}
        _ if method == b"HEAD" => {}
        _ => {
            framing.body = f.body(head.version, Body::UntilClose)?;
            if framing.body == Body::UntilClose {
                framing.keep_alive = false;
            }
        }
    }
    Ok(framing)
}

/// What the framing fields of one head say, from one pass over its fields.
#[derive(Default)]
struct Fields {
    transfer_encoding: bool,
    /// The one `Transfer-Encoding` field is the word `chunked` and nothing else.
    chunked_only: bool,
    transfer_encodings: u32,
    length: Option<u64>,
    length_text: Option<Span>,
    close: bool,
    keep_alive_token: bool,
    connection_upgrade: bool,
    upgrade: bool,
    expect_continue: bool,
    hosts: u32,
    host: Option<Span>,
}

impl Fields {
    fn scan(head: &Head, buf: &[u8]) -> Result<Fields, Error> {
        let mut f = Fields::default();
        for field in &head.fields {
            let name = field.name.of(buf);
            let value = field.value.of(buf);
            // A length switch, then one comparison: most names match none of these.
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => {
                    f.hosts += 1;
                    f.host = Some(field.value);
                }
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    f.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
                }
                7 if name.eq_ignore_ascii_case(b"upgrade") => f.upgrade = true,
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for token in elements(value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            f.close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            f.keep_alive_token = true;
                        } else if token.eq_ignore_ascii_case(b"upgrade") {
                            f.connection_upgrade = true;
                        }
                    }
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    // One number per field; a repeated field must repeat it octet for octet
                    // (RFC 9110 §8.6 lets a recipient refuse a list, and hyper's server does;
                    // hyper keeps the first of `05` and `5`, a relay passing both on would
                    // leave the next parser to choose).
                    let n = digits(value).ok_or(Error::ContentLength)?;
                    match f.length_text {
                        Some(first) if first.of(buf) != value => return Err(Error::ContentLength),
                        _ => f.length_text = Some(field.value),
                    }
                    f.length = Some(n);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    // Not a list read the RFC's way (empty elements ignored): hyper takes
                    // the last element of `chunked,` to be empty, not chunked, and reads the
                    // body another way. One field, one word.
                    f.transfer_encoding = true;
                    f.transfer_encodings += 1;
                    f.chunked_only =
                        f.transfer_encodings == 1 && trim(value).eq_ignore_ascii_case(b"chunked");
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// The body's framing when both lengths are valid on their own; `none`: what a message
    /// without either has.
    fn body(&self, version: Version, none: Body) -> Result<Body, Error> {
        if self.transfer_encoding {
            if version == Version::Http10 {
                return Err(Error::TransferEncodingInHttp10);
            }
            if self.length.is_some() {
                return Err(Error::LengthAndTransferEncoding);
            }
            if !self.chunked_only {
                return Err(Error::UnsupportedTransferCoding);
            }
            return Ok(Body::Chunked);
        }
        Ok(self.length.map_or(none, Body::Length))
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless told
    /// `keep-alive` (RFC 9112 §9.3).
    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::Http11 || self.keep_alive_token)
    }
}

/// The non-empty elements of a comma-separated list value, without the whitespace around them
/// (RFC 9110 §5.6.1: empty elements are ignored).
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `1*DIGIT` as a u64: no sign, no spaces, no overflow.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}
