//! `capture:` — transparent mode. `trustmesh capture install` redirects the workload's TCP to
//! these ports (and its DNS to the DNS port); the sidecar reads each connection's original
//! destination and decides by the service registry, so apps call services by name, unchanged.
//! Istio's ports are the defaults, so a capture installed with istio-iptables' defaults lands
//! here as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Istio's outbound capture port (`-p` of istio-iptables).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// Istio's inbound capture port (`-z`).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Istio's DNS proxy port.
pub const DEFAULT_DNS_PORT: u16 = 15053;
/// Istio's HBONE port (ztunnel's and the waypoints' `15008`), also `hbone.port`'s default.
pub const DEFAULT_HBONE_PORT: u16 = 15008;
/// CONNECT streams open at once on one HBONE connection (HTTP/2 `MAX_CONCURRENT_STREAMS`):
/// ztunnel's server allows 200, as hyper's default does; also `hbone.maxConcurrentStreams`'.
pub const DEFAULT_HBONE_MAX_STREAMS: u32 = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureConfig {
    /// Where the workload's outbound connections arrive. Bound on loopback only: iptables'
    /// REDIRECT of locally made connections goes to 127.0.0.1, and a port reachable from the
    /// network would let anyone use this workload's identity.
    #[serde(default = "outbound_port")]
    pub outbound_port: u16,
    /// Where connections to the workload arrive (bound on every address: REDIRECT of arriving
    /// packets goes to the address of the interface they came in on).
    #[serde(default = "inbound_port")]
    pub inbound_port: u16,
    /// The DNS proxy (UDP and TCP on loopback), answering mesh names with their addresses and
    /// forwarding the rest; `false` runs none.
    #[serde(default = "yes")]
    pub dns: bool,
    #[serde(default = "dns_port")]
    pub dns_port: u16,
    /// Where services without `addresses` get their virtual IP (Istio's DNS auto-allocation);
    /// default `240.240.0.0/16`, as Istio's. Every sidecar must use the same range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_range: Option<ipnet::Ipv4Net>,
    /// Where peers' HBONE tunnels arrive (every address, as the inbound port), Istio's 15008.
    /// The capture must leave this port alone (`trustmesh capture install` with it among the
    /// excluded inbound ports), as Istio's sidecar injection does for its own ports.
    #[serde(default = "hbone_port")]
    pub hbone_port: u16,
    /// CONNECT streams open at once on one HBONE connection.
    #[serde(default = "hbone_max_streams")]
    pub hbone_max_streams: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            dns: true,
            dns_port: DEFAULT_DNS_PORT,
            vip_range: None,
            hbone_port: DEFAULT_HBONE_PORT,
            hbone_max_streams: DEFAULT_HBONE_MAX_STREAMS,
        }
    }
}

impl CaptureConfig {
    pub fn outbound_address(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    pub fn inbound_address(&self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }

    pub fn dns_address(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    /// The ports must differ from each other; 0 (any port) is for tests.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let ports = [
            ("capture.outboundPort", self.outbound_port),
            ("capture.inboundPort", self.inbound_port),
        ];
        if ports[0].1 != 0 && ports[0].1 == ports[1].1 {
            return Err((
                ports[1].0.into(),
                format!(
                    "{} is also capture.outboundPort; inbound and outbound need their own ports",
                    ports[1].1
                ),
            ));
        }
        Ok(())
    }
}

fn outbound_port() -> u16 {
    DEFAULT_OUTBOUND_PORT
}
fn inbound_port() -> u16 {
    DEFAULT_INBOUND_PORT
}
fn dns_port() -> u16 {
    DEFAULT_DNS_PORT
}
fn hbone_port() -> u16 {
    DEFAULT_HBONE_PORT
}
fn hbone_max_streams() -> u32 {
    DEFAULT_HBONE_MAX_STREAMS
}
fn yes() -> bool {
    true
}
