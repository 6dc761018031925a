//! Table-driven AuthorizationPolicy semantics. Each case cites the section of Istio's
//! documentation it follows: "AP" = the "Authorization Policy" reference
//! (istio.io/latest/docs/reference/config/security/authorization-policy/), "APC" = the
//! "Authorization Policy Conditions" reference, "SC" = "Security concepts" (Authorization).

mod common;

use common::*;
use serde_json::{json, Value};
use trustmesh_policy::{MeshConfig, Verdict};

struct Case {
    doc: &'static str,
    /// The `spec` of one AuthorizationPolicy `prod/p` selecting app=reviews (YAML flow style;
    /// `selector` is added unless the spec says `selector`/`targetRefs` itself).
    spec: &'static str,
    patch: Value,
    want: &'static str,
}

fn c(doc: &'static str, spec: &'static str, patch: Value, want: &'static str) -> Case {
    Case {
        doc,
        spec,
        patch,
        want,
    }
}

fn run(cases: &[Case], mesh: &MeshConfig) {
    let mut failures = Vec::new();
    for (i, k) in cases.iter().enumerate() {
        let spec = if k.spec.contains("selector") || k.spec.contains("targetRefs") {
            k.spec.to_string()
        } else {
            format!(
                "{{selector: {{matchLabels: {{app: reviews}}}}, {}",
                k.spec.trim_start_matches('{')
            )
        };
        let spec = spec.replace("{, ", "{");
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: prod}}\nspec: {spec}\n"
        );
        let s = set(&yaml, mesh);
        let d = eval(&s, &request(patch(base(), &k.patch)));
        if d.decision != verdict(k.want) {
            failures.push(format!(
                "case {i} [{}] spec={} patch={}: want {} got {:?} ({})",
                k.doc, k.spec, k.patch, k.want, d.decision, d.reason
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn source_fields() {
    let none = json!({});
    let plain = json!({"source": {"principal": null}});
    let noauth = json!({"auth": null});
    run(
        &[
            // AP Source.principals: peer identity `<td>/ns/<ns>/sa/<sa>`, no spiffe:// prefix.
            c("AP Source.principals", "{rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.principals", "{rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/other]}}]}]}", none.clone(), "DENY"),
            // AP "Value matching": prefix, suffix, presence.
            c("AP value matching prefix", "{rules: [{from: [{source: {principals: [cluster.local/ns/prod/*]}}]}]}", none.clone(), "ALLOW"),
            c("AP value matching suffix", "{rules: [{from: [{source: {principals: ['*/sa/frontend']}}]}]}", none.clone(), "ALLOW"),
            c("AP value matching presence", "{rules: [{from: [{source: {principals: ['*']}}]}]}", none.clone(), "ALLOW"),
            c("AP principals '*' = any authenticated peer", "{rules: [{from: [{source: {principals: ['*']}}]}]}", plain.clone(), "DENY"),
            c("AP Source.notPrincipals", "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/prod/sa/frontend]}}]}]}", none.clone(), "DENY"),
            c("AP Source.notPrincipals", "{rules: [{from: [{source: {notPrincipals: [cluster.local/ns/prod/sa/x]}}]}]}", none.clone(), "ALLOW"),
            c("AP notPrincipals ['*'] = plaintext only", "{rules: [{from: [{source: {notPrincipals: ['*']}}]}]}", plain.clone(), "ALLOW"),
            c("AP notPrincipals ['*'] = plaintext only", "{rules: [{from: [{source: {notPrincipals: ['*']}}]}]}", none.clone(), "DENY"),
            // AP Source.requestPrincipals: `<iss>/<sub>` of the JWT.
            c("AP Source.requestPrincipals", "{rules: [{from: [{source: {requestPrincipals: [https://issuer/sub]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.requestPrincipals", "{rules: [{from: [{source: {requestPrincipals: ['https://issuer/*']}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.requestPrincipals", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}", noauth.clone(), "DENY"),
            c("AP Source.notRequestPrincipals", "{rules: [{from: [{source: {notRequestPrincipals: ['*']}}]}]}", noauth.clone(), "ALLOW"),
            c("AP Source.notRequestPrincipals", "{rules: [{from: [{source: {notRequestPrincipals: [https://issuer/sub]}}]}]}", none.clone(), "DENY"),
            // AP Source.namespaces: derived from the peer certificate, so requires mTLS.
            c("AP Source.namespaces", "{rules: [{from: [{source: {namespaces: [prod]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.namespaces", "{rules: [{from: [{source: {namespaces: [dev]}}]}]}", none.clone(), "DENY"),
            c("AP Source.namespaces needs mTLS", "{rules: [{from: [{source: {namespaces: [prod]}}]}]}", plain.clone(), "DENY"),
            c("AP Source.notNamespaces", "{rules: [{from: [{source: {notNamespaces: [prod]}}]}]}", none.clone(), "DENY"),
            c("AP Source.notNamespaces", "{rules: [{from: [{source: {notNamespaces: [dev]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.serviceAccounts", "{rules: [{from: [{source: {serviceAccounts: [prod/frontend]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.notServiceAccounts", "{rules: [{from: [{source: {notServiceAccounts: [prod/frontend]}}]}]}", none.clone(), "DENY"),
            // AP Source.ipBlocks: the direct peer address; single IPs and CIDRs.
            c("AP Source.ipBlocks", "{rules: [{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.ipBlocks", "{rules: [{from: [{source: {ipBlocks: [10.0.0.1]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.ipBlocks", "{rules: [{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}]}", none.clone(), "DENY"),
            c("AP Source.ipBlocks is not the remote ip", "{rules: [{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}]}", none.clone(), "DENY"),
            c("AP Source.notIpBlocks", "{rules: [{from: [{source: {notIpBlocks: [10.0.0.1/32]}}]}]}", none.clone(), "DENY"),
            // AP Source.remoteIpBlocks: original client IP (X-Forwarded-For).
            c("AP Source.remoteIpBlocks", "{rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]}", none.clone(), "ALLOW"),
            c("AP Source.remoteIpBlocks", "{rules: [{from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]}]}", none.clone(), "DENY"),
            c("AP Source.notRemoteIpBlocks", "{rules: [{from: [{source: {notRemoteIpBlocks: [203.0.113.7]}}]}]}", none.clone(), "DENY"),
        ],
        &MeshConfig::default(),
    );
}

#[test]
fn operation_fields() {
    let none = json!({});
    run(
        &[
            // AP Operation.hosts: "The match is case-insensitive".
            c(
                "AP Operation.hosts",
                "{rules: [{to: [{operation: {hosts: ['reviews:9080']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.hosts case-insensitive",
                "{rules: [{to: [{operation: {hosts: ['REVIEWS:9080']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            // Security best practices: the port is part of the host; list `host:*` for any port.
            c(
                "AP Operation.hosts includes the port",
                "{rules: [{to: [{operation: {hosts: [reviews]}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.hosts host:* for any port",
                "{rules: [{to: [{operation: {hosts: [reviews, 'reviews:*']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.hosts",
                "{rules: [{to: [{operation: {hosts: [ratings]}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.hosts suffix",
                "{rules: [{to: [{operation: {hosts: ['*.example.com']}}]}]}",
                json!({"http": {"host": "Api.Example.com"}}),
                "ALLOW",
            ),
            c(
                "AP Operation.notHosts",
                "{rules: [{to: [{operation: {notHosts: ['reviews*']}}]}]}",
                none.clone(),
                "DENY",
            ),
            // AP Operation.ports.
            c(
                "AP Operation.ports",
                "{rules: [{to: [{operation: {ports: ['9080']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.ports",
                "{rules: [{to: [{operation: {ports: ['80']}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.notPorts",
                "{rules: [{to: [{operation: {notPorts: ['9080']}}]}]}",
                none.clone(),
                "DENY",
            ),
            // AP Operation.methods.
            c(
                "AP Operation.methods",
                "{rules: [{to: [{operation: {methods: [GET, HEAD]}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.methods",
                "{rules: [{to: [{operation: {methods: [POST]}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.notMethods",
                "{rules: [{to: [{operation: {notMethods: [GET]}}]}]}",
                none.clone(),
                "DENY",
            ),
            // AP Operation.paths: matched without the query string; prefix/suffix/templates.
            c(
                "AP Operation.paths (query excluded)",
                "{rules: [{to: [{operation: {paths: [/api/v1]}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.paths prefix",
                "{rules: [{to: [{operation: {paths: ['/api/*']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.paths suffix",
                "{rules: [{to: [{operation: {paths: ['*/v1']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.paths {*}",
                "{rules: [{to: [{operation: {paths: ['/api/{*}']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.paths {*} one segment",
                "{rules: [{to: [{operation: {paths: ['/{*}']}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.paths {**}",
                "{rules: [{to: [{operation: {paths: ['/{**}']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP Operation.paths exact",
                "{rules: [{to: [{operation: {paths: [/api]}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.notPaths",
                "{rules: [{to: [{operation: {notPaths: ['/api/*']}}]}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP Operation.notPaths",
                "{rules: [{to: [{operation: {notPaths: ['/admin/*']}}]}]}",
                none.clone(),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
}

#[test]
fn condition_keys() {
    let none = json!({});
    let w = |k: &str, vals: &str| -> &'static str {
        Box::leak(format!("{{rules: [{{when: [{{key: '{k}', {vals}}}]}}]}}").into_boxed_str())
    };
    run(
        &[
            // APC request.headers: "HTTP request headers"; header names are case-insensitive.
            c(
                "APC request.headers",
                w("request.headers[x-token]", "values: [a]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.headers",
                w("request.headers[X-Token]", "values: [a]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.headers",
                w("request.headers[x-token]", "values: [b]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.headers notValues",
                w("request.headers[x-token]", "notValues: [a]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.headers presence",
                w("request.headers[x-missing]", "values: ['*']"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.headers notValues absent",
                w("request.headers[x-missing]", "notValues: ['*']"),
                none.clone(),
                "ALLOW",
            ),
            // APC source.ip / remote.ip: single IPs or CIDRs.
            c(
                "APC source.ip",
                w("source.ip", "values: [10.0.0.0/8]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC source.ip",
                w("source.ip", "notValues: [10.0.0.1]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC remote.ip",
                w("remote.ip", "values: [203.0.113.7]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC remote.ip",
                w("remote.ip", "values: [10.0.0.1]"),
                none.clone(),
                "DENY",
            ),
            // APC source.namespace / source.principal (need mTLS).
            c(
                "APC source.namespace",
                w("source.namespace", "values: [prod]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC source.namespace",
                w("source.namespace", "values: [prod]"),
                json!({"source": {"principal": null}}),
                "DENY",
            ),
            c(
                "APC source.principal",
                w(
                    "source.principal",
                    "values: [cluster.local/ns/prod/sa/frontend]",
                ),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC source.principal",
                w("source.principal", "notValues: ['cluster.local/ns/prod/*']"),
                none.clone(),
                "DENY",
            ),
            // APC source.serviceAccount: `ns/sa` of the peer (needs mTLS).
            c(
                "APC source.serviceAccount",
                w("source.serviceAccount", "values: [prod/frontend]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC source.serviceAccount",
                w("source.serviceAccount", "values: [prod/other]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC source.serviceAccount",
                w("source.serviceAccount", "values: [prod/frontend]"),
                json!({"source": {"principal": null}}),
                "DENY",
            ),
            // APC request.auth.*.
            c(
                "APC request.auth.principal",
                w("request.auth.principal", "values: [https://issuer/sub]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.principal",
                w("request.auth.principal", "values: ['*']"),
                json!({"auth": null}),
                "DENY",
            ),
            c(
                "APC request.auth.audiences",
                w("request.auth.audiences", "values: [aud1]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.audiences",
                w("request.auth.audiences", "values: [aud2]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.auth.presenter",
                w("request.auth.presenter", "values: [pres]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.claims list claim",
                w("request.auth.claims[groups]", "values: [admin]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.claims list claim",
                w("request.auth.claims[groups]", "values: [ops]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.auth.claims string claim",
                w("request.auth.claims[iss]", "values: [https://issuer]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.claims nested",
                w("request.auth.claims[nested][level][key]", "values: [deep]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC request.auth.claims nested",
                w(
                    "request.auth.claims[nested][level][key]",
                    "values: [shallow]",
                ),
                none.clone(),
                "DENY",
            ),
            c(
                "APC request.auth.claims notValues",
                w("request.auth.claims[groups]", "notValues: [dev]"),
                none.clone(),
                "DENY",
            ),
            // APC destination.ip / destination.port / connection.sni.
            c(
                "APC destination.ip",
                w("destination.ip", "values: [10.0.0.0/30]"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC destination.ip",
                w("destination.ip", "values: [10.9.0.0/16]"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC destination.port",
                w("destination.port", "values: ['9080']"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC destination.port",
                w("destination.port", "notValues: ['9080']"),
                none.clone(),
                "DENY",
            ),
            c(
                "APC connection.sni",
                w("connection.sni", "values: ['reviews.*']"),
                none.clone(),
                "ALLOW",
            ),
            c(
                "APC connection.sni",
                w("connection.sni", "values: [ratings.prod]"),
                none.clone(),
                "DENY",
            ),
            // AP Condition: values and notValues must both hold.
            c(
                "AP Condition values AND notValues",
                w(
                    "request.auth.claims[groups]",
                    "values: [admin], notValues: [dev]",
                ),
                none.clone(),
                "DENY",
            ),
            c(
                "AP Condition values AND notValues",
                w(
                    "request.auth.claims[groups]",
                    "values: [admin], notValues: [ops]",
                ),
                none.clone(),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
}

#[test]
fn and_or_structure() {
    let none = json!({});
    run(
        &[
            // AP Rule: from, to and when are ANDed.
            c("AP Rule AND", "{rules: [{from: [{source: {namespaces: [prod]}}], to: [{operation: {methods: [POST]}}]}]}", none.clone(), "DENY"),
            c("AP Rule AND", "{rules: [{from: [{source: {namespaces: [prod]}}], to: [{operation: {methods: [GET]}}], when: [{key: 'request.headers[x-token]', values: [a]}]}]}", none.clone(), "ALLOW"),
            // AP Rule.from: entries are ORed.
            c("AP Rule.from OR", "{rules: [{from: [{source: {namespaces: [dev]}}, {source: {ipBlocks: [10.0.0.1]}}]}]}", none.clone(), "ALLOW"),
            // AP Source: fields inside a source are ANDed.
            c("AP Source AND", "{rules: [{from: [{source: {namespaces: [prod], ipBlocks: [192.168.0.0/16]}}]}]}", none.clone(), "DENY"),
            // AP Operation: fields ANDed, values ORed.
            c("AP Operation AND", "{rules: [{to: [{operation: {methods: [GET], paths: [/other]}}]}]}", none.clone(), "DENY"),
            c("AP Operation values OR", "{rules: [{to: [{operation: {methods: [POST, GET]}}]}]}", none.clone(), "ALLOW"),
            // AP AuthorizationPolicy.rules: rules are ORed.
            c("AP rules OR", "{rules: [{to: [{operation: {methods: [POST]}}]}, {to: [{operation: {methods: [GET]}}]}]}", none.clone(), "ALLOW"),
            // AP Rule.when: conditions are ANDed.
            c("AP when AND", "{rules: [{when: [{key: source.namespace, values: [prod]}, {key: 'request.headers[x-token]', values: [z]}]}]}", none.clone(), "DENY"),
        ],
        &MeshConfig::default(),
    );
}

#[test]
fn actions_and_defaults() {
    let none = json!({});
    run(
        &[
            // AP: "allow-nothing" — `spec: {}` is an ALLOW policy with no rules: denies everything.
            c("AP allow-nothing", "{}", none.clone(), "DENY"),
            // AP: "allow-all" — `rules: [{}]` matches every request.
            c("AP allow-all", "{rules: [{}]}", none.clone(), "ALLOW"),
            c(
                "AP allow-all on TCP",
                "{rules: [{}]}",
                json!({"http": null}),
                "ALLOW",
            ),
            // (A DENY policy without rules is rejected by Istio's validation; see load_validate.)
            c(
                "AP deny-all",
                "{action: DENY, rules: [{}]}",
                none.clone(),
                "DENY",
            ),
            c(
                "AP DENY match",
                "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}",
                none.clone(),
                "DENY",
            ),
            // AP: "If there are no ALLOW policies for the workload, allow the request."
            c(
                "AP DENY no match, no ALLOW",
                "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}",
                none.clone(),
                "ALLOW",
            ),
            // AP Action AUDIT: "does not affect whether requests are allowed or denied".
            c(
                "AP AUDIT",
                "{action: AUDIT, rules: [{}]}",
                none.clone(),
                "ALLOW",
            ),
            c(
                "AP AUDIT no allow",
                "{action: AUDIT}",
                none.clone(),
                "ALLOW",
            ),
            // AP: a policy whose selector does not match the workload does not apply.
            c(
                "AP selector",
                "{selector: {matchLabels: {app: ratings}}}",
                none.clone(),
                "ALLOW",
            ),
            // AP: no selector = every workload in the namespace.
            c("AP namespace-wide", "{selector: {}}", none.clone(), "DENY"),
            // AP targetRefs attach to gateways/waypoints, not to sidecars.
            c(
                "AP targetRefs",
                "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}",
                none.clone(),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
}

#[test]
fn http_only_fields_on_tcp() {
    let tcp = json!({"http": null, "auth": null});
    run(
        &[
            // AP Rule ("HTTP-only fields on TCP"): an ALLOW rule with HTTP-only fields cannot match TCP.
            c("AP ALLOW + methods on TCP", "{rules: [{to: [{operation: {methods: [GET]}}]}]}", tcp.clone(), "DENY"),
            c("AP ALLOW + requestPrincipals on TCP", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}", tcp.clone(), "DENY"),
            c("AP ALLOW + header condition on TCP", "{rules: [{when: [{key: 'request.headers[x]', values: ['*']}]}]}", tcp.clone(), "DENY"),
            c("AP ALLOW + TCP fields on TCP", "{rules: [{to: [{operation: {ports: ['9080']}}], from: [{source: {namespaces: [prod]}}]}]}", tcp.clone(), "ALLOW"),
            // ... a DENY rule with HTTP-only fields matches on its remaining fields.
            c("AP DENY + methods on TCP", "{action: DENY, rules: [{from: [{source: {namespaces: [prod]}}], to: [{operation: {methods: [DELETE]}}]}]}", tcp.clone(), "DENY"),
            c("AP DENY + only paths on TCP", "{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}", tcp.clone(), "DENY"),
            c("AP DENY + remaining field mismatch", "{action: DENY, rules: [{from: [{source: {namespaces: [dev]}}], to: [{operation: {methods: [DELETE]}}]}]}", tcp.clone(), "ALLOW"),
            c("AP DENY + methods on HTTP", "{action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}", json!({}), "ALLOW"),
        ],
        &MeshConfig::default(),
    );
}

fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::from_yaml_str(yaml).unwrap()
}

#[test]
fn trust_domain_aliases() {
    let m = mesh("trustDomain: new-td\ntrustDomainAliases: [old-td]\n");
    let from_new = json!({"source": {"principal": "spiffe://new-td/ns/prod/sa/frontend"}});
    let from_old = json!({"source": {"principal": "spiffe://old-td/ns/prod/sa/frontend"}});
    let from_other = json!({"source": {"principal": "spiffe://other-td/ns/prod/sa/frontend"}});
    run(
        &[
            // SC "Trust domain migration": a policy for the old domain also matches the new one...
            c("SC trust domain aliases", "{rules: [{from: [{source: {principals: [old-td/ns/prod/sa/frontend]}}]}]}", from_new.clone(), "ALLOW"),
            // ... and vice versa: local + aliases are one set.
            c("SC trust domain aliases", "{rules: [{from: [{source: {principals: [new-td/ns/prod/sa/frontend]}}]}]}", from_old.clone(), "ALLOW"),
            // `cluster.local` in a policy stands for the local trust domain (and its aliases).
            c("SC cluster.local = local trust domain", "{rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]}]}", from_new.clone(), "ALLOW"),
            c("SC cluster.local = local trust domain", "{rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]}]}", from_old.clone(), "ALLOW"),
            // A domain that is neither local nor an alias is not rewritten.
            c("SC unrelated trust domain", "{rules: [{from: [{source: {principals: [other-td/ns/prod/sa/frontend]}}]}]}", from_new.clone(), "DENY"),
            c("SC unrelated trust domain", "{rules: [{from: [{source: {principals: [new-td/ns/prod/sa/frontend]}}]}]}", from_other.clone(), "DENY"),
            // Only the same ns/sa is matched in the alias.
            c("SC aliases keep ns/sa", "{rules: [{from: [{source: {principals: [old-td/ns/prod/sa/backend]}}]}]}", from_new.clone(), "DENY"),
            // `*` trust domain: any domain.
            c("AP suffix any trust domain", "{rules: [{from: [{source: {principals: ['*/ns/prod/sa/frontend']}}]}]}", from_other.clone(), "ALLOW"),
            // notPrincipals are expanded too.
            c("SC aliases for notPrincipals", "{rules: [{from: [{source: {notPrincipals: [old-td/ns/prod/sa/frontend]}}]}]}", from_new.clone(), "DENY"),
            // source.principal conditions are expanded like principals.
            c("APC source.principal + aliases", "{rules: [{when: [{key: source.principal, values: [old-td/ns/prod/sa/frontend]}]}]}", from_new.clone(), "ALLOW"),
        ],
        &m,
    );
}

#[test]
fn trust_domain_suffix_patterns() {
    let m = mesh("trustDomain: new-td\ntrustDomainAliases: [old-td, legacy]\n");
    let from =
        |td: &str| json!({"source": {"principal": format!("spiffe://{td}/ns/prod/sa/frontend")}});
    let spec = "{rules: [{from: [{source: {principals: ['*-td/ns/prod/sa/frontend']}}]}]}";
    run(
        &[
            // SC trust domain migration, with a `*-td` trust domain pattern: it is kept as a
            // suffix match for the domains it covers and rewritten for the other aliases.
            c(
                "SC aliases + *suffix trust domain",
                spec,
                from("new-td"),
                "ALLOW",
            ),
            c(
                "SC aliases + *suffix trust domain",
                spec,
                from("old-td"),
                "ALLOW",
            ),
            c(
                "SC aliases + *suffix trust domain",
                spec,
                from("legacy"),
                "ALLOW",
            ),
            c(
                "SC aliases + *suffix trust domain",
                spec,
                from("stranger"),
                "DENY",
            ),
        ],
        &m,
    );
}

fn doc(ns: &str, name: &str, spec: &str, annotations: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}{annotations}}}\nspec: {spec}\n")
}

#[test]
fn scope_root_namespace_and_dry_run() {
    let req = request(base());
    let m = MeshConfig::default();
    // AP: a policy in the root namespace applies mesh-wide.
    let s = set(&doc("istio-system", "deny-all", "{}", ""), &m);
    assert_eq!(eval(&s, &req).decision, Verdict::Deny);
    // AP: a root-namespace policy with a selector applies to matching workloads in all namespaces.
    let s = set(
        &doc(
            "istio-system",
            "sel",
            "{selector: {matchLabels: {app: reviews}}, action: DENY, rules: [{}]}",
            "",
        ),
        &m,
    );
    assert_eq!(eval(&s, &req).decision, Verdict::Deny);
    let s = set(
        &doc(
            "istio-system",
            "sel",
            "{selector: {matchLabels: {app: other}}, action: DENY, rules: [{}]}",
            "",
        ),
        &m,
    );
    assert_eq!(eval(&s, &req).decision, Verdict::Allow);
    // A custom root namespace from the mesh config.
    let m2 = MeshConfig::from_yaml_str("rootNamespace: mesh-root").unwrap();
    let s = set(&doc("mesh-root", "deny-all", "{}", ""), &m2);
    assert_eq!(eval(&s, &req).decision, Verdict::Deny);
    let s = set(&doc("istio-system", "deny-all", "{}", ""), &m2);
    assert_eq!(
        eval(&s, &req).decision,
        Verdict::Allow,
        "istio-system is not the root here"
    );
    // A policy in another namespace does not apply.
    let s = set(&doc("dev", "deny-all", "{}", ""), &m);
    let d = eval(&s, &req);
    assert_eq!(d.decision, Verdict::Allow);
    assert!(d.policies.is_empty());
    // Dry-run (istio.io/dry-run annotation): reported but never enforced.
    let dry = ", annotations: {istio.io/dry-run: 'true'}";
    let s = set(
        &doc("prod", "dry-deny", "{action: DENY, rules: [{}]}", dry),
        &m,
    );
    let d = eval(&s, &req);
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(d.policies.len(), 1);
    assert!(d.policies[0].dry_run && d.policies[0].matched);
    let s = set(
        &format!(
            "{}{}",
            doc(
                "prod",
                "dry-allow",
                "{rules: [{to: [{operation: {methods: [POST]}}]}]}",
                dry
            ),
            doc("prod", "x", "{action: AUDIT, rules: [{}]}", "")
        ),
        &m,
    );
    assert_eq!(
        eval(&s, &req).decision,
        Verdict::Allow,
        "a dry-run ALLOW does not make the workload deny-by-default"
    );
}

#[test]
fn action_order_and_reporting() {
    let m = MeshConfig::from_yaml_str(
        "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191}\n",
    )
    .unwrap();
    let req = request(base());
    // AP: DENY is evaluated before ALLOW: a matching DENY wins over a matching ALLOW.
    let y = format!(
        "{}{}",
        doc("prod", "allow-get", "{rules: [{to: [{operation: {methods: [GET]}}]}]}", ""),
        doc("prod", "deny-frontend", "{action: DENY, rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]}]}", "")
    );
    let d = eval(&set(&y, &m), &req);
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains("prod/deny-frontend"), "{}", d.reason);
    let deny = d
        .policies
        .iter()
        .find(|p| p.name == "prod/deny-frontend")
        .unwrap();
    assert_eq!((deny.matched, deny.rule), (true, Some(0)));
    // AP: ALLOW policies present and none match -> deny; the reason names them.
    let y = doc(
        "prod",
        "allow-post",
        "{rules: [{to: [{operation: {methods: [POST]}}]}]}",
        "",
    );
    let d = eval(&set(&y, &m), &req);
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains("prod/allow-post"));
    assert!(
        d.policies[0].reason.contains("methods"),
        "{}",
        d.policies[0].reason
    );
    // AP CUSTOM: evaluated first; the provider decides, then DENY/ALLOW continue.
    let y = format!(
        "{}{}",
        doc("prod", "ext", "{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: ['/api/*']}}]}]}", ""),
        doc("prod", "deny-get", "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}", "")
    );
    let s = set(&y, &m);
    let d = eval(&s, &req);
    assert_eq!(
        d.decision,
        Verdict::Custom {
            provider: "opa".into(),
            policy: "prod/ext".into()
        }
    );
    assert_eq!(s.evaluate_after_custom(&req).decision, Verdict::Deny);
    let post = request(patch(base(), &json!({"http": {"method": "POST"}})));
    assert_eq!(s.evaluate_after_custom(&post).decision, Verdict::Allow);
    let other = request(patch(base(), &json!({"http": {"path": "/health"}})));
    assert_eq!(
        eval(&s, &other).decision,
        Verdict::Deny,
        "CUSTOM not matching -> straight to DENY"
    );
    // The JSON shape of the decision.
    let j = serde_json::to_value(&d).unwrap();
    assert_eq!(j["decision"], "CUSTOM");
    assert_eq!(j["provider"], "opa");
    assert_eq!(j["mtlsMode"], "PERMISSIVE");
    assert_eq!(j["policies"][0]["name"], "prod/deny-get");
    assert_eq!(j["policies"][1]["matched"], true);
    assert_eq!(j["policies"][1]["rule"], 0);
}

/// The exact expansion Istio's trust-domain bundle performs (local domain first, then aliases).
#[test]
fn alias_expansion_output() {
    use trustmesh_policy::authz::expand_principal;
    let m = mesh("trustDomain: new-td\ntrustDomainAliases: [old-td, legacy]\n");
    let cases: [(&str, &[&str]); 6] = [
        (
            "old-td/ns/a/sa/b",
            &["new-td/ns/a/sa/b", "old-td/ns/a/sa/b", "legacy/ns/a/sa/b"],
        ),
        (
            "cluster.local/ns/a/sa/b",
            &["new-td/ns/a/sa/b", "old-td/ns/a/sa/b", "legacy/ns/a/sa/b"],
        ),
        ("*-td/ns/a/sa/b", &["*-td/ns/a/sa/b", "legacy/ns/a/sa/b"]),
        ("other/ns/a/sa/b", &["other/ns/a/sa/b"]),
        ("*/ns/a/sa/b", &["*/ns/a/sa/b"]),
        ("old-td/ns/a/*", &["old-td/ns/a/*"]),
    ];
    for (p, want) in cases {
        assert_eq!(expand_principal(p, &m), want, "{p}");
    }
}

/// Istio's generator drops HTTP-only fields on TCP for every action but ALLOW ("wider" DENY,
/// AUDIT and CUSTOM rules), and does not apply CUSTOM with an HTTP ext_authz provider to TCP
/// (AP "CUSTOM" action; the HTTP-only fields note on Rule).
#[test]
fn audit_and_custom_on_tcp() {
    let m = MeshConfig::from_yaml_str(
        "extensionProviders:\n- name: grpc\n  envoyExtAuthzGrpc: {service: a, port: 1}\n- name: http\n  envoyExtAuthzHttp: {service: b, port: 2}\n",
    )
    .unwrap();
    let tcp = request(patch(base(), &json!({"http": null, "auth": null})));
    let y = doc(
        "prod",
        "audit",
        "{action: AUDIT, rules: [{to: [{operation: {methods: [GET]}}]}]}",
        "",
    );
    let d = eval(&set(&y, &m), &tcp);
    assert_eq!(d.decision, Verdict::Allow);
    assert!(
        d.policies[0].matched,
        "AUDIT ignores HTTP-only fields on TCP: {:?}",
        d.policies
    );
    let fast = set(&y, &m).evaluate_authz_only(&tcp);
    assert_eq!(
        fast.policies.len(),
        1,
        "fast path reports the matching AUDIT policy"
    );

    let grpc = doc(
        "prod",
        "ext",
        "{action: CUSTOM, provider: {name: grpc}, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
        "",
    );
    let d = eval(&set(&grpc, &m), &tcp);
    assert_eq!(
        d.decision,
        Verdict::Custom {
            provider: "grpc".into(),
            policy: "prod/ext".into()
        }
    );
    let http = doc(
        "prod",
        "ext",
        "{action: CUSTOM, provider: {name: http}, rules: [{}]}",
        "",
    );
    let s = set(&http, &m);
    let d = eval(&s, &tcp);
    assert_eq!(d.decision, Verdict::Allow, "{}", d.reason);
    assert!(!d.policies[0].matched && d.policies[0].reason.contains("HTTP ext_authz"));
    assert_eq!(
        eval(&s, &request(base())).decision,
        Verdict::Custom {
            provider: "http".into(),
            policy: "prod/ext".into()
        }
    );
}

/// Istio configures one ext_authz provider per workload; with CUSTOM policies naming two, it
/// denies every request to the workload (its builder falls back to deny-all).
#[test]
fn two_custom_providers_deny_all() {
    let m = MeshConfig::from_yaml_str(
        "extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: a, port: 1}\n- name: b\n  envoyExtAuthzGrpc: {service: b, port: 2}\n",
    )
    .unwrap();
    let y = format!(
        "{}{}",
        doc(
            "prod",
            "ext-a",
            "{action: CUSTOM, provider: {name: a}, rules: [{to: [{operation: {paths: [/x]}}]}]}",
            ""
        ),
        doc(
            "istio-system",
            "ext-b",
            "{action: CUSTOM, provider: {name: b}, rules: [{to: [{operation: {paths: [/y]}}]}]}",
            ""
        )
    );
    let (s, notices) = trustmesh_policy::PolicySet::from_yaml_str("t.yaml", &y, &m).unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.message.contains("warning") && n.message.contains("same workloads")),
        "{notices:?}"
    );
    let d = eval(&s, &request(base()));
    assert_eq!(d.decision, Verdict::Deny);
    assert!(d.reason.contains("different providers"), "{}", d.reason);
    // A workload in another namespace sees only the root policy: no conflict.
    let other = request(patch(base(), &json!({"destination": {"namespace": "dev"}})));
    assert_eq!(eval(&s, &other).decision, Verdict::Allow);
}
