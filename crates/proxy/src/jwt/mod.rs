//! RequestAuthentication in the data plane: validating JWTs the way Istio's sidecar does.
//!
//! Semantics (Istio's, implemented by Envoy's `jwt_authn` filter):
//! - A request with no token at any location a rule inspects passes with no request identity
//!   (`Ok(None)`); AuthorizationPolicy (`requestPrincipals`) decides whether that is acceptable.
//! - A request carrying a token that fails validation — malformed, unknown issuer, bad
//!   signature, expired, not yet valid, wrong audience, keys unavailable — is rejected (`Err`),
//!   answered with 401 and [`JwtError::http_body`].
//! - The rule is chosen by the token's `iss` among the rules whose locations yielded the token.
//! - Istio leaves the principal of a request with several distinct tokens undefined. We follow
//!   Envoy's behaviour: every token found is validated and any invalid one rejects the request;
//!   the identity reported is that of the first token in rule/location order.
//! - `exp`/`nbf` are checked with [`CLOCK_SKEW_SECS`] (60 s) of slack, Envoy's default.
//!
//! Remote key sets (`jwksUri`, or OpenID discovery when a rule has neither `jwks` nor
//! `jwksUri`) are fetched in the background when the authenticator is built inside a Tokio
//! runtime, refreshed every [`JwtOptions::refresh_interval`] (20 min, Istio's default) and kept
//! across failed refreshes; see [`remote`].

mod error;
mod extract;
mod fetch;
mod info;
mod jwks;
mod output;
mod remote;
mod rule;
mod verify;

pub use error::{JwtConfigError, JwtError};
pub use info::AuthInfo;
pub use jwks::KeySet;
pub use remote::JwksStatus;
pub use rule::{ClaimToHeader, JwtHeader, JwtRule};
pub use verify::CLOCK_SKEW_SECS;

use extract::Location;
use hyper::http::{HeaderMap, Uri};
use remote::{JwksSource, RemoteJwks};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Knobs for fetching remote key sets.
#[derive(Clone)]
pub struct JwtOptions {
    /// How often a good remote JWKS is refetched (Istio: 20 minutes).
    pub refresh_interval: Duration,
    /// How soon a failed fetch is retried; short so that a cold start recovers quickly.
    pub retry_interval: Duration,
    /// Fetch timeout when the rule has no `timeout` (Istio: 5 s).
    pub fetch_timeout: Duration,
    /// TLS client settings for https JWKS URIs; `None` uses the operating system's trust store.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for JwtOptions {
    fn default() -> Self {
        JwtOptions {
            refresh_interval: Duration::from_secs(20 * 60),
            retry_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

impl std::fmt::Debug for JwtOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtOptions")
            .field("refresh_interval", &self.refresh_interval)
            .field("retry_interval", &self.retry_interval)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("custom_tls", &self.tls.is_some())
            .finish()
    }
}

enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

struct CompiledRule {
    rule: JwtRule,
    locations: Vec<Location>,
    keys: Keys,
    outputs: output::Outputs,
}

/// Validates request JWTs against a workload's RequestAuthentication rules.
pub struct JwtAuthenticator {
    rules: Vec<CompiledRule>,
    tls: Arc<rustls::ClientConfig>,
    refreshers: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field(
                "issuers",
                &self
                    .rules
                    .iter()
                    .map(|r| &r.rule.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Drop for JwtAuthenticator {
    fn drop(&mut self) {
        for task in &self.refreshers {
            task.abort();
        }
    }
}

impl JwtAuthenticator {
    /// Compiles `rules`. Inline `jwks` are parsed now (an unusable one is a configuration
    /// error). Remote key sets start fetching in the background if a Tokio runtime is running;
    /// otherwise call [`JwtAuthenticator::refresh_now`] from one.
    pub fn new(rules: Vec<JwtRule>, options: JwtOptions) -> Result<Self, JwtConfigError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            compiled.push(compile(index, rule, &options)?);
        }
        let tls = options.tls.clone().unwrap_or_else(fetch::default_tls);
        let mut refreshers = Vec::new();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for rule in &compiled {
                if let Keys::Remote(remote) = &rule.keys {
                    let task = runtime.spawn(remote::refresh_loop(
                        Arc::downgrade(remote),
                        tls.clone(),
                        options.refresh_interval,
                        options.retry_interval,
                    ));
                    refreshers.push(task.abort_handle());
                }
            }
        }
        Ok(JwtAuthenticator {
            rules: compiled,
            tls,
            refreshers,
        })
    }

    /// Authenticates a request by its headers and URI (for `fromParams`).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<AuthInfo>, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.authenticate_at(headers, uri, now)
    }

    /// [`Self::authenticate`] at a given Unix time (seconds).
    pub fn authenticate_at(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        now: i64,
    ) -> Result<Option<AuthInfo>, JwtError> {
        // Each distinct token with the (rule, location) pairs it was found at.
        let mut found: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            for (li, location) in rule.locations.iter().enumerate() {
                for token in extract::extract(location, headers, uri.query()) {
                    match found.iter_mut().find(|(t, _)| *t == token) {
                        Some((_, hits)) => hits.push((ri, li)),
                        None => found.push((token, vec![(ri, li)])),
                    }
                }
            }
        }
        let mut first: Option<AuthInfo> = None;
        let mut strip = Vec::new();
        for (token, hits) in found {
            let info = self.verify_token(token, &hits, now)?;
            for name in &info.strip_headers {
                if !strip.contains(name) {
                    strip.push(name.clone());
                }
            }
            first.get_or_insert(info);
        }
        Ok(first.map(|mut info| {
            info.strip_headers = strip;
            info
        }))
    }

    fn verify_token(
        &self,
        token: String,
        hits: &[(usize, usize)],
        now: i64,
    ) -> Result<AuthInfo, JwtError> {
        let unverified = verify::decode_unverified(&token)?;
        let claims = unverified.claims;
        let issuer = claims.get("iss").and_then(Value::as_str);
        let rule_index = hits
            .iter()
            .map(|&(ri, _)| ri)
            .find(|&ri| Some(self.rules[ri].rule.issuer.as_str()) == issuer)
            .ok_or_else(|| JwtError::UnknownIssuer {
                issuer: issuer.map(str::to_string),
            })?;
        let rule = &self.rules[rule_index];
        // Envoy's order: issuer, time window, audience, then keys and signature.
        verify::check_claims(&claims, &rule.rule.audiences, now)?;
        let keys = match &rule.keys {
            Keys::Inline(keys) => keys.clone(),
            Keys::Remote(remote) => remote.keys().map_err(|reason| JwtError::JwksUnavailable {
                issuer: rule.rule.issuer.clone(),
                reason,
            })?,
        };
        verify::verify_signature(&token, &unverified.header, &keys)?;

        let strip_headers = if rule.rule.forward_original_token {
            Vec::new()
        } else {
            hits.iter()
                .filter(|&&(ri, _)| ri == rule_index)
                .filter_map(|&(_, li)| match &rule.locations[li] {
                    Location::Header { name, .. } => Some(name.clone()),
                    // Envoy leaves query parameters and cookies in place.
                    _ => None,
                })
                .collect()
        };
        let issuer = rule.rule.issuer.clone();
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(AuthInfo {
            principal: format!("{issuer}/{subject}"),
            issuer,
            subject,
            audiences: verify::audiences_of(&claims),
            presenter: claims
                .get("azp")
                .and_then(Value::as_str)
                .map(str::to_string),
            claims: Value::Object(claims),
            space_delimited_claims: rule.rule.space_delimited_claims.clone(),
            raw_token: token,
            rule_index,
            strip_headers,
        })
    }

    /// Applies the accepted rule's outputs to the request about to be forwarded: removes the
    /// token header unless `forwardOriginalToken`, sets `outputPayloadToHeader` (the token's
    /// base64url payload) and `outputClaimToHeaders`.
    pub fn apply_outputs(&self, info: &AuthInfo, headers: &mut HeaderMap) {
        for name in &info.strip_headers {
            headers.remove(name);
        }
        if let Some(rule) = self.rules.get(info.rule_index) {
            rule.outputs.apply(info, headers);
        }
    }

    /// Removes every header some rule writes as an output. Call it on each incoming request
    /// before [`Self::apply_outputs`] so a client cannot pose as a verified token by sending
    /// e.g. the payload header itself on a request without a token.
    pub fn remove_spoofed_outputs(&self, headers: &mut HeaderMap) {
        for rule in &self.rules {
            rule.outputs.remove_all(headers);
        }
    }

    /// Fetches every remote key set once, now (startup, tests, an admin "refresh" action).
    /// Returns the number of fetches that failed.
    pub async fn refresh_now(&self) -> usize {
        let mut failures = 0;
        for rule in &self.rules {
            if let Keys::Remote(remote) = &rule.keys {
                if !remote.refresh(&self.tls).await {
                    failures += 1;
                }
            }
        }
        failures
    }

    /// Waits until every remote key set has been attempted at least once (successfully or
    /// not), at most `timeout`. Returns whether all of them have keys.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let statuses = self.jwks_status();
            if statuses.iter().all(|s| s.attempts > 0) || tokio::time::Instant::now() >= deadline {
                return statuses.iter().all(|s| s.keys > 0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// State of each remote key set.
    pub fn jwks_status(&self) -> Vec<JwksStatus> {
        self.rules
            .iter()
            .filter_map(|r| match &r.keys {
                Keys::Remote(remote) => Some(remote.status()),
                Keys::Inline(_) => None,
            })
            .collect()
    }

    /// The rules, in the order given.
    pub fn rules(&self) -> impl Iterator<Item = &JwtRule> {
        self.rules.iter().map(|r| &r.rule)
    }
}

fn compile(
    index: usize,
    rule: JwtRule,
    options: &JwtOptions,
) -> Result<CompiledRule, JwtConfigError> {
    if rule.issuer.trim().is_empty() {
        return Err(JwtConfigError::MissingIssuer { index });
    }
    let timeout = match &rule.timeout {
        Some(text) => rule::parse_timeout(text).map_err(|_| JwtConfigError::InvalidTimeout {
            index,
            value: text.clone(),
        })?,
        None => options.fetch_timeout,
    };
    let bad_uri = |uri: &str, reason: String| JwtConfigError::InvalidJwksUri {
        index,
        uri: uri.to_string(),
        reason,
    };
    let parse_uri = |text: &str| -> Result<Uri, JwtConfigError> {
        let uri: Uri = text.parse().map_err(|e| bad_uri(text, format!("{e}")))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(_)) => Ok(uri),
            _ => Err(bad_uri(text, "must be an http:// or https:// URL".into())),
        }
    };
    // As in Istio, an inline `jwks` wins over `jwksUri`.
    let keys = match (&rule.jwks, &rule.jwks_uri) {
        (Some(jwks), _) => Keys::Inline(Arc::new(
            KeySet::parse(jwks).map_err(|reason| JwtConfigError::InvalidJwks { index, reason })?,
        )),
        (None, Some(uri)) => Keys::Remote(Arc::new(RemoteJwks::new(
            rule.issuer.clone(),
            JwksSource::Uri(parse_uri(uri)?),
            timeout,
        ))),
        (None, None) => {
            let doc = format!(
                "{}/.well-known/openid-configuration",
                rule.issuer.trim_end_matches('/')
            );
            Keys::Remote(Arc::new(RemoteJwks::new(
                rule.issuer.clone(),
                JwksSource::Discovery(parse_uri(&doc)?),
                timeout,
            )))
        }
    };
    Ok(CompiledRule {
        locations: extract::locations_for(index, &rule)?,
        outputs: output::Outputs::compile(index, &rule)?,
        keys,
        rule,
    })
}
