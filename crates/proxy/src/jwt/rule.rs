//! The `jwtRules` model the authenticator is driven by.
//!
//! The field set and JSON names are exactly Istio's `JWTRule`, so a RequestAuthentication's
//! `jwtRules` entry deserializes straight into it. It is a proxy-side type (rather than the
//! policy crate's) so the data plane is not tied to the policy crate's parse model (which, for
//! example, rejects unknown fields); `From<&trustmesh_policy::JwtRule>` converts.

use serde::Deserialize;
use std::time::Duration;

/// One RequestAuthentication `jwtRules` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRule {
    /// Must equal the token's `iss` claim; also the key the authenticator picks a rule by.
    pub issuer: String,
    /// When non-empty the token's `aud` must contain at least one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where to fetch the JWKS from (http or https). Ignored when `jwks` is set.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Inline JWKS document (a JSON string).
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Header that receives the token's payload segment (base64url) after verification.
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the forwarded request; by default its header is removed.
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout for fetching `jwksUri`, e.g. `5s` (Istio's default).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Top-level claims policies match word by word, besides `scope` and `permission`.
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// A header a token may arrive in, with the prefix (e.g. `Bearer `) to strip.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

/// Copy claim `claim` (dotted path for nested claims) into request header `header`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

impl From<&trustmesh_policy::JwtRule> for JwtRule {
    fn from(r: &trustmesh_policy::JwtRule) -> Self {
        JwtRule {
            issuer: r.issuer.clone(),
            audiences: r.audiences.clone(),
            jwks_uri: r.jwks_uri.clone(),
            jwks: r.jwks.clone(),
            from_headers: r
                .from_headers
                .iter()
                .map(|h| JwtHeader {
                    name: h.name.clone(),
                    prefix: h.prefix.clone(),
                })
                .collect(),
            from_params: r.from_params.clone(),
            from_cookies: r.from_cookies.clone(),
            output_payload_to_header: r.output_payload_to_header.clone(),
            forward_original_token: r.forward_original_token,
            output_claim_to_headers: r
                .output_claim_to_headers
                .iter()
                .map(|c| ClaimToHeader {
                    header: c.header.clone(),
                    claim: c.claim.clone(),
                })
                .collect(),
            timeout: r.timeout.clone(),
            space_delimited_claims: r.space_delimited_claims.clone(),
        }
    }
}

/// The JWKS fetch timeout: the one duration type, with Istio's `ValidateDuration` rule (at
/// least 1ms, whole milliseconds) that `trustmesh policy validate` applies to the same field.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, trustmesh_config::DurationError> {
    trustmesh_config::Duration::parse_millis(text).map(trustmesh_config::Duration::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_durations() {
        let ok = |t: &str| parse_timeout(t).unwrap();
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        for bad in ["5", "s", "", "-1s", "100us", "1.5ms"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn converts_from_the_policy_model() {
        let policy: trustmesh_policy::JwtRule = serde_json::from_str(
            r#"{"issuer":"i","fromHeaders":[{"name":"x-jwt","prefix":"T "}],
                "outputClaimToHeaders":[{"header":"x-sub","claim":"sub"}],"timeout":"3s"}"#,
        )
        .unwrap();
        let rule = JwtRule::from(&policy);
        assert_eq!(rule.issuer, "i");
        assert_eq!(rule.from_headers[0].prefix, "T ");
        assert_eq!(rule.output_claim_to_headers[0].header, "x-sub");
        assert_eq!(rule.timeout.as_deref(), Some("3s"));
    }

    #[test]
    fn deserializes_istio_field_names() {
        let rule: JwtRule = serde_json::from_str(
            r#"{"issuer":"i","audiences":["a"],"jwksUri":"http://x/jwks",
                "fromHeaders":[{"name":"x-jwt","prefix":"Bearer "}],"fromParams":["tok"],
                "outputPayloadToHeader":"x-payload","forwardOriginalToken":true,
                "outputClaimToHeaders":[{"header":"x-sub","claim":"sub"}]}"#,
        )
        .unwrap();
        assert_eq!(rule.from_headers[0].prefix, "Bearer ");
        assert_eq!(rule.output_claim_to_headers[0].claim, "sub");
        assert!(rule.forward_original_token);
        assert_eq!(rule.jwks_uri.as_deref(), Some("http://x/jwks"));
    }
}
