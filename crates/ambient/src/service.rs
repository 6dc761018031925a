//! ServiceEntry hosts → ztunnel `Service` resources, built as istiod builds them in ambient
//! mode (istio/istio `pilot/pkg/serviceregistry/ambient/services.go`: `constructServiceEntries`
//! and `selectWorkloadServices`), so ztunnel resolves VIPs and ports exactly as with istiod.
//!
//! Per host, istiod keeps one ServiceEntry per namespace (the oldest) and marks the oldest of
//! those `canonical`; the others are dropped along with their endpoints. Creation times compare
//! as written (RFC 3339); an entry without one counts as oldest, and among equals the first read
//! wins (istiod's choice among equals across namespaces depends on map order).

use std::collections::BTreeMap;

use trustmesh_registry::{Protocol, Registry, Resolution, Service};

use crate::cluster::Cluster;
use crate::istio::workload::{
    address, load_balancing, Address, AppProtocol, LoadBalancing, NetworkAddress, Port,
    Service as WdsService,
};

/// `namespace/hostname`: a service's xDS resource name and its key in a workload's `services`.
pub(crate) fn key(namespace: &str, hostname: &str) -> String {
    format!("{namespace}/{hostname}")
}

/// The services istiod sends, each with whether it is the canonical one for its host, in
/// registry order.
pub(crate) fn kept(registry: &Registry) -> Vec<(&Service, bool)> {
    // Host → namespace → index of the oldest declaration (first read among equals).
    let mut best: BTreeMap<&str, BTreeMap<&str, &Service>> = BTreeMap::new();
    for s in registry.services() {
        let slot = best
            .entry(s.host.as_str())
            .or_default()
            .entry(s.namespace.as_str())
            .or_insert(s);
        if older(s, slot) {
            *slot = s;
        }
    }
    let is_kept = |s: &&Service| best[s.host.as_str()][s.namespace.as_str()].index() == s.index();
    // Host → its canonical service: the oldest kept one.
    let mut canonical: BTreeMap<&str, &Service> = BTreeMap::new();
    for s in registry.services().iter().filter(is_kept) {
        let slot = canonical.entry(s.host.as_str()).or_insert(s);
        if older(s, slot) {
            *slot = s;
        }
    }
    registry
        .services()
        .iter()
        .filter(is_kept)
        .map(|s| (s, canonical[s.host.as_str()].index() == s.index()))
        .collect()
}

/// Strictly older (Go's `Time.Before`); no timestamp is the zero time.
fn older(a: &Service, b: &Service) -> bool {
    match (a.created(), b.created()) {
        (None, Some(_)) => true,
        (Some(x), Some(y)) => x < y,
        _ => false,
    }
}

/// Every ServiceEntry host of the registry as an `Address` carrying a `Service`, following
/// istiod's `constructServiceEntries` (per host) and `selectWorkloadServices` (one per
/// namespace, `canonical`). Resource names: [`crate::address_resource_name`].
pub fn services(registry: &Registry, cluster: &Cluster<'_>) -> Vec<Address> {
    kept(registry)
        .into_iter()
        .map(|(s, canonical)| Address {
            r#type: Some(address::Type::Service(service(s, canonical, cluster))),
        })
        .collect()
}

fn service(s: &Service, canonical: bool, cluster: &Cluster<'_>) -> WdsService {
    let network = cluster.network.to_string();
    let mut addresses: Vec<NetworkAddress> = s
        .addresses
        .iter()
        .map(|net| {
            let single = net.prefix_len() == net.max_prefix_len();
            NetworkAddress {
                network: network.clone(),
                // Masked to the prefix, as istiod's parseCidrOrIP does.
                address: crate::ip::octets(net.trunc().addr()),
                length: (!single).then_some(u32::from(net.prefix_len())),
            }
        })
        .collect();
    let wildcard_blocked = s.is_wildcard() && s.resolution != Resolution::DynamicDns;
    if addresses.is_empty() && s.resolution != Resolution::None && !wildcard_blocked {
        addresses = s
            .auto_allocated
            .iter()
            .map(|ip| NetworkAddress {
                network: network.clone(),
                address: crate::ip::octets(*ip),
                length: None,
            })
            .collect();
    }
    let load_balancing = (s.resolution == Resolution::None).then(|| LoadBalancing {
        routing_preference: Vec::new(),
        mode: load_balancing::Mode::Passthrough as i32,
        health_policy: load_balancing::HealthPolicy::AllowAll as i32,
    });
    WdsService {
        name: s.service_entry.clone(),
        namespace: s.namespace.clone(),
        hostname: s.host.clone(),
        addresses,
        ports: s
            .ports
            .iter()
            .map(|p| Port {
                service_port: u32::from(p.number),
                target_port: u32::from(p.target_port.unwrap_or(p.number)),
                app_protocol: app_protocol(p.protocol) as i32,
            })
            .collect(),
        subject_alt_names: s.subject_alt_names.clone(),
        load_balancing,
        canonical,
        ..WdsService::default()
    }
}

/// istiod's `toAppProtocolFromProtocol`.
fn app_protocol(p: Protocol) -> AppProtocol {
    match p {
        Protocol::Http => AppProtocol::Http11,
        Protocol::Http2 => AppProtocol::Http2,
        Protocol::Grpc => AppProtocol::Grpc,
        Protocol::Tls | Protocol::Https => AppProtocol::Tls,
        Protocol::Tcp => AppProtocol::Tcp,
        _ => AppProtocol::Unknown,
    }
}
