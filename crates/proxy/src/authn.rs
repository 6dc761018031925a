//! RequestAuthentication glue: builds the jwt module's authenticator from the RequestAuthentication
//! policies that select this workload, and applies it to requests.
//!
//! The authenticator is rebuilt with every snapshot, so a changed or removed RequestAuthentication
//! takes effect on reload like any other policy.

use http::{HeaderMap, Uri};
use trustmesh_policy::{failclosed, PolicySet, Workload};

use crate::jwt::{AuthInfo, JwtAuthenticator, JwtConfigError, JwtError, JwtOptions, JwtRule};

fn config_error_index(e: &JwtConfigError) -> usize {
    match e {
        JwtConfigError::MissingIssuer { index }
        | JwtConfigError::InvalidJwks { index, .. }
        | JwtConfigError::InvalidJwksUri { index, .. }
        | JwtConfigError::InvalidHeaderName { index, .. }
        | JwtConfigError::InvalidTimeout { index, .. } => *index,
    }
}

pub struct Jwt {
    auth: Option<JwtAuthenticator>,
}

impl Jwt {
    /// `None` rules → every request passes unauthenticated (no RequestAuthentication applies).
    pub fn new(set: &PolicySet, workload: &Workload) -> anyhow::Result<Jwt> {
        // The policy crate's rules are the authenticator's own type: no conversion.
        let mut rules: Vec<JwtRule> = set.jwt_rules(workload).into_iter().cloned().collect();
        if rules.is_empty() {
            return Ok(Jwt { auth: None });
        }
        // A rule the policy crate accepted but the authenticator cannot use (e.g. a JWKS with no
        // key it supports) rejects every token of its issuer instead of failing the whole load,
        // as Istio does when it cannot use a JWKS (pilot/pkg/model/jwks_resolver.go).
        loop {
            match JwtAuthenticator::new(rules.clone(), JwtOptions::default()) {
                Ok(auth) => return Ok(Jwt { auth: Some(auth) }),
                Err(e) => {
                    let i = config_error_index(&e);
                    let old = &rules[i];
                    if old.jwks.as_deref() == Some(failclosed::REJECT_ALL_JWKS) {
                        return Err(anyhow::anyhow!("RequestAuthentication: {e}"));
                    }
                    let issuer = if old.issuer.trim().is_empty() {
                        failclosed::placeholder_issuer(&workload.namespace, "unusable-rule")
                    } else {
                        old.issuer.clone()
                    };
                    tracing::error!(%issuer, error = %e, "RequestAuthentication rule unusable: every token of this issuer is rejected (fail-closed)");
                    let v = serde_json::to_value(failclosed::rejecting_rule(issuer))?;
                    rules[i] = serde_json::from_value(v)?;
                }
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.auth.is_some()
    }

    /// Waits (bounded) until every remote JWKS has had its first fetch, so a reload does not
    /// answer valid tokens with 401 while the new authenticator's key sets are still loading.
    /// Returns false if some key set is still unavailable (requests with tokens of that issuer
    /// then get 401 until a fetch succeeds, as with Envoy).
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        match &self.auth {
            None => true,
            Some(a) => a.wait_ready(timeout).await,
        }
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<AuthInfo>, JwtError> {
        match &self.auth {
            None => Ok(None),
            Some(a) => a.authenticate(headers, uri),
        }
    }

    /// Removes client-supplied copies of output headers, then sets the real ones.
    pub fn prepare_upstream(&self, info: Option<&AuthInfo>, headers: &mut HeaderMap) {
        if let Some(a) = &self.auth {
            a.remove_spoofed_outputs(headers);
            if let Some(i) = info {
                a.apply_outputs(i, headers);
            }
        }
    }
}
