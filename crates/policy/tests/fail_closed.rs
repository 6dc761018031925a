//! Webhook parity (what Istio rejects, we report as errors; what it accepts, we do not) and
//! fail-closed loading: one invalid resource is enforced in its safe form while everything
//! else keeps working.

mod common;

use serde_json::json;
use trustmesh_policy::{
    validate, MeshConfig, MtlsMode, Outcome, PolicySet, SourceText, Verdict, Workload,
};

fn src(text: &str) -> SourceText {
    SourceText {
        file: "p.yaml".into(),
        text: text.into(),
    }
}

fn mesh() -> MeshConfig {
    MeshConfig::from_yaml_str(
        "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 9191}\n",
    )
    .unwrap()
}

fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: prod}}\nspec: {spec}\n")
}

fn ap(spec: &str) -> String {
    doc("AuthorizationPolicy", "p", spec)
}

/// (yaml, field path of the expected error, word in its message). Each row cites the Istio
/// file whose check it mirrors.
#[test]
fn istio_rejects_these() {
    let r = "p.yaml:1:spec.rules[0]";
    let cases: Vec<(&str, String, String, &str)> = vec![
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: "`from` must not be empty"
        ("validation.go", ap("{rules: [{from: []}]}"), format!("{r}.from"), "must not be empty"),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: "`to` must not be empty"
        ("validation.go", ap("{rules: [{to: []}]}"), format!("{r}.to"), "must not be empty"),
        // pkg/config/validation/validation.go validateWorkloadSelector: "wildcard is not supported in selector"
        ("validation.go", ap("{selector: {matchLabels: {app: '*'}}}"), "p.yaml:1:spec.selector.matchLabels.app".into(), "wildcard"),
        ("validation.go", ap("{selector: {matchLabels: {'ap*': x}}}"), "p.yaml:1:spec.selector.matchLabels.ap*".into(), "wildcard"),
        // pkg/config/validation/validation.go validateWorkloadSelector: "empty key is not supported in selector"
        ("validation.go", ap("{selector: {matchLabels: {'': x}}}"), "p.yaml:1:spec.selector.matchLabels".into(), "empty label key"),
        // pkg/config/validation/validation.go validateOneOfSelectorType
        ("validation.go", ap("{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: h}]}"), "p.yaml:1:spec.targetRef".into(), "only one of"),
        ("validation.go", ap("{selector: {matchLabels: {app: a}}, targetRefs: [{kind: Service, name: s}]}"), "p.yaml:1:spec.selector".into(), "only one of"),
        // pkg/config/validation/validation.go validatePolicyTargetReference
        ("validation.go", ap("{targetRefs: [{kind: Service}]}"), "p.yaml:1:spec.targetRefs[0].name".into(), "name must be set"),
        ("validation.go", ap("{targetRefs: [{kind: Service, name: s, namespace: other}]}"), "p.yaml:1:spec.targetRefs[0].namespace".into(), "must not be set"),
        ("validation.go", ap("{targetRefs: [{kind: Deployment, group: apps, name: s}]}"), "p.yaml:1:spec.targetRefs[0].kind".into(), "not supported"),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: CUSTOM without rules
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}}"), "p.yaml:1:spec.rules".into(), "without rules"),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: "`provider.name` must not be empty"
        ("validation.go", ap("{action: CUSTOM, provider: {name: ''}, rules: [{}]}"), "p.yaml:1:spec.provider.name".into(), "must not be empty"),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: "... is currently not supported with CUSTOM action"
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}, rules: [{from: [{source: {principals: [a]}}]}]}"), format!("{r}.from[0].source.principals"), "not supported with action CUSTOM"),
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}, rules: [{from: [{source: {notNamespaces: [a]}}]}]}"), format!("{r}.from[0].source.notNamespaces"), "not supported with action CUSTOM"),
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}, rules: [{when: [{key: 'request.auth.claims[iss]', values: [a]}]}]}"), format!("{r}.when[0].key"), "not supported with action CUSTOM"),
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}, rules: [{when: [{key: source.principal, values: [a]}]}]}"), format!("{r}.when[0].key"), "not supported with action CUSTOM"),
        // pkg/config/validation/validation.go ValidatePeerAuthentication: "port level mTLS, if defined, must have at least one element"
        ("validation.go", doc("PeerAuthentication", "p", "{selector: {matchLabels: {app: a}}, portLevelMtls: {}}"), "p.yaml:1:spec.portLevelMtls".into(), "at least one port"),
        // pkg/config/validation/validation.go ValidatePeerAuthentication -> validateWorkloadSelector
        ("validation.go", doc("PeerAuthentication", "p", "{selector: {matchLabels: {app: 'a*'}}}"), "p.yaml:1:spec.selector.matchLabels.app".into(), "wildcard"),
        // pkg/config/validation/testdata/crds/peerauth-invalid.yaml (port-level-global)
        ("peerauth-invalid.yaml", doc("PeerAuthentication", "p", "{portLevelMtls: {80: {mode: STRICT}}}"), "p.yaml:1:spec.portLevelMtls".into(), "selector"),
        // pkg/config/validation/validation.go ValidateRequestAuthentication -> validateWorkloadSelector / validateOneOfSelectorType
        ("validation.go", doc("RequestAuthentication", "p", "{selector: {matchLabels: {app: '*'}}, jwtRules: [{issuer: i}]}"), "p.yaml:1:spec.selector.matchLabels.app".into(), "wildcard"),
        ("validation.go", doc("RequestAuthentication", "p", "{selector: {matchLabels: {app: a}}, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: g}}"), "p.yaml:1:spec.selector".into(), "only one of"),
        // pkg/config/validation/validation.go validateJwtRule -> ValidateStrictHTTPHeaderName
        ("validation.go", doc("RequestAuthentication", "p", "{jwtRules: [{issuer: i, outputClaimToHeaders: [{header: 'x y', claim: sub}]}]}"), "p.yaml:1:spec.jwtRules[0].outputClaimToHeaders[0].header".into(), "header name"),
        // pkg/config/validation/validation.go checkDryRunAnnotation: only AuthorizationPolicy,
        // only ALLOW/DENY, only a boolean value
        ("validation.go", doc("PeerAuthentication", "p", "{}").replace("namespace: prod}", "namespace: prod, annotations: {istio.io/dry-run: 'true'}}"), "p.yaml:1:metadata.annotations".into(), "only supported on AuthorizationPolicy"),
        ("validation.go", ap("{action: AUDIT, rules: [{}]}").replace("namespace: prod}", "namespace: prod, annotations: {istio.io/dry-run: 'true'}}"), "p.yaml:1:metadata.annotations".into(), "only supports action ALLOW or DENY"),
        ("validation.go", ap("{action: DENY, rules: [{}]}").replace("namespace: prod}", "namespace: prod, annotations: {istio.io/dry-run: 'yes'}}"), "p.yaml:1:metadata.annotations".into(), "not a boolean"),
        // pkg/config/validation/agent/validation.go ValidateDuration: "duration must be greater than 1ms"
        ("agent/validation.go", doc("RequestAuthentication", "p", "{jwtRules: [{issuer: i, timeout: 100us}]}"), "p.yaml:1:spec.jwtRules[0].timeout".into(), "1ms"),
    ];
    for (istio_file, yaml, loc, word) in &cases {
        let r = validate(&[src(yaml)], &mesh());
        assert!(
            r.problems.iter().any(|p| !p.warning
                && p.to_string().starts_with(loc.as_str())
                && p.message.contains(word)),
            "[{istio_file}] no error at {loc} mentioning {word:?} for\n{yaml}got: {:#?}",
            r.problems
        );
    }
}

/// Istio's webhook accepts these (some with a warning); we must not report an error.
#[test]
fn istio_accepts_these() {
    for (istio_file, yaml) in [
        // pkg/config/validation/validation.go validateWorkloadSelector: no labels is only a warning
        ("validation.go", ap("{selector: {}, rules: [{}]}")),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy checks provider.name is
        // set, not that the mesh defines it (the builder handles unknown providers).
        ("validation.go", ap("{action: CUSTOM, provider: {name: not-in-mesh}, rules: [{}]}")),
        // pkg/config/validation/validation.go validatePolicyTargetReference: allowed kinds
        ("validation.go", ap("{targetRefs: [{kind: Service, group: '', name: s}, {kind: ServiceEntry, group: networking.istio.io, name: e}, {kind: GatewayClass, group: gateway.networking.k8s.io, name: c}]}")),
        // pkg/config/validation/validation.go ValidateAuthorizationPolicy: CUSTOM may use hosts, paths, ipBlocks, headers
        ("validation.go", ap("{action: CUSTOM, provider: {name: opa}, rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}], to: [{operation: {paths: [/a]}}], when: [{key: 'request.headers[x]', values: [a]}]}]}")),
        // pkg/config/validation/testdata/crds/peerauth-valid.yaml style: workload port-level mTLS
        ("peerauth-valid.yaml", doc("PeerAuthentication", "p", "{selector: {matchLabels: {app: a}}, portLevelMtls: {8080: {mode: DISABLE}}}")),
    ] {
        let r = validate(&[src(&yaml)], &mesh());
        assert!(
            r.problems.iter().all(|p| p.warning),
            "[{istio_file}] {yaml}: {:#?}",
            r.problems
        );
        assert!(r.invalid.iter().all(|i| i.outcome == Outcome::DeniesRuleMatches), "{yaml}");
    }
}

fn req(path: &str, labels: serde_json::Value) -> trustmesh_policy::Request {
    common::request(common::patch(
        common::base(),
        &json!({"destination": {"labels": labels}, "http": {"path": path}}),
    ))
}

/// Each row: a valid set plus one invalid resource, the outcome recorded for it, and what a
/// request to prod/reviews for `/api/v1` then gets.
#[test]
fn one_invalid_resource_fails_closed_and_the_rest_keeps_working() {
    let allow_api = ap("{selector: {matchLabels: {app: reviews}}, rules: [{to: [{operation: {paths: ['/api/*']}}]}]}")
        .replace("name: p,", "name: allow-api,");
    let cases: Vec<(&str, String, &str, Verdict)> = vec![
        // pilot/pkg/security/authz/model/model.go checkError: an ALLOW rule that cannot be
        // built is skipped; the rest of the policy applies.
        ("model.go", ap("{selector: {matchLabels: {app: reviews}}, rules: [{from: [{source: {ipBlocks: [bad]}}]}, {to: [{operation: {paths: ['/api/*']}}]}]}"), "dropped_rules", Verdict::Allow),
        // pilot/pkg/security/authz/builder/builder.go: an ALLOW policy whose rules are all
        // skipped still makes the workload deny what nothing else allows.
        ("builder.go", ap("{selector: {matchLabels: {app: reviews}}, rules: [{from: []}]}"), "allows_nothing", Verdict::Allow),
        // pilot/pkg/security/authz/model/model.go checkError ("a wider deny policy"): an
        // invalid DENY policy denies everything it selects.
        ("model.go", ap("{action: DENY, selector: {matchLabels: {app: reviews}}, rules: [{to: [{operation: {ports: [http]}}]}]}"), "denies_all", Verdict::Deny),
        // pkg/config/validation/validation.go rejects `*` in selectors: the scope cannot be
        // trusted, so the DENY applies to the whole namespace.
        ("validation.go", ap("{action: DENY, selector: {matchLabels: {app: '*'}}, rules: [{}]}"), "denies_all", Verdict::Deny),
        // pilot/pkg/security/authz/builder/builder.go: CUSTOM with a provider it cannot use
        // -> "will generate deny configs" from the policy's rules.
        ("builder.go", ap("{action: CUSTOM, provider: {name: missing}, rules: [{to: [{operation: {paths: ['/api/*']}}]}]}"), "denies_rule_matches", Verdict::Deny),
        // An action that cannot be read could have been DENY.
        ("builder.go", ap("{action: MAYBE, rules: [{}]}"), "denies_all", Verdict::Deny),
        // Audit never changes the decision (builder.go builds AUDIT like DENY, wider).
        ("model.go", ap("{action: AUDIT, rules: [{from: [{source: {ipBlocks: [bad]}}]}]}"), "audits_all", Verdict::Allow),
    ];
    for (istio_file, bad, outcome, verdict) in cases {
        let text = format!("{allow_api}---\n{bad}");
        let (set, _) = PolicySet::from_sources(&[src(&text)], &mesh()).unwrap();
        let inv = set.invalid_resources();
        assert_eq!(inv.len(), 1, "[{istio_file}] {bad}: {inv:#?}");
        assert_eq!(inv[0].outcome.label(), outcome, "[{istio_file}] {bad}");
        assert_eq!(
            (inv[0].name.as_str(), inv[0].namespace.as_str()),
            ("p", "prod")
        );
        assert!(
            !inv[0].reasons.is_empty() && inv[0].reasons[0].starts_with("p.yaml:2"),
            "{inv:?}"
        );
        let d = common::eval(&set, &req("/api/v1", json!({"app": "reviews"})));
        assert_eq!(d.decision, verdict, "[{istio_file}] {bad}: {d:#?}");
        if verdict == Verdict::Deny {
            assert!(d.reason.contains("prod/p"), "{}", d.reason);
            assert!(d.policies.iter().any(|p| p.fail_closed.is_some()), "{d:#?}");
        }
        // The valid ALLOW policy still decides other paths.
        let other = common::eval(&set, &req("/private", json!({"app": "reviews"})));
        assert_eq!(other.decision, Verdict::Deny, "[{istio_file}] {bad}");
        if outcome == "allows_nothing" || outcome == "dropped_rules" {
            // The denial names the ALLOW policy that lost its rules.
            assert!(
                other.reason.contains("prod/p is invalid"),
                "{}",
                other.reason
            );
        }
    }
}

/// pkg/config/validation/validation.go validateWorkloadSelector rejects `*`: with the scope
/// unknown, an invalid DENY reaches every workload of its namespace and no other namespace.
#[test]
fn invalid_selector_widens_to_the_namespace_only() {
    let (set, _) = PolicySet::from_sources(
        &[src(&ap(
            "{action: DENY, selector: {matchLabels: {app: 'rev*'}}, rules: [{}]}",
        ))],
        &mesh(),
    )
    .unwrap();
    assert!(set.invalid_resources()[0].namespace_wide);
    let d = common::eval(&set, &req("/x", json!({"app": "ratings"})));
    assert_eq!(d.decision, Verdict::Deny);
    let mut elsewhere = req("/x", json!({"app": "reviews"}));
    elsewhere.destination.namespace = "staging".into();
    assert_eq!(set.evaluate(&elsewhere).decision, Verdict::Allow);
}

/// Peer and request authentication: pkg/config/validation/validation.go
/// ValidatePeerAuthentication / validateJwtRule reject these; pilot/pkg/model/jwks_resolver.go
/// fails closed on a JWKS it cannot use ("JWT requests will be rejected").
#[test]
fn authentication_resources_fail_closed() {
    let pa = doc(
        "PeerAuthentication",
        "p",
        "{mtls: {mode: DISABLE}, portLevelMtls: {8080: {mode: DISABLE}}}",
    );
    let (set, _) = PolicySet::from_sources(&[src(&pa)], &mesh()).unwrap();
    assert_eq!(set.invalid_resources()[0].outcome, Outcome::StrictMtls);
    let w = Workload::new("prod", &[("app", "reviews")]);
    assert_eq!(set.mtls_mode(&w, 8080).0, MtlsMode::Strict);
    let mut plain = req("/x", json!({"app": "reviews"}));
    plain.source.principal = None;
    plain.destination.port = 8080;
    let d = set.evaluate(&plain);
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains("fail-closed"), "{}", d.reason);
    // A mode that does not parse: STRICT too.
    let pa = doc("PeerAuthentication", "p", "{mtls: {mode: STRICTLY}}");
    let (set, _) = PolicySet::from_sources(&[src(&pa)], &mesh()).unwrap();
    assert_eq!(set.mtls_mode(&w, 80).0, MtlsMode::Strict);

    let ra = format!(
        "{}---\n{}",
        doc(
            "RequestAuthentication",
            "good",
            "{jwtRules: [{issuer: https://good}]}"
        ),
        doc(
            "RequestAuthentication",
            "p",
            "{jwtRules: [{issuer: https://bad, jwks: 'not json'}]}"
        )
    );
    let (set, _) = PolicySet::from_sources(&[src(&ra)], &mesh()).unwrap();
    assert_eq!(
        set.invalid_resources()[0].outcome,
        Outcome::RejectsTokens(vec!["https://bad".into()])
    );
    let rules = set.jwt_rules(&w);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].jwks, None);
    assert_eq!(
        rules[1].jwks.as_deref(),
        Some(trustmesh_policy::failclosed::REJECT_ALL_JWKS)
    );
    // Rules that cannot be read at all: a placeholder issuer makes every token unknown.
    let ra = doc(
        "RequestAuthentication",
        "p",
        "{jwtRules: [{issuer: 3, bogus: 1}]}",
    );
    let (set, _) = PolicySet::from_sources(&[src(&ra)], &mesh()).unwrap();
    let rules = set.jwt_rules(&w);
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].issuer.starts_with("trustmesh.invalid/"),
        "{rules:?}"
    );
}

/// Unreadable input. A document that is not YAML could have held a DENY policy for any
/// workload, so everything is denied (and named); a document of another kind is skipped; a
/// misspelt security.istio.io kind is treated as a DENY in its namespace.
#[test]
fn unreadable_and_unknown_documents() {
    let good = ap("{rules: [{}]}").replace("name: p,", "name: allow-all,");
    let (set, notices) =
        PolicySet::from_sources(&[src(&format!("{good}---\nspec: [unclosed\n"))], &mesh()).unwrap();
    assert_eq!(
        set.invalid_resources()[0].outcome,
        Outcome::DeniesEverything
    );
    let d = common::eval(&set, &req("/x", json!({"app": "reviews"})));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason.contains("p.yaml:2") && d.reason.contains("fail-closed"),
        "{}",
        d.reason
    );
    assert!(set.denies_everything().is_some());
    assert!(notices.is_empty(), "{notices:?}");

    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let (set, notices) = PolicySet::from_sources(&[src(other)], &mesh()).unwrap();
    assert!(set.invalid_resources().is_empty());
    assert_eq!(notices.len(), 1);

    let typo = "apiVersion: security.istio.io/v1\nkind: AuthorisationPolicy\nmetadata: {name: t, namespace: prod}\nspec: {action: ALLOW}\n";
    let (set, _) = PolicySet::from_sources(&[src(typo)], &mesh()).unwrap();
    assert_eq!(set.invalid_resources()[0].outcome, Outcome::DeniesAll);
    assert_eq!(
        common::eval(&set, &req("/x", json!({}))).decision,
        Verdict::Deny
    );
}

/// A dry-run policy stays dry-run when it fails closed: reported, never enforced.
#[test]
fn dry_run_stays_dry_run() {
    let y = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: prod, annotations: {istio.io/dry-run: 'true'}}\nspec: {action: DENY, rules: [{from: []}]}\n";
    let (set, _) = PolicySet::from_sources(&[src(y)], &mesh()).unwrap();
    assert_eq!(set.invalid_resources()[0].outcome, Outcome::DeniesAll);
    let d = set.evaluate(&req("/x", json!({})));
    assert_eq!(d.decision, Verdict::Allow);
    assert!(d.policies[0].dry_run && d.policies[0].matched);
}
