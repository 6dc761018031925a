//! What the watchers keep: each kind's objects as last listed and watched (leaf module; the
//! source reads it for configuration, the node authorizer for pods).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Objects of one kind, by `namespace/name`.
pub type Objects<K> = BTreeMap<String, K>;

#[derive(Default)]
pub struct Store {
    pub istio: BTreeMap<&'static str, Objects<serde_json::Value>>,
    pub services: Objects<Service>,
    pub pods: Objects<Pod>,
    pub slices: Objects<EndpointSlice>,
    /// Namespace → its `topology.istio.io/network` label, where it has one.
    pub networks: BTreeMap<String, String>,
    /// The mesh ConfigMap's `mesh` text, when it exists.
    pub mesh: Option<String>,
    /// Kind → what is wrong with watching it now.
    pub problems: BTreeMap<String, String>,
    /// Kinds whose first list is complete, or that the API server does not serve (a CRD not
    /// installed: nothing of it can exist). Nothing is served before every kind is here.
    pub synced: std::collections::BTreeSet<&'static str>,
}

/// The store, shared by the watchers that fill it and whoever reads it.
pub type Shared = Arc<Mutex<Store>>;
