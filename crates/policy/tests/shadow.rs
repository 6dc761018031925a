//! Dry-run policies as Envoy's shadow engines (`trustmesh_policy::shadow`): the results the
//! proxy counts and logs, and that they never change the enforced decision.

mod common;

use common::{base, patch, request, set};
use serde_json::json;
use trustmesh_policy::{MeshConfig, ShadowResult, Verdict};

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-headers, namespace: prod, annotations: {"istio.io/dry-run": "true"}}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/other"]}}]
  - to: [{operation: {paths: ["/headers"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-api, namespace: prod, annotations: {"istio.io/dry-run": "true"}}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/api/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: prod}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
"#;

fn at(path: &str) -> trustmesh_policy::Request {
    request(patch(base(), &json!({"http": {"path": path}})))
}

fn eval(set: &trustmesh_policy::PolicySet, path: &str) -> trustmesh_policy::Decision {
    let wp = set.workload_policies(&trustmesh_policy::Workload::new(
        "prod",
        &[("app", "reviews")],
    ));
    set.evaluate_for(&wp, &at(path), false)
}

#[test]
fn a_dry_run_deny_that_matches_is_shadow_denied_and_the_request_still_allowed() {
    let s = set(POLICIES, &MeshConfig::default());
    let d = eval(&s, "/headers");
    assert_eq!(d.decision, Verdict::Allow, "{}", d.reason);
    assert_eq!(
        d.shadow.deny,
        Some(ShadowResult {
            allowed: false,
            effective_policy_id: Some("ns[prod]-policy[deny-headers]-rule[1]".into()),
        })
    );
    // The shadow ALLOW engine holds only the dry-run ALLOW policy, which does not match.
    assert_eq!(
        d.shadow.allow,
        Some(ShadowResult {
            allowed: false,
            effective_policy_id: None
        })
    );
    assert_eq!(d.shadow.allow.as_ref().unwrap().result(), "denied");
}

#[test]
fn a_dry_run_allow_that_matches_is_shadow_allowed_with_its_policy() {
    let s = set(POLICIES, &MeshConfig::default());
    let d = eval(&s, "/api/v1");
    assert_eq!(d.decision, Verdict::Allow);
    let deny = d.shadow.deny.unwrap();
    assert!(deny.allowed);
    assert_eq!(deny.result(), "allowed");
    assert_eq!(deny.effective_policy_id, None);
    let allow = d.shadow.allow.unwrap();
    assert!(allow.allowed);
    assert_eq!(
        allow.effective_policy_id.as_deref(),
        Some("ns[prod]-policy[allow-api]-rule[0]")
    );
}

#[test]
fn an_enforced_deny_stops_before_the_allow_filter_and_its_shadow() {
    let s = set(POLICIES, &MeshConfig::default());
    let d = eval(&s, "/admin");
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.shadow.deny.is_some(), "the DENY filter's shadow ran");
    assert!(
        d.shadow.allow.is_none(),
        "the ALLOW filter was never reached"
    );
}

#[test]
fn no_dry_run_policy_means_no_shadow_result() {
    let enforced_only = POLICIES.split("---").last().unwrap();
    let s = set(enforced_only, &MeshConfig::default());
    let d = eval(&s, "/headers");
    assert!(d.shadow.is_empty());
    // The explaining path leaves shadow results to the fast path.
    let s = set(POLICIES, &MeshConfig::default());
    assert!(s.evaluate(&at("/headers")).shadow.is_empty());
}

#[test]
fn the_enforced_decision_is_the_same_with_and_without_the_dry_run_policies() {
    let with = set(POLICIES, &MeshConfig::default());
    let without = set(
        POLICIES.split("---").last().unwrap(),
        &MeshConfig::default(),
    );
    for path in ["/headers", "/api/x", "/admin", "/other", "/"] {
        assert_eq!(
            eval(&with, path).decision,
            eval(&without, path).decision,
            "{path}"
        );
    }
}

#[test]
fn policy_ids_follow_istio() {
    assert_eq!(
        trustmesh_policy::shadow::policy_id("foo/deny-path-headers", 0),
        "ns[foo]-policy[deny-path-headers]-rule[0]"
    );
}
