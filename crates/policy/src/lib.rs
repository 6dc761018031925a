//! Istio security policy for trustmesh: parse, validate, resolve and evaluate
//! `PeerAuthentication`, `RequestAuthentication` and `AuthorizationPolicy` exactly as Istio
//! documents them. Pure logic; the only I/O is the [`load`] module.
//!
//! # API (stable; the proxy codes against it)
//! - [`MeshConfig::from_yaml_str`] / [`load::read_mesh`]: trust domain (+aliases), root
//!   namespace, ext_authz extension providers.
//! - [`PolicySet::load`]`(paths, &mesh) -> Result<(PolicySet, Vec<Notice>), LoadError>`,
//!   [`PolicySet::from_yaml_str`], [`PolicySet::from_sources`]; [`validate`] collects every
//!   problem instead of stopping at the first.
//! - [`PolicySet::mtls_mode`]`(&Workload, port) -> (MtlsMode, Option<String>)`.
//! - [`PolicySet::jwt_rules`]`(&Workload) -> Vec<&JwtRule>`.
//! - [`PolicySet::evaluate`]`(&Request) -> Decision`: mTLS mode + CUSTOM → DENY → ALLOW, with
//!   every applicable policy explained (what `trustmesh authz check` prints).
//! - Hot path for the proxy, whose TLS layer already enforced the mTLS mode (pass
//!   `source.principal: None` when the peer was not verified):
//!   [`PolicySet::evaluate_authz_only`] returns `Verdict::Custom { provider, policy }` when a
//!   CUSTOM policy matches; call the provider, and if it allows call
//!   [`PolicySet::evaluate_after_custom`] (DENY → ALLOW only). These return only the deciding
//!   policy (and a matching AUDIT policy) in `policies`, and use the per-workload rule index.
//!
//! Dry-run policies (`istio.io/dry-run: "true"`) are reported by `evaluate` but never enforced.

pub mod authz;
pub mod crd;
pub mod decision;
pub mod document;
mod index;
pub mod load;
pub mod matcher;
pub mod mesh;
pub mod peer;
pub mod problem;
pub mod request;
mod set;

pub use crd::{Action, JwtRule, MtlsMode};
pub use decision::{Decision, PolicyResult, Verdict};
pub use load::{ReadError, SourceText};
pub use mesh::{ExtensionProvider, MeshConfig};
pub use problem::{Location, Notice, Problem};
pub use request::Request;
pub use set::{validate, LoadError, PolicySet, Report};

use std::collections::BTreeMap;

/// A workload as policies select it: its namespace and pod labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    pub fn new(namespace: &str, labels: &[(&str, &str)]) -> Self {
        Workload {
            namespace: namespace.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}
