//! Loading users' existing Istio YAML unchanged, and `validate` finding every problem with its
//! file:document:field location and a hint.

mod common;

use std::path::PathBuf;

use common::problems;

use trustmesh_policy::{load, validate, MeshConfig, PolicySet, SourceText};

fn src(file: &str, text: &str) -> SourceText {
    SourceText {
        file: file.into(),
        text: text.into(),
    }
}

/// Asserts a problem at `loc` (prefix) whose text contains `word`, with a hint.
fn has(ps: &[String], loc: &str, word: &str) {
    common::has(ps, loc, word);
    assert!(
        ps.iter()
            .any(|p| p.starts_with(loc) && p.contains(word) && p.contains("(hint: ")),
        "no hint for the problem at {loc}; got:\n{}",
        ps.join("\n")
    );
}

const KUBECTL_LIST: &str = r#"apiVersion: v1
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"security.istio.io/v1"}
    creationTimestamp: "2024-05-01T10:00:00Z"
    generation: 1
    managedFields:
    - apiVersion: security.istio.io/v1
      fieldsType: FieldsV1
    name: allow-get
    namespace: prod
    resourceVersion: "12345"
    uid: 6f1c0e2a-0000-0000-0000-000000000000
  spec:
    rules:
    - to:
      - operation:
          methods: ["GET"]
  status:
    validationMessages: []
- apiVersion: security.istio.io/v1beta1
  kind: PeerAuthentication
  metadata:
    name: default
    namespace: istio-system
  spec:
    mtls:
      mode: STRICT
kind: List
metadata:
  resourceVersion: ""
"#;

#[test]
fn loads_kubectl_list_multidoc_and_skips_other_kinds() {
    let multi = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n---\napiVersion: security.istio.io/v1beta1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: prod}\nspec: {jwtRules: [{issuer: https://i}]}\n";
    let (set, notices) = PolicySet::from_sources(
        &[src("list.yaml", KUBECTL_LIST), src("multi.yaml", multi)],
        &MeshConfig::default(),
    )
    .unwrap();
    assert_eq!(set.authorization_policy_count(), 1);
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].to_string().starts_with("multi.yaml:1:"),
        "{}",
        notices[0]
    );
    assert!(notices[0].message.contains("Deployment"));
    let w = trustmesh_policy::Workload::new("prod", &[]);
    assert_eq!(set.mtls_mode(&w, 80).0, trustmesh_policy::MtlsMode::Strict);
    assert_eq!(set.jwt_rules(&w).len(), 1);
}

#[test]
fn unknown_fields_name_file_document_and_path() {
    let y = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  rules:\n  - from:\n    - source:\n        principal: [x]\n";
    let ps = problems(y, &MeshConfig::default());
    assert_eq!(ps.len(), 1, "{ps:?}");
    has(
        &ps,
        "p.yaml:2:spec.rules[0].from[0].source.principal:",
        "unknown field `principal`",
    );
    // Inside a List the item index is part of the path.
    let l = KUBECTL_LIST.replace("methods: [\"GET\"]", "method: [\"GET\"]");
    let ps = problems(&l, &MeshConfig::default());
    has(
        &ps,
        "p.yaml:1:items[0].spec.rules[0].to[0].operation.method:",
        "unknown field `method`",
    );
    // Bad enum values are located too.
    let ps = problems("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRICTLY}}\n", &MeshConfig::default());
    has(&ps, "p.yaml:1:spec.mtls.mode", "STRICTLY");
    // Unsupported apiVersion for a security kind.
    let ps = problems(
        "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n",
        &MeshConfig::default(),
    );
    has(&ps, "p.yaml:1:apiVersion", "v1alpha1");
    // Aliases written into a PeerAuthentication (as trust-domain migration guides get misread):
    // the hint says where they belong.
    let ps = problems(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRICT}, trustDomainAliases: [old.example]}\n",
        &MeshConfig::default(),
    );
    has(&ps, "p.yaml:1:spec.trustDomainAliases", "unknown field");
    assert!(
        ps[0].contains("(hint: aliases are meshConfig.trustDomainAliases"),
        "{}",
        ps[0]
    );
}

fn ap(spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: prod}}\nspec: {spec}\n")
}

#[test]
fn validation_problems_table() {
    let mesh = MeshConfig::from_yaml_str(
        "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa, port: 9191}\n- name: opa2\n  envoyExtAuthzHttp: {service: opa2, port: 8181}\n- name: zipkin\n  zipkin: {service: z, port: 9411}\n",
    )
    .unwrap();
    let r = "p.yaml:1:spec.rules[0]";
    let mut cases: Vec<(String, String, &str)> = vec![
        (ap("{rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]}"), format!("{r}.from[0].source.ipBlocks[0]"), "CIDR"),
        (ap("{rules: [{from: [{source: {notRemoteIpBlocks: [nope]}}]}]}"), format!("{r}.from[0].source.notRemoteIpBlocks[0]"), "CIDR"),
        (ap("{rules: [{to: [{operation: {methods: [get]}}]}]}"), format!("{r}.to[0].operation.methods[0]"), "lower-case"),
        (ap("{rules: [{to: [{operation: {methods: ['GE T']}}]}]}"), format!("{r}.to[0].operation.methods[0]"), "not a valid HTTP method"),
        (ap("{rules: [{to: [{operation: {ports: ['http']}}]}]}"), format!("{r}.to[0].operation.ports[0]"), "port"),
        // Istio: pkg/config/security/security.go (CheckValidPathTemplate): literals may follow
        // `{**}`, operators may not.
        (ap("{rules: [{to: [{operation: {paths: ['/a/{**}/{*}']}}]}]}"), format!("{r}.to[0].operation.paths[0]"), "last"),
        (ap("{action: CUSTOM, rules: [{}]}"), "p.yaml:1:spec.provider".into(), "requires a provider"),
        (ap("{action: CUSTOM, provider: {name: nope}, rules: [{}]}"), "p.yaml:1:spec.provider.name".into(), "unknown extension provider"),
        (ap("{action: CUSTOM, provider: {name: zipkin}, rules: [{}]}"), "p.yaml:1:spec.provider.name".into(), "not an ext_authz"),
        (ap("{action: CUSTOM, provider: {name: opa}}"), "p.yaml:1:spec.rules".into(), "without rules"),
        (ap("{action: DENY, provider: {name: opa}, rules: [{}]}"), "p.yaml:1:spec.provider".into(), "only used with action CUSTOM"),
        (ap("{rules: [{to: [{operation: {ports: ['3306'], methods: [GET]}}]}]}"), format!("{r}.to[0].operation.ports"), "TCP"),
        (ap("{rules: [{from: [{source: {principals: [spiffe://cluster.local/ns/a/sa/b]}}]}]}"), format!("{r}.from[0].source.principals[0]"), "spiffe://"),
        (ap("{rules: [{when: [{key: source.principal, values: [spiffe://cluster.local/ns/a/sa/b]}]}]}"), format!("{r}.when[0].values[0]"), "spiffe://"),
        (ap("{rules: [{when: [{key: 'request.header[x]', values: [a]}]}]}"), format!("{r}.when[0].key"), "unknown condition key"),
        (ap("{rules: [{when: [{key: source.ip, values: [1.2.3]}]}]}"), format!("{r}.when[0].values[0]"), "CIDR"),
        (ap("{rules: [{when: [{key: destination.port, notValues: [x]}]}]}"), format!("{r}.when[0].notValues[0]"), "port"),
        (ap("{rules: [{when: [{key: source.ip}]}]}"), format!("{r}.when[0]"), "neither values nor notValues"),
        (ap("{rules: [{from: [{source: {}}]}]}"), format!("{r}.from[0].source"), "no fields"),
        (ap("{rules: [{to: [{}]}]}"), format!("{r}.to[0].operation"), "without operation"),
        (ap("{rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]}"), format!("{r}.from[0].source.serviceAccounts[0]"), "namespace"),
        (
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: prod}\nspec: {portLevelMtls: {8080: {mode: DISABLE}}}\n".into(),
            "p.yaml:1:spec.portLevelMtls".into(),
            "selector",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p, namespace: prod}\nspec: {jwtRules: [{audiences: [a]}]}\n".into(),
            "p.yaml:1:spec.jwtRules[0].issuer".into(),
            "issuer",
        ),
        (format!("{}---\n{}", ap("{}"), ap("{}")), "p.yaml:2:metadata.name".into(), "duplicate"),
        (
            format!(
                "{}---\n{}",
                ap("{action: CUSTOM, provider: {name: opa}, rules: [{}]}"),
                ap("{action: CUSTOM, provider: {name: opa2}, rules: [{}]}").replace("name: p,", "name: q,")
            ),
            "p.yaml:2:spec.provider.name".into(),
            "same workloads",
        ),
    ];
    cases.extend([
        (ap("{rules: [{when: [{key: source.namespace, values: ['']}]}]}"), format!("{r}.when[0].values[0]"), "empty value"),
        // Istio: pkg/config/security/security.go (CheckServiceAccount): no wildcards.
        (ap("{rules: [{when: [{key: source.serviceAccount, values: ['prod/*']}]}]}"), format!("{r}.when[0].values[0]"), "wildcards"),
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p, namespace: prod}\nspec: {jwtRules: [{jwksUri: 'ftp://x'}]}\n".into(),
            "p.yaml:1:spec.jwtRules[0].jwksUri".into(),
            "http(s) URL",
        ),
        (ap("{action: DENY}"), "p.yaml:1:spec.rules".to_string(), "DENY action without rules"),
        (ap("{rules: [{from: [{source: {principals: [a/ns/b/sa/c], serviceAccounts: [b/c]}}]}]}"), format!("{r}.from[0].source"), "serviceAccounts cannot be combined"),
        (ap("{rules: [{from: [{source: {namespaces: ['']}}]}]}"), format!("{r}.from[0].source.namespaces[0]"), "empty value"),
        (ap("{rules: [{to: [{operation: {paths: ['']}}]}]}"), format!("{r}.to[0].operation.paths[0]"), "empty value"),
        (ap("{action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}"), r.to_string(), "denies all traffic to TCP ports"),
        (ap("{action: DENY, rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"), r.to_string(), "denies all traffic to TCP ports"),
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p, namespace: prod}\nspec: {jwtRules: [{issuer: i, audiences: [''], timeout: 5 seconds}]}\n".into(),
            "p.yaml:1:spec.jwtRules[0].audiences[0]".into(),
            "empty",
        ),
        (
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p, namespace: prod}\nspec: {jwtRules: [{issuer: i, timeout: 5 seconds}]}\n".into(),
            "p.yaml:1:spec.jwtRules[0].timeout".into(),
            "duration",
        ),
    ]);
    for (yaml, loc, word) in &cases {
        let ps = problems(yaml, &mesh);
        has(&ps, loc, word);
    }
    // Every problem in one file is reported, not only the first.
    let many = ap("{rules: [{from: [{source: {ipBlocks: [x], principals: [spiffe://a/b]}}], to: [{operation: {methods: [get]}}]}]}");
    assert_eq!(problems(&many, &mesh).len(), 3);
    // Istio accepts these, so they are warnings: reported by validate, not fatal to loading.
    for spec in [
        "{rules: [{from: [{source: {principals: [spiffe://cluster.local/ns/a/sa/b]}}]}]}",
        "{rules: [{to: [{operation: {methods: [get]}}]}]}",
        "{action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}",
        "{action: CUSTOM, provider: {name: nope}, rules: [{}]}",
    ] {
        let r = validate(&[src("p.yaml", &ap(spec))], &mesh);
        assert!(
            !r.problems.is_empty() && r.problems.iter().all(|p| p.warning),
            "{spec}: {:?}",
            r.problems
        );
        let (_, notices) = PolicySet::from_sources(&[src("p.yaml", &ap(spec))], &mesh).unwrap();
        assert!(
            notices.iter().any(|n| n.message.starts_with("warning: ")),
            "{spec}"
        );
    }
    // Errors are not fatal to loading: the resource is enforced fail-closed (see fail_closed.rs).
    let (set, _) = PolicySet::from_sources(&[src("p.yaml", &ap("{action: DENY}"))], &mesh).unwrap();
    assert_eq!(set.invalid_resources().len(), 1);
    // A clean file has no problems.
    assert!(problems(
        &ap("{rules: [{to: [{operation: {methods: [GET], paths: ['/a/{*}/b/{**}']}}]}]}"),
        &mesh
    )
    .is_empty());
}

/// Dry-run annotation values follow Go's boolean parsing, as Istio reads them
/// (pkg/config/validation/validation.go checkDryRunAnnotation, strconv.ParseBool).
#[test]
fn dry_run_annotation_values() {
    for (v, dry, invalid_value) in [
        ("true", true, false),
        ("1", true, false),
        ("T", true, false),
        ("false", false, false),
        ("yes", false, true),
    ] {
        let y = format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: prod, annotations: {{istio.io/dry-run: '{v}'}}}}\nspec: {{action: DENY, rules: [{{}}]}}\n");
        let (set, _) =
            PolicySet::from_sources(&[src("p.yaml", &y)], &MeshConfig::default()).unwrap();
        // Istio's webhook rejects a non-boolean value (checkDryRunAnnotation); loaded anyway,
        // the policy is enforced as written, as Istio's builder does.
        let invalid = set.invalid_resources();
        assert_eq!(
            invalid.len(),
            usize::from(invalid_value),
            "{v}: {invalid:?}"
        );
        if invalid_value {
            assert_eq!(invalid[0].outcome.label(), "enforced_as_written");
        }
        let req: trustmesh_policy::Request = serde_json::from_value(
            serde_json::json!({"destination": {"namespace": "prod", "port": 80}}),
        )
        .unwrap();
        let d = set.evaluate(&req);
        assert_eq!(d.policies[0].dry_run, dry, "{v}");
        assert_eq!(d.is_allow(), dry, "{v}");
    }
}

#[test]
fn yaml_syntax_is_unreadable() {
    let r = validate(
        &[src("bad.yaml", "kind: [unclosed\n")],
        &MeshConfig::default(),
    );
    assert_eq!(r.problems.len(), 1);
    assert!(r.problems[0].unreadable);
    assert!(r.problems[0].to_string().starts_with("bad.yaml:1:"));
}

#[test]
fn mesh_config_shapes() {
    let bare = "trustDomain: td.example\ntrustDomainAliases: [old.example]\naccessLogFile: /dev/stdout\ndefaultConfig: {holdApplicationUntilProxyStarts: true}\nextensionProviders:\n- name: ext\n  envoyExtAuthzHttp: {service: ext.svc, port: 8000, includeRequestHeadersInCheck: [authorization], headersToUpstreamOnAllow: [x-user]}\n";
    let m = MeshConfig::from_yaml_str(bare).unwrap();
    assert_eq!(m.trust_domain, "td.example");
    assert_eq!(m.root_namespace, "istio-system");
    assert_eq!(
        m.trust_domains().collect::<Vec<_>>(),
        ["td.example", "old.example"]
    );
    let http = m
        .provider("ext")
        .unwrap()
        .envoy_ext_authz_http
        .as_ref()
        .unwrap();
    assert_eq!(
        (http.port, http.include_request_headers_in_check.len()),
        (8000, 1)
    );
    let wrapped = format!(
        "meshConfig:\n{}",
        bare.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    assert_eq!(MeshConfig::from_yaml_str(&wrapped).unwrap(), m);
    let iop = format!(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n{}",
        bare.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    assert_eq!(MeshConfig::from_yaml_str(&iop).unwrap(), m);
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  mesh: |\n{}",
        bare.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    assert_eq!(MeshConfig::from_yaml_str(&cm).unwrap(), m);
    assert_eq!(
        MeshConfig::from_yaml_str("").unwrap(),
        MeshConfig::default()
    );
    // The Sail operator's Istio resource.
    let sail = format!(
        "apiVersion: sailoperator.io/v1\nkind: Istio\nspec:\n  values:\n    meshConfig:\n{}",
        bare.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    assert_eq!(MeshConfig::from_yaml_str(&sail).unwrap(), m);
    let e = MeshConfig::from_yaml_str("trustDomainAliases: 3\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("(mesh config): trustDomainAliases: invalid type"),
        "{e}"
    );
}

#[test]
fn load_directory_and_read_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), KUBECTL_LIST).unwrap();
    std::fs::write(dir.path().join("sub/b.yml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: prod}\nspec: {action: DENY, rules: [{}]}\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not yaml: [").unwrap();
    let (set, _) = PolicySet::load(&[dir.path().to_path_buf()], &MeshConfig::default()).unwrap();
    assert_eq!(set.authorization_policy_count(), 2);
    let missing = PolicySet::load(&[PathBuf::from("/nonexistent/x")], &MeshConfig::default());
    assert!(matches!(missing, Err(trustmesh_policy::LoadError::Read(_))));
    let empty = tempfile::tempdir().unwrap();
    assert!(load::read_paths(&[empty.path().to_path_buf()]).is_err());
    std::fs::write(dir.path().join("sub/c.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: c, namespace: prod}\nspec: {rules: [{from: [{source: {ipBlocks: [bad]}}]}]}\n").unwrap();
    // An invalid policy no longer stops the load: it is listed with its file.
    let (set, _) = PolicySet::load(&[dir.path().to_path_buf()], &MeshConfig::default()).unwrap();
    let inv = set.invalid_resources();
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert!(inv[0].location.file.ends_with("sub/c.yaml"));
    assert_eq!(set.authorization_policy_count(), 3);
}

/// Kyma's Istio resource is read as a mesh config (it was once silently read as an empty one,
/// leaving the trust domain cluster.local); any other kind is refused, never ignored.
#[test]
fn kyma_istio_is_a_mesh_config_and_unknown_kinds_are_refused() {
    let kyma = "apiVersion: operator.kyma-project.io/v1alpha2\nkind: Istio\nmetadata: {name: default, namespace: kyma-system}\nspec:\n  config:\n    numTrustedProxies: 1\n    trustDomain: prod.example\n    trustDomainAliases: [old.example]\n    authorizers:\n    - name: ext-authz\n      service: ext-authz.ext-authz.svc.cluster.local\n      port: 8000\n      headers:\n        inCheck: {include: [x-ext-authz], add: {x-added: one}}\n        toUpstream: {onAllow: [x-user]}\n        toDownstream: {onDeny: [x-reason]}\n";
    let m = MeshConfig::from_yaml_str(kyma).unwrap();
    assert_eq!(m.trust_domain, "prod.example");
    assert_eq!(m.trust_domain_aliases, ["old.example"]);
    let http = m
        .provider("ext-authz")
        .and_then(|p| p.envoy_ext_authz_http.as_ref())
        .expect("the authorizer is an envoyExtAuthzHttp provider");
    assert_eq!(http.port, 8000);
    assert_eq!(http.include_request_headers_in_check, ["x-ext-authz"]);
    assert_eq!(http.headers_to_upstream_on_allow, ["x-user"]);

    let typo = kyma.replace("trustDomainAliases", "trustDomainAlias");
    let e = MeshConfig::from_yaml_str(&typo).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "(mesh config): spec.config.trustDomainAlias: not a setting of Kyma's Istio resource"
        ),
        "{e}"
    );

    let e = MeshConfig::from_yaml_str("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nspec: {mtls: {mode: STRICT}}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "(mesh config): kind: a PeerAuthentication (security.istio.io/v1) is not a mesh config"
        ),
        "{e}"
    );
    let e = MeshConfig::from_yaml_str("apiVersion: v1\nkind: ConfigMap\ndata: {other: x}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.mesh: missing"), "{e}");
}
