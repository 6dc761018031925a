//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from whatever bytes
//! have arrived, so a relay passes data on as it comes and never buffers a chunk.
//!
//! Chunk framing is where parsers disagree most (sizes with spaces or a `0x`, bare LF or CR
//! after a size or in an extension, oversized sizes that wrap): the grammar here is the RFC's
//! and nothing more. A relay re-frames the data it passes on ([`crate::encode::chunk_header`]),
//! so what the next parser reads is canonical whatever the sender chose. Extensions are
//! checked and dropped; trailers are checked and kept for the relay to send on.

use std::ops::Range;

use crate::Error;

/// The default bound on extension and trailer bytes of one body (hyper's bound on
/// extensions is 16 KiB).
pub const MAX_METADATA: usize = 16 * 1024;

/// At most 16 hex digits: a size that fits 64 bits, with no leading zeros to pad past it.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// In the hex digits of a size.
    SizeDigits,
    /// Whitespace after the size: only a `;` may follow.
    SizeWs,
    ExtPreName,
    ExtName,
    ExtAfterName,
    ExtPreValue,
    ExtToken,
    ExtQuoted,
    ExtQuotedPair,
    /// Just after a quoted value's closing `"`.
    ExtEndQuoted,
    /// Whitespace after a value: only a `;` may follow.
    ExtAfterValue,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body's decoder: feed it the bytes after the head as they arrive.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    /// Data bytes left in the current chunk.
    remaining: u64,
    /// Extension and trailer bytes so far, against `max_metadata`.
    metadata: usize,
    max_metadata: usize,
    trailers: Vec<u8>,
}

/// What one [`Chunked::feed`] did: `consumed` bytes of its input are dealt with; `data` (a range
/// of the input, maybe empty) is body data to pass on; `done`: the body, trailers included,
/// has ended, and the next message starts at `consumed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub consumed: usize,
    pub data: Range<usize>,
    pub done: bool,
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::new(MAX_METADATA)
    }
}

impl Chunked {
    pub fn new(max_metadata: usize) -> Chunked {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            remaining: 0,
            metadata: 0,
            max_metadata,
            trailers: Vec::new(),
        }
    }

    /// Reads framing from the start of `input` up to the next run of data, and that run (as
    /// much of it as `input` holds). Call again with the input after `consumed`. An error
    /// ends the body: the connection cannot be read further, so do not feed it again.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, Error> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let n = self.remaining.min((input.len() - i) as u64) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Progress {
                        consumed: i + n,
                        data: i..i + n,
                        done: false,
                    });
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(Progress {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }

    /// Decodes a body held whole in `input`, appending its data to `data`: where the body
    /// ended (the next message starts there), or `None` if `input` ends before it does.
    pub fn decode_all(&mut self, input: &[u8], data: &mut Vec<u8>) -> Result<Option<usize>, Error> {
        let mut at = 0;
        loop {
            let p = self.feed(&input[at..])?;
            data.extend_from_slice(&input[at..][p.data]);
            at += p.consumed;
            if p.done {
                return Ok(Some(at));
            }
            if at == input.len() {
                return Ok(None);
            }
        }
    }

    /// The body has ended (the last chunk and the trailer section were read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer section's field lines, each ending in CRLF (empty without trailers).
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    fn step(&mut self, b: u8) -> Result<(), Error> {
        use State::*;
        let bad = |what| Err(Error::Chunk(what));
        self.state = match (self.state, b) {
            (Size | SizeDigits, _) if b.is_ascii_hexdigit() => {
                if self.digits == MAX_SIZE_DIGITS {
                    return bad("chunk size longer than 16 hex digits");
                }
                self.digits += 1;
                self.size = (self.size << 4) | u64::from(hex(b));
                SizeDigits
            }
            (Size, _) => return bad("chunk size is not a hex number"),
            (SizeDigits, b'\r') => SizeLf,
            (SizeDigits | SizeWs, b';') => self.metadata(ExtPreName)?,
            (SizeDigits | SizeWs, b' ' | b'\t') => SizeWs,
            (SizeDigits, _) => return bad("chunk size is not a hex number"),
            (SizeWs, _) => return bad("whitespace after a chunk size not followed by ';'"),

            (ExtPreName, b' ' | b'\t') => self.metadata(ExtPreName)?,
            (ExtPreName | ExtName, _) if is_tchar(b) => self.metadata(ExtName)?,
            (ExtName, b' ' | b'\t') | (ExtAfterName, b' ' | b'\t') => {
                self.metadata(ExtAfterName)?
            }
            (ExtName | ExtAfterName, b'=') => self.metadata(ExtPreValue)?,
            (ExtName | ExtAfterName, b';') => self.metadata(ExtPreName)?,
            (ExtName, b'\r') => SizeLf,
            (ExtPreValue, b' ' | b'\t') => self.metadata(ExtPreValue)?,
            (ExtPreValue, b'"') => self.metadata(ExtQuoted)?,
            (ExtPreValue | ExtToken, _) if is_tchar(b) => self.metadata(ExtToken)?,
            (ExtToken | ExtEndQuoted | ExtAfterValue, b' ' | b'\t') => {
                self.metadata(ExtAfterValue)?
            }
            (ExtToken | ExtEndQuoted | ExtAfterValue, b';') => self.metadata(ExtPreName)?,
            (ExtToken | ExtEndQuoted, b'\r') => SizeLf,
            (ExtQuoted, b'"') => self.metadata(ExtEndQuoted)?,
            (ExtQuoted, b'\\') => self.metadata(ExtQuotedPair)?,
            (ExtQuoted, _) if is_qdtext(b) => self.metadata(ExtQuoted)?,
            (ExtQuotedPair, _) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => {
                self.metadata(ExtQuoted)?
            }
            (
                ExtPreName | ExtName | ExtAfterName | ExtPreValue | ExtToken | ExtQuoted
                | ExtQuotedPair | ExtEndQuoted | ExtAfterValue,
                _,
            ) => return bad("malformed chunk extension"),

            (SizeLf, b'\n') if self.size == 0 => TrailerStart,
            (SizeLf, b'\n') => {
                self.remaining = self.size;
                Data
            }
            (SizeLf, _) => return bad("chunk-size line does not end in CRLF"),

            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return bad("chunk data longer than its size"),
            (DataLf, b'\n') => {
                self.size = 0;
                self.digits = 0;
                Size
            }
            (DataLf, _) => return bad("chunk data does not end in CRLF"),

            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => self.trailer(b, TrailerName)?,
            (TrailerName, b':') => self.trailer(b, TrailerValue)?,
            (TrailerValue, b'\r') => self.trailer(b, TrailerLf)?,
            (TrailerValue, _) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => {
                self.trailer(b, TrailerValue)?
            }
            (TrailerLf, b'\n') => self.trailer(b, TrailerStart)?,
            (TrailerStart | TrailerName | TrailerValue | TrailerLf, _) => {
                return bad("malformed trailer field")
            }
            (EndLf, b'\n') => Done,
            (EndLf, _) => return bad("chunked body does not end in CRLF"),
            (Data | Done, _) => unreachable!("feed handles data and the end"),
        };
        Ok(())
    }

    /// Counts one extension byte, then moves to `next`.
    fn metadata(&mut self, next: State) -> Result<State, Error> {
        self.metadata += 1;
        if self.metadata > self.max_metadata {
            return Err(Error::ChunkMetadataTooLarge);
        }
        Ok(next)
    }

    /// Keeps one trailer byte, then moves to `next`.
    fn trailer(&mut self, b: u8, next: State) -> Result<State, Error> {
        let next = self.metadata(next)?;
        self.trailers.push(b);
        Ok(next)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A token character (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Visible ASCII or obs-text: what a field value or quoted pair may hold besides SP and HTAB.
fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// qdtext (RFC 9110 §5.6.4): in a quoted string, anything visible but `"` and `\`.
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar_or_obs(b) && b != b'"' && b != b'\\')
}
