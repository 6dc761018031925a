//! End-to-end request authentication and CUSTOM authorization through real `trustmesh proxy`
//! processes on loopback, with third-party peers: JWTs and JWKS made by PyJWT
//! (tests/python/jwt_tool.py) from keys made with `openssl genpkey`, and the Envoy ext_authz
//! server written with Python grpcio (tests/python/ext_authz_server.py). The client is `curl`
//! over mTLS to the server sidecar's inbound port; the app is the test backend, which echoes the
//! `x-test-*` and `x-ext-authz-*` headers it receives.
//!
//! Needs python3 with PyJWT + cryptography and grpcio + grpcio-tools
//! (tests/python/requirements.txt). Without them a test prints a loud SKIP, except under CI
//! (`CI` set), where their absence is a failure.

mod proxy_support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proxy_support::*;
use serde_json::{json, Value};
use trustmesh_testkit::jwt::{jwks, pyjwt as token, Key};
use trustmesh_testkit::tools::{python_has, ExtAuthzServer};

const TD: &str = "cluster.local";
const ISS: &str = "https://issuer.example";
const CLIENT: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// Claims for `sub` from our issuer for the httpbin audience, expiring at `exp` ("now+N").
fn for_httpbin(sub: &str, exp: &str) -> Value {
    json!({"iss": ISS, "sub": sub, "aud": "httpbin", "exp": exp})
}

/// The `x-test-jwt-payload` header the app received, base64url-decoded.
fn payload_seen_by_app(body: &str) -> Value {
    let b64 = body
        .lines()
        .find_map(|l| l.strip_prefix("x-test-jwt-payload="))
        .unwrap_or_else(|| panic!("app did not get x-test-jwt-payload: {body}"));
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).expect("base64url payload")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_authentication_with_pyjwt_tokens() {
    if !python_has("jwt, cryptography", "JWT end-to-end test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let server_cert = ca.issue("server", "spiffe://cluster.local/ns/foo/sa/httpbin");
    let client_cert = ca.issue("client", CLIENT);

    let rsa = Key::generate(dir, "rsa", "rsa-1");
    let ec = Key::generate(dir, "p256", "ec-1");
    // Not in the JWKS, but claiming the RSA key's kid: only the signature can give it away.
    let impostor = Key::generate(dir, "rsa", "impostor").with_kid("rsa-1");
    let set = jwks(&[&rsa, &ec]);

    let pol = policy_dir(dir, "policies");
    write_policy(
        &pol,
        "jwt.yaml",
        &format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: jwt, namespace: foo }}
spec:
  jwtRules:
  - issuer: {ISS}
    audiences: [httpbin, other-aud-ok]
    jwks: '{set}'
    outputPayloadToHeader: x-test-jwt-payload
    fromHeaders:
    - {{ name: Authorization, prefix: "Bearer " }}
    - {{ name: x-jwt-assertion, prefix: "Token " }}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: require-jwt, namespace: foo }}
spec:
  action: ALLOW
  rules:
  - from: [ {{ source: {{ requestPrincipals: ["{ISS}/*"] }} }} ]
    to: [ {{ operation: {{ paths: ["/api/*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/public", "/public/*"] }} }} ]
"#
        ),
    );
    let backend = http_backend("httpbin").await;
    let (inb, admin) = (free_port(), free_port());
    let cfg =
        Cfg::new("foo", "httpbin", &server_cert, &ca, &pol, admin).inbound(inb, backend, "http");
    let mut proxy = Proxy::start(dir, "httpbin", &cfg.yaml(), admin).await;
    let get = |path: &'static str, headers: Vec<String>| {
        let cert = client_cert.clone();
        async move {
            let mut extra: Vec<&str> = Vec::new();
            for h in &headers {
                extra.extend_from_slice(&["-H", h]);
            }
            curl_mtls(inb, path, &cert, &extra).await
        }
    };
    let bearer = |t: &str| vec![format!("Authorization: Bearer {t}")];

    // Valid RS256 and ES256 tokens: 200, and the app gets the verified payload.
    for (key, alg, sub) in [(&rsa, "RS256", "alice"), (&ec, "ES256", "bob")] {
        let t = token(
            key,
            alg,
            json!({"iss": ISS, "sub": sub, "aud": "httpbin", "exp": "now+300", "iat": "now"}),
        );
        let (code, body) = get("/api/items", bearer(&t)).await;
        assert_eq!(code, 200, "{alg}: {body}\n{}", proxy.logs());
        assert!(body.starts_with("httpbin GET /api/items"), "{body}");
        let payload = payload_seen_by_app(&body);
        assert_eq!(payload["sub"], sub, "{payload}");
        assert_eq!(payload["iss"], ISS, "{payload}");
    }
    // An audience list containing one allowed audience is enough.
    let t = token(
        &ec,
        "ES256",
        json!({"iss": ISS, "sub": "carol", "aud": ["x", "other-aud-ok"], "exp": "now+300"}),
    );
    assert_eq!(get("/api/items", bearer(&t)).await.0, 200);

    // Signed by a key outside the JWKS (same kid): 401 with Envoy's message.
    let forged = token(&impostor, "RS256", for_httpbin("alice", "now+300"));
    let (code, body) = get("/api/items", bearer(&forged)).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Jwt verification fails"), "{body}");
    // ...also on a path that needs no token: a bad token is refused wherever it is presented.
    assert_eq!(get("/public", bearer(&forged)).await.0, 401);

    // Expired (well beyond any clock-skew allowance): 401.
    let expired = token(&rsa, "RS256", for_httpbin("alice", "now-600"));
    let (code, body) = get("/api/items", bearer(&expired)).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Jwt is expired"), "{body}");

    // Wrong audience: 401.
    let wrong_aud = token(
        &rsa,
        "RS256",
        json!({"iss": ISS, "sub": "alice", "aud": "someone-else", "exp": "now+300"}),
    );
    let (code, body) = get("/api/items", bearer(&wrong_aud)).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Audiences in Jwt are not allowed"), "{body}");

    // No token: /api/* needs a request principal (403), /public does not (200, no payload).
    let (code, body) = get("/api/x", vec![]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body, "RBAC: access denied");
    let (code, body) = get("/public", vec![]).await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("x-test-jwt-payload="), "{body}");
    // A client cannot smuggle the output header on an unauthenticated request.
    let (code, body) = get("/public", vec!["x-test-jwt-payload: e30".into()]).await;
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("x-test-jwt-payload="), "{body}");

    // fromHeaders with a prefix: `x-jwt-assertion: Token <jwt>` authenticates...
    let t = token(&ec, "ES256", for_httpbin("dave", "now+300"));
    let (code, body) = get("/api/items", vec![format!("x-jwt-assertion: Token {t}")]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(payload_seen_by_app(&body)["sub"], "dave");
    // ...without the prefix the header carries no token for the rule (unauthenticated → 403).
    let (code, _) = get("/api/items", vec![format!("x-jwt-assertion: {t}")]).await;
    assert_eq!(code, 403);
    // ...and a forged token in that header is checked too.
    let (code, _) = get(
        "/api/items",
        vec![format!("x-jwt-assertion: Token {forged}")],
    )
    .await;
    assert_eq!(code, 401);

    // The access log tells authenticated, unauthenticated and denied requests apart.
    let log = proxy.access_log();
    let decisions: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| format!("{} {} {}", v["path"], v["status"], v["decision"]))
        .collect();
    assert!(
        decisions.contains(&"\"/api/x\" 403 \"deny\"".to_string()),
        "{decisions:?}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d == "\"/api/items\" 401 \"unauthenticated\""),
        "{decisions:?}"
    );
    assert!(proxy.alive());
}

// ---------------------------------------------------------------------------------------------
// CUSTOM with the Python grpcio ext_authz server
// ---------------------------------------------------------------------------------------------

fn custom_mesh(authz_port: u16, fail_open: bool) -> String {
    format!(
        "{{ trustDomain: {TD}, extensionProviders: [ {{ name: grpc-authz, envoyExtAuthzGrpc: \
         {{ service: 127.0.0.1, port: {authz_port}, timeout: 0.5s, failOpen: {fail_open}, \
         includeRequestBodyInCheck: {{ maxRequestBytes: 16 }} }} }} ] }}"
    )
}

const CUSTOM_POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext-authz, namespace: foo }
spec:
  action: CUSTOM
  provider: { name: grpc-authz }
  rules:
  - to: [ { operation: { paths: ["/ext/*"] } } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_action_with_grpcio_ext_authz_server() {
    if !python_has("grpc, grpc_tools", "ext_authz end-to-end test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let client_cert = ca.issue("client", CLIENT);
    let mut authz = ExtAuthzServer::start(dir);
    let backend = http_backend("app").await;

    // Two sidecars that differ only in the provider's failOpen.
    let mut proxies = Vec::new();
    for (name, fail_open) in [("closed", false), ("open", true)] {
        let cert = ca.issue(name, &format!("spiffe://{TD}/ns/foo/sa/{name}"));
        let pol = policy_dir(dir, &format!("policies-{name}"));
        write_policy(&pol, "custom.yaml", CUSTOM_POLICY);
        let (inb, admin) = (free_port(), free_port());
        let cfg = Cfg {
            mesh: custom_mesh(authz.port, fail_open),
            ..Cfg::new("foo", name, &cert, &ca, &pol, admin).inbound(inb, backend, "http")
        };
        proxies.push((Proxy::start(dir, name, &cfg.yaml(), admin).await, inb));
    }
    let (closed, open) = (proxies[0].1, proxies[1].1);
    let req = |port: u16, path: &'static str, headers: &'static [&'static str]| {
        let cert = client_cert.clone();
        async move {
            let mut extra: Vec<&str> = vec!["-i"];
            for h in headers {
                extra.extend_from_slice(&["-H", h]);
            }
            curl_mtls(port, path, &cert, &extra).await
        }
    };

    // Allow: the headers the server adds reach the app; the server saw our SPIFFE ID and path.
    let (code, body) = req(closed, "/ext/allowed?q=1", &["x-ext-authz: allow"]).await;
    assert_eq!(code, 200, "{body}\n{}", proxies[0].0.logs());
    assert!(body.contains("app GET /ext/allowed?q=1"), "{body}");
    assert!(body.contains("x-ext-authz-check-result=allowed"), "{body}");
    assert!(
        body.contains(&format!("x-ext-authz-seen-principal={CLIENT}")),
        "{body}"
    );
    let seen = authz.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["source_principal"], CLIENT, "{seen:?}");
    assert_eq!(seen[0]["path"], "/ext/allowed?q=1", "{seen:?}");
    assert_eq!(seen[0]["method"], "GET", "{seen:?}");
    assert_eq!(
        seen[0]["destination_principal"], "spiffe://cluster.local/ns/foo/sa/closed",
        "{seen:?}"
    );

    // Deny: the server's denied_response (status, header, body) is what the client gets, and
    // the app is never called.
    let (code, body) = req(
        closed,
        "/ext/secret",
        &["x-ext-authz: deny", "x-ext-authz-deny-status: 451"],
    )
    .await;
    assert_eq!(code, 451, "{body}");
    assert!(body.contains("denied by ext_authz: /ext/secret"), "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-ext-authz-check-result: denied"),
        "{body}"
    );
    assert!(!body.contains("app GET"), "{body}");

    // includeRequestBodyInCheck: the server gets the body read ahead (a longer one is a 413).
    let posted = |body: &'static str| {
        let cert = client_cert.clone();
        async move {
            let extra = ["-H", "x-ext-authz: allow", "-d", body];
            curl_mtls(closed, "/ext/post", &cert, &extra).await
        }
    };
    let (code, body) = posted("grpc-body").await;
    assert_eq!(code, 200, "{body}");
    let last = authz.seen().pop().unwrap();
    assert_eq!(last["body"], "grpc-body", "{last}");
    assert_eq!(
        last["headers"]["x-envoy-auth-partial-body"], "false",
        "{last}"
    );
    assert_eq!(posted("seventeen-bytes!!").await.0, 413);

    // Paths the CUSTOM policy does not select are not sent to the authorizer.
    let before = authz.seen().len();
    let (code, body) = req(closed, "/other", &[]).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(authz.seen().len(), before);

    // The server sleeps past the provider's 0.5 s timeout: failOpen false → 403,
    // failOpen true → the request goes on to the app.
    let sleepy: &'static [&'static str] = &["x-ext-authz: allow", "x-ext-authz-sleep-ms: 3000"];
    let started = Instant::now();
    let (code, body) = req(closed, "/ext/slow", sleepy).await;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("app GET"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "timeout not applied: {:?}",
        started.elapsed()
    );
    let (code, body) = req(open, "/ext/slow", sleepy).await;
    assert_eq!(code, 200, "{body}\n{}", proxies[1].0.logs());
    assert!(body.contains("app GET /ext/slow"), "{body}");
    assert!(
        !body.contains("x-ext-authz-check-result"),
        "a timed-out check adds nothing: {body}"
    );
    // The fail-open sidecar still obeys a decision that arrives in time.
    let (code, _) = req(open, "/ext/no", &["x-ext-authz: deny"]).await;
    assert_eq!(code, 403);

    // The authorizer goes down: failOpen false → 403, failOpen true → 200.
    authz.proc.kill();
    let (code, body) = req(closed, "/ext/allowed", &["x-ext-authz: allow"]).await;
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("app GET"), "{body}");
    let (code, body) = req(open, "/ext/allowed", &["x-ext-authz: allow"]).await;
    assert_eq!(code, 200, "{body}");

    for (p, _) in &mut proxies {
        assert!(p.alive(), "{}", p.logs());
    }
}
