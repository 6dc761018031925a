//! The HTTP/1.1 connections a pool keeps to one destination, each carrying one request at a
//! time: `meshconn`'s to a peer sidecar, `apppool`'s to the local app.
//!
//! A request takes a connection hyper reports ready (its last response read to the end) and
//! puts it back as soon as its own response head is in; a connection still streaming a body is
//! passed over, never queued behind. The list is in the order connections were put back: a
//! request takes the most recently used ready one (its buffers are warm, and the ones a burst
//! no longer needs sink to the front), and connections leave from the front once closed or,
//! with an idle limit, unused for longer than it. A take looks at the few connections it needs
//! to, not at every one in the list and its age (that scan was a request's largest cost in
//! the app pool: one clock comparison per kept connection). Only the worker thread that drives
//! the connections uses a list; its lock is never contended.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;

/// The connections, each with what the pool keeps beside it (`M`: the identity the peer
/// proved, or nothing).
pub struct H1List<B, M> {
    /// Oldest put back first.
    conns: Mutex<VecDeque<Kept<B, M>>>,
}

struct Kept<B, M> {
    sender: SendRequest<B>,
    meta: M,
    /// When it was last put back.
    since: Instant,
}

impl<B, M> Default for H1List<B, M> {
    fn default() -> Self {
        H1List {
            conns: Mutex::new(VecDeque::new()),
        }
    }
}

impl<B: Body + 'static, M> H1List<B, M> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Kept<B, M>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently put back ready connection and its `M`, never one that waited
    /// unused longer than `max_idle`. On the way, closed connections and (with `max_idle`)
    /// ready ones put back longer ago than that leave the front of the list (the front is the
    /// oldest, so the first that stays ends the pruning), and the ones of either kind the
    /// search from the back passes leave too. One in the middle, behind a connection still
    /// streaming a body, stays until one of those reaches it; a closed one holds no socket.
    pub fn take(&self, max_idle: Option<Duration>) -> Option<(SendRequest<B>, M)> {
        let mut conns = self.lock();
        let now = max_idle.map(|max| (Instant::now(), max));
        let expired = |c: &Kept<B, M>| {
            now.is_some_and(|(now, max)| c.sender.is_ready() && now.duration_since(c.since) > max)
        };
        while let Some(c) = conns.front() {
            if !(c.sender.is_closed() || expired(c)) {
                break;
            }
            conns.pop_front();
        }
        let mut i = conns.len();
        while i > 0 {
            i -= 1;
            let c = &conns[i];
            if c.sender.is_closed() || expired(c) {
                conns.remove(i);
            } else if c.sender.is_ready() {
                let kept = conns.remove(i)?;
                return Some((kept.sender, kept.meta));
            }
        }
        None
    }

    /// Sends `req` on `sender` and, once the response head is in, keeps the connection (with
    /// `meta`) for the next request. A failed send drops it.
    pub async fn send(
        &self,
        mut sender: SendRequest<B>,
        meta: M,
        req: Request<B>,
    ) -> Result<Response<Incoming>, TrySendError<Request<B>>> {
        let sent = sender.try_send_request(req).await;
        if sent.is_ok() {
            self.put(sender, meta, Instant::now());
        }
        sent
    }

    fn put(&self, sender: SendRequest<B>, meta: M, since: Instant) {
        self.lock().push_back(Kept {
            sender,
            meta,
            since,
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// `n` HTTP/1.1 connections to a loopback server that answers every request with a 200 and
    /// 256 KiB of body (a response not read to the end keeps its connection busy), each driven
    /// by its own task.
    async fn connections(n: usize) -> Vec<SendRequest<String>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new("x".repeat(256 << 10)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let mut senders = Vec::new();
        for _ in 0..n {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.ready().await.unwrap();
            senders.push(sender);
        }
        senders
    }

    #[tokio::test]
    async fn the_most_recent_ready_connection_is_taken_and_stale_ones_leave_from_the_front() {
        let list: H1List<String, usize> = H1List::default();
        let now = Instant::now();
        let ages = [120, 90, 10, 0];
        for (i, s) in connections(ages.len()).await.into_iter().enumerate() {
            list.put(s, i, now - Duration::from_secs(ages[i]));
        }
        // The two put back more than a minute ago leave; the newest is taken.
        let (_, first) = list.take(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(first, 3);
        assert_eq!(list.len(), 1);
        let (_, second) = list.take(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(second, 2);
        assert!(list.take(Some(Duration::from_secs(60))).is_none());
    }

    #[tokio::test]
    async fn a_stale_connection_behind_a_busy_one_is_not_handed_out() {
        let list: H1List<String, usize> = H1List::default();
        let now = Instant::now();
        let mut senders = connections(2).await;
        let stale = senders.pop().unwrap();
        let mut busy = senders.pop().unwrap();
        // A request whose response head is in and whose body is not read: not ready.
        let resp = busy
            .send_request(Request::new(String::new()))
            .await
            .unwrap();
        assert!(!busy.is_ready());
        list.put(busy, 0, now - Duration::from_secs(120));
        list.put(stale, 1, now - Duration::from_secs(90));
        assert!(list.take(Some(Duration::from_secs(60))).is_none());
        assert_eq!(list.len(), 1, "the stale one left, the busy one stays");
        drop(resp);
    }

    #[tokio::test]
    async fn without_an_idle_limit_only_closed_connections_leave() {
        let list: H1List<String, usize> = H1List::default();
        let now = Instant::now();
        let mut senders = connections(3).await;
        // The server closes a connection after an HTTP/1.0 request without keep-alive.
        let mut closing = senders.remove(0);
        let req = Request::builder()
            .version(http::Version::HTTP_10)
            .uri("/")
            .body(String::new())
            .unwrap();
        closing.send_request(req).await.unwrap();
        for _ in 0..100 {
            if closing.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closing.is_closed(), "the server should have closed it");
        list.put(closing, 0, now - Duration::from_secs(3600));
        for (i, s) in senders.into_iter().enumerate() {
            list.put(s, i + 1, now - Duration::from_secs(3600));
        }
        let (_, taken) = list.take(None).unwrap();
        assert_eq!(taken, 2);
        assert_eq!(list.len(), 1, "the closed one at the front left");
        let (_, taken) = list.take(None).unwrap();
        assert_eq!(taken, 1);
        assert!(list.take(None).is_none());
    }
}
