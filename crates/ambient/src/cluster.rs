//! The context istiod has and trustmesh's registry does not: cluster id, local network, root
//! namespace and the security policies. Kept apart so the workload and service translations
//! share it without depending on each other.

use trustmesh_policy::document::Resource;

use crate::authz::AuthzOptions;

/// What istiod knows about its own cluster and mesh that the registry does not carry.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// istiod's cluster ID (`CLUSTER_ID`; `Kubernetes` when unset), the first segment of uids.
    pub id: &'a str,
    /// The local network (empty when the mesh has no networks): the network of workloads and
    /// service addresses that name none.
    pub network: &'a str,
    /// The mesh's root namespace (`istio-system` by default).
    pub root_namespace: &'a str,
    /// The security resources, for each workload's `authorization_policies`.
    pub policies: &'a [Resource],
    pub authz: AuthzOptions,
}
