//! HBONE (HTTP/2 CONNECT over mTLS, Istio ambient's transport) on an in-process sidecar:
//! hyper-h2 over Python's ssl module as the client we did not write (`tests/python/
//! hbone_client.py`), with SVIDs from an openssl CA; and our own tunnel client
//! (`trustmesh_proxy::tunnel`) against our own listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trustmesh_proxy::tls::ExpectedPeer;
use trustmesh_proxy::tunnel::{Dial, TunnelError};
use trustmesh_testkit::http::{http_backend, metric};
use trustmesh_testkit::net::{free_port, until};
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::sidecar::{write_beside, Cfg};
use trustmesh_testkit::tools::{python_dir, python_has};

const CLIENT: &str = "spiffe://cluster.local/ns/foo/sa/client";
const INTRUDER: &str = "spiffe://cluster.local/ns/foo/sa/intruder";

/// A TCP echo app that counts the connections it accepted.
async fn counting_echo() -> (u16, Arc<AtomicUsize>) {
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = ln.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// The sidecar `foo/db` with an openssl CA's SVID, an HBONE listener and three apps: an echo
/// (TCP), an echo guarded by a DENY for the intruder (TCP), and an HTTP app whose `/admin`
/// is denied.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    ca: OpensslCa,
    shared: Arc<trustmesh_proxy::state::Shared>,
    hbone: u16,
    echo: u16,
    guarded: u16,
    guarded_seen: Arc<AtomicUsize>,
    http: u16,
}

async fn fixture(capture: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = OpensslCa::new(&dir, "mesh", "cluster.local");
    let (cert, key) = ca.issue("db", "spiffe://cluster.local/ns/foo/sa/db");
    std::fs::copy(cert, dir.join("cert-chain.pem")).unwrap();
    std::fs::copy(key, dir.join("key.pem")).unwrap();
    std::fs::copy(&ca.root, dir.join("root-cert.pem")).unwrap();
    let (echo, _) = counting_echo().await;
    let (guarded, guarded_seen) = counting_echo().await;
    let http = http_backend("app").await;
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/deny.yaml"),
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: no-intruder, namespace: foo }}
spec:
  selector: {{ matchLabels: {{ app: db }} }}
  action: DENY
  rules:
  - from: [{{ source: {{ principals: [\"cluster.local/ns/foo/sa/intruder\"] }} }}]
    to: [{{ operation: {{ ports: [\"{guarded}\"] }} }}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: no-admin, namespace: foo }}
spec:
  selector: {{ matchLabels: {{ app: db }} }}
  action: DENY
  rules:
  - to: [{{ operation: {{ ports: [\"{http}\"], paths: [\"/admin\"] }} }}]
"
        ),
    )
    .unwrap();
    let hbone = free_port();
    let extra = if capture {
        // Transparent mode on loopback: no iptables, the HBONE port alone is exercised.
        format!("capture: {{ inboundPort: 0, outboundPort: 0, dns: false, hbonePort: {hbone} }}\n")
    } else {
        format!("hbone: {{ port: {hbone} }}\n")
    };
    let mut cfg = Cfg::beside("db").extra(&extra);
    if !capture {
        cfg = cfg
            .inbound(free_port(), echo, "tcp")
            .inbound(free_port(), guarded, "tcp")
            .inbound(free_port(), http, "http");
    }
    let path = write_beside(&dir, &cfg);
    let (shared, bound) = trustmesh_proxy::start(&path).await.expect("proxy starts");
    assert_eq!(bound.hbone.map(|a| a.port()), Some(hbone));
    Fixture {
        _dir: tmp,
        dir,
        ca,
        shared,
        hbone,
        echo,
        guarded,
        guarded_seen,
        http,
    }
}

impl Fixture {
    /// Runs the Python client as `id` (`None`: no client certificate) with `streams`.
    async fn h2(&self, id: Option<(&OpensslCa, &str)>, streams: Value) -> Value {
        let mut spec = json!({
            "port": self.hbone,
            "ca": self.ca.root,
            "deadline": 5,
            "streams": streams,
        });
        if let Some((ca, id)) = id {
            let label = id.rsplit('/').next().unwrap().to_string() + &ca.name;
            let (cert, key) = ca.issue(&label, id);
            spec["cert"] = json!(cert);
            spec["key"] = json!(key);
        }
        let script = python_dir().join("hbone_client.py");
        let dir = self.dir.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(script)
                .arg(spec.to_string())
                .current_dir(dir)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client output {text:?} ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn metrics(&self) -> String {
        self.shared.metrics.render(0)
    }
}

fn connect(port: u16, payload: &str) -> Value {
    json!({"method": "CONNECT", "authority": format!("127.0.0.1:{port}"),
           "payload": payload, "expect": payload.len()})
}

fn get(port: u16, path: &str) -> Value {
    json!({"method": "CONNECT", "authority": format!("127.0.0.1:{port}"),
           "payload": format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")})
}

fn python_ready() -> bool {
    python_has("h2", "the HBONE interop tests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_on_one_connection_carry_their_own_bytes() {
    if !python_ready() {
        return;
    }
    let f = fixture(false).await;
    let out = f
        .h2(
            Some((&f.ca, CLIENT)),
            json!([
                connect(f.echo, "first stream"),
                connect(f.echo, "second, longer stream")
            ]),
        )
        .await;
    assert_eq!(out["error"], Value::Null, "{out}");
    let s = &out["streams"];
    assert_eq!(
        (s[0]["status"].as_u64(), s[1]["status"].as_u64()),
        (Some(200), Some(200)),
        "{out}"
    );
    assert_eq!(s[0]["data"], "first stream", "{out}");
    assert_eq!(s[1]["data"], "second, longer stream", "{out}");
    // One TLS connection carried both.
    let m = f.metrics();
    assert_eq!(
        metric(&m, "trustmesh_inbound_connections_total"),
        Some(1),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_by_principal_refuses_the_stream_before_the_app() {
    if !python_ready() {
        return;
    }
    let f = fixture(false).await;
    let out = f
        .h2(
            Some((&f.ca, INTRUDER)),
            json!([connect(f.guarded, "let me in"), connect(f.echo, "hi")]),
        )
        .await;
    let s = &out["streams"];
    // ztunnel's answer to a policy refusal is 401; the other port is not guarded.
    assert_eq!(s[0]["status"].as_u64(), Some(401), "{out}");
    assert_eq!(s[1]["status"].as_u64(), Some(200), "{out}");
    assert_eq!(s[1]["data"], "hi", "{out}");
    assert_eq!(
        f.guarded_seen.load(Ordering::SeqCst),
        0,
        "the guarded app saw a connection"
    );
    let m = f.metrics();
    assert!(m.contains("reason=\"policy_denied\"} 1"), "{m}");
    // The caller the policy names is the only one refused.
    let out = f
        .h2(Some((&f.ca, CLIENT)), json!([connect(f.guarded, "ok")]))
        .await;
    assert_eq!(out["streams"][0]["status"].as_u64(), Some(200), "{out}");
    assert_eq!(f.guarded_seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_inside_the_tunnel_meets_l7_policy() {
    if !python_ready() {
        return;
    }
    let f = fixture(false).await;
    let out = f
        .h2(
            Some((&f.ca, CLIENT)),
            json!([get(f.http, "/hello"), get(f.http, "/admin")]),
        )
        .await;
    let s = &out["streams"];
    assert_eq!(
        (s[0]["status"].as_u64(), s[1]["status"].as_u64()),
        (Some(200), Some(200)),
        "{out}"
    );
    let (hello, admin) = (
        s[0]["data"].as_str().unwrap(),
        s[1]["data"].as_str().unwrap(),
    );
    assert!(hello.starts_with("HTTP/1.1 200"), "{out}");
    assert!(hello.contains("app GET /hello"), "{out}");
    // The caller's identity reached the app as for a direct mTLS connection.
    assert!(
        hello.contains("URI=spiffe://cluster.local/ns/foo/sa/client"),
        "{out}"
    );
    assert!(admin.starts_with("HTTP/1.1 403"), "{out}");
    assert!(!admin.contains("app GET"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_valid_svid_is_refused_at_the_handshake() {
    if !python_ready() {
        return;
    }
    let f = fixture(false).await;
    let stranger = OpensslCa::new(&f.dir, "stranger", "cluster.local");
    for id in [None, Some((&stranger, CLIENT))] {
        let out = f.h2(id, json!([connect(f.echo, "x")])).await;
        assert_ne!(out["error"], Value::Null, "{out}");
        assert!(
            out["streams"].as_array().is_none_or(|s| s.is_empty()),
            "{out}"
        );
    }
    let m = f.metrics();
    assert!(m.contains("reason=\"tls_handshake_error\"} 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_bad_authorities_are_refused() {
    if !python_ready() {
        return;
    }
    let f = fixture(false).await;
    let streams = json!([
        {"method": "GET", "authority": format!("127.0.0.1:{}", f.echo)},
        {"method": "CONNECT", "authority": format!("localhost:{}", f.echo), "payload": "x"},
        {"method": "CONNECT", "authority": "127.0.0.1:1", "payload": "x"},
        connect(f.echo, "still fine"),
    ]);
    let out = f.h2(Some((&f.ca, CLIENT)), streams).await;
    let s = &out["streams"];
    for i in 0..3 {
        assert_eq!(s[i]["status"].as_u64(), Some(400), "stream {i}: {out}");
    }
    assert!(
        s[0]["data"]
            .as_str()
            .unwrap()
            .contains("CONNECT requests only"),
        "{out}"
    );
    assert!(s[1]["data"].as_str().unwrap().contains("ip:port"), "{out}");
    assert!(
        s[2]["data"]
            .as_str()
            .unwrap()
            .contains("no inbound listener"),
        "{out}"
    );
    assert_eq!(s[3]["data"], "still fine", "{out}");
    let m = f.metrics();
    assert!(m.contains("reason=\"hbone_refused\"} 3"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_mode_takes_the_workloads_own_address_only() {
    if !python_ready() {
        return;
    }
    let f = fixture(true).await;
    let out = f
        .h2(
            Some((&f.ca, CLIENT)),
            json!([
                connect(f.echo, "captured"),
                {"method": "CONNECT", "authority": format!("127.0.0.2:{}", f.echo), "payload": "x"},
                {"method": "CONNECT", "authority": format!("127.0.0.1:{}", f.hbone), "payload": "x"},
            ]),
        )
        .await;
    let s = &out["streams"];
    assert_eq!(s[0]["status"].as_u64(), Some(200), "{out}");
    assert_eq!(s[0]["data"], "captured", "{out}");
    assert_eq!(s[1]["status"].as_u64(), Some(400), "{out}");
    assert!(
        s[1]["data"].as_str().unwrap().contains("not this workload"),
        "{out}"
    );
    assert_eq!(s[2]["status"].as_u64(), Some(400), "{out}");
}

/// Our own client (what the captured outbound path uses for a `tunnel: http` endpoint) against
/// our own listener: the sidecar tunnels to itself with its own SVID.
#[tokio::test(flavor = "current_thread")]
async fn our_tunnel_client_reaches_our_listener_and_pools_its_connection() {
    let f = fixture(false).await;
    let snap = f.shared.current();
    let own = snap.own_id.to_string();
    let config = |expected: ExpectedPeer| {
        trustmesh_proxy::tls::client_config_offering(&snap.chains, &snap.own, expected, &[b"h2"])
            .unwrap()
    };
    let ids = vec![own.clone()];
    let dial = |target: u16, config| Dial {
        peer: SocketAddr::from(([127, 0, 0, 1], f.hbone)),
        identities: &ids,
        epoch: 1,
        config,
        target: SocketAddr::from(([127, 0, 0, 1], target)),
        client: SocketAddr::from(([127, 0, 0, 1], 4000)),
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
    };
    let exact = config(ExpectedPeer::Exact(snap.own_id.clone()));
    for msg in ["one", "two"] {
        let (mut t, peer) =
            trustmesh_proxy::tunnel::open(&dial(f.echo, exact.clone()), &snap.chains)
                .await
                .expect("tunnel opens");
        assert_eq!(peer.as_deref(), Some(own.as_str()));
        t.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    // Both tunnels rode one connection.
    assert_eq!(
        metric(&f.metrics(), "trustmesh_inbound_connections_total"),
        Some(1)
    );
    // The peer's refusal comes back with its status and words.
    match trustmesh_proxy::tunnel::open(&dial(1, exact.clone()), &snap.chains).await {
        Err(TunnelError::Refused {
            status: 400, body, ..
        }) => {
            assert!(body.contains("no inbound listener"), "{body}")
        }
        other => panic!("expected a 400, got {:?}", other.map(|_| ())),
    }
    // A server with another identity than the expected one is not talked to.
    let other =
        trustmesh_identity::SpiffeId::parse("spiffe://cluster.local/ns/foo/sa/other").unwrap();
    let wrong_ids = vec![other.to_string()];
    let mut wrong = dial(f.echo, config(ExpectedPeer::Exact(other)));
    wrong.identities = &wrong_ids;
    match trustmesh_proxy::tunnel::open(&wrong, &snap.chains).await {
        Err(e @ TunnelError::Upstream(_)) => {
            assert!(
                e.sentence()
                    .contains("presented spiffe://cluster.local/ns/foo/sa/db"),
                "{e}"
            )
        }
        other => panic!("expected a wrong identity, got {:?}", other.map(|_| ())),
    }
    until("the refusals are logged", Duration::from_secs(2), || {
        f.metrics().contains("reason=\"hbone_refused\"} 1")
    })
    .await;
    // A newer mesh view (after a reload) does not ride the connection pooled under the older
    // one: one new connection, then pooled under the new view.
    let accepted = || metric(&f.metrics(), "trustmesh_inbound_connections_total").unwrap();
    let before = accepted();
    let mut newer = dial(f.echo, exact.clone());
    newer.epoch = 2;
    for msg in ["three", "four"] {
        let (mut t, _) = trustmesh_proxy::tunnel::open(&newer, &snap.chains)
            .await
            .expect("tunnel opens");
        t.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        t.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
    assert_eq!(accepted(), before + 1);
}

/// The drain closes the HBONE port at once and sends GOAWAY, while a tunnel in flight keeps
/// carrying bytes until the deadline, when it is closed.
#[tokio::test(flavor = "current_thread")]
async fn the_drain_lets_open_tunnels_run_until_its_deadline() {
    let f = fixture(false).await;
    let snap = f.shared.current();
    let ids = vec![snap.own_id.to_string()];
    let config = trustmesh_proxy::tls::client_config_offering(
        &snap.chains,
        &snap.own,
        ExpectedPeer::Exact(snap.own_id.clone()),
        &[b"h2"],
    )
    .unwrap();
    let dial = Dial {
        peer: SocketAddr::from(([127, 0, 0, 1], f.hbone)),
        identities: &ids,
        epoch: 1,
        config,
        target: SocketAddr::from(([127, 0, 0, 1], f.echo)),
        client: SocketAddr::from(([127, 0, 0, 1], 4000)),
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
    };
    let (mut t, _) = trustmesh_proxy::tunnel::open(&dial, &snap.chains)
        .await
        .expect("tunnel opens");
    let shared = f.shared.clone();
    let started = std::time::Instant::now();
    let drain = tokio::spawn(async move {
        shared
            .drain(Duration::from_millis(800), std::future::pending::<()>())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Graceful part: the tunnel still relays; nobody new gets in.
    assert!(trustmesh_testkit::net::echoes(&mut t, b"during the drain").await);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", f.hbone))
            .await
            .is_err(),
        "the HBONE port must be closed during the drain"
    );
    // The deadline closes it.
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(3), t.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "tunnel still open: {r:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let drained = drain.await.unwrap();
    assert!(drained.waited <= Duration::from_secs(3), "{drained:?}");
}
