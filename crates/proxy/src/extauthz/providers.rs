//! One ext_authz client per `envoyExtAuthzGrpc` extension provider of the mesh config, built
//! with every snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use trustmesh_policy::MeshConfig;

use super::client::{parse_status_on_error, ExtAuthzClient};

/// Istio's default `envoyExtAuthzGrpc.timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Parses `"1.5s"`, `"200ms"`, `"2m"` (protobuf Duration text as Istio accepts it).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * unit))
}

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
        let timeout = match &g.timeout {
            Some(t) => parse_duration(t)
                .ok_or_else(|| anyhow::anyhow!("{field}.timeout: {t:?} is not a duration"))?,
            None => DEFAULT_TIMEOUT,
        };
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

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
