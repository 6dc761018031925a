//! Who is connected and how far each is in sync: `trustmesh proxy-status` reads it (istioctl
//! proxy-status's role), and the metrics count the same events.
//!
//! A sidecar is in sync for a type when it ACKed the last response it was sent and nothing was
//! NACKed since; it is in sync overall when every type it subscribed to is, and the world has
//! not changed since its last response (a change it has not been sent yet is still pending).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// One connected sidecar.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: u64,
    /// The node id it sent (`sidecar~ip~pod.ns~ns.svc.cluster.local` for Istio's proxies).
    pub node: String,
    /// The SPIFFE ID it authenticated as.
    pub identity: String,
    /// How it authenticated: `certificate` or `token`.
    pub authenticated_by: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub remote: String,
    pub connected_at: String,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// The system version of the last response sent.
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_nonce: String,
    /// The system version it last ACKed.
    pub acked_version: String,
    /// The reason of its last NACK, until it ACKs again.
    pub nack: Option<String>,
    pub pushes: u64,
    pub bytes: u64,
    /// Orders ACKs across types: the newest ACKed version is the proxy's.
    #[serde(skip)]
    pub acked_at: u64,
}

impl TypeStatus {
    pub fn in_sync(&self) -> bool {
        self.nack.is_none() && self.sent_nonce == self.acked_nonce
    }
}

/// Counters for `/metrics` (names as istiod's `pilot_xds_*` where one exists).
#[derive(Debug, Default)]
pub struct Counters {
    pub pushes: AtomicU64,
    pub push_bytes: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub refused_streams: AtomicU64,
    pub world_builds: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Status {
    connections: Mutex<BTreeMap<u64, Connection>>,
    next_id: AtomicU64,
    pub counters: Counters,
}

impl Status {
    pub fn connect(&self, mut c: Connection) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        c.id = id;
        self.connections
            .lock()
            .expect("status poisoned")
            .insert(id, c);
        id
    }

    pub fn disconnect(&self, id: u64) {
        self.connections
            .lock()
            .expect("status poisoned")
            .remove(&id);
    }

    pub fn update(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(c) = self
            .connections
            .lock()
            .expect("status poisoned")
            .get_mut(&id)
        {
            f(c.types.entry(type_url.to_string()).or_default());
        }
    }

    pub fn connections(&self) -> Vec<Connection> {
        self.connections
            .lock()
            .expect("status poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn connected(&self) -> usize {
        self.connections.lock().expect("status poisoned").len()
    }
}

/// The `/debug/syncz` document.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syncz {
    pub control_plane: String,
    pub version: String,
    pub generation: u64,
    pub resources: usize,
    pub problems: Vec<String>,
    pub proxies: Vec<ProxySync>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySync {
    pub node: String,
    pub identity: String,
    pub namespace: String,
    pub remote: String,
    pub connected_at: String,
    /// `SYNCED`, `STALE` (sent, not yet ACKed), `NACKED` or `NOT SENT` per type, short names.
    /// A type the last changes did not touch is not resent, and stays `SYNCED`.
    pub types: BTreeMap<String, String>,
    pub acked_version: String,
    pub in_sync: bool,
    pub nacks: Vec<String>,
    /// Responses sent on this stream, and their bytes.
    pub pushes: u64,
    pub push_bytes: u64,
}

/// The short name of a type URL (`IstioResource`, `Address`).
pub fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

pub fn syncz(
    status: &Status,
    name: &str,
    version: &str,
    generation: u64,
    resources: usize,
    problems: &[String],
) -> Syncz {
    let proxies = status
        .connections()
        .into_iter()
        .map(|c| {
            let mut types = BTreeMap::new();
            let mut nacks = Vec::new();
            let mut acked_version = String::new();
            let mut in_sync = true;
            let mut newest = 0u64;
            let (mut pushes, mut push_bytes) = (0, 0);
            for (t, s) in &c.types {
                let state = if let Some(n) = &s.nack {
                    nacks.push(format!("{}: {n}", short_type(t)));
                    "NACKED"
                } else if s.sent_nonce.is_empty() {
                    "NOT SENT"
                } else if s.in_sync() {
                    "SYNCED"
                } else {
                    "STALE"
                };
                in_sync &= state == "SYNCED";
                pushes += s.pushes;
                push_bytes += s.bytes;
                if s.acked_at > newest {
                    newest = s.acked_at;
                    acked_version = s.acked_version.clone();
                }
                types.insert(short_type(t).to_string(), state.to_string());
            }
            ProxySync {
                node: c.node,
                identity: c.identity,
                namespace: c.namespace,
                remote: c.remote,
                connected_at: c.connected_at,
                types,
                acked_version,
                in_sync: in_sync && !c.types.is_empty(),
                nacks,
                pushes,
                push_bytes,
            }
        })
        .collect();
    Syncz {
        control_plane: name.to_string(),
        version: version.to_string(),
        generation,
        resources,
        problems: problems.to_vec(),
        proxies,
    }
}
