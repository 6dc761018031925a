//! The cluster as the control plane's configuration source: Istio's resources, the `istio`
//! ConfigMap's mesh config, and the registry from Services, EndpointSlices and Pods.
//!
//! One watcher per kind (list, then watch; a 410 Gone or a broken stream relists, with backoff)
//! keeps a copy of that kind's objects. A relist replaces the copy only once it is complete, so
//! a restarted watch never serves half a cluster. [`Source::read`] joins the copies into the
//! documents the file source would have read; the world validates them as it validates files.
//!
//! What cannot be watched (an Istio CRD not installed, a forbidden kind) is reported as a
//! problem while it lasts; the other kinds keep working.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use trustmesh_control::source::{mesh_problem, mesh_value, Document, Inputs, Source};

use crate::store::{Objects, Shared, Store};
use crate::translate;

/// Istio's kinds read from the cluster: `(group, version, kind, plural)`.
pub const ISTIO_KINDS: [(&str, &str, &str, &str); 6] = [
    (
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    (
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    (
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    (
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    ),
    (
        "networking.istio.io",
        "v1",
        "WorkloadEntry",
        "workloadentries",
    ),
    (
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
    ),
];

/// The other kinds watched, by the names their problems and sync use.
const SERVICE: &str = "Service";
const POD: &str = "Pod";
const ENDPOINT_SLICE: &str = "EndpointSlice";
const MESH_CONFIGMAP_KIND: &str = "mesh ConfigMap";
const NAMESPACE: &str = "Namespace";

/// The ConfigMap holding the mesh config (key `mesh`) in the root namespace, as istiod reads it.
pub const MESH_CONFIGMAP: &str = "istio";

/// Reads the cluster. Dropping it stops its watchers.
pub struct KubeSource {
    store: Arc<Mutex<Store>>,
    changes: Arc<AtomicU64>,
    domain: String,
    root_namespace: String,
    last_mesh: Option<(serde_yaml::Value, String)>,
    /// Every kind watched, by the name its problems and sync use.
    kinds: Vec<&'static str>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KubeSource {
    /// Starts the watchers on the current runtime. `domain` is the cluster's DNS suffix
    /// (`cluster.local`); `root_namespace` holds the mesh ConfigMap (`istio-system`).
    pub fn start(client: Client, domain: &str, root_namespace: &str) -> KubeSource {
        let store = Arc::new(Mutex::new(Store::default()));
        let changes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (group, version, kind, plural) in ISTIO_KINDS {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            let put = move |s: &mut Store, objs: Objects<DynamicObject>| {
                let values = objs
                    .into_iter()
                    .filter_map(|(k, o)| Some((k, istio_json(o, &ar)?)))
                    .collect();
                s.istio.insert(kind, values);
            };
            tasks.push(spawn_watch(
                kind,
                api,
                watcher::Config::default(),
                store.clone(),
                changes.clone(),
                put,
            ));
        }
        tasks.push(spawn_watch(
            SERVICE,
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            store.clone(),
            changes.clone(),
            |s, objs| s.services = objs,
        ));
        tasks.push(spawn_watch(
            POD,
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            store.clone(),
            changes.clone(),
            |s, objs| s.pods = objs,
        ));
        tasks.push(spawn_watch(
            ENDPOINT_SLICE,
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            store.clone(),
            changes.clone(),
            |s, objs| s.slices = objs,
        ));
        tasks.push(spawn_watch(
            NAMESPACE,
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            store.clone(),
            changes.clone(),
            |s, objs: Objects<Namespace>| {
                s.networks = objs
                    .into_values()
                    .filter_map(|n| {
                        let net = n.metadata.labels?.get(translate::NETWORK_LABEL)?.clone();
                        Some((n.metadata.name?, net))
                    })
                    .collect();
            },
        ));
        tasks.push(spawn_watch(
            MESH_CONFIGMAP_KIND,
            Api::<ConfigMap>::namespaced(client, root_namespace),
            watcher::Config::default().fields(&format!("metadata.name={MESH_CONFIGMAP}")),
            store.clone(),
            changes.clone(),
            |s, objs: Objects<ConfigMap>| {
                s.mesh = objs
                    .into_values()
                    .next()
                    .and_then(|cm| cm.data?.get("mesh").cloned());
            },
        ));
        KubeSource {
            store,
            changes,
            domain: domain.to_string(),
            root_namespace: root_namespace.to_string(),
            last_mesh: None,
            kinds: ISTIO_KINDS
                .iter()
                .map(|k| k.2)
                .chain([SERVICE, POD, ENDPOINT_SLICE, MESH_CONFIGMAP_KIND, NAMESPACE])
                .collect(),
            tasks,
        }
    }
}

impl KubeSource {
    /// What the watchers keep (the node authorizer reads the pods from it).
    pub fn store(&self) -> Shared {
        self.store.clone()
    }

    /// Waits until every kind has been listed once, as istiod waits for its informers: a
    /// control plane that served before would hand sidecars a mesh without its DENY policies.
    /// Says every few seconds what it is still waiting for (and why, when a watch fails).
    pub async fn synced(&self) {
        let started = std::time::Instant::now();
        let mut said = std::time::Duration::ZERO;
        loop {
            let waiting: Vec<String> = {
                let s = self.store.lock().expect("kube store poisoned");
                self.kinds
                    .iter()
                    .filter(|k| !s.synced.contains(*k))
                    .map(|k| match s.problems.get(*k) {
                        Some(p) => format!("{k} ({p})"),
                        None => k.to_string(),
                    })
                    .collect()
            };
            if waiting.is_empty() {
                return;
            }
            if started.elapsed() >= said + SYNC_REPORT {
                said = started.elapsed();
                tracing::warn!(
                    "kubernetes: waiting for the first list of {} before serving anything",
                    waiting.join(", ")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// How often [`KubeSource::synced`] says what it waits for.
const SYNC_REPORT: std::time::Duration = std::time::Duration::from_secs(5);

/// The JSON a file would hold for an Istio object (the dynamic API leaves out its kind).
fn istio_json(mut o: DynamicObject, ar: &ApiResource) -> Option<serde_json::Value> {
    o.types = Some(kube::core::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    serde_json::to_value(o).ok()
}

fn key<K: Resource>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Watches one kind, keeping its objects in `store` through `put` (called with the whole set
/// after every change), and its problem while the watch fails.
fn spawn_watch<K>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Mutex<Store>>,
    changes: Arc<AtomicU64>,
    put: impl Fn(&mut Store, Objects<K>) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut current: Objects<K> = BTreeMap::new();
        // Filled during a (re)list; replaces `current` when the list is complete.
        let mut listing: Option<Objects<K>> = None;
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let changed = match event {
                Ok(Event::Init) => {
                    listing = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(o)) => {
                    listing.get_or_insert_with(BTreeMap::new).insert(key(&o), o);
                    false
                }
                Ok(Event::InitDone) => {
                    current = listing.take().unwrap_or_default();
                    store
                        .lock()
                        .expect("kube store poisoned")
                        .synced
                        .insert(what);
                    true
                }
                Ok(Event::Apply(o)) => {
                    current.insert(key(&o), o);
                    true
                }
                Ok(Event::Delete(o)) => current.remove(&key(&o)).is_some(),
                Err(e) => {
                    let why = describe_error(what, &e);
                    let mut s = store.lock().expect("kube store poisoned");
                    if not_served(&e) {
                        s.synced.insert(what);
                    }
                    if s.problems.get(what) != Some(&why) {
                        tracing::warn!("kubernetes: {why}");
                        s.problems.insert(what.to_string(), why);
                        changes.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
            };
            let mut s = store.lock().expect("kube store poisoned");
            let recovered = s.problems.remove(what).is_some();
            if recovered {
                tracing::info!("kubernetes: watching {what} again");
            }
            if changed {
                put(&mut s, current.clone());
            }
            if changed || recovered {
                changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Whether the API server says the kind does not exist (404): its CRD is not installed.
fn not_served(e: &watcher::Error) -> bool {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    api.code == 404
}

/// An operator's sentence for a failed watch.
fn describe_error(what: &str, e: &watcher::Error) -> String {
    let text = e.to_string();
    if text.contains("404") || text.contains("NotFound") || text.contains("not found") {
        format!(
            "cannot watch {what}: the API server does not serve it (is its CRD installed?): {text}"
        )
    } else if text.contains("403") || text.contains("Forbidden") || text.contains("forbidden") {
        format!("cannot watch {what}: the control plane's account may not list/watch it: {text}")
    } else {
        format!("cannot watch {what}: {text}; retrying")
    }
}

impl Source for KubeSource {
    fn fingerprint(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn read(&mut self) -> Inputs {
        let s = self.store.lock().expect("kube store poisoned");
        let mut inputs = Inputs::default();
        let mut push = |t: translate::Translated| {
            inputs.documents.push(Document {
                value: t.value,
                origin: t.origin,
            })
        };
        for objs in s.istio.values() {
            for o in objs.values() {
                if let Some(t) = translate::istio_resource(o) {
                    push(t);
                }
            }
        }
        let by_ns = |ns: &str| format!("{ns}/");
        for svc in s.services.values() {
            let ns = svc.namespace().unwrap_or_default();
            let slices: Vec<&EndpointSlice> = s
                .slices
                .range(by_ns(&ns)..)
                .take_while(|(k, _)| k.starts_with(&by_ns(&ns)))
                .map(|(_, v)| v)
                .collect();
            if let Some(t) = translate::service_entry(svc, &slices, &self.domain) {
                push(t);
            }
        }
        for pod in s.pods.values() {
            let ns = pod.namespace().unwrap_or_default();
            let services: Vec<&Service> = s
                .services
                .range(by_ns(&ns)..)
                .take_while(|(k, _)| k.starts_with(&by_ns(&ns)))
                .map(|(_, v)| v)
                .collect();
            let network = s.networks.get(&ns).map(String::as_str);
            if let Some(t) = translate::workload_entry(pod, &services, network) {
                push(t);
            }
        }
        inputs.problems.extend(s.problems.values().cloned());
        let origin = translate::origin("ConfigMap", Some(&self.root_namespace), MESH_CONFIGMAP);
        match &s.mesh {
            None => self.last_mesh = None,
            Some(text) => match mesh_value(text, &origin) {
                Ok(v) => self.last_mesh = Some((v, origin)),
                Err(why) => inputs
                    .problems
                    .push(mesh_problem(&why, self.last_mesh.is_some())),
            },
        }
        inputs.mesh = self.last_mesh.clone();
        inputs
    }
}
