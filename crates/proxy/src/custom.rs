//! CUSTOM action glue: the ext_authz call made when a CUSTOM policy matches a request, with the
//! provider [`crate::extauthz::providers`] built for it, and — when the provider includes the
//! body — the body read ahead for the check ([`crate::reqbody::buffer`]).
//!
//! A provider that cannot be used (unknown name, bad settings) fails closed with a 403,
//! matching Istio, which rejects requests when a CUSTOM policy's provider is unusable. Every
//! refusal and every fail-open comes with the sentence the access log gives as its `reason`.

use http::{Request, StatusCode};

use crate::conn::ConnCtx;
use crate::extauthz::{CheckInput, ConnInput, ExtAuthzOutcome};
use crate::reqbody::{AppBody, BufferError};
use crate::response::{text, Body};
use crate::snapshot::Snapshot;

pub enum Outcome {
    /// Forward, after applying the outcome's header changes; `failed_open` says why the
    /// authorizer gave no decision when `failOpen` let the request through.
    Allow {
        allowed: ExtAuthzOutcome,
        failed_open: Option<String>,
    },
    /// Answer the client with `response`; `why` is the access log's reason.
    Deny {
        response: http::Response<Body>,
        why: String,
    },
}

pub async fn check(
    snap: &Snapshot,
    provider: &str,
    ctx: &ConnCtx,
    req: &mut Request<AppBody>,
) -> Outcome {
    let Some(client) = snap.ext_authz.get(provider) else {
        return Outcome::Deny {
            response: text(StatusCode::FORBIDDEN, "RBAC: access denied"),
            why: format!(
                "the CUSTOM policy's provider {provider} is not an ext_authz provider of the \
                 mesh config; denied"
            ),
        };
    };
    let seen = match client.body_settings() {
        None => None,
        Some(settings) => {
            let body = std::mem::take(req.body_mut());
            let max = settings.max_request_bytes as usize;
            match crate::reqbody::buffer(body, max, settings.allow_partial_message).await {
                Ok((body, seen)) => {
                    *req.body_mut() = body;
                    Some(seen)
                }
                Err(e) => {
                    let status = match e {
                        BufferError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                        BufferError::Read(_) => StatusCode::BAD_REQUEST,
                    };
                    return Outcome::Deny {
                        response: text(status, status.canonical_reason().unwrap_or_default()),
                        why: format!("CUSTOM provider {provider} was not asked: {e}"),
                    };
                }
            }
        }
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
    match client.check(&input, seen.as_ref()).await {
        ExtAuthzOutcome::Allow {
            error: Some(error), ..
        } => Outcome::Allow {
            // Nothing to apply: the authorizer said nothing.
            allowed: ExtAuthzOutcome::Allow {
                headers_to_add: Vec::new(),
                headers_to_remove: Vec::new(),
                response_headers_to_add: Vec::new(),
                failed_open: true,
                error: None,
            },
            failed_open: Some(format!(
                "CUSTOM provider {provider} gave no decision ({error}); failOpen let the \
                 request through"
            )),
        },
        allowed @ ExtAuthzOutcome::Allow { .. } => Outcome::Allow {
            allowed,
            failed_open: None,
        },
        ExtAuthzOutcome::Deny {
            status,
            body,
            headers,
            error,
        } => {
            let why = match error {
                Some(e) => format!(
                    "CUSTOM provider {provider} gave no decision ({e}); denied with its \
                     statusOnError {status}"
                ),
                None => format!("CUSTOM provider {provider} denied the request with {status}"),
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut response = crate::response::bytes_response(status, bytes::Bytes::from(body));
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().append(k, v);
                }
            }
            Outcome::Deny { response, why }
        }
    }
}

/// Envoy's network ext_authz filter for a TCP connection a CUSTOM policy matched: a
/// `CheckRequest` with the connection's attributes only. `Ok` admits the connection (with the
/// sentence for the log), `Err` refuses it (with why). Only gRPC providers apply to TCP, as in
/// Istio (the policy crate already skips CUSTOM policies of HTTP providers on TCP ports).
pub async fn check_connection(
    snap: &Snapshot,
    provider: &str,
    ctx: &ConnCtx,
) -> Result<String, String> {
    let Some(client) = snap.ext_authz.get(provider).and_then(|p| p.grpc()) else {
        return Err(format!(
            "the CUSTOM policy's provider {provider} is not an envoyExtAuthzGrpc provider of the \
             mesh config, and only those apply to TCP; denied"
        ));
    };
    let source_principal = ctx.peer.as_ref().map(|p| p.id.to_string());
    let own = snap.own_id.to_string();
    let input = ConnInput {
        source_addr: ctx.source,
        source_principal: source_principal.as_deref(),
        destination_addr: ctx.local,
        destination_principal: Some(&own),
    };
    match client.check_connection(&input).await {
        ExtAuthzOutcome::Allow {
            error: Some(error), ..
        } => Ok(format!(
            "CUSTOM provider {provider} gave no decision ({error}); failOpen let the connection \
             through"
        )),
        ExtAuthzOutcome::Allow { .. } => {
            Ok(format!("CUSTOM provider {provider} allowed the connection"))
        }
        ExtAuthzOutcome::Deny {
            error: Some(error), ..
        } => Err(format!(
            "CUSTOM provider {provider} gave no decision ({error}); the connection is closed"
        )),
        ExtAuthzOutcome::Deny { .. } => Err(format!(
            "CUSTOM provider {provider} denied the connection; it is closed"
        )),
    }
}
