//! What was wrong with a message, as an operator reads it, and the status a server answers a
//! request with. A response from the app that fails the same checks is the proxy's 502.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The head is larger than [`crate::Limits::max_head_bytes`].
    HeadTooLarge,
    /// More field lines than [`crate::Limits::max_fields`].
    TooManyFields,
    /// The tokenizer refused the head (a bad token, octet or line).
    Malformed(&'static str),
    /// A line ends in LF without CR, or a CR is not followed by LF.
    BareLineEnding,
    /// Neither HTTP/1.0 nor HTTP/1.1.
    Version,
    /// A transfer coding other than exactly `chunked`.
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` in an HTTP/1.0 message.
    TransferEncodingInHttp10,
    /// Both `Transfer-Encoding` and `Content-Length`.
    LengthAndTransferEncoding,
    /// A `Content-Length` that is not digits, overflows, or disagrees with another.
    ContentLength,
    /// No `Host` in an HTTP/1.1 request, more than one, or one that is not an authority.
    Host,
    /// A request target that is not an origin, absolute (`http(s)`), authority (CONNECT) or
    /// asterisk (OPTIONS) form, or holds an octet parsers read differently.
    Target,
    /// A chunk-size line, chunk data terminator or trailer section that breaks RFC 9112 §7.1.
    Chunk(&'static str),
    /// Chunk extensions or trailers beyond their bound.
    ChunkMetadataTooLarge,
}

impl Error {
    /// The status a server answers a request with this error (RFC 9110 §15).
    pub fn status(&self) -> u16 {
        match self {
            Error::HeadTooLarge | Error::TooManyFields => 431,
            Error::Version => 505,
            Error::UnsupportedTransferCoding => 501,
            Error::ChunkMetadataTooLarge => 413,
            _ => 400,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeadTooLarge => f.write_str("the message head is larger than the limit"),
            Error::TooManyFields => {
                f.write_str("the message has more header fields than the limit")
            }
            Error::Malformed(what) => write!(f, "malformed message head: {what}"),
            Error::BareLineEnding => f.write_str("a line ends without CRLF"),
            Error::Version => f.write_str("the HTTP version is neither 1.0 nor 1.1"),
            Error::UnsupportedTransferCoding => {
                f.write_str("Transfer-Encoding is something other than exactly \"chunked\"")
            }
            Error::TransferEncodingInHttp10 => {
                f.write_str("an HTTP/1.0 message carries Transfer-Encoding")
            }
            Error::LengthAndTransferEncoding => {
                f.write_str("the message carries both Content-Length and Transfer-Encoding")
            }
            Error::ContentLength => {
                f.write_str("Content-Length is invalid or repeated with another value")
            }
            Error::Host => f.write_str("an HTTP/1.1 request needs exactly one valid Host header"),
            Error::Target => f.write_str("the request target is not a path, an http(s) URI, CONNECT's host:port or OPTIONS' *"),
            Error::Chunk(what) => write!(f, "malformed chunked body: {what}"),
            Error::ChunkMetadataTooLarge => {
                f.write_str("chunk extensions or trailers are larger than the limit")
            }
        }
    }
}

impl std::error::Error for Error {}
