//! Ports and waits. Tests pick loopback ports up front (tier 2 processes must be told where to
//! listen, and their peers where to call), and wait for things that happen in another thread or
//! process. Every wait here has both a deadline and an attempt cap, and names what it waited
//! for when it gives up, so a broken component fails the test with a sentence instead of
//! hanging CI.

use std::future::Future;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A loopback port nobody listens on right now, for a server a test starts a moment later.
///
/// Between this probe and the server's own bind the port is free for anyone, so it is taken
/// from below the kernel's ephemeral range (32768-60999 on Linux by default): a `bind(0)` or an
/// outgoing connection anywhere on the machine cannot be handed it in that window, which once
/// failed CI with "address already in use". Candidates walk 20000-32767 from a point
/// derived from the process id (test binaries side by side start apart), each one checked with
/// a TCP and a UDP bind (DNS servers listen on both).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    static APART: OnceLock<bool> = OnceLock::new();
    if !*APART.get_or_init(|| ephemeral_low() >= HIGH) {
        // A machine whose ephemeral range reaches down here: the kernel's own pick, with the
        // race this function otherwise avoids.
        let any = TcpListener::bind("127.0.0.1:0").unwrap();
        return any.local_addr().unwrap().port();
    }
    let span = HIGH - LOW;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}-{}", HIGH - 1)
}

/// The ports [`free_port`] walks: up to where the kernel's ephemeral range starts by default.
const LOW: u32 = 20_000;
const HIGH: u32 = 32_768;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(HIGH)
}

/// How many polls any wait may make, whatever its deadline: 10 minutes at the slowest period.
const MAX_POLLS: u32 = 6_000;

/// Blocks until `f` yields a value, polling every 100 ms for at most `limit`; panics naming
/// `what` when it never does.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    for _ in 0..MAX_POLLS {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}")
}

/// Polls `check` every 100 ms for at most `limit`; the time it took to hold, or `None`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// [`within`], panicking with `what` when `check` never holds.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if within(limit, check).await.is_none() {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// Waits (without blocking the runtime) until the plain condition `f` holds, polling every
/// 20 ms for at most `limit`; panics naming `what` otherwise.
pub async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    for _ in 0..MAX_POLLS {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// True when the peer closes `s` (EOF or reset) within `limit`; whatever it sends first (an
/// error response, say) is read and skipped.
pub async fn closed_within(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Sends `msg` on `s` and reads as many bytes back; true when they are `msg` again within 3 s
/// (false when the peer closed the connection or nothing came back in time).
pub async fn echoes(s: &mut (impl AsyncRead + AsyncWrite + Unpin), msg: &[u8]) -> bool {
    let fut = async {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf == msg)
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..64).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            if ephemeral_low() >= HIGH {
                assert!((LOW..HIGH).contains(&(p as u32)), "{p}");
            }
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
