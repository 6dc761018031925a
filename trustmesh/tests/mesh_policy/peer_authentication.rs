//! PeerAuthentication on captured ports: STRICT, PERMISSIVE with port-level STRICT and
//! DISABLE, mesh-wide STRICT from the root namespace.

use std::time::Duration;

use super::*;
use crate::mesh_support::*;

/// The `modes` workload's PeerAuthentications (proxy_e2e::permissive_accepts_both_and_port_
/// level_disable's).
pub(super) const MODES: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: modes }\nspec:\n  mtls: { mode: PERMISSIVE }\n---\n\
apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: httpbin, namespace: modes }\nspec:\n  selector: { matchLabels: { app: httpbin } }\n  mtls: { mode: PERMISSIVE }\n  portLevelMtls:\n    8081: { mode: STRICT }\n    8082: { mode: DISABLE }\n    8025: { mode: DISABLE }\n";

#[test]
fn peer_authentication_modes_on_captured_ports() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let (sleep_at, strict_at, modes_at) = (NET.addr(SLEEP), NET.addr(11), NET.addr(12));
    let registry = [
        workload_entry("sleep", "foo", &sleep_at, "sleep", "sleep"),
        workload_entry("httpbin", "strict", &strict_at, "httpbin", "httpbin"),
        workload_entry("httpbin", "modes", &modes_at, "httpbin", "httpbin"),
        service_entry("sleep", "foo", "sleep", &[(8080, "HTTP")]),
        service_entry("httpbin", "strict", "httpbin", &[(8080, "HTTP")]),
        service_entry(
            "httpbin",
            "modes",
            "httpbin",
            &[
                (8080, "HTTP"),
                (8081, "HTTP"),
                (8082, "HTTP"),
                (8025, "TCP"),
            ],
        ),
    ]
    .concat();
    let (tmp, ca, hub) = setup(&registry);
    let dir = tmp.path();
    policy(dir, "strict.yaml", &strict_in("strict"));
    policy(dir, "modes.yaml", MODES);
    let rogue = OpensslCa::new(dir, "rogue", TD);
    let sleep_cert = ca.issue("curl-sleep", &id("foo", "sleep"));
    let rogue_cert = rogue.issue("curl-rogue", &id("foo", "sleep"));

    let sleep = node(&hub, "sleep", &sleep_at);
    let strict = node(&hub, "strict", &strict_at);
    let modes = node(&hub, "modes", &modes_at);
    let out = node(&hub, "out", &NET.addr(OUTSIDE));
    let _apps = [
        apps(&sleep.ns, &["http:8080:sleep"]),
        apps(&strict.ns, &["http:8080:httpbin"]),
        apps(
            &modes.ns,
            &[
                "http:8080:permissive",
                "http:8081:strict",
                "http:8082:disable",
                "greeter:8025",
            ],
        ),
    ];
    let _sleep = sidecar(dir, &ca, &sleep, "foo", "sleep", "sleep", "ALLOW_ANY");
    let mut strict_sc = sidecar(
        dir,
        &ca,
        &strict,
        "strict",
        "httpbin",
        "httpbin",
        "ALLOW_ANY",
    );
    let modes_sc = sidecar(dir, &ca, &modes, "modes", "httpbin", "httpbin", "ALLOW_ANY");

    // STRICT (proxy_e2e::strict_mtls_refuses_plaintext_and_untrusted_ca): plaintext, a client
    // certificate of a CA outside the bundle, and no client certificate are refused.
    let strict_url = |scheme: &str, path: &str| format!("{scheme}://{strict_at}:8080{path}");
    let (code, text) = get_as_root(&out.ns, &strict_url("http", "/ip"), &[]);
    assert_eq!(code, 0, "plaintext must get no HTTP response: {text}");
    let (code, text) = get_mtls(&out.ns, &strict_url("https", "/ip"), &rogue_cert, &[]);
    assert_eq!(code, 0, "untrusted CA: {text}");
    let (code, text) = get_as_root(&out.ns, &strict_url("https", "/ip"), &["-k"]);
    assert_eq!(code, 0, "no client certificate: {text}");

    // A mesh certificate works over HTTP/2 and HTTP/1.1; the app sees the caller in XFCC.
    let (code, first) = get_mtls(&out.ns, &strict_url("https", "/headers"), &sleep_cert, &[]);
    assert_eq!(code, 200, "{first}\n{}", strict_sc.log.text());
    assert!(first.starts_with("HTTP/2 200"), "{first}");
    let xfcc = seen_header(&first, "x-forwarded-client-cert").unwrap_or_default();
    assert!(
        xfcc.contains(&format!("URI={}", id("foo", "sleep")))
            && xfcc.contains(&format!("By={}", id("strict", "httpbin")))
            && xfcc.contains("Hash="),
        "{first}"
    );
    assert!(body(&first).starts_with("httpbin GET /headers"), "{first}");
    let (code, text) = get_mtls(
        &out.ns,
        &strict_url("https", "/h1"),
        &sleep_cert,
        &["--http1.1"],
    );
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // ... and so does the unmodified app behind its own sidecar, calling by name (auto mTLS).
    let (code, text) = get(&sleep.ns, "http://httpbin.strict:8080/headers");
    assert_eq!(code, 200, "{text}");
    let xfcc = seen_header(&text, "x-forwarded-client-cert").unwrap_or_default();
    assert!(
        xfcc.contains(&format!("URI={}", id("foo", "sleep"))),
        "{text}"
    );

    // A forged XFCC from the client is replaced, not passed through, on either path.
    let forged = ["-H", "x-forwarded-client-cert: URI=spiffe://evil/ns/x/sa/y"];
    let (code, text) = get_mtls(
        &out.ns,
        &strict_url("https", "/forge"),
        &sleep_cert,
        &forged,
    );
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("spiffe://evil"), "{text}");
    let (code, text) = get_with(&sleep.ns, "http://httpbin.strict:8080/forge", &forged);
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("spiffe://evil"), "{text}");

    // openssl s_client: with the mesh certificate the request goes through, without one not.
    let s_addr = format!("{strict_at}:8080");
    let said = s_client(&out.ns, &s_addr, Some(&sleep_cert));
    assert!(said.contains("httpbin GET /via-s-client"), "{said}");
    let said = s_client(&out.ns, &s_addr, None);
    assert!(!said.contains("httpbin GET"), "{said}");

    // TLS 1.3 preferred, 1.2 accepted, 1.1 refused.
    let said = tls_version(&out.ns, &s_addr, &sleep_cert, "-tls1_3");
    assert!(said.contains("Protocol version: TLSv1.3"), "{said}");
    let said = tls_version(&out.ns, &s_addr, &sleep_cert, "-tls1_2");
    assert!(said.contains("Protocol version: TLSv1.2"), "{said}");
    let said = tls_version(&out.ns, &s_addr, &sleep_cert, "-tls1_1");
    assert!(!said.contains("Protocol version"), "{said}");

    // The access log has the caller's principal and the decision; the request id it names is
    // the one the app got.
    let line = access_line(&mut strict_sc, "/headers", |v| v["path"] == "/headers");
    assert_eq!(line["source_principal"], id("foo", "sleep"), "{line}");
    assert_eq!(line["decision"], "allow", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    let rid = line["request_id"].as_str().expect("request_id");
    assert_eq!(rid.len(), 36, "{rid}");
    assert_eq!(seen_header(&first, "x-request-id"), Some(rid), "{first}");

    // The refusals are counted; the admin port tells who the sidecar is.
    let m = strict.admin("/metrics");
    assert!(
        metric(&m, "trustmesh_tls_handshake_errors_total").unwrap_or(0) >= 2,
        "{m}"
    );
    assert!(m.contains("reason=\"mtls_mode_mismatch\""), "{m}");
    assert!(m.contains("trustmesh_cert_expiry_seconds "), "{m}");
    let certs: Value = serde_json::from_str(&strict.admin("/certs")).unwrap();
    assert_eq!(certs["workload"]["spiffeId"], id("strict", "httpbin"));

    // PERMISSIVE with port-level STRICT and DISABLE
    // (proxy_e2e::permissive_accepts_both_and_port_level_disable).
    let url = |scheme: &str, port: u16, path: &str| format!("{scheme}://{modes_at}:{port}{path}");
    let (code, text) = get_as_root(&out.ns, &url("http", 8080, "/a"), &[]);
    assert_eq!(code, 200, "{text}\n{}", modes_sc.log.text());
    assert!(
        !text.contains("x-forwarded-client-cert"),
        "plaintext carries no XFCC: {text}"
    );
    let (code, text) = get_mtls(&out.ns, &url("https", 8080, "/b"), &sleep_cert, &[]);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains(&format!("URI={}", id("foo", "sleep"))),
        "{text}"
    );
    // Port-level STRICT.
    assert_eq!(get_as_root(&out.ns, &url("http", 8081, "/c"), &[]).0, 0);
    assert_eq!(
        get_mtls(&out.ns, &url("https", 8081, "/c"), &sleep_cert, &[]).0,
        200
    );
    // Port-level DISABLE: plaintext only; TLS is not terminated.
    let (code, text) = get_as_root(&out.ns, &url("http", 8082, "/d"), &[]);
    assert_eq!(code, 200, "{text}");
    assert!(body(&text).starts_with("disable GET /d"), "{text}");
    assert_eq!(
        get_mtls(&out.ns, &url("https", 8082, "/d"), &sleep_cert, &[]).0,
        0
    );
    // The mesh client: mTLS to the PERMISSIVE and STRICT ports. (To the DISABLE port: see
    // finding_auto_mtls_ignores_the_endpoints_port_level_disable.)
    for (port, path) in [(8080, "/e"), (8081, "/f")] {
        let (code, text) = get(&sleep.ns, &format!("http://httpbin.modes:{port}{path}"));
        assert_eq!(code, 200, "{port}: {text}");
        assert!(
            text.contains(&format!("URI={}", id("foo", "sleep"))),
            "{port}: {text}"
        );
    }
    // A server-first protocol on a DISABLE port: the app's greeting arrives although the
    // client has sent nothing.
    let greeter = format!("{modes_at}:8025");
    let greeting = out.ns.run(move || {
        let mut s = TcpStream::connect(&greeter).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).map(|_| buf.to_vec())
    });
    assert_eq!(
        greeting.expect("the greeting must arrive without client data"),
        b"220 hello\r\n"
    );

    // Mesh-wide STRICT from the root namespace
    // (proxy_e2e::plug_in_ca_chains_with_intermediates_from_the_ca_cli): applies to a workload
    // without a PeerAuthentication of its own (sleep), not to one whose own says otherwise.
    let sleep_url = format!("http://{sleep_at}:8080/");
    assert_eq!(get_as_root(&out.ns, &sleep_url, &[]).0, 200);
    policy(dir, "root.yaml", &strict_in("istio-system"));
    wait("mesh-wide STRICT", Duration::from_secs(10), || {
        get_as_root(&out.ns, &sleep_url, &[]).0 == 0
    });
    assert_eq!(get_as_root(&out.ns, &url("http", 8080, "/h"), &[]).0, 200);
}
