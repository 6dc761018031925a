//! The sidecar as a client of `trustmesh control`: policies, registry entries, the mesh config
//! and trust bundles arrive over incremental xDS and are built into a snapshot exactly as files
//! are (the same parsers, the same all-or-nothing build), then swapped in.
//!
//! A push that cannot be built — a bundle root that is not a CA, a mesh config the sidecar
//! refuses — is NACKed with the reason and nothing of it is applied: the sidecar keeps
//! enforcing what it had. While the control plane is unreachable the sidecar keeps serving with
//! its last snapshot and its certificates (which the node agent renews from files); it
//! reconnects with backoff and declares what it holds, so only what changed is resent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use prost::Message;
use tokio::sync::oneshot;
use trustmesh_identity::{TrustBundleSet, TrustDomain};
use trustmesh_policy::{MeshConfig, SourceText};
use trustmesh_xds::client::{self, Connection, Credentials};
use trustmesh_xds::config::{IstioResource, MeshConfig as MeshResource, TrustBundle};
use trustmesh_xds::core::Node;
use trustmesh_xds::pb::Resource;
use trustmesh_xds::types;

use crate::config::{ControlPlaneConfig, ProxyConfig};
use crate::snapshot::{Inputs, Snapshot};
use crate::state::Shared;

/// The types a trustmesh sidecar subscribes to; a snapshot is built once each has arrived.
pub const TYPES: [&str; 3] = [
    types::MESH_CONFIG,
    types::TRUST_BUNDLE,
    types::ISTIO_RESOURCE,
];

/// What the sidecar holds, per type: name → (version, body).
#[derive(Debug, Clone, Default)]
struct Store {
    types: BTreeMap<String, BTreeMap<String, (String, prost_types::Any)>>,
    seen: BTreeSet<String>,
}

impl Store {
    fn apply(
        &mut self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        if !TYPES.contains(&type_url) {
            return Err(format!("type {type_url} was not asked for"));
        }
        let held = self.types.entry(type_url.to_string()).or_default();
        for r in updated {
            let body = r
                .resource
                .ok_or_else(|| format!("{}: a resource without a body", r.name))?;
            if body.type_url != type_url {
                return Err(format!(
                    "{}: a {} inside a response of {type_url}",
                    r.name, body.type_url
                ));
            }
            held.insert(r.name, (r.version, body));
        }
        for n in removed {
            held.remove(&n);
        }
        self.seen.insert(type_url.to_string());
        Ok(())
    }

    fn complete(&self) -> bool {
        TYPES.iter().all(|t| self.seen.contains(*t))
    }

    fn held(&self, type_url: &str) -> HashMap<String, String> {
        self.types
            .get(type_url)
            .map(|m| m.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn bodies(&self, type_url: &str) -> impl Iterator<Item = (&String, &prost_types::Any)> {
        self.types
            .get(type_url)
            .into_iter()
            .flatten()
            .map(|(n, (_, b))| (n, b))
    }

    /// Decodes what is held into the snapshot's inputs; local `trustBundles` are merged in.
    fn inputs(&self, cfg: &ProxyConfig) -> anyhow::Result<Inputs> {
        let mesh = match self.bodies(types::MESH_CONFIG).next() {
            Some((_, b)) => {
                let m = MeshResource::decode(b.value.as_slice())
                    .map_err(|e| anyhow!("mesh config: undecodable: {e}"))?;
                let v: serde_yaml::Value = serde_json::from_str(&m.mesh_config_json)
                    .map_err(|e| anyhow!("mesh config: not JSON: {e}"))?;
                MeshConfig::from_value(v, std::path::Path::new("control plane mesh config"), "")?
            }
            None => anyhow::bail!("the control plane sent no mesh config"),
        };
        let mut bundles = crate::snapshot::load_bundles(cfg)?;
        for (name, b) in self.bodies(types::TRUST_BUNDLE) {
            let tb = TrustBundle::decode(b.value.as_slice())
                .map_err(|e| anyhow!("trust bundle {name}: undecodable: {e}"))?;
            let td = TrustDomain::parse(&tb.trust_domain)
                .map_err(|e| anyhow!("trust bundle {name}: trust domain: {e}"))?;
            let roots = trustmesh_identity::pem::certs_from_pem(tb.roots_pem.as_bytes())
                .map_err(|e| anyhow!("trust bundle {td}: {e}"))?;
            if roots.is_empty() {
                anyhow::bail!("trust bundle {td}: no CERTIFICATE blocks");
            }
            let mut set = TrustBundleSet::new();
            for r in roots {
                set.add_root(td.clone(), r)
                    .map_err(|e| anyhow!("trust bundle {td}: {e}"))?;
            }
            bundles.merge(set);
        }
        let mut sources = Vec::new();
        for (name, b) in self.bodies(types::ISTIO_RESOURCE) {
            let r = IstioResource::decode(b.value.as_slice())
                .map_err(|e| anyhow!("{name}: undecodable: {e}"))?;
            let file = if r.origin.is_empty() {
                format!("control plane {name}")
            } else {
                format!("control plane {}", r.origin)
            };
            sources.push(SourceText {
                file,
                text: r.document_json,
            });
        }
        Ok(Inputs {
            mesh,
            bundles,
            sources,
            from_control_plane: true,
        })
    }
}

/// Where a built snapshot goes: to startup (the first), parked while the listeners are being
/// bound, then to the running sidecar.
enum Target {
    Starting(Option<oneshot::Sender<Snapshot>>),
    Parked(Option<Box<Snapshot>>),
    Running(Arc<Shared>),
}

struct Handler {
    store: Store,
    startup: ProxyConfig,
    target: Arc<Mutex<Target>>,
    last_error: Arc<Mutex<String>>,
    runtime: tokio::runtime::Handle,
}

impl client::Handler for Handler {
    fn apply(
        &mut self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let applied = self.apply_whole(type_url, updated, removed);
        if let Target::Running(shared) = &*self.target.lock().expect("target poisoned") {
            let counter = match applied {
                Ok(()) => &shared.metrics.xds_applied,
                Err(_) => &shared.metrics.xds_rejected,
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        applied
    }

    fn held(&self, type_url: &str) -> HashMap<String, String> {
        self.store.held(type_url)
    }

    fn connection(&mut self, state: Connection<'_>) {
        let up = matches!(state, Connection::Connected { .. });
        if let Connection::Lost { server, why } = state {
            *self.last_error.lock().expect("poisoned") = format!("{server}: {why}");
        }
        if let Target::Running(shared) = &*self.target.lock().expect("target poisoned") {
            shared
                .metrics
                .xds_connected
                .store(i64::from(up), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Handler {
    /// Applies one response whole, or nothing of it.
    fn apply_whole(
        &mut self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String> {
        let mut next = self.store.clone();
        next.apply(type_url, updated, removed)?;
        if !next.complete() {
            self.store = next;
            return Ok(());
        }
        let mut target = self.target.lock().expect("target poisoned");
        let (cfg, generation) = match &*target {
            Target::Running(shared) => {
                let cur = shared.current();
                (cur.config.clone(), cur.generation + 1)
            }
            _ => (self.startup.clone(), 1),
        };
        let inputs = next.inputs(&cfg).map_err(|e| format!("{e:#}"))?;
        let snap = crate::snapshot::build_from(cfg, Arc::new(inputs), generation)
            .map_err(|e| format!("{e:#}"))?;
        self.runtime.block_on(crate::snapshot::warm_up(&snap));
        match &mut *target {
            Target::Running(shared) => {
                shared.install(snap);
                shared
                    .metrics
                    .reloads_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(generation, "configuration from the control plane applied");
            }
            Target::Starting(tx) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(snap);
                }
                *target = Target::Parked(None);
            }
            Target::Parked(p) => *p = Some(Box::new(snap)),
        }
        self.store = next;
        Ok(())
    }
}

/// Once the sidecar runs: install what arrived while it was starting, and every push from now.
pub struct Attach(Arc<Mutex<Target>>);

impl Attach {
    pub fn running(self, shared: &Arc<Shared>) {
        let mut t = self.0.lock().expect("target poisoned");
        // The first configuration came over a stream that is up.
        shared
            .metrics
            .xds_connected
            .store(1, std::sync::atomic::Ordering::Relaxed);
        if let Target::Parked(Some(snap)) =
            std::mem::replace(&mut *t, Target::Running(shared.clone()))
        {
            shared.install(*snap);
        }
    }
}

fn node(cfg: &ProxyConfig) -> Node {
    use prost_types::value::Kind;
    let s = |v: &str| prost_types::Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let labels = prost_types::Struct {
        fields: cfg
            .workload
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect(),
    };
    let mut fields = BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), s(&cfg.workload.namespace));
    fields.insert(
        "SERVICE_ACCOUNT".to_string(),
        s(&cfg.workload.service_account),
    );
    fields.insert(
        "LABELS".to_string(),
        prost_types::Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let ns = &cfg.workload.namespace;
    Node {
        // Istio's shape: type~ip~pod.namespace~namespace.svc.cluster.local.
        id: format!(
            "sidecar~~{}-{}-{}.{ns}~{ns}.svc.cluster.local",
            cfg.workload.service_account,
            host,
            std::process::id()
        ),
        cluster: cfg.workload.service_account.clone(),
        metadata: Some(prost_types::Struct {
            fields: fields.into_iter().collect(),
        }),
        user_agent_name: "trustmesh".into(),
        user_agent_version: env!("CARGO_PKG_VERSION").into(),
        client_features: vec![],
    }
}

fn credentials(cfg: &ProxyConfig, cp: &ControlPlaneConfig) -> client::CredentialSource {
    let (chain, key, token) = (
        cfg.certs.cert_chain.clone(),
        cfg.certs.key.clone(),
        cp.token.clone(),
    );
    Arc::new(move || Credentials {
        client_cert: match (
            std::fs::read_to_string(&chain),
            std::fs::read_to_string(&key),
        ) {
            (Ok(c), Ok(k)) if !c.trim().is_empty() && !k.trim().is_empty() => Some((c, k)),
            _ => None,
        },
        bearer_token: token
            .as_ref()
            .and_then(|t| std::fs::read_to_string(t).ok())
            .filter(|t| !t.trim().is_empty()),
    })
}

/// Starts the client and waits (up to `initialFetchTimeout`) for the first complete
/// configuration; returns the first snapshot and the handle that hands the running sidecar to
/// the client.
pub async fn start(cfg: &ProxyConfig) -> anyhow::Result<(Snapshot, Attach)> {
    let cp = cfg
        .control_plane
        .as_ref()
        .ok_or_else(|| anyhow!("no controlPlane configured"))?;
    let root_pem = std::fs::read(&cp.root_cert).with_context(|| {
        format!(
            "controlPlane.rootCert: {}: cannot read the control plane's root",
            cp.root_cert.display()
        )
    })?;
    let (tx, rx) = oneshot::channel();
    let target = Arc::new(Mutex::new(Target::Starting(Some(tx))));
    let last_error = Arc::new(Mutex::new(String::new()));
    let handler = Arc::new(Mutex::new(Handler {
        store: Store::default(),
        startup: cfg.clone(),
        target: target.clone(),
        last_error: last_error.clone(),
        runtime: tokio::runtime::Handle::current(),
    }));
    let opts = client::Options {
        servers: cp.servers(),
        root_pem,
        server_name: cp.server_name.clone(),
        credentials: credentials(cfg, cp),
        node: node(cfg),
        types: TYPES.iter().map(|t| t.to_string()).collect(),
        backoff_min: std::time::Duration::from_millis(200),
        backoff_max: std::time::Duration::from_secs(15),
    };
    tokio::spawn(client::run(opts, handler));
    let wait = cp.initial_fetch_timeout.get();
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(snap)) => Ok((snap, Attach(target))),
        _ => {
            let why = last_error.lock().expect("poisoned").clone();
            Err(anyhow!(
                "no complete configuration from the control plane ({}) within {}{}",
                cp.servers().join(", "),
                cp.initial_fetch_timeout,
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {why}")
                }
            ))
        }
    }
}
