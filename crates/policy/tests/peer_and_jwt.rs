//! PeerAuthentication precedence and RequestAuthentication rule resolution, per Istio's
//! "PeerAuthentication" reference ("PA") and "Security concepts" ("SC", sections "Peer
//! authentication" and "Request authentication" / "Policy storage").

mod common;

use common::*;
use serde_json::json;
use trustmesh_policy::{MeshConfig, MtlsMode, Verdict, Workload};

fn pa(ns: &str, name: &str, ts: &str, spec: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{ts}'}}\nspec: {spec}\n")
}

const T1: &str = "2024-01-01T00:00:00Z";
const T2: &str = "2024-06-01T00:00:00Z";

fn reviews() -> Workload {
    Workload::new("prod", &[("app", "reviews"), ("version", "v1")])
}

fn mode(yaml: &str, port: u16) -> (MtlsMode, Option<String>) {
    set(yaml, &MeshConfig::default()).mtls_mode(&reviews(), port)
}

#[test]
fn mode_precedence_table() {
    let mesh_strict = pa("istio-system", "default", T1, "{mtls: {mode: STRICT}}");
    let ns_perm = pa("prod", "ns", T1, "{mtls: {mode: PERMISSIVE}}");
    let ns_unset = pa("prod", "ns", T1, "{mtls: {mode: UNSET}}");
    let ns_empty = pa("prod", "ns", T1, "{}");
    let wl_disable = pa(
        "prod",
        "wl",
        T1,
        "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}",
    );
    let wl_unset = pa(
        "prod",
        "wl",
        T1,
        "{selector: {matchLabels: {app: reviews}}}",
    );
    let wl_other = pa(
        "prod",
        "wl",
        T1,
        "{selector: {matchLabels: {app: ratings}}, mtls: {mode: DISABLE}}",
    );
    let wl_ports = pa("prod", "wl", T1, "{selector: {matchLabels: {app: reviews}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: DISABLE}, '8080': {mode: UNSET}}}");
    let wl_ports_inherit = pa("prod", "wl", T1, "{selector: {matchLabels: {app: reviews}}, portLevelMtls: {9080: {mode: UNSET}, 7070: {mode: PERMISSIVE}}}");
    let root_selector = pa(
        "istio-system",
        "rootsel",
        T1,
        "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}",
    );
    use MtlsMode::*;
    let cases: Vec<(&str, String, u16, MtlsMode, Option<&str>)> = vec![
        // SC "Peer authentication": with no policy the default is PERMISSIVE.
        (
            "SC default PERMISSIVE",
            String::new(),
            9080,
            Permissive,
            None,
        ),
        // PA: a policy in the root namespace without selector is mesh-wide.
        (
            "PA mesh-wide",
            mesh_strict.clone(),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        // PA: namespace-wide overrides mesh-wide.
        (
            "PA namespace > mesh",
            format!("{mesh_strict}{ns_perm}"),
            9080,
            Permissive,
            Some("prod/ns"),
        ),
        // PA MutualTLS.Mode UNSET: "inherit from parent" (also when mtls is omitted).
        (
            "PA UNSET inherits",
            format!("{mesh_strict}{ns_unset}"),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        (
            "PA omitted mtls inherits",
            format!("{mesh_strict}{ns_empty}"),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        // PA: workload-specific overrides namespace-wide.
        (
            "PA workload > namespace",
            format!("{mesh_strict}{ns_perm}{wl_disable}"),
            9080,
            Disable,
            Some("prod/wl"),
        ),
        (
            "PA workload UNSET inherits",
            format!("{ns_perm}{wl_unset}"),
            9080,
            Permissive,
            Some("prod/ns"),
        ),
        (
            "PA selector not matching",
            format!("{mesh_strict}{wl_other}"),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        // PA portLevelMtls: per-port override on the workload policy.
        (
            "PA portLevelMtls",
            wl_ports.clone(),
            9080,
            Disable,
            Some("prod/wl"),
        ),
        (
            "PA portLevelMtls other port",
            wl_ports.clone(),
            9443,
            Strict,
            Some("prod/wl"),
        ),
        (
            "PA portLevelMtls UNSET inherits",
            wl_ports.clone(),
            8080,
            Strict,
            Some("prod/wl"),
        ),
        (
            "PA portLevelMtls UNSET inherits namespace",
            format!("{mesh_strict}{wl_ports_inherit}"),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        (
            "PA portLevelMtls set",
            format!("{mesh_strict}{wl_ports_inherit}"),
            7070,
            Permissive,
            Some("prod/wl"),
        ),
        // Istio's resolution ignores selector policies in the root namespace.
        (
            "PA root namespace selector ignored",
            format!("{mesh_strict}{root_selector}"),
            9080,
            Strict,
            Some("istio-system/default"),
        ),
        // PA: "the oldest one wins" when several policies of the same level exist.
        (
            "PA oldest wins",
            format!(
                "{}{}",
                pa("prod", "b-new", T2, "{mtls: {mode: DISABLE}}"),
                pa("prod", "z-old", T1, "{mtls: {mode: STRICT}}")
            ),
            9080,
            Strict,
            Some("prod/z-old"),
        ),
        (
            "PA tie -> name",
            format!(
                "{}{}",
                pa("prod", "b", T1, "{mtls: {mode: DISABLE}}"),
                pa("prod", "a", T1, "{mtls: {mode: STRICT}}")
            ),
            9080,
            Strict,
            Some("prod/a"),
        ),
        (
            "PA oldest workload wins",
            format!(
                "{}{}",
                pa(
                    "prod",
                    "w2",
                    T2,
                    "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}"
                ),
                pa(
                    "prod",
                    "w1",
                    T1,
                    "{selector: {matchLabels: {version: v1}}, mtls: {mode: STRICT}}"
                )
            ),
            9080,
            Strict,
            Some("prod/w1"),
        ),
    ];
    let mut bad = Vec::new();
    for (doc, yaml, port, want, by) in cases {
        let got = mode(&yaml, port);
        if got != (want, by.map(String::from)) {
            bad.push(format!(
                "[{doc}] port {port}: want {want:?} by {by:?}, got {got:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn mtls_in_decisions() {
    let y = format!(
        "{}{}",
        pa("prod", "strict", T1, "{mtls: {mode: STRICT}}"),
        pa(
            "prod",
            "wl",
            T1,
            "{selector: {matchLabels: {app: reviews}}, portLevelMtls: {8081: {mode: DISABLE}}}"
        )
    );
    let s = set(&y, &MeshConfig::default());
    // PA STRICT: "Connection is an mTLS tunnel" — plaintext is rejected.
    let d = s.evaluate(&request(patch(
        base(),
        &json!({"source": {"principal": null}}),
    )));
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.mtls_mode, Some(MtlsMode::Strict));
    assert_eq!(d.mtls_policy.as_deref(), Some("prod/strict"));
    assert!(d.reason.contains("plaintext"), "{}", d.reason);
    // With a peer certificate the request proceeds to authorization (no policies: allowed).
    let d = s.evaluate(&request(base()));
    assert_eq!(d.decision, Verdict::Allow);
    // PA DISABLE: "Connection is not tunneled" — no peer identity reaches the policies.
    let y2 = format!(
        "{y}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: only-frontend, namespace: prod}}\nspec: {{rules: [{{from: [{{source: {{principals: [cluster.local/ns/prod/sa/frontend]}}}}]}}]}}\n"
    );
    let s = set(&y2, &MeshConfig::default());
    let d = s.evaluate(&request(patch(
        base(),
        &json!({"destination": {"port": 8081}}),
    )));
    assert_eq!(d.mtls_mode, Some(MtlsMode::Disable));
    assert_eq!(d.decision, Verdict::Deny, "{}", d.reason);
    let d = s.evaluate(&request(base()));
    assert_eq!(
        (d.mtls_mode, d.decision),
        (Some(MtlsMode::Strict), Verdict::Allow)
    );
}

fn ra(ns: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n")
}

#[test]
fn jwt_rules_resolution() {
    // SC "Request authentication": policies at mesh, namespace and workload level all apply
    // (their jwtRules are combined), unlike PeerAuthentication.
    let full = r#"{selector: {matchLabels: {app: reviews}}, jwtRules: [{issuer: "https://wl", audiences: [a, b], jwksUri: "https://wl/jwks", fromHeaders: [{name: x-jwt, prefix: "Bearer "}], fromParams: [tok], fromCookies: [session], outputPayloadToHeader: x-payload, forwardOriginalToken: true, outputClaimToHeaders: [{header: x-sub, claim: sub}], timeout: 5s}]}"#;
    let y = format!(
        "{}{}{}{}{}",
        ra(
            "istio-system",
            "mesh",
            "{jwtRules: [{issuer: https://mesh, jwks: '{\"keys\": []}'}]}"
        ),
        ra("prod", "ns", "{jwtRules: [{issuer: https://ns}]}"),
        ra("prod", "wl", full),
        ra(
            "prod",
            "other",
            "{selector: {matchLabels: {app: ratings}}, jwtRules: [{issuer: https://other}]}"
        ),
        ra("dev", "devns", "{jwtRules: [{issuer: https://dev}]}"),
    );
    let s = set(&y, &MeshConfig::default());
    let rules = s.jwt_rules(&Workload::new("prod", &[("app", "reviews")]));
    let mut issuers: Vec<&str> = rules.iter().map(|r| r.issuer.as_str()).collect();
    issuers.sort();
    assert_eq!(issuers, ["https://mesh", "https://ns", "https://wl"]);
    let wl = rules.iter().find(|r| r.issuer == "https://wl").unwrap();
    assert_eq!(wl.audiences, ["a", "b"]);
    assert_eq!(wl.jwks_uri.as_deref(), Some("https://wl/jwks"));
    assert_eq!(wl.from_headers[0].name, "x-jwt");
    assert_eq!(wl.from_headers[0].prefix, "Bearer ");
    assert_eq!(wl.from_params, ["tok"]);
    assert_eq!(wl.from_cookies, ["session"]);
    assert_eq!(wl.output_payload_to_header.as_deref(), Some("x-payload"));
    assert!(wl.forward_original_token);
    assert_eq!(wl.output_claim_to_headers[0].claim, "sub");
    assert_eq!(wl.timeout.as_deref(), Some("5s"));
    let mesh_rule = rules.iter().find(|r| r.issuer == "https://mesh").unwrap();
    assert_eq!(mesh_rule.jwks.as_deref(), Some("{\"keys\": []}"));
    let other: Vec<&str> = s
        .jwt_rules(&Workload::new("dev", &[]))
        .iter()
        .map(|r| r.issuer.as_str())
        .collect();
    assert_eq!(other.len(), 2);
    assert!(other.contains(&"https://dev") && other.contains(&"https://mesh"));
}
