//! The bounds that keep the proxy alive under a flood from the workload it serves.
//!
//! Every process of the pod resolves through this server, so a misbehaving one (a retry loop,
//! a resolver storm) must not exhaust the sidecar. Mesh answers are computed inline and cost
//! nothing to hold; forwarded queries wait on an upstream and are the memory that grows, so
//! they are capped ([`Limits::max_in_flight`]) and the excess is answered SERVFAIL at once
//! (the client retries later, as after any SERVFAIL). TCP connections are capped and closed
//! when idle, as RFC 7766 §6.2 asks of servers.
//!
//! The defaults follow Istio's agent where it has a number: its upstream client gives each
//! exchange 5 s (`pkg/dns/client/proxy.go`); ztunnel closes an idle TCP client after 5 s
//! (`src/dns/server.rs`). Istio has no in-flight or connection cap; ours are sized for one pod.

use std::time::Duration;

/// How long one upstream gets to answer one query before the next is tried.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a forwarded query may take in all, over every upstream tried.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded queries waiting on an upstream at once (UDP and TCP clients together). Each holds
/// a receive buffer as large as its client's EDNS payload size (64 KiB at worst), so this caps
/// the memory a flood can pin at 16 MiB.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Client TCP connections open at once.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 128;
/// How long a client TCP connection may wait for its next query.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(5);

/// The proxy's bounds; [`Limits::default`] holds the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub upstream_timeout: Duration,
    pub query_timeout: Duration,
    pub max_in_flight: usize,
    pub max_tcp_connections: usize,
    pub tcp_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_tcp_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_idle: DEFAULT_TCP_IDLE,
        }
    }
}
