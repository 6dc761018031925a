//! RequestAuthentication glue: builds the jwt module's authenticator from the RequestAuthentication
//! policies that select this workload, and applies it to requests.
//!
//! The authenticator is rebuilt with every snapshot, so a changed or removed RequestAuthentication
//! takes effect on reload like any other policy.

use http::{HeaderMap, Uri};
use trustmesh_policy::{PolicySet, Workload};

use crate::jwt::{AuthInfo, JwtAuthenticator, JwtError, JwtOptions, JwtRule};

pub struct Jwt {
    auth: Option<JwtAuthenticator>,
}

impl Jwt {
    /// `None` rules → every request passes unauthenticated (no RequestAuthentication applies).
    pub fn new(set: &PolicySet, workload: &Workload) -> anyhow::Result<Jwt> {
        let mut rules = Vec::new();
        for (i, r) in set.jwt_rules(workload).into_iter().enumerate() {
            // Both types mirror Istio's JWTRule field for field; go through its JSON form.
            let v = serde_json::to_value(r)?;
            let rule: JwtRule = serde_json::from_value(v)
                .map_err(|e| anyhow::anyhow!("jwtRules[{i}] (issuer {:?}): {e}", r.issuer))?;
            rules.push(rule);
        }
        if rules.is_empty() {
            return Ok(Jwt { auth: None });
        }
        let auth = JwtAuthenticator::new(rules, JwtOptions::default())
            .map_err(|e| anyhow::anyhow!("RequestAuthentication: {e}"))?;
        Ok(Jwt { auth: Some(auth) })
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
