//! `trustmesh validate` and `trustmesh authz check` end to end: exit codes, JSON and text.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trustmesh"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = bin();
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        // The command may exit before reading stdin (e.g. bad policies): ignore a broken pipe.
        let _ = child.stdin.take().unwrap().write_all(s.as_bytes());
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// `trustmesh authz check --config <config> --request <request>` and `extra`, fed `stdin`.
fn authz_check(config: &str, request: &str, extra: &[&str], stdin: Option<&str>) -> Output {
    let args = ["authz", "check", "--config", config, "--request", request];
    run(&[&args[..], extra].concat(), stdin)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: prod}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]
    to: [{operation: {methods: [GET], paths: ["/api/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [DELETE], ports: ["9080"]}}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
"#;

const MESH: &str = "trustDomain: cluster.local\nextensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191}\n";

const REQUEST: &str = r#"{"destination": {"namespace": "prod", "labels": {"app": "reviews"}, "ip": "10.0.0.2", "port": 9080},
 "source": {"principal": "spiffe://cluster.local/ns/prod/sa/frontend", "ip": "10.0.0.1", "remoteIp": "10.0.0.1"},
 "connection": {"sni": "reviews.prod"},
 "http": {"method": "GET", "path": "/api/v1", "host": "reviews:9080", "headers": {"x-token": "a"}},
 "auth": {"principal": "https://issuer/sub", "audiences": ["a"], "presenter": "p", "claims": {"groups": ["x"]}}}"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn validate_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    write(&cfg, "p.yaml", POLICIES);
    let dir = cfg.display().to_string();
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("skipped Service"), "{}", err(&o));

    let bad = write(&cfg, "bad.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: x, namespace: prod}\nspec:\n  action: CUSTOM\n  provider: {name: opa}\n  rules:\n  - from: [{source: {ipBlocks: [10.0.0.0/99]}}]\n");
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let s = out(&o);
    assert!(
        s.contains(&format!(
            "{bad}:1:spec.provider.name: warning: unknown extension provider"
        )),
        "{s}"
    );
    assert!(
        s.contains(&format!("{bad}:1:spec.rules[0].from[0].source.ipBlocks[0]")),
        "{s}"
    );
    assert!(s.contains("hint:"), "{s}");
    // With the mesh config the provider is known; the CIDR is still wrong.
    let mesh = write(
        d.path(),
        "mesh.yaml",
        &format!(
            "meshConfig:\n{}",
            MESH.lines().map(|l| format!("  {l}\n")).collect::<String>()
        ),
    );
    let o = run(&["validate", "--config", &dir, "--mesh", &mesh], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        !out(&o).contains("unknown extension provider"),
        "{}",
        out(&o)
    );

    // The same result for scripts: JSON and YAML carry the problems, the exit code stays.
    for format in ["json", "yaml"] {
        let o = run(
            &["validate", "--config", &dir, "--mesh", &mesh, "-o", format],
            None,
        );
        assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
        let doc: serde_json::Value = if format == "json" {
            serde_json::from_str(&out(&o)).unwrap()
        } else {
            serde_yaml::from_str(&out(&o)).unwrap()
        };
        let problems = doc["problems"].as_array().expect("problems listed");
        assert!(
            problems.iter().any(|p| p["problem"]
                .as_str()
                .unwrap()
                .contains("spec.rules[0].from[0].source.ipBlocks[0]")),
            "{doc}"
        );
        assert_eq!(doc["counts"]["AuthorizationPolicy"], 3, "{doc}");
    }

    // A provider the proxy could not build is refused by the same code here.
    let bad_mesh = write(
        d.path(),
        "bad-mesh.yaml",
        "extensionProviders:\n- name: nginx\n  envoyExtAuthzHttp: {service: authz, port: 8000, pathPrefix: check}\n",
    );
    let o = run(&["validate", "--config", &dir, "--mesh", &bad_mesh], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains(
            "extensionProviders[0] (nginx).envoyExtAuthzHttp.pathPrefix: must begin with \"/\""
        ),
        "{}",
        err(&o)
    );

    let o = run(&["validate", "--config", "/nonexistent/dir"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("/nonexistent/dir"), "{}", err(&o));
    write(&cfg, "broken.yaml", "spec: [unclosed\n");
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
}

#[test]
fn authz_check_json_text_and_stdin() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(d.path(), "p.yaml", POLICIES);
    let req = write(d.path(), "req.json", REQUEST);
    let o = authz_check(&cfg, &req, &[], None);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "ALLOW");
    assert_eq!(j["mtlsMode"], "STRICT");
    assert_eq!(j["policies"].as_array().unwrap().len(), 2);
    let allow = j["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "prod/allow-frontend")
        .unwrap();
    assert_eq!(
        (
            allow["matched"].clone(),
            allow["rule"].clone(),
            allow["action"].clone()
        ),
        (true.into(), 0.into(), "ALLOW".into())
    );

    // Plaintext to a STRICT port: denied with that reason (stdin request, text output).
    let plain = REQUEST.replace(
        r#""principal": "spiffe://cluster.local/ns/prod/sa/frontend", "#,
        "",
    );
    let o = authz_check(&cfg, "-", &["--output", "text"], Some(&plain));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let t = out(&o);
    assert!(t.starts_with("DENY"), "{t}");
    assert!(t.contains("STRICT") && t.contains("plaintext"), "{t}");

    // A DELETE: DENY policy wins, text names it with a check mark.
    let del = REQUEST.replace("\"GET\"", "\"DELETE\"");
    let o = authz_check(&cfg, "-", &["--output", "text"], Some(&del));
    let t = out(&o);
    assert!(t.starts_with("DENY"), "{t}");
    assert!(t.contains("✓ DENY prod/deny-delete"), "{t}");
    assert!(t.contains("✗ ALLOW prod/allow-frontend"), "{t}");
    assert!(t.contains("methods"), "{t}");
}

#[test]
fn authz_check_custom_and_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let custom = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: prod}\nspec:\n  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: [\"/api/*\"]}}]}]\n";
    let cfg = write(d.path(), "p.yaml", custom);
    let mesh = write(d.path(), "mesh.yaml", MESH);
    let o = authz_check(&cfg, "-", &["--mesh", &mesh], Some(REQUEST));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "CUSTOM");
    assert_eq!(j["provider"], "opa");
    // Without the mesh config the provider is unknown. Istio's builder then turns the CUSTOM
    // rules into DENY rules (pilot/pkg/security/authz/builder/builder.go): evaluated, exit 0.
    let o = authz_check(&cfg, "-", &[], Some(REQUEST));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "DENY");
    assert_eq!(j["invalidResources"][0]["name"], "ext");
    assert_eq!(j["invalidResources"][0]["outcome"], "denies_rule_matches");
    assert!(
        err(&o).contains("unknown extension provider"),
        "{}",
        err(&o)
    );
    // Bad request JSON -> 2 with a hint.
    let o = authz_check(&cfg, "-", &["--mesh", &mesh], Some("{\"destination\": {}}"));
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("invalid request JSON"), "{}", err(&o));
    let o = authz_check(&cfg, "/nonexistent.json", &["--mesh", &mesh], None);
    assert_eq!(o.status.code(), Some(2));
}

/// One broken DENY policy among good ones: `validate` names it and says what is done (exit 1),
/// `authz check` evaluates with the rest (exit 0) and shows the broken policy deciding.
/// Fail-closed per resource follows pilot/pkg/security/authz/model/model.go (checkError) and
/// pilot/pkg/security/authz/builder/builder.go; `from: []` is rejected by
/// pkg/config/validation/validation.go.
#[test]
fn invalid_resource_fails_closed_and_the_rest_is_evaluated() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    write(&cfg, "p.yaml", POLICIES);
    let bad = write(
        &cfg,
        "z-bad.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: broken-deny, namespace: prod}\nspec:\n  action: DENY\n  selector: {matchLabels: {app: ratings}}\n  rules: [{from: []}]\n",
    );
    let dir = cfg.display().to_string();
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let s = out(&o);
    assert!(s.contains(&format!("{bad}:1:spec.rules[0].from")), "{s}");
    assert!(
        s.contains("fail-closed: AuthorizationPolicy prod/broken-deny")
            && s.contains("denies all requests it selects"),
        "{s}"
    );

    // reviews is not selected by the broken policy: decided by the good ones.
    let o = authz_check(&dir, "-", &[], Some(REQUEST));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "ALLOW");
    let inv = &j["invalidResources"][0];
    assert_eq!(
        (
            inv["kind"].as_str(),
            inv["name"].as_str(),
            inv["outcome"].as_str()
        ),
        (
            Some("AuthorizationPolicy"),
            Some("broken-deny"),
            Some("denies_all")
        )
    );
    assert!(
        inv["reasons"][0]
            .as_str()
            .unwrap()
            .contains("must not be empty"),
        "{inv}"
    );
    assert!(
        err(&o).contains("fail-closed: AuthorizationPolicy prod/broken-deny"),
        "{}",
        err(&o)
    );

    // ratings is selected by it: denied, and the explanation says it was the broken policy.
    let ratings = REQUEST.replace("\"app\": \"reviews\"", "\"app\": \"ratings\"");
    let o = authz_check(&dir, "-", &["--output", "text"], Some(&ratings));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let t = out(&o);
    assert!(t.starts_with("DENY"), "{t}");
    assert!(
        t.contains("denied by DENY policy prod/broken-deny") && t.contains("fail-closed"),
        "{t}"
    );
    assert!(t.contains("invalid resources (enforced fail-closed"), "{t}");
    assert!(t.contains("! AuthorizationPolicy prod/broken-deny"), "{t}");

    // A file that is not YAML could hold any policy: everything is denied, and named.
    write(&cfg, "zz-garbage.yaml", "spec: [unclosed\n");
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = authz_check(&dir, "-", &[], Some(REQUEST));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "DENY");
    assert!(
        j["reason"].as_str().unwrap().contains("zz-garbage.yaml"),
        "{j}"
    );
}

#[test]
fn authz_check_normalizes_the_path_like_the_sidecar() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "p.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: prod}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"#,
    );
    let request = |path: &str| {
        format!(
            r#"{{"destination": {{"namespace": "prod", "port": 8080}},
                "http": {{"method": "GET", "path": "{path}", "host": "app"}}}}"#
        )
    };
    let check = |req: &str, mesh: Option<&str>, output: &str| {
        let mut args = vec!["authz", "check", "--config", &cfg, "--request", "-"];
        args.extend(["--output", output]);
        if let Some(m) = mesh {
            args.extend(["--mesh", m]);
        }
        let o = run(&args, Some(req));
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        out(&o)
    };

    // BASE (the default): the dot segments are resolved before policy, as in the sidecar.
    let j: serde_json::Value =
        serde_json::from_str(&check(&request("/public/../admin/x"), None, "json")).unwrap();
    assert_eq!(j["decision"], "DENY");
    assert_eq!(j["normalization"]["mode"], "BASE");
    assert_eq!(j["normalization"]["path"], "/admin/x");
    assert_eq!(j["normalization"]["originalPath"], "/public/../admin/x");
    let t = check(&request("/%61dmin/x"), None, "text");
    assert!(
        t.starts_with("path normalized (BASE): /%61dmin/x -> /admin/x\nDENY"),
        "{t}"
    );

    // NONE, from the mesh config: the path as given.
    let mesh = write(
        d.path(),
        "mesh.yaml",
        "pathNormalization: {normalization: NONE}\n",
    );
    let j: serde_json::Value =
        serde_json::from_str(&check(&request("/public/../admin/x"), Some(&mesh), "json")).unwrap();
    assert_eq!(j["decision"], "ALLOW");
    assert_eq!(j["normalization"]["path"], "/public/../admin/x");
    assert!(j["normalization"].get("originalPath").is_none());

    // Refused before policy: reported with the sidecar's status.
    let j: serde_json::Value =
        serde_json::from_str(&check(&request("/admin%00"), None, "json")).unwrap();
    assert_eq!(j["decision"], "DENY");
    assert_eq!(j["refusedBeforePolicy"]["status"], 400);
    assert_eq!(j["refusedBeforePolicy"]["reason"], "encoded_nul_in_path");
    let t = check(&request("/public/..%2Fadmin"), None, "text");
    assert!(
        t.starts_with("DENY: HTTP GET /public/..%2Fadmin is refused with 400"),
        "{t}"
    );

    // An unknown mode is a mesh config error that names the field.
    let bad = write(
        d.path(),
        "bad.yaml",
        "pathNormalization: {normalization: SOMETIMES}\n",
    );
    let o = authz_check(&cfg, "-", &["--mesh", &bad], Some(&request("/")));
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err(&o).contains("pathNormalization.normalization"),
        "{}",
        err(&o)
    );
}

/// Bookinfo on VMs, written as users write it for Istio: the service registry's kinds, kept in
/// the same folder as the policies.
const REGISTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend-vm, namespace: prod}
spec:
  address: 10.10.0.5
  labels: {app: frontend}
  serviceAccount: frontend
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: prod}
spec:
  address: 10.10.0.11
  labels: {app: reviews, security.istio.io/tlsMode: istio}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: prod}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 100}}
    tls: {mode: ISTIO_MUTUAL}
"#;

#[test]
fn validate_checks_the_registry_kinds_with_the_policies() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    write(&cfg, "p.yaml", POLICIES);
    let reg = write(&cfg, "registry.yaml", REGISTRY);
    let dir = cfg.display().to_string();
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let e = err(&o);
    assert!(
        e.contains("2 file(s): 2 AuthorizationPolicy, 1 PeerAuthentication, 0 RequestAuthentication; 2 WorkloadEntry, 1 ServiceEntry, 1 DestinationRule; 0 problem(s)"),
        "{e}"
    );
    assert!(
        !e.contains("skipped WorkloadEntry") && !e.contains("skipped ServiceEntry"),
        "{e}"
    );
    assert!(
        e.contains("skipped Service v1"),
        "other kinds are still mentioned: {e}"
    );
    assert!(
        e.contains(&format!("note: {reg}:4: accepted and ignored (trustmesh does not act on them): spec.trafficPolicy.connectionPool")),
        "{e}"
    );

    // A ServiceEntry Istio would refuse: the problem names file, document and field.
    let bad = write(
        &cfg,
        "z-bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: prod}\nspec:\n  hosts: [db.example.com]\n  resolution: DNS\n  ports: [{number: 5432, name: tcp, protocol: SOAP}]\n",
    );
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let s = out(&o);
    assert!(
        s.contains(&format!(
            "{bad}:1:spec.ports[0].protocol: unsupported protocol \"SOAP\" (hint: "
        )),
        "{s}"
    );
    assert!(
        err(&o).contains("2 ServiceEntry, 1 DestinationRule; 1 problem(s)"),
        "{}",
        err(&o)
    );

    // Text that is not YAML is unreadable for both readers, and said once.
    let garbage = write(&cfg, "zz-garbage.yaml", "spec: [unclosed\n");
    let o = run(&["validate", "--config", &dir], None);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let s = out(&o);
    let said = s
        .lines()
        .filter(|l| l.starts_with(&format!("{garbage}:1: not valid YAML")));
    assert_eq!(said.count(), 1, "{s}");
}

#[test]
fn authz_check_names_source_and_destination_by_workload_entry() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    write(&cfg, "p.yaml", POLICIES);
    write(&cfg, "registry.yaml", REGISTRY);
    let dir = cfg.display().to_string();
    // No principal, namespace or labels in the request: the entries give them.
    let req = r#"{"destination": {"port": 9080}, "http": {"method": "GET", "path": "/api/v1", "host": "reviews"}}"#;
    let entries = |from: &str| {
        let args = [
            "--from-workload-entry",
            from,
            "--to-workload-entry",
            "prod/reviews-vm",
        ];
        authz_check(&dir, "-", &args, Some(req))
    };
    let o = entries("prod/frontend-vm");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "ALLOW", "{j}");
    assert!(!err(&o).contains("skipped WorkloadEntry"), "{}", err(&o));
    // reviews calling itself: its serviceAccount is not the one allowed.
    let o = entries("prod/reviews-vm");
    let j: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(j["decision"], "DENY", "{j}");
    let o = authz_check(
        &dir,
        "-",
        &[
            "--output",
            "text",
            "--from-workload-entry",
            "prod/reviews-vm",
            "--to-workload-entry",
            "prod/reviews-vm",
        ],
        Some(req),
    );
    assert!(out(&o).contains("from spiffe://cluster.local/ns/prod/sa/reviews to namespace prod (app=reviews,security.istio.io/tlsMode=istio)"), "{}", out(&o));
    // The trust domain is the mesh's.
    let mesh = write(d.path(), "mesh.yaml", "trustDomain: corp.example\n");
    let args = [
        "--mesh",
        &mesh,
        "--output",
        "text",
        "--from-workload-entry",
        "prod/frontend-vm",
        "--to-workload-entry",
        "prod/reviews-vm",
    ];
    let o = authz_check(&dir, "-", &args, Some(req));
    assert!(
        out(&o).contains("from spiffe://corp.example/ns/prod/sa/frontend"),
        "{}",
        out(&o)
    );

    // Unknown entries and malformed names: exit 2, with what to do.
    let o = entries("prod/ratings-vm");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains(
            "--from-workload-entry: no WorkloadEntry prod/ratings-vm in the --config files (hint: "
        ),
        "{}",
        err(&o)
    );
    let o = authz_check(&dir, "-", &["--to-workload-entry", "reviews-vm"], Some(req));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("--to-workload-entry: expected namespace/name, got \"reviews-vm\""),
        "{}",
        err(&o)
    );
}

/// `validate --mesh` checks `accessLogFormat` with the parser the sidecar runs.
#[test]
fn validate_refuses_an_unknown_access_log_operator() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    let dir = cfg.to_str().unwrap().to_string();
    write(&cfg, "empty.yaml", "");
    let mesh = write(
        d.path(),
        "mesh.yaml",
        "accessLogEncoding: TEXT\naccessLogFormat: \"[%START_TIME%] %NOT_ENVOY%\"\n",
    );
    let o = run(&["validate", "--config", &dir, "--mesh", &mesh], None);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("%NOT_ENVOY%"), "{}", err(&o));
    let mesh = write(d.path(), "mesh.yaml", "accessLogEncoding: TEXT\n");
    let o = run(&["validate", "--config", &dir, "--mesh", &mesh], None);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
}
