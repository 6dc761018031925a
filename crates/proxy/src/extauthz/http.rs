//! The HTTP client for Istio's CUSTOM action with an `envoyExtAuthzHttp` provider: Envoy's
//! ext_authz "HTTP service", as Istio configures it.
//!
//! The check is a plain HTTP/1.1 request to `service:port` with the client request's method,
//! its path behind `pathPrefix`, its `Host`, and — of its headers — `Authorization` plus those
//! `includeRequestHeadersInCheck` names (`includeAdditionalHeadersInCheck` adds fixed ones).
//! `Content-Length` is the length of the body sent: 0, or the buffered client body when
//! `includeRequestBodyInCheck` is set (with `x-envoy-auth-partial-body`). The answer:
//! - 200 allows; its headers named by `headersToUpstreamOnAllow` replace the request's,
//!   `headersToDownstreamOnAllow` ones are added to the client's response, and the names in
//!   `x-envoy-auth-headers-to-remove` are removed from the request;
//! - a 5xx, no answer within `timeout` (Istio's default: 600s), or no connection at all is an
//!   error: allowed when `failOpen`, otherwise answered with `statusOnError` (default 403);
//! - any other status denies with that status and body, and the headers named by
//!   `headersToDownstreamOnDeny` (all but `Host` when the list is empty; with a list,
//!   `WWW-Authenticate` and `Location` always).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::matcher::HeaderNames;
use super::request::{BodySettings, CheckInput};
use super::response::{ExtAuthzOutcome, HeaderAction, HeaderMutation};
use crate::reqbody::Seen;

/// Envoy's header naming the request headers to remove on allow.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";
/// Envoy's header telling the authorizer the body it got was cut.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// An `envoyExtAuthzHttp` provider's settings, as parsed from the mesh config.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// `service:port`.
    pub authority: String,
    pub timeout: Duration,
    pub path_prefix: String,
    pub fail_open: bool,
    pub status_on_error: u16,
    pub request_headers: HeaderNames,
    pub additional_headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<BodySettings>,
    pub upstream_on_allow: HeaderNames,
    pub downstream_on_allow: HeaderNames,
    pub downstream_on_deny: HeaderNames,
}

/// A client for one `envoyExtAuthzHttp` provider. Building it touches no network and needs no
/// runtime (so `--check` and `validate` can build it); connections are pooled per provider.
#[derive(Clone, Debug)]
pub struct HttpExtAuthzClient {
    client: Client<HttpConnector, Full<Bytes>>,
    settings: HttpSettings,
}

impl HttpExtAuthzClient {
    pub fn new(settings: HttpSettings) -> HttpExtAuthzClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpExtAuthzClient { client, settings }
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Asks the authorizer about one request, with the body the proxy buffered for it (when
    /// the provider includes bodies). Never fails: errors become the provider's configured
    /// failure behaviour.
    pub async fn check(&self, input: &CheckInput<'_>, body: Option<&Seen>) -> ExtAuthzOutcome {
        let s = &self.settings;
        let asked = async {
            let resp = self
                .client
                .request(self.request(input, body)?)
                .await
                .map_err(|e| {
                    format!(
                        "asking {} failed: {}",
                        s.authority,
                        crate::upstream::error_chain(&e)
                    )
                })?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading the answer of {} failed: {e}", s.authority))?
                .to_bytes();
            self.outcome(parts.status, &parts.headers, body)
        };
        let error = match tokio::time::timeout(s.timeout, asked).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(e)) => e,
            Err(_) => format!(
                "{} did not answer within the {} timeout",
                s.authority,
                trustmesh_config::format_go(s.timeout)
            ),
        };
        tracing::warn!(target = %s.authority, %error, fail_open = s.fail_open, "ext_authz error");
        super::client::on_error(error, s.fail_open, s.status_on_error)
    }

    /// The check request Envoy's HTTP service sends for `input`.
    fn request(
        &self,
        input: &CheckInput<'_>,
        body: Option<&Seen>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let s = &self.settings;
        let uri = format!("http://{}{}{}", s.authority, s.path_prefix, input.path);
        let method = Method::from_bytes(input.method.as_bytes()).map_err(|_| {
            format!(
                "the method \"{}\" cannot be sent to the authorizer",
                input.method
            )
        })?;
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .body(Full::new(body.map(|b| b.bytes.clone()).unwrap_or_default()))
            .map_err(|e| format!("the check request to {uri} cannot be built: {e}"))?;
        let headers = req.headers_mut();
        for name in input.headers.keys() {
            if !(name == header::AUTHORIZATION || s.request_headers.matches(name.as_str()))
                || is_framing(name)
                || name == header::HOST
            {
                continue;
            }
            let joined = input
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b","[..]);
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(name.clone(), v);
            }
        }
        if let Ok(host) = HeaderValue::from_str(input.host) {
            if !input.host.is_empty() {
                headers.insert(header::HOST, host);
            }
        }
        for (name, value) in &s.additional_headers {
            headers.insert(name.clone(), value.clone());
        }
        let length = body.map_or(0, |b| b.bytes.len());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let (Some(_), Some(seen)) = (&s.body, body) {
            let partial = if seen.partial { "true" } else { "false" };
            headers.insert(PARTIAL_BODY, HeaderValue::from_static(partial));
        }
        Ok(req)
    }

    /// The authorizer's answer as a decision, or `Err` for an answer that is an error (5xx).
    fn outcome(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<ExtAuthzOutcome, String> {
        let s = &self.settings;
        if status.is_server_error() {
            return Err(format!("{} answered {}", s.authority, status_text(status)));
        }
        let answered: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(name, _)| *name != HEADERS_TO_REMOVE)
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        if status == StatusCode::OK {
            let pick = |names: &HeaderNames, action| {
                answered
                    .iter()
                    .filter(|(name, _)| names.matches(name))
                    .map(|(name, value)| HeaderMutation {
                        name: name.to_string(),
                        value: value.to_string(),
                        action,
                    })
                    .collect::<Vec<_>>()
            };
            let headers_to_remove = headers
                .get_all(HEADERS_TO_REMOVE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect();
            return Ok(ExtAuthzOutcome::Allow {
                headers_to_add: pick(&s.upstream_on_allow, HeaderAction::Overwrite),
                headers_to_remove,
                response_headers_to_add: pick(&s.downstream_on_allow, HeaderAction::Append),
                failed_open: false,
                error: None,
            });
        }
        let to_client = |name: &str| {
            let name = HeaderName::from_bytes(name.as_bytes()).ok();
            let Some(name) = name else { return false };
            if is_framing(&name) {
                return false;
            }
            if s.downstream_on_deny.is_empty() {
                name != header::HOST
            } else {
                s.downstream_on_deny.matches(name.as_str())
                    || name == header::WWW_AUTHENTICATE
                    || name == header::LOCATION
            }
        };
        Ok(ExtAuthzOutcome::Deny {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
            headers: answered
                .iter()
                .filter(|(name, _)| to_client(name))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            error: None,
        })
    }
}

/// Headers that describe one hop's message framing: never copied between the client's
/// request, the check and the answers (each message gets its own).
fn is_framing(name: &HeaderName) -> bool {
    [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::UPGRADE,
        header::TRAILER,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// `503 Service Unavailable`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(deny: &[&str]) -> HttpExtAuthzClient {
        let list = |l: &[&str]| {
            HeaderNames::parse(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        HttpExtAuthzClient::new(HttpSettings {
            authority: "authz:8000".into(),
            timeout: Duration::from_secs(1),
            status_on_error: 403,
            upstream_on_allow: list(&["x-user"]),
            downstream_on_allow: list(&["x-said-*"]),
            downstream_on_deny: list(deny),
            ..Default::default()
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn ok_picks_listed_headers_and_removals() {
        let h = headers(&[
            ("x-user", "alice"),
            ("x-other", "no"),
            ("x-said-hi", "yes"),
            (HEADERS_TO_REMOVE, "cookie, x-secret"),
        ]);
        let out = client(&[])
            .outcome(StatusCode::OK, &h, Bytes::new())
            .unwrap();
        let ExtAuthzOutcome::Allow {
            headers_to_add,
            headers_to_remove,
            response_headers_to_add,
            ..
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(headers_to_add.len(), 1);
        assert_eq!(
            (headers_to_add[0].name.as_str(), headers_to_add[0].action),
            ("x-user", HeaderAction::Overwrite)
        );
        assert_eq!(headers_to_remove, ["cookie", "x-secret"]);
        assert_eq!(response_headers_to_add[0].action, HeaderAction::Append);
    }

    #[test]
    fn deny_keeps_status_body_and_headers_by_list() {
        let h = headers(&[
            ("x-why", "no"),
            ("host", "h"),
            ("content-length", "2"),
            ("location", "/login"),
        ]);
        let all = client(&[])
            .outcome(StatusCode::UNAUTHORIZED, &h, Bytes::from("no"))
            .unwrap();
        let ExtAuthzOutcome::Deny {
            status,
            body,
            headers,
            ..
        } = all
        else {
            panic!()
        };
        assert_eq!((status, body.as_str()), (401, "no"));
        let names: Vec<_> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-why", "location"]);
        let listed = client(&["x-nothing"])
            .outcome(StatusCode::FORBIDDEN, &h, Bytes::new())
            .unwrap();
        let ExtAuthzOutcome::Deny { headers, .. } = listed else {
            panic!()
        };
        assert_eq!(headers, [("location".to_string(), "/login".to_string())]);
    }

    #[test]
    fn server_errors_are_errors() {
        let out = client(&[]).outcome(StatusCode::BAD_GATEWAY, &HeaderMap::new(), Bytes::new());
        assert_eq!(out.unwrap_err(), "authz:8000 answered 502 Bad Gateway");
    }
}
