//! Pooled HTTP/1.1 connections from this sidecar to its local app ([`crate::forward`]).
//!
//! Kept per worker thread (the thread whose reactor drives them, as `meshconn`'s pools to
//! peers are) and per app address and source address, each an [`H1List`]: a request takes a
//! ready connection or opens one, and never waits behind a busy one. A list grows to the most
//! requests in flight at once to that app, as Envoy's inbound HTTP/1 pool does, and a
//! connection leaves it once it is closed (the app's idle timeout) or has waited [`IDLE`]
//! unused.
//!
//! Why shared rather than one app connection per client connection: each HTTP/1.1 connection
//! made with hyper's client holds about 40 KB (its dispatch channel, read and write buffers,
//! task), so 100 quiet client connections held 100 app connections, 4 MB, for the few requests
//! in flight at any moment.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::fastmap::{self, FastMap};
use crate::h1list::H1List;
use crate::reqbody::AppBody;

/// Why a request got no answer from the app.
#[derive(Debug)]
pub enum Failed {
    /// No connection could be made.
    Connect(String),
    /// The request failed on its connection (the app's fault or the client body's, which
    /// `forward::ForwardError::of` tells apart).
    Send(hyper::Error),
}

/// How long a pooled app connection may wait unused before it is closed (checked whenever the
/// pool is used), as long as hyper's pools toward HTTP/2 apps keep theirs ([`crate::workers`]).
/// Envoy's upstream idle timeout is an hour; ours is shorter because a connection kept for a
/// burst that is over only costs memory.
pub const IDLE: Duration = Duration::from_secs(30);

type List = Arc<H1List<AppBody, ()>>;

thread_local! {
    /// The lists by app address and the source address connections are made from (the
    /// client's own, when the inbound connection was captured and the app must see it).
    static POOL: RefCell<FastMap<(SocketAddr, Option<IpAddr>), List>> = RefCell::new(fastmap::new());
}

/// Sends `req` (origin form, with its Host header) to the app at `target`, from `source` when
/// given, over a pooled connection. A request that a kept connection never carried (the app
/// closed it just as the request went out, before reading any of it) is sent once more on a
/// fresh connection, as hyper's and Envoy's pools do; anything else is the client's answer.
pub async fn send(
    target: SocketAddr,
    source: Option<IpAddr>,
    connect_timeout: Duration,
    mut req: Request<AppBody>,
) -> Result<Response<Incoming>, Failed> {
    let list = POOL.with(|p| p.borrow_mut().entry((target, source)).or_default().clone());
    let mut retried = false;
    loop {
        // The one retry goes over a new connection: the pooled ones may all have been closed
        // by the same idle timeout.
        let pooled = if retried { None } else { list.take(Some(IDLE)) };
        let (sender, reused) = match pooled {
            Some((s, ())) => (s, true),
            // Boxed: connecting is rare and its future large (see `http::serve`).
            None => (
                Box::pin(connect(target, source, connect_timeout))
                    .await
                    .map_err(Failed::Connect)?,
                false,
            ),
        };
        match list.send(sender, (), req).await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(back) if reused && !retried => {
                    retried = true;
                    req = back;
                }
                _ => return Err(Failed::Send(e.into_error())),
            },
        }
    }
}

async fn connect(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<SendRequest<AppBody>, String> {
    let connecting = crate::upstream::tcp_connect(target, source);
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to {target}: {e}")),
        Err(_) => {
            return Err(format!(
                "connecting to {target}: timed out after {timeout:?}"
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 to {target}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "app connection ended with an error");
        }
    });
    Ok(sender)
}
