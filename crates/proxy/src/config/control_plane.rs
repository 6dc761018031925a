//! `controlPlane:` — the sidecar takes its policies, registry, mesh config and trust bundles
//! from `trustmesh control` over xDS instead of local files (`policyDir`, `mesh`). Its own
//! certificate still comes from files (the node agent writes them, from the CA on the same
//! port), and it is what authenticates the sidecar to the control plane; `token` serves at
//! bootstrap, before the first certificate exists.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trustmesh_config::Duration;

/// The name istiod's serving certificate carries, and `trustmesh control`'s by default.
pub const DEFAULT_SERVER_NAME: &str = "istiod.istio-system.svc";
/// How long startup waits for the first complete configuration (Envoy's `initial_fetch_timeout`
/// plays this role; a sidecar that cannot enforce its policies must not serve).
pub const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// `host:port` of the control plane (its CA/xDS port, 15012).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Several replicas, tried in turn; a sidecar fails over when one goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Roots (PEM) that verify the control plane's serving certificate.
    pub root_cert: PathBuf,
    #[serde(default = "server_name")]
    pub server_name: String,
    /// A bearer token file (a Kubernetes service-account token, or any token the control
    /// plane's issuers accept), sent when the sidecar has no certificate yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<PathBuf>,
    #[serde(default = "initial_fetch_timeout")]
    pub initial_fetch_timeout: Duration,
}

fn server_name() -> String {
    DEFAULT_SERVER_NAME.to_string()
}

fn initial_fetch_timeout() -> Duration {
    DEFAULT_INITIAL_FETCH_TIMEOUT
}

impl ControlPlaneConfig {
    /// Every replica's `https://host:port`.
    pub fn servers(&self) -> Vec<String> {
        self.address
            .iter()
            .chain(&self.addresses)
            .map(|a| format!("https://{a}"))
            .collect()
    }

    pub(super) fn resolve_paths(&mut self, abs: impl Fn(&Path) -> PathBuf) {
        self.root_cert = abs(&self.root_cert);
        if let Some(t) = &self.token {
            self.token = Some(abs(t));
        }
    }

    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if self.address.is_none() && self.addresses.is_empty() {
            return Err((
                "controlPlane.address".into(),
                "name the control plane (host:port), or several under addresses".into(),
            ));
        }
        for (i, a) in self.address.iter().chain(&self.addresses).enumerate() {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                let field = if self.address.is_some() && i == 0 {
                    "controlPlane.address".to_string()
                } else {
                    format!(
                        "controlPlane.addresses[{}]",
                        i - usize::from(self.address.is_some())
                    )
                };
                return Err((field, format!("{a:?} is not host:port")));
            }
        }
        if self.initial_fetch_timeout.is_zero() {
            return Err((
                "controlPlane.initialFetchTimeout".into(),
                "must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}
