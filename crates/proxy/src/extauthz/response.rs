//! Turning a `CheckResponse` (or the lack of one) into what the proxy does next.
//!
//! Mirrors Envoy's ext_authz filter: status code 0 (OK) allows — including a response that
//! carries no status at all, since proto3 decodes a missing status as code 0 — and anything
//! else denies, with the HTTP status from `denied_response` (403 when it gives none).

use super::proto::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use super::proto::envoy::service::auth::v3::{check_response::HttpResponse, CheckResponse};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};

/// How one header from the authorizer is merged into a request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderAction {
    /// Add another value, keeping existing ones.
    Append,
    /// Add only if the header is absent.
    AddIfAbsent,
    /// Replace existing values, or add. Envoy's default for ext_authz responses.
    Overwrite,
    /// Replace only if the header already exists.
    OverwriteIfExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMutation {
    pub name: String,
    pub value: String,
    pub action: HeaderAction,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtAuthzOutcome {
    /// Forward the request after applying the header changes ([`ExtAuthzOutcome::apply_to_request`]).
    Allow {
        headers_to_add: Vec<HeaderMutation>,
        headers_to_remove: Vec<String>,
        /// Headers for the response sent back to the client.
        response_headers_to_add: Vec<HeaderMutation>,
        /// True when the authorizer failed and `failOpen` let the request through.
        failed_open: bool,
        /// Why the authorizer gave no decision, when `failOpen` let the request through.
        error: Option<String>,
    },
    /// Answer the client directly.
    Deny {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        /// Set when the deny comes from an error talking to the authorizer (timeout,
        /// unreachable) rather than from its decision.
        error: Option<String>,
    },
}

impl ExtAuthzOutcome {
    pub fn is_allow(&self) -> bool {
        matches!(self, ExtAuthzOutcome::Allow { .. })
    }

    /// Applies an `Allow`'s header changes to the request about to be forwarded. Pseudo-headers
    /// and `host` cannot be removed, as in Envoy. Invalid names/values are skipped.
    pub fn apply_to_request(&self, headers: &mut HeaderMap) {
        if let ExtAuthzOutcome::Allow {
            headers_to_add,
            headers_to_remove,
            ..
        } = self
        {
            apply_mutations(headers_to_add, headers);
            for name in headers_to_remove {
                if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
}

/// Applies mutations to a header map (also useful for `response_headers_to_add`).
pub fn apply_mutations(mutations: &[HeaderMutation], headers: &mut HeaderMap) {
    for m in mutations {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(m.name.as_bytes()),
            HeaderValue::from_str(&m.value),
        ) else {
            continue;
        };
        match m.action {
            HeaderAction::Append => {
                headers.append(name, value);
            }
            HeaderAction::AddIfAbsent => {
                headers.entry(name).or_insert(value);
            }
            HeaderAction::Overwrite => {
                headers.insert(name, value);
            }
            HeaderAction::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

pub(crate) fn outcome_from(response: CheckResponse) -> ExtAuthzOutcome {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        let (headers_to_add, headers_to_remove, response_headers_to_add) =
            match response.http_response {
                Some(HttpResponse::OkResponse(ok)) => (
                    mutations(&ok.headers),
                    ok.headers_to_remove,
                    mutations(&ok.response_headers_to_add),
                ),
                _ => Default::default(),
            };
        return ExtAuthzOutcome::Allow {
            headers_to_add,
            headers_to_remove,
            response_headers_to_add,
            failed_open: false,
            error: None,
        };
    }
    let (status, body, headers) = match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied
                .status
                .map(|s| s.code)
                .filter(|c| (100..=599).contains(c))
                .map_or(403, |c| c as u16);
            let headers = mutations(&denied.headers)
                .into_iter()
                .map(|m| (m.name, m.value))
                .collect();
            (status, denied.body, headers)
        }
        _ => (403, String::new(), Vec::new()),
    };
    ExtAuthzOutcome::Deny {
        status,
        body,
        headers,
        error: None,
    }
}

fn mutations(options: &[HeaderValueOption]) -> Vec<HeaderMutation> {
    options
        .iter()
        .filter_map(|o| {
            let header = o.header.as_ref()?;
            let value = if header.raw_value.is_empty() {
                header.value.clone()
            } else {
                String::from_utf8(header.raw_value.clone()).ok()?
            };
            if value.is_empty() && !o.keep_empty_value {
                return None;
            }
            // The deprecated `append` wins when present; otherwise `append_action`, where the
            // zero value (indistinguishable from "unset") keeps ext_authz's documented default
            // of overwriting.
            let action = match (o.append, o.append_action()) {
                (Some(true), _) => HeaderAction::Append,
                (Some(false), _) => HeaderAction::Overwrite,
                (None, HeaderAppendAction::AddIfAbsent) => HeaderAction::AddIfAbsent,
                (None, HeaderAppendAction::OverwriteIfExists) => HeaderAction::OverwriteIfExists,
                (None, _) => HeaderAction::Overwrite,
            };
            Some(HeaderMutation {
                name: header.key.to_ascii_lowercase(),
                value,
                action,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extauthz::proto::envoy::config::core::v3::HeaderValue;
    use crate::extauthz::proto::envoy::r#type::v3::HttpStatus;
    use crate::extauthz::proto::envoy::service::auth::v3::{DeniedHttpResponse, OkHttpResponse};
    use crate::extauthz::proto::google::rpc::Status;

    fn hvo(key: &str, value: &str, append: Option<bool>) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                raw_value: vec![],
            }),
            append,
            ..Default::default()
        }
    }

    #[test]
    fn empty_response_allows_like_envoy() {
        assert!(outcome_from(CheckResponse::default()).is_allow());
    }

    #[test]
    fn ok_response_mutations_apply() {
        let outcome = outcome_from(CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![hvo("X-Set", "new", None), hvo("x-multi", "b", Some(true))],
                headers_to_remove: vec!["authorization".into(), ":path".into(), "host".into()],
                ..Default::default()
            })),
            ..Default::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-set", "old".parse().unwrap());
        headers.insert("x-multi", "a".parse().unwrap());
        headers.insert("authorization", "Bearer t".parse().unwrap());
        headers.insert("host", "svc".parse().unwrap());
        outcome.apply_to_request(&mut headers);
        assert_eq!(headers["x-set"], "new");
        assert_eq!(headers.get_all("x-multi").iter().count(), 2);
        assert!(!headers.contains_key("authorization"));
        assert!(headers.contains_key("host"));
    }

    #[test]
    fn denied_response_status_and_default() {
        let outcome = outcome_from(CheckResponse {
            status: Some(Status {
                code: 7,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![hvo("x-why", "nope", None)],
                body: "go away".into(),
            })),
            ..Default::default()
        });
        assert_eq!(
            outcome,
            ExtAuthzOutcome::Deny {
                status: 401,
                body: "go away".into(),
                headers: vec![("x-why".into(), "nope".into())],
                error: None
            }
        );
        let bare = outcome_from(CheckResponse {
            status: Some(Status {
                code: 16,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(bare, ExtAuthzOutcome::Deny { status: 403, .. }));
    }
}
