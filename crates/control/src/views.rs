//! The xDS server's questions answered by the control plane: who a caller is (authenticated
//! as the CA authenticates it: an SVID over mTLS, or a bearer token at bootstrap), what its
//! workload should hold, and what happened on its stream.
//!
//! A caller's namespace and service account come from its credential alone. The labels that
//! select policies come from its node metadata, but only within what the registry knows: when
//! WorkloadEntries exist for the caller's namespace and service account, the claimed labels
//! must be one of theirs, so a sidecar cannot dress up as another workload of its namespace to
//! read that workload's policies. A caller can never name another namespace.

// Handlers must return tonic::Status, so helpers do too.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tonic::Status;
use trustmesh_ca_server::service::{CaService, Caller as CaCaller};
use trustmesh_xds::core::Node;
use trustmesh_xds::server::{Caller, Event, ResourceMap, Views};
use trustmesh_xds::types;

use crate::status::{Connection, Status as Registry};
use crate::world::{ViewKey, World};

pub struct ControlPlane {
    world: ArcSwap<World>,
    problems: ArcSwap<Vec<String>>,
    changes: watch::Sender<u64>,
    pub status: Registry,
    /// Set when the CA's services start: it authenticates callers.
    pub(crate) ca: OnceLock<Arc<CaService>>,
    /// SPIFFE IDs of node proxies (ztunnel) that may read every workload and policy in
    /// ztunnel's form.
    pub ambient_identities: Vec<String>,
    /// This replica's name, shown by `proxy-status`.
    pub name: String,
}

/// An admitted caller.
pub struct Client {
    pub id: u64,
    pub key: ViewKey,
    pub identity: String,
    pub ambient: bool,
}

impl ControlPlane {
    pub fn new(world: World, name: String, ambient_identities: Vec<String>) -> ControlPlane {
        let (changes, _) = watch::channel(world.generation);
        ControlPlane {
            problems: ArcSwap::from_pointee(world.problems.clone()),
            world: ArcSwap::from_pointee(world),
            changes,
            status: Registry::default(),
            ca: OnceLock::new(),
            ambient_identities,
            name,
        }
    }

    pub fn world(&self) -> Arc<World> {
        self.world.load_full()
    }

    /// Replaces what the source's problems are, leaving what is served (and the streams) be.
    pub fn report(&self, problems: Vec<String>) {
        self.problems.store(Arc::new(problems));
    }

    /// What is wrong in the config source now.
    pub fn problems(&self) -> Arc<Vec<String>> {
        self.problems.load_full()
    }

    /// Installs a new world and tells every stream.
    pub fn install(&self, world: World) {
        let generation = world.generation;
        self.problems.store(Arc::new(world.problems.clone()));
        self.world.store(Arc::new(world));
        self.changes.send_replace(generation);
    }
}

/// The string values of a node metadata field that is a map (`LABELS`).
fn metadata_map(node: &Node, field: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(meta) = &node.metadata else {
        return out;
    };
    if let Some(prost_types::value::Kind::StructValue(s)) =
        meta.fields.get(field).and_then(|v| v.kind.as_ref())
    {
        for (k, v) in &s.fields {
            if let Some(prost_types::value::Kind::StringValue(sv)) = &v.kind {
                out.insert(k.clone(), sv.clone());
            }
        }
    }
    out
}

fn metadata_str<'a>(node: &'a Node, field: &str) -> Option<&'a str> {
    match node.metadata.as_ref()?.fields.get(field)?.kind.as_ref()? {
        prost_types::value::Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

#[tonic::async_trait]
impl Views for ControlPlane {
    type Client = Client;

    async fn admit(&self, caller: Caller<'_>, node: &Node) -> Result<Client, Status> {
        let refuse = |s: Status| {
            self.status
                .counters
                .refused_streams
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(remote = ?caller.remote, node = %node.id, "refused an xDS stream: {}", s.message());
            s
        };
        let ca = self
            .ca
            .get()
            .ok_or_else(|| Status::unavailable("the control plane is starting"))?;
        let who = ca
            .authenticate_parts(caller.certs, caller.metadata)
            .await
            .map_err(refuse)?;
        let (id, by) = match &who {
            CaCaller::ClientCert { id } => (id.clone(), "certificate"),
            CaCaller::Token { id, .. } => (id.clone(), "token"),
        };
        let namespace = id.namespace().unwrap_or_default().to_string();
        let sa = id.service_account().unwrap_or_default().to_string();
        // ztunnel sends NAMESPACE empty when POD_NAMESPACE is unset: no claim.
        if let Some(claimed) = metadata_str(node, "NAMESPACE").filter(|n| !n.is_empty()) {
            if claimed != namespace {
                return Err(refuse(Status::permission_denied(format!(
                    "node metadata NAMESPACE {claimed:?} is not the caller's namespace: {id} \
                     is in {namespace:?}"
                ))));
            }
        }
        let ambient = self.ambient_identities.iter().any(|a| *a == id.to_string());
        let claimed = metadata_map(node, "LABELS");
        let world = self.world();
        let known: Vec<_> = world
            .workloads
            .iter()
            .filter(|w| w.namespace == namespace && w.service_account == sa)
            .collect();
        if !ambient && !known.is_empty() && !known.iter().any(|w| w.labels == claimed) {
            return Err(refuse(Status::permission_denied(format!(
                "{id}: the labels it claims ({claimed:?}) are not those of any WorkloadEntry \
                 of service account {namespace}/{sa}"
            ))));
        }
        let key = ViewKey {
            namespace: namespace.clone(),
            labels: claimed.clone(),
        };
        let conn = Connection {
            id: 0,
            node: node.id.clone(),
            identity: id.to_string(),
            authenticated_by: by.to_string(),
            namespace,
            labels: claimed,
            remote: caller.remote.map(|r| r.to_string()).unwrap_or_default(),
            connected_at: now_rfc3339(),
            types: BTreeMap::new(),
        };
        let client_id = self.status.connect(conn);
        tracing::info!(%id, node = %node.id, by, "xDS stream admitted");
        Ok(Client {
            id: client_id,
            key,
            identity: id.to_string(),
            ambient,
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn resources(&self, client: &Client, type_url: &str) -> Result<Arc<ResourceMap>, Status> {
        let world = self.world();
        if let Some(v) = world.view(&client.key, type_url) {
            return Ok(v);
        }
        if type_url == types::ADDRESS || type_url == types::AUTHORIZATION {
            if !client.ambient {
                return Err(Status::permission_denied(format!(
                    "{} may not read {type_url}: it holds every workload and policy of the \
                     mesh, for node proxies (ztunnel) only",
                    client.identity
                )));
            }
            if let Some(v) = world.ambient_view(type_url) {
                return Ok(v);
            }
        }
        Err(Status::invalid_argument(format!(
            "type {type_url} is not served by this control plane"
        )))
    }

    fn system_version(&self) -> String {
        self.world().version.clone()
    }

    fn event(&self, client: &Client, event: Event<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.status.counters;
        match event {
            Event::Sent {
                type_url,
                nonce,
                bytes,
                ..
            } => {
                c.pushes.fetch_add(1, Relaxed);
                c.push_bytes.fetch_add(bytes as u64, Relaxed);
                let version = self.system_version();
                self.status.update(client.id, type_url, |s| {
                    s.sent_nonce = nonce.to_string();
                    s.sent_version = version;
                    s.pushes += 1;
                    s.bytes += bytes as u64;
                });
            }
            Event::Acked { type_url, nonce } => {
                c.acks.fetch_add(1, Relaxed);
                let at = c.acks.load(Relaxed);
                self.status.update(client.id, type_url, |s| {
                    s.acked_nonce = nonce.to_string();
                    if s.sent_nonce == nonce {
                        s.acked_version = s.sent_version.clone();
                    }
                    s.acked_at = at;
                    s.nack = None;
                });
            }
            Event::Nacked {
                type_url,
                nonce,
                reason,
            } => {
                c.nacks.fetch_add(1, Relaxed);
                self.status.update(client.id, type_url, |s| {
                    s.acked_nonce = nonce.to_string();
                    s.nack = Some(reason.to_string());
                });
            }
            Event::Closed => {
                self.status.disconnect(client.id);
                tracing::info!(identity = %client.identity, "xDS stream closed");
            }
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
