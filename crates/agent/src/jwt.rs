//! JWT-SVIDs for the workload: minted by the CA's JWT authority (the trust domain's signing
//! key, as SPIFFE requires), cached per audience set, and validated against the local and
//! federated JWT bundles.

// Results feed gRPC handlers directly, so errors are tonic::Status.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use tonic::{Code, Status};
use trustmesh_ca_server::auth::jwt::key_fits;
use trustmesh_ca_server::client::{fetch_jwt_bundle, mint_jwt_svid};
use trustmesh_identity::{SpiffeId, TrustDomain};

use crate::config::Config;
use crate::rotation;
use crate::state::{Snapshot, StateRx, StateTx};

const BUNDLE_REFRESH: Duration = Duration::from_secs(60);
const BUNDLE_RETRY: Duration = Duration::from_secs(5);
/// How long a CA without a JWT authority is left alone before asking again.
const NO_AUTHORITY_RECHECK: Duration = Duration::from_secs(300);

/// Keeps the local JWT bundle in the snapshot fresh.
pub async fn poll_bundle(cfg: Arc<Config>, state: StateTx) {
    loop {
        let wait = match rotation::ca_endpoint(&cfg) {
            Ok(ep) => match fetch_jwt_bundle(&ep).await {
                Ok(jwks) => {
                    state.send_if_modified(|snap| {
                        let changed = snap.local_jwt_bundle.as_ref() != Some(&jwks);
                        snap.local_jwt_bundle = Some(jwks.clone());
                        changed
                    });
                    BUNDLE_REFRESH
                }
                Err(s) if s.code() == Code::Unimplemented => {
                    tracing::info!(
                        "CA has no JWT authority; JWT-SVIDs unavailable ({})",
                        s.message()
                    );
                    NO_AUTHORITY_RECHECK
                }
                Err(s) => {
                    tracing::warn!("fetching JWT bundle: {}", s.message());
                    BUNDLE_RETRY
                }
            },
            Err(e) => {
                tracing::warn!("fetching JWT bundle: {e}");
                BUNDLE_RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Issued tokens by (sorted) audience set, reused while more than half their life is left.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<Vec<String>, (String, u64, u64)>>,
}

impl TokenCache {
    /// A JWT-SVID for `audience` (deduplicated, order-insensitive), from the cache or the CA.
    pub async fn get(
        &self,
        cfg: &Config,
        state: &StateRx,
        audience: &[String],
    ) -> Result<String, Status> {
        let mut key: Vec<String> = audience.to_vec();
        key.sort();
        key.dedup();
        let now = unix_now();
        if let Some((token, iat, exp)) = self.tokens.lock().expect("cache lock").get(&key) {
            if now < *iat + (*exp - *iat) / 2 {
                return Ok(token.clone());
            }
        }
        let current = state.borrow().svid.clone();
        let ep = rotation::ca_endpoint(cfg).map_err(Status::unavailable)?;
        let creds = rotation::credentials(cfg, current.as_deref()).map_err(Status::unavailable)?;
        let (token, exp) = mint_jwt_svid(&ep, &creds, key.clone(), Duration::ZERO)
            .await
            .map_err(|s| Status::new(s.code(), format!("CA: {}", s.message())))?;
        let mut cache = self.tokens.lock().expect("cache lock");
        cache.retain(|_, (_, _, e)| *e > now);
        cache.insert(key, (token.clone(), now, exp));
        Ok(token)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The JWT bundles to serve, keyed by `spiffe://<td>`: the local one as fetched, federated
/// ones rebuilt as JWK Sets from the peers' SPIFFE bundles.
pub fn bundles(snap: &Snapshot, local: &TrustDomain) -> Option<BTreeMap<TrustDomain, Vec<u8>>> {
    let local_bundle = snap.local_jwt_bundle.clone()?;
    let mut out = BTreeMap::new();
    out.insert(local.clone(), local_bundle);
    for (td, keys) in &snap.federated_jwt {
        if !keys.is_empty() {
            let doc = serde_json::json!({ "keys": keys });
            out.insert(
                td.clone(),
                serde_json::to_vec(&doc).expect("JSON serializes"),
            );
        }
    }
    Some(out)
}

/// Validates a JWT-SVID for `audience` against `bundles`; returns its SPIFFE ID and claims.
/// Every failure is the caller's (bad token, unknown domain, wrong audience): INVALID_ARGUMENT.
pub fn validate(
    token: &str,
    audience: &str,
    bundles: &BTreeMap<TrustDomain, Vec<u8>>,
) -> Result<(SpiffeId, serde_json::Map<String, Value>), Status> {
    let bad = |m: String| Status::invalid_argument(m);
    let header = jsonwebtoken::decode_header(token).map_err(|e| {
        bad(format!(
            "token is not a JWT: {}",
            trustmesh_ca_server::auth::jwt::sentence(&e)
        ))
    })?;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("token is not a JWS".into()))?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("token payload is not JSON".into()))?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("token has no \"sub\" claim".into()))?;
    let id = SpiffeId::parse(sub).map_err(|e| bad(format!("\"sub\" is not a SPIFFE ID: {e}")))?;
    let jwks = bundles.get(id.trust_domain()).ok_or_else(|| {
        bad(format!(
            "no JWT bundle for trust domain {}",
            id.trust_domain()
        ))
    })?;
    let set: JwkSet =
        serde_json::from_slice(jwks).map_err(|e| bad(format!("JWT bundle unreadable: {e}")))?;
    let keys: Vec<DecodingKey> = set
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter(|k| key_fits(k, header.alg))
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .collect();
    if keys.is_empty() {
        return Err(bad(format!(
            "no key in the {} JWT bundle matches the token (kid {:?}, alg {:?})",
            id.trust_domain(),
            header.kid,
            header.alg
        )));
    }
    let mut v = Validation::new(header.alg);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    v.leeway = 0;
    // A token not valid yet is not valid (RFC 7519 4.1.5); the library skips `nbf` by default.
    v.validate_nbf = true;
    let mut last = String::new();
    for key in keys {
        match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v) {
            Ok(data) => return Ok((id, data.claims)),
            Err(e) => last = trustmesh_ca_server::auth::jwt::sentence(&e),
        }
    }
    Err(bad(format!("JWT-SVID rejected: {last}")))
}

/// JSON to protobuf `Struct`, for `ValidateJWTSVIDResponse.claims`.
pub fn to_struct(map: serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustmesh_ca_server::jwt_authority::JwtAuthority;

    fn setup() -> (JwtAuthority, BTreeMap<TrustDomain, Vec<u8>>, SpiffeId) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let authority = JwtAuthority::from_key(&key).unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let mut bundles = BTreeMap::new();
        bundles.insert(td.clone(), authority.jwks_json());
        (
            authority,
            bundles,
            SpiffeId::istio(&td, "ns", "sa").unwrap(),
        )
    }

    #[test]
    fn valid_token_yields_id_and_claims() {
        let (auth, bundles, id) = setup();
        let (token, _) = auth
            .mint(
                &id,
                &["aud1".into(), "aud2".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let (got, claims) = validate(&token, "aud2", &bundles).unwrap();
        assert_eq!(got, id);
        assert_eq!(claims["sub"], id.as_str());
        let s = to_struct(claims);
        assert!(s.fields.contains_key("exp") && s.fields.contains_key("aud"));
    }

    #[test]
    fn rejects_wrong_audience_unknown_domain_expiry_and_forgery() {
        let (auth, bundles, id) = setup();
        let (token, _) = auth
            .mint(&id, &["aud1".into()], Duration::from_secs(60))
            .unwrap();
        let e = validate(&token, "other", &bundles).unwrap_err();
        assert!(
            e.message().contains("its audience is not the one expected"),
            "{}",
            e.message()
        );

        let stranger = SpiffeId::parse("spiffe://elsewhere.test/x").unwrap();
        let (t2, _) = auth
            .mint(&stranger, &["aud1".into()], Duration::from_secs(60))
            .unwrap();
        assert!(validate(&t2, "aud1", &bundles)
            .unwrap_err()
            .message()
            .contains("no JWT bundle"));

        let (expired, _) = auth.mint(&id, &["aud1".into()], Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(validate(&expired, "aud1", &bundles).is_err());

        // Not valid before a time still to come: refused (the library ignores `nbf` unless asked).
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let later = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let claims = serde_json::json!({"sub": id.as_str(), "aud": "aud1", "exp": later + 600, "nbf": later});
        let pem = key.serialize_pem();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let other_bundles = BTreeMap::from([(
            id.trust_domain().clone(),
            JwtAuthority::from_key(&key).unwrap().jwks_json(),
        )]);
        header.kid = serde_json::from_slice::<JwkSet>(&other_bundles[id.trust_domain()])
            .unwrap()
            .keys[0]
            .common
            .key_id
            .clone();
        let early = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let e = validate(&early, "aud1", &other_bundles).unwrap_err();
        assert!(e.message().contains("it is not valid yet"), "{e:?}");

        let (forger, _, _) = setup();
        let (forged, _) = forger
            .mint(&id, &["aud1".into()], Duration::from_secs(60))
            .unwrap();
        let e = validate(&forged, "aud1", &bundles).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(validate("not-a-jwt", "aud1", &bundles).is_err());
    }
}
