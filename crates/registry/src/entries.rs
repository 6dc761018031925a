//! A WorkloadEntry (or a ServiceEntry's inline endpoint, which has the same shape) becomes a
//! [`Workload`]: its address classified, its ports checked, and its identity and TLS mode
//! derived once, at load, so the sidecar never recomputes them per connection.
//!
//! Istio's rules (`pilot/pkg/serviceregistry/serviceentry/conversion.go`, istio/api
//! `workload_entry.proto`): an address is an IP, a DNS name, or `unix://<absolute path or
//! @abstract>`; an empty address needs `network` (the endpoint is then reached through that
//! network's gateway); `ports` maps service port names to 1-65535 and is not allowed with a
//! Unix address; the identity is `spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>`
//! in the resource's namespace. Where Istio leaves the service account empty (no identity),
//! trustmesh uses `default`, the account Kubernetes gives a pod that names none, so every
//! workload has an identity for policy; the TLS mode still follows Istio (the account counts
//! only when written).

use std::net::IpAddr;

use trustmesh_identity::{SpiffeId, TrustDomain};
use trustmesh_policy::{Location, Problem};

use crate::crd::WorkloadEntrySpec;
use crate::model::{
    EndpointAddress, Origin, TlsMode, Workload, DEFAULT_SERVICE_ACCOUNT, TLS_MODE_LABEL,
};

/// Where a workload spec sits and what it belongs to.
pub struct Context<'a> {
    pub origin: Origin,
    pub namespace: &'a str,
    /// The location of the spec itself (`spec`, or `spec.endpoints[2]`).
    pub at: Location,
    pub trust_domain: Option<&'a TrustDomain>,
    /// A Kubernetes pod's entry: the label alone decides the TLS mode.
    pub pod: bool,
    /// Its node, for a pod's entry.
    pub node: String,
}

/// The workload, or `None` when it has an error (each error is in `problems`).
pub fn workload(
    spec: &WorkloadEntrySpec,
    cx: Context<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Workload> {
    let before = problems.len();
    let address = address(spec, &cx.at, problems);
    let mut ports = std::collections::BTreeMap::new();
    for (name, port) in &spec.ports {
        match u16::try_from(*port) {
            Ok(p) if p > 0 => {
                ports.insert(name.clone(), p);
            }
            _ => problems.push(
                Problem::new(
                    cx.at.at(format!("ports.{name}")),
                    format!("port {port} is not between 1 and 65535"),
                )
                .hint("map the service port's name to this workload's port number"),
            ),
        }
    }
    if matches!(address, Some(EndpointAddress::Unix(_))) && !spec.ports.is_empty() {
        problems.push(
            Problem::new(cx.at.at("ports"), "a unix:// address takes no ports")
                .hint("remove `ports`; a socket has no port"),
        );
    }
    let named = !spec.service_account.is_empty();
    let service_account = if named {
        spec.service_account.clone()
    } else {
        DEFAULT_SERVICE_ACCOUNT.to_string()
    };
    let identity = match cx.trust_domain {
        Some(td) => match SpiffeId::istio(td, cx.namespace, &service_account) {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(
                    Problem::new(
                        cx.at.at("serviceAccount"),
                        format!("no SPIFFE identity can be made from it: {e}"),
                    )
                    .hint("use a Kubernetes service account name"),
                );
                None
            }
        },
        None => None,
    };
    // Istio: the label when present, else `istio` when a service account is written (not for
    // a pod: there the label alone counts).
    let tls_mode = match spec.labels.get(TLS_MODE_LABEL).map(String::as_str) {
        Some("istio") => TlsMode::Istio,
        Some("disabled") => TlsMode::Disabled,
        Some(other) => TlsMode::Other(other.to_string()),
        None if named && !cx.pod => TlsMode::Istio,
        None => TlsMode::Disabled,
    };
    if problems.len() > before {
        return None;
    }
    Some(Workload {
        origin: cx.origin,
        namespace: cx.namespace.to_string(),
        address: address?,
        ports,
        labels: spec.labels.clone(),
        network: spec.network.clone(),
        locality: spec.locality.clone(),
        node: cx.node,
        weight: spec.weight,
        service_account,
        service_account_named: named,
        identity,
        tls_mode,
        source: cx.at,
    })
}

fn address(
    spec: &WorkloadEntrySpec,
    at: &Location,
    problems: &mut Vec<Problem>,
) -> Option<EndpointAddress> {
    let a = spec.address.trim();
    let at = at.at("address");
    if a.is_empty() {
        if spec.network.is_empty() {
            problems.push(
                Problem::new(at, "address is required unless network is set")
                    .hint("give the workload's IP address or DNS name"),
            );
            return None;
        }
        return Some(EndpointAddress::Network);
    }
    if let Some(path) = a.strip_prefix("unix://") {
        if !(path.starts_with('/') || path.starts_with('@')) || path.ends_with('/') {
            problems.push(
                Problem::new(at, format!("\"{a}\" is not a Unix socket address"))
                    .hint("use unix:///absolute/path/to/socket or unix://@abstract"),
            );
            return None;
        }
        return Some(EndpointAddress::Unix(path.to_string()));
    }
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Some(EndpointAddress::Ip(ip));
    }
    if crate::host::is_wildcard(a) || crate::host::invalid(a).is_some() || a.contains('/') {
        problems.push(
            Problem::new(
                at,
                format!("\"{a}\" is not an IP address, a DNS name or a unix:// path"),
            )
            .hint("a CIDR or wildcard cannot be an endpoint; give one address"),
        );
        return None;
    }
    Some(EndpointAddress::Hostname(crate::host::normalize(a)))
}
