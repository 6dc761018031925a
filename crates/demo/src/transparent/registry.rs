//! The service registry of the transparent quickstart, as an Istio user registers VMs: a
//! WorkloadEntry per workload (address, labels, service account) and a ServiceEntry per
//! service that selects its workloads, so an app calls `http://reviews.bookinfo:9080/` and the
//! caller's sidecar knows the name, the endpoint and the identity it must present. It lives in
//! the control planes' config directory beside the security policies, as Istio keeps both
//! kinds, and reaches each sidecar over xDS.
//!
//! Istio names a registry identity in the reader's trust domain: analytics' sidecar (team-b)
//! would expect `spiffe://team-b.eks.local/ns/bookinfo/sa/reviews` from reviews, which is a
//! team-a workload. Two DestinationRules in analytics' namespace say which identities team-a's
//! servers present (ISTIO_MUTUAL with `subjectAltNames`), the transparent counterpart of the
//! `peerIdentity` the loopback quickstart writes on analytics' outbound listeners.

use crate::transparent::topology::address;
use crate::workloads::{Workload, ALL, ANALYTICS, PAYROLL, RATINGS, REVIEWS};

/// The port each server's app listens on, and its service's port.
pub fn app_port(w: &Workload) -> u16 {
    if w.name == PAYROLL.name {
        8000
    } else {
        9080
    }
}

/// The services apps call by name: the three servers.
pub const SERVERS: [&Workload; 3] = [&REVIEWS, &RATINGS, &PAYROLL];

/// The name an app uses for `w`'s service (a Kubernetes-style short name the DNS proxy
/// answers), with its port.
pub fn service_authority(w: &Workload) -> String {
    format!("{}.{}:{}", w.name, w.namespace, app_port(w))
}

/// The registry YAML.
pub fn yaml() -> String {
    let mut out = String::from(
        "# The service registry: where each workload is and which services it serves.\n",
    );
    for w in ALL {
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: {{ name: {name}, namespace: {ns} }}\n\
             spec: {{ address: {addr}, labels: {{ app: {name} }}, serviceAccount: {sa} }}\n---\n",
            name = w.name,
            ns = w.namespace,
            addr = address(w.name),
            sa = w.service_account,
        ));
    }
    for w in SERVERS {
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{ name: {name}, namespace: {ns} }}\n\
             spec:\n  hosts: [ {name}.{ns}.svc.cluster.local ]\n  location: MESH_INTERNAL\n\
             \x20 resolution: STATIC\n  ports: [ {{ number: {port}, name: http, protocol: HTTP }} ]\n\
             \x20 workloadSelector: {{ labels: {{ app: {name} }} }}\n---\n",
            name = w.name,
            ns = w.namespace,
            port = app_port(w),
        ));
    }
    out.push_str("# analytics (team-b) calls team-a's servers: the identities they present.\n");
    for w in [&REVIEWS, &RATINGS] {
        out.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{ name: {name}-from-team-b, namespace: {client_ns} }}\n\
             spec:\n  host: {name}.{ns}.svc.cluster.local\n\
             \x20 trafficPolicy: {{ tls: {{ mode: ISTIO_MUTUAL, subjectAltNames: [ \"{id}\" ] }} }}\n---\n",
            name = w.name,
            ns = w.namespace,
            client_ns = ANALYTICS.namespace,
            id = w.spiffe_id(),
        ));
    }
    // No empty document after the last separator.
    out.truncate(out.len() - "---\n".len());
    out
}
