//! Lets gRPC-core clients (Python `grpcio`, C++, Ruby...) talk to the Workload API over a unix
//! socket.
//!
//! Since gRPC 1.57 those clients send the percent-encoded socket path as the HTTP/2
//! `:authority` (e.g. `tmp%2Fagent.sock`). That is not a valid authority, and the `h2` crate
//! under tonic resets every such stream with PROTOCOL_ERROR — so py-spiffe, the reference
//! Python SPIFFE client, could not fetch an SVID at all. The authority means nothing on a unix
//! socket, so this shim sits between the socket and the HTTP/2 server and rewrites an invalid
//! `:authority` to `localhost` (what grpc-go sends for unix sockets).
//!
//! Only client-to-server HEADERS/CONTINUATION frames are touched. Their HPACK blocks are decoded
//! with a decoder that tracks the client's dynamic table, and re-encoded as literals without
//! indexing, which never touch the server's dynamic table and so cannot desynchronise it.
//! Everything else is copied byte for byte.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which our server never raises.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this (across CONTINUATIONs) is refused; gRPC requests carry
/// a few hundred bytes.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
const BUFFER: usize = 64 * 1024;

/// Wraps a client connection; returns the stream to hand to the HTTP/2 server.
pub fn wrap<S>(client: S) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (server_side, shim_side) = tokio::io::duplex(BUFFER);
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut shim_rd, mut shim_wr) = tokio::io::split(shim_side);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut shim_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = rewrite(&mut client_rd, &mut shim_wr).await {
            tracing::debug!("Workload API connection closed: {e}");
        }
        let _ = shim_wr.shutdown().await;
    });
    server_side
}

async fn rewrite<R, W>(rd: &mut R, wr: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    rd.read_exact(&mut preface).await?;
    wr.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 prior knowledge: let the server reject it in its own words.
        tokio::io::copy(rd, wr).await?;
        return Ok(());
    }
    let mut decoder = hpack::Decoder::new();
    // A header block in progress: (stream id, END_STREAM, accumulated fragment).
    let mut pending: Option<(u32, bool, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return Err(invalid("frame larger than SETTINGS_MAX_FRAME_SIZE"));
        }
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;

        match (kind, pending.as_mut()) {
            (FRAME_HEADERS, None) => {
                let fragment = headers_fragment(&payload, flags)?;
                pending = Some((stream, flags & FLAG_END_STREAM != 0, fragment.to_vec()));
            }
            (FRAME_CONTINUATION, Some((id, _, block))) if *id == stream => {
                if block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(invalid("header block too large"));
                }
                block.extend_from_slice(&payload);
            }
            (_, Some(_)) => return Err(invalid("frame interleaved inside a header block")),
            _ => {
                wr.write_all(&head).await?;
                wr.write_all(&payload).await?;
                continue;
            }
        }
        if flags & FLAG_END_HEADERS == 0 {
            continue;
        }
        let (id, end_stream, block) = pending.take().expect("set above");
        let fields = decode(&mut decoder, &block)?;
        write_headers(wr, id, end_stream, &encode(&fields)).await?;
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn headers_fragment(payload: &[u8], flags: u8) -> std::io::Result<&[u8]> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & FLAG_PADDED != 0 {
        let pad = *payload
            .first()
            .ok_or_else(|| invalid("empty padded frame"))? as usize;
        start = 1;
        end = end
            .checked_sub(pad)
            .ok_or_else(|| invalid("padding exceeds frame"))?;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    if start > end {
        return Err(invalid("malformed HEADERS frame"));
    }
    Ok(&payload[start..end])
}

fn decode(
    decoder: &mut hpack::Decoder<'_>,
    block: &[u8],
) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // The decoder is third-party code fed by an untrusted peer: contain a panic to this one
    // connection's error.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode(block)));
    let mut fields = match result {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(invalid(&format!("HPACK: {}", hpack_error(e)))),
        Err(_) => return Err(invalid("HPACK: malformed header block")),
    };
    for (name, value) in fields.iter_mut() {
        if name.as_slice() == b":authority"
            && http::uri::Authority::try_from(value.as_slice()).is_err()
        {
            *value = b"localhost".to_vec();
        }
    }
    Ok(fields)
}

/// HPACK "literal header field without indexing — new name" for every field (RFC 7541 6.2.2).
fn encode(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_int(&mut out, name.len(), 7, 0x00);
        out.extend_from_slice(name);
        encode_int(&mut out, value.len(), 7, 0x00);
        out.extend_from_slice(value);
    }
    out
}

/// HPACK integer with an N-bit prefix (RFC 7541 5.1); `first` holds the bits above the prefix.
fn encode_int(out: &mut Vec<u8>, mut v: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

async fn write_headers<W: AsyncWrite + Unpin>(
    wr: &mut W,
    stream: u32,
    end_stream: bool,
    block: &[u8],
) -> std::io::Result<()> {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut first = true;
    if block.is_empty() {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        return wr
            .write_all(&frame_head(0, FRAME_HEADERS, flags, stream))
            .await;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (kind, mut flags) = if first {
            (FRAME_HEADERS, if end_stream { FLAG_END_STREAM } else { 0 })
        } else {
            (FRAME_CONTINUATION, 0)
        };
        if last {
            flags |= FLAG_END_HEADERS;
        }
        wr.write_all(&frame_head(chunk.len(), kind, flags, stream))
            .await?;
        wr.write_all(chunk).await?;
        first = false;
    }
    Ok(())
}

fn frame_head(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// The decoder's error in words (its type only implements `Debug`).
fn hpack_error(e: hpack::decoder::DecoderError) -> &'static str {
    use hpack::decoder::DecoderError as E;
    match e {
        E::HeaderIndexOutOfBounds => "a header refers to a table entry that does not exist",
        E::IntegerDecodingError(_) => "an integer in the header block is malformed",
        E::StringDecodingError(_) => "a string in the header block is malformed",
        E::InvalidMaxDynamicSize => "the peer resized the header table beyond its limit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_rfc_examples() {
        // RFC 7541 C.1.1 and C.1.2.
        let mut out = Vec::new();
        encode_int(&mut out, 10, 5, 0);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_int(&mut out, 1337, 5, 0);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    }

    #[test]
    fn invalid_authority_is_replaced_and_block_decodes() {
        let fields = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":authority".to_vec(), b"tmp%2Fagent.sock".to_vec()),
            (b"workload.spiffe.io".to_vec(), b"true".to_vec()),
        ];
        let mut client_decoder = hpack::Decoder::new();
        let rewritten = decode(&mut client_decoder, &encode(&fields)).unwrap();
        assert_eq!(
            rewritten[1],
            (b":authority".to_vec(), b"localhost".to_vec())
        );
        assert_eq!(rewritten[2], fields[2]);
        // A valid authority is left alone.
        let ok = vec![(b":authority".to_vec(), b"localhost:80".to_vec())];
        assert_eq!(
            decode(&mut hpack::Decoder::new(), &encode(&ok)).unwrap(),
            ok
        );
        // Our encoding is plain HPACK another decoder reads back unchanged.
        let again = hpack::Decoder::new().decode(&encode(&rewritten)).unwrap();
        assert_eq!(again, rewritten);
    }

    #[test]
    fn strips_padding_and_priority() {
        let payload = [2u8, 0, 0, 0, 1, 9, 0xAA, 0xBB, 0, 0];
        let f = headers_fragment(&payload, FLAG_PADDED | FLAG_PRIORITY).unwrap();
        assert_eq!(f, &[0xAA, 0xBB]);
        assert!(headers_fragment(&[9u8, 1], FLAG_PADDED).is_err());
    }
}
