//! A remotely fetched JWKS and the loop that keeps it fresh.
//!
//! Istio resolves `jwksUri` periodically (every 20 minutes by default,
//! `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`) and keeps serving the last good key set when a refresh
//! fails, so a flapping identity provider does not log everybody out. Until the first fetch
//! succeeds there are no keys, and every token of that issuer is rejected with a clear error
//! rather than let through: fail closed.
//!
//! The proxy rebuilds its authenticator on every policy reload. So that a reload does not open
//! a window of 401s while the new authenticator fetches, the last good key set of every source
//! is kept process-wide and a new [`RemoteJwks`] starts from it (and refreshes right away).

use super::fetch;
use super::jwks::KeySet;
use hyper::http::Uri;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub(crate) enum JwksSource {
    Uri(Uri),
    /// No `jwks`/`jwksUri`: OpenID Connect discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery(Uri),
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    last_error: Option<String>,
    attempts: u64,
    last_success: Option<Instant>,
}

pub(crate) struct RemoteJwks {
    pub issuer: String,
    source: JwksSource,
    timeout: Duration,
    state: RwLock<State>,
}

/// A snapshot of one issuer's remote key set, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksStatus {
    pub issuer: String,
    pub uri: String,
    /// Usable keys currently cached (0 until the first successful fetch).
    pub keys: usize,
    /// The error of the most recent fetch, if it failed.
    pub last_error: Option<String>,
    /// Fetches attempted so far.
    pub attempts: u64,
    pub last_success: Option<Instant>,
}

/// Last good key set per (issuer, source URI), shared by all authenticators of the process.
type LastGood = Mutex<HashMap<(String, String), Arc<KeySet>>>;

fn last_good() -> &'static LastGood {
    static CACHE: OnceLock<LastGood> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl JwksSource {
    fn uri(&self) -> &Uri {
        match self {
            JwksSource::Uri(u) | JwksSource::Discovery(u) => u,
        }
    }
}

impl RemoteJwks {
    pub(crate) fn new(issuer: String, source: JwksSource, timeout: Duration) -> Self {
        let cache_key = (issuer.clone(), source.uri().to_string());
        let keys = last_good()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            .cloned();
        RemoteJwks {
            issuer,
            source,
            timeout,
            state: RwLock::new(State {
                keys,
                ..State::default()
            }),
        }
    }

    /// The cached keys, or why there are none.
    pub(crate) fn keys(&self) -> Result<Arc<KeySet>, String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &state.keys {
            Some(keys) => Ok(keys.clone()),
            None => Err(state
                .last_error
                .clone()
                .unwrap_or_else(|| "JWKS not fetched yet".into())),
        }
    }

    pub(crate) fn status(&self) -> JwksStatus {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        JwksStatus {
            issuer: self.issuer.clone(),
            uri: self.source.uri().to_string(),
            keys: state.keys.as_ref().map_or(0, |k| k.len()),
            last_error: state.last_error.clone(),
            attempts: state.attempts,
            last_success: state.last_success,
        }
    }

    /// One fetch; on failure the previous keys stay in place. Returns whether it succeeded.
    pub(crate) async fn refresh(&self, tls: &Arc<rustls::ClientConfig>) -> bool {
        let result = self.fetch(tls).await;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.attempts += 1;
        match result {
            Ok(keys) => {
                tracing::debug!(issuer = %self.issuer, keys = keys.len(), "JWKS refreshed");
                let keys = Arc::new(keys);
                last_good()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (self.issuer.clone(), self.source.uri().to_string()),
                        keys.clone(),
                    );
                state.keys = Some(keys);
                state.last_error = None;
                state.last_success = Some(Instant::now());
                true
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, cached = state.keys.is_some(),
                    "JWKS fetch failed; keeping the cached keys");
                state.last_error = Some(error);
                false
            }
        }
    }

    async fn fetch(&self, tls: &Arc<rustls::ClientConfig>) -> Result<KeySet, String> {
        let uri = match &self.source {
            JwksSource::Uri(uri) => uri.clone(),
            JwksSource::Discovery(doc) => {
                let text = fetch::get_text(doc, tls, self.timeout).await?;
                let value: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("discovery document is not JSON: {e}"))?;
                value
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("discovery document has no jwks_uri")?
                    .parse::<Uri>()
                    .map_err(|e| format!("discovery jwks_uri: {e}"))?
            }
        };
        let text = fetch::get_text(&uri, tls, self.timeout).await?;
        KeySet::parse(&text).map_err(|e| format!("{uri}: {e}"))
    }
}

/// Fetches now, then every `refresh` (or every `retry` after a failure) until the
/// authenticator owning `remote` is dropped.
pub(crate) async fn refresh_loop(
    remote: Weak<RemoteJwks>,
    tls: Arc<rustls::ClientConfig>,
    refresh: Duration,
    retry: Duration,
) {
    loop {
        let Some(r) = remote.upgrade() else { return };
        let ok = r.refresh(&tls).await;
        drop(r);
        tokio::time::sleep(if ok { refresh } else { retry }).await;
    }
}
