//! CUSTOM action glue: the ext_authz call made when a CUSTOM policy matches a request, with the
//! client [`crate::extauthz::clients`] built for its provider.
//!
//! A provider that cannot be used (unknown name, HTTP flavour, bad address) fails closed with a
//! 403, matching Istio, which rejects requests when a CUSTOM policy's provider is unusable.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::conn::ConnCtx;
use crate::extauthz::{CheckInput, ExtAuthzOutcome};
use crate::response::{text, Body};
use crate::snapshot::Snapshot;

pub enum Outcome {
    /// Forward, after applying the outcome's header changes.
    Allow(ExtAuthzOutcome),
    Deny(http::Response<Body>),
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
    let host = crate::normalize::authority(req).unwrap_or_default();
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
            let mut resp = crate::response::bytes_response(status, bytes::Bytes::from(body));
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
