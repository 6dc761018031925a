//! Pooled mTLS connections from this sidecar to its peers, for routed requests ([`crate::route`]).
//!
//! Both kinds are kept per worker thread (the thread whose reactor drives them, as the app
//! pools of [`crate::workers`]), per mesh view (a reload starts new pools, see `pool`) and
//! per endpoint and identities the peer must prove:
//!
//! - HTTP/2 (ALPN `h2`): one multiplexed connection, shared by every request;
//! - HTTP/1.1 (ALPN `http/1.1`): a list of connections, each carrying one request at a time.
//!   A request takes an idle one or opens another, and gives it back as soon as the response
//!   head is in: hyper's sender reports it ready again only once that response's body has been
//!   read to the end, so a connection still streaming a body is passed over, never queued
//!   behind. The list grows to the most requests in flight at once to that peer, as Envoy's
//!   HTTP/1 pool does, and a connection leaves it when it closes (the peer's idle timeout).
//!
//! Which of the two a request uses is the registry's decision ([`trustmesh_registry::UpstreamHttp`]).
//!
//! A peer whose workload terminates HBONE (Istio's `networking.istio.io/tunnel: http`) is
//! reached through its port 15008 instead, as Istio's sidecars reach ambient workloads: each
//! of these connections is an HTTP/2 CONNECT stream to the endpoint ([`crate::tunnel`]), the
//! request inside it as the port's HTTP version says, so the requests to that peer share one
//! mTLS connection whichever version they are.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::dialslot::DialSlot;
use crate::fastmap::{self, FastMap};
use crate::state::Shared;
use crate::tunnel::Tunnel;
use crate::upstream::{reset_sentence, Security};

/// Per endpoint address, the pools by the mesh view they were made under
/// ([`crate::mesh::Mesh::epoch`]) and the identities the endpoint must present. Keyed by the
/// address alone, so a request hashes a socket address and copies no SPIFFE ID (one identity
/// set per address is the rule).
type ByAddr<T> = FastMap<SocketAddr, Vec<(Key, T)>>;

/// Beside the address: the mesh view, whether the connections are HBONE streams, and the
/// identities.
type Key = (u64, bool, Vec<String>);

/// The pool of `peer` in `pools` (its address, view, transport and identities), made when
/// missing. The pools of older views at that address are dropped on the way: their connections were verified
/// against trust that may have changed, and close once their requests in flight are done.
fn pool<T: Default + Clone>(pools: &mut ByAddr<T>, peer: &Peer<'_>) -> T {
    let (epoch, hbone) = (peer.epoch, peer.hbone.is_some());
    let list = pools.entry(peer.addr).or_default();
    list.retain(|((e, _, _), _)| *e >= epoch);
    match list
        .iter()
        .find(|((e, h, have), _)| *e == epoch && *h == hbone && have.as_slice() == peer.ids)
    {
        Some((_, p)) => p.clone(),
        None => {
            let p = T::default();
            list.push(((epoch, hbone, peer.ids.to_vec()), p.clone()));
            p
        }
    }
}

/// The identity a peer's server proved, shared by every request its connection carries.
pub type Proved = Option<Arc<str>>;

/// A live HTTP/2 connection's sender and the identity the server proved.
type H2Conn = (http2::SendRequest<Incoming>, Proved);

/// The HTTP/2 connection of one key, made by one request at a time: requests that arrive
/// together on a cold pool wait for one handshake instead of each making its own (the
/// benchmark saw 15 one-request connections at start without it), and share its failure.
type H2Slot = Arc<DialSlot<H2Conn, String>>;

/// An HTTP/1.1 connection's sender and the identity the server proved.
type H1Conn = (http1::SendRequest<Incoming>, Proved);

/// The HTTP/1.1 connections of one key that are not carrying a request (or are still
/// finishing a response body).
type H1List = Arc<crate::h1list::H1List<Incoming, Proved>>;

thread_local! {
    static H2_POOL: RefCell<ByAddr<H2Slot>> = RefCell::new(fastmap::new());
    static H1_POOL: RefCell<ByAddr<H1List>> = RefCell::new(fastmap::new());
}

/// A connection ready to carry one request.
enum Sender {
    H2(http2::SendRequest<Incoming>),
    /// Given back to its list once the response head is in.
    H1(H1Conn, H1List),
}

type Sent = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Incoming>>>;

impl Sender {
    async fn send(self, req: Request<Incoming>) -> Sent {
        match self {
            Sender::H2(mut sender) => sender.try_send_request(req).await,
            Sender::H1((sender, peer), list) => list.send(sender, peer, req).await,
        }
    }
}

/// The peer sidecar a request goes to, and how.
pub struct Peer<'a> {
    pub addr: SocketAddr,
    /// The mesh view the request was routed in ([`crate::mesh::Mesh::epoch`]).
    pub epoch: u64,
    /// The identities the peer must present (the pool's key beside the address).
    pub ids: &'a [String],
    /// The client config, asked for only when a connection has to be opened (offering `h2`
    /// for an HBONE peer, whose outer connection is HTTP/2 whatever the request's version).
    pub security: &'a (dyn Fn() -> Result<Security, String> + Sync),
    /// HTTP/2, else HTTP/1.1.
    pub h2: bool,
    /// Through the peer's HBONE port: the app's address, which the CONNECT names in
    /// `forwarded` (the app connection that opened the stream; later requests on it may come
    /// from other connections of the same app).
    pub hbone: Option<SocketAddr>,
}

/// Why a request got no answer from the peer.
pub enum Failed {
    /// It was not sent (no connection could be made, or the ones taken closed before it was
    /// written): the request comes back, for another endpoint.
    Unsent(String, Box<Request<Incoming>>),
    /// It was sent, at least in part, and the connection failed before the answer.
    Sent(String),
}

/// Sends `req` (already in the form its version needs) to `peer` over a pooled connection;
/// the answer and the identity the server proved. Errors are counted and worded in Envoy's
/// terms.
///
/// A pooled connection may be closed by the peer just as it is taken (its idle timeout,
/// `timeouts.httpIdle`): a request it never carried is sent once more on another, as Envoy
/// and hyper's pooled client do.
pub async fn request(
    shared: &Shared,
    peer: &Peer<'_>,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Proved), Failed> {
    let mut tries = 2;
    loop {
        tries -= 1;
        let (conn, proved) = match sender(shared, peer).await {
            Ok(s) => s,
            Err(why) => return Err(Failed::Unsent(why, Box::new(req))),
        };
        let mut e = match conn.send(req).await {
            Ok(resp) => return Ok((resp, proved)),
            Err(e) => e,
        };
        let why = reset_sentence(
            "remote reset",
            format!("{}: {}", peer.addr, crate::upstream::error_chain(e.error())),
        );
        match e.take_message() {
            Some(back) if tries > 0 => req = back,
            Some(back) => return Err(Failed::Unsent(why, Box::new(back))),
            None => return Err(Failed::Sent(why)),
        }
    }
}

/// A connection to `peer` for one request, and the identity the server proved; made when the
/// pool has none free. The error is already counted and worded.
async fn sender(shared: &Shared, peer: &Peer<'_>) -> Result<(Sender, Proved), String> {
    if peer.h2 {
        let (sender, proved) = h2_sender(shared, peer).await?;
        return Ok((Sender::H2(sender), proved));
    }
    let list = H1_POOL.with(|p| pool(&mut p.borrow_mut(), peer));
    // No idle limit of our own: the peer's `timeouts.httpIdle` closes what it does not need.
    let conn = match list.take(None) {
        Some(conn) => conn,
        // Boxed: the handshake's future is large and runs once per connection, while this
        // function runs for every request (see `http::serve` on future sizes).
        None => Box::pin(open_h1(shared, peer)).await?,
    };
    let proved = conn.1.clone();
    Ok((Sender::H1(conn, list), proved))
}

async fn h2_sender(shared: &Shared, peer: &Peer<'_>) -> Result<H2Conn, String> {
    let slot = H2_POOL.with(|p| pool(&mut p.borrow_mut(), peer));
    let failures = slot.failures();
    // Boxed: the handshake's future is large and runs once per connection.
    slot.get_or_dial(
        failures,
        |(sender, _)| !sender.is_closed(),
        || Box::pin(open_h2(shared, peer)),
    )
    .await
}

/// A new connection to `peer` for requests of `alpn`'s version, and the identity its server
/// proved: mTLS to the peer's port, or a CONNECT stream through its HBONE port.
async fn link(shared: &Shared, peer: &Peer<'_>, alpn: &[u8]) -> Result<(Link, Proved), String> {
    let addr = peer.addr;
    let security = (peer.security)()?;
    if let Some(client) = peer.hbone {
        let Security::Mtls(config, _) = security else {
            return Err(format!("HBONE to {addr} needs mesh mTLS"));
        };
        let (tunnel, proved) = tunnel(shared, addr, peer.epoch, peer.ids, config, client).await?;
        return Ok((Link::Tunnel(tunnel), proved.map(Into::into)));
    }
    let timeouts = shared.current().config.timeouts.clone();
    let stream =
        match crate::upstream::connect(addr, &security, timeouts.connect(), timeouts.handshake())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                e.count(&shared.metrics);
                return Err(e.sentence());
            }
        };
    let proved = crate::upstream::verified_peer(&shared.current().chains, &stream);
    if stream.alpn() != Some(alpn) {
        return Err(reset_sentence(
            "protocol error",
            format!(
                "{addr} did not agree to {} over mTLS (ALPN)",
                String::from_utf8_lossy(alpn)
            ),
        ));
    }
    Ok((Link::Tls(TokioIo::new(stream)), proved.map(Into::into)))
}

/// What a pooled connection runs over.
enum Link {
    Tls(TokioIo<crate::upstream::Stream>),
    Tunnel(Tunnel),
}

/// A CONNECT through the HBONE port of `target`'s address, with the identities auto mTLS
/// expects pinned; a failure is counted and said in words.
pub async fn tunnel_to(
    shared: &Shared,
    view: &crate::mesh::Mesh,
    target: &crate::mesh::Target,
    client: SocketAddr,
) -> Result<(Tunnel, Option<String>), String> {
    let (crate::mesh::TargetAddr::Socket(addr), crate::mesh::TargetTls::Mesh(ids)) =
        (&target.addr, &target.tls)
    else {
        return Err(format!(
            "{}: HBONE needs an address and mesh mTLS",
            target.cluster
        ));
    };
    let config = view
        .client_tls(ids, crate::mesh::Carry::Http2)
        .map_err(|e| format!("{}: {e}", target.cluster))?;
    tunnel(shared, *addr, view.epoch, ids, config, client).await
}

/// A CONNECT to `addr` through its own HBONE port (15008), `ids` pinned by `config` (which
/// offers `h2`), naming `client` in `forwarded`; a failure is counted and said in words.
async fn tunnel(
    shared: &Shared,
    addr: SocketAddr,
    epoch: u64,
    ids: &[String],
    config: Arc<rustls::ClientConfig>,
    client: SocketAddr,
) -> Result<(Tunnel, Option<String>), String> {
    let timeouts = shared.current().config.timeouts.clone();
    let dial = crate::tunnel::Dial {
        peer: SocketAddr::new(addr.ip(), crate::config::DEFAULT_HBONE_PORT),
        identities: ids,
        epoch,
        config,
        target: addr,
        client,
        connect_timeout: timeouts.connect(),
        handshake_timeout: timeouts.handshake(),
    };
    let chains = shared.current().chains.clone();
    crate::tunnel::open(&dial, &chains).await.map_err(|e| {
        e.count(&shared.metrics);
        e.sentence()
    })
}

/// A new HTTP/2 connection to `peer`, driven by a task of its own.
async fn open_h2(shared: &Shared, peer: &Peer<'_>) -> Result<H2Conn, String> {
    let (link, proved) = link(shared, peer, b"h2").await?;
    let sender = match link {
        Link::Tls(io) => h2_over(io, peer.addr).await?,
        Link::Tunnel(io) => h2_over(TokioIo::new(io), peer.addr).await?,
    };
    Ok((sender, proved))
}

async fn h2_over<T>(io: T, addr: SocketAddr) -> Result<http2::SendRequest<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    let (sender, conn) = crate::h2settings::client(&mut builder)
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "outbound HTTP/2 connection to {addr} ended");
        }
    });
    Ok(sender)
}

/// A new HTTP/1.1 connection to `peer`, driven by a task of its own.
async fn open_h1(shared: &Shared, peer: &Peer<'_>) -> Result<H1Conn, String> {
    let (link, proved) = link(shared, peer, b"http/1.1").await?;
    let sender = match link {
        Link::Tls(io) => h1_over(io, peer.addr).await?,
        Link::Tunnel(io) => h1_over(TokioIo::new(io), peer.addr).await?,
    };
    Ok((sender, proved))
}

async fn h1_over<T>(io: T, addr: SocketAddr) -> Result<http1::SendRequest<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP/1.1 with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "outbound HTTP/1.1 connection to {addr} ended");
        }
    });
    Ok(sender)
}
