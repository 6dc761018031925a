//! The configuration as the control plane serves it (pure): every document turned into a
//! versioned xDS resource once, indexed so that a sidecar's view — what its workload needs — is
//! a filter, computed once per distinct workload shape and shared by every sidecar of that
//! shape.
//!
//! What a workload needs, as istiod decides it:
//! - security policies (AuthorizationPolicy, PeerAuthentication, RequestAuthentication) of the
//!   root namespace and of its own namespace whose selector matches its labels (a policy whose
//!   selector cannot be read goes to every workload of its namespace, which then enforces it
//!   fail-closed: a broken policy must never simply vanish);
//! - registry entries it may reach: ServiceEntry and DestinationRule by their `exportTo`
//!   (default everywhere, `.` the own namespace, `~` nowhere), every WorkloadEntry (the
//!   endpoints of what it calls);
//! - anything else of its own or the root namespace (the sidecar names what it ignores);
//! - the mesh config and every trust bundle.
//!
//! Versions are a digest of the content, so two replicas on the same source give the same
//! versions, and a sidecar failing over from one to the other is resent nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use trustmesh_policy::SourceText;

use trustmesh_xds::config::{IstioResource, MeshConfig as MeshResource, TrustBundle};
use trustmesh_xds::server::{ResourceMap, Versioned};
use trustmesh_xds::types;

use crate::source::{Document, Inputs};
pub use crate::version::digest;
use crate::version::versioned;

/// The name of the one mesh config resource.
pub const MESH_RESOURCE: &str = "mesh";

/// Security kinds, selected by workload.
const SECURITY_KINDS: [&str; 3] = [
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
];

/// What the control plane itself adds to a source's inputs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The CA's trust domain and its roots (PEM), always served.
    pub trust_domain: String,
    pub local_roots: String,
    /// Where ServiceEntries without addresses get their VIP in ztunnel's resources; every
    /// sidecar's `capture.vipRange` must be the same range (default Istio's 240.240.0.0/16).
    pub registry: trustmesh_registry::Options,
}

/// What decides a view: workloads with the same namespace and labels see the same resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Entry {
    kind: String,
    namespace: String,
    name: String,
    /// `Some(labels)` for a readable `selector.matchLabels` (empty: none).
    selector: Option<BTreeMap<String, String>>,
    export_to: Vec<String>,
    resource: Arc<Versioned>,
}

/// One WorkloadEntry's identity and labels, to check what a sidecar claims.
#[derive(Debug, Clone)]
pub struct KnownWorkload {
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
}

pub struct World {
    pub generation: u64,
    /// A digest of everything served: `system_version_info`.
    pub version: String,
    pub root_namespace: String,
    pub trust_domain: String,
    entries: Vec<Entry>,
    mesh: Arc<ResourceMap>,
    bundles: Arc<ResourceMap>,
    pub workloads: Vec<KnownWorkload>,
    pub problems: Vec<String>,
    /// Every trust domain's roots served (the CA's own and the federated ones), PEM.
    pub roots: BTreeMap<String, String>,
    views: Mutex<HashMap<ViewKey, Arc<ResourceMap>>>,
    /// The documents as the sidecars parse them, and the mesh config: what ztunnel's
    /// resources are built from, on the first ztunnel's request.
    sources: Vec<SourceText>,
    mesh_config: trustmesh_policy::MeshConfig,
    registry_options: trustmesh_registry::Options,
    ambient: OnceLock<crate::ambient::Ambient>,
}

fn str_at<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

fn selector(v: &serde_yaml::Value) -> Option<BTreeMap<String, String>> {
    match v.get("spec").and_then(|s| s.get("selector")) {
        None | Some(serde_yaml::Value::Null) => Some(BTreeMap::new()),
        Some(sel) => match sel.get("matchLabels") {
            None | Some(serde_yaml::Value::Null) => Some(BTreeMap::new()),
            Some(m) => serde_yaml::from_value(m.clone()).ok(),
        },
    }
}

fn export_to(v: &serde_yaml::Value) -> Vec<String> {
    v.get("spec")
        .and_then(|s| s.get("exportTo"))
        .and_then(|e| serde_yaml::from_value::<Vec<String>>(e.clone()).ok())
        .unwrap_or_default()
}

impl World {
    /// Builds the world from a source's inputs. `trust_domain` and `local_roots` are the CA's.
    pub fn build(inputs: &Inputs, settings: &Settings, generation: u64) -> World {
        let (trust_domain, local_roots) = (
            settings.trust_domain.as_str(),
            settings.local_roots.as_str(),
        );
        let mut problems = inputs.problems.clone();
        let mesh_cfg = match &inputs.mesh {
            Some((v, file)) => {
                trustmesh_policy::MeshConfig::from_value(v.clone(), std::path::Path::new(file), "")
                    .unwrap_or_default()
            }
            None => trustmesh_policy::MeshConfig {
                trust_domain: trust_domain.to_string(),
                ..Default::default()
            },
        };
        if mesh_cfg.trust_domain != trust_domain {
            problems.push(format!(
                "the mesh config's trustDomain {:?} is not the CA's trust domain {trust_domain:?}",
                mesh_cfg.trust_domain
            ));
        }
        let mesh_json = match &inputs.mesh {
            Some((v, _)) => serde_json::to_string(v).unwrap_or_default(),
            None => serde_json::json!({ "trustDomain": trust_domain }).to_string(),
        };
        let mesh = versioned(
            types::MESH_CONFIG,
            &MeshResource {
                mesh_config_json: mesh_json,
            },
        );
        let mut bundles = ResourceMap::new();
        let mut pems: BTreeMap<String, String> = BTreeMap::new();
        pems.insert(trust_domain.to_string(), local_roots.to_string());
        for (td, pem) in &inputs.bundles {
            let e = pems.entry(td.clone()).or_default();
            if !e.is_empty() && !e.ends_with('\n') {
                e.push('\n');
            }
            e.push_str(pem);
        }
        for (td, pem) in &pems {
            let r = versioned(
                types::TRUST_BUNDLE,
                &TrustBundle {
                    trust_domain: td.clone(),
                    roots_pem: pem.clone(),
                },
            );
            bundles.insert(td.clone(), r);
        }

        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut workloads = Vec::new();
        let mut sources = Vec::new();
        for Document { value, origin } in &inputs.documents {
            let kind = str_at(value, &["kind"]).unwrap_or("").to_string();
            let namespace = str_at(value, &["metadata", "namespace"])
                .unwrap_or("default")
                .to_string();
            let name = str_at(value, &["metadata", "name"])
                .unwrap_or("")
                .to_string();
            let key = format!("{kind}/{namespace}/{name}");
            if let Some(first) = seen.get(&key) {
                problems.push(format!(
                    "{origin}: {key} is defined again (first at {first}); the first is served"
                ));
                continue;
            }
            let json = match serde_json::to_string(value) {
                Ok(j) => j,
                Err(e) => {
                    problems.push(format!("{origin}: cannot be served as JSON: {e}"));
                    continue;
                }
            };
            seen.insert(key, origin.clone());
            sources.push(SourceText {
                file: origin.clone(),
                text: json.clone(),
            });
            if kind == "WorkloadEntry" {
                let labels = value
                    .get("spec")
                    .and_then(|s| s.get("labels"))
                    .and_then(|l| serde_yaml::from_value(l.clone()).ok())
                    .unwrap_or_default();
                workloads.push(KnownWorkload {
                    namespace: namespace.clone(),
                    service_account: str_at(value, &["spec", "serviceAccount"])
                        .unwrap_or("default")
                        .to_string(),
                    labels,
                });
            }
            entries.push(Entry {
                selector: selector(value),
                export_to: export_to(value),
                resource: versioned(
                    types::ISTIO_RESOURCE,
                    &IstioResource {
                        document_json: json,
                        origin: origin.clone(),
                    },
                ),
                kind,
                namespace,
                name,
            });
        }
        // Served as they are (sidecars enforce an invalid resource fail-closed, as from files),
        // and reported here, where an operator looks: the log, /debug/syncz and the metrics.
        let policy = trustmesh_policy::validate(&sources, &mesh_cfg);
        let registry = trustmesh_registry::validate(&sources, &mesh_cfg, &settings.registry);
        for p in policy.problems.iter().chain(&registry.problems) {
            if !p.warning {
                problems.push(p.to_string());
            }
        }
        let mut all = String::new();
        for e in &entries {
            all.push_str(&e.resource.version);
        }
        all.push_str(&mesh.version);
        for b in bundles.values() {
            all.push_str(&b.version);
        }
        World {
            generation,
            version: digest(all.as_bytes()),
            root_namespace: mesh_cfg.root_namespace.clone(),
            mesh_config: mesh_cfg.clone(),
            registry_options: settings.registry.clone(),
            sources,
            ambient: OnceLock::new(),
            trust_domain: trust_domain.to_string(),
            entries,
            mesh: Arc::new([(MESH_RESOURCE.to_string(), mesh)].into_iter().collect()),
            bundles: Arc::new(bundles),
            workloads,
            problems,
            roots: pems,
            views: Mutex::new(HashMap::new()),
        }
    }

    /// What a workload of `key`'s shape should hold of `type_url`; `None` for a type this
    /// world does not serve.
    pub fn view(&self, key: &ViewKey, type_url: &str) -> Option<Arc<ResourceMap>> {
        match type_url {
            types::MESH_CONFIG => Some(self.mesh.clone()),
            types::TRUST_BUNDLE => Some(self.bundles.clone()),
            types::ISTIO_RESOURCE => {
                let mut cache = self.views.lock().expect("view cache poisoned");
                if let Some(v) = cache.get(key) {
                    return Some(v.clone());
                }
                let v = Arc::new(self.select(key));
                cache.insert(key.clone(), v.clone());
                Some(v)
            }
            _ => None,
        }
    }

    fn select(&self, key: &ViewKey) -> ResourceMap {
        self.entries
            .iter()
            .filter(|e| self.visible(e, key))
            .map(|e| {
                (
                    format!("{}/{}/{}", e.kind, e.namespace, e.name),
                    e.resource.clone(),
                )
            })
            .collect()
    }

    fn visible(&self, e: &Entry, key: &ViewKey) -> bool {
        let own = e.namespace == key.namespace;
        let root = e.namespace == self.root_namespace;
        match e.kind.as_str() {
            k if SECURITY_KINDS.contains(&k) => {
                (own || root)
                    && match &e.selector {
                        Some(sel) => sel.iter().all(|(k, v)| key.labels.get(k) == Some(v)),
                        // Unreadable selector: sent, and enforced fail-closed by the sidecar.
                        None => true,
                    }
            }
            "ServiceEntry" | "DestinationRule" => {
                if e.export_to.is_empty() {
                    return true;
                }
                e.export_to.iter().any(|x| match x.as_str() {
                    "*" => true,
                    "." => own,
                    "~" => false,
                    ns => ns == key.namespace,
                })
            }
            "WorkloadEntry" => true,
            _ => own || root,
        }
    }

    /// ztunnel's types (`istio.workload.Address`, `istio.security.Authorization`), built on
    /// first use; `None` for another type.
    pub fn ambient_view(&self, type_url: &str) -> Option<Arc<ResourceMap>> {
        let a = || {
            self.ambient.get_or_init(|| {
                let a = crate::ambient::build(
                    &self.sources,
                    &self.mesh_config,
                    &self.registry_options,
                    crate::ambient::DEFAULT_CLUSTER_ID,
                );
                for p in &a.problems {
                    tracing::warn!("ztunnel resources: {p}");
                }
                a
            })
        };
        match type_url {
            types::ADDRESS => Some(a().addresses.clone()),
            types::AUTHORIZATION => Some(a().authorizations.clone()),
            _ => None,
        }
    }

    /// How many documents the world serves in all.
    pub fn resource_count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests;
