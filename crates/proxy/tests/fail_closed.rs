//! Invalid policy resources in a running proxy (tier 1: in-process through `start`, plain HTTP
//! from a PERMISSIVE client): an invalid DENY policy fails closed for the workload it selects,
//! the other policies keep deciding, reloads apply instead of being refused, a file that is not
//! YAML is refused on reload, and `/metrics` and `/config_dump` name what is invalid.
//!
//! Expectations follow Istio's builder (pilot/pkg/security/authz/builder/builder.go, and
//! pilot/pkg/security/authz/model/model.go `checkError`) and its webhook
//! (pkg/config/validation/validation.go, which rejects `from: []`).

use std::path::Path;
use std::time::Duration;

use trustmesh_testkit::http::{get_status, http_get, metric, ok_backend};
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::{write_beside, Cfg};

/// GET on the admin port; the body.
async fn admin(port: u16, path: &str) -> String {
    http_get(port, path)
        .await
        .expect("the admin port answers")
        .1
}

const GOOD: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-open, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  rules:
  - from: []
  - to: [ { operation: { paths: ["/open", "/admin"] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: foo }
spec:
  action: DENY
  rules:
  - to: [ { operation: { paths: ["/admin"] } } ]
"#;

fn broken_deny(app: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: broken-deny, namespace: foo }}\nspec:\n  action: DENY\n  selector: {{ matchLabels: {{ app: {app} }} }}\n  rules:\n  - to: [ {{ operation: {{ ports: [\"http\"] }} }} ]\n"
    )
}

/// Polls until `f` holds (reloads are polled every 100 ms here).
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    trustmesh_testkit::net::eventually(what, Duration::from_secs(10), f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_deny_fails_closed_while_the_rest_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (inb, app) = (free_port(), ok_backend().await);
    let cfg = Cfg::beside("httpbin")
        .inbound(inb, app, "http")
        .extra("reloadPoll: 100ms\n");
    let path = write_beside(dir, &cfg);
    let write = |d: &Path, name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    write(dir, "policies/good.yaml", GOOD);
    // Selects another workload: invalid, but nothing here is refused because of it.
    write(dir, "policies/broken.yaml", &broken_deny("ratings"));
    let (_shared, bound) = trustmesh_proxy::start(&path)
        .await
        .expect("an invalid policy does not stop the proxy");
    let adm = bound.admin.expect("an admin listener").port();

    // allow-open's invalid rule 0 (`from: []`) is dropped; its rule 1 still allows /open.
    assert_eq!(get_status(inb, "/open").await, 200);
    assert_eq!(
        get_status(inb, "/admin").await,
        403,
        "deny-admin still applies"
    );
    assert_eq!(
        get_status(inb, "/other").await,
        403,
        "no ALLOW rule matches"
    );
    let m = admin(adm, "/metrics").await;
    assert_eq!(
        metric(&m, "trustmesh_policy_invalid_resources{kind=\"AuthorizationPolicy\",outcome=\"denies_all\"}"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric(&m, "trustmesh_policy_invalid_resources{kind=\"AuthorizationPolicy\",outcome=\"dropped_rules\"}"),
        Some(1),
        "{m}"
    );
    let dump: serde_json::Value = serde_json::from_str(&admin(adm, "/config_dump").await).unwrap();
    let names: Vec<&str> = dump["policies"]["invalidResources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["broken-deny", "allow-open"], "{dump}"); // file order

    // The broken DENY now selects this workload: the reload applies (not refused) and the
    // policy denies everything it selects, /open included.
    write(dir, "policies/broken.yaml", &broken_deny("httpbin"));
    eventually("the reload with the broken DENY", || async {
        get_status(inb, "/open").await == 403
    })
    .await;
    let m = admin(adm, "/metrics").await;
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
        m.contains("decision=\"deny\",policy=\"foo/broken-deny\""),
        "the broken policy is the deciding one: {m}"
    );

    // Fixed: everything is back.
    write(
        dir,
        "policies/broken.yaml",
        &broken_deny("httpbin").replace("\"http\"", "\"9999\""),
    );
    eventually("the fixed policy", || async {
        get_status(inb, "/open").await == 200
    })
    .await;

    // A file that is not YAML could hold any policy: the reload is refused and the last good
    // snapshot (with that file's previous contents) keeps serving.
    write(dir, "policies/zz.yaml", "spec: [unclosed\n");
    eventually("the refused reload", || async {
        let m = admin(adm, "/metrics").await;
        metric(&m, "trustmesh_config_reload_failures_total") == Some(1)
    })
    .await;
    assert_eq!(get_status(inb, "/open").await, 200);
    assert_eq!(get_status(inb, "/admin").await, 403);
}
