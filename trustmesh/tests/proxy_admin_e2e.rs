//! The admin port as an operator used to Envoy and Istio drives it (tier 2: a real
//! `trustmesh proxy`, the real `curl`): `/stats` with Envoy's RBAC counters and `?filter=`,
//! `/stats/prometheus` with Istio's names, a dry-run DENY policy that lets a request through
//! and shows up as `shadow_denied` in the stats and in the access log line, an AUDIT policy
//! marking its line, `POST /logging?rbac=debug` turning the rbac debug lines on and
//! `?level=info` off again, and `accessLogEncoding: TEXT` writing Istio's default line.
//!
//! Every wait is bounded (attempt count and wall time).

mod proxy_support;

use std::path::Path;
use std::time::Duration;

use proxy_support::*;

const POLICIES: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-headers
  namespace: foo
  annotations: { "istio.io/dry-run": "true" }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/headers"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: foo }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: audit-payments, namespace: foo }
spec:
  action: AUDIT
  rules:
  - to: [{ operation: { paths: ["/payments"] } }]
"#;

/// `curl` against the admin port: (status, body).
async fn admin(port: u16, method: &str, path_and_query: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path_and_query}");
    curl(&["-X", method, &url]).await
}

/// The access log's JSON lines (trustmesh's record).
fn lines(p: &Proxy) -> Vec<serde_json::Value> {
    p.access_log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn line_for(p: &Proxy, path: &str) -> serde_json::Value {
    let mut found = None;
    let seen = within(Duration::from_secs(10), || {
        found = lines(p).into_iter().find(|l| l["path"] == path);
        let ok = found.is_some();
        async move { ok }
    })
    .await;
    assert!(
        seen.is_some(),
        "no access log line for {path}:\n{}",
        p.access_log()
    );
    found.unwrap()
}

async fn start(dir: &Path, name: &str, mesh: &str) -> (Proxy, u16, u16) {
    let ca = Ca::new(dir, "mesh", "cluster.local");
    let cert = ca.issue(name, "spiffe://cluster.local/ns/foo/sa/httpbin");
    let pol = policy_dir(dir, &format!("{name}-policies"));
    write_policy(&pol, "policies.yaml", POLICIES);
    let app = http_backend("httpbin").await;
    let (inbound, admin_port) = (free_port(), free_port());
    let mut cfg =
        Cfg::new("foo", "httpbin", &cert, &ca, &pol, admin_port).inbound(inbound, app, "http");
    cfg.mesh = mesh.to_string();
    let p = Proxy::start(dir, name, &cfg.yaml(), admin_port).await;
    (p, inbound, app)
}

#[tokio::test]
async fn stats_dry_run_audit_and_log_levels_as_on_an_istio_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let (p, inbound, app) = start(dir.path(), "httpbin", "{ trustDomain: cluster.local }").await;
    let a = p.admin;

    for (path, want) in [
        ("/ok", 200),
        ("/headers", 200),
        ("/admin", 403),
        ("/payments", 200),
    ] {
        let (code, _) = curl_plain(inbound, path, &[]).await;
        assert_eq!(code, want, "{path}: {}", p.logs());
    }

    // The dry-run DENY policy let /headers through, and says it would have denied it.
    let (code, stats) = admin(a, "GET", "/stats?filter=rbac").await;
    assert_eq!(code, 200, "{stats}");
    let scope = format!("http.inbound_0.0.0.0_{app}.rbac.");
    for (name, value) in [
        ("allowed", 3),
        ("denied", 1),
        ("istio_dry_run_deny_shadow_denied", 1),
        ("istio_dry_run_deny_shadow_allowed", 3),
    ] {
        let line = format!("{scope}{name}: {value}");
        assert!(stats.lines().any(|l| l == line), "{line} not in\n{stats}");
    }
    let (_, only_shadow) = admin(a, "GET", "/stats?filter=shadow_denied%24").await;
    assert_eq!(
        only_shadow,
        format!("{scope}istio_dry_run_deny_shadow_denied: 1\n")
    );
    let (code, json) = admin(a, "GET", "/stats?format=json&filter=rbac%5C.denied").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON stats");
    assert_eq!(v["stats"][0]["name"], format!("{scope}denied"));
    assert_eq!(v["stats"][0]["value"], 1);
    let (code, why) = admin(a, "GET", "/stats?filter=(").await;
    assert_eq!(code, 400, "{why}");

    let (_, prom) = admin(a, "GET", "/stats/prometheus").await;
    let family = format!("envoy_http_inbound_0_0_0_0_{app}_rbac");
    for sample in [
        format!("{family}{{authz_enforce_result=\"allowed\"}} 3"),
        format!("{family}{{authz_dry_run_action=\"deny\",authz_dry_run_result=\"denied\"}} 1"),
    ] {
        assert!(prom.lines().any(|l| l == sample), "{sample} not in\n{prom}");
    }
    assert!(prom.contains("trustmesh_authz_decisions_total"), "{prom}");

    // The access log carries the shadow result and the policy, and the AUDIT mark.
    let headers = line_for(&p, "/headers").await;
    assert_eq!(headers["status"], 200);
    assert_eq!(headers["istio_dry_run_deny_shadow_engine_result"], "denied");
    assert_eq!(
        headers["istio_dry_run_deny_shadow_effective_policy_id"],
        "ns[foo]-policy[deny-headers]-rule[0]"
    );
    let ok = line_for(&p, "/ok").await;
    assert_eq!(ok["istio_dry_run_deny_shadow_engine_result"], "allowed");
    assert!(ok.get("access_log_hint").is_none(), "{ok}");
    let payments = line_for(&p, "/payments").await;
    assert_eq!(payments["access_log_hint"], true, "{payments}");
    assert_eq!(payments["audit_policy"], "foo/audit-payments");
    let denied = line_for(&p, "/admin").await;
    assert_eq!(
        denied["response_code_details"],
        "rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]"
    );

    // Log levels at runtime, with Envoy's logger names.
    const SHADOW_LINE: &str = "shadow denied, matched policy ns[foo]-policy[deny-headers]-rule[0]";
    assert!(!p.logs().contains(SHADOW_LINE), "debug is off at start");
    let (code, body) = admin(a, "POST", "/logging?rbac=debug").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("  rbac: debug\n"), "{body}");
    curl_plain(inbound, "/headers", &[]).await;
    let on = within(Duration::from_secs(10), || {
        let hit = p.logs().contains(SHADOW_LINE);
        async move { hit }
    })
    .await;
    assert!(
        on.is_some(),
        "no rbac debug line after ?rbac=debug:\n{}",
        p.logs()
    );
    let (code, body) = admin(a, "POST", "/logging?level=info").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("  rbac: info\n"), "{body}");
    let before = p.logs().matches(SHADOW_LINE).count();
    curl_plain(inbound, "/headers?after=info", &[]).await;
    line_for(&p, "/headers?after=info").await;
    assert_eq!(
        p.logs().matches(SHADOW_LINE).count(),
        before,
        "{}",
        p.logs()
    );
    let (code, body) = admin(a, "POST", "/logging?nonsense=debug").await;
    assert_eq!(code, 400);
    assert!(
        body.contains("unknown logger") && body.contains("rbac"),
        "{body}"
    );
    let (code, body) = admin(a, "POST", "/logging?rbac=loud").await;
    assert_eq!(code, 400);
    assert!(
        body.contains("unknown level") && body.contains("warning"),
        "{body}"
    );
    // GET only lists; everything else but POST /logging is refused.
    let (code, body) = admin(a, "GET", "/logging?rbac=trace").await;
    assert_eq!(code, 200);
    assert!(body.contains("  rbac: info\n"), "{body}");
    let (code, _) = admin(a, "POST", "/stats").await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn text_encoding_writes_istios_default_line() {
    let dir = tempfile::tempdir().unwrap();
    let (p, inbound, app) = start(
        dir.path(),
        "text",
        "{ trustDomain: cluster.local, accessLogEncoding: TEXT }",
    )
    .await;
    let (code, _) = curl_plain(
        inbound,
        "/headers",
        &["-A", "curl-under-test", "-H", "x-request-id: rid-1"],
    )
    .await;
    assert_eq!(code, 200);
    // Istio's default format, one field per group (its documented order).
    let istio = regex::Regex::new(concat!(
        r#"^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] "(?P<method>[A-Z]+) (?P<path>\S+) (?P<protocol>[^"]+)" "#,
        r#"(?P<code>\d{3}) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) "(?P<transport>[^"]*)" "#,
        r#"(?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) (?P<service_time>\S+) "(?P<xff>[^"]*)" "#,
        r#""(?P<agent>[^"]*)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)" "#,
        r#"(?P<cluster>\S+) (?P<upstream_local>\S+) (?P<local>\S+) (?P<remote>\S+) (?P<sni>\S+) (?P<route>\S+)$"#,
    ))
    .unwrap();
    let mut line = String::new();
    let seen = within(Duration::from_secs(10), || {
        line = p
            .access_log()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let ok = !line.is_empty();
        async move { ok }
    })
    .await;
    assert!(seen.is_some(), "no access log line: {}", p.logs());
    let c = istio
        .captures(&line)
        .unwrap_or_else(|| panic!("not Istio's format: {line}"));
    assert_eq!(&c["method"], "GET");
    assert_eq!(&c["path"], "/headers");
    assert_eq!(&c["protocol"], "HTTP/1.1");
    assert_eq!(&c["code"], "200");
    assert_eq!(&c["details"], "via_upstream");
    assert_eq!(&c["agent"], "curl-under-test");
    assert_eq!(&c["rid"], "rid-1");
    assert_eq!(&c["authority"], format!("127.0.0.1:{inbound}"));
    assert_eq!(&c["upstream"], format!("127.0.0.1:{app}"));
    assert_eq!(&c["cluster"], format!("inbound|{app}||"));
    assert_eq!(&c["route"], "default");

    // An unknown operator is refused by the same parser `proxy --check` runs, naming it.
    let bad = dir.path().join("bad.yaml");
    let yaml = std::fs::read_to_string(dir.path().join("text.yaml"))
        .unwrap()
        .replace(
            "accessLogEncoding: TEXT",
            "accessLogEncoding: TEXT, accessLogFormat: \"%START_TIME% %BOGUS_OPERATOR%\"",
        );
    std::fs::write(&bad, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["proxy", "--config", bad.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("%BOGUS_OPERATOR%"), "{err}");
}
