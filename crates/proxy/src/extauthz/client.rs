//! The gRPC client for Istio's CUSTOM action (`envoyExtAuthzGrpc` extension providers).
//!
//! The channel is lazy: building the client never touches the network (nor needs a Tokio
//! runtime, so configuration can be validated anywhere); the channel is created on the first
//! check and then shared by all clones. A proxy therefore starts even while its authorizer is
//! down, and requests then follow `failOpen`. Every check is bounded by
//! the provider's `timeout` (sent to the server as `grpc-timeout` too), and any failure —
//! unreachable, timed out, non-OK gRPC status — becomes an allow when `failOpen` is set and
//! otherwise a deny with `statusOnError` (Istio's default: 403).

use super::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use super::proto::envoy::service::auth::v3::CheckRequest;
use super::request::{build, build_connection, BodySettings, CheckInput, ConnInput};
use super::response::{outcome_from, ExtAuthzOutcome};
use hyper::http::HeaderName;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Istio's `statusOnError` default.
pub const DEFAULT_STATUS_ON_ERROR: u16 = 403;

#[derive(Debug, thiserror::Error)]
pub enum ExtAuthzError {
    #[error("invalid ext_authz target \"{target}\": {reason}")]
    InvalidTarget { target: String, reason: String },
    #[error("invalid statusOnError \"{0}\": must be an HTTP status code")]
    InvalidStatus(String),
    #[error("invalid header name \"{0}\"")]
    InvalidHeader(String),
}

/// A client for one ext_authz provider.
#[derive(Clone, Debug)]
pub struct ExtAuthzClient {
    endpoint: Endpoint,
    channel: Arc<OnceLock<AuthorizationClient<Channel>>>,
    target: String,
    timeout: Duration,
    fail_open: bool,
    status_on_error: u16,
    allowed_headers: Option<Vec<HeaderName>>,
    body: Option<BodySettings>,
}

impl ExtAuthzClient {
    /// `target` is `host:port` or a `http://host:port` URL (plaintext gRPC, as Istio's
    /// `envoyExtAuthzGrpc` uses toward a local or in-mesh authorizer).
    pub fn new(
        target: &str,
        timeout: Duration,
        fail_open: bool,
        status_on_error: u16,
    ) -> Result<Self, ExtAuthzError> {
        let url = if target.contains("://") {
            target.to_string()
        } else {
            format!("http://{target}")
        };
        let invalid = |reason: String| ExtAuthzError::InvalidTarget {
            target: target.to_string(),
            reason,
        };
        if !(100..=599).contains(&status_on_error) {
            return Err(ExtAuthzError::InvalidStatus(status_on_error.to_string()));
        }
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        Ok(ExtAuthzClient {
            endpoint,
            channel: Arc::new(OnceLock::new()),
            target: url,
            timeout,
            fail_open,
            status_on_error,
            allowed_headers: None,
            body: None,
        })
    }

    /// Sends only these request headers (plus the pseudo-headers) instead of all of them.
    pub fn with_allowed_headers<I, S>(mut self, names: I) -> Result<Self, ExtAuthzError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for name in names {
            let name = name.as_ref();
            list.push(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| ExtAuthzError::InvalidHeader(name.to_string()))?,
            );
        }
        self.allowed_headers = Some(list);
        Ok(self)
    }

    /// Sends the request body too (Istio's `includeRequestBodyInCheck`); see
    /// [`ExtAuthzClient::check_with_body`].
    pub fn with_request_body(mut self, settings: BodySettings) -> Self {
        self.body = Some(settings);
        self
    }

    /// The body settings, so the caller knows whether (and how much) to buffer.
    pub fn body_settings(&self) -> Option<&BodySettings> {
        self.body.as_ref()
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Asks the authorizer about one request. Never fails: errors are turned into the
    /// provider's configured failure behaviour.
    pub async fn check(&self, input: &CheckInput<'_>) -> ExtAuthzOutcome {
        self.check_with_body(input, None).await
    }

    /// Like [`Self::check`], with the buffered request body (or its first bytes) when the
    /// provider sends bodies. As in Envoy, a body longer than `max_request_bytes` is answered
    /// with 413 unless `allow_partial_message`, in which case it is cut to that size and the
    /// authorizer sees `x-envoy-auth-partial-body: true`.
    pub async fn check_with_body(
        &self,
        input: &CheckInput<'_>,
        body: Option<&[u8]>,
    ) -> ExtAuthzOutcome {
        let body = match (&self.body, body) {
            (Some(settings), Some(bytes)) => {
                let max = settings.max_request_bytes as usize;
                if bytes.len() > max && !settings.allow_partial_message {
                    return ExtAuthzOutcome::Deny {
                        status: 413,
                        body: "Payload Too Large".into(),
                        headers: Vec::new(),
                        error: None,
                    };
                }
                Some((&bytes[..bytes.len().min(max)], bytes.len() > max, settings))
            }
            _ => None,
        };
        self.ask(build(input, self.allowed_headers.as_deref(), body))
            .await
    }

    /// [`Self::check`] with what the proxy buffered of the body ([`crate::reqbody::buffer`],
    /// which already refused a body too long to send whole).
    pub async fn check_buffered(
        &self,
        input: &CheckInput<'_>,
        seen: Option<&crate::reqbody::Seen>,
    ) -> ExtAuthzOutcome {
        let body = match (&self.body, seen) {
            (Some(settings), Some(seen)) => Some((&seen.bytes[..], seen.partial, settings)),
            _ => None,
        };
        self.ask(build(input, self.allowed_headers.as_deref(), body))
            .await
    }

    /// Envoy's network ext_authz filter: one check per TCP connection, with the connection's
    /// attributes only (no HTTP request). OK admits the connection; anything else refuses it;
    /// an error follows `failOpen`.
    pub async fn check_connection(&self, input: &ConnInput<'_>) -> ExtAuthzOutcome {
        self.ask(build_connection(input)).await
    }

    async fn ask(&self, check: CheckRequest) -> ExtAuthzOutcome {
        let mut request = tonic::Request::new(check);
        request.set_timeout(self.timeout);
        let mut client = self
            .channel
            .get_or_init(|| AuthorizationClient::new(self.endpoint.connect_lazy()))
            .clone();
        let result = tokio::time::timeout(self.timeout, client.check(request)).await;
        let error = match result {
            Ok(Ok(response)) => return outcome_from(response.into_inner()),
            Ok(Err(status)) => grpc_failure(&self.target, &status),
            Err(_) => format!(
                "{} did not answer within the {} timeout",
                self.target,
                trustmesh_config::format_go(self.timeout)
            ),
        };
        tracing::warn!(target = %self.target, %error, fail_open = self.fail_open, "ext_authz error");
        on_error(error, self.fail_open, self.status_on_error)
    }
}

/// A failed gRPC call in words: tonic's own text of a status is its Debug form.
fn grpc_failure(target: &str, status: &tonic::Status) -> String {
    let code = status.code();
    let mut text = format!(
        "asking {target} failed: gRPC status {} ({})",
        code as i32,
        code.description()
    );
    if !status.message().is_empty() {
        text.push_str(&format!(": {}", status.message()));
    }
    text
}

/// The provider's failure behaviour for a check that got no decision: allow under
/// `failOpen`, otherwise deny with `statusOnError`; `error` says why, for the access log.
pub(crate) fn on_error(error: String, fail_open: bool, status_on_error: u16) -> ExtAuthzOutcome {
    if fail_open {
        ExtAuthzOutcome::Allow {
            headers_to_add: Vec::new(),
            headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            failed_open: true,
            error: Some(error),
        }
    } else {
        ExtAuthzOutcome::Deny {
            status: status_on_error,
            body: String::new(),
            headers: Vec::new(),
            error: Some(error),
        }
    }
}

/// Parses Istio's `statusOnError` string (e.g. `"503"`); `None` gives the default 403.
pub fn parse_status_on_error(value: Option<&str>) -> Result<u16, ExtAuthzError> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_STATUS_ON_ERROR),
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| ExtAuthzError::InvalidStatus(text.to_string())),
    }
}
