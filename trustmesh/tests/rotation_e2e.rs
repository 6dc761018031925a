//! End to end: the sidecar takes its certificate from the node agent and swaps it on every
//! rotation without dropping established connections. Real processes: `ca serve`, two agents,
//! two proxies; a long-lived TCP connection through the mTLS pair must survive three rotations
//! of the server's 10 s certificate, and new handshakes must get the newest certificate.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A line echo server: the app behind the server-side sidecar.
fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if writeln!(w, "echo {line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// GET on a sidecar's admin port; `None` until it answers 200.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// Serial of the certificate the sidecar serves, per its admin endpoint.
fn served_serial(admin: SocketAddr) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&admin_get(admin, "/certs")?).ok()?;
    v.pointer("/workload/chain/0/serial")?
        .as_str()
        .map(|s| s.replace(':', "").to_uppercase())
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent(base: &Path, name: &str, grpc: SocketAddr, root: &Path, token: String, ttl: &str) -> Proc {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let cfg = format!(
        "trust_domain: {TD}\nca:\n  address: https://{grpc}\n  root_cert: {root}\n  server_name: trustmesh-ca\n\
         token_file: token\nidentity: {{namespace: default, service_account: {name}}}\n\
         output_dir: certs\nttl: {ttl}\nmax_retry_interval: 1s\n",
        root = root.display(),
    );
    std::fs::write(dir.join("agent.yaml"), cfg).unwrap();
    Proc::spawn(&[
        "agent",
        "--config",
        dir.join("agent.yaml").to_str().unwrap(),
    ])
}

#[test]
fn long_lived_connection_survives_three_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let ca_dir = base.join("cacerts");
    make_ca(&ca_dir);
    let root = ca_dir.join("root-cert.pem");
    let jwks = base.join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k1");
    let (_ca, grpc, _) = start_ca(&ca_dir, &jwks, &["--max-ttl", "1h"]);

    let _server_agent = agent(
        base,
        "server",
        grpc,
        &root,
        issuer.token("default", "server"),
        "10s",
    );
    let _client_agent = agent(
        base,
        "client",
        grpc,
        &root,
        issuer.token("default", "client"),
        "1h",
    );
    for name in ["server", "client"] {
        let chain = base.join(name).join("certs/cert-chain.pem");
        wait_until("agent certificate", Duration::from_secs(30), || {
            chain.exists().then_some(())
        });
    }

    let policies = base.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("p.yaml"),
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\n\
             spec: {{mtls: {{mode: STRICT}}}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: only-client, namespace: default}}\n\
             spec:\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [\"{TD}/ns/default/sa/client\"]}}}}]\n"
        ),
    )
    .unwrap();

    let backend = echo_backend();
    let (server_in, server_admin) = (free_port(), free_port());
    let (client_out, client_admin) = (free_port(), free_port());
    let proxy_cfg = |name: &str, listeners: String, admin: u16| {
        let dir = base.join(name);
        let cfg = format!(
            "workload: {{namespace: default, serviceAccount: {name}}}\n\
             certs: {{key: certs/key.pem, certChain: certs/cert-chain.pem}}\n\
             trustBundles: [\"{TD}={root}\"]\nmesh: {{trustDomain: {TD}}}\npolicyDir: {pol}\n\
             admin: {{address: \"127.0.0.1:{admin}\"}}\nreloadPollMs: 200\n{listeners}",
            root = root.display(),
            pol = policies.display(),
        );
        std::fs::write(dir.join("proxy.yaml"), cfg).unwrap();
        dir.join("proxy.yaml")
    };
    let server_cfg = proxy_cfg(
        "server",
        format!(
            "inbound:\n  - port: {server_in}\n    targetPort: {}\n    protocol: tcp\n",
            backend.port()
        ),
        server_admin,
    );
    let client_cfg = proxy_cfg(
        "client",
        format!(
            "outbound:\n  - port: {client_out}\n    peer: \"127.0.0.1:{server_in}\"\n    \
             peerIdentity: \"spiffe://{TD}/ns/default/sa/server\"\n    protocol: tcp\n"
        ),
        client_admin,
    );
    let _server_proxy = Proc::spawn(&["proxy", "--config", server_cfg.to_str().unwrap()]);
    let _client_proxy = Proc::spawn(&["proxy", "--config", client_cfg.to_str().unwrap()]);
    let server_admin: SocketAddr = format!("127.0.0.1:{server_admin}").parse().unwrap();
    let client_admin: SocketAddr = format!("127.0.0.1:{client_admin}").parse().unwrap();
    for a in [server_admin, client_admin] {
        wait_until("proxy ready", Duration::from_secs(30), || {
            admin_get(a, "/healthz/ready")
        });
    }

    // One connection, app → client sidecar → mTLS → server sidecar → echo app, held open.
    let conn = TcpStream::connect(("127.0.0.1", client_out)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut ping = |n: usize| -> String {
        writeln!(writer, "ping {n}").expect("connection still open");
        let mut line = String::new();
        reader.read_line(&mut line).expect("echo arrives");
        line.trim_end().to_string()
    };
    assert_eq!(ping(0), "echo ping 0");

    // Watch the server sidecar's certificate change three times (10 s TTL, renewed at ~5 s),
    // pinging the whole time; bounded at 60 s.
    let mut seen = vec![wait_until("serial", Duration::from_secs(10), || {
        served_serial(server_admin)
    })];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 1;
    while seen.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} rotations seen by the sidecar in 60 s: {seen:?}",
            seen.len() - 1
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            ping(n),
            format!("echo ping {n}"),
            "after {} rotations",
            seen.len() - 1
        );
        n += 1;
        if let Some(s) = served_serial(server_admin) {
            if seen.last() != Some(&s) {
                seen.push(s);
            }
        }
    }
    assert_eq!(
        ping(n),
        format!("echo ping {n}"),
        "connection survived three rotations"
    );
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{seen:?}");

    // A new handshake gets the certificate the agent wrote last: ask openssl (a client we did
    // not write) which certificate the server sidecar presents, with the client's own SVID.
    let client_certs = base.join("client/certs");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{server_in}")])
        .arg("-cert")
        .arg(client_certs.join("cert-chain.pem"))
        .arg("-key")
        .arg(client_certs.join("key.pem"))
        .arg("-CAfile")
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let pem = String::from_utf8_lossy(&out.stdout);
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("server certificate");
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(pem[start..end].as_bytes())
        .unwrap();
    let serial = String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap();
    let presented = serial.trim().trim_start_matches("serial=").to_uppercase();
    let current = served_serial(server_admin).unwrap();
    assert!(
        seen[1..].contains(&presented) || presented == current,
        "openssl saw serial {presented}, the sidecar's rotated serials are {seen:?} (now {current})"
    );
    assert_ne!(
        presented, seen[0],
        "a new handshake must not get the first certificate"
    );
}
