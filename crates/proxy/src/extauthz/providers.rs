//! One ext_authz client per `envoyExtAuthzGrpc` extension provider of the mesh config, built
//! with every snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use trustmesh_policy::MeshConfig;

use super::client::{parse_status_on_error, ExtAuthzClient};

/// Istio's default `envoyExtAuthzGrpc.timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Builds a client per usable gRPC provider; errors name the provider.
pub fn clients(mesh: &MeshConfig) -> anyhow::Result<BTreeMap<String, ExtAuthzClient>> {
    let mut out = BTreeMap::new();
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let Some(g) = &p.envoy_ext_authz_grpc else {
            if p.envoy_ext_authz_http.is_some() {
                tracing::warn!(
                    provider = %p.name,
                    "envoyExtAuthzHttp providers are not supported; CUSTOM policies using it deny"
                );
            }
            continue;
        };
        let field = format!("mesh.extensionProviders[{i}] ({})", p.name);
        // Parsed with the mesh config (trustmesh_config's Duration), as `policy validate` does.
        let timeout = g.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get());
        let status = parse_status_on_error(g.status_on_error.as_deref())
            .map_err(|e| anyhow::anyhow!("{field}.statusOnError: {e}"))?;
        let target = if g.port == 0 {
            g.service.clone()
        } else {
            format!("{}:{}", g.service, g.port)
        };
        let client = ExtAuthzClient::new(&target, timeout, g.fail_open, status)
            .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
        out.insert(p.name.clone(), client);
    }
    Ok(out)
}
