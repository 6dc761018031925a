//! The `jwtRules` model the authenticator is driven by: the policy crate's `JwtRule`, exactly
//! Istio's `JWTRule`, the same type `trustmesh policy validate` checks (so what validates is
//! what the proxy runs), plus the parsing of its fetch timeout.

use std::time::Duration;

pub use trustmesh_policy::crd::{ClaimToHeader, JwtHeader};
pub use trustmesh_policy::JwtRule;

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
