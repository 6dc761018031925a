//! Invalid policy resources in a running proxy (tier 1: in-process through `start`, plain HTTP
//! from a PERMISSIVE client): an invalid DENY policy fails closed for the workload it selects,
//! the other policies keep deciding, reloads apply instead of being refused, a file that is not
//! YAML is refused on reload, and `/metrics` and `/config_dump` name what is invalid.
//!
//! Expectations follow Istio's builder (pilot/pkg/security/authz/builder/builder.go, and
//! pilot/pkg/security/authz/model/model.go `checkError`) and its webhook
//! (pkg/config/validation/validation.go, which rejects `from: []`).

mod common;

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET on the admin port; the body.
async fn admin(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
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
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metric(body: &str, line_start: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_deny_fails_closed_while_the_rest_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, "spiffe://cluster.local/ns/foo/sa/httpbin");
    std::fs::create_dir(dir.join("policies")).unwrap();
    let write = |d: &Path, name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    write(dir, "policies/good.yaml", GOOD);
    // Selects another workload: invalid, but nothing here is refused because of it.
    write(dir, "policies/broken.yaml", &broken_deny("ratings"));
    let app = common::ok_backend().await;
    let (inb, adm) = (common::free_port(), common::free_port());
    write(
        dir,
        "proxy.yaml",
        &format!(
            r#"workload: {{ namespace: foo, serviceAccount: httpbin, labels: {{ app: httpbin }} }}
certs: {{ key: key.pem, certChain: cert-chain.pem }}
trustBundles: [ "cluster.local=root-cert.pem" ]
mesh: {{ trustDomain: cluster.local }}
policyDir: policies
reloadPoll: 100ms
inbound: [ {{ port: {inb}, targetPort: {app}, protocol: http }} ]
admin: {{ address: "127.0.0.1:{adm}" }}
"#
        ),
    );
    let (_shared, _bound) = trustmesh_proxy::start(&dir.join("proxy.yaml"))
        .await
        .expect("an invalid policy does not stop the proxy");

    // allow-open's invalid rule 0 (`from: []`) is dropped; its rule 1 still allows /open.
    assert_eq!(common::get_status(inb, "/open").await, 200);
    assert_eq!(
        common::get_status(inb, "/admin").await,
        403,
        "deny-admin still applies"
    );
    assert_eq!(
        common::get_status(inb, "/other").await,
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
        common::get_status(inb, "/open").await == 403
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
        common::get_status(inb, "/open").await == 200
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
    assert_eq!(common::get_status(inb, "/open").await, 200);
    assert_eq!(common::get_status(inb, "/admin").await, 403);
}
