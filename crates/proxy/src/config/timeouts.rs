//! `timeouts:` of the proxy config: the time limits that bound what a misbehaving client can
//! hold on to, with their defaults, and the `…Ms` integer keys they replace.

use serde::{Deserialize, Serialize};
use trustmesh_config::{ConfigError, Deprecations, Duration};

/// `timeouts.handshake`: first byte + TLS handshake.
pub const DEFAULT_HANDSHAKE: Duration = Duration::from_secs(10);
/// `timeouts.requestHeaders`: 60 s, like nginx's `client_header_timeout`. hyper starts this
/// timer whenever it waits for a request's headers, including between requests on a kept-alive
/// connection, so it is also how long an idle keep-alive connection is held: 10 s closed
/// connections that HTTP clients' pools still considered reusable (a request sent as the
/// sidecar closes fails), while slow senders are still bounded.
pub const DEFAULT_REQUEST_HEADERS: Duration = Duration::from_secs(60);
/// `timeouts.connect`: connecting to the local app or a peer.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
/// `timeouts.maxHeaderBytes`: the largest request header block accepted.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// `timeouts.terminationDrain`: on SIGTERM/SIGINT, how long open connections may finish
/// (Istio's `terminationDrainDuration` default is also 5 s).
pub const DEFAULT_TERMINATION_DRAIN: Duration = Duration::from_secs(5);
/// `timeouts.tcpIdle`: Envoy's TCP proxy idle timeout default, 1 h.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(3600);
/// `timeouts.httpIdle`: Envoy's HTTP connection idle timeout default, 1 h.
pub const DEFAULT_HTTP_IDLE: Duration = Duration::from_secs(3600);

/// `timeouts:` as written. Each `…_ms` field is the deprecated integer spelling of the
/// duration field before it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawTimeouts {
    handshake: Option<Duration>,
    handshake_ms: Option<u64>,
    request_headers: Option<Duration>,
    header_read_ms: Option<u64>,
    connect: Option<Duration>,
    connect_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    termination_drain: Option<Duration>,
    drain_ms: Option<u64>,
    tcp_idle: Option<Duration>,
    tcp_idle_ms: Option<u64>,
    http_idle: Option<Duration>,
    http_idle_ms: Option<u64>,
}

/// Time limits that bound what a misbehaving client can hold on to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// First byte + TLS handshake must complete within this.
    handshake: Duration,
    /// Request headers must arrive within this; defeats slowloris.
    request_headers: Duration,
    /// Connecting to the local app or a peer.
    connect: Duration,
    /// Largest request header block accepted (bytes).
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT: how long open connections may finish before the process exits.
    termination_drain: Duration,
    /// TCP relays (inbound tcp listeners, outbound) end after this long with no data.
    tcp_idle: Duration,
    /// An HTTP connection with no request in flight for this long is closed, whatever else it
    /// sends (HTTP/2 PINGs keep no connection open).
    http_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: DEFAULT_HANDSHAKE,
            request_headers: DEFAULT_REQUEST_HEADERS,
            connect: DEFAULT_CONNECT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            termination_drain: DEFAULT_TERMINATION_DRAIN,
            tcp_idle: DEFAULT_TCP_IDLE,
            http_idle: DEFAULT_HTTP_IDLE,
        }
    }
}

impl Timeouts {
    pub fn handshake(&self) -> std::time::Duration {
        self.handshake.get()
    }
    pub fn header_read(&self) -> std::time::Duration {
        self.request_headers.get()
    }
    pub fn connect(&self) -> std::time::Duration {
        self.connect.get()
    }
    pub fn drain(&self) -> std::time::Duration {
        self.termination_drain.get()
    }
    pub fn tcp_idle(&self) -> std::time::Duration {
        self.tcp_idle.get()
    }
    pub fn http_idle(&self) -> std::time::Duration {
        self.http_idle.get()
    }

    /// The typed timeouts from the raw ones, taking each old `…Ms` key where the new one is
    /// absent (recorded as deprecated).
    pub(super) fn convert(
        raw: RawTimeouts,
        old: &mut Deprecations,
    ) -> Result<Timeouts, ConfigError> {
        let mut pick = |new_key, new, old_key, ms, default| {
            millis(old, "timeouts", new_key, new, old_key, ms, default)
        };
        Ok(Timeouts {
            handshake: pick(
                "handshake",
                raw.handshake,
                "handshakeMs",
                raw.handshake_ms,
                DEFAULT_HANDSHAKE,
            )?,
            request_headers: pick(
                "requestHeaders",
                raw.request_headers,
                "headerReadMs",
                raw.header_read_ms,
                DEFAULT_REQUEST_HEADERS,
            )?,
            connect: pick(
                "connect",
                raw.connect,
                "connectMs",
                raw.connect_ms,
                DEFAULT_CONNECT,
            )?,
            termination_drain: pick(
                "terminationDrain",
                raw.termination_drain,
                "drainMs",
                raw.drain_ms,
                DEFAULT_TERMINATION_DRAIN,
            )?,
            tcp_idle: pick(
                "tcpIdle",
                raw.tcp_idle,
                "tcpIdleMs",
                raw.tcp_idle_ms,
                DEFAULT_TCP_IDLE,
            )?,
            http_idle: pick(
                "httpIdle",
                raw.http_idle,
                "httpIdleMs",
                raw.http_idle_ms,
                DEFAULT_HTTP_IDLE,
            )?,
            max_header_bytes: raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        })
    }
}

/// A duration setting that was an integer of milliseconds under its old key.
pub(super) fn millis(
    old: &mut Deprecations,
    at: &str,
    new_key: &str,
    new: Option<Duration>,
    old_key: &str,
    ms: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let v = old.converted(at, new_key, new, old_key, ms, |ms| {
        let d = Duration::from_millis(ms);
        Ok((d, Some((ms.to_string(), d.spelling()))))
    })?;
    Ok(v.unwrap_or(default))
}
