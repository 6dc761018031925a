//! The transparent mesh end to end (tier 2; needs root, as in CI): unmodified apps in network
//! namespaces of the test's own call services by name, and the sidecars — real `trustmesh
//! proxy` processes behind `trustmesh capture` — find the endpoints in the registry (Istio's
//! WorkloadEntry / ServiceEntry / DestinationRule YAML), resolve the names, and pick mTLS or
//! plaintext by themselves.
//!
//! Six namespaces on one bridge, addresses only from the benchmarking range 198.18.0.0/15
//! (workloads in 198.18.1.0/24, auto-allocated service VIPs in 198.19.0.0/24):
//!
//! | namespace | address | what runs there |
//! |---|---|---|
//! | frontend | .10 | sidecar `frontend/frontend` + capture; the app is curl (uid 65534) |
//! | reviews1, reviews2 | .11, .12 | sidecar `bookinfo/reviews` + capture; a Python echo app on 9080 |
//! | impostor | .13 | sidecar `bookinfo/impostor` + capture, registered as `ratings` |
//! | plain | .20 | no sidecar: Python echo apps on 8000 and 8001 |
//! | outsider | .30 | no sidecar: curl |
//!
//! The echo app answers with its name and the `x-forwarded-client-cert` it was given, so the
//! test sees who the server's sidecar says called. DNS inside each namespace goes to
//! 198.18.1.1, where nothing answers: every name the apps resolve is answered by the sidecar's
//! DNS proxy, from the registry. Everything is removed when the test ends, pass or fail.

mod mesh_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_support::{
    echo, get, get_with, hub, node, sidecar, wait, Net, Node, APP_UID, ECHO, TOOLS,
};
use trustmesh_testkit::http::metric;
use trustmesh_testkit::netns::{self, Netns};
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::process::Proc;
use trustmesh_testkit::tools::{stderr, stdout};

const TD: &str = "cluster.local";
/// Workloads in 198.18.1.0/24, VIPs in 198.19.0.0/24.
const NET: Net = Net {
    prefix: "198.18.1",
    vips: "198.19.0.0/24",
};

/// The registry and the DestinationRule, as an Istio user writes them for VMs.
const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: reviews-v1, namespace: bookinfo }
spec: { address: 198.18.1.11, labels: { app: reviews, version: v1 }, serviceAccount: reviews }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: reviews-v2, namespace: bookinfo }
spec: { address: 198.18.1.12, labels: { app: reviews, version: v2 }, serviceAccount: reviews }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ratings-v1, namespace: bookinfo }
spec: { address: 198.18.1.13, labels: { app: ratings }, serviceAccount: ratings }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: frontend, namespace: frontend }
spec: { address: 198.18.1.10, labels: { app: frontend }, serviceAccount: frontend }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [ reviews.bookinfo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: details, namespace: bookinfo }
spec:
  hosts: [ details.bookinfo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9081, name: http, protocol: HTTP, targetPort: 9080 } ]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: bookinfo }
spec:
  hosts: [ ratings.bookinfo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 9080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: plain, namespace: bookinfo }
spec:
  hosts: [ plain.bookinfo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 8000, name: http, protocol: HTTP } ]
  endpoints: [ { address: 198.18.1.20 } ]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: details-plaintext, namespace: bookinfo }
spec:
  host: details.bookinfo.svc.cluster.local
  trafficPolicy: { tls: { mode: DISABLE } }
"#;

/// An HTTPS echo app: its name and the URI SAN of the client certificate (`-` without one);
/// with a CA file it requires a client certificate signed by it.
const TLS_ECHO: &str = r#"
import http.server, ssl, sys
name, port, cert, key, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.connection.getpeercert() or {}
        uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
        body = f"{name} client={uris[0] if uris else '-'} host={self.headers.get('host')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if ca != "-":
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
srv = http.server.ThreadingHTTPServer(("0.0.0.0", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// Two external HTTPS services the sidecar originates TLS to (DestinationRule SIMPLE and
/// MUTUAL), with the files of the test's "ext" CA.
fn origination_yaml(root: &Path, wrong_root: &Path, client: &(PathBuf, PathBuf)) -> String {
    let entry = |name: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  hosts: [ {name}.bookinfo.svc.cluster.local ]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports:\n  - number: {port}\n    name: http\n    protocol: HTTP\n  endpoints:\n  - address: 198.18.1.20\n---\n"
        )
    };
    let rule = |name: &str, tls: String| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  host: {name}.bookinfo.svc.cluster.local\n  trafficPolicy:\n    tls:\n{tls}---\n"
        )
    };
    let simple = format!(
        "      mode: SIMPLE\n      caCertificates: {}\n      sni: secure.bookinfo.svc.cluster.local\n",
        root.display()
    );
    let mutual = format!(
        "      mode: MUTUAL\n      caCertificates: {}\n      clientCertificate: {}\n      privateKey: {}\n      sni: mutual.bookinfo.svc.cluster.local\n",
        root.display(),
        client.0.display(),
        client.1.display()
    );
    // The same server, verified against a root that did not sign it.
    let untrusted = format!(
        "      mode: SIMPLE\n      caCertificates: {}\n      sni: secure.bookinfo.svc.cluster.local\n",
        wrong_root.display()
    );
    [
        entry("secure", 8443),
        entry("mutual", 8444),
        entry("untrusted", 8443),
        rule("secure", simple),
        rule("mutual", mutual),
        rule("untrusted", untrusted),
    ]
    .concat()
}

const STRICT_BOOKINFO: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: bookinfo }\nspec: { mtls: { mode: STRICT } }\n";

/// The HTTPS echo app `name` on `port`, requiring client certificates from `ca` if given.
fn tls_echo(
    n: &Netns,
    name: &str,
    port: u16,
    cert: &(PathBuf, PathBuf),
    ca: Option<&Path>,
) -> Proc {
    let ca = ca.map_or("-".to_string(), |c| c.display().to_string());
    Proc::start(n.command("/usr/bin/python3").args([
        "-c",
        TLS_ECHO,
        name,
        &port.to_string(),
        cert.0.to_str().unwrap(),
        cert.1.to_str().unwrap(),
        &ca,
    ]))
}

#[test]
fn apps_call_services_by_name_and_the_sidecars_pick_endpoints_and_mtls() {
    if !netns::usable("mesh_e2e", TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("mesh")).unwrap();
    std::fs::write(dir.join("mesh/registry.yaml"), REGISTRY).unwrap();
    let ca = OpensslCa::new(dir, "mesh", TD);
    let ext = OpensslCa::new(dir, "ext", "ext.test");
    let secure_cert = ext.issue_server("secure", "DNS:secure.bookinfo.svc.cluster.local");
    let mutual_cert = ext.issue_server("mutual", "DNS:mutual.bookinfo.svc.cluster.local");
    let client_cert = ext.issue("client", "spiffe://ext.test/frontend-egress");
    std::fs::write(
        dir.join("mesh/origination.yaml"),
        origination_yaml(&ext.root, &ca.root, &client_cert),
    )
    .unwrap();

    let hub = hub(NET);
    let frontend = node(&hub, "fe", "198.18.1.10");
    let reviews1 = node(&hub, "rv1", "198.18.1.11");
    let reviews2 = node(&hub, "rv2", "198.18.1.12");
    let impostor = node(&hub, "imp", "198.18.1.13");
    let plain = node(&hub, "plain", "198.18.1.20");
    let outsider = node(&hub, "out", "198.18.1.30");

    let _apps = [
        echo(&reviews1.ns, "reviews-v1", 9080),
        echo(&reviews2.ns, "reviews-v2", 9080),
        echo(&impostor.ns, "impostor", 9080),
        echo(&plain.ns, "plain", 8000),
        echo(&plain.ns, "plain-8001", 8001),
        tls_echo(&plain.ns, "secure", 8443, &secure_cert, None),
        tls_echo(&plain.ns, "mutual", 8444, &mutual_cert, Some(&ext.root)),
    ];
    let mut fe = sidecar(
        dir,
        &ca,
        &frontend,
        "frontend",
        "frontend",
        "frontend",
        "ALLOW_ANY",
    );
    let _r1 = sidecar(
        dir,
        &ca,
        &reviews1,
        "bookinfo",
        "reviews",
        "reviews",
        "ALLOW_ANY",
    );
    let _r2 = sidecar(
        dir,
        &ca,
        &reviews2,
        "bookinfo",
        "reviews",
        "reviews",
        "ALLOW_ANY",
    );
    let _imp = sidecar(
        dir,
        &ca,
        &impostor,
        "bookinfo",
        "impostor",
        "ratings",
        "ALLOW_ANY",
    );
    // Every app up (reached from the outsider, PERMISSIVE for now).
    for addr in [
        "198.18.1.11:9080",
        "198.18.1.12:9080",
        "198.18.1.13:9080",
        "198.18.1.20:8000",
    ] {
        wait(&format!("app at {addr}"), Duration::from_secs(10), || {
            get(&outsider.ns, &format!("http://{addr}/")).0 == 200
        });
    }

    // DNS: the sidecar answers the service's name with its auto-allocated VIP.
    let hosts = frontend
        .ns
        .command("setpriv")
        .args(["--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"])
        .args(["getent", "ahostsv4", "reviews.bookinfo"])
        .output()
        .unwrap();
    let resolved = stdout(&hosts);
    assert!(
        resolved.starts_with("198.19.0."),
        "{resolved} {}",
        stderr(&hosts)
    );

    // By name, captured, mTLS: the server's sidecar saw frontend's identity, and the requests
    // spread over both endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (code, text) = get(&frontend.ns, "http://reviews.bookinfo:9080/");
        assert_eq!(code, 200, "{text}\n{}", fe.log.text());
        assert!(
            text.contains(&format!("URI=spiffe://{TD}/ns/frontend/sa/frontend")),
            "{text}"
        );
        seen.insert(
            text.lines()
                .last()
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["reviews-v1", "reviews-v2"],
        "round robin over both endpoints"
    );

    // A server without a sidecar is reached in plaintext (auto mTLS).
    let (code, text) = get(&frontend.ns, "http://plain.bookinfo:8000/");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("plain xfcc=-"), "{text}");

    // A DestinationRule DISABLE: plaintext to a workload that has a sidecar.
    let (code, text) = get(&frontend.ns, "http://details.bookinfo:9081/");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("xfcc=-"), "sent in plaintext: {text}");

    // TLS origination: the app speaks plain HTTP, its sidecar TLS (SIMPLE), and with the
    // rule's client certificate (MUTUAL).
    let (code, text) = get(&frontend.ns, "http://secure.bookinfo:8443/");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("secure client=- host=secure.bookinfo:8443"),
        "{text}"
    );
    let (code, text) = get(&frontend.ns, "http://mutual.bookinfo:8444/");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("mutual client=spiffe://ext.test/frontend-egress"),
        "{text}"
    );

    let (code, text) = get(&frontend.ns, "http://untrusted.bookinfo:8443/");
    assert_eq!(code, 503, "a server the rule's CA did not sign: {text}");
    assert!(text.contains("reset reason: TLS error"), "{text}");

    // ALLOW_ANY: an address the registry does not know is passed through.
    let (code, text) = get(&frontend.ns, "http://198.18.1.20:8001/");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("plain-8001 xfcc=-"), "{text}");

    // An endpoint answering with the wrong identity: a 503 that says who answered.
    let (code, text) = get(&frontend.ns, "http://ratings.bookinfo:9080/");
    assert_eq!(code, 503, "{text}");
    let reason = "x-trustmesh-upstream-error: upstream connect error or disconnect/reset \
                  before headers. reset reason: TLS error";
    assert!(text.contains(reason), "{text}");
    assert!(
        text.contains(&format!("the server presented spiffe://{TD}/ns/bookinfo/sa/impostor, expected spiffe://{TD}/ns/bookinfo/sa/ratings")),
        "{text}"
    );

    // What a workload keeps on loopback stays there: the sidecar reaches the app at the
    // address the client asked for, so neither the sidecar's admin port nor an app bound to
    // 127.0.0.1 is exposed by the capture.
    let _private = Proc::start(reviews1.ns.command("/usr/bin/python3").args([
        "-c",
        &ECHO.replace("\"0.0.0.0\"", "\"127.0.0.1\""),
        "private",
        "9090",
    ]));
    wait("the private app", Duration::from_secs(10), || {
        let out = reviews1
            .ns
            .command("curl")
            .args(["-sS", "--max-time", "2", "http://127.0.0.1:9090/"])
            .output()
            .unwrap();
        stdout(&out).starts_with("private")
    });
    for url in [
        "http://198.18.1.11:15000/config_dump",
        "http://198.18.1.11:9090/",
    ] {
        let (code, text) = get(&outsider.ns, url);
        assert_eq!(code, 503, "{url}: {text}");
        assert!(
            !text.contains("private") && !text.contains("policies"),
            "{text}"
        );
    }

    // STRICT in bookinfo: a plaintext client without a sidecar is refused, the mesh is not.
    std::fs::write(dir.join("mesh/strict.yaml"), STRICT_BOOKINFO).unwrap();
    wait("STRICT applied", Duration::from_secs(10), || {
        get(&outsider.ns, "http://198.18.1.11:9080/").0 == 0
    });
    let (code, text) = get(&frontend.ns, "http://reviews.bookinfo:9080/");
    assert_eq!(code, 200, "{text}");

    // REGISTRY_ONLY: an unknown port (of an address the registry knows) and an unknown address
    // are refused, in words, on an HTTP connection.
    let config = std::fs::read_to_string(&fe.config).unwrap();
    std::fs::write(&fe.config, config.replace("ALLOW_ANY", "REGISTRY_ONLY")).unwrap();
    wait("REGISTRY_ONLY applied", Duration::from_secs(10), || {
        get(&frontend.ns, "http://198.18.1.20:8001/").0 == 502
    });
    let (code, text) = get(&frontend.ns, "http://198.18.1.20:8001/");
    assert_eq!(code, 502, "{text}");
    assert!(
        text.contains("x-trustmesh-upstream-error: outboundTrafficPolicy is REGISTRY_ONLY and no service of the workload at 198.18.1.20 has port 8001"),
        "{text}"
    );
    let (code, text) = get(&frontend.ns, "http://198.18.1.30:8000/");
    assert_eq!(code, 502, "{text}");
    assert!(
        text.contains("outboundTrafficPolicy is REGISTRY_ONLY and no service on port 8000 has host 198.18.1.30"),
        "{text}"
    );
    let (code, _) = get(&frontend.ns, "http://reviews.bookinfo:9080/");
    assert_eq!(code, 200);
    assert!(fe.proc.running());

    // The frontend sidecar counted what it did (its admin port is on the namespace's
    // loopback; root's connections are not captured).
    let out = frontend
        .ns
        .command("curl")
        .args(["-sS", "--max-time", "5", "http://127.0.0.1:15000/metrics"])
        .output()
        .unwrap();
    let metrics = stdout(&out);
    let value = |line: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
    };
    assert!(
        value("trustmesh_dns_queries_total{answer=\"mesh\"}") >= 8,
        "{metrics}"
    );
    // 198.18.1.20:8001 at least twice (the wait, the check), 198.18.1.30:8000 once.
    assert!(value("trustmesh_outbound_registry_only_refused_total") >= 3);
    assert!(value("trustmesh_outbound_passthrough_total") >= 1);
    assert!(value("trustmesh_outbound_tls_errors_total") >= 1);
}

/// The security policies of the explicit mode's tests, enforced on captured traffic: the
/// inbound capture port gives policy the same facts (peer identity, the app's port, the
/// request) an explicit listener does.
const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-allow, namespace: bookinfo }
spec:
  selector: { matchLabels: { app: reviews } }
  action: ALLOW
  rules:
  - from: [ { source: { principals: [ "cluster.local/ns/frontend/sa/frontend" ] } } ]
    to: [ { operation: { methods: [ GET ], paths: [ "/api/*" ], ports: [ "9080" ] } } ]
  - from: [ { source: { requestPrincipals: [ "https://issuer.test/*" ] } } ]
    to: [ { operation: { paths: [ "/user/*" ] } } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-deny, namespace: bookinfo }
spec:
  selector: { matchLabels: { app: reviews } }
  action: DENY
  rules: [ { to: [ { operation: { paths: [ "/api/admin*" ] } } ] } ]
"#;

#[test]
fn policies_apply_to_captured_traffic_as_to_explicit_listeners() {
    if !netns::usable("mesh_e2e", TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("mesh")).unwrap();
    std::fs::write(dir.join("mesh/registry.yaml"), REGISTRY).unwrap();
    std::fs::write(dir.join("mesh/policies.yaml"), POLICIES).unwrap();
    let signer = trustmesh_testkit::jwt::Signer::new("k1");
    let jwks = serde_json::to_string(&signer.jwks()).unwrap();
    let request_authn = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: reviews-jwt, namespace: bookinfo }}\nspec:\n  selector: {{ matchLabels: {{ app: reviews }} }}\n  jwtRules:\n  - issuer: https://issuer.test\n    jwks: '{jwks}'\n"
    );
    std::fs::write(dir.join("mesh/jwt.yaml"), request_authn).unwrap();
    let ca = OpensslCa::new(dir, "mesh", TD);

    let hub = hub(NET);
    let frontend = node(&hub, "fe", "198.18.1.10");
    let reviews1 = node(&hub, "rv1", "198.18.1.11");
    let outsider = node(&hub, "out", "198.18.1.30");
    let _app = echo(&reviews1.ns, "reviews-v1", 9080);
    let fe = sidecar(
        dir,
        &ca,
        &frontend,
        "frontend",
        "frontend",
        "frontend",
        "ALLOW_ANY",
    );
    let rv = sidecar(
        dir,
        &ca,
        &reviews1,
        "bookinfo",
        "reviews",
        "reviews",
        "ALLOW_ANY",
    );
    wait("reviews up", Duration::from_secs(10), || {
        get(&outsider.ns, "http://198.18.1.11:9080/").0 == 403
    });

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = signer.sign(&serde_json::json!({
        "iss": "https://issuer.test", "sub": "user-1", "exp": exp,
    }));
    let forged = trustmesh_testkit::jwt::Signer::new("k1").sign(&serde_json::json!({
        "iss": "https://issuer.test", "sub": "user-1", "exp": exp,
    }));
    let bearer = |t: &str| format!("authorization: Bearer {t}");
    let (good, bad) = (bearer(&token), bearer(&forged));
    // (client, url, extra curl args, expected status)
    let table: [(&Netns, &str, Vec<&str>, u16); 8] = [
        // ALLOW by the caller's SPIFFE principal, method, path and port.
        (
            &frontend.ns,
            "http://reviews.bookinfo:9080/api/list",
            vec![],
            200,
        ),
        // DENY wins over ALLOW.
        (
            &frontend.ns,
            "http://reviews.bookinfo:9080/api/admin",
            vec![],
            403,
        ),
        // No ALLOW rule matches.
        (
            &frontend.ns,
            "http://reviews.bookinfo:9080/other",
            vec![],
            403,
        ),
        (
            &frontend.ns,
            "http://reviews.bookinfo:9080/api/list",
            vec!["-X", "POST"],
            403,
        ),
        // Plaintext from outside the mesh: no principal (PERMISSIVE lets it in, ALLOW does not).
        (
            &outsider.ns,
            "http://198.18.1.11:9080/api/list",
            vec![],
            403,
        ),
        // RequestAuthentication: a valid token's principal is allowed, a forged one is 401,
        // none is 403.
        (
            &outsider.ns,
            "http://198.18.1.11:9080/user/1",
            vec!["-H", &good],
            200,
        ),
        (
            &outsider.ns,
            "http://198.18.1.11:9080/user/1",
            vec!["-H", &bad],
            401,
        ),
        (&outsider.ns, "http://198.18.1.11:9080/user/1", vec![], 403),
    ];
    for (client, url, extra, want) in table {
        let (code, text) = get_with(client, url, &extra);
        assert_eq!(code, want, "{url} {extra:?}: {text}\n{}", rv.log.text());
        if want == 403 {
            assert!(text.contains("RBAC: access denied"), "{text}");
        }
    }
    assert!(fe.log.text().contains("trustmesh proxy ready"));
}

/// The TLS handshakes the sidecar in `n` has made with its clients so far (its admin
/// `/metrics`).
fn server_handshakes(n: &Node) -> Option<u64> {
    metric(&n.admin("/metrics"), "trustmesh_tls_handshakes_total ")
}

/// The frontend and the first reviews node on a hub of their own, the registry written and the
/// reviews echo app running; the fields drop in order, the folder last.
struct TwoNodes {
    _app: Proc,
    frontend: Node,
    reviews1: Node,
    _hub: mesh_support::Hub,
    ca: OpensslCa,
    tmp: tempfile::TempDir,
}

fn two_nodes() -> TwoNodes {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("mesh")).unwrap();
    std::fs::write(dir.join("mesh/registry.yaml"), REGISTRY).unwrap();
    let ca = OpensslCa::new(dir, "mesh", TD);
    let hub = hub(NET);
    let frontend = node(&hub, "fe", "198.18.1.10");
    let reviews1 = node(&hub, "rv1", "198.18.1.11");
    let app = echo(&reviews1.ns, "reviews-v1", 9080);
    TwoNodes {
        _app: app,
        frontend,
        reviews1,
        _hub: hub,
        ca,
        tmp,
    }
}

/// A captured keep-alive connection from the app is closed after `timeouts.httpIdle` without
/// a request, as inbound HTTP connections are, so idle apps do not pin the sidecar's sockets.
#[test]
fn an_idle_captured_app_connection_is_closed_after_http_idle() {
    if !netns::usable("mesh_e2e", TOOLS) {
        return;
    }
    let t = two_nodes();
    let (dir, ca, frontend, reviews1) = (t.tmp.path(), &t.ca, &t.frontend, &t.reviews1);
    let mut spec = mesh_support::Spec::new(dir, ca, "frontend", "frontend", "frontend");
    spec.extra = "timeouts: { httpIdle: 1s }\n".into();
    let cert = mesh_support::issue(
        ca,
        frontend,
        "spiffe://cluster.local/ns/frontend/sa/frontend",
    );
    let _fe = mesh_support::start_sidecar(dir, frontend, spec, cert);
    let _rv = sidecar(
        dir,
        ca,
        reviews1,
        "bookinfo",
        "reviews",
        "reviews",
        "ALLOW_ANY",
    );
    // One request on a kept connection, then silence: how long until the sidecar closes it.
    let script = r#"
import socket, time
s = socket.create_connection(("reviews.bookinfo", 9080), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: reviews.bookinfo:9080\r\n\r\n")
got = b""
while b"reviews-v1" not in got:
    got += s.recv(4096)
start = time.monotonic()
rest = s.recv(4096)
print("closed" if rest == b"" else "data", round(time.monotonic() - start, 1))
"#;
    let out = mesh_support::python_as_app(&frontend.ns, script);
    let said = stdout(&out);
    let mut words = said.split_whitespace();
    assert_eq!(words.next(), Some("closed"), "{said}{}", stderr(&out));
    let after: f64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1.0);
    assert!((0.5..5.0).contains(&after), "closed after {after}s: {said}");
}

/// The HTTP version between two sidecars is Istio's choice for the port, seen in the server
/// sidecar's access log (`%PROTOCOL%`): an `HTTP` port keeps HTTP/1.1 by default, even for an
/// app that speaks HTTP/2 (meshConfig `h2UpgradePolicy` defaults to DO_NOT_UPGRADE); a
/// DestinationRule `h2UpgradePolicy: UPGRADE` sends HTTP/2; `useClientProtocol` sends what the
/// app spoke. The rule is added and changed while both sidecars run.
#[test]
fn the_http_version_between_sidecars_follows_the_port_settings() {
    if !netns::usable("mesh_e2e", TOOLS) {
        return;
    }
    let t = two_nodes();
    let (dir, ca, frontend, reviews1) = (t.tmp.path(), &t.ca, &t.frontend, &t.reviews1);
    let _fe = sidecar(
        dir,
        ca,
        frontend,
        "frontend",
        "frontend",
        "frontend",
        "ALLOW_ANY",
    );
    let rv_mesh = dir.join("reviews-mesh.yaml");
    std::fs::write(
        &rv_mesh,
        "trustDomain: cluster.local\naccessLogEncoding: TEXT\n\
         accessLogFormat: \"proto=%PROTOCOL% path=%REQ(:PATH)%\\n\"\n",
    )
    .unwrap();
    let mut spec = mesh_support::Spec::new(dir, ca, "bookinfo", "reviews", "reviews");
    spec.mesh = format!("\"{}\"", rv_mesh.display());
    let cert = mesh_support::issue(
        ca,
        reviews1,
        "spiffe://cluster.local/ns/bookinfo/sa/reviews",
    );
    let mut rv = mesh_support::start_sidecar(dir, reviews1, spec, cert);

    // What the server sidecar logged for a request to `path` over HTTP/2 from the app or not.
    let mut version_seen = |path: &str, h2: bool| -> String {
        let url = format!("http://reviews.bookinfo:9080{path}");
        let extra: &[&str] = if h2 {
            &["--http2-prior-knowledge"]
        } else {
            &[]
        };
        let (code, body) = get_with(&frontend.ns, &url, extra);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("reviews-v1"), "{body}");
        let suffix = format!(" path={path}");
        let mut found = None;
        wait(
            "the server sidecar's log line",
            Duration::from_secs(5),
            || {
                found = rv
                    .access_lines()
                    .iter()
                    .find(|l| l.ends_with(&suffix))
                    .cloned();
                found.is_some()
            },
        );
        let line = found.unwrap();
        line.strip_prefix("proto=")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(version_seen("/h1-default", false), "HTTP/1.1");
    assert_eq!(version_seen("/h2-default", true), "HTTP/1.1");
    // The echo app answers HTTP/1.0 and closes; the sidecars still keep and reuse their
    // connections (each hop answers in its own version), so these six requests reached the
    // server sidecar over fewer connections than requests.
    for i in 0..4 {
        assert_eq!(version_seen(&format!("/again-{i}"), false), "HTTP/1.1");
    }
    let handshakes = server_handshakes(reviews1);
    assert!(handshakes.is_some_and(|n| n < 6), "{handshakes:?}");

    let rule = |http: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{ name: reviews-pool, namespace: bookinfo }}\n\
             spec:\n  host: reviews\n  trafficPolicy:\n    connectionPool: {{ http: {http} }}\n"
        )
    };
    // The client sidecar reloads the folder by itself; ask until the new rule shows.
    mesh_support::write_atomically(
        &dir.join("mesh/pool.yaml"),
        &rule("{ h2UpgradePolicy: UPGRADE }"),
    );
    let mut n = 0;
    wait(
        "HTTP/2 after the UPGRADE rule",
        Duration::from_secs(15),
        || {
            n += 1;
            version_seen(&format!("/upgrade-{n}"), false) == "HTTP/2"
        },
    );
    mesh_support::write_atomically(
        &dir.join("mesh/pool.yaml"),
        &rule("{ useClientProtocol: true }"),
    );
    let mut n = 0;
    wait(
        "HTTP/1.1 after useClientProtocol",
        Duration::from_secs(15),
        || {
            n += 1;
            version_seen(&format!("/client-{n}"), false) == "HTTP/1.1"
        },
    );
    assert_eq!(version_seen("/client-h2", true), "HTTP/2");
    assert_eq!(version_seen("/client-h1", false), "HTTP/1.1");
}

/// Pooled connections to peer sidecars are not carried across a reload: when the client
/// sidecar's trust bundles change so that the server's certificate no longer verifies, every
/// later request is refused, also on the worker threads that held a verified connection from
/// before (Envoy drains a cluster's connection pools when its TLS context changes). The server
/// has its SVID from a second CA of the same trust domain, which both sidecars trust at first;
/// then the client's bundle drops that root. The app keeps its connections (HTTP/1.1), so the
/// server sidecar keeps the pooled ones open: with the HTTP/1.0 echo app it closes each after
/// its answer, and nothing would be pooled to begin with.
#[test]
fn a_reload_retires_the_pooled_connections_to_peers() {
    if !netns::usable("mesh_e2e", TOOLS) {
        return;
    }
    let t = two_nodes();
    let (dir, ca, frontend, reviews1) = (t.tmp.path(), &t.ca, &t.frontend, &t.reviews1);
    let other = OpensslCa::new(dir, "other", TD);
    std::fs::write(
        dir.join("mesh/keep.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: { name: keep, namespace: bookinfo }\n\
         spec:\n  hosts: [ keep.bookinfo.svc.cluster.local ]\n  location: MESH_INTERNAL\n\
         \x20 resolution: STATIC\n  ports: [ { number: 9090, name: http, protocol: HTTP } ]\n\
         \x20 workloadSelector: { labels: { app: reviews } }\n",
    )
    .unwrap();
    let _keep = mesh_support::apps(&reviews1.ns, &["http:9090:keep"]);
    let both = dir.join("both-roots.pem");
    let roots = [&ca.root, &other.root].map(|r| std::fs::read_to_string(r).unwrap());
    std::fs::write(&both, roots.concat()).unwrap();
    let start = |n: &Node, ns: &str, sa: &str, issuer: &OpensslCa| {
        let mut spec = mesh_support::Spec::new(dir, ca, ns, sa, sa);
        spec.bundles = vec![format!("{TD}={}", both.display())];
        let cert = mesh_support::issue(issuer, n, &format!("spiffe://{TD}/ns/{ns}/sa/{sa}"));
        mesh_support::start_sidecar(dir, n, spec, cert)
    };
    let mut fe = start(frontend, "frontend", "frontend", ca);
    let _rv = start(reviews1, "bookinfo", "reviews", &other);
    // One new app connection after another: each worker thread gets some, and pools its own
    // connection to the server sidecar.
    let url = "http://keep.bookinfo:9090/";
    for _ in 0..4 {
        let (code, body) = get(&frontend.ns, url);
        assert_eq!(code, 200, "{body}");
    }
    // Pooled: fewer connections than requests reached the server sidecar.
    let handshakes = server_handshakes(reviews1);
    assert!(handshakes.is_some_and(|n| n < 4), "{handshakes:?}");
    let reloads = fe.log.count("configuration reloaded");
    fe.reconfigure(|s| s.bundles = vec![format!("{TD}={}", ca.root.display())]);
    wait(
        "the client sidecar's reload",
        Duration::from_secs(10),
        || fe.log.count("configuration reloaded") > reloads,
    );
    for _ in 0..4 {
        let (code, body) = get(&frontend.ns, url);
        assert_eq!(
            code, 503,
            "a pooled connection outlived the trust it was verified with: {body}"
        );
    }
}
