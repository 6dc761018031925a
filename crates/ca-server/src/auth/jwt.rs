//! Bearer-token authentication with Kubernetes service-account style JWTs.
//!
//! The CA trusts a configured set of issuers, each with its own JWKS. A token names exactly one
//! service account (`sub: system:serviceaccount:<ns>:<sa>` and/or the `kubernetes.io` claim),
//! and that account decides the only SPIFFE ID the caller may obtain.
//!
//! Successful verifications are remembered for a bounded time ([`super::cache`]), so an agent
//! presenting the same token on every renewal costs one signature check per max age, not one
//! per request.

use std::path::PathBuf;
use std::str::FromStr;
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

pub use super::account::ServiceAccount;

use super::cache::{Now, TokenCache, TokenKey, Verified, DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES};

/// A key set is re-read at most this often when a token names an unknown `kid`, so a flood of
/// forged tokens cannot turn into a flood of reads of the JWKS source.
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(5);
/// Key sets are re-read this often regardless, so rotated issuer keys are picked up.
const RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// Clock skew tolerated on `exp`/`nbf`, as between two hosts kept in sync by NTP.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Error)]
pub enum JwtError {
    #[error("token is not a JWT: {0}")]
    Malformed(String),
    #[error("token issuer {0:?} is not trusted")]
    UnknownIssuer(String),
    #[error("token has no usable signing key in the JWKS of issuer {issuer:?}{}", .kid.as_ref().map(|k| format!(" (kid {k:?})")).unwrap_or_default())]
    NoKey { issuer: String, kid: Option<String> },
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token does not name a Kubernetes service account: {0}")]
    NoServiceAccount(String),
    #[error("JWKS of issuer {issuer:?} cannot be loaded from {source_name}: {reason}")]
    Jwks {
        issuer: String,
        source_name: String,
        reason: String,
    },
}

/// A token library error in words: its Display names the kind as a Rust identifier
/// (`InvalidToken`, `ExpiredSignature`), which is not a sentence for an operator.
pub fn sentence(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidToken => "it is not three base64url parts separated by dots".into(),
        K::InvalidSignature => "its signature does not verify".into(),
        K::ExpiredSignature => "it has expired".into(),
        K::ImmatureSignature => "it is not valid yet (nbf is in the future)".into(),
        K::InvalidIssuer => "its issuer is not the one expected".into(),
        K::InvalidAudience => "its audience is not the one expected".into(),
        K::InvalidAlgorithm => "its algorithm does not match the key".into(),
        K::MissingRequiredClaim(c) => format!("it has no {c:?} claim"),
        K::Base64(_) => "a part is not valid base64url".into(),
        K::Json(_) => "a part is not valid JSON".into(),
        K::Utf8(_) => "a part is not valid UTF-8".into(),
        _ => e.to_string(),
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    /// Fetched over HTTPS; the root file verifies the JWKS server (none: the system is not
    /// consulted, so an unverifiable URL is an error, never a silent plaintext fetch).
    Url {
        url: String,
        ca_file: Option<PathBuf>,
    },
}

impl JwksSource {
    /// `http(s)://` values are URLs, everything else a file path.
    pub fn from_arg(s: &str, ca_file: Option<PathBuf>) -> JwksSource {
        if s.starts_with("https://") || s.starts_with("http://") {
            JwksSource::Url {
                url: s.to_string(),
                ca_file,
            }
        } else {
            JwksSource::File(PathBuf::from(s))
        }
    }

    fn describe(&self) -> String {
        match self {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url { url, .. } => url.clone(),
        }
    }

    async fn load(&self) -> Result<JwkSet, String> {
        let bytes = match self {
            JwksSource::File(p) => tokio::fs::read(p).await.map_err(|e| e.to_string())?,
            JwksSource::Url { url, ca_file } => crate::https_get::get(url, ca_file.as_deref())
                .await
                .map_err(|e| e.to_string())?,
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWK Set: {e}"))
    }
}

/// One trusted token issuer.
pub struct IssuerConfig {
    pub issuer: String,
    pub jwks: JwksSource,
}

struct Issuer {
    issuer: String,
    source: JwksSource,
    keys: RwLock<(Instant, JwkSet)>,
}

/// Verifies bearer tokens against the configured issuers.
pub struct JwtAuthenticator {
    issuers: Vec<Issuer>,
    audiences: Vec<String>,
    /// `None`: every token is verified on every call.
    cache: Option<TokenCache>,
    /// Clock-skew leeway on `exp`/`nbf`; a field only so tests can check expiry to the second.
    leeway: u64,
    /// Signature verifications attempted (one per candidate key), so tests can tell a cache hit
    /// from a verification.
    #[cfg(test)]
    verifications: AtomicUsize,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    /// Already checked by the verifier when it is read; kept to bound the cache entry. A JSON
    /// value so that parsing the claims for `iss` stays as lenient as it was without it.
    exp: Option<serde_json::Value>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaim>,
}

#[derive(Deserialize)]
struct KubernetesClaim {
    namespace: Option<String>,
    serviceaccount: Option<NamedRef>,
}

#[derive(Deserialize)]
struct NamedRef {
    name: Option<String>,
}

impl JwtAuthenticator {
    /// Loads every issuer's JWKS once up front, so a typo in a path fails at start-up and not at
    /// the first workload's request. Successful verifications are cached for
    /// [`DEFAULT_MAX_AGE`]; see [`JwtAuthenticator::with_cache_max_age`].
    pub async fn new(
        configs: Vec<IssuerConfig>,
        audiences: Vec<String>,
    ) -> Result<JwtAuthenticator, JwtError> {
        let mut issuers = Vec::with_capacity(configs.len());
        for c in configs {
            let keys = c.jwks.load().await.map_err(|reason| JwtError::Jwks {
                issuer: c.issuer.clone(),
                source_name: c.jwks.describe(),
                reason,
            })?;
            issuers.push(Issuer {
                issuer: c.issuer,
                source: c.jwks,
                keys: RwLock::new((Instant::now(), keys)),
            });
        }
        Ok(JwtAuthenticator {
            issuers,
            audiences,
            cache: TokenCache::new(DEFAULT_MAX_AGE, DEFAULT_MAX_ENTRIES),
            leeway: LEEWAY_SECS,
            #[cfg(test)]
            verifications: AtomicUsize::new(0),
        })
    }

    /// Sets how long a successfully verified token is answered from the cache (never past its
    /// own `exp`); zero turns the cache off, so every call verifies the signature.
    pub fn with_cache_max_age(self, max_age: Duration) -> JwtAuthenticator {
        self.with_cache(max_age, DEFAULT_MAX_ENTRIES)
    }

    fn with_cache(mut self, max_age: Duration, max_entries: usize) -> JwtAuthenticator {
        self.cache = TokenCache::new(max_age, max_entries);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether `token` names (unverified) one of the configured issuers: those tokens are
    /// verified here, others may go to a [`super::review::TokenReviewer`].
    pub fn knows_issuer_of(&self, token: &str) -> bool {
        unverified_issuer(token).is_ok_and(|iss| self.issuers.iter().any(|i| i.issuer == iss))
    }

    /// Verifies `token` (signature, issuer, audience, expiry) and returns its service account.
    ///
    /// A token that verified before is answered from the cache while it is within its `exp` and
    /// the cache's max age. The issuer's periodic JWKS reload still runs on a hit, and a reload
    /// that finds a different key set clears the cache, so a key withdrawn from the JWKS stops
    /// being honoured at the next reload (at most a minute) rather than only at the max age.
    pub async fn authenticate(&self, token: &str) -> Result<ServiceAccount, JwtError> {
        let Some(cache) = &self.cache else {
            return self.verify(token, None).await.map(|v| v.0.account);
        };
        let key = TokenKey::of(token);
        if let Some(hit) = cache.get(&key, Now::current()) {
            let issuer = &self.issuers[hit.issuer_index];
            if !issuer.refresh_if_needed(hit.kid.as_deref()).await {
                tracing::debug!(
                    issuer = %hit.account.issuer,
                    namespace = %hit.account.namespace,
                    service_account = %hit.account.name,
                    "bearer token answered from the verification cache"
                );
                return Ok(hit.account);
            }
            // The key set changed under the entry: forget everything, verify from scratch.
            cache.clear();
        }
        // Read before the keys are, so a clear that races with this verification wins.
        let generation = cache.generation();
        let (verified, exp) = self.verify(token, Some(cache)).await?;
        if let Some(exp) = exp {
            cache.insert(key, verified.clone(), exp, generation, Now::current());
        }
        Ok(verified.account)
    }

    /// The full check, with no cache involved except clearing it when the key set changes.
    /// Returns the token's `exp` with the result.
    async fn verify(
        &self,
        token: &str,
        cache: Option<&TokenCache>,
    ) -> Result<(Verified, Option<u64>), JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(sentence(&e)))?;
        let iss = unverified_issuer(token)?;
        let (issuer_index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.issuer == iss)
            .ok_or_else(|| JwtError::UnknownIssuer(iss.clone()))?;
        if issuer.refresh_if_needed(header.kid.as_deref()).await {
            if let Some(cache) = cache {
                cache.clear();
            }
        }

        let candidates = issuer.candidate_keys(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            return Err(JwtError::NoKey {
                issuer: iss,
                kid: header.kid,
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&self.audiences);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let mut last_err = None;
        for key in candidates {
            #[cfg(test)]
            self.verifications.fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => {
                    let exp = data.claims.exp.as_ref().and_then(|v| v.as_u64());
                    let account = service_account(data.claims, &issuer.issuer)?;
                    let verified = Verified {
                        account,
                        issuer_index,
                        kid: header.kid,
                    };
                    return Ok((verified, exp));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(JwtError::Invalid(
            last_err.map(|e| sentence(&e)).unwrap_or_default(),
        ))
    }
}

impl Issuer {
    /// Re-reads the key set when it is due; true when the keys that were loaded differ from the
    /// previous ones, so cached verifications (possibly by a withdrawn key) must be dropped.
    async fn refresh_if_needed(&self, kid: Option<&str>) -> bool {
        let (age, known) = {
            let guard = self.keys.read().expect("jwks lock");
            let known = kid.is_none_or(|k| guard.1.find(k).is_some());
            (guard.0.elapsed(), known)
        };
        if age < RELOAD_INTERVAL && (known || age < UNKNOWN_KID_RELOAD) {
            return false;
        }
        match self.source.load().await {
            Ok(keys) => {
                let changed = {
                    let mut guard = self.keys.write().expect("jwks lock");
                    let changed = guard.1 != keys;
                    *guard = (Instant::now(), keys);
                    changed
                };
                if changed {
                    tracing::info!(issuer = %self.issuer, "JWKS reloaded with a different key set");
                }
                changed
            }
            Err(e) => {
                // Keep the previous keys: a JWKS server blip must not lock every workload out.
                tracing::warn!(issuer = %self.issuer, "reloading JWKS failed, keeping old keys: {e}");
                self.keys.write().expect("jwks lock").0 = Instant::now();
                false
            }
        }
    }

    /// Keys that may have signed a token with this `kid`/`alg`: only asymmetric keys, because a
    /// shared-secret key in a public JWKS would let anyone who reads it mint tokens.
    fn candidate_keys(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        let guard = self.keys.read().expect("jwks lock");
        guard
            .1
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
            .filter(|k| key_fits(k, alg))
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .collect()
    }
}

/// Whether `jwk` may verify a token signed with `alg`. The key's family must fit the
/// algorithm, and a key that states its algorithm (`alg`) or its use (`use`) is held to them
/// (RFC 7517 4.2, 4.4): an RS256 key verifies no PS256 token, and an encryption key or a SPIFFE
/// bundle's X.509 authority verifies nothing. Shared with the agent's JWT-SVID validation.
pub fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    let family = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        AlgorithmParameters::OctetKey(_) => false,
    };
    let stated = match jwk.common.key_algorithm {
        None => true,
        Some(k) => Algorithm::from_str(&k.to_string()).is_ok_and(|a| a == alg),
    };
    // `jwt-svid` is how SPIFFE trust bundles mark JWT authorities; `x509-svid` keys there are
    // X.509 authorities and sign no tokens.
    let usable = match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => true,
        Some(PublicKeyUse::Other(u)) => u == "jwt-svid",
        Some(PublicKeyUse::Encryption) => false,
    };
    family && stated && usable
}

/// Reads `iss` without verifying anything, only to pick which issuer's keys to verify with.
fn unverified_issuer(token: &str) -> Result<String, JwtError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| JwtError::Malformed("expected three dot-separated parts".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("payload is not base64url: {e}")))?;
    let claims: Claims = serde_json::from_slice(&bytes)
        .map_err(|e| JwtError::Malformed(format!("payload is not a JSON claim set: {e}")))?;
    claims
        .iss
        .ok_or_else(|| JwtError::Malformed("token has no \"iss\" claim".into()))
}

/// Maps the verified claims to one service account. When both the `sub` and the `kubernetes.io`
/// claim are present they must agree; a token that names two accounts is refused.
fn service_account(c: Claims, issuer: &str) -> Result<ServiceAccount, JwtError> {
    let from_sub = match c.sub.as_deref() {
        Some(sub) => match super::account::parse_username(sub) {
            Some(Ok((ns, sa))) => Some((ns.to_string(), sa.to_string())),
            Some(Err(_)) => {
                return Err(JwtError::NoServiceAccount(format!(
                    "malformed subject {sub:?}"
                )))
            }
            None => None,
        },
        None => None,
    };
    let from_k8s = c.kubernetes.and_then(|k| {
        let name = k.serviceaccount.and_then(|s| s.name)?;
        Some((k.namespace?, name))
    });
    let (namespace, name) = match (from_sub, from_k8s) {
        (Some(a), Some(b)) if a != b => {
            return Err(JwtError::NoServiceAccount(format!(
                "\"sub\" names {}/{} but \"kubernetes.io\" names {}/{}",
                a.0, a.1, b.0, b.1
            )))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(JwtError::NoServiceAccount(
                "expected sub \"system:serviceaccount:<ns>:<sa>\" or a \"kubernetes.io\" claim"
                    .into(),
            ))
        }
    };
    Ok(ServiceAccount {
        namespace,
        name,
        issuer: issuer.to_string(),
        pod: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_key_is_held_to_its_stated_algorithm_and_use() {
        let jwk = |extra: serde_json::Value| -> Jwk {
            let mut v = serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(v).unwrap()
        };
        let plain = jwk(serde_json::json!({}));
        assert!(key_fits(&plain, Algorithm::RS256) && key_fits(&plain, Algorithm::PS512));
        assert!(!key_fits(&plain, Algorithm::ES256), "wrong family");
        let rs256 = jwk(serde_json::json!({"alg": "RS256"}));
        assert!(key_fits(&rs256, Algorithm::RS256));
        assert!(!key_fits(&rs256, Algorithm::PS256), "stated alg is binding");
        let sig = jwk(serde_json::json!({"use": "sig"}));
        assert!(key_fits(&sig, Algorithm::RS256));
        let spiffe = jwk(serde_json::json!({"use": "jwt-svid"}));
        assert!(key_fits(&spiffe, Algorithm::RS256));
        for other in ["enc", "x509-svid"] {
            let k = jwk(serde_json::json!({ "use": other }));
            assert!(
                !key_fits(&k, Algorithm::RS256),
                "a {other} key verifies nothing"
            );
        }
    }

    #[test]
    fn subject_and_kubernetes_claim_name_the_account() {
        let sa = service_account(
            claims(serde_json::json!({"sub": "system:serviceaccount:ns1:sa1"})),
            "i",
        )
        .unwrap();
        assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("ns1", "sa1"));
        let sa = service_account(
            claims(serde_json::json!({"kubernetes.io": {"namespace": "ns2", "serviceaccount": {"name": "sa2"}}})),
            "i",
        )
        .unwrap();
        assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("ns2", "sa2"));
    }

    #[test]
    fn conflicting_or_missing_accounts_are_refused() {
        let both = serde_json::json!({"sub": "system:serviceaccount:a:b",
            "kubernetes.io": {"namespace": "a", "serviceaccount": {"name": "c"}}});
        assert!(service_account(claims(both), "i")
            .unwrap_err()
            .to_string()
            .contains("names a/b"));
        for sub in [
            "system:serviceaccount:a",
            "system:serviceaccount::b",
            "system:serviceaccount:a:b:c",
        ] {
            assert!(
                service_account(claims(serde_json::json!({"sub": sub})), "i").is_err(),
                "{sub}"
            );
        }
        assert!(service_account(claims(serde_json::json!({"sub": "alice"})), "i").is_err());
    }

    /// Real ES256 keys and tokens, with the issuer's JWKS in a file, as `ca serve` reads it.
    mod cached {
        use super::super::*;
        use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
        use std::time::{SystemTime, UNIX_EPOCH};

        const ISS: &str = "https://issuer.test";

        struct Key {
            pair: KeyPair,
            kid: &'static str,
        }

        impl Key {
            fn new(kid: &'static str) -> Key {
                Key {
                    pair: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
                    kid,
                }
            }

            fn jwk(&self) -> serde_json::Value {
                let raw = self.pair.public_key_raw();
                serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])})
            }

            fn token_with(&self, sa: &str, aud: &str, exp: u64) -> String {
                let claims = serde_json::json!({"iss": ISS, "aud": aud, "exp": exp,
                    "sub": format!("system:serviceaccount:ns1:{sa}")});
                let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
                header.kid = Some(self.kid.into());
                let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pair.serialize_der());
                jsonwebtoken::encode(&header, &claims, &key).unwrap()
            }

            fn token(&self, sa: &str) -> String {
                self.token_with(sa, "istio-ca", unix_now() + 600)
            }
        }

        fn unix_now() -> u64 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        }

        fn write_jwks(path: &std::path::Path, keys: &[&Key]) {
            let jwks =
                serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
            std::fs::write(path, jwks.to_string()).unwrap();
        }

        async fn authenticator(jwks: &std::path::Path) -> JwtAuthenticator {
            JwtAuthenticator::new(
                vec![IssuerConfig {
                    issuer: ISS.into(),
                    jwks: JwksSource::File(jwks.to_path_buf()),
                }],
                vec!["istio-ca".into()],
            )
            .await
            .unwrap()
        }

        fn verifications(a: &JwtAuthenticator) -> usize {
            a.verifications.load(Ordering::Relaxed)
        }

        fn cached(a: &JwtAuthenticator) -> usize {
            a.cache.as_ref().map_or(0, |c| c.len())
        }

        /// Makes the issuer's periodic JWKS reload due on the next call.
        fn make_reload_due(a: &JwtAuthenticator) {
            let mut guard = a.issuers[0].keys.write().unwrap();
            guard.0 = Instant::now()
                .checked_sub(RELOAD_INTERVAL + Duration::from_secs(1))
                .expect("monotonic clock older than a minute");
        }

        fn sa1() -> ServiceAccount {
            ServiceAccount {
                namespace: "ns1".into(),
                name: "sa1".into(),
                issuer: ISS.into(),
                pod: None,
            }
        }

        #[tokio::test]
        async fn a_repeated_token_is_answered_from_the_cache() {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new("a");
            write_jwks(&dir.path().join("jwks.json"), &[&key]);
            let auth = authenticator(&dir.path().join("jwks.json")).await;
            let token = key.token("sa1");

            assert_eq!(auth.authenticate(&token).await.unwrap(), sa1());
            assert_eq!(verifications(&auth), 1);
            assert_eq!(cached(&auth), 1);
            for _ in 0..3 {
                assert_eq!(auth.authenticate(&token).await.unwrap(), sa1());
            }
            assert_eq!(
                verifications(&auth),
                1,
                "no signature check after the first"
            );

            // Another token of the same account is its own entry, verified once.
            let other = key.token("sa1");
            assert_ne!(other, token, "ES256 signatures are randomised");
            assert_eq!(auth.authenticate(&other).await.unwrap(), sa1());
            assert_eq!(verifications(&auth), 2);
            assert_eq!(cached(&auth), 2);
        }

        #[tokio::test]
        async fn an_expired_token_is_verified_again_even_if_it_was_cached() {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new("a");
            write_jwks(&dir.path().join("jwks.json"), &[&key]);
            // No leeway, so expiry shows to the second; and the default leeway, with which the
            // verifier still accepts the token for a while after exp.
            let mut strict = authenticator(&dir.path().join("jwks.json")).await;
            strict.leeway = 0;
            let lenient = authenticator(&dir.path().join("jwks.json")).await;
            let exp = unix_now() + 2;
            let token = key.token_with("sa1", "istio-ca", exp);
            for auth in [&strict, &lenient] {
                auth.authenticate(&token).await.unwrap();
                auth.authenticate(&token).await.unwrap();
                assert_eq!(
                    (verifications(auth), cached(auth)),
                    (1, 1),
                    "cached before exp"
                );
            }

            // Past exp (the verifier refuses once now > exp): at most 3 s.
            let past = UNIX_EPOCH + Duration::from_secs(exp + 1) + Duration::from_millis(50);
            if let Ok(wait) = past.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }

            let err = strict.authenticate(&token).await.unwrap_err();
            assert!(
                err.to_string().contains("token rejected: it has expired"),
                "{err}"
            );
            assert_eq!((verifications(&strict), cached(&strict)), (2, 0));

            // Within the leeway the verifier still accepts it, but the cache neither answers
            // for it nor stores it again: every call after exp is a full check.
            assert_eq!(lenient.authenticate(&token).await.unwrap(), sa1());
            assert_eq!(lenient.authenticate(&token).await.unwrap(), sa1());
            assert_eq!((verifications(&lenient), cached(&lenient)), (3, 0));
        }

        #[tokio::test]
        async fn refused_tokens_are_not_cached() {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new("a");
            write_jwks(&dir.path().join("jwks.json"), &[&key]);
            let auth = authenticator(&dir.path().join("jwks.json")).await;
            let forger = Key::new("a"); // same kid, key not in the JWKS
            let refused = [
                ("forged", forger.token("sa1")),
                (
                    "wrong audience",
                    key.token_with("sa1", "other", unix_now() + 600),
                ),
                (
                    "expired",
                    key.token_with("sa1", "istio-ca", unix_now() - 3600),
                ),
            ];
            for (what, token) in refused {
                let before = verifications(&auth);
                for _ in 0..2 {
                    assert!(auth.authenticate(&token).await.is_err(), "{what}");
                }
                assert_eq!(
                    verifications(&auth),
                    before + 2,
                    "{what}: verified every time"
                );
                assert_eq!(cached(&auth), 0, "{what}");
            }
            // A token whose signature was tampered with after a valid one was cached is a
            // different key, so it is checked (and refused) on its own.
            let token = key.token("sa1");
            auth.authenticate(&token).await.unwrap();
            let head = token.rsplit_once('.').unwrap().0;
            let forged_sig = forger.token("sa1").rsplit_once('.').unwrap().1.to_string();
            let tampered = format!("{head}.{forged_sig}");
            assert!(auth.authenticate(&tampered).await.is_err());
            assert_eq!(cached(&auth), 1);
        }

        #[tokio::test]
        async fn the_cache_keeps_to_its_entry_bound() {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new("a");
            write_jwks(&dir.path().join("jwks.json"), &[&key]);
            let auth = authenticator(&dir.path().join("jwks.json"))
                .await
                .with_cache(Duration::from_secs(300), 3);
            let tokens: Vec<String> = (0..10).map(|i| key.token(&format!("sa{i}"))).collect();
            for (i, t) in tokens.iter().enumerate() {
                assert_eq!(auth.authenticate(t).await.unwrap().name, format!("sa{i}"));
                assert!(cached(&auth) <= 3, "{} entries", cached(&auth));
            }
            // The newest token was kept and is answered without a new verification.
            let n = verifications(&auth);
            auth.authenticate(&tokens[9]).await.unwrap();
            assert_eq!(verifications(&auth), n);
        }

        #[tokio::test]
        async fn max_age_zero_turns_the_cache_off() {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new("a");
            write_jwks(&dir.path().join("jwks.json"), &[&key]);
            let auth = authenticator(&dir.path().join("jwks.json"))
                .await
                .with_cache_max_age(Duration::ZERO);
            assert!(auth.cache.is_none());
            let token = key.token("sa1");
            for _ in 0..3 {
                assert_eq!(auth.authenticate(&token).await.unwrap(), sa1());
            }
            assert_eq!(verifications(&auth), 3);
        }

        #[tokio::test]
        async fn a_different_key_set_empties_the_cache() {
            let dir = tempfile::tempdir().unwrap();
            let jwks = dir.path().join("jwks.json");
            let (old, new) = (Key::new("a"), Key::new("b"));
            write_jwks(&jwks, &[&old]);
            let auth = authenticator(&jwks).await;
            let token = old.token("sa1");
            auth.authenticate(&token).await.unwrap();
            assert_eq!(cached(&auth), 1);

            // A reload that finds the same keys keeps the cache.
            make_reload_due(&auth);
            auth.authenticate(&token).await.unwrap();
            assert_eq!((verifications(&auth), cached(&auth)), (1, 1));

            // The issuer withdraws the old key. The next reload, due on a cache hit, clears the
            // cache, and the token is verified again, against keys that no longer include it.
            write_jwks(&jwks, &[&new]);
            make_reload_due(&auth);
            let err = auth.authenticate(&token).await.unwrap_err();
            assert!(matches!(err, JwtError::NoKey { .. }), "{err}");
            assert_eq!(cached(&auth), 0);

            // Tokens from the new key are cached as before.
            let fresh = new.token("sa1");
            auth.authenticate(&fresh).await.unwrap();
            auth.authenticate(&fresh).await.unwrap();
            assert_eq!(cached(&auth), 1);
        }
    }

    #[test]
    fn issuer_is_read_before_verification() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).unwrap(),
            "https://x"
        );
        assert!(unverified_issuer("nodots").is_err());
        let no_iss = URL_SAFE_NO_PAD.encode(b"{}");
        assert!(unverified_issuer(&format!("e30.{no_iss}.sig")).is_err());
    }
}
