//! What is known about an inbound connection once its transport is settled: the facts policy,
//! ext_authz, the access log and forwarding read. It sits below all of them (ztunnel's
//! `rbac::Connection` is the model): listeners build it, and nothing that reads it imports a
//! listener.

use std::net::SocketAddr;
use std::time::Instant;

use trustmesh_identity::SpiffeId;

/// A verified mTLS peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: SpiffeId,
    /// Hex SHA-256 of the peer's leaf (the XFCC `Hash=` element), computed once per connection
    /// rather than on every request it carries.
    pub leaf_sha256: String,
}

/// What is known about an inbound connection once its transport is settled.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    pub listener: usize,
    pub listener_port: u16,
    pub source: SocketAddr,
    /// The address the client connected to (our listener).
    pub local: SocketAddr,
    /// The local app: destination address/port for policy purposes.
    pub target: SocketAddr,
    /// The address the proxy connects to the app from, when it must be a particular one: a
    /// captured connection goes to the workload's own address from 127.0.0.6, which the
    /// capture rules let through instead of capturing again (Istio's inbound passthrough).
    pub app_source: Option<std::net::IpAddr>,
    pub peer: Option<Peer>,
    pub tls: bool,
    /// How to talk to the app on HTTP listeners.
    pub app_protocol: crate::config::AppProtocol,
    /// SNI the client sent, if any (`connection.sni` in policies).
    pub sni: Option<String>,
    pub started: Instant,
}
