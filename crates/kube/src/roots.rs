//! The `istio-ca-root-cert` ConfigMap in every namespace, as istiod's namespace controller keeps
//! it: key `root-cert.pem`, the CA's roots (and any extra roots configured). Workloads and
//! gateways mount it to verify the control plane and their peers.
//!
//! Written with server-side apply under our field manager, so an operator's own labels on the
//! ConfigMap survive; a namespace that appears gets it at once, a ConfigMap edited or deleted by
//! hand is put back, and new roots are written everywhere.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The ConfigMap's name and key, as Istio names them.
pub const CONFIGMAP: &str = "istio-ca-root-cert";
pub const KEY: &str = "root-cert.pem";
/// Istio labels the ConfigMap so its tooling can find it.
const LABEL: (&str, &str) = ("istio.io/config", "true");
/// Our name in `managedFields`.
pub const FIELD_MANAGER: &str = "trustmesh-control";

/// Keeps the ConfigMap current in every namespace until the task is aborted. `roots` holds the
/// PEM to publish; a new value is written to every namespace.
pub fn spawn(client: Client, roots: watch::Receiver<String>) -> JoinHandle<()> {
    tokio::spawn(run(client, roots))
}

async fn run(client: Client, mut roots: watch::Receiver<String>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let mut ns_events = watcher::watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut map_events = watcher::watcher(
        maps,
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
    )
    .default_backoff()
    .boxed();
    // Namespace → whether it is being deleted (nothing is written there then).
    let mut known: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        tokio::select! {
            e = ns_events.next() => match e {
                Some(Ok(Event::Apply(ns) | Event::InitApply(ns))) => {
                    let name = ns.name_any();
                    let terminating = ns.metadata.deletion_timestamp.is_some();
                    let new = known.insert(name.clone(), terminating).is_none();
                    if new && !terminating {
                        let pem = roots.borrow().clone();
                        publish(&client, &name, &pem).await;
                    }
                }
                Some(Ok(Event::Delete(ns))) => {
                    known.remove(&ns.name_any());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!("kubernetes: watching namespaces for {CONFIGMAP}: {e}"),
                None => return,
            },
            e = map_events.next() => match e {
                // Edited by hand (or written by another CA): put ours back.
                Some(Ok(Event::Apply(cm) | Event::InitApply(cm))) => {
                    let want = roots.borrow().clone();
                    let ns = cm.namespace().unwrap_or_default();
                    let has = cm.data.as_ref().and_then(|d| d.get(KEY));
                    if has != Some(&want) && known.get(&ns) == Some(&false) {
                        publish(&client, &ns, &want).await;
                    }
                }
                Some(Ok(Event::Delete(cm))) => {
                    let ns = cm.namespace().unwrap_or_default();
                    if known.get(&ns) == Some(&false) {
                        let pem = roots.borrow().clone();
                        publish(&client, &ns, &pem).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!("kubernetes: watching {CONFIGMAP} ConfigMaps: {e}"),
                None => return,
            },
            changed = roots.changed() => {
                if changed.is_err() {
                    return;
                }
                let pem = roots.borrow().clone();
                tracing::info!(namespaces = known.len(), "roots changed; updating {CONFIGMAP} everywhere");
                for (ns, terminating) in &known {
                    if !terminating {
                        publish(&client, ns, &pem).await;
                    }
                }
            }
        }
    }
}

/// The ConfigMap as we own it.
pub fn desired(namespace: &str, pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some([(LABEL.0.to_string(), LABEL.1.to_string())].into()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), pem.to_string())].into()),
        ..Default::default()
    }
}

async fn publish(client: &Client, namespace: &str, pem: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut cm = serde_json::to_value(desired(namespace, pem)).unwrap_or_default();
    cm["apiVersion"] = "v1".into();
    cm["kind"] = "ConfigMap".into();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(CONFIGMAP, &params, &Patch::Apply(&cm)).await {
        Ok(_) => tracing::debug!(namespace, "{CONFIGMAP} written"),
        Err(e) => tracing::warn!(namespace, "kubernetes: cannot write {CONFIGMAP}: {e}"),
    }
}
