//! The proxy's view of policy: the loaded `PolicySet` for *this* workload, turned into the
//! questions the data plane asks (which mTLS mode on this port? may this connection/request
//! pass?).
//!
//! The policy crate owns Istio semantics; this module only translates sockets, TLS identities and
//! HTTP requests into its `Request` shape and its verdicts into something the listeners act on.
//!
//! An invalid policy resource does not stop a load: the policy crate enforces it fail-closed
//! (`trustmesh_policy::failclosed`) and the rest applies. Each one is logged here when a set is
//! loaded — at error when it now denies traffic, at warn otherwise — and shown on /config_dump
//! and in the `trustmesh_policy_invalid_resources` metric.

use std::collections::BTreeMap;

use anyhow::anyhow;
use http::{HeaderMap, Uri};
use serde::Deserialize;
use trustmesh_policy::load::read_paths;
use trustmesh_policy::{
    Action, MeshConfig, MtlsMode, PolicySet, ReadError, Request, SourceText, Verdict, Workload,
    WorkloadPolicies,
};

use crate::config::ProxyConfig;
use crate::conn::ConnCtx;

/// Every YAML document of every source file as JSON, for operators to see what is loaded.
fn documents(sources: &[SourceText]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for src in sources {
        // Never hand the YAML parser text the policy loader refused as too deeply nested.
        if let Err(e) = trustmesh_policy::shape::check(&src.text) {
            out.push(serde_json::json!({ "file": src.file, "unreadable": e }));
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&src.text) {
            // After a syntax error the rest of the file cannot be read (the deserializer would
            // keep yielding the error): note it and go on with the next file.
            let v = match serde_yaml::Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    out.push(serde_json::json!({ "file": src.file, "unreadable": e.to_string() }));
                    break;
                }
            };
            if v.is_null() {
                continue;
            }
            if let Ok(json) = serde_json::to_value(&v) {
                out.push(serde_json::json!({ "file": src.file, "document": json }));
            }
        }
    }
    out
}

/// What the listener should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Ask this ext_authz provider, then continue with DENY/ALLOW policies if it allows.
    Custom(String),
}

#[derive(Debug, Clone)]
pub struct ProxyVerdict {
    pub decision: Decision,
    /// Deciding policy as `namespace.name`.
    pub policy: Option<String>,
    pub reason: String,
    /// On a denial: the deciding rule as Istio names it (`ns[<ns>]-policy[<name>]-rule[<i>]`),
    /// for Envoy's `rbac_access_denied_matched_policy[...]`; `None` when no policy matched.
    pub denied_by: Option<String>,
    /// The dry-run policies' shadow results (empty without dry-run policies).
    pub shadow: trustmesh_policy::Shadow,
    /// The AUDIT policy that matched (`namespace/name`): the request is marked for audit.
    pub audit_policy: Option<String>,
}

impl ProxyVerdict {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
    pub fn label(&self) -> &'static str {
        match self.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Custom(_) => "custom",
        }
    }
}

/// HTTP attributes of one request.
pub struct HttpAttrs<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub auth: Option<&'a crate::jwt::AuthInfo>,
}

pub struct Policies {
    pub set: PolicySet,
    pub workload: Workload,
    /// The authorization policies applying to `workload`, looked up once per load.
    applicable: WorkloadPolicies,
    /// Where the set was loaded from, for /config_dump.
    pub sources: Vec<String>,
    /// The loaded policy documents as JSON (with their file), for /config_dump.
    pub documents: Vec<serde_json::Value>,
    jwt: crate::authn::Jwt,
}

impl Policies {
    /// The Istio YAML files under `policyDir`, read once for the policies and the registry.
    /// An existing but empty directory is a normal state (no policies yet: PERMISSIVE, allow
    /// all), not an error; a missing one is a configuration mistake and is reported.
    pub fn read_sources(cfg: &ProxyConfig) -> anyhow::Result<Vec<SourceText>> {
        match &cfg.policy_dir {
            None => Ok(Vec::new()),
            Some(p) => match read_paths(std::slice::from_ref(p)) {
                Ok(s) => Ok(s),
                Err(ReadError::Empty { .. }) => Ok(Vec::new()),
                Err(e) => Err(anyhow!("policyDir: {e}")),
            },
        }
    }

    /// Builds the policies from `sources`; `registry_objects` are the resources the service
    /// registry read from the same files, whose "not a security kind" notices are noise.
    pub fn load(
        cfg: &ProxyConfig,
        mesh: &MeshConfig,
        sources: &[SourceText],
        registry_objects: &[trustmesh_policy::Location],
    ) -> anyhow::Result<Policies> {
        let workload = Workload {
            namespace: cfg.workload.namespace.clone(),
            labels: cfg.workload.labels.clone(),
        };
        let (set, notices) =
            PolicySet::from_sources(sources, mesh).map_err(|e| anyhow!("policies: {e}"))?;
        for n in notices {
            if !registry_objects.contains(&n.location) {
                tracing::warn!("policy notice: {n}");
            }
        }
        log_invalid(&set);
        let jwt = crate::authn::Jwt::new(&set, &workload)?;
        let applicable = set.workload_policies(&workload);
        Ok(Policies {
            applicable,
            sources: cfg
                .policy_dir
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            documents: documents(sources),
            set,
            workload,
            jwt,
        })
    }

    /// Effective mTLS mode for a workload port; UNSET resolves to PERMISSIVE as in Istio.
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        match self.set.mtls_mode(&self.workload, port).0 {
            MtlsMode::Unset => MtlsMode::Permissive,
            m => m,
        }
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Option<crate::jwt::AuthInfo>, crate::jwt::JwtError> {
        self.jwt.authenticate(headers, uri)
    }

    /// See [`crate::authn::Jwt::wait_ready`].
    pub async fn jwks_ready(&self, timeout: std::time::Duration) -> bool {
        self.jwt.wait_ready(timeout).await
    }

    pub fn prepare_upstream(&self, auth: Option<&crate::jwt::AuthInfo>, headers: &mut HeaderMap) {
        self.jwt.prepare_upstream(auth, headers)
    }

    /// `principal`: the peer's SPIFFE ID as text when the caller has it rendered already. The
    /// destination's namespace and labels stay empty: `applicable` already stands for them.
    fn base_request(&self, ctx: &ConnCtx, principal: Option<&str>) -> Request {
        let mut r = Request::default();
        r.destination.ip = Some(ctx.target.ip());
        r.destination.port = ctx.target.port();
        r.source.principal = match principal {
            Some(p) => Some(p.to_string()),
            None => ctx.peer.as_ref().map(|p| p.id.to_string()),
        };
        r.source.ip = Some(ctx.source.ip());
        // Istio's default (no trusted proxies in front): the remote address is the peer itself.
        r.source.remote_ip = Some(ctx.source.ip());
        r.connection.sni = ctx.sni.clone();
        r
    }

    pub fn check_tcp(&self, ctx: &ConnCtx) -> ProxyVerdict {
        let req = self.base_request(ctx, None);
        self.decide(&req, false)
    }

    /// After a CUSTOM provider admitted the connection: only DENY and ALLOW policies remain.
    pub fn check_tcp_after_custom(&self, ctx: &ConnCtx) -> ProxyVerdict {
        let req = self.base_request(ctx, None);
        self.decide(&req, true)
    }

    fn http_request(&self, ctx: &ConnCtx, principal: Option<&str>, a: &HttpAttrs<'_>) -> Request {
        let mut req = self.base_request(ctx, principal);
        let mut headers = BTreeMap::new();
        // Copied only when a policy has a `request.headers[...]` condition on a real header;
        // `:method`, `:path` and `:authority` are read from `method`, `path` and `host`.
        let header_source = if self.applicable.needs_request_headers() {
            Some(a.headers)
        } else {
            None
        };
        for (k, v) in header_source.into_iter().flat_map(|h| h.iter()) {
            if let Ok(v) = v.to_str() {
                // Repeated headers are joined as Envoy presents them to RBAC.
                headers
                    .entry(k.as_str().to_string())
                    .and_modify(|e: &mut String| {
                        e.push(',');
                        e.push_str(v);
                    })
                    .or_insert_with(|| v.to_string());
            }
        }
        req.http = Some(trustmesh_policy::request::Http {
            method: a.method.to_string(),
            path: a.path.to_string(),
            host: a.host.to_string(),
            headers,
        });
        req.auth = a.auth.map(|x| trustmesh_policy::request::Auth {
            principal: x.principal.clone(),
            audiences: x.audiences.clone(),
            presenter: x.presenter.clone().unwrap_or_default(),
            claims: match &x.claims {
                serde_json::Value::Object(m) => m.clone(),
                _ => Default::default(),
            },
            space_delimited_claims: x.space_delimited_claims.clone(),
        });
        req
    }

    /// `principal`: the verified peer's SPIFFE ID, if the caller rendered it already.
    pub fn check_http(
        &self,
        ctx: &ConnCtx,
        principal: Option<&str>,
        a: &HttpAttrs<'_>,
    ) -> ProxyVerdict {
        let req = self.http_request(ctx, principal, a);
        self.decide(&req, false)
    }

    /// After a CUSTOM provider allowed: only DENY and ALLOW policies remain.
    pub fn check_http_after_custom(
        &self,
        ctx: &ConnCtx,
        principal: Option<&str>,
        a: &HttpAttrs<'_>,
    ) -> ProxyVerdict {
        let req = self.http_request(ctx, principal, a);
        self.decide(&req, true)
    }

    fn decide(&self, req: &Request, after_custom: bool) -> ProxyVerdict {
        let v = self.set.evaluate_for(&self.applicable, req, after_custom);
        let mut audit_policy = None;
        let mut decided = None;
        for p in v.policies {
            if p.action == Action::Audit {
                audit_policy = Some(p.name);
            } else {
                decided = Some(p);
            }
        }
        let decision = match v.decision {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny => Decision::Deny,
            Verdict::Custom { provider, .. } => Decision::Custom(provider),
        };
        // Only a denial names its rule; an allowed request allocates nothing for it.
        let denied_by = match (&decision, &decided) {
            (Decision::Deny, Some(p)) => Some(trustmesh_policy::shadow::policy_id(
                &p.name,
                p.rule.unwrap_or(0),
            )),
            _ => None,
        };
        log_rbac(&decision, decided.as_ref(), &v.shadow);
        ProxyVerdict {
            decision,
            policy: decided.map(|p| p.name),
            reason: v.reason,
            denied_by,
            shadow: v.shadow,
            audit_policy,
        }
    }

    /// Invalid resources by (kind, outcome label), for the metric.
    pub fn invalid_counts(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut m = BTreeMap::new();
        for i in self.set.invalid_resources() {
            let kind = if i.kind.is_empty() {
                "(unreadable)".to_string()
            } else {
                i.kind.clone()
            };
            *m.entry((kind, i.outcome.label())).or_default() += 1;
        }
        m
    }

    pub fn dump(&self, ports: &[u16]) -> serde_json::Value {
        let modes: BTreeMap<String, serde_json::Value> = ports
            .iter()
            .map(|p| {
                let (mode, by) = self.set.mtls_mode(&self.workload, *p);
                (
                    p.to_string(),
                    serde_json::json!({ "mode": self.mtls_mode(*p).as_str(), "declared": mode.as_str(), "policy": by }),
                )
            })
            .collect();
        serde_json::json!({
            "sources": self.sources,
            "workload": { "namespace": self.workload.namespace, "labels": self.workload.labels },
            "authorizationPolicies": self.set.authorization_policy_count(),
            "documents": self.documents,
            "mtlsByPort": modes,
            "jwtIssuers": self.set.jwt_rules(&self.workload).iter().map(|r| r.issuer.clone()).collect::<Vec<_>>(),
            "invalidResources": self.set.invalid_resources(),
            "deniesEverything": self.set.denies_everything(),
        })
    }
}

/// The `rbac` logger's debug lines, in the words of Envoy's RBAC filter (the dry-run task
/// greps `shadow denied, matched policy ns[foo]-policy[deny-path-headers]-rule[0]`).
fn log_rbac(
    decision: &Decision,
    decided: Option<&trustmesh_policy::PolicyResult>,
    shadow: &trustmesh_policy::Shadow,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let id = |p: Option<&trustmesh_policy::PolicyResult>| {
        p.map_or("none".to_string(), |p| {
            trustmesh_policy::shadow::policy_id(&p.name, p.rule.unwrap_or(0))
        })
    };
    let enforced = match decision {
        Decision::Allow => "allowed",
        Decision::Deny => "denied",
        Decision::Custom(_) => "sent to the CUSTOM provider",
    };
    tracing::debug!("enforced {enforced}, matched policy {}", id(decided));
    for r in [&shadow.deny, &shadow.allow].into_iter().flatten() {
        tracing::debug!(
            "shadow {}, matched policy {}",
            r.result(),
            r.effective_policy_id.as_deref().unwrap_or("none")
        );
    }
}

/// One line per invalid resource: error when it now denies (or requires mTLS, or rejects
/// tokens), warn when it only allows or audits less.
fn log_invalid(set: &PolicySet) {
    use trustmesh_policy::Outcome;
    for i in set.invalid_resources() {
        let resource = i.title();
        let reasons = i.reasons.join("; ");
        match i.outcome {
            Outcome::DroppedRules(_)
            | Outcome::AllowsNothing
            | Outcome::AuditsAll
            | Outcome::EnforcedAsWritten => {
                tracing::warn!(%resource, location = %i.location, action = %i.action, %reasons, "invalid policy enforced fail-closed");
            }
            _ => {
                tracing::error!(%resource, location = %i.location, action = %i.action, %reasons, "invalid policy enforced fail-closed");
            }
        }
    }
}
