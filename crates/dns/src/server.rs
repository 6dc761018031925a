//! Starting the DNS proxy: bind UDP and TCP on one address, hand both listeners the shared
//! state and a drain watch, and report what was bound.
//!
//! Both listeners use the same port, as every DNS client expects (a client retries a truncated
//! UDP answer over TCP at the same address); with port 0 the UDP socket picks the port and TCP
//! binds it too, trying again with a new port in the rare case that TCP port is taken. The
//! listeners run as tasks on the caller's runtime and stop when the drain starts
//! (`trustmesh_lifecycle::drain`): nothing new is read, forwarded queries already accepted are
//! answered, and the drain's watch count tells the caller when they are done.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use trustmesh_lifecycle::drain::Watch;

use crate::counters::Counters;
use crate::limits::Limits;
use crate::names::MeshNames;
use crate::query::Shared;
use crate::resolv::Upstreams;
use crate::upstream::Forwarder;
use crate::{tcp, udp};

/// The port the sidecar's DNS proxy listens on (Istio's agent uses the same); the workload's
/// port-53 traffic is redirected here.
pub const DEFAULT_PORT: u16 = 15053;

/// How often a port-0 bind looks for a port free for both UDP and TCP.
const BIND_ATTEMPTS: usize = 16;

/// A started DNS proxy.
#[derive(Debug, Clone)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Live counters, for metrics.
    pub counters: Arc<Counters>,
}

/// Why the proxy did not start; the text is for an operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for DNS on {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the DNS proxy has no upstream resolver to forward names outside the mesh to")]
    NoUpstream,
    #[error(
        "upstream resolver {0} is the DNS proxy's own address: forwarded queries would come back \
         to it"
    )]
    Loop(SocketAddr),
}

/// Starts the proxy on `bind` with the default [`Limits`].
pub async fn start(
    bind: SocketAddr,
    names: Arc<dyn MeshNames>,
    upstreams: Upstreams,
    watch: Watch,
) -> Result<Bound, StartError> {
    start_with(bind, names, upstreams, Limits::default(), watch).await
}

/// Starts the proxy on `bind`: mesh names from `names`, everything else to `upstreams`, until
/// `watch` signals a drain.
pub async fn start_with(
    bind: SocketAddr,
    names: Arc<dyn MeshNames>,
    upstreams: Upstreams,
    limits: Limits,
    watch: Watch,
) -> Result<Bound, StartError> {
    if upstreams.servers.is_empty() {
        return Err(StartError::NoUpstream);
    }
    let (udp_socket, tcp_listener) = bind_both(bind).await?;
    let udp_addr = local(&udp_socket.local_addr(), "UDP", bind)?;
    let tcp_addr = local(&tcp_listener.local_addr(), "TCP", bind)?;
    if let Some(&own) = upstreams.servers.iter().find(|s| is_own(**s, udp_addr)) {
        return Err(StartError::Loop(own));
    }
    let counters = Arc::new(Counters::default());
    let forwarder = Forwarder::new(upstreams.servers.clone(), &limits, counters.clone());
    let shared = Arc::new(Shared::new(
        names,
        upstreams.search,
        forwarder,
        limits,
        counters.clone(),
    ));
    tracing::info!(
        udp = %udp_addr,
        tcp = %tcp_addr,
        upstreams = %upstreams.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "DNS proxy listening"
    );
    tokio::spawn(udp::serve(udp_socket, shared.clone(), watch.clone()));
    tokio::spawn(tcp::serve(tcp_listener, shared, watch));
    Ok(Bound {
        udp: udp_addr,
        tcp: tcp_addr,
        counters,
    })
}

/// UDP and TCP sockets on the same address and port.
async fn bind_both(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let err = |proto, addr, source| StartError::Bind {
        proto,
        addr,
        source,
    };
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| err("UDP", bind, e))?;
        let port = udp.local_addr().map_err(|e| err("UDP", bind, e))?.port();
        let addr = SocketAddr::new(bind.ip(), port);
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                last = Some(err("TCP", addr, e));
            }
            Err(e) => return Err(err("TCP", addr, e)),
        }
    }
    Err(last.unwrap_or_else(|| err("TCP", bind, std::io::ErrorKind::AddrInUse.into())))
}

fn local(
    addr: &std::io::Result<SocketAddr>,
    proto: &'static str,
    bind: SocketAddr,
) -> Result<SocketAddr, StartError> {
    match addr {
        Ok(a) => Ok(*a),
        Err(e) => Err(StartError::Bind {
            proto,
            addr: bind,
            source: std::io::Error::new(e.kind(), e.to_string()),
        }),
    }
}

/// Whether `upstream` would reach this proxy itself.
fn is_own(upstream: SocketAddr, bound: SocketAddr) -> bool {
    upstream.port() == bound.port()
        && (upstream.ip() == bound.ip()
            || (bound.ip().is_unspecified() && upstream.ip().is_loopback()))
}
