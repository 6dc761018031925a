//! Which document shapes hold a mesh config, and where in them it sits.
//!
//! Users point `--mesh` at whatever file they already have: a bare `meshConfig` document, a
//! `meshConfig:` wrapper, an IstioOperator (`spec.meshConfig`), the `istio` ConfigMap
//! (`data.mesh`, a YAML string), the Sail operator's `Istio` (`spec.values.meshConfig`) or
//! Kyma's `Istio` resource (`spec.config`). A Kubernetes object of any other kind is refused
//! with the list of shapes read: read as a bare mesh config, its unknown fields would be
//! tolerated and the trust domain would silently stay `cluster.local` — the wrong identity for
//! every workload, and no error anywhere.

use serde_yaml::{Mapping, Value};
use trustmesh_config::ConfigError;

use std::path::Path;

/// The shapes, for error messages.
const SHAPES: &str = "a bare meshConfig document, `meshConfig:`, an IstioOperator \
                      (spec.meshConfig), the istio ConfigMap (data.mesh), the Sail operator's \
                      Istio (spec.values.meshConfig) or Kyma's Istio (spec.config)";

/// Kyma `Istio` `spec.config` keys that configure gateways, telemetry or installation, none of
/// which a sidecar's security depends on: accepted so a real Kyma resource loads.
const KYMA_NOT_SECURITY: &[&str] = &[
    "numTrustedProxies",
    "gatewayExternalTrafficPolicy",
    "telemetry",
    "forwardClientCertDetails",
];

/// The mesh config inside `value`, and the field path it was found at (for error messages).
pub(crate) fn unwrap(value: Value, file: &Path) -> Result<(Value, String), ConfigError> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let kind = text(&value, "kind");
    let api = text(&value, "apiVersion").unwrap_or_default();
    let group = api.split('/').next().unwrap_or_default().to_string();
    let at = |v: &Value, path: &[&str]| path.iter().try_fold(v.clone(), |v, k| v.get(*k).cloned());
    // Without a kind, the envelopes are recognised by their fields, as before kinds were read.
    let kind = kind.or_else(|| {
        if value.get("data").and_then(|d| d.get("mesh")).is_some() {
            Some("ConfigMap".into())
        } else if at(&value, &["spec", "meshConfig"]).is_some() {
            Some("IstioOperator".into())
        } else {
            None
        }
    });
    match kind.as_deref() {
        None => {}
        Some("ConfigMap") => {
            return match value.get("data").and_then(|d| d.get("mesh")) {
                Some(Value::String(mesh)) => {
                    let inner = serde_yaml::from_str(mesh).map_err(|e| {
                        ConfigError::field(file, "data.mesh", format!("not valid YAML: {e}"))
                    })?;
                    Ok((inner, "data.mesh".into()))
                }
                Some(_) => Err(ConfigError::field(
                    file,
                    "data.mesh",
                    "must be a string holding the mesh config's YAML, as in the istio ConfigMap",
                )),
                None => Err(ConfigError::field(
                    file,
                    "data.mesh",
                    "missing: a ConfigMap holds the mesh config as a YAML string under \
                     data.mesh (the istio ConfigMap); this one has none",
                )),
            };
        }
        // An IstioOperator without meshConfig installs Istio's defaults.
        Some("IstioOperator") => {
            let m = at(&value, &["spec", "meshConfig"]).unwrap_or(Value::Null);
            return Ok((m, "spec.meshConfig".into()));
        }
        Some("Istio") if group == "operator.kyma-project.io" => {
            let config = at(&value, &["spec", "config"]).unwrap_or(Value::Null);
            return Ok((kyma(config, file)?, "spec.config".into()));
        }
        Some("Istio") if group == "sailoperator.io" || group == "operator.istio.io" => {
            let m = at(&value, &["spec", "values", "meshConfig"]).unwrap_or(Value::Null);
            return Ok((m, "spec.values.meshConfig".into()));
        }
        Some(other) => {
            let api = if api.is_empty() {
                "no apiVersion".to_string()
            } else {
                api
            };
            return Err(ConfigError::field(
                file,
                "kind",
                format!("a {other} ({api}) is not a mesh config; trustmesh reads {SHAPES}"),
            ));
        }
    }
    if let Some(m) = value.get("meshConfig") {
        return Ok((m.clone(), "meshConfig".into()));
    }
    Ok((value, String::new()))
}

/// Kyma's `spec.config` as a mesh config: `trustDomain` and `trustDomainAliases` as they are,
/// `authorizers` as `envoyExtAuthzHttp` extension providers (Kyma's operator renders them that
/// way into Istio's mesh config); gateway and telemetry settings accepted and not used; any
/// other key refused, so nothing in it is silently ignored.
fn kyma(config: Value, file: &Path) -> Result<Value, ConfigError> {
    let Value::Mapping(config) = config else {
        return match config {
            Value::Null => Ok(Value::Null),
            _ => Err(ConfigError::field(file, "spec.config", "must be a mapping")),
        };
    };
    let mut mesh = Mapping::new();
    for (k, v) in config {
        let key = k.as_str().unwrap_or_default().to_string();
        match key.as_str() {
            "trustDomain" | "trustDomainAliases" => {
                mesh.insert(k, v);
            }
            "authorizers" => {
                let providers = authorizers(v, file)?;
                mesh.insert("extensionProviders".into(), providers);
            }
            k if KYMA_NOT_SECURITY.contains(&k) => {}
            other => {
                return Err(ConfigError::field(
                    file,
                    format!("spec.config.{other}"),
                    format!(
                        "not a setting of Kyma's Istio resource trustmesh knows; it reads \
                         trustDomain, trustDomainAliases and authorizers, and accepts {}",
                        KYMA_NOT_SECURITY.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Value::Mapping(mesh))
}

/// Kyma authorizers → Istio `extensionProviders[].envoyExtAuthzHttp`.
fn authorizers(v: Value, file: &Path) -> Result<Value, ConfigError> {
    let Value::Sequence(list) = v else {
        return Err(ConfigError::field(
            file,
            "spec.config.authorizers",
            "must be a list of authorizers",
        ));
    };
    let mut out = Vec::new();
    for (i, a) in list.into_iter().enumerate() {
        let at = format!("spec.config.authorizers[{i}]");
        let Value::Mapping(mut a) = a else {
            return Err(ConfigError::field(file, at.as_str(), "must be a mapping"));
        };
        let Some(name) = a.remove("name") else {
            return Err(ConfigError::field(file, format!("{at}.name"), "missing"));
        };
        let mut http = Mapping::new();
        for key in ["service", "port", "pathPrefix", "timeout"] {
            if let Some(v) = a.remove(key) {
                http.insert(key.into(), v);
            }
        }
        if let Some(headers) = a.remove("headers") {
            // (Kyma's path, Istio's field)
            let moves = [
                (["inCheck", "include"], "includeRequestHeadersInCheck"),
                (["inCheck", "add"], "includeAdditionalHeadersInCheck"),
                (["toUpstream", "onAllow"], "headersToUpstreamOnAllow"),
                (["toDownstream", "onAllow"], "headersToDownstreamOnAllow"),
                (["toDownstream", "onDeny"], "headersToDownstreamOnDeny"),
            ];
            for (path, field) in moves {
                if let Some(v) = headers.get(path[0]).and_then(|h| h.get(path[1])) {
                    http.insert(field.into(), v.clone());
                }
            }
        }
        if let Some((k, _)) = a.into_iter().next() {
            let k = k.as_str().unwrap_or("?").to_string();
            return Err(ConfigError::field(
                file,
                format!("{at}.{k}"),
                "not a field of a Kyma authorizer (name, service, port, headers, pathPrefix, \
                 timeout)",
            ));
        }
        let mut provider = Mapping::new();
        provider.insert("name".into(), name);
        provider.insert("envoyExtAuthzHttp".into(), Value::Mapping(http));
        out.push(Value::Mapping(provider));
    }
    Ok(Value::Sequence(out))
}
