//! Istio's CUSTOM action through real `trustmesh proxy` processes on loopback, against
//! authorizers we did not write:
//! - `envoyExtAuthzHttp` with nginx as the authorizer (its `location` rules, written here, are
//!   the policy: 200 with headers to allow, 401/403 with a body and headers to deny, a 5xx and a
//!   silent upstream for errors), the client `curl`, the app a test backend that echoes the
//!   headers and body it got;
//! - `envoyExtAuthzGrpc` on a TCP port (Envoy's network ext_authz filter) with the Python grpcio
//!   server (tests/python/ext_authz_server.py), whose servicer admits connections by peer
//!   principal.
//!
//! Needs nginx (`nginx-light`) and python3 with grpcio + grpcio-tools. Without them a test
//! prints a loud SKIP, except under CI (`CI` set), where their absence is a failure.

mod proxy_support;

use std::time::{Duration, Instant};

use proxy_support::*;
use serde_json::Value;
use trustmesh_testkit::http::body_backend;
use trustmesh_testkit::tools::{nginx_available, python_has, ExtAuthzServer, Nginx};

const TD: &str = "cluster.local";
const CLIENT: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// The access-log line of `proxy` that `pick` selects, waited for (≤5 s): lines are written
/// when a request or connection ends, which may be just after the client has its answer.
async fn log_line(proxy: &Proxy, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = proxy.access_log();
        let found = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| pick(v));
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {what}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The reason in the access-log line of the request for `path`.
async fn reason_for(proxy: &Proxy, path: &str) -> String {
    let line = log_line(proxy, path, |v| v["path"] == path).await;
    line["reason"].as_str().unwrap_or_default().to_string()
}

/// nginx's rules: the check path is `/check` + the client's path (the provider's pathPrefix).
fn nginx_rules(port: u16, silent: u16) -> String {
    format!(
        r#"
log_format checks '$request_method $request_uri host=$host role=$http_x_role other=$http_x_other auth=$http_authorization extra=$http_x_extra len=$content_length partial=$http_x_envoy_auth_partial_body body=$request_body';
access_log checks.log checks;
client_body_buffer_size 64k;
map $http_x_role $role_ok {{ admin 1; default 0; }}
server {{
  listen 127.0.0.1:{port};
  location /check/ext/allow {{
    add_header x-user alice;
    add_header x-unlisted nope;
    add_header x-auth-said yes;
    add_header x-envoy-auth-headers-to-remove x-drop-me;
    return 200 "allowed\n";
  }}
  location /check/ext/role {{
    if ($role_ok) {{ return 200; }}
    add_header x-denied-why "admins only" always;
    return 401 "who are you?\n";
  }}
  location /check/ext/body {{ proxy_pass http://127.0.0.1:{port}/inner; }}
  location = /inner {{ access_log off; return 200; }}
  location /check/ext/broken {{ return 503; }}
  location /check/ext/slow {{ proxy_pass http://127.0.0.1:{silent}; }}
  location / {{
    add_header x-denied-why "not on the list" always;
    add_header x-internal secret always;
    return 403 "denied by nginx\n";
  }}
}}
"#
    )
}

fn http_mesh(port: u16, open: bool) -> String {
    format!(
        "{{ trustDomain: {TD}, extensionProviders: [ {{ name: nginx-authz, envoyExtAuthzHttp: {{ \
         service: 127.0.0.1, port: {port}, timeout: 1s, pathPrefix: /check, failOpen: {open}, \
         statusOnError: \"503\", includeRequestHeadersInCheck: [x-role], \
         includeAdditionalHeadersInCheck: {{ x-extra: fixed }}, \
         headersToUpstreamOnAllow: [x-user, x-absent], headersToDownstreamOnAllow: [\"x-auth-*\"], \
         headersToDownstreamOnDeny: [x-denied-why], \
         includeRequestBodyInCheck: {{ maxRequestBytes: 64, allowPartialMessage: {open} }} }} }} ] }}"
    )
}

fn custom_policy(provider: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: ext-authz, namespace: foo }}\nspec:\n  action: CUSTOM\n  \
         provider: {{ name: {provider} }}\n  rules:\n{rules}"
    )
}

/// The line of nginx's check log for `uri`.
fn checked(nginx: &Nginx, uri: &str) -> String {
    let log = nginx.file("checks.log");
    log.lines()
        .find(|l| l.contains(&format!(" {uri} ")))
        .unwrap_or_else(|| panic!("nginx was not asked about {uri}:\n{log}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_http_with_nginx_as_the_authorizer() {
    if !nginx_available("ext_authz HTTP end-to-end test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let client = ca.issue("client", CLIENT);
    let (authz_port, silent) = (free_port(), silent_backend().await);
    let mut nginx = Nginx::start(dir, &nginx_rules(authz_port, silent), authz_port);
    let app = body_backend().await;

    // Two sidecars that differ in failOpen and allowPartialMessage.
    let mut proxies = Vec::new();
    for (name, open) in [("closed", false), ("open", true)] {
        let cert = ca.issue(name, &format!("spiffe://{TD}/ns/foo/sa/{name}"));
        let pol = policy_dir(dir, &format!("policies-{name}"));
        let rules = "  - to: [ { operation: { paths: [\"/ext/*\"] } } ]\n";
        write_policy(&pol, "custom.yaml", &custom_policy("nginx-authz", rules));
        let (inb, admin) = (free_port(), free_port());
        let cfg = Cfg {
            mesh: http_mesh(authz_port, open),
            ..Cfg::new("foo", name, &cert, &ca, &pol, admin).inbound(inb, app, "http")
        };
        proxies.push((Proxy::start(dir, name, &cfg.yaml(), admin).await, inb));
    }
    let (closed, open) = (proxies[0].1, proxies[1].1);
    let req = |port: u16, path: &'static str, args: Vec<String>| {
        let cert = client.clone();
        async move {
            let mut extra = vec!["-i"];
            extra.extend(args.iter().map(String::as_str));
            curl_mtls(port, path, &cert, &extra).await
        }
    };
    let h = |pairs: &[&str]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|p| ["-H".to_string(), p.to_string()])
            .collect()
    };
    let lower = |s: &str| s.to_ascii_lowercase();

    // Allow: only the listed headers go upstream (overwriting the client's), the listed ones to
    // the client; the authorizer's removal list applies; nginx saw Authorization, the fixed
    // extra header, a zero Content-Length, and not the unlisted client header.
    let sent = h(&[
        "x-user: forged",
        "x-drop-me: 1",
        "x-other: o",
        "Authorization: Bearer t0k",
    ]);
    let (code, body) = req(closed, "/ext/allow?q=1", sent).await;
    assert_eq!(code, 200, "{body}\n{}", proxies[0].0.logs());
    assert!(body.contains("GET /ext/allow?q=1\n"), "{body}");
    assert!(
        body.contains("x-user: alice\n") && !body.contains("forged"),
        "{body}"
    );
    assert!(
        !body.contains("x-unlisted") && !body.contains("x-drop-me"),
        "{body}"
    );
    assert!(
        body.contains("x-other: o"),
        "the app still gets the client's headers: {body}"
    );
    assert!(lower(&body).contains("x-auth-said: yes"), "{body}");
    let line = checked(&nginx, "/check/ext/allow?q=1");
    assert!(line.starts_with("GET "), "{line}");
    for part in [
        "host=127.0.0.1",
        "other=-",
        "auth=Bearer t0k",
        "extra=fixed",
        "len=0",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }

    // Deny: nginx's status and body; of its headers only the listed one reaches the client.
    let (code, body) = req(closed, "/ext/nope", vec![]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.ends_with("\r\n\r\ndenied by nginx\n"), "{body}");
    assert!(
        lower(&body).contains("x-denied-why: not on the list"),
        "{body}"
    );
    assert!(!lower(&body).contains("x-internal"), "{body}");
    assert!(
        !body.contains("GET /ext/nope"),
        "the app must not be called: {body}"
    );

    // includeRequestHeadersInCheck: the x-role header decides.
    let (code, body) = req(closed, "/ext/role", h(&["x-role: admin"])).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = req(closed, "/ext/role", h(&["x-role: guest"])).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.ends_with("who are you?\n") && lower(&body).contains("x-denied-why: admins only"));

    // Paths the CUSTOM policy does not select are not checked (and pathPrefix put /check first).
    let (code, body) = req(closed, "/other", vec![]).await;
    assert_eq!(code, 200, "{body}");
    assert!(!nginx.file("checks.log").contains("/check/other"));

    // includeRequestBodyInCheck: nginx sees the body, the app gets it unchanged.
    let (code, body) = req(closed, "/ext/body", vec!["-d".into(), "hello-body".into()]).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("POST /ext/body\n") && body.contains("body=hello-body\n"),
        "{body}"
    );
    let line = checked(&nginx, "/check/ext/body");
    assert!(
        line.contains("len=10 partial=false body=hello-body"),
        "{line}"
    );
    // Longer than maxRequestBytes: 413 without allowPartialMessage, the app never called...
    let long: String = (0..100)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let (code, body) = req(closed, "/ext/body", vec!["-d".into(), long.clone()]).await;
    assert_eq!(code, 413, "{body}");
    // ...and with it, nginx sees the first 64 bytes (marked partial), the app all 100.
    let (code, body) = req(open, "/ext/body", vec!["-d".into(), long.clone()]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("body={long}\n")), "{body}");
    let log = nginx.file("checks.log");
    let partial = format!("len=64 partial=true body={}", &long[..64]);
    assert!(
        log.lines().any(|l| l.ends_with(&partial)),
        "{partial} in\n{log}"
    );

    // Errors: a 5xx answer and no answer within the 1s timeout give statusOnError (503) when
    // closed; open lets the request through to the app.
    let (code, body) = req(closed, "/ext/broken", vec![]).await;
    assert_eq!(code, 503, "{body}");
    let started = Instant::now();
    let (code, body) = req(closed, "/ext/slow", vec![]).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (code, body) = req(open, "/ext/slow", vec![]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("GET /ext/slow"), "{body}");

    // Every refusal and fail-open says why in the access log, in words.
    let closed_proxy = &proxies[0].0;
    let why = reason_for(closed_proxy, "/ext/nope").await;
    assert!(
        why.contains("CUSTOM provider nginx-authz denied the request with 403"),
        "{why}"
    );
    let why = reason_for(closed_proxy, "/ext/broken").await;
    assert!(
        why.contains("answered 503 Service Unavailable") && why.contains("statusOnError 503"),
        "{why}"
    );
    let why = reason_for(closed_proxy, "/ext/slow").await;
    assert!(
        why.contains("did not answer within the 1s timeout"),
        "{why}"
    );
    let line = log_line(closed_proxy, "the 413", |v| v["status"] == 413).await;
    assert!(
        line["reason"].as_str().unwrap().contains("maxRequestBytes"),
        "{line}"
    );
    let why = reason_for(&proxies[1].0, "/ext/slow").await;
    assert!(why.contains("failOpen let the request through"), "{why}");

    // The authorizer goes away: statusOnError when closed, through when open.
    nginx.proc.kill();
    let (code, body) = req(closed, "/ext/allow", vec![]).await;
    assert_eq!(code, 503, "{body}");
    let (code, body) = req(open, "/ext/allow", vec![]).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("x-user: alice"),
        "nothing from an absent authorizer: {body}"
    );

    for (p, _) in &mut proxies {
        assert!(p.alive(), "{}", p.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ext_authz_on_a_tcp_port_with_grpcio() {
    if !python_has("grpc, grpc_tools", "network ext_authz end-to-end test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let allowed = ca.issue("allowed", CLIENT);
    let other = ca.issue("other", "spiffe://cluster.local/ns/foo/sa/other");
    let mut authz = ExtAuthzServer::start_allowing(dir, &[CLIENT]);
    // The TCP port carries HTTP bytes, so curl can tell a relayed connection from a closed one;
    // the proxy treats them as opaque bytes.
    let app = http_backend("app").await;

    let mut proxies = Vec::new();
    for (name, open) in [("closed", false), ("open", true)] {
        let cert = ca.issue(name, &format!("spiffe://{TD}/ns/foo/sa/{name}"));
        let pol = policy_dir(dir, &format!("policies-{name}"));
        write_policy(
            &pol,
            "custom.yaml",
            &custom_policy("grpc-authz", "  - {}\n"),
        );
        let (inb, admin) = (free_port(), free_port());
        let mesh = format!(
            "{{ trustDomain: {TD}, extensionProviders: [ {{ name: grpc-authz, envoyExtAuthzGrpc: \
             {{ service: 127.0.0.1, port: {}, timeout: 1s, failOpen: {open} }} }} ] }}",
            authz.port
        );
        let cfg = Cfg {
            mesh,
            ..Cfg::new("foo", name, &cert, &ca, &pol, admin).inbound(inb, app, "tcp")
        };
        proxies.push((Proxy::start(dir, name, &cfg.yaml(), admin).await, inb));
    }
    let (closed, open) = (proxies[0].1, proxies[1].1);

    // The provider admits the principal it knows: the connection is relayed.
    let (code, body) = curl_mtls(closed, "/tcp", &allowed, &[]).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "app GET /tcp\nxfcc: \nrid: \n"),
        "{}",
        proxies[0].0.logs()
    );
    // Another principal: closed before a byte reaches the app.
    let (code, body) = curl_mtls(closed, "/tcp", &other, &[]).await;
    assert_eq!(code, 0, "{body}");

    // One check per connection, with the connection's attributes only: no HTTP request at all,
    // but both peers' SPIFFE IDs and addresses.
    let seen = authz.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s["has_request"], false, "{s}");
        assert_eq!(s["has_http"], false, "{s}");
        assert_eq!(s["method"], "", "{s}");
        assert_eq!(
            s["destination_principal"], "spiffe://cluster.local/ns/foo/sa/closed",
            "{s}"
        );
        assert_eq!(s["source_address"], "127.0.0.1", "{s}");
    }
    assert_eq!(seen[0]["source_principal"], CLIENT);
    assert_eq!(
        seen[1]["source_principal"],
        "spiffe://cluster.local/ns/foo/sa/other"
    );

    let closed_proxy = &proxies[0].0;
    let denied = log_line(closed_proxy, "the refused connection", |v| {
        v["protocol"] == "tcp" && v["source_principal"] == "spiffe://cluster.local/ns/foo/sa/other"
    })
    .await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    let why = denied["reason"].as_str().unwrap();
    assert!(
        why.contains("CUSTOM provider grpc-authz denied the connection"),
        "{why}"
    );

    // The authorizer goes away: closed refuses even the known principal; open relays.
    authz.proc.kill();
    let (code, _) = curl_mtls(closed, "/tcp-down", &allowed, &[]).await;
    assert_eq!(code, 0);
    let (code, body) = curl_mtls(open, "/tcp-down", &allowed, &[]).await;
    assert_eq!(code, 200, "{body}");
    let line = log_line(&proxies[1].0, "the fail-open connection", |v| {
        v["protocol"] == "tcp" && v["reason"].as_str().is_some_and(|r| r.contains("failOpen"))
    })
    .await;
    assert_eq!(line["decision"], "allow", "{line}");

    for (p, _) in &mut proxies {
        assert!(p.alive(), "{}", p.logs());
    }
}
