//! `PolicySet`: everything loaded, validated, compiled and indexed, plus the evaluation entry
//! points. Decision order follows the "Authorization Policy" reference: CUSTOM, then DENY, then
//! ALLOW; with no ALLOW policy the request is allowed, with ALLOW policies and none matching it
//! is denied. AUDIT never changes the decision.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use crate::authn::RequestAuthn;
use crate::authz::{Attrs, CompiledPolicy};
use crate::crd::{Action, JwtRule, MtlsMode};
use crate::decision::{Decision, PolicyResult, Verdict};
use crate::failclosed::InvalidResource;
use crate::index::WorkloadView;
use crate::load::ReadError;
use crate::mesh::MeshConfig;
use crate::peer::{self, selector_matches, PeerPolicy};
use crate::request::Request;
use crate::shadow::{Shadow, ShadowResult};
use crate::Workload;

/// Why a policy set could not be built: only input that cannot be read at all. Invalid
/// resources do not stop a load; they are enforced fail-closed and listed by
/// [`PolicySet::invalid_resources`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
}

pub(crate) fn conflict_reason(providers: &[String]) -> String {
    format!(
        "CUSTOM policies with different providers ({}) apply to this workload; Istio supports one per workload and denies every request",
        providers.join(", ")
    )
}

/// Loaded and compiled policies. Cheap to share (`Sync`); per-workload views are cached.
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) mesh: MeshConfig,
    pub(crate) authz: Vec<CompiledPolicy>,
    pub(crate) authz_by_ns: HashMap<String, Vec<u32>>,
    pub(crate) peer: Vec<PeerPolicy>,
    pub(crate) request_authn: Vec<RequestAuthn>,
    pub(crate) views: RwLock<ViewCache>,
    pub(crate) invalid: Vec<InvalidResource>,
    /// Set when a document could not be read at all: every request is denied, with this reason.
    pub(crate) deny_everything: Option<String>,
}

/// The authorization policies applying to one workload (see [`PolicySet::workload_policies`]).
#[derive(Debug, Clone)]
pub struct WorkloadPolicies(Arc<WorkloadView>);

impl WorkloadPolicies {
    /// Whether any of them has a `request.headers[...]` condition on a real header (`:method`,
    /// `:path` and `:authority` come from the request line); when not, requests can be
    /// evaluated without copying their headers.
    pub fn needs_request_headers(&self) -> bool {
        self.0.needs_headers
    }
}

/// Workload views by hash of (namespace, labels); collisions resolved by comparing.
pub(crate) type ViewCache = HashMap<u64, Vec<(Workload, Arc<WorkloadView>)>>;

/// Bound on cached workload views; a proxy serves a handful of workloads, the CLI one.
const VIEW_CACHE_LIMIT: usize = 4096;

impl PolicySet {
    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    pub fn authorization_policy_count(&self) -> usize {
        self.authz.len()
    }

    /// Resources with errors, each enforced fail-closed as its entry says.
    pub fn invalid_resources(&self) -> &[InvalidResource] {
        &self.invalid
    }

    /// Why every request is denied, when a document could not be read at all.
    pub fn denies_everything(&self) -> Option<&str> {
        self.deny_everything.as_deref()
    }

    /// Effective mTLS mode for `port` of `w` and the PeerAuthentication (`ns/name`) that set it.
    pub fn mtls_mode(&self, w: &Workload, port: u16) -> (MtlsMode, Option<String>) {
        let (m, p) = peer::resolve(&self.peer, &self.mesh.root_namespace, w, port);
        (m, p.map(|p| p.name.clone()))
    }

    /// JWT rules that apply to `w`: RequestAuthentications are merged, not overridden — those
    /// in the root namespace and in the workload's namespace whose selector (if any) matches.
    pub fn jwt_rules(&self, w: &Workload) -> Vec<&JwtRule> {
        let root = &self.mesh.root_namespace;
        self.request_authn
            .iter()
            .filter(|r| !r.targets_ref)
            .filter(|r| r.namespace == w.namespace || &r.namespace == root)
            .filter(|r| selector_matches(&r.selector, &w.labels))
            .flat_map(|r| r.rules.iter())
            .collect()
    }

    fn view(&self, ns: &str, labels: &BTreeMap<String, String>) -> Arc<WorkloadView> {
        let mut h = DefaultHasher::new();
        ns.hash(&mut h);
        labels.hash(&mut h);
        let key = h.finish();
        if let Some(v) = self.views.read().ok().and_then(|m| {
            m.get(&key).and_then(|l| {
                l.iter()
                    .find(|(w, _)| w.namespace == ns && &w.labels == labels)
                    .map(|(_, v)| v.clone())
            })
        }) {
            return v;
        }
        let root = &self.mesh.root_namespace;
        let mut applicable: Vec<u32> = Vec::new();
        let scopes: &[&str] = if ns == root {
            &[ns]
        } else {
            &[ns, root.as_str()]
        };
        for &n in scopes {
            if let Some(l) = self.authz_by_ns.get(n) {
                applicable.extend(l.iter().copied().filter(|&i| {
                    let p = &self.authz[i as usize];
                    !p.targets_ref && selector_matches(&p.selector, labels)
                }));
            }
        }
        applicable.sort_unstable();
        let view = Arc::new(WorkloadView::build(&self.authz, applicable));
        if let Ok(mut m) = self.views.write() {
            if m.len() >= VIEW_CACHE_LIMIT {
                m.clear();
            }
            let w = Workload {
                namespace: ns.to_string(),
                labels: labels.clone(),
            };
            m.entry(key).or_default().push((w, view.clone()));
        }
        view
    }

    /// Full evaluation with an explanation for every applicable policy: the mTLS mode for the
    /// destination port first (a plaintext peer on a STRICT port is denied; on DISABLE the peer
    /// identity is not available to policies), then CUSTOM → DENY → ALLOW.
    pub fn evaluate(&self, req: &Request) -> Decision {
        let w = Workload {
            namespace: req.destination.namespace.clone(),
            labels: req.destination.labels.clone(),
        };
        let (mode, mtls_policy) = self.mtls_mode(&w, req.destination.port);
        let plaintext = req.source.principal.is_none();
        let view = self.view(&req.destination.namespace, &req.destination.labels);
        let attrs = Attrs::new(req, mode == MtlsMode::Disable);
        let results: Vec<PolicyResult> = view
            .all
            .iter()
            .map(|&i| self.explain_policy(&self.authz[i as usize], &attrs))
            .collect();
        let by = |p: &Option<String>| {
            p.as_ref().map_or("the default".to_string(), |n| {
                let invalid = self.invalid.iter().any(|i| {
                    i.kind == "PeerAuthentication" && format!("{}/{}", i.namespace, i.name) == *n
                });
                if invalid {
                    format!("PeerAuthentication {n}, which is invalid and enforced as STRICT (fail-closed)")
                } else {
                    format!("PeerAuthentication {n}")
                }
            })
        };
        let (decision, mut reason) = if let Some(why) = &self.deny_everything {
            (Verdict::Deny, why.clone())
        } else if plaintext && mode == MtlsMode::Strict {
            (
                Verdict::Deny,
                format!(
                    "plaintext connection rejected: mTLS is STRICT on port {} (set by {}); the client must present a mesh certificate",
                    req.destination.port,
                    by(&mtls_policy)
                ),
            )
        } else if let Some(c) = &view.custom_conflict {
            (Verdict::Deny, conflict_reason(c))
        } else {
            self.decide(&results, true)
        };
        if mode == MtlsMode::Disable && req.source.principal.is_some() {
            reason.push_str(&format!(
                " (mTLS is DISABLE on port {} by {}, so the peer identity was not used)",
                req.destination.port,
                by(&mtls_policy)
            ));
        }
        Decision {
            decision,
            mtls_mode: Some(mode),
            mtls_policy,
            reason,
            policies: results,
            shadow: Default::default(),
        }
    }

    fn decide(&self, results: &[PolicyResult], with_custom: bool) -> (Verdict, String) {
        let enforced = |a: Action| results.iter().filter(move |r| r.action == a && !r.dry_run);
        if with_custom {
            if let Some(c) = enforced(Action::Custom).find(|r| r.matched) {
                let provider = c.provider.clone().unwrap_or_default();
                let (after, why) = self.decide(results, false);
                return (
                    Verdict::Custom { provider: provider.clone(), policy: c.name.clone() },
                    format!(
                        "CUSTOM policy {} matched: the external authorizer {provider:?} decides; if it allows, the rest gives {}: {why}",
                        c.name,
                        after.as_str()
                    ),
                );
            }
        }
        if let Some(d) = enforced(Action::Deny).find(|r| r.matched) {
            let why = d
                .fail_closed
                .as_ref()
                .map(|f| format!("; the policy is {f}"))
                .unwrap_or_default();
            return (
                Verdict::Deny,
                format!(
                    "denied by DENY policy {} (rule {}){why}",
                    d.name,
                    d.rule.unwrap_or(0)
                ),
            );
        }
        let mut allows = enforced(Action::Allow).peekable();
        if allows.peek().is_none() {
            return (
                Verdict::Allow,
                "no ALLOW policy applies to this workload, so requests not denied are allowed"
                    .into(),
            );
        }
        let allows: Vec<&PolicyResult> = allows.collect();
        match allows.iter().find(|r| r.matched) {
            Some(a) => (
                Verdict::Allow,
                format!(
                    "allowed by ALLOW policy {} (rule {})",
                    a.name,
                    a.rule.unwrap_or(0)
                ),
            ),
            None => {
                let failed: Vec<String> = allows
                    .iter()
                    .filter_map(|r| r.fail_closed.as_ref().map(|f| format!("{} is {f}", r.name)))
                    .collect();
                let why = if failed.is_empty() {
                    String::new()
                } else {
                    format!("; {}", failed.join("; "))
                };
                (
                    Verdict::Deny,
                    format!(
                        "ALLOW policies apply to this workload ({}) but none matched the request{why}",
                        allows
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }
        }
    }

    fn explain_policy(&self, p: &CompiledPolicy, a: &Attrs) -> PolicyResult {
        let wide = p.widens_on_tcp();
        let tcp = a.req.http.is_none();
        let mut misses = Vec::new();
        let mut rule = None;
        if tcp && p.http_provider_only {
            misses.push(
                "its provider is an HTTP ext_authz service, which Istio does not apply to TCP connections"
                    .to_string(),
            );
        } else {
            for (i, r) in p.rules.iter().enumerate() {
                match r.check(a, wide, true) {
                    Ok(()) => {
                        rule = Some(i);
                        break;
                    }
                    Err(m) => misses.push(format!("rule {i}: {}", m.unwrap_or_default())),
                }
            }
        }
        let reason = match rule {
            Some(i) => {
                let r = &p.rules[i];
                let mut s = if r.from.is_empty() && r.to.is_empty() && r.when.is_empty() {
                    format!("rule {i} is empty and matches every request")
                } else {
                    format!("rule {i} matched")
                };
                if wide && tcp && r.http_only {
                    s.push_str(&format!(
                        " (its HTTP-only fields are ignored on TCP, as Istio does for {})",
                        p.action.as_str()
                    ));
                }
                s
            }
            None if p.rules.is_empty() && misses.is_empty() => {
                "has no rules, so it matches no request".to_string()
            }
            None => misses.join("; "),
        };
        PolicyResult {
            name: p.name.clone(),
            action: p.action,
            matched: rule.is_some(),
            rule,
            dry_run: p.dry_run,
            provider: p.provider.clone(),
            reason,
            fail_closed: p.fail_closed.clone(),
        }
    }

    /// Hot path for the proxy: CUSTOM → DENY → ALLOW without the mTLS check (the TLS layer
    /// enforced it). `policies` holds only the deciding policy and a matching AUDIT policy.
    pub fn evaluate_authz_only(&self, req: &Request) -> Decision {
        self.fast(req, true)
    }

    /// Continues after the CUSTOM provider allowed the request: DENY → ALLOW only.
    pub fn evaluate_after_custom(&self, req: &Request) -> Decision {
        self.fast(req, false)
    }

    /// The authorization policies that apply to `w`, looked up once: a proxy serving one
    /// workload keeps this and evaluates with [`PolicySet::evaluate_for`], so a request needs
    /// neither the workload's namespace and labels nor a lookup by them.
    pub fn workload_policies(&self, w: &Workload) -> WorkloadPolicies {
        WorkloadPolicies(self.view(&w.namespace, &w.labels))
    }

    /// [`PolicySet::evaluate_authz_only`] (`after_custom: false`) or
    /// [`PolicySet::evaluate_after_custom`] (`true`) for the workload of `wp`, which must come
    /// from this set; `req.destination.namespace` and `.labels` are not read.
    pub fn evaluate_for(
        &self,
        wp: &WorkloadPolicies,
        req: &Request,
        after_custom: bool,
    ) -> Decision {
        self.fast_in(&wp.0, req, !after_custom)
    }

    fn fast(&self, req: &Request, with_custom: bool) -> Decision {
        let view = self.view(&req.destination.namespace, &req.destination.labels);
        self.fast_in(&view, req, with_custom)
    }

    fn fast_in(&self, view: &WorkloadView, req: &Request, with_custom: bool) -> Decision {
        let a = Attrs::new(req, false);
        let mut policies = Vec::with_capacity(2);
        let mut shadow = Shadow::default();
        let custom = if req.http.is_none() {
            &view.custom_tcp
        } else {
            &view.custom
        };
        if let Some(rr) = view.audit.first_match(&self.authz, &a) {
            policies.push(self.hit(rr, "AUDIT policy matched"));
        }
        let (decision, reason) = if let Some(why) = &self.deny_everything {
            (Verdict::Deny, why.clone())
        } else if let Some(c) = &view.custom_conflict {
            (Verdict::Deny, conflict_reason(c))
        } else if let Some(rr) = with_custom
            .then(|| custom.first_match(&self.authz, &a))
            .flatten()
        {
            let p = &self.authz[rr.0 as usize];
            policies.push(self.hit(rr, "CUSTOM policy matched"));
            (
                Verdict::Custom {
                    provider: p.provider.clone().unwrap_or_default(),
                    policy: p.name.clone(),
                },
                "CUSTOM policy matched; ask the external authorizer".to_string(),
            )
        } else {
            // The DENY filter is reached: its shadow engine runs whatever the enforced one says.
            if view.has_shadow_deny {
                let hit = view.shadow_deny.first_match(&self.authz, &a);
                shadow.deny = Some(self.shadow_result(hit, Action::Deny));
            }
            if let Some(rr) = view.deny.first_match(&self.authz, &a) {
                policies.push(self.hit(rr, "DENY policy matched"));
                let p = &self.authz[rr.0 as usize];
                let why = p
                    .fail_closed
                    .as_ref()
                    .map(|f| format!("; the policy is {f}"))
                    .unwrap_or_default();
                (
                    Verdict::Deny,
                    format!("denied by DENY policy {}{why}", p.name),
                )
            } else {
                // Only a request the DENY filter let through reaches the ALLOW filter.
                if view.has_shadow_allow {
                    let hit = view.shadow_allow.first_match(&self.authz, &a);
                    shadow.allow = Some(self.shadow_result(hit, Action::Allow));
                }
                if !view.has_allow {
                    (Verdict::Allow, "no ALLOW policy applies".to_string())
                } else if let Some(rr) = view.allow.first_match(&self.authz, &a) {
                    policies.push(self.hit(rr, "ALLOW policy matched"));
                    (
                        Verdict::Allow,
                        format!("allowed by ALLOW policy {}", self.authz[rr.0 as usize].name),
                    )
                } else {
                    (Verdict::Deny, "no ALLOW policy matched".to_string())
                }
            }
        };
        Decision {
            decision,
            mtls_mode: None,
            mtls_policy: None,
            reason,
            policies,
            shadow,
        }
    }

    /// A shadow engine of `action` and its first matching rule, as Envoy reports it.
    fn shadow_result(&self, hit: Option<(u32, u32)>, action: Action) -> ShadowResult {
        let matched = hit.is_some();
        ShadowResult {
            allowed: matched == (action == Action::Allow),
            effective_policy_id: hit
                .map(|(p, r)| crate::shadow::policy_id(&self.authz[p as usize].name, r as usize)),
        }
    }

    fn hit(&self, rr: (u32, u32), reason: &str) -> PolicyResult {
        let p = &self.authz[rr.0 as usize];
        PolicyResult {
            name: p.name.clone(),
            action: p.action,
            matched: true,
            rule: Some(rr.1 as usize),
            dry_run: false,
            provider: p.provider.clone(),
            reason: reason.to_string(),
            fail_closed: p.fail_closed.clone(),
        }
    }
}
