//! HBONE, Istio ambient's transport between proxies: HTTP/2 CONNECT over mTLS on port 15008,
//! each CONNECT stream one connection to the workload. In transparent mode the sidecar always
//! terminates it (`capture.hbonePort`, Istio's 15008), since a peer that reads the workload's
//! `networking.istio.io/tunnel: http` label will tunnel to it; in explicit mode only when the
//! file asks for it (`hbone:`), and then a CONNECT may only reach a configured inbound
//! listener's target. The stream cap bounds what one peer connection can hold open.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::capture::{CaptureConfig, DEFAULT_HBONE_MAX_STREAMS, DEFAULT_HBONE_PORT};

/// `hbone:` — an HBONE listener in explicit mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HboneConfig {
    #[serde(default = "hbone_port")]
    pub port: u16,
    /// Loopback by default, as `inbound[].address`: a sidecar reachable from the network says so.
    #[serde(default = "loopback")]
    pub address: IpAddr,
    #[serde(default = "max_streams")]
    pub max_concurrent_streams: u32,
}

/// The HBONE listener to bind, whichever mode asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HboneListener {
    pub address: IpAddr,
    pub port: u16,
    pub max_concurrent_streams: u32,
    /// Transparent mode: CONNECT targets are the workload's own addresses and any port;
    /// explicit mode: only the inbound listeners' targets.
    pub captured: bool,
}

/// The HBONE listener: `hbone:` in explicit mode, `capture.hbonePort` in transparent mode.
pub fn listener(
    capture: Option<&CaptureConfig>,
    hbone: Option<&HboneConfig>,
) -> Option<HboneListener> {
    if let Some(c) = capture {
        return Some(HboneListener {
            // Every address, as the capture's inbound port: peers reach the pod's address.
            address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: c.hbone_port,
            max_concurrent_streams: c.hbone_max_streams,
            captured: true,
        });
    }
    hbone.map(|h| HboneListener {
        address: h.address,
        port: h.port,
        max_concurrent_streams: h.max_concurrent_streams,
        captured: false,
    })
}

/// One place per mode for the port; streams capped at something usable; in explicit mode a
/// port of its own and an inbound listener to reach (`taken`: the other listeners).
pub fn check(
    capture: Option<&CaptureConfig>,
    hbone: Option<&HboneConfig>,
    mut taken: impl Iterator<Item = (IpAddr, u16)>,
    has_inbound: bool,
) -> Result<(), (String, String)> {
    if capture.is_some() && hbone.is_some() {
        return Err((
            "hbone".into(),
            "is for explicit mode; in transparent mode (capture:) set capture.hbonePort \
             and capture.hboneMaxStreams"
                .into(),
        ));
    }
    if let Some(c) = capture {
        if c.hbone_max_streams == 0 {
            return Err((
                "capture.hboneMaxStreams".into(),
                "must be at least 1".into(),
            ));
        }
        if c.hbone_port != 0 && [c.inbound_port, c.outbound_port].contains(&c.hbone_port) {
            return Err((
                "capture.hbonePort".into(),
                format!(
                    "{} is another capture port; HBONE needs its own",
                    c.hbone_port
                ),
            ));
        }
    }
    if let Some(h) = hbone {
        if h.max_concurrent_streams == 0 {
            return Err((
                "hbone.maxConcurrentStreams".into(),
                "must be at least 1".into(),
            ));
        }
        if h.port == 0 {
            return Err((
                "hbone.port".into(),
                "port 0 is not a valid listen port".into(),
            ));
        }
        if taken.any(|(address, port)| port == h.port && address == h.address) {
            return Err((
                "hbone.port".into(),
                format!(
                    "{}:{} is already used by another listener",
                    h.address, h.port
                ),
            ));
        }
        if !has_inbound {
            return Err((
                "hbone".into(),
                "needs at least one inbound listener: a CONNECT can only reach an inbound \
                 listener's target"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn hbone_port() -> u16 {
    DEFAULT_HBONE_PORT
}
fn max_streams() -> u32 {
    DEFAULT_HBONE_MAX_STREAMS
}
fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
