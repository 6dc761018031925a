//! AuthorizationPolicy on captured traffic: by principal, namespace, path, method and port;
//! DENY over ALLOW; L4; invalid policies enforced fail-closed; reloads under load and faults;
//! the attributes only capture mode gives real values. The HTTP request steps on the `web`
//! workload are in [`super::http_requests`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::http_requests;
use super::*;
use crate::mesh_support::*;

/// proxy_e2e::authorization_by_principal_namespace_path_method's policies.
const ALLOW_SLEEP: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: allow-sleep, namespace: foo }\nspec:\n  selector: { matchLabels: { app: httpbin } }\n  action: ALLOW\n  rules:\n  - from: [ { source: { principals: [\"cluster.local/ns/foo/sa/sleep\"] } } ]\n    to: [ { operation: { methods: [GET], paths: [\"/public/*\", \"/ip\"] } } ]\n  - from: [ { source: { namespaces: [bar] } } ]\n    to: [ { operation: { methods: [POST] } } ]\n---\n\
apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-admin, namespace: foo }\nspec:\n  action: DENY\n  rules:\n  - to: [ { operation: { paths: [\"/public/admin\"] } } ]\n";

/// fail_closed.rs's policies, for the `fc` namespace.
const FC_GOOD: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-open, namespace: fc }
spec:
  selector: { matchLabels: { app: httpbin } }
  rules:
  - from: []
  - to: [ { operation: { paths: ["/open", "/admin"] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: fc }
spec:
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/admin"] } } ]
"#;

fn fc_broken_deny(app: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: broken-deny, namespace: fc }}\nspec:\n  action: DENY\n  selector: {{ matchLabels: {{ app: {app} }} }}\n  rules:\n  - to: [ {{ operation: {{ ports: [\"http\"] }} }} ]\n"
    )
}

/// ALLOW by attributes with real values only in capture mode, a dry-run DENY and an AUDIT
/// policy, for the `attrs` namespace (the workload at `addr`).
fn attrs_policies(addr: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: by-attribute, namespace: attrs }}
spec:
  action: ALLOW
  rules:
  - to: [ {{ operation: {{ hosts: ["attrs.attrs:8080"], paths: ["/by-host"] }} }} ]
  - to: [ {{ operation: {{ ports: ["8080"], paths: ["/by-port"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/by-destination"] }} }} ]
    when:
    - {{ key: destination.ip, values: ["{addr}"] }}
    - {{ key: destination.port, values: ["8080"] }}
  - from: [ {{ source: {{ namespaces: [foo] }} }} ]
    to: [ {{ operation: {{ paths: ["/by-namespace"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/dry-run", "/audit"] }} }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-deny
  namespace: attrs
  annotations: {{ istio.io/dry-run: "true" }}
spec:
  action: DENY
  rules: [ {{ to: [ {{ operation: {{ paths: ["/dry-run"] }} }} ] }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: audit, namespace: attrs }}
spec:
  action: AUDIT
  rules: [ {{ to: [ {{ operation: {{ paths: ["/audit"] }} }} ] }} ]
"#
    )
}

/// AuthorizationPolicy on captured traffic, with the HTTP request handling policy depends on
/// and the reloads that change it: one topology, its steps each an explicit-mode test (named
/// on each step) in the order that keeps their policies from meeting.
#[test]
fn authorization_normalization_and_reload_on_captured_traffic() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let mut mesh = start();
    unreadable_policy_at_startup(&mesh);
    by_principal_namespace_path_method(&mut mesh);
    dot_segments_before_policy(&mesh);
    http_requests::disguised_paths(&mesh);
    http_requests::malformed_requests(&mesh);
    http_requests::header_condition(&mesh);
    http_requests::upgrade(&mesh);
    http_requests::hot_reload(&mesh);
    http_requests::encoded_slashes(&mut mesh);
    invalid_policies(&mesh);
    tcp_policy_reload(&mesh);
    capture_only_attributes(&mesh);
    reload_faults(&mesh);
}

/// The topology: the sleep client with its sidecar and five servers with theirs, each
/// workload in a namespace of its own (`foo/httpbin` for the principal rules, `web/web` for
/// the DENY policies on HTTP requests, `fc/httpbin` for invalid policies, `db/db` for a TCP
/// service under STRICT, `attrs/attrs` for attributes), and the outsider. Fields drop in
/// order: the processes before their namespaces, the folder last.
pub(super) struct Mesh {
    _sleep_sc: Sidecar,
    pub httpbin_sc: Sidecar,
    pub web_sc: Sidecar,
    pub fc_sc: Sidecar,
    pub db_sc: Sidecar,
    pub attrs_sc: Sidecar,
    pub httpbin_app: Proc,
    pub web_app: Proc,
    pub upgrade_app: Proc,
    _apps: Vec<Proc>,
    pub sleep: Node,
    pub httpbin: Node,
    pub web: Node,
    pub fc: Node,
    pub db: Node,
    pub attrs: Node,
    pub out: Node,
    _hub: Hub,
    /// Client certificates of foo/sleep, foo/other and bar/client.
    pub certs: Vec<Svid>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn start() -> Mesh {
    let at = |host: u8| NET.addr(host);
    let registry = [
        workload_entry("sleep", "foo", &at(SLEEP), "sleep", "sleep"),
        workload_entry("httpbin", "foo", &at(11), "httpbin", "httpbin"),
        workload_entry("web", "web", &at(12), "web", "web"),
        workload_entry("httpbin", "fc", &at(13), "httpbin", "httpbin"),
        workload_entry("db", "db", &at(14), "db", "db"),
        workload_entry("attrs", "attrs", &at(15), "attrs", "attrs"),
        service_entry(
            "httpbin",
            "foo",
            "httpbin",
            &[(8080, "HTTP"), (9000, "TCP")],
        ),
        service_entry("web", "web", "web", &[(8080, "HTTP"), (8090, "HTTP")]),
        service_entry("httpbin", "fc", "httpbin", &[(8080, "HTTP")]),
        service_entry("db", "db", "db", &[(9000, "TCP")]),
        service_entry("attrs", "attrs", "attrs", &[(8080, "HTTP")]),
    ]
    .concat();
    let (tmp, ca, hub) = setup(&registry);
    let dir = tmp.path().to_path_buf();
    policy(&dir, "attrs.yaml", &attrs_policies(&at(15)));
    policy(&dir, "foo.yaml", ALLOW_SLEEP);
    policy(&dir, "web.yaml", http_requests::WEB);
    policy(&dir, "fc-broken.yaml", &fc_broken_deny("ratings"));
    policy(&dir, "fc-good.yaml", FC_GOOD);
    policy(&dir, "db-pa.yaml", &strict_in("db"));
    // The sidecars start while a policy file is not YAML.
    policy(&dir, "zz.yaml", "spec: [unclosed\n");
    let certs = [("foo", "sleep"), ("foo", "other"), ("bar", "client")]
        .iter()
        .map(|(ns, sa)| ca.issue(&format!("curl-{ns}-{sa}"), &id(ns, sa)))
        .collect();

    let sleep = node(&hub, "sleep", &at(SLEEP));
    let httpbin = node(&hub, "httpbin", &at(11));
    let web = node(&hub, "web", &at(12));
    let fc = node(&hub, "fc", &at(13));
    let db = node(&hub, "db", &at(14));
    let attrs = node(&hub, "attrs", &at(15));
    let out = node(&hub, "out", &at(OUTSIDE));
    let others = vec![
        apps(&fc.ns, &["http:8080:httpbin"]),
        apps(&db.ns, &["echo:9000"]),
        apps(&attrs.ns, &["http:8080:attrs"]),
    ];
    let side = |n: &Node, ns: &str, sa: &str| sidecar(&dir, &ca, n, ns, sa, sa, "ALLOW_ANY");
    Mesh {
        _sleep_sc: side(&sleep, "foo", "sleep"),
        httpbin_sc: side(&httpbin, "foo", "httpbin"),
        web_sc: side(&web, "web", "web"),
        fc_sc: side(&fc, "fc", "httpbin"),
        db_sc: side(&db, "db", "db"),
        attrs_sc: side(&attrs, "attrs", "attrs"),
        httpbin_app: apps(&httpbin.ns, &["http:8080:httpbin", "echo:9000"]),
        web_app: apps(&web.ns, &["http:8080:web"]),
        upgrade_app: apps(&web.ns, &["upgrade:8090"]),
        _apps: others,
        sleep,
        httpbin,
        web,
        fc,
        db,
        attrs,
        out,
        _hub: hub,
        certs,
        dir,
        _tmp: tmp,
    }
}

/// A policy file that is not YAML at startup could hold any policy: every request is
/// denied, and /config_dump says why (snapshot_errors.rs::unreadable_policy_file_denies_
/// everything_at_startup); once it is gone, the policies decide.
pub(super) fn unreadable_policy_at_startup(mesh: &Mesh) {
    let dir = mesh.dir.as_path();
    let out = &mesh.out;
    let sleep = &mesh.sleep;
    let web = &mesh.web;
    let web_at = &mesh.web.addr;
    let web_app = &mesh.web_app;
    let web_plain = format!("http://{web_at}:8080/");
    let (code, text) = get_as_root(&out.ns, &web_plain, &[]);
    assert_eq!((code, body(&text)), (403, "RBAC: access denied"), "{text}");
    assert_eq!(get(&sleep.ns, "http://attrs.attrs:8080/by-port").0, 403);
    let why = config_dump(web)["policies"]["deniesEverything"].to_string();
    assert!(why.contains("zz.yaml"), "{why}");
    unpolicy(dir, "zz.yaml");
    wait("the readable policies", Duration::from_secs(10), || {
        get_as_root(&out.ns, &web_plain, &[]).0 == 200
    });
    app_saw(web_app);
}

/// By principal, namespace, path and method
/// (proxy_e2e::authorization_by_principal_namespace_path_method), from clients with the
/// certificates of three identities, straight to the workload's address.
pub(super) fn by_principal_namespace_path_method(mesh: &mut Mesh) {
    let out = &mesh.out;
    let sleep = &mesh.sleep;
    let httpbin = &mesh.httpbin;
    let httpbin_at = &mesh.httpbin.addr;
    let httpbin_sc = &mut mesh.httpbin_sc;
    let sleep_cert = &mesh.certs[0];
    let other_cert = &mesh.certs[1];
    let bar_cert = &mesh.certs[2];
    let url = |path: &str| format!("https://{httpbin_at}:8080{path}");
    let (code, text) = get_mtls(&out.ns, &url("/public/x"), sleep_cert, &[]);
    assert_eq!(code, 200, "{text}\n{}", httpbin_sc.log.text());
    let (code, text) = get_mtls(&out.ns, &url("/private"), sleep_cert, &[]);
    assert_eq!((code, body(&text)), (403, "RBAC: access denied"), "{text}");
    let delete = ["-X", "DELETE"];
    assert_eq!(
        get_mtls(&out.ns, &url("/public/x"), sleep_cert, &delete).0,
        403
    );
    assert_eq!(get_mtls(&out.ns, &url("/public/x"), other_cert, &[]).0, 403);
    let post = ["-X", "POST", "-d", "x=1"];
    assert_eq!(get_mtls(&out.ns, &url("/anything"), bar_cert, &post).0, 200);
    assert_eq!(get_mtls(&out.ns, &url("/anything"), bar_cert, &[]).0, 403);
    assert_eq!(
        get_mtls(&out.ns, &url("/public/admin"), sleep_cert, &[]).0,
        403
    );
    let plain = format!("http://{httpbin_at}:8080/public/x");
    assert_eq!(get_as_root(&out.ns, &plain, &[]).0, 403);
    // The same rules for the unmodified app behind its sidecar, calling by name.
    let by_name = |path: &str| format!("http://httpbin.foo:8080{path}");
    assert_eq!(get(&sleep.ns, &by_name("/public/x")).0, 200);
    assert_eq!(get(&sleep.ns, &by_name("/public/admin")).0, 403);
    assert_eq!(
        get_with(&sleep.ns, &by_name("/public/x"), &["-X", "POST"]).0,
        403
    );

    // L4: the DENY with HTTP fields applies without them on a TCP port, so the connection is
    // closed without data.
    let said = s_client(&out.ns, &format!("{httpbin_at}:9000"), Some(sleep_cert));
    assert!(
        !said.contains("GET /via-s-client"),
        "TCP deny must close: {said}"
    );
    let denied = access_line(httpbin_sc, "/public/admin", |v| {
        v["path"] == "/public/admin"
    });
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["policy"], "foo/deny-admin", "{denied}");
    let tcp = access_line(httpbin_sc, "the TCP connection", |v| {
        v["protocol"] == "tcp" && v["direction"] == "inbound"
    });
    assert_eq!(tcp["decision"], "deny", "{tcp}");
    assert_eq!(tcp["policy"], "foo/deny-admin", "{tcp}");
    assert_eq!(tcp["source_principal"], id("foo", "sleep"), "{tcp}");
    let m = httpbin.admin("/metrics");
    // /public/admin twice (certificate, mesh client) and the TCP connection.
    assert_eq!(
        metric(
            &m,
            "trustmesh_authz_decisions_total{decision=\"deny\",policy=\"foo/deny-admin\"}"
        ),
        Some(3),
        "{m}"
    );
    assert!(m.contains("reason=\"policy_denied\"} 1"), "{m}");
}

/// Dot segments are resolved before policy (normalization.rs::curl_path_as_is_...).
pub(super) fn dot_segments_before_policy(mesh: &Mesh) {
    let out = &mesh.out;
    let httpbin_at = &mesh.httpbin.addr;
    let httpbin_app = &mesh.httpbin_app;
    let sleep_cert = &mesh.certs[0];
    let url = |path: &str| format!("https://{httpbin_at}:8080{path}");
    app_saw(httpbin_app);
    for (path, want) in [
        ("/public/../admin/x", 403),
        ("/public/./../admin", 403),
        ("/public/x/../y", 200),
        ("/public/x", 200),
    ] {
        let (code, text) = get_mtls(&out.ns, &url(path), sleep_cert, &["--path-as-is"]);
        assert_eq!(code, want, "{path}: {text}");
    }
    assert_eq!(
        app_saw(httpbin_app),
        ["httpbin GET /public/y", "httpbin GET /public/x"]
    );
}

/// Invalid policies (fail_closed.rs::broken_deny_fails_closed_while_the_rest_keeps_working):
/// allow-open's invalid rule is dropped, its other rule still allows /open; a broken DENY
/// selecting another workload changes nothing here.
pub(super) fn invalid_policies(mesh: &Mesh) {
    let dir = mesh.dir.as_path();
    let out = &mesh.out;
    let fc = &mesh.fc;
    let fc_at = &mesh.fc.addr;
    let fc_sc = &mesh.fc_sc;
    let fc_get = |path: &str| get_as_root(&out.ns, &format!("http://{fc_at}:8080{path}"), &[]).0;
    assert_eq!(fc_get("/open"), 200, "{}", fc_sc.log.text());
    assert_eq!(fc_get("/admin"), 403, "deny-admin still applies");
    assert_eq!(fc_get("/other"), 403, "no ALLOW rule matches");
    let m = fc.admin("/metrics");
    let invalid = |outcome: &str| {
        format!("trustmesh_policy_invalid_resources{{kind=\"AuthorizationPolicy\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(metric(&m, &invalid("denies_all")), Some(1), "{m}");
    assert_eq!(metric(&m, &invalid("dropped_rules")), Some(1), "{m}");
    let names: Vec<String> = config_dump(fc)["policies"]["invalidResources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| Some(i["name"].as_str()?.to_string()))
        .collect();
    assert_eq!(names, ["broken-deny", "allow-open"]);
    // The broken DENY selects this workload: the reload applies and it denies everything.
    policy(dir, "fc-broken.yaml", &fc_broken_deny("httpbin"));
    wait("the broken DENY", Duration::from_secs(10), || {
        fc_get("/open") == 403
    });
    let m = fc.admin("/metrics");
    assert_eq!(
        metric(&m, "trustmesh_config_reload_failures_total"),
        Some(0),
        "{m}"
    );
    assert!(
        metric(&m, "trustmesh_config_reloads_total").unwrap_or(0) >= 1,
        "{m}"
    );
    assert!(
        m.contains("decision=\"deny\",policy=\"fc/broken-deny\""),
        "{m}"
    );
    // Fixed: everything is back.
    policy(
        dir,
        "fc-broken.yaml",
        &fc_broken_deny("httpbin").replace("\"http\"", "\"9999\""),
    );
    wait("the fixed policy", Duration::from_secs(10), || {
        fc_get("/open") == 200
    });
    // A file that is not YAML could hold any policy: the reload is refused and the last good
    // policies keep serving.
    policy(dir, "zz.yaml", "spec: [unclosed\n");
    wait("the refused reload", Duration::from_secs(10), || {
        metric(
            &fc.admin("/metrics"),
            "trustmesh_config_reload_failures_total",
        ) == Some(1)
    });
    assert_eq!(fc_get("/open"), 200);
    assert_eq!(fc_get("/admin"), 403);
    unpolicy(dir, "zz.yaml");
}

/// A TCP policy reloaded under an established connection
/// (proxy_e2e::tcp_policy_hot_reload_keeps_established_connection), from a client with
/// sleep's certificate to the STRICT db. (From the app behind the sleep sidecar: see
/// finding_mesh_tcp_between_sidecars_is_served_as_http.)
pub(super) fn tcp_policy_reload(mesh: &Mesh) {
    let dir = mesh.dir.as_path();
    let out = &mesh.out;
    let db_at = &mesh.db.addr;
    let db_sc = &mesh.db_sc;
    let sleep_cert = &mesh.certs[0];
    let db_addr = format!("{db_at}:9000");
    let fresh_works = || Conversation::s_client(&out.ns, &db_addr, sleep_cert).say("ping");
    let mut held = Conversation::s_client(&out.ns, &db_addr, sleep_cert);
    assert_eq!(
        held.say("hello").as_deref(),
        Some("hello"),
        "{}",
        db_sc.log.text()
    );
    assert_eq!(fresh_works().as_deref(), Some("ping"));
    policy(
        dir,
        "db-deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-sleep, namespace: db }\nspec:\n  action: DENY\n  rules:\n  - from: [ { source: { principals: [\"cluster.local/ns/foo/sa/sleep\"] } } ]\n",
    );
    let started = Instant::now();
    wait("the DENY of sleep", Duration::from_secs(4), || {
        fresh_works().is_none()
    });
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(held.say("still-here").as_deref(), Some("still-here"));
    // An invalid policy is applied fail-closed and named in the log; the reload is not refused.
    policy(dir, "db-broken.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: broken, namespace: db }\nspec:\n  action: MAYBE\n");
    wait("the broken policy", Duration::from_secs(4), || {
        db_sc
            .log
            .text()
            .contains("invalid policy enforced fail-closed resource=AuthorizationPolicy db/broken")
    });
    assert_eq!(fresh_works(), None, "the deny must still hold");
    assert_eq!(held.say("and-still").as_deref(), Some("and-still"));
    // A file that is not YAML: the reload is refused, the deny holds.
    policy(dir, "zz.yaml", "spec: [unclosed\n");
    wait("the refused reload", Duration::from_secs(4), || {
        db_sc.log.text().contains("reload refused")
    });
    assert_eq!(fresh_works(), None, "the deny must still hold");
    unpolicy(dir, "zz.yaml");
    // Removing the deny and the broken file restores access.
    unpolicy(dir, "db-broken.yaml");
    unpolicy(dir, "db-deny.yaml");
    wait("access restored", Duration::from_secs(4), || {
        fresh_works().as_deref() == Some("ping")
    });
}

/// Attributes that only capture mode gives their real values (no explicit-mode test has
/// them; on loopback every address is 127.0.0.1): the Host the app sent, the workload's
/// own address and port as the destination, the caller's namespace; dry-run and AUDIT
/// policies decide nothing. (Source addresses: see
/// finding_captured_ipv4_peers_are_ipv6_mapped_for_policy.)
pub(super) fn capture_only_attributes(mesh: &Mesh) {
    let out = &mesh.out;
    let sleep = &mesh.sleep;
    let attrs_at = &mesh.attrs.addr;
    let attrs_sc = &mesh.attrs_sc;
    let by_name = |path: &str| get(&sleep.ns, &format!("http://attrs.attrs:8080{path}")).0;
    let by_address =
        |path: &str| get_as_root(&out.ns, &format!("http://{attrs_at}:8080{path}"), &[]).0;
    for (path, from_mesh, outside) in [
        ("/by-host", 200, 403),
        ("/by-port", 200, 200),
        ("/by-destination", 200, 200),
        ("/by-namespace", 200, 403),
        ("/dry-run", 200, 200),
        ("/audit", 200, 200),
        ("/other", 403, 403),
    ] {
        let got = (by_name(path), by_address(path));
        assert_eq!(got, (from_mesh, outside), "{path}\n{}", attrs_sc.log.text());
    }
}

/// The policy folder under faults (reload_faults.rs): a file rewritten in place, the folder
/// gone and back.
pub(super) fn reload_faults(mesh: &Mesh) {
    let dir = mesh.dir.as_path();
    let out = &mesh.out;
    let sleep = &mesh.sleep;
    let web = &mesh.web;
    let web_at = &mesh.web.addr;
    // A policy rewritten in place (truncated, then written 150 ms later, as some editors
    // do) never loads half-written: the DENY holds throughout
    // (reload_faults.rs::a_policy_rewritten_in_place_never_loads_half_written).
    let admin_url = format!("http://{web_at}:8080/admin");
    let web_yaml = dir.join("mesh/web.yaml");
    let writer = std::thread::spawn({
        let web_yaml = web_yaml.clone();
        move || {
            for _ in 0..3 {
                std::fs::write(&web_yaml, "").unwrap();
                std::thread::sleep(Duration::from_millis(150));
                std::fs::write(&web_yaml, http_requests::WEB).unwrap();
                std::thread::sleep(Duration::from_millis(400));
            }
        }
    });
    let until = Instant::now() + Duration::from_millis(1800);
    let mut checked = 0;
    while Instant::now() < until {
        let (code, text) = get_as_root(&out.ns, &admin_url, &[]);
        assert_eq!(code, 403, "the DENY vanished mid-write: {text}");
        checked += 1;
    }
    writer.join().unwrap();
    assert!(checked > 10, "{checked}");

    // The policy folder vanishes (a volume detached): the last policies, and the registry in
    // the same folder, stay in force; when it is back it is loaded again
    // (reload_faults.rs::a_vanished_policy_folder_keeps_the_last_policies).
    let failures = |n: &Node| {
        metric(
            &n.admin("/metrics"),
            "trustmesh_config_reload_failures_total",
        )
    };
    let (web_failed, sleep_failed) = (failures(web), failures(sleep));
    std::fs::rename(dir.join("mesh"), dir.join("gone")).unwrap();
    wait(
        "the vanished folder noticed",
        Duration::from_secs(10),
        || failures(web) > web_failed && failures(sleep) > sleep_failed,
    );
    assert_eq!(get_as_root(&out.ns, &admin_url, &[]).0, 403);
    assert_eq!(get(&sleep.ns, "http://web.web:8080/public").0, 200);
    let reloads = |n: &Node| metric(&n.admin("/metrics"), "trustmesh_config_reloads_total");
    let web_reloads = reloads(web);
    std::fs::rename(dir.join("gone"), dir.join("mesh")).unwrap();
    wait("the folder's return", Duration::from_secs(10), || {
        reloads(web) > web_reloads
    });
    assert_eq!(get_as_root(&out.ns, &admin_url, &[]).0, 403);
    assert_eq!(get(&sleep.ns, "http://web.web:8080/public").0, 200);
}
