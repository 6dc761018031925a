//! Istio's standard metrics as an Istio user's tools read them (tier 2): two real sidecars on
//! loopback with mTLS between them and a plaintext client on the server's PERMISSIVE port, a
//! known number of requests and answers (200, a 403 from a DENY policy, a 503 from an app that
//! is down) and TCP connections of known sizes; then a real Prometheus (the Debian package)
//! scrapes both admin ports and the PromQL of Istio's dashboards must return the expected series
//! and values. `trustmesh mtls-readiness` reads the same sidecars.
//!
//! Without a `prometheus` binary the test prints SKIP, except under CI where it fails.

mod proxy_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trustmesh_testkit::net::eventually;
use trustmesh_testkit::process::Proc;

const TD: &str = "cluster.local";

/// The client workload as the server's registry knows it (a VM in Istio's terms).
const CLIENT_ENTRY: &str = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: client-vm, namespace: foo }\nspec:\n  address: 127.0.0.2\n  serviceAccount: client\n  labels: { app: client, version: v1 }\n";
/// A DENY of `/denied` on the app's HTTP port `port` (on the TCP port, where paths mean
/// nothing, a DENY rule with a path would refuse everything, as in Istio).
fn deny_path(port: u16) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: no-denied, namespace: foo }}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {{ paths: [\"/denied\"], ports: [\"{port}\"] }}\n"
    )
}

/// A Prometheus scraping `targets` (admin ports) every second, its data in `dir`.
async fn prometheus(dir: &Path, targets: &[u16]) -> (Proc, u16) {
    let port = free_port();
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: sidecars\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let proc = Proc::start(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stderr(log),
    );
    eventually("prometheus ready", Duration::from_secs(30), || async move {
        curl(&[&format!("http://127.0.0.1:{port}/-/ready")]).await.0 == 200
    })
    .await;
    (proc, port)
}

/// The vector `query` returns: each series' labels (as asked for) and value.
async fn query(prom: u16, q: &str) -> Vec<(serde_json::Value, f64)> {
    let (code, body) = curl(&[
        "-G",
        &format!("http://127.0.0.1:{prom}/api/v1/query"),
        "--data-urlencode",
        &format!("query={q}"),
    ])
    .await;
    assert_eq!(code, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Waits (≤30 s) until `q` returns a single value equal to `want`.
async fn until_value(prom: u16, q: &str, want: f64) {
    let mut last = Vec::new();
    for _ in 0..60 {
        last = query(prom, q).await;
        if last.len() == 1 && (last[0].1 - want).abs() < 1e-9 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{q}: wanted {want}, Prometheus says {last:?}");
}

/// A TCP connection through `port` that sends `n` bytes and reads the `n` echoed.
async fn tcp_echo(port: u16, n: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&vec![b'x'; n]).await.unwrap();
    let mut back = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echo within 5 s")
        .unwrap();
}

fn readiness(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .arg("mtls-readiness")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_dashboards_read_trustmesh_sidecars() {
    if !trustmesh_testkit::tools::tool_available(
        "prometheus",
        "--version",
        "prometheus",
        "Istio's dashboards against the sidecars",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let web_cert = ca.issue("web", &format!("spiffe://{TD}/ns/foo/sa/web"));
    let client_cert = ca.issue("client", &format!("spiffe://{TD}/ns/foo/sa/client"));
    let (web_pol, client_pol) = (policy_dir(dir, "web-pol"), policy_dir(dir, "client-pol"));
    write_policy(&web_pol, "client.yaml", CLIENT_ENTRY);
    let (app, echo, down) = (http_backend("web").await, echo_backend().await, free_port());
    write_policy(&web_pol, "deny.yaml", &deny_path(app));
    let (http_in, down_in, tcp_in) = (free_port(), free_port(), free_port());
    let (web_admin, client_admin) = (free_port(), free_port());
    let web = Cfg::new("foo", "web", &web_cert, &ca, &web_pol, web_admin)
        .inbound(http_in, app, "http")
        .inbound(down_in, down, "http")
        .inbound(tcp_in, echo, "tcp");
    // Istio's workload name, set: the `*_workload` labels carry it, the canonical service
    // stays the `app` label.
    let web_yaml = web
        .yaml()
        .replacen("workload:\n", "workload:\n  name: web-v1\n", 1);
    let (http_out, down_out, tcp_out) = (free_port(), free_port(), free_port());
    let expect = format!("peerIdentity: \"spiffe://{TD}/ns/foo/sa/web\"");
    let client = Cfg::new(
        "foo",
        "client",
        &client_cert,
        &ca,
        &client_pol,
        client_admin,
    )
    .outbound(http_out, http_in, expect.clone())
    .outbound(down_out, down_in, expect.clone())
    .outbound(tcp_out, tcp_in, expect);
    let _web = Proxy::start(dir, "web", &web_yaml, web_admin).await;
    let _client = Proxy::start(dir, "client", &client.yaml(), client_admin).await;
    let (_prom, prom) = prometheus(dir, &[web_admin, client_admin]).await;

    // Phase one, then Prometheus scrapes it, then phase two: rate() needs an increase
    // between two scrapes of a series, as on a live mesh.
    for phase in 0..2 {
        for _ in 0..3 {
            assert_eq!(curl_plain(http_out, "/ok", &[]).await.0, 200);
        }
        assert_eq!(curl_plain(http_out, "/denied", &[]).await.0, 403);
        assert_eq!(curl_plain(down_out, "/ok", &[]).await.0, 503);
        // The plaintext client on the PERMISSIVE port, straight to the server's sidecar.
        for _ in 0..2 {
            assert_eq!(curl_plain(http_in, "/ok", &[]).await.0, 200);
        }
        tcp_echo(tcp_out, 1000).await;
        let total = 7.0 * (phase + 1) as f64;
        until_value(
            prom,
            "sum(istio_requests_total{reporter=\"destination\"})",
            total,
        )
        .await;
        until_value(
            prom,
            "sum(istio_tcp_connections_closed_total{reporter=\"destination\"})",
            (phase + 1) as f64,
        )
        .await;
    }

    // Request volume by source and destination workload (Istio's mesh and workload
    // dashboards group `istio_requests_total{reporter="destination"}` this way).
    let mut by = query(
        prom,
        "sum(istio_requests_total{reporter=\"destination\"}) by (source_workload, source_workload_namespace, destination_workload, destination_service_namespace)",
    )
    .await;
    by.sort_by(|a, b| {
        a.0["source_workload"]
            .as_str()
            .cmp(&b.0["source_workload"].as_str())
    });
    let rows: Vec<(&str, &str, &str, f64)> = by
        .iter()
        .map(|(m, v)| {
            (
                m["source_workload"].as_str().unwrap(),
                m["source_workload_namespace"].as_str().unwrap(),
                m["destination_workload"].as_str().unwrap(),
                *v,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("client", "foo", "web-v1", 10.0),
            ("unknown", "unknown", "web-v1", 4.0)
        ]
    );
    // By response code: 2xx, the DENY's 403 and the down app's 503.
    let mut codes: Vec<(String, f64)> = query(
        prom,
        "sum(istio_requests_total{reporter=\"destination\"}) by (response_code)",
    )
    .await
    .into_iter()
    .map(|(m, v)| (m["response_code"].as_str().unwrap().to_string(), v))
    .collect();
    codes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        codes,
        [
            ("200".into(), 10.0),
            ("403".into(), 2.0),
            ("503".into(), 2.0)
        ]
    );
    // The 503 carries Envoy's UF flag.
    until_value(
        prom,
        "sum(istio_requests_total{reporter=\"destination\",response_code=\"503\",response_flags=\"UF\"})",
        2.0,
    )
    .await;

    // Success rate (non-5xx share), as the dashboards' singlestat computes it; the counters
    // themselves give the exact share, rate() the dashboards' windowed one.
    until_value(
        prom,
        "sum(istio_requests_total{reporter=\"destination\",response_code!~\"5.*\"}) / sum(istio_requests_total{reporter=\"destination\"})",
        12.0 / 14.0,
    )
    .await;
    let rate = query(
        prom,
        "sum(rate(istio_requests_total{reporter=\"destination\",response_code!~\"5.*\"}[1m])) / sum(rate(istio_requests_total{reporter=\"destination\"}[1m]))",
    )
    .await;
    assert_eq!(rate.len(), 1, "{rate:?}");
    assert!(rate[0].1 > 0.5 && rate[0].1 <= 1.0, "{rate:?}");

    // p99 latency from the histogram, as the dashboards plot it: a number, and a sane one on
    // loopback.
    let p99 = query(
        prom,
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])) by (le))",
    )
    .await;
    assert_eq!(p99.len(), 1, "{p99:?}");
    assert!(p99[0].1 > 0.0 && p99[0].1 < 2500.0, "p99 {p99:?}");

    // mTLS share: by connection_security_policy (the dashboards' 🔐 series).
    let mut mtls: Vec<(String, f64)> = query(
        prom,
        "sum(istio_requests_total{reporter=\"destination\"}) by (connection_security_policy)",
    )
    .await
    .into_iter()
    .map(|(m, v)| (m["connection_security_policy"].as_str().unwrap().into(), v))
    .collect();
    mtls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(mtls, [("mutual_tls".into(), 10.0), ("none".into(), 4.0)]);

    // TCP bytes and connections on both reporters.
    until_value(
        prom,
        "sum(istio_tcp_received_bytes_total{reporter=\"destination\",source_workload=\"client\",connection_security_policy=\"mutual_tls\"})",
        2000.0,
    )
    .await;
    until_value(
        prom,
        "sum(istio_tcp_sent_bytes_total{reporter=\"destination\"})",
        2000.0,
    )
    .await;
    until_value(
        prom,
        "sum(istio_tcp_connections_opened_total{reporter=\"destination\",destination_workload=\"web-v1\",destination_canonical_service=\"web\"})",
        2.0,
    )
    .await;
    // The client's sidecar reports every connection it relayed (its outbound listeners carry
    // bytes, not requests): 12, each to the server's principal.
    until_value(
        prom,
        "sum(istio_tcp_connections_closed_total{reporter=\"source\",source_workload=\"client\",destination_principal=\"spiffe://cluster.local/ns/foo/sa/web\"})",
        12.0,
    )
    .await;

    // mtls-readiness over the same sidecars: the HTTP port still receives plaintext, the
    // other two only mTLS.
    let admins = [
        "--admin",
        &format!("127.0.0.1:{web_admin}"),
        "--admin",
        &format!("127.0.0.1:{client_admin}"),
    ];
    let (code, out) = readiness(&admins);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "web-v1.foo port {app}: NOT READY: 1 plaintext source(s)"
        )),
        "{out}"
    );
    assert!(out.contains("plaintext  address 127.0.0.1  (4)"), "{out}");
    assert!(
        out.contains(&format!("web-v1.foo port {echo}: READY for STRICT")),
        "{out}"
    );
    assert!(
        out.contains(&format!("web-v1.foo port {down}: READY for STRICT")),
        "{out}"
    );
    assert!(
        out.contains("mtls       spiffe://cluster.local/ns/foo/sa/client  (8)"),
        "{out}"
    );
    let (code, json) = readiness(&[admins[0], admins[1], "-o", "json"]);
    assert_eq!(code, Some(1));
    let ports: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ports.as_array().unwrap().len(), 3, "{json}");
    // Only the ready sidecar's ports: 0; an unreachable sidecar: 2.
    let (code, out) = readiness(&["--admin", &format!("127.0.0.1:{client_admin}")]);
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = readiness(&["--admin", &format!("127.0.0.1:{}", free_port())]);
    assert_eq!(code, Some(2));
}
