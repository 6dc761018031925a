//! JSON Web Key Sets: turning a JWKS document into keys we can verify with.
//!
//! Keys are parsed one by one and a key we cannot use (an unknown `kty`, a curve we do not
//! support, `"use": "enc"`) is skipped rather than failing the whole set: identity providers
//! routinely publish mixed sets, and one exotic key must not lock out every user. A set with no
//! usable key at all is an error, like Istio's validation of `jwks`.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::str::FromStr;

/// What a key can verify; ties a JWK to the `alg` values it is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    /// Whether a token signed with `alg` can be checked with a key of this kind.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::EcP256, ES256)
                | (KeyKind::EcP384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

/// The usable keys of one JWKS document.
pub struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.kind)))
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    pub fn parse(json: &str) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let keys: Vec<VerifyKey> = keys.iter().filter_map(parse_key).collect();
        if keys.is_empty() {
            return Err("no usable key (RSA, EC P-256/P-384 or Ed25519)".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may have signed a token with this `kid`/`alg`, following Envoy: when both the
    /// token and the key name a `kid` they must match, a key that pins an `alg` must pin the
    /// token's, and the key type must suit the algorithm. A token without `kid` tries them all.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            let kid_ok = match (kid, k.kid.as_deref()) {
                (Some(t), Some(key)) => t == key,
                _ => true,
            };
            kid_ok && k.alg.is_none_or(|a| a == alg) && k.kind.fits(alg)
        })
    }
}

fn parse_key(jwk: &Value) -> Option<VerifyKey> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match field("alg") {
        Some(a) => Some(Algorithm::from_str(a).ok()?),
        None => None,
    };
    let (kind, key) = match field("kty")? {
        "RSA" => (
            KeyKind::Rsa,
            DecodingKey::from_rsa_components(field("n")?, field("e")?).ok()?,
        ),
        "EC" => {
            let kind = match field("crv")? {
                "P-256" => KeyKind::EcP256,
                "P-384" => KeyKind::EcP384,
                _ => return None,
            };
            (
                kind,
                DecodingKey::from_ec_components(field("x")?, field("y")?).ok()?,
            )
        }
        "OKP" if field("crv")? == "Ed25519" => (
            KeyKind::Ed25519,
            DecodingKey::from_ed_components(field("x")?).ok()?,
        ),
        _ => return None,
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return None;
    }
    Some(VerifyKey {
        kid: field("kid").map(str::to_string),
        alg,
        kind,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unusable_keys_but_keeps_good_ones() {
        let set = KeySet::parse(
            r#"{"keys":[
              {"kty":"oct","k":"c2VjcmV0"},
              {"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"},
              {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
              {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys[0].kind, KeyKind::Ed25519);
        assert_eq!(set.candidates(Some("ed"), Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(Some("other"), Algorithm::EdDSA).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 0);
    }

    #[test]
    fn rejects_sets_without_usable_keys() {
        assert!(KeySet::parse(r#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse(r#"{"nokeys":1}"#).is_err());
        assert!(KeySet::parse("not json").is_err());
    }
}
