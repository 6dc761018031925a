//! Byte relay between two streams with an idle timeout, stopped by the drain.
//!
//! `tokio::io::copy_bidirectional` alone would keep a connection whose peers went silent (or
//! vanished without a FIN) forever, holding a task and two sockets each. Every successful read in
//! either direction stamps the time of last activity; a watchdog ends the relay once nothing has
//! moved for the idle limit (Istio's TCP proxy default is one hour).
//!
//! A byte stream has no request boundary at which to stop politely, so at shutdown a relay keeps
//! going (a graceful drain lets it finish by itself) until the caller's `stop` future resolves:
//! the proxy passes its drain turning immediate, when `timeouts.terminationDrain` has passed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per step in each direction: one TLS record's worth (16 KiB of plaintext), so the
/// TLS side of a relay writes full records and reads whole ones. tokio's default of 8 KiB cut
/// every record in two, with twice the reads, writes and record overheads: a 1 GiB transfer
/// through an L4 pair cost more CPU per GB than through the HTTP path (bench/connections.sh).
/// The price is 16 KiB more per relayed connection.
pub const RELAY_BUF: usize = 16 * 1024;

struct Activity<S> {
    inner: S,
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.start.elapsed().as_millis() as u64;
            self.last_ms.store(now, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the access log says of a relay the drain closed.
pub const STOPPED: &str = "closed at shutdown: the drain deadline passed or a second signal came";

/// Whether the relay ended because `stop` resolved.
pub fn stopped(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Copies both ways until both sides finish, an error occurs, `idle` passes with no data in
/// either direction (then `ErrorKind::TimedOut`), or `stop` resolves (then
/// `ErrorKind::Interrupted`, see [`stopped`]). Returns bytes (a→b, b→a).
pub async fn relay<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let mut wa = Activity {
        inner: a,
        start,
        last_ms: last_ms.clone(),
    };
    let mut wb = Activity {
        inner: b,
        start,
        last_ms: last_ms.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut wa, &mut wb, RELAY_BUF, RELAY_BUF);
    supervise(copy, start, &last_ms, idle, stop).await
}

/// [`relay`] between two plain TCP sockets, the same ends and the same counts; on Linux the
/// bytes go socket to socket inside the kernel ([`crate::splice`]), never through a buffer of
/// ours.
pub async fn relay_tcp(
    a: &mut tokio::net::TcpStream,
    b: &mut tokio::net::TcpStream,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<(u64, u64)> {
    let start = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let stamp = |_: usize| {
        let now = start.elapsed().as_millis() as u64;
        last_ms.store(now, Ordering::Relaxed);
    };
    let (a, b) = (&*a, &*b);
    let both = async {
        tokio::try_join!(
            crate::splice::one_way(a, b, stamp),
            crate::splice::one_way(b, a, stamp)
        )
    };
    supervise(both, start, &last_ms, idle, stop).await
}

/// Reads toward an HBONE stream start at [`RELAY_BUF`] and double while each read fills
/// what it was given, up to this: a bulk transfer then moves 256 KiB per system call and per
/// DATA frame (the peer takes frames up to 1 MiB, [`crate::h2settings`]), where 16 KiB reads
/// cost a 1 GiB L4 transfer through HBONE more CPU than ztunnel's (which grows its reads the
/// same way). A read that comes back short of a record sets the size back, so a connection
/// that only trickles reads into one record's worth at a time.
const RELAY_BUF_MAX: usize = 256 * 1024;

/// [`relay`] between a socket and an HBONE stream, the same ends and counts (socket → stream,
/// stream → socket), without a buffer of ours between them: what the socket gives is queued
/// on the stream as it is, and what the stream brings is written to the socket from the DATA
/// frame itself, its credit given back as it is written (a socket that stops taking bytes
/// stops the peer after one window). A quiet connection holds no buffer in either direction
/// (`relay` holds two of [`RELAY_BUF`]).
pub async fn relay_h2(
    socket: &mut tokio::net::TcpStream,
    stream: &mut crate::h2io::H2Io,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<(u64, u64)> {
    use tokio::io::AsyncWriteExt;

    let start = Instant::now();
    let last_ms = AtomicU64::new(0);
    let stamp = || last_ms.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (from_socket, mut to_socket) = socket.split();
    let (mut rx, mut tx) = stream.halves();
    let up = async {
        let (mut size, mut total) = (RELAY_BUF, 0u64);
        loop {
            // A buffer only once there are bytes to read, handed whole to the stream: an idle
            // connection holds none.
            from_socket.readable().await?;
            let mut buf = bytes::BytesMut::with_capacity(size);
            let n = match from_socket.try_read_buf(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                tx.end();
                return Ok::<_, io::Error>(total);
            }
            stamp();
            total += n as u64;
            size = if n >= size {
                (size * 2).min(RELAY_BUF_MAX)
            } else if n < RELAY_BUF {
                RELAY_BUF
            } else {
                size
            };
            let mut out = buf.freeze();
            while !out.is_empty() {
                std::future::poll_fn(|cx| tx.poll_send(cx, &mut out)).await?;
            }
        }
    };
    let down = async {
        let mut total = 0u64;
        while let Some(mut chunk) = std::future::poll_fn(|cx| rx.poll_chunk(cx)).await? {
            stamp();
            while !chunk.is_empty() {
                let n = to_socket.write(&chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                bytes::Buf::advance(&mut chunk, n);
                rx.release(n);
                total += n as u64;
            }
        }
        to_socket.shutdown().await?;
        Ok(total)
    };
    supervise(
        async { tokio::try_join!(up, down) },
        start,
        &last_ms,
        idle,
        stop,
    )
    .await
}

/// Runs a relay's copying until it ends, nothing has moved for `idle`, or `stop` resolves.
async fn supervise(
    copy: impl std::future::Future<Output = io::Result<(u64, u64)>>,
    start: Instant,
    last_ms: &AtomicU64,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<(u64, u64)> {
    let idle_ms = idle.as_millis().max(1) as u64;
    let tick = Duration::from_millis((idle_ms / 4).clamp(10, 30_000));
    let watchdog = async {
        loop {
            tokio::time::sleep(tick).await;
            let now = start.elapsed().as_millis() as u64;
            if now.saturating_sub(last_ms.load(Ordering::Relaxed)) >= idle_ms {
                return;
            }
        }
    };
    tokio::select! {
        r = copy => r,
        _ = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
        () = stop => Err(io::Error::new(io::ErrorKind::Interrupted, "stopped by the drain")),
    }
}

/// A stream whose first bytes were already read (to sniff its protocol) and are handed out
/// again before the rest; writes go straight through.
pub struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.at);
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_and_ends_when_idle() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            relay(
                &mut proxy_a,
                &mut proxy_b,
                Duration::from_millis(200),
                never,
            )
            .await
        });
        ends_when_idle(&mut client, &mut server, task).await;
    }

    /// Activity keeps a relay with a 200 ms idle limit alive past it; silence ends it.
    async fn ends_when_idle<C, S>(
        client: &mut C,
        server: &mut S,
        task: tokio::task::JoinHandle<io::Result<(u64, u64)>>,
    ) where
        C: AsyncWrite + Unpin,
        S: AsyncRead + Unpin,
    {
        for _ in 0..4 {
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("relay must end when idle")
            .unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn stops_when_told_and_closes_both_sides() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stop.await;
            };
            let r = relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(60), stop).await;
            // The relay's owner drops both streams when it returns.
            drop((proxy_a, proxy_b));
            r
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        stop_tx.send(()).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the relay stops when told")
            .unwrap()
            .unwrap_err();
        assert!(stopped(&e), "{e:?}");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn finishes_normally_when_both_sides_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            relay(&mut proxy_a, &mut proxy_b, Duration::from_secs(60), never).await
        });
        each_side_closes(&mut client, &mut server, task).await;
    }

    /// The client sends and closes, then the server: each end reaches the other side, and the
    /// relay ends with the bytes counted each way.
    async fn each_side_closes<C, S>(
        client: &mut C,
        server: &mut S,
        task: tokio::task::JoinHandle<io::Result<(u64, u64)>>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        client.write_all(b"abc").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
        server.write_all(b"de").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"de");
        assert_eq!(task.await.unwrap().unwrap(), (3, 2));
    }

    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn sockets_relay_both_ways_counts_the_bytes_and_end_when_idle() {
        let (mut client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, mut server) = tcp_pair().await;
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            let r = relay_tcp(&mut proxy_a, &mut proxy_b, Duration::from_secs(60), never).await;
            drop((proxy_a, proxy_b));
            r
        });
        each_side_closes(&mut client, &mut server, task).await;

        // Activity keeps a socket relay alive past the idle limit; silence ends it.
        let (mut client, mut proxy_a) = tcp_pair().await;
        let (mut proxy_b, mut server) = tcp_pair().await;
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            relay_tcp(
                &mut proxy_a,
                &mut proxy_b,
                Duration::from_millis(200),
                never,
            )
            .await
        });
        ends_when_idle(&mut client, &mut server, task).await;
    }

    #[tokio::test]
    async fn a_socket_and_an_hbone_stream_relay_both_ways_with_their_ends_and_counts() {
        let (mut client, mut socket) = tcp_pair().await;
        let (mut stream, mut server) = crate::h2io::tests::tunnel().await;
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            let r = relay_h2(&mut socket, &mut stream, Duration::from_secs(60), never).await;
            drop((socket, stream));
            r
        });
        let closes = each_side_closes(&mut client, &mut server, task);
        tokio::time::timeout(Duration::from_secs(10), closes)
            .await
            .expect("each end is passed on");

        // Megabytes both ways at once, past the stream's window and the read size's growth,
        // arrive whole and in order; the counts are the bytes each way.
        let (mut client, mut socket) = tcp_pair().await;
        let (mut stream, server) = crate::h2io::tests::tunnel().await;
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            relay_h2(&mut socket, &mut stream, Duration::from_secs(60), never).await
        });
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let far = tokio::spawn(async move {
            let (mut rx, mut tx) = tokio::io::split(server);
            let send = async {
                tx.write_all(&down2).await.unwrap();
                tx.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let (_, n) = tokio::join!(send, rx.read_to_end(&mut got));
            n.unwrap();
            assert!(
                got == up2,
                "{} of {} bytes arrived, in order",
                got.len(),
                up2.len()
            );
        });
        let (mut rx, mut tx) = client.split();
        let send = async {
            tx.write_all(&up).await.unwrap();
            tx.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let both = async { tokio::join!(send, rx.read_to_end(&mut back)) };
        let (_, n) = tokio::time::timeout(Duration::from_secs(20), both)
            .await
            .expect("both ways finish");
        n.unwrap();
        assert!(
            back == down,
            "{} of {} bytes came back",
            back.len(),
            down.len()
        );
        far.await.unwrap();
        let counts = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay ends once both sides closed")
            .unwrap()
            .unwrap();
        assert_eq!(counts, (up.len() as u64, down.len() as u64));

        // Activity keeps it alive past the idle limit; silence ends it.
        let (mut client, mut socket) = tcp_pair().await;
        let (mut stream, mut server) = crate::h2io::tests::tunnel().await;
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            relay_h2(&mut socket, &mut stream, Duration::from_millis(200), never).await
        });
        ends_when_idle(&mut client, &mut server, task).await;
    }
}
