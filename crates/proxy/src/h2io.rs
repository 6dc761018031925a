//! One HTTP/2 stream as a byte stream: an HBONE tunnel once its CONNECT is answered `200`, on
//! either side ([`crate::tunnel`] as the client, [`crate::hbone`] as the server).
//!
//! hyper hands out an upgraded HTTP/2 stream whose writes go through a channel to a task of
//! their own, which then queues them on the connection: every write is one more task wake-up
//! and poll. Here a write queues its bytes on the stream itself, as ztunnel's HBONE streams
//! do, so the connection's task is the only one between the relay and the socket.
//!
//! Flow control: a write takes the credit the stream has (asking for the rest and waiting
//! while there is none); a read gives back the credit of what it handed out, so a reader that
//! stops reading stops the sender after one window ([`crate::h2settings`]).
//!
//! A relay that moves both directions at once takes the stream as two halves
//! ([`H2Io::halves`]) that hand over whole `Bytes`, so its bytes are never copied into a buffer
//! of ours ([`crate::relay::relay_h2`]); the byte-stream interface copies, as hyper needs it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two halves of one stream.
pub struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    pending: Bytes,
    /// The end of our side was sent.
    ended: bool,
}

impl H2Io {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> H2Io {
        H2Io {
            send,
            recv,
            pending: Bytes::new(),
            ended: false,
        }
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::other(e)
}

/// The receiving half of an [`H2Io`], for a relay that moves both directions at once
/// ([`crate::relay::relay_h2`]).
pub struct Receiving<'a> {
    recv: &'a mut RecvStream,
    pending: &'a mut Bytes,
}

/// The sending half of an [`H2Io`].
pub struct Sending<'a> {
    send: &'a mut SendStream<Bytes>,
    ended: &'a mut bool,
}

impl H2Io {
    /// The stream's receiving and sending halves, each usable while the other is.
    pub fn halves(&mut self) -> (Receiving<'_>, Sending<'_>) {
        (
            Receiving {
                recv: &mut self.recv,
                pending: &mut self.pending,
            },
            Sending {
                send: &mut self.send,
                ended: &mut self.ended,
            },
        )
    }
}

impl Receiving<'_> {
    /// The next bytes received, as the peer's DATA frames brought them (what a read left over
    /// first); `None` once the peer ended its side. Their credit is not given back yet: the
    /// caller calls [`Receiving::release`] as it passes them on, so a relay writes them on as
    /// they are, with no copy of ours.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(self.pending))));
        }
        loop {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(None)),
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => return Poll::Ready(Ok(Some(data))),
                // The peer ended its side by a reset that says nothing went wrong: an end.
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        Some(Reason::NO_ERROR | Reason::CANCEL) => Ok(None),
                        _ => Err(to_io(e)),
                    })
                }
            }
        }
    }

    /// Gives the peer back the credit of `n` bytes passed on: it may send that many more.
    pub fn release(&mut self, n: usize) {
        let _ = self.recv.flow_control().release_capacity(n);
    }
}

impl Sending<'_> {
    /// Waits until the stream has credit for at least one byte of the `want` to be sent;
    /// how much.
    fn poll_credit(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            let credit = self.send.capacity();
            if credit > 0 {
                return Poll::Ready(Ok(credit));
            }
            self.send.reserve_capacity(want);
            match ready!(self.send.poll_capacity(cx)) {
                // The stream was reset or closed while we waited.
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Queues the front of `data` on the stream, as much as its credit allows, without copying
    /// it (the DATA frame shares the bytes); ready once some was queued, `data` then holds the
    /// rest.
    pub fn poll_send(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        if data.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let credit = ready!(self.poll_credit(cx, data.len()))?;
        let n = credit.min(data.len());
        self.send
            .send_data(data.split_to(n), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(()))
    }

    /// Sends the end of our side, once (an end-of-stream flag on an empty DATA frame).
    pub fn end(&mut self) {
        if !*self.ended {
            *self.ended = true;
            // A stream already reset has no end left to send, which is not an error of ours.
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (mut rx, _) = self.halves();
        let Some(mut data) = ready!(rx.poll_chunk(cx))? else {
            return Poll::Ready(Ok(()));
        };
        let n = buf.remaining().min(data.len());
        buf.put_slice(&data[..n]);
        data.advance(n);
        *rx.pending = data;
        rx.release(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let (_, mut tx) = self.halves();
        let credit = ready!(tx.poll_credit(cx, buf.len()))?;
        let n = credit.min(buf.len());
        tx.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued data goes out as the connection's task writes; there is nothing to push.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.halves().1.end();
        Poll::Ready(Ok(()))
    }
}

/// A PING this often on every HBONE connection, either side, and the connection closed when
/// its answer takes longer than `PING_TIMEOUT`: a peer gone without a FIN is noticed.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns when the peer leaves a PING unanswered for `PING_TIMEOUT` (never without a
/// `PingPong`, which a connection hands out once).
pub async fn keep_alive(ping: Option<h2::PingPong>) {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client and a server of one HTTP/2 connection over memory (the `h2` crate's default
    /// 64 KiB windows, so a few hundred KiB must wait for credit), one CONNECT answered 200:
    /// both ends of the stream.
    pub(crate) async fn tunnel() -> (H2Io, H2Io) {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            assert_eq!(req.method(), http::Method::CONNECT);
            let send = respond
                .send_response(http::Response::new(()), false)
                .unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            H2Io::new(send, req.into_body())
        });
        let (send, conn) = h2::client::handshake(c).await.unwrap();
        tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let req = http::Request::connect("198.18.0.1:80").body(()).unwrap();
        let (resp, stream) = send.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        let client = H2Io::new(stream, resp.into_body());
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_past_the_window_and_the_end_is_passed_on() {
        let (mut client, mut server) = tunnel().await;
        let up: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let server_side = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert!(
                got == up2,
                "{} of {} bytes arrived, in order",
                got.len(),
                up2.len()
            );
            server.write_all(&down2).await.unwrap();
            server.shutdown().await.unwrap();
        });
        client.write_all(&up).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut back))
            .await
            .expect("the server's end arrives")
            .unwrap();
        assert!(
            back == down,
            "{} of {} bytes came back",
            back.len(),
            down.len()
        );
        server_side.await.unwrap();
    }

    #[tokio::test]
    async fn a_reset_stream_fails_the_writer() {
        let (mut client, server) = tunnel().await;
        drop(server); // both halves gone: the server resets the stream
        let chunk = vec![0u8; 16 * 1024];
        let failed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if client.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            failed.is_ok(),
            "writes to a reset stream must fail, not hang"
        );
    }
}
