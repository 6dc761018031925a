//! End-to-end tests of `trustmesh proxy`: real proxy processes on loopback, certificates minted
//! with the `openssl` CLI, clients we did not write (`curl`, `openssl s_client`), and a small
//! HTTP/TCP backend inside the test.
//!
//! Every wait is bounded (attempt count and wall time), so a broken proxy fails a test instead
//! of hanging it.

mod proxy_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trustmesh_testkit::http::get_on;
use trustmesh_testkit::net::{closed_within, echoes};

const TD: &str = "cluster.local";

/// PeerAuthentication: STRICT mTLS for the whole `foo` namespace.
const STRICT_IN_FOO: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: foo }\nspec:\n  mtls: { mode: STRICT }\n";

fn id(ns: &str, sa: &str) -> String {
    format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
}

/// (cert-chain.pem, key.pem).
type Svid = (PathBuf, PathBuf);

/// The usual cast in `dir`: the mesh CA for cluster.local, SVIDs for `foo/httpbin` (the server)
/// and `foo/sleep` (the client), and an empty `policies` folder.
fn cast(dir: &Path) -> (Ca, Svid, Svid, PathBuf) {
    let ca = Ca::new(dir, "mesh", TD);
    let server = ca.issue("server", &id("foo", "httpbin"));
    let client = ca.issue("client", &id("foo", "sleep"));
    (ca, server, client, policy_dir(dir, "policies"))
}

/// A sidecar pair on loopback: app → client sidecar (outbound, plaintext) → mTLS → server
/// sidecar (inbound) → the app behind it.
struct Pair {
    server: Proxy,
    client: Proxy,
    /// The server sidecar's inbound port and admin port.
    s_in: u16,
    s_admin: u16,
    /// The client sidecar's outbound port.
    c_out: u16,
}

impl Pair {
    /// Starts `server` (as `<dir>/server.yaml`) with an inbound listener in front of `backend`
    /// speaking `protocol`, and `client` (`<dir>/client.yaml`) with an outbound listener calling
    /// it and expecting `expect` (`peerIdentity: ...` or `peerTrustDomain: ...`).
    async fn start(
        dir: &Path,
        server: Cfg<'_>,
        client: Cfg<'_>,
        (backend, protocol): (u16, &'static str),
        expect: String,
    ) -> Pair {
        let (s_in, c_out) = (free_port(), free_port());
        let (server, client) = (
            server.inbound(s_in, backend, protocol),
            client.outbound(c_out, s_in, expect),
        );
        Pair {
            server: Proxy::start(dir, "server", &server.yaml(), server.admin).await,
            client: Proxy::start(dir, "client", &client.yaml(), client.admin).await,
            s_in,
            s_admin: server.admin,
            c_out,
        }
    }
}

/// Starts `foo/httpbin`'s sidecar (`<dir>/server.yaml`, SVID `cert` from `ca`, policies from
/// `pol`, the `extra` lines) with one HTTP listener in front of an `http_backend("httpbin")`;
/// returns it with its inbound port, admin port and the backend's port.
async fn httpbin(
    dir: &Path,
    (ca, cert, pol): (&Ca, &Svid, &Path),
    extra: &str,
) -> (Proxy, u16, u16, u16) {
    let backend = http_backend("httpbin").await;
    let (inb, admin) = (free_port(), free_port());
    let cfg = Cfg::new("foo", "httpbin", cert, ca, pol, admin)
        .inbound(inb, backend, "http")
        .extra(extra);
    let proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;
    (proxy, inb, admin, backend)
}

/// The snapshot generation the proxy with admin port `admin` serves (0 when it cannot say).
async fn config_generation(admin: u16) -> u64 {
    let (_, body) = http_get(admin, "/config_dump").await.unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["generation"].as_u64())
        .unwrap_or(0)
}

/// What a client sidecar expects of a server with the SPIFFE ID of `foo/<sa>`.
fn expect_id(sa: &str) -> String {
    format!("peerIdentity: \"{}\"", id("foo", sa))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_refuses_plaintext_and_untrusted_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let rogue = Ca::new(dir, "rogue", TD);
    let rogue_cert = rogue.issue("client", &id("foo", "sleep"));
    write_policy(&pol, "pa.yaml", STRICT_IN_FOO);
    let (mut proxy, inb, admin, backend) = httpbin(dir, (&ca, &server_cert, &pol), "").await;

    // Plaintext is refused on a STRICT port.
    let (code, _) = curl_plain(inb, "/ip", &[]).await;
    assert_eq!(code, 0, "plaintext must get no HTTP response");

    // A certificate from a CA outside the bundle is refused in the handshake.
    let (code, _) = curl_mtls(inb, "/ip", &rogue_cert, &[]).await;
    assert_eq!(code, 0, "untrusted CA must be refused");

    // No client certificate at all: refused too.
    let (code, _) = curl(&["-k", &format!("https://127.0.0.1:{inb}/")]).await;
    assert_eq!(code, 0, "TLS without a client cert must be refused");

    // A mesh certificate works, over HTTP/2 (curl's default with ALPN) and HTTP/1.1, and the app
    // sees the peer identity in XFCC.
    let (code, body) = curl_mtls(inb, "/headers", &client_cert, &[]).await;
    assert_eq!(code, 200, "{body}\n{}", proxy.logs());
    assert!(body.starts_with("httpbin GET /headers"), "{body}");
    assert!(
        body.contains(&format!("URI={}", id("foo", "sleep")))
            && body.contains(&format!("By={}", id("foo", "httpbin")))
            && body.contains("Hash="),
        "XFCC missing or wrong: {body}"
    );
    let headers_body = body.clone();
    let (code, _) = curl_mtls(inb, "/h1", &client_cert, &["--http1.1"]).await;
    assert_eq!(code, 200);

    // A forged XFCC from the client is replaced, not passed through.
    let (code, body) = curl_mtls(
        inb,
        "/forge",
        &client_cert,
        &["-H", "x-forwarded-client-cert: URI=spiffe://evil/ns/x/sa/y"],
    )
    .await;
    assert_eq!(code, 200);
    assert!(!body.contains("spiffe://evil"), "{body}");

    // openssl s_client: with the mesh cert the request goes through, without one it does not.
    let out = s_client(inb, Some(&client_cert)).await;
    assert!(out.contains("httpbin GET /via-s-client"), "{out}");
    let out = s_client(inb, None).await;
    assert!(!out.contains("httpbin GET"), "{out}");

    // TLS 1.3 is preferred, TLS 1.2 accepted, TLS 1.1 refused (the client's own security level
    // is lowered so that the refusal is the proxy's).
    let proto = |v: &'static str| {
        let (c, k) = (client_cert.0.clone(), client_cert.1.clone());
        async move {
            let out = tokio::process::Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{inb}"), v])
                .args(["-cipher", "DEFAULT@SECLEVEL=0", "-brief"])
                .args(["-cert", c.to_str().unwrap(), "-key", k.to_str().unwrap()])
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
        }
    };
    let out = proto("-tls1_3").await;
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    let out = proto("-tls1_2").await;
    assert!(out.contains("Protocol version: TLSv1.2"), "{out}");
    let out = proto("-tls1_1").await;
    assert!(!out.contains("Protocol version"), "{out}");

    // Access log: JSON lines with principal and decision.
    let log = proxy.access_log();
    let line = log
        .lines()
        .find(|l| l.contains("/headers"))
        .unwrap_or_else(|| panic!("no access log line: {log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["source_principal"], id("foo", "sleep"));
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["status"], 200);
    // The generated x-request-id reaches the app and the access log alike.
    let rid = v["request_id"].as_str().expect("request_id in access log");
    assert_eq!(rid.len(), 36, "{rid}");
    assert!(
        headers_body.contains(&format!("rid: {rid}\n")),
        "{headers_body}"
    );

    // Admin endpoints.
    let m = proxy.metrics().await;
    let handshake_errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("trustmesh_tls_handshake_errors_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(handshake_errors >= 2, "{m}");
    assert!(m.contains("reason=\"mtls_mode_mismatch\""), "{m}");
    assert!(m.contains("trustmesh_cert_expiry_seconds "), "{m}");
    let (code, certs) = http_get(admin, "/certs").await.unwrap();
    assert_eq!(code, 200);
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs["workload"]["spiffeId"], id("foo", "httpbin"));
    assert!(certs["workload"]["expiresInSeconds"].as_i64().unwrap() > 3600);
    assert_eq!(certs["trustBundles"][TD].as_array().unwrap().len(), 1);
    let (code, dump) = http_get(admin, "/config_dump").await.unwrap();
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["policies"]["mtlsByPort"][backend.to_string()]["mode"],
        "STRICT"
    );
    assert!(proxy.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_both_and_port_level_disable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let b_perm = http_backend("permissive").await;
    let b_strict = http_backend("strict").await;
    let b_disable = http_backend("disable").await;
    let b_greeter = greeter_backend().await;
    // Namespace default PERMISSIVE; workload policy PERMISSIVE with one port STRICT and two
    // DISABLE (one HTTP, one server-first TCP protocol).
    write_policy(
        &pol,
        "pa.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: default, namespace: foo }}\nspec:\n  mtls: {{ mode: PERMISSIVE }}\n---\n\
             apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: httpbin, namespace: foo }}\nspec:\n  selector: {{ matchLabels: {{ app: httpbin }} }}\n  mtls: {{ mode: PERMISSIVE }}\n  portLevelMtls:\n    {b_strict}: {{ mode: STRICT }}\n    {b_disable}: {{ mode: DISABLE }}\n    {b_greeter}: {{ mode: DISABLE }}\n"
        ),
    );
    let (p_perm, p_strict, p_disable, admin) = (free_port(), free_port(), free_port(), free_port());
    let p_greeter = free_port();
    let cfg = Cfg::new("foo", "httpbin", &server_cert, &ca, &pol, admin)
        .inbound(p_perm, b_perm, "http")
        .inbound(p_strict, b_strict, "http")
        .inbound(p_disable, b_disable, "http")
        .inbound(p_greeter, b_greeter, "tcp");
    let proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;

    // PERMISSIVE: plaintext and mTLS on the same port.
    let (code, body) = curl_plain(p_perm, "/a", &[]).await;
    assert_eq!(code, 200, "{body} {}", proxy.logs());
    assert!(
        body.contains("xfcc: \n"),
        "plaintext must carry no XFCC: {body}"
    );
    let (code, body) = curl_mtls(p_perm, "/b", &client_cert, &[]).await;
    assert_eq!(code, 200);
    assert!(
        body.contains(&format!("URI={}", id("foo", "sleep"))),
        "{body}"
    );

    // Port-level STRICT.
    assert_eq!(curl_plain(p_strict, "/c", &[]).await.0, 0);
    assert_eq!(curl_mtls(p_strict, "/c", &client_cert, &[]).await.0, 200);

    // Port-level DISABLE: plaintext only; TLS is not terminated.
    let (code, body) = curl_plain(p_disable, "/d", &[]).await;
    assert_eq!(code, 200);
    assert!(body.starts_with("disable GET /d"));
    assert_eq!(curl_mtls(p_disable, "/d", &client_cert, &[]).await.0, 0);

    // A server-first protocol on a DISABLE port: the app's greeting arrives although the client
    // has sent nothing (no sniffing wait).
    let mut s = TcpStream::connect(("127.0.0.1", p_greeter)).await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
        .await
        .expect("greeting must arrive without client data")
        .unwrap();
    assert_eq!(&buf, b"220 hello\r\n");
    // A plaintext TCP port is relayed socket to socket in the kernel: 4 MiB echoed back whole
    // and in order while still being sent, then each side's end passed on.
    let data: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut echoed))
        .await
        .expect("the echo ends once our end reached the app")
        .unwrap();
    writer.await.unwrap();
    assert!(
        echoed == data,
        "{} of {} bytes came back, or out of order",
        echoed.len(),
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_by_principal_namespace_path_method() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let server_cert = ca.issue("server", &id("foo", "httpbin"));
    let sleep = ca.issue("sleep", &id("foo", "sleep"));
    let other = ca.issue("other", &id("foo", "other"));
    let bar = ca.issue("bar", &id("bar", "client"));
    let pol = policy_dir(dir, "policies");
    write_policy(
        &pol,
        "authz.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: allow-sleep, namespace: foo }\nspec:\n  selector: { matchLabels: { app: httpbin } }\n  action: ALLOW\n  rules:\n  - from: [ { source: { principals: [\"cluster.local/ns/foo/sa/sleep\"] } } ]\n    to: [ { operation: { methods: [GET], paths: [\"/public/*\", \"/ip\"] } } ]\n  - from: [ { source: { namespaces: [bar] } } ]\n    to: [ { operation: { methods: [POST] } } ]\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-admin, namespace: foo }\nspec:\n  action: DENY\n  rules:\n  - to: [ { operation: { paths: [\"/public/admin\"] } } ]\n",
    );
    let backend = http_backend("httpbin").await;
    let echo = echo_backend().await;
    let (p_http, p_tcp, admin) = (free_port(), free_port(), free_port());
    let cfg = Cfg::new("foo", "httpbin", &server_cert, &ca, &pol, admin)
        .inbound(p_http, backend, "http")
        .inbound(p_tcp, echo, "tcp");
    let proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;

    // principal + method + path
    let (code, body) = curl_mtls(p_http, "/public/x", &sleep, &[]).await;
    assert_eq!(code, 200, "{body}\n{}", proxy.logs());
    let (code, body) = curl_mtls(p_http, "/private", &sleep, &[]).await;
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    let (code, _) = curl_mtls(p_http, "/public/x", &sleep, &["-X", "DELETE"]).await;
    assert_eq!(code, 403);
    // other principal in the same namespace
    assert_eq!(curl_mtls(p_http, "/public/x", &other, &[]).await.0, 403);
    // namespace rule: bar may POST anywhere, not GET
    assert_eq!(
        curl_mtls(p_http, "/anything", &bar, &["-X", "POST", "-d", "x=1"])
            .await
            .0,
        200
    );
    assert_eq!(curl_mtls(p_http, "/anything", &bar, &[]).await.0, 403);
    // DENY beats ALLOW
    assert_eq!(curl_mtls(p_http, "/public/admin", &sleep, &[]).await.0, 403);
    // plaintext (no principal) matches no ALLOW rule
    assert_eq!(curl_plain(p_http, "/public/x", &[]).await.0, 403);

    // L4: Istio semantics for HTTP-only fields on a TCP port — an ALLOW rule that needs them
    // cannot match, while a DENY rule with them is applied without them (stricter), so the
    // deny-admin policy closes the connection without data.
    let out = s_client(p_tcp, Some(&sleep)).await;
    assert!(
        !out.contains("GET /via-s-client"),
        "TCP deny must close: {out}"
    );

    let log = proxy.access_log();
    let denied = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == "/public/admin")
        .expect("access log line for /public/admin");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["policy"], "foo/deny-admin");
    let tcp_line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["protocol"] == "tcp" && v["direction"] == "inbound")
        .expect("access log line for the TCP connection");
    assert_eq!(tcp_line["decision"], "deny");
    assert_eq!(tcp_line["policy"], "foo/deny-admin");
    assert_eq!(tcp_line["source_principal"], id("foo", "sleep"));
    let m = proxy.metrics().await;
    assert!(
        m.contains(
            "trustmesh_authz_decisions_total{decision=\"deny\",policy=\"foo/deny-admin\"} 2"
        ),
        "{m}"
    );
    assert!(m.contains("reason=\"policy_denied\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_policy_hot_reload_keeps_established_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let server_cert = ca.issue("server", &id("foo", "db"));
    let client_cert = ca.issue("client", &id("foo", "app"));
    let server_pol = policy_dir(dir, "server-policies");
    let client_pol = policy_dir(dir, "client-policies");
    write_policy(&server_pol, "pa.yaml", STRICT_IN_FOO);
    let echo = echo_backend().await;
    let server = Cfg::new("foo", "db", &server_cert, &ca, &server_pol, free_port());
    let client = Cfg::new("foo", "app", &client_cert, &ca, &client_pol, free_port());
    let pair = Pair::start(dir, server, client, (echo, "tcp"), expect_id("db")).await;
    let (c_out, server_proxy) = (pair.c_out, &pair.server);

    async fn fresh_connection_works(port: u16) -> bool {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut s) => echoes(&mut s, b"ping").await,
            Err(_) => false,
        }
    }

    // app → client proxy (plain) → mTLS → server proxy → echo.
    let mut established = TcpStream::connect(("127.0.0.1", c_out)).await.unwrap();
    assert!(
        echoes(&mut established, b"hello").await,
        "server: {}\nclient: {}",
        server_proxy.logs(),
        pair.client.logs()
    );

    // Deny the app's principal; within 2 s new connections are refused...
    write_policy(
        &server_pol,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-app, namespace: foo }\nspec:\n  action: DENY\n  rules:\n  - from: [ { source: { principals: [\"cluster.local/ns/foo/sa/app\"] } } ]\n",
    );
    let took = within(Duration::from_secs(4), || async {
        !fresh_connection_works(c_out).await
    })
    .await
    .unwrap_or_else(|| panic!("policy not applied: {}", server_proxy.logs()));
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // ...while the established connection keeps working.
    assert!(echoes(&mut established, b"still here").await);

    // An invalid policy is applied fail-closed (an unreadable action could be DENY: it denies
    // what it selects, after pilot/pkg/security/authz/builder/builder.go), named in the log;
    // the reload is not refused.
    write_policy(&server_pol, "broken.yaml", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: broken, namespace: foo }\nspec:\n  action: MAYBE\n");
    let applied = within(Duration::from_secs(4), || async {
        server_proxy
            .logs()
            .contains("invalid policy enforced fail-closed resource=AuthorizationPolicy foo/broken")
    })
    .await;
    assert!(applied.is_some(), "{}", server_proxy.logs());
    assert!(!fresh_connection_works(c_out).await, "deny must still hold");
    assert!(echoes(&mut established, b"and still").await);

    // A policy file that is not YAML is refused on reload; the last good policy keeps serving.
    write_policy(&server_pol, "garbage.yaml", "spec: [unclosed\n");
    let refused = within(Duration::from_secs(4), || async {
        server_proxy.logs().contains("reload refused")
    })
    .await;
    assert!(refused.is_some(), "{}", server_proxy.logs());
    assert!(!fresh_connection_works(c_out).await, "deny must still hold");
    std::fs::remove_file(server_pol.join("garbage.yaml")).unwrap();

    // Removing the deny (and the broken file) restores access.
    std::fs::remove_file(server_pol.join("broken.yaml")).unwrap();
    std::fs::remove_file(server_pol.join("deny.yaml")).unwrap();
    within(Duration::from_secs(4), || fresh_connection_works(c_out))
        .await
        .expect("access restored after the deny policy was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_policy_hot_reload_changes_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let server = (&ca, &server_cert, pol.as_path());
    let (proxy, inb, admin, _) = httpbin(dir, server, "reloadPoll: 500ms\n").await;
    assert_eq!(curl_mtls(inb, "/x", &client_cert, &[]).await.0, 200);
    write_policy(
        &pol,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-get, namespace: foo }\nspec:\n  action: DENY\n  rules:\n  - to: [ { operation: { methods: [GET] } } ]\n",
    );
    let took = within(Duration::from_secs(4), || async {
        curl_mtls(inb, "/x", &client_cert, &[]).await.0 == 403
    })
    .await
    .unwrap_or_else(|| panic!("decision did not change: {}", proxy.logs()));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let (code, dump) = http_get(admin, "/config_dump").await.unwrap();
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(dump["generation"].as_u64().unwrap() >= 2, "{dump}");
}

/// `meshConfig.accessLogFile` as Istio reads it: a path gets the lines (appended, created when
/// missing) instead of stdout, an empty value turns the log off, `/dev/stdout` brings it back;
/// each change applies on reload. A path that cannot be written is refused as a config error
/// and the proxy keeps the output it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_goes_where_access_log_file_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let mesh_file = dir.join("mesh.yaml");
    let log_file = dir.join("logs").join("access.log");
    std::fs::create_dir(dir.join("logs")).unwrap();
    let set = |file: &str| {
        std::fs::write(
            &mesh_file,
            format!("trustDomain: {TD}\naccessLogFile: {file}\n"),
        )
        .unwrap()
    };
    set(&format!("\"{}\"", log_file.display()));
    let backend = http_backend("httpbin").await;
    let (inb, admin) = (free_port(), free_port());
    let mut cfg = Cfg::new("foo", "httpbin", &server_cert, &ca, &pol, admin)
        .inbound(inb, backend, "http")
        .extra("reloadPoll: 200ms\n");
    cfg.mesh = format!("\"{}\"", mesh_file.display());
    let mut proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;
    let in_file = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let generation = || config_generation(admin);

    assert_eq!(
        curl_mtls(inb, "/to-the-file", &client_cert, &[]).await.0,
        200
    );
    within(Duration::from_secs(3), || async {
        in_file().contains("\"/to-the-file\"")
    })
    .await
    .unwrap_or_else(|| panic!("no line in {}: {:?}", log_file.display(), in_file()));
    assert!(
        !proxy.access_log().contains("/to-the-file"),
        "{}",
        proxy.access_log()
    );

    // Rotated as logrotate does it: the file is moved away, then SIGUSR1 (Envoy's signal to
    // reopen access logs). Lines after it go to a new file at the configured path.
    let rotated = dir.join("logs").join("access.log.1");
    std::fs::rename(&log_file, &rotated).unwrap();
    proxy.signal(libc::SIGUSR1);
    within(Duration::from_secs(5), || async {
        proxy
            .logs()
            .contains("SIGUSR1: reopening the access log file")
    })
    .await
    .unwrap_or_else(|| panic!("SIGUSR1 not answered: {}", proxy.logs()));
    assert_eq!(curl_mtls(inb, "/rotated", &client_cert, &[]).await.0, 200);
    within(Duration::from_secs(3), || async {
        in_file().contains("\"/rotated\"")
    })
    .await
    .unwrap_or_else(|| panic!("no line in the reopened file: {:?}", in_file()));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("\"/to-the-file\""), "{old}");
    assert!(!old.contains("/rotated"), "{old}");
    assert!(!in_file().contains("/to-the-file"), "{}", in_file());
    assert!(proxy.alive(), "SIGUSR1 killed it");

    // Off: no line anywhere.
    set("\"\"");
    within(Duration::from_secs(5), || async { generation().await >= 2 })
        .await
        .unwrap_or_else(|| panic!("accessLogFile \"\" not applied: {}", proxy.logs()));
    assert_eq!(curl_mtls(inb, "/unlogged", &client_cert, &[]).await.0, 200);

    // Back to stdout; the request before it must not show up there or in the file.
    set("/dev/stdout");
    within(Duration::from_secs(5), || async { generation().await >= 3 })
        .await
        .unwrap_or_else(|| panic!("accessLogFile /dev/stdout not applied: {}", proxy.logs()));
    assert_eq!(curl_mtls(inb, "/to-stdout", &client_cert, &[]).await.0, 200);
    within(Duration::from_secs(3), || async {
        proxy.access_log().contains("\"/to-stdout\"")
    })
    .await
    .unwrap_or_else(|| panic!("no line on stdout: {}", proxy.access_log()));
    assert!(
        !proxy.access_log().contains("/unlogged"),
        "{}",
        proxy.access_log()
    );
    assert!(!in_file().contains("/unlogged"), "{}", in_file());
    assert!(!in_file().contains("/to-stdout"), "{}", in_file());
    assert_eq!(in_file().lines().count(), 1, "{}", in_file());

    // A file in a folder that does not exist: refused, named, and the log stays on stdout.
    let bad = dir.join("no-such-dir").join("access.log");
    set(&format!("\"{}\"", bad.display()));
    within(Duration::from_secs(5), || async {
        proxy.logs().contains("mesh.accessLogFile") && proxy.logs().contains("no-such-dir")
    })
    .await
    .unwrap_or_else(|| panic!("the bad path was not reported: {}", proxy.logs()));
    assert_eq!(generation().await, 3);
    assert_eq!(
        curl_mtls(inb, "/still-stdout", &client_cert, &[]).await.0,
        200
    );
    within(Duration::from_secs(3), || async {
        proxy.access_log().contains("\"/still-stdout\"")
    })
    .await
    .unwrap_or_else(|| panic!("no line on stdout: {}", proxy.access_log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_domain_b_accepted_only_after_root_and_alias_added() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let td_a = "team-a.gke.local";
    let td_b = "team-b.eks.local";
    let ca_a = Ca::new(dir, "a", td_a);
    let ca_b = Ca::new(dir, "b", td_b);
    let server_cert = ca_a.issue("server", &format!("spiffe://{td_a}/ns/foo/sa/httpbin"));
    let client_cert = ca_b.issue("client", &format!("spiffe://{td_b}/ns/foo/sa/sleep"));
    let server_pol = policy_dir(dir, "server-policies");
    let client_pol = policy_dir(dir, "client-policies");
    write_policy(&server_pol, "pa.yaml", STRICT_IN_FOO);
    // Istio-style: the policy names the principal with the local trust domain; with team-b as an
    // alias it also matches team-b's identity.
    write_policy(
        &server_pol,
        "authz.yaml",
        &format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: allow-sleep, namespace: foo }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ source: {{ principals: [\"{td_a}/ns/foo/sa/sleep\"] }} }} ]\n"),
    );
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(&mesh_file, format!("trustDomain: {td_a}\n")).unwrap();
    let backend = http_backend("httpbin").await;
    let s_admin = free_port();
    let server = |bundles: Vec<String>| Cfg {
        mesh: format!("\"{}\"", mesh_file.display()),
        ..Cfg::trusting(
            "foo",
            "httpbin",
            &server_cert,
            td_a,
            bundles,
            &server_pol,
            s_admin,
        )
    };
    let a_only = vec![format!("{td_a}={}", ca_a.root.display())];
    // The client side (team-b) federates with team-a to verify the server.
    let bundles = vec![
        format!("{td_b}={}", ca_b.root.display()),
        format!("{td_a}={}", ca_a.root.display()),
    ];
    let client = Cfg::trusting(
        "foo",
        "sleep",
        &client_cert,
        td_b,
        bundles,
        &client_pol,
        free_port(),
    );
    let expect = format!("peerTrustDomain: {td_a}");
    let pair = Pair::start(dir, server(a_only), client, (backend, "http"), expect).await;
    let (s_in, c_out, server_proxy) = (pair.s_in, pair.c_out, &pair.server);

    // Before: team-b's root is unknown to the server → handshake refused.
    let (code, _) = curl_plain(c_out, "/before", &[]).await;
    assert_eq!(code, 0, "team-b must be refused before its root is trusted");
    let (code, _) = curl_mtls(s_in, "/before", &client_cert, &[]).await;
    assert_eq!(code, 0);
    // The server's access log says who was refused and why, as a sentence.
    let refused =
        format!("peer spiffe://{td_b}/ns/foo/sa/sleep: trust domain {td_b} is not trusted");
    let took = within(Duration::from_secs(2), || async {
        server_proxy.access_log().contains(&refused)
    })
    .await;
    let log = server_proxy.access_log();
    assert!(took.is_some(), "no '{refused}' in the access log:\n{log}");
    assert!(!log.contains("OtherError") && !log.contains("{ "), "{log}");

    // Alias alone is not enough: team-b's certificate does not chain to team-a's root.
    std::fs::write(
        &mesh_file,
        format!("trustDomain: {td_a}\ntrustDomainAliases: [{td_b}]\n"),
    )
    .unwrap();
    let generation = || config_generation(s_admin);
    within(Duration::from_secs(4), || async { generation().await >= 2 })
        .await
        .unwrap_or_else(|| panic!("alias change not applied: {}", server_proxy.logs()));
    let (code, _) = curl_plain(c_out, "/alias-only", &[]).await;
    assert_eq!(code, 0, "team-b must still be refused without its root");

    // Now add team-b's root too (config file change).
    let both = vec![
        format!("{td_a}={}", ca_a.root.display()),
        format!("{td_b}={}", ca_b.root.display()),
    ];
    let with_both = server(both).inbound(s_in, backend, "http");
    std::fs::write(dir.join("server.yaml"), with_both.yaml()).unwrap();
    let took = within(Duration::from_secs(5), || async {
        curl_plain(c_out, "/after", &[]).await.0 == 200
    })
    .await
    .unwrap_or_else(|| panic!("team-b still refused: {}", server_proxy.logs()));
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let (code, body) = curl_plain(c_out, "/after", &[]).await;
    assert_eq!(code, 200);
    assert!(
        body.contains(&format!("URI=spiffe://{td_b}/ns/foo/sa/sleep")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_refuses_unexpected_server_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let rogue = Ca::new(dir, "rogue", "evil.example");
    let rogue_server = rogue.issue("server", "spiffe://evil.example/ns/foo/sa/httpbin");
    let backend = http_backend("httpbin").await;
    let (s_in, s_admin, r_in, r_admin) = (free_port(), free_port(), free_port(), free_port());
    let (c_ok, c_wrong, c_rogue, c_admin) = (free_port(), free_port(), free_port(), free_port());
    let server =
        Cfg::new("foo", "httpbin", &server_cert, &ca, &pol, s_admin).inbound(s_in, backend, "http");
    let trusted = vec![
        format!("evil.example={}", rogue.root.display()),
        format!("{TD}={}", ca.root.display()),
    ];
    let rogue_cfg = Cfg::trusting(
        "foo",
        "httpbin",
        &rogue_server,
        "evil.example",
        trusted,
        &pol,
        r_admin,
    )
    .inbound(r_in, backend, "http");
    let client = Cfg::new("foo", "sleep", &client_cert, &ca, &pol, c_admin)
        .outbound(
            c_ok,
            s_in,
            format!("peerIdentity: \"{}\"", id("foo", "httpbin")),
        )
        .outbound(
            c_wrong,
            s_in,
            format!("peerIdentity: \"{}\"", id("foo", "other")),
        )
        .outbound(c_rogue, r_in, format!("peerTrustDomain: {TD}"));
    let s = Proxy::start(dir, "server", &server.yaml(), s_admin).await;
    let _r = Proxy::start(dir, "rogue", &rogue_cfg.yaml(), r_admin).await;
    let c = Proxy::start(dir, "client", &client.yaml(), c_admin).await;

    let (code, body) = curl_plain(c_ok, "/ok", &[]).await;
    assert_eq!(code, 200, "{body} {}", c.logs());
    assert!(body.contains(&format!("URI={}", id("foo", "sleep"))));
    // HTTP/2 from the app (prior knowledge) is relayed and served by the peer's inbound.
    let (code, body) = curl_plain(c_ok, "/h2", &["--http2-prior-knowledge"]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("httpbin GET /h2"), "{body}");
    // The second app connection's mTLS connection resumed the first one's session.
    let m = s.metrics().await;
    assert!(m.contains("trustmesh_tls_handshakes_total 2\n"), "{m}");
    assert!(m.contains("trustmesh_tls_resumed_total 1\n"), "{m}");
    assert_eq!(curl_plain(c_wrong, "/wrong", &[]).await.0, 0);
    assert_eq!(curl_plain(c_rogue, "/rogue", &[]).await.0, 0);
    let m = c.metrics().await;
    assert!(m.contains("trustmesh_outbound_tls_errors_total 2"), "{m}");
    // The access log says who answered and who was expected, not only that TLS failed.
    let wanted = format!(
        "mTLS to 127.0.0.1:{s_in}: the server presented {}, expected {}",
        id("foo", "httpbin"),
        id("foo", "other")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.access_log().contains(&wanted) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(c.access_log().contains(&wanted), "{}", c.access_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_closed_and_counted_without_crashing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, server_cert, client_cert, pol) = cast(dir);
    let limits = "timeouts: { handshake: 500ms, requestHeaders: 500ms, maxHeaderBytes: 8192 }\n";
    let (mut proxy, inb, _, _) = httpbin(dir, (&ca, &server_cert, &pol), limits).await;

    // Garbage that looks like a TLS record.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    s.write_all(&[0xAB; 2000]).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    // Garbage plaintext.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(b"\x00\x01\x02 not http at all \r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    // Silent client: closed after the handshake timeout.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    // Half a handshake: the start of a ClientHello, then nothing.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    // Slowloris: a request line and then headers that never finish.
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    // Oversized headers: rejected (431 or close), never forwarded.
    let big = "a".repeat(20_000);
    let (code, body) = curl_plain(inb, "/big", &["-H", &format!("x-big: {big}")]).await;
    assert!(code == 431 || code == 0, "{code} {body}");
    assert!(!body.contains("httpbin"));

    // Still serving.
    assert!(proxy.alive(), "{}", proxy.logs());
    assert_eq!(curl_mtls(inb, "/ok", &client_cert, &[]).await.0, 200);
    let m = proxy.metrics().await;
    assert!(m.contains("reason=\"handshake_timeout\""), "{m}");
    assert!(m.contains("reason=\"tls_handshake_error\""), "{m}");
    assert!(m.contains("reason=\"http_protocol_error\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_reported_with_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.yaml");
    let refused = async |yaml: &str| -> String {
        std::fs::write(&cfg, yaml).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["proxy", "--config", cfg.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(
        "workload: { namespace: foo, serviceAccount: a }\ncerts: { key: k.pem, certChain: c.pem }\nmesh: {}\ninbound: [ { port: 70000, targetPort: 80 } ]\n",
    )
    .await;
    assert!(
        err.contains("bad.yaml") && err.contains("inbound[0].port"),
        "{err}"
    );

    // Valid YAML naming a missing certificate file.
    let err = refused(
        "workload: { namespace: foo, serviceAccount: a }\ncerts: { key: k.pem, certChain: c.pem }\nmesh: {}\ninbound: [ { port: 15006, targetPort: 80 } ]\n",
    )
    .await;
    assert!(
        err.contains("error:") && err.contains("trustBundles"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_rotation_applies_without_dropping_connections_and_bad_cert_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let first = ca.issue("server1", &id("foo", "httpbin"));
    let client_cert = ca.issue("client", &id("foo", "sleep"));
    // The proxy reads its SVID from fixed paths, as from an agent-managed volume.
    let live = (dir.join("cert-chain.pem"), dir.join("key.pem"));
    std::fs::copy(&first.0, &live.0).unwrap();
    std::fs::copy(&first.1, &live.1).unwrap();
    let server_pol = policy_dir(dir, "server-policies");
    let client_pol = policy_dir(dir, "client-policies");
    let backend = http_backend("httpbin").await;
    let server = Cfg::new("foo", "httpbin", &live, &ca, &server_pol, free_port());
    let client = Cfg::new("foo", "sleep", &client_cert, &ca, &client_pol, free_port());
    let pair = Pair::start(dir, server, client, (backend, "http"), expect_id("httpbin")).await;
    let (s_in, s_admin, c_out) = (pair.s_in, pair.s_admin, pair.c_out);
    let server_proxy = &pair.server;

    async fn leaf_serial(admin: u16) -> String {
        let (_, body) = http_get(admin, "/certs").await.expect("/certs");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["workload"]["chain"][0]["serial"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    /// One keep-alive HTTP/1.1 request on an existing connection; returns the status line.
    async fn request(s: &mut TcpStream, path: &str) -> Option<String> {
        Some(get_on(s, "httpbin", path, "").await?.status_line)
    }

    let before = leaf_serial(s_admin).await;
    assert!(!before.is_empty());
    let mut conn = TcpStream::connect(("127.0.0.1", c_out)).await.unwrap();
    assert_eq!(
        request(&mut conn, "/one").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );

    // Rotate: new key + cert written in place (rename, so each file is whole).
    let second = ca.issue("server2", &id("foo", "httpbin"));
    for (src, dst) in [(&second.1, &live.1), (&second.0, &live.0)] {
        let tmpf = dir.join("rotate.tmp");
        std::fs::copy(src, &tmpf).unwrap();
        std::fs::rename(&tmpf, dst).unwrap();
    }
    let took = within(Duration::from_secs(4), || async {
        leaf_serial(s_admin).await != before
    })
    .await
    .unwrap_or_else(|| panic!("rotation not applied: {}", server_proxy.logs()));
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let rotated = leaf_serial(s_admin).await;
    // The established connection survives; new connections handshake with the new cert.
    assert_eq!(
        request(&mut conn, "/two").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(curl_plain(c_out, "/three", &[]).await.0, 200);
    assert_eq!(curl_mtls(s_in, "/four", &client_cert, &[]).await.0, 200);

    // A key that does not match the certificate is refused; the rotated cert keeps serving.
    let stray = ca.issue("stray", &id("foo", "httpbin"));
    std::fs::copy(&stray.1, &live.1).unwrap();
    let refused = within(Duration::from_secs(4), || async {
        server_proxy.logs().contains("does not match")
    })
    .await;
    assert!(refused.is_some(), "{}", server_proxy.logs());
    assert_eq!(leaf_serial(s_admin).await, rotated);
    assert_eq!(curl_mtls(s_in, "/five", &client_cert, &[]).await.0, 200);
    assert_eq!(
        request(&mut conn, "/six").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let m = server_proxy.metrics().await;
    assert!(
        !m.contains("trustmesh_config_reload_failures_total 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let server_cert = ca.issue("server", &id("foo", "db"));
    let pol = policy_dir(dir, "policies");
    let echo = echo_backend().await;
    let web = http_backend("web").await;
    let (inb, admin, web_in) = (free_port(), free_port(), free_port());
    let cfg = Cfg::new("foo", "db", &server_cert, &ca, &pol, admin)
        .inbound(inb, echo, "tcp")
        .inbound(web_in, web, "http")
        .extra("timeouts: { terminationDrain: 5s }\n");
    let mut proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;
    let mut conn = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert!(echoes(&mut conn, b"hello").await);

    // An idle HTTP keep-alive connection (one request served).
    let mut web_conn = TcpStream::connect(("127.0.0.1", web_in)).await.unwrap();
    web_conn
        .write_all(b"GET /k HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut got = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(3), web_conn.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"HTTP/1.1 200");

    proxy.signal(libc::SIGTERM);

    // The listener closes and readiness fails, but the open connection keeps working.
    let closed = within(Duration::from_secs(3), || async {
        TcpStream::connect(("127.0.0.1", inb)).await.is_err()
    })
    .await;
    assert!(closed.is_some(), "listener still open: {}", proxy.logs());
    assert_eq!(
        http_get(admin, "/healthz/ready").await.map(|r| r.0),
        Some(503)
    );
    assert!(echoes(&mut conn, b"world").await);
    assert!(proxy.alive());
    // The idle HTTP connection is closed gracefully rather than held until the drain deadline.
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(2), web_conn.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "idle keep-alive connection not closed during drain"
    );

    // Once the TCP connection closes, the proxy exits promptly and cleanly.
    drop(conn);
    let started = Instant::now();
    let status = proxy.exits_within(Duration::from_secs(3)).await;
    let status = status.unwrap_or_else(|| panic!("proxy did not exit: {}", proxy.logs()));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_in_ca_chains_with_intermediates_from_the_ca_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Istio plug-in CA layout: root → intermediate → workload certs (cert-chain.pem carries the
    // intermediate, so both proxies must send and verify a 3-certificate chain).
    trustmesh_in(dir, &["ca", "init", "--trust-domain", TD, "--out", "root"]);
    let intermediate = ["--parent", "root", "--out", "int"];
    trustmesh_in(
        dir,
        &[&["ca", "init", "--trust-domain", TD], &intermediate[..]].concat(),
    );
    let server_cert = ca_issue(dir, "int", "server", &id("foo", "httpbin"), &[]);
    let client_cert = ca_issue(dir, "int", "client", &id("foo", "sleep"), &[]);
    let pol = policy_dir(dir, "policies");
    write_policy(
        &pol,
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: istio-system }\nspec:\n  mtls: { mode: STRICT }\n",
    );
    let backend = http_backend("httpbin").await;
    // Bundles as a directory: the root's trust domain comes from its own URI SAN.
    let bundle_dir = dir.join("bundles");
    std::fs::create_dir(&bundle_dir).unwrap();
    std::fs::copy(dir.join("root/root-cert.pem"), bundle_dir.join("mesh.pem")).unwrap();
    let bundles = vec![bundle_dir.display().to_string()];
    let server = Cfg::trusting(
        "foo",
        "httpbin",
        &server_cert,
        TD,
        bundles,
        &pol,
        free_port(),
    );
    let bundles = vec![format!(
        "{TD}={}",
        dir.join("client/root-cert.pem").display()
    )];
    let client = Cfg::trusting("foo", "sleep", &client_cert, TD, bundles, &pol, free_port());
    let pair = Pair::start(dir, server, client, (backend, "http"), expect_id("httpbin")).await;
    let (s_in, s_admin, c_out, s) = (pair.s_in, pair.s_admin, pair.c_out, &pair.server);
    let (code, body) = curl_plain(c_out, "/chain", &[]).await;
    assert_eq!(code, 200, "{body}\n{}", s.logs());
    assert!(
        body.contains(&format!("URI={}", id("foo", "sleep"))),
        "{body}"
    );
    // curl presents the whole chain from cert-chain.pem too.
    assert_eq!(curl_mtls(s_in, "/curl", &client_cert, &[]).await.0, 200);
    // Mesh-wide STRICT from the root namespace applies.
    assert_eq!(curl_plain(s_in, "/plain", &[]).await.0, 0);
    let (_, certs) = http_get(s_admin, "/certs").await.unwrap();
    let certs: serde_json::Value = serde_json::from_str(&certs).unwrap();
    assert_eq!(certs["workload"]["chain"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_follows_the_bundle_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mesh = Ca::new(dir, "mesh", TD);
    let partner = Ca::new(dir, "partner", "partner.example");
    let server_cert = mesh.issue("server", &id("foo", "httpbin"));
    let partner_client = partner.issue("client", "spiffe://partner.example/ns/ext/sa/batch");
    let pol = policy_dir(dir, "policies");
    write_policy(&pol, "pa.yaml", STRICT_IN_FOO);
    // Bundles as written by a federation agent: one file per trust domain in a directory, each
    // root naming its domain in its URI SAN.
    let bundles = dir.join("bundles");
    std::fs::create_dir(&bundles).unwrap();
    std::fs::copy(&mesh.root, bundles.join("cluster.local.pem")).unwrap();
    let backend = http_backend("httpbin").await;
    let (inb, admin) = (free_port(), free_port());
    let trusted = vec![bundles.display().to_string()];
    let cfg = Cfg::trusting("foo", "httpbin", &server_cert, TD, trusted, &pol, admin)
        .inbound(inb, backend, "http");
    let proxy = Proxy::start(dir, "server", &cfg.yaml(), admin).await;
    assert_eq!(curl_mtls(inb, "/before", &partner_client, &[]).await.0, 0);

    // The partner's bundle appears: federated, accepted within 2 s.
    let tmpf = bundles.join(".partner.tmp");
    std::fs::copy(&partner.root, &tmpf).unwrap();
    std::fs::rename(&tmpf, bundles.join("partner.example.pem")).unwrap();
    let took = within(Duration::from_secs(4), || async {
        curl_mtls(inb, "/federated", &partner_client, &[]).await.0 == 200
    })
    .await
    .unwrap_or_else(|| panic!("partner not accepted: {}", proxy.logs()));
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let (_, body) = curl_mtls(inb, "/federated", &partner_client, &[]).await;
    assert!(
        body.contains("URI=spiffe://partner.example/ns/ext/sa/batch"),
        "{body}"
    );

    // The bundle is withdrawn: refused again.
    std::fs::remove_file(bundles.join("partner.example.pem")).unwrap();
    within(Duration::from_secs(4), || async {
        curl_mtls(inb, "/withdrawn", &partner_client, &[]).await.0 == 0
    })
    .await
    .unwrap_or_else(|| panic!("partner still accepted: {}", proxy.logs()));
}

/// An idle HTTP/1.1 keep-alive connection stays usable well past 10 s (the sidecar once closed it
/// at 10 s, failing requests that client pools sent on connections they considered alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let server_cert = ca.issue("server", &id("foo", "httpbin"));
    let pol = policy_dir(dir, "policies");
    let (proxy, port, _, _) = httpbin(dir, (&ca, &server_cert, &pol), "").await;

    // PERMISSIVE (no PeerAuthentication): plaintext HTTP/1.1 on one connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut ask = async |path: &str| -> String {
        let answer = get_on(&mut s, "httpbin", path, "").await;
        answer.map_or("(closed)".into(), |a| a.status_line)
    };
    assert_eq!(ask("/first").await, "HTTP/1.1 200 OK", "{}", proxy.logs());
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        ask("/after-12s-idle").await,
        "HTTP/1.1 200 OK",
        "{}",
        proxy.logs()
    );
}

/// `proxy --check` reads everything the proxy would at start and binds nothing: old spellings
/// are printed with their replacements, invalid policies are listed as enforced fail-closed,
/// and a file the proxy could not start with is exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_flag_reads_everything_and_binds_nothing() {
    use trustmesh_testkit::sidecar::{write_beside, write_policy, Cfg, Inbound};
    let tmp = tempfile::tempdir().unwrap();
    // A port taken by the test: --check must not try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cfg = Cfg::beside("web");
    cfg.inbound.push(Inbound {
        port,
        target: 1,
        protocol: "http",
    });
    cfg.extra = "reloadPollMs: 250\n";
    let file = write_beside(tmp.path(), &cfg);
    write_policy(
        &tmp.path().join("policies"),
        "bad.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: typo, namespace: foo }\nspec:\n  action: ALLOW\n  rules: [ { to: [ { operation: { methdos: [GET] } } ] } ]\n",
    );
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["proxy", "--check", "--config", file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "ok: workload spiffe://cluster.local/ns/foo/sa/web (1 inbound, 0 outbound listeners)"
        ) && stdout.contains(
            "1 authorization policies (1 invalid, enforced fail-closed), 1 deprecated spellings"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("`reloadPollMs: 250` is deprecated; write `reloadPoll: 250ms`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fail-closed: ") && stderr.contains("typo"),
        "{stderr}"
    );

    // The local root gone: the proxy could not start, and --check says why.
    std::fs::remove_file(tmp.path().join("root-cert.pem")).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("root-cert.pem"),
        "{stderr}"
    );
    drop(taken);
}
