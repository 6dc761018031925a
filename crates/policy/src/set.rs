//! `PolicySet`: everything loaded, validated, compiled and indexed, plus the evaluation entry
//! points. Decision order follows the "Authorization Policy" reference: CUSTOM, then DENY, then
//! ALLOW; with no ALLOW policy the request is allowed, with ALLOW policies and none matching it
//! is denied. AUDIT never changes the decision.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::authz::{self, Attrs, CompiledPolicy};
use crate::crd::{Action, JwtRule, MtlsMode, RequestAuthenticationSpec};
use crate::decision::{Decision, PolicyResult, Verdict};
use crate::document::{self, Parsed, Resource, Spec};
use crate::index::WorkloadView;
use crate::load::{self, ReadError, SourceText};
use crate::mesh::MeshConfig;
use crate::peer::{self, selector_matches, PeerPolicy};
use crate::problem::{Notice, Problem};
use crate::request::Request;
use crate::Workload;

/// Why a policy set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(ps: &[Problem]) -> String {
    ps.iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone)]
struct RequestAuthn {
    namespace: String,
    selector: Option<Vec<(String, String)>>,
    targets_ref: bool,
    rules: Vec<JwtRule>,
}

fn conflict_reason(providers: &[String]) -> String {
    format!(
        "CUSTOM policies with different providers ({}) apply to this workload; Istio supports one per workload and denies every request",
        providers.join(", ")
    )
}

/// Result of [`validate`]: every problem and notice, and how many resources were read.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
    pub authorization_policies: usize,
    pub peer_authentications: usize,
    pub request_authentications: usize,
}

/// Loaded and compiled policies. Cheap to share (`Sync`); per-workload views are cached.
#[derive(Debug)]
pub struct PolicySet {
    mesh: MeshConfig,
    authz: Vec<CompiledPolicy>,
    authz_by_ns: HashMap<String, Vec<u32>>,
    peer: Vec<PeerPolicy>,
    request_authn: Vec<RequestAuthn>,
    views: RwLock<ViewCache>,
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
type ViewCache = HashMap<u64, Vec<(Workload, Arc<WorkloadView>)>>;

/// Bound on cached workload views; a proxy serves a handful of workloads, the CLI one.
const VIEW_CACHE_LIMIT: usize = 4096;

/// Parses, validates and compiles; returns the set even when problems were found.
fn build(sources: &[SourceText], mesh: &MeshConfig) -> (PolicySet, Report) {
    let mut parsed = Parsed::default();
    for s in sources {
        document::parse_text(&s.file, &s.text, &mut parsed);
    }
    let mut report = Report {
        problems: parsed.problems,
        notices: parsed.notices,
        ..Default::default()
    };
    let mut seen: HashMap<(&'static str, String, String), String> = HashMap::new();
    let mut authz = Vec::new();
    let mut peers = Vec::new();
    let mut ras = Vec::new();
    for r in &parsed.resources {
        let kind = match r.spec {
            Spec::Authorization(_) => "AuthorizationPolicy",
            Spec::Peer(_) => "PeerAuthentication",
            Spec::Request(_) => "RequestAuthentication",
        };
        if let Some(first) = seen.insert(
            (kind, r.namespace.clone(), r.name.clone()),
            r.location.to_string(),
        ) {
            report.problems.push(
                Problem::new(
                    r.location.at("metadata.name"),
                    format!("duplicate {kind} {}/{}", r.namespace, r.name),
                )
                .hint(format!(
                    "first defined at {first}; Kubernetes keeps only one object per name"
                )),
            );
        }
        match &r.spec {
            Spec::Authorization(spec) => {
                report.authorization_policies += 1;
                authz.push(authz::compile(
                    &r.name,
                    &r.namespace,
                    r.dry_run,
                    spec,
                    &r.location,
                    mesh,
                    &mut report.problems,
                ));
            }
            Spec::Peer(spec) => {
                report.peer_authentications += 1;
                peers.push(compile_peer(r, spec, mesh, &mut report));
            }
            Spec::Request(spec) => {
                report.request_authentications += 1;
                ras.push(compile_request_authn(r, spec, &mut report.problems));
            }
        }
    }
    authz.sort_by(|a, b| a.name.cmp(&b.name));
    check_custom_providers(&authz, mesh, &mut report.problems);
    let mut authz_by_ns: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, p) in authz.iter().enumerate() {
        authz_by_ns
            .entry(p.namespace.clone())
            .or_default()
            .push(i as u32);
    }
    let set = PolicySet {
        mesh: mesh.clone(),
        authz,
        authz_by_ns,
        peer: peers,
        request_authn: ras,
        views: RwLock::new(HashMap::new()),
    };
    (set, report)
}

/// Istio's ext_authz integration supports one provider per workload ("Authorization Policy"
/// reference, CUSTOM action): flag CUSTOM policies with different providers that can select the
/// same workload (same namespace or the root namespace, and selectors that do not conflict).
fn check_custom_providers(
    authz: &[CompiledPolicy],
    mesh: &MeshConfig,
    problems: &mut Vec<Problem>,
) {
    let custom: Vec<&CompiledPolicy> = authz
        .iter()
        .filter(|p| p.action == Action::Custom && !p.targets_ref && p.provider.is_some())
        .collect();
    let compatible = |a: &Option<Vec<(String, String)>>, b: &Option<Vec<(String, String)>>| {
        let (Some(a), Some(b)) = (a, b) else {
            return true;
        };
        a.iter()
            .all(|(k, v)| b.iter().all(|(k2, v2)| k != k2 || v == v2))
    };
    for (i, b) in custom.iter().enumerate() {
        let clash = custom[..i].iter().find(|a| {
            a.provider != b.provider
                && (a.namespace == b.namespace
                    || a.namespace == mesh.root_namespace
                    || b.namespace == mesh.root_namespace)
                && compatible(&a.selector, &b.selector)
        });
        if let Some(a) = clash {
            problems.push(
                Problem::new(
                    b.location.at("spec.provider.name"),
                    format!(
                        "CUSTOM provider {:?} may apply to the same workloads as provider {:?} of {}",
                        b.provider.as_deref().unwrap_or(""),
                        a.provider.as_deref().unwrap_or(""),
                        a.name
                    ),
                )
                .hint("Istio supports one ext_authz provider per workload and denies every request to a workload with two; use one provider or make the selectors disjoint")
                .warning(),
            );
        }
    }
}

fn compile_peer(
    r: &Resource,
    spec: &crate::crd::PeerAuthenticationSpec,
    mesh: &MeshConfig,
    report: &mut Report,
) -> PeerPolicy {
    let loc = r.location.at("spec");
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !has_selector {
        report.problems.push(
            Problem::new(loc.at("portLevelMtls"), "portLevelMtls requires a workload selector")
                .hint("add selector.matchLabels for the workload whose ports these are; Istio rejects port-level settings in namespace- or mesh-wide policies"),
        );
    }
    for port in spec.port_level_mtls.keys() {
        if *port == 0 || *port > 65535 {
            report.problems.push(
                Problem::new(
                    loc.at(format!("portLevelMtls.{port}")),
                    format!("{port} is not a valid port"),
                )
                .hint("use the workload's container port, 1-65535"),
            );
        }
    }
    if has_selector && r.namespace == mesh.root_namespace {
        report.notices.push(Notice {
            location: loc.at("selector"),
            message: format!(
                "PeerAuthentication {}/{} has a selector in the root namespace; Istio applies it to no workload",
                r.namespace, r.name
            ),
        });
    }
    PeerPolicy {
        name: format!("{}/{}", r.namespace, r.name),
        namespace: r.namespace.clone(),
        selector: spec.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        mode: spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
        port_modes: spec
            .port_level_mtls
            .iter()
            .map(|(p, m)| (*p, m.mode))
            .collect(),
        created: r.creation_timestamp.clone(),
    }
}

fn compile_request_authn(
    r: &Resource,
    spec: &RequestAuthenticationSpec,
    problems: &mut Vec<Problem>,
) -> RequestAuthn {
    let loc = r.location.at("spec");
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let l = loc.at(format!("jwtRules[{i}]"));
        if rule.issuer.is_empty() && rule.jwks_uri.as_deref().unwrap_or("").is_empty() {
            problems.push(
                Problem::new(l.at("issuer"), "issuer or jwksUri must be set").hint(
                    "set issuer to the token's `iss` claim, e.g. https://accounts.example.com",
                ),
            );
        }
        // istio/api: spaceDelimitedClaims items have MinLength=1, the list MaxItems=64.
        if rule.space_delimited_claims.len() > 64 {
            problems.push(
                Problem::new(
                    l.at("spaceDelimitedClaims"),
                    format!(
                        "{} claims; Istio allows at most 64",
                        rule.space_delimited_claims.len()
                    ),
                )
                .hint("list only the claims policies match word by word"),
            );
        }
        for (field, vs) in [
            ("audiences", &rule.audiences),
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
            ("spaceDelimitedClaims", &rule.space_delimited_claims),
        ] {
            for (j, v) in vs.iter().enumerate() {
                if v.is_empty() {
                    problems.push(
                        Problem::new(l.at(format!("{field}[{j}]")), "empty string")
                            .hint("remove the empty entry"),
                    );
                }
            }
        }
        if let Some(t) = &rule.timeout {
            if crate::matcher::parse_duration(t).is_none() {
                problems.push(
                    Problem::new(l.at("timeout"), format!("{t:?} is not a duration"))
                        .hint("use a duration such as 5s, 500ms or 1m"),
                );
            }
        }
        if let Some(u) = &rule.jwks_uri {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                problems.push(
                    Problem::new(l.at("jwksUri"), format!("{u:?} is not an http(s) URL"))
                        .hint("jwksUri must be an https:// URL serving the JWKS"),
                );
            }
        }
        if let Some(j) = &rule.jwks {
            if serde_json::from_str::<serde_json::Value>(j).is_err() {
                problems.push(
                    Problem::new(l.at("jwks"), "jwks is not a JSON document").hint(
                        "jwks holds the JWKS inline as a JSON string, e.g. '{\"keys\":[...]}'",
                    ),
                );
            }
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                problems.push(
                    Problem::new(
                        l.at(format!("fromHeaders[{j}].name")),
                        "header name is empty",
                    )
                    .hint("e.g. name: Authorization, prefix: \"Bearer \""),
                );
            }
        }
        for (j, h) in rule.output_claim_to_headers.iter().enumerate() {
            if h.header.is_empty() || h.claim.is_empty() {
                problems.push(
                    Problem::new(
                        l.at(format!("outputClaimToHeaders[{j}]")),
                        "header and claim must both be set",
                    )
                    .hint("e.g. header: x-jwt-sub, claim: sub"),
                );
            }
        }
    }
    RequestAuthn {
        namespace: r.namespace.clone(),
        selector: spec.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        targets_ref: spec.target_ref.is_some() || !spec.target_refs.is_empty(),
        rules: spec.jwt_rules.clone(),
    }
}

/// Parses, validates and compiles everything, collecting every problem and notice.
pub fn validate(sources: &[SourceText], mesh: &MeshConfig) -> Report {
    build(sources, mesh).1
}

impl PolicySet {
    /// Reads files/directories and builds the set; any problem makes it an error.
    pub fn load(
        paths: &[PathBuf],
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        let sources = load::read_paths(paths)?;
        PolicySet::from_sources(&sources, mesh)
    }

    pub fn from_sources(
        sources: &[SourceText],
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        let (set, report) = build(sources, mesh);
        let (warnings, errors): (Vec<Problem>, Vec<Problem>) =
            report.problems.into_iter().partition(|p| p.warning);
        if !errors.is_empty() {
            return Err(LoadError::Invalid(errors));
        }
        let mut notices = report.notices;
        notices.extend(warnings.into_iter().map(|w| Notice {
            location: w.location,
            message: match w.hint {
                Some(h) => format!("warning: {} (hint: {h})", w.message),
                None => format!("warning: {}", w.message),
            },
        }));
        Ok((set, notices))
    }

    /// One YAML text (possibly multi-document); `file` labels locations in messages.
    pub fn from_yaml_str(
        file: &str,
        text: &str,
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        PolicySet::from_sources(
            &[SourceText {
                file: file.into(),
                text: text.into(),
            }],
            mesh,
        )
    }

    pub fn mesh(&self) -> &MeshConfig {
        &self.mesh
    }

    pub fn authorization_policy_count(&self) -> usize {
        self.authz.len()
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
                format!("PeerAuthentication {n}")
            })
        };
        let (decision, mut reason) = if plaintext && mode == MtlsMode::Strict {
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
            return (
                Verdict::Deny,
                format!(
                    "denied by DENY policy {} (rule {})",
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
            None => (
                Verdict::Deny,
                format!(
                    "ALLOW policies apply to this workload ({}) but none matched the request",
                    allows
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
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
        let custom = if req.http.is_none() {
            &view.custom_tcp
        } else {
            &view.custom
        };
        if let Some(rr) = view.audit.first_match(&self.authz, &a) {
            policies.push(self.hit(rr, "AUDIT policy matched"));
        }
        let (decision, reason) = if let Some(c) = &view.custom_conflict {
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
        } else if let Some(rr) = view.deny.first_match(&self.authz, &a) {
            policies.push(self.hit(rr, "DENY policy matched"));
            (
                Verdict::Deny,
                format!("denied by DENY policy {}", self.authz[rr.0 as usize].name),
            )
        } else if !view.has_allow {
            (Verdict::Allow, "no ALLOW policy applies".to_string())
        } else if let Some(rr) = view.allow.first_match(&self.authz, &a) {
            policies.push(self.hit(rr, "ALLOW policy matched"));
            (
                Verdict::Allow,
                format!("allowed by ALLOW policy {}", self.authz[rr.0 as usize].name),
            )
        } else {
            (Verdict::Deny, "no ALLOW policy matched".to_string())
        };
        Decision {
            decision,
            mtls_mode: None,
            mtls_policy: None,
            reason,
            policies,
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
        }
    }
}
