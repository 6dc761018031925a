//! Kubernetes objects → the Istio documents the control plane's world is built from (pure).
//!
//! Istio's own resources (AuthorizationPolicy, ServiceEntry, ...) pass through with only what
//! decides their meaning kept: a status update or a new `resourceVersion` must not change what
//! is served, or every sidecar would be pushed the same configuration again.
//!
//! The registry is built the way istiod's Kubernetes controller sees the cluster:
//! - a Service becomes a ServiceEntry for `<name>.<namespace>.svc.<domain>` (MESH_INTERNAL,
//!   STATIC, its cluster IPs), selecting its pods by the Service's selector; a Service without a
//!   selector takes its endpoints from its EndpointSlices; an ExternalName Service resolves its
//!   name by DNS;
//! - a running, ready pod with an IP becomes a WorkloadEntry: its labels (so the sidecar's
//!   `security.istio.io/tlsMode` label decides mutual TLS), service account and network, and the
//!   container ports that Services name in a `targetPort`.
//!
//! Port protocols follow Istio's protocol selection: `appProtocol` first, then the port name's
//! prefix (`http-web` is HTTP), else UDP for UDP ports and detection for the rest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Istio's label naming a workload's network.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Istio's annotation limiting which namespaces see a Service (`.`, `*`, or names, comma
/// separated), as a ServiceEntry's `exportTo`.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// The annotation `kubectl apply` keeps: a copy of the whole object, not part of its meaning.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One document for the world, and where it came from (`kubernetes <Kind> <ns>/<name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub value: serde_yaml::Value,
    pub origin: String,
}

/// Where a Kubernetes object is named in messages.
pub fn origin(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("kubernetes {kind} {ns}/{name}"),
        None => format!("kubernetes {kind} {name}"),
    }
}

/// An Istio custom resource as the API server returns it (JSON) → the document the file source
/// would have read: `apiVersion`, `kind`, `metadata` (name, namespace, labels, annotations) and
/// `spec`. `None` when it has no name or kind.
pub fn istio_resource(obj: &Value) -> Option<Translated> {
    let kind = obj.get("kind")?.as_str()?;
    let meta = obj.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let namespace = meta.get("namespace").and_then(Value::as_str);
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), json!(ns));
    }
    if let Some(l) = meta.get("labels").filter(|l| l.is_object()) {
        m.insert("labels".into(), l.clone());
    }
    if let Some(Value::Object(a)) = meta.get("annotations") {
        let kept: Map<String, Value> = a
            .iter()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            m.insert("annotations".into(), Value::Object(kept));
        }
    }
    let mut doc = Map::new();
    doc.insert(
        "apiVersion".into(),
        obj.get("apiVersion").cloned().unwrap_or(Value::Null),
    );
    doc.insert("kind".into(), json!(kind));
    doc.insert("metadata".into(), Value::Object(m));
    doc.insert(
        "spec".into(),
        obj.get("spec").cloned().unwrap_or_else(|| json!({})),
    );
    Some(Translated {
        value: to_yaml(Value::Object(doc)),
        origin: origin(kind, namespace, name),
    })
}

/// Istio's protocol for a Service port: `appProtocol`, else the name's prefix before `-`,
/// else UDP for a UDP port, else "" (the proxy detects it). A value Istio does not know is ""
/// too, as Istio treats an unrecognised name.
pub fn port_protocol(p: &ServicePort) -> &'static str {
    if let Some(a) = p.app_protocol.as_deref() {
        if let Some(known) = known_protocol(a) {
            return known;
        }
    }
    if let Some(name) = p.name.as_deref() {
        let prefix = name.split('-').next().unwrap_or(name);
        if let Some(known) = known_protocol(prefix) {
            return known;
        }
    }
    match p.protocol.as_deref() {
        Some("UDP") => "UDP",
        _ => "",
    }
}

fn known_protocol(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "http" | "kubernetes.io/ws" => "HTTP",
        "http2" | "kubernetes.io/h2c" => "HTTP2",
        "https" | "kubernetes.io/wss" => "HTTPS",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-Web",
        "tls" => "TLS",
        "tcp" => "TCP",
        "mongo" => "MONGO",
        "mysql" => "MYSQL",
        "redis" => "REDIS",
        _ => return None,
    })
}

/// The ServiceEntry standing for `svc`. `slices` are the EndpointSlices of its namespace (only
/// those labelled with its name are read, and only when it has no selector). `None` for a
/// Service that carries no traffic the mesh routes (no ports).
pub fn service_entry(svc: &Service, slices: &[&EndpointSlice], domain: &str) -> Option<Translated> {
    let name = svc.metadata.name.as_deref()?;
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let spec = svc.spec.as_ref()?;
    let svc_ports = spec.ports.as_deref().unwrap_or_default();
    if svc_ports.is_empty() {
        return None;
    }
    let mut ports = Vec::new();
    for (i, p) in svc_ports.iter().enumerate() {
        // Istio needs a name per port; Kubernetes allows one unnamed port.
        let pname = p.name.clone().unwrap_or_else(|| format!("port-{i}"));
        let mut port = json!({"number": p.port, "name": pname, "protocol": port_protocol(p)});
        if let Some(IntOrString::Int(t)) = &p.target_port {
            port["targetPort"] = json!(t);
        }
        ports.push(port);
    }
    let mut entry = json!({
        "hosts": [format!("{name}.{ns}.svc.{domain}")],
        "ports": ports,
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
    });
    let export_to: Vec<&str> = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !export_to.is_empty() {
        entry["exportTo"] = json!(export_to);
    }
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?;
        entry["resolution"] = json!("DNS");
        entry["endpoints"] = json!([{ "address": target }]);
    } else {
        let ips: Vec<&str> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .map(String::as_str)
            .filter(|ip| !ip.is_empty() && *ip != "None")
            .collect();
        let mut addresses: Vec<&str> = Vec::new();
        for ip in ips {
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        if !addresses.is_empty() {
            entry["addresses"] = json!(addresses);
        }
        match spec.selector.as_ref().filter(|s| !s.is_empty()) {
            Some(selector) => entry["workloadSelector"] = json!({ "labels": selector }),
            None => entry["endpoints"] = Value::Array(slice_endpoints(name, slices)),
        }
    }
    Some(Translated {
        value: document("ServiceEntry", name, ns, entry),
        origin: origin("Service", Some(ns), name),
    })
}

/// The ready endpoints of a selector-less Service's EndpointSlices, as inline ServiceEntry
/// endpoints with the slice's ports by name.
fn slice_endpoints(service: &str, slices: &[&EndpointSlice]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in slices {
        let labels = s.metadata.labels.as_ref();
        if labels
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(String::as_str)
            != Some(service)
        {
            continue;
        }
        if !matches!(s.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let mut ports = Map::new();
        for p in s.ports.iter().flatten() {
            if let (Some(n), Some(num)) = (&p.name, p.port) {
                ports.insert(n.clone(), json!(num));
            }
        }
        for e in &s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &e.addresses {
                let mut ep = json!({ "address": a });
                if !ports.is_empty() {
                    ep["ports"] = Value::Object(ports.clone());
                }
                out.push(ep);
            }
        }
    }
    out
}

/// Whether a pod is an endpoint: an IP, running, ready, and not being deleted (Kubernetes takes
/// such pods out of a Service's endpoints the same way).
pub fn pod_is_endpoint(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let has_ip = status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty());
    let running = status.phase.as_deref() == Some("Running");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    has_ip && running && ready && pod.metadata.deletion_timestamp.is_none()
}

/// The WorkloadEntry standing for `pod`, or `None` when it is not an endpoint. `services` are
/// the Services of its namespace: a port they name by `targetPort: <name>` is mapped, per
/// Service port name, to the container port of that name. `namespace_network` is its
/// namespace's `topology.istio.io/network` label: the network when the pod has none, as in
/// Istio.
pub fn workload_entry(
    pod: &Pod,
    services: &[&Service],
    namespace_network: Option<&str>,
) -> Option<Translated> {
    if !pod_is_endpoint(pod) {
        return None;
    }
    let name = pod.metadata.name.as_deref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let sa = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let named: BTreeMap<&str, i32> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.as_deref()?, p.container_port)))
        .collect();
    let mut ports = Map::new();
    for svc in services {
        let Some(s) = &svc.spec else { continue };
        let selects = s.selector.as_ref().is_some_and(|sel| {
            !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        if !selects {
            continue;
        }
        for (i, p) in s.ports.iter().flatten().enumerate() {
            if let Some(IntOrString::String(target)) = &p.target_port {
                if let Some(num) = named.get(target.as_str()) {
                    let pname = p.name.clone().unwrap_or_else(|| format!("port-{i}"));
                    ports.insert(pname, json!(num));
                }
            }
        }
    }
    let mut entry = json!({
        "address": ip,
        "labels": labels,
        "serviceAccount": sa,
    });
    if let Some(network) = labels
        .get(NETWORK_LABEL)
        .map(String::as_str)
        .or(namespace_network)
    {
        entry["network"] = json!(network);
    }
    if !ports.is_empty() {
        entry["ports"] = Value::Object(ports);
    }
    let mut value = document("WorkloadEntry", name, ns, entry);
    // The pod's labels stay exactly its own (its sidecar claims them); the registry reads its TLS
    // mode as Istio reads a pod's, from the label alone.
    let mut annotations = json!({ trustmesh_registry::POD_ANNOTATION: "true" });
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        annotations[trustmesh_registry::NODE_ANNOTATION] = json!(node);
    }
    value["metadata"]["annotations"] = to_yaml(annotations);
    Some(Translated {
        value,
        origin: origin("Pod", Some(ns), name),
    })
}

fn document(kind: &str, name: &str, ns: &str, spec: Value) -> serde_yaml::Value {
    to_yaml(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    }))
}

fn to_yaml(v: Value) -> serde_yaml::Value {
    // JSON is a subset of YAML's data model; this cannot fail for a `serde_json::Value`.
    serde_yaml::to_value(v).unwrap_or(serde_yaml::Value::Null)
}

#[cfg(test)]
mod tests;
