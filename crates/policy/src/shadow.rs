//! Dry-run (`istio.io/dry-run: "true"`) policies as Envoy's shadow engines, the way Istio
//! builds them, so an operator sees at runtime what a policy would do before enforcing it.
//!
//! Istio's builder (`pilot/pkg/security/authz/builder/builder.go`, `build`) puts each dry-run
//! policy's rules into the `shadow_rules` of the RBAC filter of its own action, named
//! `ns[<ns>]-policy[<name>]-rule[<i>]`; the shadow ALLOW engine holds only the dry-run ALLOW
//! policies (the enforced ones stay in `rules`; testdata `dry-run-mix-out.yaml`), and the
//! shadow stat prefix is `istio_dry_run_allow_` / `istio_dry_run_deny_`
//! (`pilot/pkg/security/authz/model`). Envoy's shadow engine answers like an enforced one of
//! its action: a DENY engine whose policy matches says `denied`, an ALLOW engine with no match
//! says `denied`, and the matched policy is the effective policy id (absent without a match).
//! Istio runs the DENY filter before the ALLOW filter, so the ALLOW shadow result exists only
//! for requests the enforced DENY policies let through, and neither exists when a CUSTOM policy
//! sends the request to its provider first. Dry-run CUSTOM and AUDIT policies are not evaluated
//! (Istio's dry-run task: "currently only supports ALLOW and DENY policies").

/// One shadow engine's answer for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowResult {
    /// The engine's result: Envoy's `shadow_engine_result` `allowed` or `denied`.
    pub allowed: bool,
    /// The matched policy as Istio names the RBAC policy (`ns[foo]-policy[deny-x]-rule[0]`),
    /// Envoy's `shadow_effective_policy_id`; `None` when no policy matched.
    pub effective_policy_id: Option<String>,
}

impl ShadowResult {
    /// `allowed` / `denied`, as Envoy writes `shadow_engine_result`.
    pub fn result(&self) -> &'static str {
        if self.allowed {
            "allowed"
        } else {
            "denied"
        }
    }
}

/// The shadow engines' answers; both `None` (no allocation) when no dry-run policy applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shadow {
    /// The dry-run DENY policies (stat prefix `istio_dry_run_deny_`).
    pub deny: Option<ShadowResult>,
    /// The dry-run ALLOW policies (stat prefix `istio_dry_run_allow_`).
    pub allow: Option<ShadowResult>,
}

impl Shadow {
    pub fn is_empty(&self) -> bool {
        self.deny.is_none() && self.allow.is_none()
    }
}

/// Istio's RBAC policy name for rule `rule` of the policy named `namespace/name`
/// (`policyName` in the builder; the dry-run task's `ns[foo]-policy[deny-path-headers]-rule[0]`).
pub fn policy_id(namespaced_name: &str, rule: usize) -> String {
    let (ns, name) = namespaced_name
        .split_once('/')
        .unwrap_or(("", namespaced_name));
    format!("ns[{ns}]-policy[{name}]-rule[{rule}]")
}
