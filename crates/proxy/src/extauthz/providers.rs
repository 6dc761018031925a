//! One client per ext_authz extension provider of the mesh config (`envoyExtAuthzGrpc` or
//! `envoyExtAuthzHttp`), built with every snapshot — and by `trustmesh validate`, so a
//! provider that validates is one the proxy can use. Errors name the field:
//! `mesh.extensionProviders[i] (name).field: ...`.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::http::{HeaderName, HeaderValue};
use trustmesh_policy::mesh::{ExtAuthzGrpc, ExtAuthzHttp, RequestBody};
use trustmesh_policy::MeshConfig;

use super::client::{parse_status_on_error, ExtAuthzClient};
use super::http::{HttpExtAuthzClient, HttpSettings};
use super::matcher::HeaderNames;
use super::request::{BodySettings, CheckInput};
use super::response::ExtAuthzOutcome;
use crate::reqbody::Seen;

/// Istio's default `timeout` for both kinds of provider.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A usable ext_authz provider.
#[derive(Clone, Debug)]
pub enum Provider {
    Grpc(ExtAuthzClient),
    Http(HttpExtAuthzClient),
}

impl Provider {
    /// Whether (and how much of) the request body the check needs.
    pub fn body_settings(&self) -> Option<&BodySettings> {
        match self {
            Provider::Grpc(c) => c.body_settings(),
            Provider::Http(c) => c.settings().body.as_ref(),
        }
    }

    /// Asks about one HTTP request.
    pub async fn check(&self, input: &CheckInput<'_>, body: Option<&Seen>) -> ExtAuthzOutcome {
        match self {
            Provider::Grpc(c) => c.check_buffered(input, body).await,
            Provider::Http(c) => c.check(input, body).await,
        }
    }

    /// The gRPC client, the only kind Istio applies to TCP connections.
    pub fn grpc(&self) -> Option<&ExtAuthzClient> {
        match self {
            Provider::Grpc(c) => Some(c),
            Provider::Http(_) => None,
        }
    }
}

/// Builds a client per ext_authz provider; errors name the provider and field.
pub fn providers(mesh: &MeshConfig) -> anyhow::Result<BTreeMap<String, Provider>> {
    let mut out = BTreeMap::new();
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let field = format!("mesh.extensionProviders[{i}] ({})", p.name);
        let built = match (&p.envoy_ext_authz_grpc, &p.envoy_ext_authz_http) {
            (Some(g), _) => grpc(g).map(Provider::Grpc),
            (None, Some(h)) => http(h).map(Provider::Http),
            (None, None) => continue,
        };
        let provider = built.map_err(|(at, e)| anyhow::anyhow!("{field}.{at}: {e}"))?;
        out.insert(p.name.clone(), provider);
    }
    Ok(out)
}

/// A failure: the field under the provider (`envoyExtAuthzHttp.port`) and the sentence.
type Failed = (String, String);

fn grpc(g: &ExtAuthzGrpc) -> Result<ExtAuthzClient, Failed> {
    let at = |f: &str| {
        format!(
            "envoyExtAuthzGrpc{}{f}",
            if f.is_empty() { "" } else { "." }
        )
    };
    // Parsed with the mesh config (trustmesh_config's Duration), as `policy validate` does.
    let timeout = g.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get());
    let status = parse_status_on_error(g.status_on_error.as_deref())
        .map_err(|e| (at("statusOnError"), e.to_string()))?;
    let target = if g.port == 0 {
        g.service.clone()
    } else {
        format!("{}:{}", g.service, g.port)
    };
    let mut client = ExtAuthzClient::new(&target, timeout, g.fail_open, status)
        .map_err(|e| (at(""), e.to_string()))?;
    if let Some(b) = &g.include_request_body_in_check {
        client =
            client.with_request_body(body(b).map_err(|e| (at("includeRequestBodyInCheck"), e))?);
    }
    Ok(client)
}

fn http(h: &ExtAuthzHttp) -> Result<HttpExtAuthzClient, Failed> {
    let at = |f: &str| format!("envoyExtAuthzHttp.{f}");
    if h.service.trim().is_empty() {
        return Err((
            at("service"),
            "the authorizer's host name or address is required".into(),
        ));
    }
    if !(1..=65535).contains(&h.port) {
        return Err((
            at("port"),
            format!("must be in the range [1, 65535], found {}", h.port),
        ));
    }
    let authority = format!("{}:{}", h.service.trim(), h.port);
    authority
        .parse::<hyper::http::uri::Authority>()
        .map_err(|e| {
            (
                at("service"),
                format!("{authority} is not a host and port: {e}"),
            )
        })?;
    let status_on_error = parse_status_on_error(h.status_on_error.as_deref())
        .map_err(|e| (at("statusOnError"), e.to_string()))?;
    let path_prefix = h.path_prefix.clone().unwrap_or_default();
    if !path_prefix.is_empty() {
        if !path_prefix.starts_with('/') {
            return Err((
                at("pathPrefix"),
                format!("must begin with \"/\", found \"{path_prefix}\""),
            ));
        }
        path_prefix
            .parse::<hyper::http::uri::PathAndQuery>()
            .map_err(|e| {
                (
                    at("pathPrefix"),
                    format!("\"{path_prefix}\" is not a URL path: {e}"),
                )
            })?;
    }
    let names = |f: &str, list: &[String]| HeaderNames::parse(list).map_err(|e| (at(f), e));
    // includeHeadersInCheck is the deprecated spelling, used only when the new one is unset.
    let request_headers = if h.include_request_headers_in_check.is_empty() {
        names("includeHeadersInCheck", &h.include_headers_in_check)?
    } else {
        names(
            "includeRequestHeadersInCheck",
            &h.include_request_headers_in_check,
        )?
    };
    let mut additional_headers = Vec::new();
    for (name, value) in &h.include_additional_headers_in_check {
        let field = || at(&format!("includeAdditionalHeadersInCheck.{name}"));
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| (field(), format!("\"{name}\" is not an HTTP header name")))?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            (
                field(),
                "the value is not a valid HTTP header value".to_string(),
            )
        })?;
        additional_headers.push((n, v));
    }
    let body = match &h.include_request_body_in_check {
        Some(b) => Some(body(b).map_err(|e| (at("includeRequestBodyInCheck"), e))?),
        None => None,
    };
    Ok(HttpExtAuthzClient::new(HttpSettings {
        authority,
        timeout: h.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
        path_prefix,
        fail_open: h.fail_open,
        status_on_error,
        request_headers,
        additional_headers,
        body,
        upstream_on_allow: names("headersToUpstreamOnAllow", &h.headers_to_upstream_on_allow)?,
        downstream_on_allow: names(
            "headersToDownstreamOnAllow",
            &h.headers_to_downstream_on_allow,
        )?,
        downstream_on_deny: names(
            "headersToDownstreamOnDeny",
            &h.headers_to_downstream_on_deny,
        )?,
    }))
}

/// Envoy requires `max_request_bytes` above 0.
fn body(b: &RequestBody) -> Result<BodySettings, String> {
    if b.max_request_bytes == 0 {
        return Err("maxRequestBytes must be greater than 0".into());
    }
    Ok(BodySettings::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(provider: &str) -> MeshConfig {
        MeshConfig::from_yaml_str(&format!(
            "extensionProviders:\n- name: authz\n  {provider}\n"
        ))
        .unwrap()
    }

    fn error(provider: &str) -> String {
        providers(&mesh(provider)).unwrap_err().to_string()
    }

    #[test]
    fn http_providers_are_built() {
        let built = providers(&mesh(
            "envoyExtAuthzHttp: {service: authz.foo.svc, port: 8000, pathPrefix: /check, \
             includeRequestHeadersInCheck: [x-user], includeRequestBodyInCheck: {maxRequestBytes: 10}}",
        ))
        .unwrap();
        let Provider::Http(c) = &built["authz"] else {
            panic!("not an HTTP provider")
        };
        assert_eq!(c.settings().authority, "authz.foo.svc:8000");
        assert_eq!(c.settings().timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.settings().status_on_error, 403);
        assert!(c.settings().request_headers.matches("X-User"));
        assert_eq!(
            built["authz"].body_settings().unwrap().max_request_bytes,
            10
        );
    }

    #[test]
    fn bad_http_fields_are_named() {
        let http = |f: &str| error(&format!("envoyExtAuthzHttp: {{service: a, port: 80, {f}}}"));
        assert!(error("envoyExtAuthzHttp: {service: a}")
            .starts_with("mesh.extensionProviders[0] (authz).envoyExtAuthzHttp.port: "));
        assert!(http("pathPrefix: check").contains("envoyExtAuthzHttp.pathPrefix: must begin"));
        assert!(http("statusOnError: \"abc\"").contains("envoyExtAuthzHttp.statusOnError"));
        assert!(http("headersToUpstreamOnAllow: [\"*\"]")
            .contains("envoyExtAuthzHttp.headersToUpstreamOnAllow"));
        assert!(http("includeRequestBodyInCheck: {maxRequestBytes: 0}")
            .contains("includeRequestBodyInCheck"));
        assert!(http("includeAdditionalHeadersInCheck: {\"bad name\": x}")
            .contains("includeAdditionalHeadersInCheck.bad name"));
    }
}
