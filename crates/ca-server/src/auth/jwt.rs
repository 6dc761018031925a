//! Bearer-token authentication with Kubernetes service-account style JWTs.
//!
//! The CA trusts a configured set of issuers, each with its own JWKS. A token names exactly one
//! service account (`sub: system:serviceaccount:<ns>:<sa>` and/or the `kubernetes.io` claim),
//! and that account decides the only SPIFFE ID the caller may obtain.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// Prefix of a Kubernetes service-account subject.
const SA_SUBJECT_PREFIX: &str = "system:serviceaccount:";
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

/// The Kubernetes service account a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub issuer: String,
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
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
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
    /// the first workload's request.
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
        Ok(JwtAuthenticator { issuers, audiences })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies `token` (signature, issuer, audience, expiry) and returns its service account.
    pub async fn authenticate(&self, token: &str) -> Result<ServiceAccount, JwtError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| JwtError::UnknownIssuer(iss.clone()))?;
        issuer.refresh_if_needed(header.kid.as_deref()).await;

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
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let mut last_err = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => return service_account(data.claims, &issuer.issuer),
                Err(e) => last_err = Some(e),
            }
        }
        Err(JwtError::Invalid(
            last_err.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }
}

impl Issuer {
    async fn refresh_if_needed(&self, kid: Option<&str>) {
        let (age, known) = {
            let guard = self.keys.read().expect("jwks lock");
            let known = kid.is_none_or(|k| guard.1.find(k).is_some());
            (guard.0.elapsed(), known)
        };
        if age < RELOAD_INTERVAL && (known || age < UNKNOWN_KID_RELOAD) {
            return;
        }
        match self.source.load().await {
            Ok(keys) => *self.keys.write().expect("jwks lock") = (Instant::now(), keys),
            Err(e) => {
                // Keep the previous keys: a JWKS server blip must not lock every workload out.
                tracing::warn!(issuer = %self.issuer, "reloading JWKS failed, keeping old keys: {e}");
                self.keys.write().expect("jwks lock").0 = Instant::now();
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
            .filter(|k| family_matches(&k.algorithm, alg))
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .collect()
    }
}

fn family_matches(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::OctetKeyPair(_) => matches!(alg, EdDSA),
        AlgorithmParameters::OctetKey(_) => false,
    }
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
        Some(sub) => match sub.strip_prefix(SA_SUBJECT_PREFIX) {
            Some(rest) => match rest.split_once(':') {
                Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => {
                    Some((ns.to_string(), sa.to_string()))
                }
                _ => {
                    return Err(JwtError::NoServiceAccount(format!(
                        "malformed subject {sub:?}"
                    )))
                }
            },
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: serde_json::Value) -> Claims {
        serde_json::from_value(v).unwrap()
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
