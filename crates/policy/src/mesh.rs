//! The slice of Istio's `MeshConfig` that security policy depends on.
//!
//! A mesh config carries dozens of unrelated settings (access logs, proxy defaults, tracing...),
//! so unknown fields are tolerated here: users must be able to point `--mesh` at the file they
//! already have. The document shapes it may come in are `mesh_shape`'s (a bare document, an
//! IstioOperator, the `istio` ConfigMap, the Sail operator's or Kyma's `Istio` resource); any
//! other Kubernetes kind is refused rather than read as an empty mesh config.
//! Duration fields (the ext_authz providers' `timeout`) are `trustmesh_config::Duration`, Go's
//! grammar, read here once: `policy validate` and the proxy refuse exactly the same values.

use std::path::Path;

use serde::{Deserialize, Serialize};
use trustmesh_config::load::DOCUMENT;
use trustmesh_config::{ConfigError, Duration};

/// Istio's special trust domain name: in a policy it stands for the local trust domain.
pub const CLUSTER_LOCAL: &str = "cluster.local";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// How request paths are normalized before policy and the app see them.
    #[serde(default)]
    pub path_normalization: crate::normalize::PathNormalization,
    /// What a sidecar does with outbound traffic to a destination the registry does not know.
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Whether HTTP/1.1 requests to an `HTTP` service port go to the upstream as HTTP/2
    /// (a DestinationRule's `connectionPool.http.h2UpgradePolicy` may say otherwise per
    /// service). Istio's default keeps the app's HTTP/1.1 between sidecars.
    #[serde(default)]
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// `accessLogFile`: where the sidecar writes its access log. `""` turns it off (Istio's
    /// reading), `/dev/stdout` or no value at all is stdout (Istio's own default is off;
    /// trustmesh keeps logging when the field is absent), any other path is appended to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// `accessLogEncoding`: `TEXT` (Istio's default) or `JSON`. Unset keeps trustmesh's own JSON
    /// record; `TEXT` writes Istio's default text format unless `accessLogFormat` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// `accessLogFormat`: Envoy command operators; with `JSON` encoding a JSON object of
    /// key → operator, as Istio reads it. Parsed by the proxy (`accesslog::format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
}

/// `meshConfig.accessLogEncoding`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum AccessLogEncoding {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

fn default_trust_domain() -> String {
    CLUSTER_LOCAL.to_string()
}
fn default_root_namespace() -> String {
    "istio-system".to_string()
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: default_trust_domain(),
            trust_domain_aliases: Vec::new(),
            root_namespace: default_root_namespace(),
            extension_providers: Vec::new(),
            path_normalization: Default::default(),
            outbound_traffic_policy: Default::default(),
            h2_upgrade_policy: Default::default(),
            access_log_file: None,
            access_log_encoding: None,
            access_log_format: None,
        }
    }
}

/// `outboundTrafficPolicy`: Istio's default is `ALLOW_ANY` (unknown destinations pass
/// through); `REGISTRY_ONLY` refuses them.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum OutboundMode {
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}

/// `meshConfig.h2UpgradePolicy`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum H2UpgradePolicy {
    #[default]
    #[serde(rename = "DO_NOT_UPGRADE")]
    DoNotUpgrade,
    #[serde(rename = "UPGRADE")]
    Upgrade,
}

/// `extensionProviders[]`. Only the ext_authz kinds matter to authorization; other kinds
/// (tracing, access logging...) are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
}

impl ExtensionProvider {
    /// Whether this provider can serve a CUSTOM AuthorizationPolicy.
    pub fn is_ext_authz(&self) -> bool {
        self.envoy_ext_authz_grpc.is_some() || self.envoy_ext_authz_http.is_some()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    pub service: String,
    #[serde(default)]
    pub port: u32,
    /// Go's duration grammar, parsed here so `validate` refuses exactly what the proxy would.
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBody>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<RequestBody>,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestBody {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

impl MeshConfig {
    /// Parses any of the accepted shapes (see module docs) through the config toolkit, so a
    /// bad field is reported as `<file>: <field.path>: <message>`, the path running through
    /// the envelope (`data.mesh.…`, `spec.meshConfig.…`). An empty document is the default.
    pub fn parse(text: &str, file: &Path) -> Result<MeshConfig, ConfigError> {
        let not_yaml = |message: String| ConfigError::Field {
            file: file.to_path_buf(),
            field: DOCUMENT.into(),
            message: format!("not valid YAML: {message}"),
        };
        crate::shape::check(text).map_err(not_yaml)?;
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| not_yaml(e.to_string()))?;
        MeshConfig::from_value(value, file, "")
    }

    /// A mesh config already parsed as YAML, found at field path `at` of `file` (the inline
    /// `mesh:` of a proxy config): errors name `at.<field.path>`.
    pub fn from_value(
        value: serde_yaml::Value,
        file: &Path,
        at: &str,
    ) -> Result<MeshConfig, ConfigError> {
        let (value, prefix) = crate::mesh_shape::unwrap(value, file)?;
        if value.is_null() {
            return Ok(MeshConfig::default());
        }
        let prefix = match (at.is_empty(), prefix.is_empty()) {
            (true, _) => prefix,
            (false, true) => at.to_string(),
            (false, false) => format!("{at}.{prefix}"),
        };
        trustmesh_config::load::from_value(value, file, &prefix)
    }

    /// [`MeshConfig::parse`] for text that has no file (tests, examples, the inline `mesh:`
    /// of a proxy config is given its own name by its caller).
    pub fn from_yaml_str(text: &str) -> Result<MeshConfig, ConfigError> {
        MeshConfig::parse(text, Path::new("(mesh config)"))
    }

    /// Every trust domain a policy principal may be rewritten into: local first, then aliases.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.trust_domain.as_str())
            .chain(self.trust_domain_aliases.iter().map(String::as_str))
    }

    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_traffic_policy_defaults_to_allow_any_and_reads_registry_only() {
        let m = MeshConfig::from_yaml_str("trustDomain: a.test").unwrap();
        assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::AllowAny);
        let m = MeshConfig::from_yaml_str(
            "meshConfig:\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n",
        )
        .unwrap();
        assert_eq!(m.outbound_traffic_policy.mode, OutboundMode::RegistryOnly);
        let e = MeshConfig::parse(
            "meshConfig:\n  outboundTrafficPolicy:\n    mode: DENY_ALL\n",
            Path::new("mesh.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("mesh.yaml: meshConfig.outboundTrafficPolicy.mode: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn h2_upgrade_policy_defaults_to_do_not_upgrade() {
        let m = MeshConfig::from_yaml_str("trustDomain: a.test").unwrap();
        assert_eq!(m.h2_upgrade_policy, H2UpgradePolicy::DoNotUpgrade);
        let m = MeshConfig::from_yaml_str("h2UpgradePolicy: UPGRADE").unwrap();
        assert_eq!(m.h2_upgrade_policy, H2UpgradePolicy::Upgrade);
        let e = MeshConfig::parse("h2UpgradePolicy: ALWAYS", Path::new("mesh.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("mesh.yaml: h2UpgradePolicy: unknown variant `ALWAYS`"),
            "{e}"
        );
    }
}
