//! The HTTP/1.1 connections a pool keeps to one destination, each carrying one request at a
//! time: `meshconn`'s to a peer sidecar, `apppool`'s to the local app.
//!
//! A request takes a connection hyper reports ready (its last response read to the end) and
//! puts it back as soon as its own response head is in; a connection still streaming a body is
//! passed over, never queued behind. Closed connections leave the list when it is next used.
//! Only the worker thread that drives the connections uses a list; its lock is never
//! contended.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;

/// The connections, each with what the pool keeps beside it (`M`: the identity the peer
/// proved, or nothing).
pub struct H1List<B, M> {
    conns: Mutex<Vec<Kept<B, M>>>,
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
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl<B: Body + 'static, M> H1List<B, M> {
    fn lock(&self) -> MutexGuard<'_, Vec<Kept<B, M>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready connection and its `M`, dropping on the way the closed ones and, with
    /// `max_idle`, the ready ones unused for longer than that.
    pub fn take(&self, max_idle: Option<Duration>) -> Option<(SendRequest<B>, M)> {
        let now = Instant::now();
        let mut conns = self.lock();
        let expired = |c: &Kept<B, M>| {
            max_idle.is_some_and(|max| c.sender.is_ready() && now.duration_since(c.since) > max)
        };
        conns.retain(|c| !(c.sender.is_closed() || expired(c)));
        let free = conns.iter().position(|c| c.sender.is_ready())?;
        let kept = conns.swap_remove(free);
        Some((kept.sender, kept.meta))
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
            self.lock().push(Kept {
                sender,
                meta,
                since: Instant::now(),
            });
        }
        sent
    }
}
