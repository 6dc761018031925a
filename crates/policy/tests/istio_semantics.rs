//! Policy semantics that follow Istio's implementation rather than only its reference docs:
//! path templates, space-delimited JWT claims, pseudo-headers and presence in
//! `request.headers`, `*` inside values and request principals, trust domains and service
//! accounts, and the validation Istio applies to them. Every case names the Istio (or Envoy)
//! source file its expectation comes from.

mod common;

use common::*;
use serde_json::{json, Value};
use trustmesh_policy::{MeshConfig, Workload};

/// `(source file, AuthorizationPolicy spec for prod/p selecting app=reviews, request patch,
/// expected verdict)`.
type Case = (&'static str, &'static str, Value, &'static str);

fn policy(spec: &str) -> String {
    let spec = format!(
        "{{selector: {{matchLabels: {{app: reviews}}}}, {}",
        spec.trim_start_matches('{')
    );
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: prod}}\nspec: {spec}\n")
}

fn run(cases: &[Case], mesh: &MeshConfig) {
    let mut failures = Vec::new();
    for (i, (src, spec, p, want)) in cases.iter().enumerate() {
        let s = set(&policy(spec), mesh);
        let d = eval(&s, &request(patch(base(), p)));
        if d.decision != verdict(want) {
            failures.push(format!(
                "case {i} [{src}] spec={spec} patch={p}: want {want} got {:?} ({})",
                d.decision, d.reason
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

fn path(p: &str) -> Value {
    json!({"http": {"path": p}})
}

fn when(key: &str, vals: &str) -> &'static str {
    Box::leak(format!("{{rules: [{{when: [{{key: '{key}', {vals}}}]}}]}}").into_boxed_str())
}

const TEMPLATES: &str = "tests/integration/security/authz_test.go (TestAuthz_PathTemplating)";

#[test]
fn path_templates() {
    let paths = |ps: &str| -> &'static str {
        Box::leak(
            format!("{{rules: [{{to: [{{operation: {{paths: [{ps}]}}}}]}}]}}").into_boxed_str(),
        )
    };
    run(
        &[
            // `{**}` is zero or more characters including `/`, and literals may follow it.
            (
                TEMPLATES,
                paths("'/store/{**}/cart'"),
                path("/store/foo/bar/cart"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/store/{**}/cart'"),
                path("/store/foo/cart"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/store/{**}/cart'"),
                path("/store//cart"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/store/{**}/cart'"),
                path("/store/cart"),
                "DENY",
            ),
            (
                TEMPLATES,
                paths("'/allow/admin/{**}'"),
                path("/allow/admin/"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/allow/admin/{**}'"),
                path("/allow/admin"),
                "DENY",
            ),
            (
                TEMPLATES,
                paths("'/allow/admin/{**}'"),
                path("/allow/admin?param=value"),
                "DENY",
            ),
            (
                TEMPLATES,
                paths("'/allow/admin/{**}'"),
                path("/allow/admin/foo/temp.txt?x=1"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/foo/{*}/bar/{**}'"),
                path("/foo/buzz/bar/bat/fuzz.txt"),
                "ALLOW",
            ),
            (
                TEMPLATES,
                paths("'/foo/{*}/bar/{**}'"),
                path("/foo//bar/bat.txt"),
                "DENY",
            ),
            (
                TEMPLATES,
                paths("'/foo/{*}/bar/{**}'"),
                path("/foo/bar/bat.txt"),
                "DENY",
            ),
            // istio/api security/v1beta1/authorization_policy.proto, Operation.paths examples.
            (
                "istio/api authorization_policy.proto",
                paths("'/foo/{**}/'"),
                path("/foo//"),
                "ALLOW",
            ),
            (
                "istio/api authorization_policy.proto",
                paths("'/foo/{**}/'"),
                path("/foo/bar"),
                "DENY",
            ),
            // Envoy uri_template_internal.cc: `{*}` is one or more pchars, `*` is not one.
            (
                "envoy uri_template_internal.cc",
                paths("'/api/{*}'"),
                path("/api/a*b"),
                "DENY",
            ),
            // notPaths with a template (pilot/pkg/security/authz/model/generator.go, pathGenerator).
            (
                "pilot/pkg/security/authz/model/generator.go",
                "{rules: [{to: [{operation: {notPaths: ['/store/{**}/cart']}}]}]}",
                path("/store/x/cart"),
                "DENY",
            ),
            (
                "pilot/pkg/security/authz/model/generator.go",
                "{rules: [{to: [{operation: {notPaths: ['/store/{**}/cart']}}]}]}",
                path("/store/cart"),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
    // Istio: pkg/config/security/security_test.go (TestCheckValidPathTemplate).
    let m = MeshConfig::default();
    let at = "p.yaml:1:spec.rules[0].to[0].operation";
    for (p, word) in [
        ("/{**}/foo/{*}", "last operator"),
        ("/{**}/{**}", "last operator"),
        ("/foo/{*}.txt", "whole segment"),
        ("/foo/{buzz}", "only allowed"),
        ("/*/baz/{*}", "`*`"),
        ("/**/baz/{*}", "`*`"),
    ] {
        let ps = problems(
            &policy(&format!(
                "{{rules: [{{to: [{{operation: {{paths: ['{p}']}}}}]}}]}}"
            )),
            &m,
        );
        has(&ps, &format!("{at}.paths[0]"), word);
    }
    for ok in ["/store/{**}/cart", "/foo/{*}/bar/{**}", "/{*}/foo/", "/a*b"] {
        let ps = problems(
            &policy(&format!(
                "{{rules: [{{to: [{{operation: {{paths: ['{ok}']}}}}]}}]}}"
            )),
            &m,
        );
        assert!(ps.is_empty(), "{ok}: {ps:?}");
    }
}

const AUTHN: &str = "pilot/pkg/security/authn/policy_applier.go (buildSpaceDelimitedClaims)";

#[test]
fn space_delimited_claims() {
    let claims = |c: Value| json!({"auth": {"claims": c}});
    let roles = |extra: Value| json!({"auth": {"claims": {"roles": "editor admin"}, "spaceDelimitedClaims": extra}});
    run(
        &[
            // `scope` and `permission` are always split on spaces.
            (
                AUTHN,
                when("request.auth.claims[scope]", "values: [write]"),
                claims(json!({"scope": "read write"})),
                "ALLOW",
            ),
            (
                AUTHN,
                when("request.auth.claims[scope]", "values: ['read write']"),
                claims(json!({"scope": "read write"})),
                "DENY",
            ),
            (
                AUTHN,
                when("request.auth.claims[permission]", "values: [read]"),
                claims(json!({"permission": "read  write"})),
                "ALLOW",
            ),
            (
                AUTHN,
                when("request.auth.claims[scope]", "notValues: [admin]"),
                claims(json!({"scope": "read admin"})),
                "DENY",
            ),
            (
                AUTHN,
                when("request.auth.claims[scope]", "values: ['wri*']"),
                claims(json!({"scope": "read write"})),
                "ALLOW",
            ),
            // Other claims only when the accepting rule lists them.
            (
                AUTHN,
                when("request.auth.claims[roles]", "values: [admin]"),
                roles(json!([])),
                "DENY",
            ),
            (
                AUTHN,
                when("request.auth.claims[roles]", "values: ['editor admin']"),
                roles(json!([])),
                "ALLOW",
            ),
            (
                AUTHN,
                when("request.auth.claims[roles]", "values: [admin]"),
                roles(json!(["roles"])),
                "ALLOW",
            ),
            (
                AUTHN,
                when("request.auth.claims[roles]", "values: ['editor admin']"),
                roles(json!(["roles"])),
                "DENY",
            ),
            // Envoy's jwt_authn (authenticator.cc, setPayloadMetadata) splits top-level claims only.
            (
                "envoy jwt_authn authenticator.cc",
                when("request.auth.claims[a][scope]", "values: [x]"),
                claims(json!({"a": {"scope": "x y"}})),
                "DENY",
            ),
            (
                "envoy jwt_authn authenticator.cc",
                when("request.auth.claims[a][scope]", "values: ['x y']"),
                claims(json!({"a": {"scope": "x y"}})),
                "ALLOW",
            ),
            // Arrays are matched element by element as before (pilot/pkg/security/authz/matcher/metadata.go).
            (
                "pilot/pkg/security/authz/matcher/metadata.go",
                when("request.auth.claims[scope]", "values: [b]"),
                claims(json!({"scope": ["a", "b"]})),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
    // The field loads from a RequestAuthentication and reaches the rule the proxy runs
    // (istio/api security/v1beta1/request_authentication.proto, JWTRule.space_delimited_claims).
    let ra = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: prod}\nspec: {jwtRules: [{issuer: https://issuer, spaceDelimitedClaims: [roles, provider.login.scope]}]}\n";
    let s = set(ra, &MeshConfig::default());
    let w = Workload::new("prod", &[("app", "reviews")]);
    assert_eq!(
        s.jwt_rules(&w)[0].space_delimited_claims,
        vec!["roles".to_string(), "provider.login.scope".to_string()]
    );
    let ps = problems(
        &ra.replace("[roles, provider.login.scope]", "[roles, '']"),
        &MeshConfig::default(),
    );
    has(
        &ps,
        "p.yaml:1:spec.jwtRules[0].spaceDelimitedClaims[1]",
        "empty",
    );
}

const HEADER: &str = "pilot/pkg/security/authz/matcher/header.go (HeaderMatcher)";

#[test]
fn request_headers() {
    let headers = |h: Value| json!({"http": {"headers": h}});
    let none = json!({});
    run(
        &[
            // Pseudo-headers exist in Envoy's header map without a real header of that name;
            // `eval` clears the copied headers when the workload's policies read none.
            (
                HEADER,
                when("request.headers[:method]", "values: [GET]"),
                none.clone(),
                "ALLOW",
            ),
            (
                HEADER,
                when("request.headers[:method]", "values: [POST]"),
                none.clone(),
                "DENY",
            ),
            (
                HEADER,
                when("request.headers[:authority]", "values: ['reviews:*']"),
                none.clone(),
                "ALLOW",
            ),
            // Envoy's RBAC `header` docs: `:path` includes the query string.
            (
                HEADER,
                when("request.headers[:path]", "values: ['/api/v1?q=1']"),
                none.clone(),
                "ALLOW",
            ),
            (
                HEADER,
                when("request.headers[:path]", "values: [/api/v1]"),
                none.clone(),
                "DENY",
            ),
            (
                HEADER,
                when("request.headers[:path]", "values: ['/api/*']"),
                path("/api/x"),
                "ALLOW",
            ),
            // Envoy keeps HTTP/1 Host as :authority, so `host` is never found.
            (
                HEADER,
                when("request.headers[host]", "values: ['reviews:9080']"),
                headers(json!({"host": "reviews:9080"})),
                "DENY",
            ),
            (
                HEADER,
                when("request.headers[host]", "notValues: ['*']"),
                headers(json!({"host": "reviews:9080"})),
                "ALLOW",
            ),
            // `*` is present_match: an empty value is present.
            (
                HEADER,
                when("request.headers[x-empty]", "values: ['*']"),
                headers(json!({"x-empty": ""})),
                "ALLOW",
            ),
            (
                HEADER,
                when("request.headers[x-empty]", "notValues: ['*']"),
                headers(json!({"x-empty": ""})),
                "DENY",
            ),
            (
                HEADER,
                when("request.headers[x-missing]", "values: ['*']"),
                none.clone(),
                "DENY",
            ),
            (
                HEADER,
                when("request.headers[x-empty]", "values: ['a*']"),
                headers(json!({"x-empty": ""})),
                "DENY",
            ),
            // A leading `*` is tested first: `*a*` is the suffix `a*`.
            (
                HEADER,
                when("request.headers[x-token]", "values: ['*a*']"),
                headers(json!({"x-token": "xa*"})),
                "ALLOW",
            ),
            (
                HEADER,
                when("request.headers[x-token]", "values: ['*a*']"),
                headers(json!({"x-token": "xab"})),
                "DENY",
            ),
        ],
        &MeshConfig::default(),
    );
    // Only real headers make the proxy copy headers.
    let w = Workload::new("prod", &[("app", "reviews")]);
    let m = MeshConfig::default();
    for (key, copies) in [
        ("request.headers[:method]", false),
        ("request.headers[:path]", false),
        ("request.headers[:authority]", false),
        ("request.headers[host]", false),
        ("request.headers[x-token]", true),
        ("request.headers[:scheme]", true),
    ] {
        let s = set(&policy(when(key, "values: [a]")), &m);
        assert_eq!(
            s.workload_policies(&w).needs_request_headers(),
            copies,
            "{key}"
        );
    }
    let ps = problems(&policy(when("request.headers[Host]", "values: [a]")), &m);
    has(&ps, "p.yaml:1:spec.rules[0].when[0].key", ":authority");
}

const STRING: &str = "pilot/pkg/security/authz/matcher/string.go (StringMatcherWithPrefix)";
const NAMESPACE: &str = "pilot/pkg/security/authz/model/generator.go (srcNamespaceGenerator)";
const RP: &str = "pilot/pkg/security/authz/model/generator.go (requestPrincipalGenerator)";

#[test]
fn wildcards_inside_values() {
    let from = |f: &str, v: &str| -> &'static str {
        Box::leak(format!("{{rules: [{{from: [{{source: {{{f}: ['{v}']}}}}]}}]}}").into_boxed_str())
    };
    let to = |f: &str, v: &str| -> &'static str {
        Box::leak(
            format!("{{rules: [{{to: [{{operation: {{{f}: ['{v}']}}}}]}}]}}").into_boxed_str(),
        )
    };
    let none = json!({});
    let tenant = json!({"auth": {"principal": "https://issuer/tenant/x",
                                 "claims": {"iss": "https://issuer/tenant", "sub": "x"}}});
    run(
        &[
            // Namespaces: every `*` is a glob.
            (NAMESPACE, from("namespaces", "p*d"), none.clone(), "ALLOW"),
            (NAMESPACE, from("namespaces", "p*x"), none.clone(), "DENY"),
            (
                NAMESPACE,
                from("notNamespaces", "p*d"),
                none.clone(),
                "DENY",
            ),
            (NAMESPACE, from("namespaces", "*ro*"), none.clone(), "ALLOW"),
            (
                NAMESPACE,
                when("source.namespace", "values: ['p*o*']"),
                none.clone(),
                "ALLOW",
            ),
            (
                NAMESPACE,
                when("source.namespace", "values: ['d*v']"),
                none.clone(),
                "DENY",
            ),
            // Elsewhere a middle `*` is a literal character.
            (
                STRING,
                from("principals", "*/ns/*/sa/frontend"),
                none.clone(),
                "DENY",
            ),
            (
                STRING,
                from("principals", "cluster.local/ns/*/sa/frontend"),
                none.clone(),
                "DENY",
            ),
            (
                STRING,
                from("principals", "cluster.local/ns/*/sa/frontend"),
                json!({"source": {"principal": "spiffe://cluster.local/ns/*/sa/frontend"}}),
                "ALLOW",
            ),
            (
                STRING,
                from("principals", "*frontend*"),
                none.clone(),
                "DENY",
            ),
            (STRING, to("paths", "/api/*/x"), path("/api/v1/x"), "DENY"),
            (STRING, to("paths", "/api/*/x"), path("/api/*/x"), "ALLOW"),
            (
                "pilot/pkg/security/authz/matcher/header.go (HostMatcher)",
                to("hosts", "rev*ews:9080"),
                none.clone(),
                "DENY",
            ),
            (HEADER, to("methods", "G*T"), none.clone(), "DENY"),
            (
                STRING,
                when("request.auth.claims[groups]", "values: ['a*n']"),
                none.clone(),
                "DENY",
            ),
            (
                STRING,
                when("request.auth.claims[groups]", "values: ['*dmi*']"),
                none.clone(),
                "DENY",
            ),
            (
                STRING,
                when("request.auth.claims[groups]", "values: ['*dmin']"),
                none.clone(),
                "ALLOW",
            ),
            (
                STRING,
                when("connection.sni", "values: ['rev*.prod']"),
                none.clone(),
                "DENY",
            ),
            (
                RP,
                from("requestPrincipals", "https://iss*er/sub"),
                none.clone(),
                "DENY",
            ),
            // Request principals: issuer and subject are matched apart, split at the last `/`.
            (
                RP,
                from("requestPrincipals", "https://issuer/*"),
                none.clone(),
                "ALLOW",
            ),
            (
                RP,
                from("requestPrincipals", "https://issuer/*"),
                tenant.clone(),
                "DENY",
            ),
            (
                RP,
                from("requestPrincipals", "https://issuer/tenant/*"),
                tenant.clone(),
                "ALLOW",
            ),
            (
                RP,
                from("requestPrincipals", "*/sub"),
                none.clone(),
                "ALLOW",
            ),
            (
                RP,
                from("requestPrincipals", "*/other"),
                none.clone(),
                "DENY",
            ),
            (
                RP,
                from("notRequestPrincipals", "https://issuer/*"),
                tenant.clone(),
                "ALLOW",
            ),
            (
                RP,
                when("request.auth.principal", "values: ['https://issuer/*']"),
                tenant.clone(),
                "DENY",
            ),
            (
                RP,
                when("request.auth.principal", "values: ['*/x']"),
                tenant.clone(),
                "ALLOW",
            ),
        ],
        &MeshConfig::default(),
    );
}

const TD: &str = "pilot/pkg/security/authz/model/generator.go (srcTrustDomainGenerator)";
const SA: &str = "pilot/pkg/security/authz/model/generator.go (serviceAccountRegex)";

#[test]
fn trust_domains_and_service_accounts() {
    let from = |f: &str, v: &str| -> &'static str {
        Box::leak(format!("{{rules: [{{from: [{{source: {{{f}: [{v}]}}}}]}}]}}").into_boxed_str())
    };
    let none = json!({});
    let plain = json!({"source": {"principal": null}});
    let other = json!({"source": {"principal": "spiffe://corp.example/ns/prod/sa/frontend"}});
    run(
        &[
            (
                TD,
                from("trustDomains", "cluster.local"),
                none.clone(),
                "ALLOW",
            ),
            (
                TD,
                from("trustDomains", "corp.example"),
                none.clone(),
                "DENY",
            ),
            (
                TD,
                from("trustDomains", "corp.example"),
                other.clone(),
                "ALLOW",
            ),
            (
                TD,
                from("trustDomains", "'*.example'"),
                other.clone(),
                "ALLOW",
            ),
            (TD, from("trustDomains", "'corp*'"), other.clone(), "ALLOW"),
            (TD, from("trustDomains", "'*'"), none.clone(), "ALLOW"),
            (TD, from("trustDomains", "'*'"), plain.clone(), "DENY"),
            (
                TD,
                from("notTrustDomains", "cluster.local"),
                none.clone(),
                "DENY",
            ),
            (
                TD,
                from("notTrustDomains", "cluster.local"),
                plain.clone(),
                "ALLOW",
            ),
            (
                TD,
                when("source.trustDomain", "values: [cluster.local]"),
                none.clone(),
                "ALLOW",
            ),
            (
                TD,
                when("source.trustDomain", "notValues: ['*.local']"),
                none.clone(),
                "DENY",
            ),
            // The short form names a service account in the policy's namespace (prod).
            (
                SA,
                from("serviceAccounts", "frontend"),
                none.clone(),
                "ALLOW",
            ),
            (
                SA,
                from("serviceAccounts", "prod/frontend"),
                none.clone(),
                "ALLOW",
            ),
            (
                SA,
                from("serviceAccounts", "frontend"),
                json!({"source": {"principal": "spiffe://cluster.local/ns/dev/sa/frontend"}}),
                "DENY",
            ),
            (
                SA,
                from("notServiceAccounts", "frontend"),
                none.clone(),
                "DENY",
            ),
            (
                SA,
                when("source.serviceAccount", "values: [frontend]"),
                none.clone(),
                "ALLOW",
            ),
            (
                SA,
                when("source.serviceAccount", "values: [dev/frontend]"),
                none.clone(),
                "DENY",
            ),
        ],
        &MeshConfig::default(),
    );
    // Trust-domain migration: a value naming the local domain or an alias stands for all
    // (pilot/pkg/security/authz/model/model.go MigrateTrustDomain, trustdomain/bundle.go).
    let mesh =
        MeshConfig::from_yaml_str("trustDomain: new.td\ntrustDomainAliases: [cluster.local]\n")
            .unwrap();
    run(
        &[
            (
                "pilot/pkg/security/trustdomain/bundle.go",
                from("trustDomains", "new.td"),
                none.clone(),
                "ALLOW",
            ),
            (
                "pilot/pkg/security/trustdomain/bundle.go",
                when("source.trustDomain", "values: [new.td]"),
                none.clone(),
                "ALLOW",
            ),
            (
                "pilot/pkg/security/trustdomain/bundle.go",
                from("trustDomains", "corp.example"),
                none.clone(),
                "DENY",
            ),
        ],
        &mesh,
    );
}

#[test]
fn validation_of_new_fields() {
    // Istio: pkg/config/security/security.go (CheckServiceAccount, CheckTrustDomainValues,
    // CheckWildcardValues, ValidateAttribute) and pkg/config/validation/validation.go
    // (ValidateAuthorizationPolicy).
    let m = MeshConfig::default();
    let src = "p.yaml:1:spec.rules[0].from[0].source";
    let w = "p.yaml:1:spec.rules[0].when[0]";
    let many: Vec<String> = (0..17).map(|i| format!("prod/sa{i}")).collect();
    let many = format!(
        "{{rules: [{{from: [{{source: {{serviceAccounts: [{}]}}}}]}}]}}",
        many.join(", ")
    );
    let cases: Vec<(String, String, &str)> = vec![
        (policy("{rules: [{from: [{source: {serviceAccounts: ['prod/*']}}]}]}"), format!("{src}.serviceAccounts[0]"), "wildcards"),
        (policy("{rules: [{from: [{source: {notServiceAccounts: ['*']}}]}]}"), format!("{src}.notServiceAccounts[0]"), "wildcards"),
        (policy("{rules: [{from: [{source: {serviceAccounts: ['/sa']}}]}]}"), format!("{src}.serviceAccounts[0]"), "empty namespace"),
        (policy(&many), format!("{src}.serviceAccounts"), "at most 16"),
        (policy("{rules: [{from: [{source: {trustDomains: ['a*b']}}]}]}"), format!("{src}.trustDomains[0]"), "start or the end"),
        (policy("{rules: [{from: [{source: {notTrustDomains: ['*a*']}}]}]}"), format!("{src}.notTrustDomains[0]"), "at most one"),
        (policy("{rules: [{from: [{source: {trustDomains: [a/b]}}]}]}"), format!("{src}.trustDomains[0]"), "cannot contain `/`"),
        (policy("{rules: [{from: [{source: {trustDomains: [td]}}, {source: {trustDomains: ['']}}]}]}"), "p.yaml:1:spec.rules[0].from[1].source.trustDomains[0]".into(), "empty"),
        (policy(when("source.trustDomain", "values: ['a*b']")), format!("{w}.values[0]"), "start or the end"),
        (policy(when("source.serviceAccount", "notValues: ['ns/*']")), format!("{w}.notValues[0]"), "wildcards"),
        (policy(when("experimental.envoy.filters.network.mysql_proxy[db.table]", "values: ['[update]']")), format!("{w}.key"), "Envoy filter metadata"),
        (policy(when("experimental.envoy.filters.network.mysql_proxy", "values: [x]")), format!("{w}.key"), "bad key"),
    ];
    for (yaml, loc, word) in &cases {
        has(&problems(yaml, &m), loc, word);
    }
    // Accepted as Istio accepts them.
    for ok in [
        "{rules: [{from: [{source: {serviceAccounts: [frontend, prod/backend]}}]}]}",
        "{rules: [{from: [{source: {trustDomains: ['*', '*.corp', 'corp-*']}}]}]}",
        "{rules: [{from: [{source: {notTrustDomains: [cluster.local]}}]}]}",
        "{rules: [{from: [{source: {namespaces: ['a*b*c'], principals: ['*/ns/*/sa/x']}}]}]}",
        // ValidateAttribute checks source.trustDomain with CheckWildcardValues only.
        "{rules: [{when: [{key: source.trustDomain, values: [a/b]}]}]}",
    ] {
        let ps = problems(&policy(ok), &m);
        assert!(ps.is_empty(), "{ok}: {ps:?}");
    }
}
