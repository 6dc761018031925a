//! DNS over TCP frames each message with a two-byte length (RFC 1035 §4.2.2; RFC 7766), both
//! between clients and the proxy and between the proxy and its upstreams.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one framed message; `None` at a clean end of stream. A zero length is an error: no
/// DNS message is empty.
pub(crate) async fn read_frame(
    s: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a DNS message framed with length zero",
        ));
    }
    let mut msg = vec![0u8; len];
    s.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

/// Writes `msg` (at most 65535 bytes, as [`crate::wire::encode`] makes them) with its length,
/// in one write.
pub(crate) async fn write_frame(
    s: &mut (impl AsyncWrite + Unpin),
    msg: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a DNS message longer than 65535 bytes cannot go over TCP",
        )
    })?;
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    s.write_all(&frame).await?;
    s.flush().await
}
