//! CUSTOM action glue: one ext_authz client per `envoyExtAuthzGrpc` extension provider of the
//! mesh config, and the call made when a CUSTOM policy matches a request.
//!
//! A provider that cannot be used (unknown name, HTTP flavour, bad address) fails closed with a
//! 403, matching Istio, which rejects requests when a CUSTOM policy's provider is unusable.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use trustmesh_policy::MeshConfig;

use crate::extauthz::{parse_status_on_error, CheckInput, ExtAuthzClient, ExtAuthzOutcome};
use crate::http::{text, Body};
use crate::inbound::ConnCtx;
use crate::snapshot::Snapshot;

/// Istio's default `envoyExtAuthzGrpc.timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub enum Outcome {
    /// Forward, after applying the outcome's header changes.
    Allow(ExtAuthzOutcome),
    Deny(http::Response<Body>),
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

pub async fn check(
    snap: &Snapshot,
    provider: &str,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
) -> Outcome {
    let Some(client) = snap.ext_authz.get(provider) else {
        tracing::warn!(
            provider,
            "CUSTOM policy names an unusable ext_authz provider; denying"
        );
        return Outcome::Deny(text(StatusCode::FORBIDDEN, "RBAC: access denied"));
    };
    let source_principal = ctx.peer.as_ref().map(|p| p.id.to_string());
    let own = snap.own_id.to_string();
    let host = crate::http::authority(req).unwrap_or_default();
    let protocol = match req.version() {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let input = CheckInput {
        source_addr: Some(ctx.source),
        source_principal: source_principal.as_deref(),
        destination_addr: Some(ctx.local),
        destination_principal: Some(&own),
        method: req.method().as_str(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        host: &host,
        scheme: if ctx.tls { "https" } else { "http" },
        protocol,
        headers: req.headers(),
    };
    match client.check(&input).await {
        allow @ ExtAuthzOutcome::Allow { .. } => Outcome::Allow(allow),
        ExtAuthzOutcome::Deny {
            status,
            body,
            headers,
            error,
        } => {
            if let Some(e) = error {
                tracing::warn!(provider, error = %e, "ext_authz failed closed");
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = crate::http::bytes_response(status, bytes::Bytes::from(body));
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().append(k, v);
                }
            }
            Outcome::Deny(resp)
        }
    }
}
