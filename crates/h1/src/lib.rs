//! HTTP/1.1 message framing for a proxy that sits between two other HTTP parsers (pure, no I/O).
//!
//! Why a crate of its own: each side of the sidecar pair runs hyper's HTTP/1 server on one hop
//! and hyper's client on the other, turning every head into a `HeaderMap` that is read a few
//! times and encoded again. Relaying one request and response that way costs about 21k
//! instructions; a loop over this crate does it in about 7k (`benches/exchange.rs`, under
//! callgrind), a quarter of the L7 pair's 114k. This crate is the first part of an inline path: parse a head in place (offsets into the
//! bytes read, no per-field allocation), decide how its body is framed, and relay a chunked
//! body while checking it. Wiring it into the proxy is later work; until then nothing on the
//! request path uses it.
//!
//! Strictness is the point. A request smuggling attack needs two parsers that disagree about
//! where a message ends; a proxy is safe when it refuses every message whose framing another
//! parser could read differently, and re-frames what it passes on. So, on top of httparse's
//! tokenizer (method and field-name tokens, field-value octets, the two versions, no
//! whitespace before a colon, no obs-fold in requests):
//! - every line of a head and of a chunked body ends in CRLF; a bare LF or CR is an error;
//! - `Transfer-Encoding` must be one field holding `chunked`, never with `Content-Length`
//!   (Envoy refuses both by default: `allow_chunked_length`), never in HTTP/1.0 (RFC 9112 §6.1
//!   allows refusing all three; a coding we do not implement is its 501);
//! - `Content-Length` is one number, digits only; a repeated field repeats it (RFC 9110 §8.6);
//! - an HTTP/1.1 request has exactly one `Host` (RFC 9112 §3.2), an authority;
//! - a request target is a path, an `http(s)://` URI, CONNECT's `host:port` or OPTIONS' `*`,
//!   without the octets other parsers drop or refuse (`#`, `"`, `<`, `>`, `` ` ``);
//! - chunk sizes are at most 16 hex digits, extensions are tokens or quoted strings and
//!   bounded, trailers are field lines like a head's (RFC 9112 §7.1).
//!
//! # API
//! - [`Head`]: `parse_request` / `parse_response` into a reused head; fields as [`Span`]s of
//!   the buffer; [`Head::get`] by name.
//! - [`request_framing`] / [`response_framing`] → [`Framing`]: the body's length, keep-alive,
//!   upgrade, `Expect: 100-continue`.
//! - [`Chunked`]: an incremental decoder over whatever bytes have arrived; [`encode`] writes
//!   heads and chunk framing.
//! - [`Error`]: what was wrong, and the status a server answers with.

mod chunked;
pub mod encode;
mod error;
mod framing;
mod head;
mod target;

pub use chunked::{Chunked, Progress};
pub use error::Error;
pub use framing::{request_framing, response_framing, Body, Framing};
pub use head::{Field, Head, Limits, Span, StartLine, Version};
pub use target::Target;

#[cfg(test)]
mod tests;
