//! Node authorization, as istiod's CA does it for ambient: a node proxy (ztunnel) asks for the
//! certificates of the workloads on its node by naming one in the request's
//! `ImpersonatedIdentity` metadata. Only a trusted node account may, and only for an identity
//! of which a pod runs on the caller's own node; the cluster edge (`trustmesh-kube`) answers
//! that from the pods it watches.

use trustmesh_identity::SpiffeId;

use super::account::ServiceAccount;

/// The key of the CSR metadata field naming the identity asked for (ztunnel sends it).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Decides whether `caller` may obtain `requested`'s certificate.
pub trait NodeAuthorizer: Send + Sync + 'static {
    fn authorize(&self, caller: &ServiceAccount, requested: &SpiffeId) -> Result<(), String>;
}
