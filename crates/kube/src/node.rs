//! Node authorization for the CA (istiod's `CA_TRUSTED_NODE_ACCOUNTS`): a trusted node account
//! — ztunnel's — may obtain the certificate of an identity only when a pod with that service
//! account is scheduled on the caller's own node. The caller is known by its bound token's pod
//! (name and UID, from TokenReview), and nodes by the pods the control plane watches, so a
//! compromised node proxy can obtain the identities of its own node and no other.

use k8s_openapi::api::core::v1::Pod;
use trustmesh_ca_server::auth::node::NodeAuthorizer;
use trustmesh_ca_server::auth::review::ServiceAccount;
use trustmesh_identity::SpiffeId;

use crate::store::Shared;

/// A trusted node account, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccount {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for NodeAccount {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeAccount, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(NodeAccount {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!(
                "{s:?}: expected NAMESPACE/SERVICE_ACCOUNT (e.g. istio-system/ztunnel)"
            )),
        }
    }
}

/// The decision, over any set of pods.
pub fn authorize<'a>(
    trusted: &[NodeAccount],
    pods: impl Iterator<Item = &'a Pod> + Clone,
    caller: &ServiceAccount,
    requested: &SpiffeId,
) -> Result<(), String> {
    if !trusted
        .iter()
        .any(|t| t.namespace == caller.namespace && t.name == caller.name)
    {
        return Err(format!(
            "{}/{} is not a trusted node account (--trusted-node-account)",
            caller.namespace, caller.name
        ));
    }
    let pod = caller.pod.as_ref().ok_or(
        "the caller's token is not bound to a pod (node proxies need a projected service-account token)",
    )?;
    let sa_of = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into())
    };
    let node_of = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    };
    let own = pods
        .clone()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(caller.namespace.as_str())
                && p.metadata.name.as_deref() == Some(pod.name.as_str())
        })
        .ok_or_else(|| {
            format!(
                "the caller's pod {}/{} is not known",
                caller.namespace, pod.name
            )
        })?;
    if own.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
        return Err(format!(
            "the caller's pod {}/{} was re-created (UID {} is not the token's {})",
            caller.namespace,
            pod.name,
            own.metadata.uid.as_deref().unwrap_or(""),
            pod.uid
        ));
    }
    if sa_of(own) != caller.name {
        return Err(format!(
            "the caller's pod {}/{} runs as {}, not {}",
            caller.namespace,
            pod.name,
            sa_of(own),
            caller.name
        ));
    }
    let node = node_of(own).ok_or_else(|| {
        format!(
            "the caller's pod {}/{} is on no node",
            caller.namespace, pod.name
        )
    })?;
    let (ns, sa) = (
        requested.namespace().unwrap_or_default(),
        requested.service_account().unwrap_or_default(),
    );
    let there = pods.into_iter().any(|p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && sa_of(p) == sa
            && node_of(p).as_deref() == Some(node.as_str())
    });
    if there {
        Ok(())
    } else {
        Err(format!("no pod of {ns}/{sa} runs on node {node:?}"))
    }
}

/// [`authorize`] over the pods a [`crate::source::KubeSource`] watches.
pub struct KubeNodeAuthorizer {
    store: Shared,
    trusted: Vec<NodeAccount>,
}

impl KubeNodeAuthorizer {
    pub fn new(store: Shared, trusted: Vec<NodeAccount>) -> KubeNodeAuthorizer {
        KubeNodeAuthorizer { store, trusted }
    }
}

impl NodeAuthorizer for KubeNodeAuthorizer {
    fn authorize(&self, caller: &ServiceAccount, requested: &SpiffeId) -> Result<(), String> {
        let s = self.store.lock().expect("kube store poisoned");
        authorize(&self.trusted, s.pods.values(), caller, requested)
    }
}

#[cfg(test)]
mod tests;
