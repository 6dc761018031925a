//! The HTTP/2 flow-control and framing settings of the connections between sidecars: the
//! HBONE port and its client (`hbone`, `tunnel`), the HTTP/2 connections `meshconn` opens to a
//! peer sidecar, and the listeners' HTTP/2 (`http::server_builder`), which serve those.
//!
//! hyper's defaults are made for any peer on any network: 16 KiB frames, a 1 MiB (server) or
//! 2 MiB (client) stream window and a 400 KiB server send buffer. Between two sidecars a bulk
//! body then crosses as 16 KiB DATA frames, each its own header, wake-up and window update,
//! and a stream stalls for credit well before a fast link is full. The values here are the
//! ones ztunnel gives its HBONE connections (4 MiB per stream, 16 MiB per connection, frames
//! up to 1 MiB, a send buffer the size of the stream window), so a trustmesh peer and a
//! ztunnel peer frame bulk bytes alike.
//!
//! What they cost: a window is credit, not memory held; a peer can make us buffer at most the
//! connection window (16 MiB) of data the app has not read yet on one connection, and every
//! such peer holds a certificate of the mesh. The connection window is larger than the stream
//! window so that one stream whose reader is slow cannot take all of a connection's credit
//! from the streams beside it.

use hyper::client::conn::http2 as client;
use hyper_util::server::conn::auto;

/// Credit a stream starts with and is refilled to (SETTINGS_INITIAL_WINDOW_SIZE).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Credit of the whole connection, shared by its streams.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// The largest DATA frame the peer may send us (SETTINGS_MAX_FRAME_SIZE).
pub const MAX_FRAME: u32 = 1024 * 1024;
/// Bytes a stream may queue for sending before a write waits: one window's worth, so a
/// stream given its full credit can send it in one go.
pub const SEND_BUFFER: usize = STREAM_WINDOW as usize;

/// Applies the settings to an HBONE client connection (the `h2` crate's, see
/// [`crate::h2io`]).
pub fn hbone_client(builder: &mut h2::client::Builder) -> &mut h2::client::Builder {
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
}

/// Applies the settings to an HBONE server connection.
pub fn hbone_server(builder: &mut h2::server::Builder) -> &mut h2::server::Builder {
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
}

/// Applies the settings to a hyper client connection's builder (`meshconn`).
pub fn client<E: Clone>(builder: &mut client::Builder<E>) -> &mut client::Builder<E> {
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buf_size(SEND_BUFFER)
}

/// Applies the settings to the HTTP/2 half of a server builder that detects the version.
pub fn auto_server<'b, 'a, E>(
    builder: &'b mut auto::Http2Builder<'a, E>,
) -> &'b mut auto::Http2Builder<'a, E> {
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buf_size(SEND_BUFFER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    const MAX_FRAME_SIZE: u16 = 0x5;

    /// One frame off the wire: type, stream and payload; a frame that never comes fails.
    async fn frame(io: &mut DuplexStream) -> (u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        tokio::time::timeout(std::time::Duration::from_secs(5), io.read_exact(&mut head))
            .await
            .expect("a frame within 5 s")
            .unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        (head[3], stream, payload)
    }

    fn setting(payload: &[u8], id: u16) -> Option<u32> {
        payload.chunks_exact(6).find_map(|e| {
            (u16::from_be_bytes([e[0], e[1]]) == id)
                .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        })
    }

    /// What a peer announces before its first request: SETTINGS, and the connection window's
    /// raise as a WINDOW_UPDATE on stream 0 (a connection starts at 65,535); an ACK of our
    /// SETTINGS may come between them.
    async fn announced(io: &mut DuplexStream) -> (Option<u32>, Option<u32>, u32) {
        let (kind, _, settings) = frame(io).await;
        assert_eq!(kind, SETTINGS, "the first frame is SETTINGS");
        for _ in 0..3 {
            match frame(io).await {
                (SETTINGS, _, ack) if ack.is_empty() => continue,
                (WINDOW_UPDATE, 0, update) => {
                    let increment = u32::from_be_bytes(update[..4].try_into().unwrap());
                    return (
                        setting(&settings, INITIAL_WINDOW_SIZE),
                        setting(&settings, MAX_FRAME_SIZE),
                        increment,
                    );
                }
                (kind, stream, _) => panic!("frame type {kind} on stream {stream}"),
            }
        }
        panic!("no WINDOW_UPDATE for the connection")
    }

    /// What a server announces once a client sent its preface and empty SETTINGS.
    async fn answered(peer: &mut DuplexStream) -> (Option<u32>, Option<u32>, u32) {
        peer.write_all(PREFACE).await.unwrap();
        peer.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        announced(peer).await
    }

    fn expected() -> (Option<u32>, Option<u32>, u32) {
        (
            Some(STREAM_WINDOW),
            Some(MAX_FRAME),
            CONNECTION_WINDOW - 65_535,
        )
    }

    #[tokio::test]
    async fn both_clients_announce_the_windows_and_frame_size() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut builder = client::Builder::new(TokioExecutor::new());
        let handshake = client(&mut builder).handshake::<_, Empty<Bytes>>(TokioIo::new(ours));
        let conn = tokio::spawn(async move {
            let (_send, conn) = handshake.await.unwrap();
            let _ = conn.await;
        });
        let mut preface = [0u8; 24];
        peer.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
        assert_eq!(announced(&mut peer).await, expected());
        conn.abort();
        // The HBONE client.
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut builder = h2::client::Builder::new();
        let handshake = hbone_client(&mut builder).handshake::<_, Bytes>(ours);
        let conn = tokio::spawn(async move {
            let (send, conn) = handshake.await.unwrap();
            let _ = conn.await;
            drop(send);
        });
        let mut preface = [0u8; 24];
        peer.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
        assert_eq!(announced(&mut peer).await, expected());
        conn.abort();
    }

    #[tokio::test]
    async fn both_servers_announce_the_windows_and_frame_size() {
        let svc = service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
        });
        // The HBONE port's server.
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut builder = h2::server::Builder::new();
        let handshake = hbone_server(&mut builder).handshake::<_, Bytes>(ours);
        let task = tokio::spawn(async move {
            let mut conn = handshake.await.unwrap();
            while conn.accept().await.is_some() {}
        });
        assert_eq!(answered(&mut peer).await, expected());
        task.abort();
        // The listeners' server, which detects the version from the preface.
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        auto_server(&mut builder.http2());
        let task = tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(ours), svc).await;
        });
        assert_eq!(answered(&mut peer).await, expected());
        task.abort();
    }
}
