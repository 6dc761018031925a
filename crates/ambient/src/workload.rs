//! Registry workloads → ztunnel `Workload` resources, built as istiod builds them in ambient
//! mode for WorkloadEntries and ServiceEntry endpoints (istio/istio
//! `pilot/pkg/serviceregistry/ambient/workloads.go`: `workloadEntryWorkloadBuilder`,
//! `serviceEntryWorkloadBuilder`, `constructServicesFromWorkloadEntry`, `setTunnelProtocol`),
//! so ztunnel sees the same uids, identities and service memberships it would from istiod.
//!
//! What trustmesh's registry does not keep, and so cannot be sent: metadata labels and
//! annotations of WorkloadEntries and ServiceEntries (istiod merges a WorkloadEntry's metadata
//! labels into its spec labels, and reads a ServiceEntry's metadata labels for its endpoints'
//! canonical name and tunnel), waypoints, network gateways, and PeerAuthentication-derived
//! policies. Workloads reached through a network gateway (no address) get neither address nor
//! hostname, as with istiod.

use std::collections::{BTreeMap, HashMap};

use trustmesh_registry::{EndpointAddress, Origin, Registry, Service, Workload};

use crate::cluster::Cluster;
use crate::istio::workload::{
    address, Address, Locality, Port, PortList, TunnelProtocol, Workload as WdsWorkload,
    WorkloadStatus, WorkloadType,
};

/// The label that lists the tunnels a workload terminates itself (`http` is HBONE).
const TUNNEL_LABEL: &str = "networking.istio.io/tunnel";
/// The label that names a WorkloadEntry's workload (before its own name).
const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";
const CANONICAL_NAME_LABELS: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
const CANONICAL_REVISION_LABELS: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

/// Every workload of the registry as an `Address` carrying a `Workload`: WorkloadEntries
/// (istiod `workloadEntryWorkloadBuilder`), inline ServiceEntry endpoints and the hosts of DNS
/// ServiceEntries without endpoints (istiod `serviceEntryWorkloadBuilder`). Resource names:
/// [`crate::address_resource_name`] (the uid).
pub fn workloads(registry: &Registry, cluster: &Cluster<'_>) -> Vec<Address> {
    // The services (as istiod keeps them) each workload is an endpoint of, by workload position.
    let position: HashMap<*const Workload, usize> = registry
        .workloads()
        .iter()
        .enumerate()
        .map(|(i, w)| (w as *const Workload, i))
        .collect();
    let mut member_of: Vec<Vec<&Service>> = vec![Vec::new(); registry.workloads().len()];
    for (service, _) in crate::service::kept(registry) {
        for port in &service.ports {
            for ep in registry.endpoints(service, port) {
                let list = &mut member_of[position[&(ep.workload as *const Workload)]];
                if !list.iter().any(|s| s.index() == service.index()) {
                    list.push(service);
                }
            }
        }
    }
    let trust_domain = match registry.trust_domain() {
        Some(td) if td.as_str() != "cluster.local" => td.as_str().to_string(),
        _ => String::new(),
    };
    registry
        .workloads()
        .iter()
        .zip(member_of)
        .filter_map(|(w, services)| {
            let inline = !matches!(w.origin, Origin::WorkloadEntry(_));
            // An entry whose hosts were all dropped as duplicates sends no endpoints.
            if inline && services.is_empty() {
                return None;
            }
            Some(Address {
                r#type: Some(address::Type::Workload(workload(
                    w,
                    &services,
                    &trust_domain,
                    cluster,
                ))),
            })
        })
        .collect()
}

fn workload(
    w: &Workload,
    services: &[&Service],
    trust_domain: &str,
    cluster: &Cluster<'_>,
) -> WdsWorkload {
    let written_address = match &w.address {
        EndpointAddress::Ip(ip) => ip.to_string(),
        EndpointAddress::Hostname(h) => h.clone(),
        EndpointAddress::Unix(p) => format!("unix://{p}"),
        EndpointAddress::Network => String::new(),
    };
    let empty = BTreeMap::new();
    // The name, the labels that decide canonical name and tunnel, and the workload name.
    let (uid, name, labels, workload_name) = match &w.origin {
        Origin::WorkloadEntry(name) => (
            format!(
                "{}/networking.istio.io/WorkloadEntry/{}/{}",
                cluster.id, w.namespace, name
            ),
            name.clone(),
            &w.labels,
            w.labels
                .get(WORKLOAD_NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| name.clone()),
        ),
        Origin::Inline { service_entry, .. } | Origin::DnsHost { service_entry } => (
            format!(
                "{}/networking.istio.io/ServiceEntry/{}/{}/{}",
                cluster.id, w.namespace, service_entry, written_address
            ),
            service_entry.clone(),
            // istiod reads the ServiceEntry's metadata labels here, which are not kept.
            &empty,
            service_entry.clone(),
        ),
    };
    let (addresses, hostname) = match &w.address {
        EndpointAddress::Ip(ip) => (vec![crate::ip::octets(*ip)], String::new()),
        _ => (Vec::new(), written_address),
    };
    let hbone = labels
        .get(TUNNEL_LABEL)
        .is_some_and(|v| v.split(',').any(|t| t == "http"));
    let service_account = if w.service_account_named {
        w.service_account.clone()
    } else {
        String::new()
    };
    let authorization_policies = match &w.origin {
        Origin::WorkloadEntry(_) => crate::authz::workload_policies(
            &w.namespace,
            labels,
            cluster.policies,
            cluster.root_namespace,
            cluster.authz,
        ),
        _ => crate::authz::workload_policies(
            &w.namespace,
            &empty,
            cluster.policies,
            cluster.root_namespace,
            cluster.authz,
        ),
    };
    WdsWorkload {
        uid,
        name,
        namespace: w.namespace.clone(),
        addresses,
        hostname,
        network: if w.network.is_empty() {
            cluster.network.to_string()
        } else {
            w.network.clone()
        },
        node: w.node.clone(),
        tunnel_protocol: if hbone {
            TunnelProtocol::Hbone
        } else {
            TunnelProtocol::None
        } as i32,
        native_tunnel: hbone,
        trust_domain: trust_domain.to_string(),
        service_account,
        canonical_name: first_label(labels, &CANONICAL_NAME_LABELS)
            .unwrap_or(&workload_name)
            .to_string(),
        canonical_revision: first_label(labels, &CANONICAL_REVISION_LABELS)
            .unwrap_or("latest")
            .to_string(),
        workload_type: WorkloadType::Pod as i32,
        workload_name,
        services: services
            .iter()
            .map(|s| (crate::service::key(&s.namespace, &s.host), ports(w, s)))
            .collect(),
        authorization_policies,
        status: WorkloadStatus::Healthy as i32,
        cluster_id: cluster.id.to_string(),
        locality: locality(&w.locality),
        capacity: (w.weight > 0).then_some(w.weight),
        ..WdsWorkload::default()
    }
}

/// istiod's `constructServicesFromWorkloadEntry` for a ServiceEntry: the workload's port for the
/// service port's name, else the service's target port, else the service port.
fn ports(w: &Workload, s: &Service) -> PortList {
    PortList {
        ports: s
            .ports
            .iter()
            .map(|p| Port {
                service_port: u32::from(p.number),
                target_port: u32::from(
                    w.ports
                        .get(&p.name)
                        .copied()
                        .unwrap_or(p.target_port.unwrap_or(p.number)),
                ),
                app_protocol: 0,
            })
            .collect(),
    }
}

fn first_label<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| labels.get(*k).map(String::as_str))
}

/// istiod's `getWorkloadEntryLocality`: `region/zone/subzone`, absent when all are empty.
fn locality(s: &str) -> Option<Locality> {
    let mut it = s.split('/');
    let region = it.next().unwrap_or("").to_string();
    let zone = it.next().unwrap_or("").to_string();
    let subzone = it.next().unwrap_or("").to_string();
    (!(region.is_empty() && zone.is_empty() && subzone.is_empty())).then_some(Locality {
        region,
        zone,
        subzone,
    })
}
