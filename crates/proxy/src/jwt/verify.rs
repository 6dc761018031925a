//! Checking one token: structure, signature and the time/audience claims.
//!
//! The signature is checked by `jsonwebtoken` (ring underneath) with exactly one algorithm
//! allowed, the one in the token header, and only after that algorithm has been matched to the
//! key's type — so `alg` confusion (an RSA public key used as an HMAC secret, `none`) cannot
//! happen. `exp`/`nbf` are checked here rather than by the library so the clock skew and the
//! error each failure maps to are ours to document.

use super::jwks::KeySet;
use super::JwtError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

/// Envoy `jwt_authn`'s default clock skew, which Istio does not change: `exp` and `nbf` are
/// honoured with 60 s of slack so small clock differences between the issuer and the proxy
/// do not reject fresh tokens.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// A token split into its parts, not yet trusted.
pub(crate) struct Unverified {
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// Parses header and payload without trusting them (to pick a rule by `iss`).
pub(crate) fn decode_unverified(token: &str) -> Result<Unverified, JwtError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(JwtError::BadFormat);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| JwtError::BadHeader {
        detail: e.to_string(),
    })?;
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|e| JwtError::BadPayload {
            detail: e.to_string(),
        })?;
    let claims = match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(JwtError::BadPayload {
                detail: "payload is not a JSON object".into(),
            })
        }
        Err(e) => {
            return Err(JwtError::BadPayload {
                detail: e.to_string(),
            })
        }
    };
    Ok(Unverified { header, claims })
}

/// Verifies the signature of `token` against the candidate keys of `keys`.
pub(crate) fn verify_signature(
    token: &str,
    header: &Header,
    keys: &KeySet,
) -> Result<(), JwtError> {
    let alg = header.alg;
    if !is_supported(alg) {
        return Err(JwtError::UnsupportedAlgorithm {
            alg: format!("{alg:?}"),
        });
    }
    let mut validation = Validation::new(alg);
    // Claims are checked by `check_claims`; here only the signature matters.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut tried = false;
    for key in keys.candidates(header.kid.as_deref(), alg) {
        tried = true;
        if jsonwebtoken::decode::<Value>(token, &key.key, &validation).is_ok() {
            return Ok(());
        }
    }
    if tried {
        Err(JwtError::InvalidSignature)
    } else {
        Err(JwtError::NoMatchingKey {
            kid: header.kid.clone(),
        })
    }
}

/// The asymmetric algorithms Istio's data plane accepts. HMAC is refused: a shared secret
/// published in a JWKS would let anyone who can read the JWKS mint tokens.
fn is_supported(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(
        alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA
    )
}

/// `exp`/`nbf` (with [`CLOCK_SKEW_SECS`]) and, when the rule lists audiences, `aud`.
pub(crate) fn check_claims(
    claims: &Map<String, Value>,
    audiences: &[String],
    now: i64,
) -> Result<(), JwtError> {
    if let Some(exp) = time_claim(claims, "exp")? {
        if now > exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(JwtError::Expired { exp, now });
        }
    }
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    if !audiences.is_empty() {
        let token_audiences = audiences_of(claims);
        if !token_audiences.iter().any(|a| audiences.contains(a)) {
            return Err(JwtError::AudienceNotAllowed { token_audiences });
        }
    }
    Ok(())
}

fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(JwtError::BadTimeClaim { claim: name }),
        Some(_) => Err(JwtError::BadTimeClaim { claim: name }),
    }
}

/// `aud` as a list: RFC 7519 allows a single string or an array of strings.
pub(crate) fn audiences_of(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn exp_and_nbf_honour_the_skew() {
        let now = 1_000_000;
        assert!(check_claims(&claims(json!({"exp": now - 59})), &[], now).is_ok());
        assert!(matches!(
            check_claims(&claims(json!({"exp": now - 61})), &[], now),
            Err(JwtError::Expired { .. })
        ));
        assert!(check_claims(&claims(json!({"nbf": now + 59})), &[], now).is_ok());
        assert!(matches!(
            check_claims(&claims(json!({"nbf": now + 61})), &[], now),
            Err(JwtError::NotYetValid { .. })
        ));
        assert!(matches!(
            check_claims(&claims(json!({"exp": "soon"})), &[], now),
            Err(JwtError::BadTimeClaim { claim: "exp" })
        ));
    }

    #[test]
    fn audience_must_intersect_when_configured() {
        let aud = vec!["svc-a".to_string(), "svc-b".to_string()];
        assert!(check_claims(&claims(json!({"aud": "svc-b"})), &aud, 0).is_ok());
        assert!(check_claims(&claims(json!({"aud": ["x", "svc-a"]})), &aud, 0).is_ok());
        assert!(check_claims(&claims(json!({"aud": ["x"]})), &aud, 0).is_err());
        assert!(check_claims(&claims(json!({})), &aud, 0).is_err());
        assert!(check_claims(&claims(json!({"aud": "anything"})), &[], 0).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(decode_unverified("a.b").err(), Some(JwtError::BadFormat));
        assert_eq!(decode_unverified("a..c").err(), Some(JwtError::BadFormat));
        assert!(matches!(
            decode_unverified("!!.e30.sig"),
            Err(JwtError::BadHeader { .. })
        ));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(matches!(
            decode_unverified(&format!("{header}.{payload}.sig")),
            Err(JwtError::BadPayload { .. })
        ));
    }
}
