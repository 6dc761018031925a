//! The CA's bearer tokens checked with the Kubernetes TokenReview API, as istiod checks them:
//! the API server says whether the token is valid *now*, so a token of a deleted service
//! account (or bound to a deleted pod) stops working at once instead of at its expiry.
//!
//! Accepted answers are remembered for a short, bounded time ([`DEFAULT_CACHE_TTL`], at most
//! [`MAX_ENTRIES`] tokens, keyed by the token's SHA-256): an agent renewing many certificates
//! costs one review, and a revoked token is honoured at most that long. Refusals are not
//! remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::Client;
use trustmesh_ca_server::auth::review::{
    parse_username, PodRef, Review, ServiceAccount, TokenReviewer,
};

/// How long an accepted token is answered without asking again.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most; past it the oldest half is forgotten.
pub const MAX_ENTRIES: usize = 10_000;
/// The audience istiod asks for by default.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";
/// The issuer named in logs for tokens accepted this way.
pub const ISSUER: &str = "kubernetes TokenReview";
/// A review that takes longer than this is a refusal (the CA call must not hang on it).
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct KubeTokenReviewer {
    client: Client,
    audiences: Vec<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, ServiceAccount)>>,
}

impl KubeTokenReviewer {
    pub fn new(client: Client, audiences: Vec<String>, ttl: Duration) -> KubeTokenReviewer {
        KubeTokenReviewer {
            client,
            audiences,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<ServiceAccount> {
        let cache = self.cache.lock().expect("review cache poisoned");
        let (at, sa) = cache.get(key)?;
        (at.elapsed() < self.ttl).then(|| sa.clone())
    }

    fn remember(&self, key: [u8; 32], sa: &ServiceAccount) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().expect("review cache poisoned");
        if cache.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_ENTRIES {
                let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                cache.retain(|_, (at, _)| *at > cut);
            }
        }
        cache.insert(key, (Instant::now(), sa.clone()));
    }

    async fn ask(&self, token: &str) -> Result<ServiceAccount, String> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(TIMEOUT, api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| format!("the API server did not answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("the API server could not review it: {e}"))?;
        judge(answer.status.as_ref(), &self.audiences)
    }
}

/// What a TokenReview's status means for the CA: authenticated, for one of our audiences, and a
/// service account's token (a user's token obtains no workload identity).
pub fn judge(
    status: Option<&k8s_openapi::api::authentication::v1::TokenReviewStatus>,
    audiences: &[String],
) -> Result<ServiceAccount, String> {
    let status = status.ok_or("the API server returned no review status")?;
    if status.authenticated != Some(true) {
        return Err(match status.error.as_deref() {
            Some(e) if !e.is_empty() => format!("the API server refused it: {e}"),
            _ => "the API server refused it".into(),
        });
    }
    // The API server lists which of the requested audiences the token is for; a token for
    // none of them (another service's token) must not be accepted here.
    let granted = status.audiences.as_deref().unwrap_or_default();
    if !audiences.is_empty() && !granted.iter().any(|a| audiences.contains(a)) {
        return Err(format!(
            "the token is not for audience {} (it is for {:?})",
            audiences.join(", "),
            granted
        ));
    }
    let user = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or("");
    match parse_username(user) {
        Some(Ok((ns, name))) => Ok(ServiceAccount {
            namespace: ns.to_string(),
            name: name.to_string(),
            issuer: ISSUER.to_string(),
            pod: bound_pod(status),
        }),
        _ => Err(format!("{user:?} is not a service account")),
    }
}

/// The pod a bound token was issued for, as the API server reports it in `user.extra`.
fn bound_pod(status: &k8s_openapi::api::authentication::v1::TokenReviewStatus) -> Option<PodRef> {
    let extra = status.user.as_ref()?.extra.as_ref()?;
    let one = |k: &str| extra.get(k)?.first().cloned().filter(|v| !v.is_empty());
    Some(PodRef {
        name: one("authentication.kubernetes.io/pod-name")?,
        uid: one("authentication.kubernetes.io/pod-uid")?,
    })
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(&'a self, token: &'a str) -> Review<'a> {
        Box::pin(async move {
            let key = digest(token);
            if let Some(sa) = self.cached(&key) {
                return Ok(sa);
            }
            let sa = self.ask(token).await?;
            self.remember(key, &sa);
            Ok(sa)
        })
    }
}

/// The cache key: a digest, so the cache never holds tokens.
fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenReviewStatus;

    fn status(v: serde_json::Value) -> TokenReviewStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_service_account_for_our_audience_is_accepted() {
        let aud = vec!["istio-ca".to_string()];
        let ok = status(serde_json::json!({
            "authenticated": true, "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:shop:reviews"}
        }));
        let sa = judge(Some(&ok), &aud).unwrap();
        assert_eq!(
            (sa.namespace.as_str(), sa.name.as_str()),
            ("shop", "reviews")
        );
        assert_eq!(sa.pod, None);
        let bound = status(serde_json::json!({
            "authenticated": true, "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:shop:reviews", "extra": {
                "authentication.kubernetes.io/pod-name": ["reviews-1"],
                "authentication.kubernetes.io/pod-uid": ["u-1"]}}
        }));
        let pod = judge(Some(&bound), &aud).unwrap().pod.unwrap();
        assert_eq!((pod.name.as_str(), pod.uid.as_str()), ("reviews-1", "u-1"));

        let other_audience = status(serde_json::json!({
            "authenticated": true, "audiences": ["api"],
            "user": {"username": "system:serviceaccount:shop:reviews"}
        }));
        assert!(judge(Some(&other_audience), &aud)
            .unwrap_err()
            .contains("audience"));
        let no_audience = status(serde_json::json!({
            "authenticated": true, "user": {"username": "system:serviceaccount:shop:reviews"}
        }));
        assert!(judge(Some(&no_audience), &aud).is_err());
        let user = status(serde_json::json!({
            "authenticated": true, "audiences": ["istio-ca"], "user": {"username": "alice"}
        }));
        assert!(judge(Some(&user), &aud)
            .unwrap_err()
            .contains("not a service account"));
        let refused = status(serde_json::json!({"authenticated": false, "error": "token expired"}));
        assert!(judge(Some(&refused), &aud)
            .unwrap_err()
            .contains("token expired"));
        assert!(judge(None, &aud).is_err());
        let odd = status(serde_json::json!({
            "authenticated": true, "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:shop:a:b"}
        }));
        assert!(judge(Some(&odd), &aud).is_err());
    }
}
