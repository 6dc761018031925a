//! RequestAuthentication and CUSTOM on captured requests: PyJWT and our own tokens, remote
//! JWKS fetched by the sidecar, and the Python grpcio authorizer in a namespace of its own.

use std::time::{Duration, Instant};

use super::*;
use crate::mesh_support::*;

const ISS: &str = "https://issuer.example";
/// authn_custom_wiring.rs's issuer (it is `https://issuer.example` there too; another name
/// here, as both rules select the same workload).
const WIRING_ISS: &str = "https://wiring.example";
/// Where the JWKS server and the authorizer listen: a namespace without a sidecar.
const SERVICES: u8 = 40;
const JWKS_PORT: u16 = 8088;

/// proxy_authn_e2e::request_authentication_with_pyjwt_tokens's policies, for the `jwt`
/// namespace.
fn pyjwt_policies(set: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: jwt, namespace: jwt }}
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
metadata: {{ name: require-jwt, namespace: jwt }}
spec:
  action: ALLOW
  rules:
  - from: [ {{ source: {{ requestPrincipals: ["{ISS}/*"] }} }} ]
    to: [ {{ operation: {{ paths: ["/api/*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/public", "/public/*"] }} }} ]
"#
    )
}

/// authn_custom_wiring.rs's policies (its JWT part), for the `jwt` namespace; and a remote
/// JWKS, one that cannot be fetched and one that cannot be used (jwt_jwks_uri.rs,
/// snapshot_errors.rs::unusable_jwt_rules_reject_tokens).
fn wiring_policies(jwks: &str, services: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: wiring, namespace: jwt }}
spec:
  jwtRules:
  - issuer: {WIRING_ISS}
    audiences: [httpbin]
    jwks: '{jwks}'
    outputClaimToHeaders:
    - {{ header: x-jwt-sub, claim: sub }}
    spaceDelimitedClaims: [roles]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: allow, namespace: jwt }}
spec:
  action: ALLOW
  rules:
  - from: [ {{ source: {{ requestPrincipals: ["{WIRING_ISS}/alice"] }} }} ]
    to: [ {{ operation: {{ paths: ["/jwt/*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/open"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/roles/*"] }} }} ]
    when: [ {{ key: "request.auth.claims[roles]", values: [admin] }} ]
  - to: [ {{ operation: {{ paths: ["/roles-whole/*"] }} }} ]
    when: [ {{ key: "request.auth.claims[roles]", values: ["editor admin"] }} ]
  - to: [ {{ operation: {{ paths: ["/put-only"] }} }} ]
    when: [ {{ key: "request.headers[:method]", values: [PUT] }} ]
  - from: [ {{ source: {{ requestPrincipals: ["https://remote.example/*"] }} }} ]
    to: [ {{ operation: {{ paths: ["/remote/*"] }} }} ]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: remote, namespace: jwt }}
spec:
  jwtRules:
  - issuer: https://remote.example
    jwksUri: http://{services}:{JWKS_PORT}/jwks.json
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: down, namespace: jwt }}
spec:
  jwtRules:
  - issuer: https://down.example
    jwksUri: http://{services}:{}/jwks.json
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: unusable, namespace: jwt }}
spec:
  jwtRules:
  - issuer: https://unusable.example
    jwks: '{{"keys":[]}}'
"#,
        JWKS_PORT + 1
    )
}

/// proxy_authn_e2e's CUSTOM policy, for the `ext` namespace.
const CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext-authz, namespace: ext }
spec:
  action: CUSTOM
  provider: { name: grpc-authz }
  rules:
  - to: [ { operation: { paths: ["/ext/*"] } } ]
"#;

/// The `x-test-jwt-payload` header the app received, base64url-decoded.
fn payload_seen_by_app(text: &str) -> Value {
    use base64::Engine;
    let b64 = seen_header(text, "x-test-jwt-payload")
        .unwrap_or_else(|| panic!("the app did not get x-test-jwt-payload: {text}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .expect("base64url payload");
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn request_authentication_and_custom_on_captured_requests() {
    use trustmesh_testkit::jwt::{jwks, pyjwt, Key, Signer};
    use trustmesh_testkit::tools::{python_has, ExtAuthzServer};
    if !netns::usable("mesh_policy_e2e", TOOLS)
        || !python_has("jwt, cryptography", "the JWT tests in capture mode")
        || !python_has("grpc, grpc_tools", "the CUSTOM tests in capture mode")
    {
        return;
    }
    let (sleep_at, jwt_at, closed_at, open_at, services_at) = (
        NET.addr(SLEEP),
        NET.addr(11),
        NET.addr(12),
        NET.addr(13),
        NET.addr(SERVICES),
    );
    let registry = [
        workload_entry("sleep", "foo", &sleep_at, "sleep", "sleep"),
        workload_entry("httpbin", "jwt", &jwt_at, "httpbin", "httpbin"),
        workload_entry("closed", "ext", &closed_at, "closed", "closed"),
        workload_entry("open", "ext", &open_at, "open", "open"),
        service_entry("httpbin", "jwt", "httpbin", &[(8080, "HTTP")]),
        service_entry("closed", "ext", "closed", &[(8080, "HTTP")]),
        service_entry("open", "ext", "open", &[(8080, "HTTP")]),
    ]
    .concat();
    let (tmp, ca, hub) = setup(&registry);
    let dir = tmp.path();
    let rsa = Key::generate(dir, "rsa", "rsa-1");
    let ec = Key::generate(dir, "p256", "ec-1");
    // Not in the JWKS, but claiming the RSA key's kid: only the signature can give it away.
    let impostor = Key::generate(dir, "rsa", "impostor").with_kid("rsa-1");
    policy(dir, "jwt-pyjwt.yaml", &pyjwt_policies(&jwks(&[&rsa, &ec])));
    let wiring = Signer::new("k1");
    let remote = Signer::new("remote-1");
    policy(
        dir,
        "jwt-wiring.yaml",
        &wiring_policies(&wiring.jwks().to_string(), &services_at),
    );
    policy(dir, "ext.yaml", CUSTOM);

    let sleep = node(&hub, "sleep", &sleep_at);
    let jwt = node(&hub, "jwt", &jwt_at);
    let closed = node(&hub, "closed", &closed_at);
    let open = node(&hub, "open", &open_at);
    let services = node(&hub, "svc", &services_at);
    let out = node(&hub, "out", &NET.addr(OUTSIDE));
    // The authorizer and the JWKS server, reached by the sidecars themselves (their own
    // connections are not captured).
    let mut authz = ExtAuthzServer::start_with(services.ns.command("python3"), dir, "0.0.0.0");
    let jwks_dir = dir.join("jwks");
    std::fs::create_dir(&jwks_dir).unwrap();
    remote.write_jwks(&jwks_dir.join("jwks.json"));
    let _jwks_server = Proc::start(
        services
            .ns
            .command("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                &JWKS_PORT.to_string(),
                "--bind",
                "0.0.0.0",
            ])
            .arg("--directory")
            .arg(&jwks_dir)
            .stderr(Stdio::null()),
    );
    wait("the JWKS server", Duration::from_secs(10), || {
        let url = format!("http://{services_at}:{JWKS_PORT}/jwks.json");
        get_as_root(&out.ns, &url, &[]).0 == 200
    });
    let _apps = [
        apps(&jwt.ns, &["http:8080:httpbin"]),
        apps(&closed.ns, &["http:8080:app"]),
        apps(&open.ns, &["http:8080:app"]),
    ];
    let _sleep = sidecar(dir, &ca, &sleep, "foo", "sleep", "sleep", "ALLOW_ANY");
    let mut jwt_sc = sidecar(dir, &ca, &jwt, "jwt", "httpbin", "httpbin", "ALLOW_ANY");
    let custom = |n: &Node, sa: &str, fail_open: bool| {
        let mut spec = Spec::new(dir, &ca, "ext", sa, sa);
        spec.mesh = format!(
            "{{ trustDomain: {TD}, outboundTrafficPolicy: {{ mode: ALLOW_ANY }}, \
             extensionProviders: [ {{ name: grpc-authz, envoyExtAuthzGrpc: \
             {{ service: {services_at}, port: {}, timeout: 0.5s, failOpen: {fail_open} }} }} ] }}",
            authz.port
        );
        start_sidecar(dir, n, spec, issue(&ca, n, &id("ext", sa)))
    };
    let closed_sc = custom(&closed, "closed", false);
    let open_sc = custom(&open, "open", true);

    // RequestAuthentication with PyJWT tokens
    // (proxy_authn_e2e::request_authentication_with_pyjwt_tokens), the app calling by name.
    let get_jwt = |path: &str, headers: &[String]| {
        let mut extra: Vec<&str> = Vec::new();
        for h in headers {
            extra.extend_from_slice(&["-H", h]);
        }
        get_with(&sleep.ns, &format!("http://httpbin.jwt:8080{path}"), &extra)
    };
    let bearer = |t: &str| vec![format!("Authorization: Bearer {t}")];
    let for_httpbin = |sub: &str, exp: &str| serde_json::json!({"iss": ISS, "sub": sub, "aud": "httpbin", "exp": exp});
    // Valid RS256 and ES256 tokens: 200, and the app gets the verified payload.
    for (key, alg, sub) in [(&rsa, "RS256", "alice"), (&ec, "ES256", "bob")] {
        let claims = serde_json::json!({"iss": ISS, "sub": sub, "aud": "httpbin", "exp": "now+300", "iat": "now"});
        let (code, text) = get_jwt("/api/items", &bearer(&pyjwt(key, alg, claims)));
        assert_eq!(code, 200, "{alg}: {text}\n{}", jwt_sc.log.text());
        assert!(body(&text).starts_with("httpbin GET /api/items"), "{text}");
        let payload = payload_seen_by_app(&text);
        assert_eq!(
            (&payload["sub"], &payload["iss"]),
            (&sub.into(), &ISS.into()),
            "{payload}"
        );
    }
    // An audience list containing one allowed audience is enough.
    let t = pyjwt(
        &ec,
        "ES256",
        serde_json::json!({"iss": ISS, "sub": "carol", "aud": ["x", "other-aud-ok"], "exp": "now+300"}),
    );
    assert_eq!(get_jwt("/api/items", &bearer(&t)).0, 200);
    // Signed by a key outside the JWKS (same kid): 401, wherever it is presented.
    let forged = pyjwt(&impostor, "RS256", for_httpbin("alice", "now+300"));
    let (code, text) = get_jwt("/api/items", &bearer(&forged));
    assert_eq!(
        (code, body(&text)),
        (401, "Jwt verification fails"),
        "{text}"
    );
    assert_eq!(get_jwt("/public", &bearer(&forged)).0, 401);
    // Expired, and the wrong audience: 401.
    let expired = pyjwt(&rsa, "RS256", for_httpbin("alice", "now-600"));
    let (code, text) = get_jwt("/api/items", &bearer(&expired));
    assert_eq!((code, body(&text)), (401, "Jwt is expired"), "{text}");
    let wrong_aud = pyjwt(
        &rsa,
        "RS256",
        serde_json::json!({"iss": ISS, "sub": "alice", "aud": "someone-else", "exp": "now+300"}),
    );
    let (code, text) = get_jwt("/api/items", &bearer(&wrong_aud));
    assert_eq!(
        (code, body(&text)),
        (401, "Audiences in Jwt are not allowed"),
        "{text}"
    );
    // No token: /api/* needs a request principal (403), /public does not (200, no payload),
    // and the output header cannot be smuggled in.
    let (code, text) = get_jwt("/api/x", &[]);
    assert_eq!((code, body(&text)), (403, "RBAC: access denied"), "{text}");
    let (code, text) = get_jwt("/public", &[]);
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("x-test-jwt-payload"), "{text}");
    let (code, text) = get_jwt("/public", &["x-test-jwt-payload: e30".into()]);
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("x-test-jwt-payload"), "{text}");
    // fromHeaders with a prefix.
    let t = pyjwt(&ec, "ES256", for_httpbin("dave", "now+300"));
    let (code, text) = get_jwt("/api/items", &[format!("x-jwt-assertion: Token {t}")]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(payload_seen_by_app(&text)["sub"], "dave");
    assert_eq!(
        get_jwt("/api/items", &[format!("x-jwt-assertion: {t}")]).0,
        403
    );
    let (code, _) = get_jwt("/api/items", &[format!("x-jwt-assertion: Token {forged}")]);
    assert_eq!(code, 401);
    // The access log tells authenticated, unauthenticated and denied requests apart.
    let deny = access_line(&mut jwt_sc, "/api/x", |v| v["path"] == "/api/x");
    assert_eq!(
        (&deny["status"], &deny["decision"]),
        (&403.into(), &"deny".into())
    );
    access_line(&mut jwt_sc, "a 401", |v| {
        v["path"] == "/api/items" && v["status"] == 401 && v["decision"] == "unauthenticated"
    });

    // The JWT wiring (authn_custom_wiring.rs::jwt_and_custom_are_enforced_on_the_http_path),
    // plaintext from outside the mesh as there.
    let wiring_token = |sub: &str| {
        let now = trustmesh_testkit::pki::unix_now();
        wiring.sign(&serde_json::json!({
            "iss": WIRING_ISS, "sub": sub, "aud": "httpbin",
            "iat": now, "exp": now + 600, "roles": "editor admin",
        }))
    };
    let plain = |path: &str, extra: &[&str]| {
        get_as_root(&out.ns, &format!("http://{jwt_at}:8080{path}"), extra)
    };
    let alice = format!("Authorization: Bearer {}", wiring_token("alice"));
    let bob = format!("Authorization: Bearer {}", wiring_token("bob"));
    // No token: unauthenticated, allowed where no request principal is required.
    let (code, text) = plain("/open", &["-H", "Authorization: Basic dXNlcjpwdw=="]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        seen_header(&text, "authorization"),
        Some("Basic dXNlcjpwdw==")
    );
    // A bad token is rejected with 401 even where it would not be needed.
    let (code, text) = plain("/open", &["-H", "Authorization: Bearer a.b.c"]);
    assert_eq!(code, 401, "{text}");
    assert!(body(&text).starts_with("Jwt"), "{text}");
    let other_key = Signer::new("k1").sign(&serde_json::json!({
        "iss": WIRING_ISS, "sub": "alice", "aud": "httpbin",
        "exp": trustmesh_testkit::pki::unix_now() + 600,
    }));
    let (code, text) = plain(
        "/jwt/x",
        &["-H", &format!("Authorization: Bearer {other_key}")],
    );
    assert_eq!(
        (code, body(&text)),
        (401, "Jwt verification fails"),
        "{text}"
    );
    // requestPrincipals: alice allowed, bob and anonymous denied; the claim reaches the app as
    // a header, the token does not.
    let (code, text) = plain("/jwt/x", &["-H", &alice]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(seen_header(&text, "x-jwt-sub"), Some("alice"), "{text}");
    assert_eq!(seen_header(&text, "authorization"), None, "{text}");
    assert_eq!(plain("/jwt/x", &["-H", &bob]).0, 403);
    assert_eq!(plain("/jwt/x", &[]).0, 403);
    // spaceDelimitedClaims: `roles` matched word by word.
    assert_eq!(plain("/roles/x", &["-H", &alice]).0, 200);
    assert_eq!(plain("/roles-whole/x", &["-H", &alice]).0, 403);
    assert_eq!(plain("/roles/x", &[]).0, 403);
    // A pseudo-header condition.
    assert_eq!(plain("/put-only", &["-X", "PUT"]).0, 200);
    assert_eq!(plain("/put-only", &[]).0, 403);
    // The claim output header cannot be forged.
    let (_, text) = plain("/open", &["-H", "x-jwt-sub: alice"]);
    assert_eq!(seen_header(&text, "x-jwt-sub"), None, "{text}");
    // The token in the access_token query parameter, a default location (jwt_tokens.rs).
    let t = wiring_token("alice");
    assert_eq!(plain(&format!("/jwt/x?access_token={t}"), &[]).0, 200);
    // An issuer no rule names (jwt_tokens.rs::invalid_tokens_are_rejected_with_envoy_messages).
    let stranger = Signer::new("k1").sign(&serde_json::json!({
        "iss": "https://evil.test", "sub": "x", "exp": trustmesh_testkit::pki::unix_now() + 600,
    }));
    let (code, text) = plain(
        "/open",
        &["-H", &format!("Authorization: Bearer {stranger}")],
    );
    assert_eq!(
        (code, body(&text)),
        (401, "Jwt issuer is not configured"),
        "{text}"
    );
    // A remote JWKS fetched by the sidecar from another namespace (jwt_jwks_uri.rs); one it
    // cannot fetch and one it cannot use reject their tokens (fail closed), not others'.
    let claims = |iss: &str| serde_json::json!({"iss": iss, "sub": "erin", "exp": trustmesh_testkit::pki::unix_now() + 600});
    let t = remote.sign(&claims("https://remote.example"));
    let (code, text) = plain("/remote/x", &["-H", &format!("Authorization: Bearer {t}")]);
    assert_eq!(code, 200, "{text}\n{}", jwt_sc.log.text());
    assert_eq!(plain("/remote/x", &[]).0, 403);
    let t = remote.sign(&claims("https://down.example"));
    let (code, text) = plain("/open", &["-H", &format!("Authorization: Bearer {t}")]);
    assert_eq!(
        (code, body(&text)),
        (401, "Jwks remote fetch is failed"),
        "{text}"
    );
    let t = remote.sign(&claims("https://unusable.example"));
    assert_eq!(
        plain("/open", &["-H", &format!("Authorization: Bearer {t}")]).0,
        401
    );

    // CUSTOM with the Python grpcio authorizer
    // (proxy_authn_e2e::custom_action_with_grpcio_ext_authz_server and the CUSTOM part of
    // authn_custom_wiring.rs): the app calls two workloads that differ only in failOpen.
    let ext = |sa: &str, path: &str, headers: &[&str]| {
        let mut extra: Vec<&str> = Vec::new();
        for h in headers {
            extra.extend_from_slice(&["-H", h]);
        }
        get_with(&sleep.ns, &format!("http://{sa}.ext:8080{path}"), &extra)
    };
    // Allow: the headers the authorizer adds reach the app (and the one for the response the
    // client); it saw our SPIFFE ID, path and method. (And our address, in a form that is a
    // finding: see finding_captured_ipv4_peers_are_ipv6_mapped_for_policy.)
    let (code, text) = ext(
        "closed",
        "/ext/allowed?q=1",
        &[
            "x-ext-authz: allow",
            "x-remove-me: gone",
            "x-ext-authz-appended: first",
        ],
    );
    assert_eq!(code, 200, "{text}\n{}", closed_sc.log.text());
    // Headers removed and appended as the authorizer said (extauthz_grpcio.rs::allow_
    // carries_header_mutations_and_server_sees_the_request).
    assert_eq!(seen_header(&text, "x-remove-me"), None, "{text}");
    assert_eq!(
        seen_headers(&text, "x-ext-authz-appended"),
        ["first", "second"],
        "{text}"
    );
    assert!(
        body(&text).starts_with("app GET /ext/allowed?q=1"),
        "{text}"
    );
    assert_eq!(
        seen_header(&text, "x-ext-authz-check-result"),
        Some("allowed")
    );
    assert_eq!(
        seen_header(&text, "x-ext-authz-seen-principal"),
        Some(id("foo", "sleep").as_str())
    );
    assert!(
        text.to_ascii_lowercase().contains("x-ext-authz-said: yes"),
        "{text}"
    );
    let seen = authz.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["source_principal"], id("foo", "sleep"), "{seen:?}");
    assert_eq!(seen[0]["path"], "/ext/allowed?q=1", "{seen:?}");
    assert_eq!(seen[0]["method"], "GET", "{seen:?}");
    assert_eq!(
        seen[0]["destination_principal"],
        id("ext", "closed"),
        "{seen:?}"
    );
    // Deny: the authorizer's denied_response is what the client gets; the app is not called.
    let (code, text) = ext(
        "closed",
        "/ext/secret",
        &["x-ext-authz: deny", "x-ext-authz-deny-status: 451"],
    );
    assert_eq!(code, 451, "{text}");
    assert_eq!(body(&text), "denied by ext_authz: /ext/secret", "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-ext-authz-check-result: denied"),
        "{text}"
    );
    // Paths the CUSTOM policy does not select are not sent to the authorizer.
    let before = authz.seen().len();
    assert_eq!(ext("closed", "/other", &[]).0, 200);
    assert_eq!(authz.seen().len(), before);
    // The authorizer sleeps past the 0.5 s timeout: failOpen false → 403 in time, failOpen
    // true → the request goes on, with nothing added.
    let sleepy = ["x-ext-authz: allow", "x-ext-authz-sleep-ms: 3000"];
    let started = Instant::now();
    let (code, text) = ext("closed", "/ext/slow", &sleepy);
    assert_eq!(code, 403, "{text}");
    assert!(!text.contains("app GET"), "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let (code, text) = ext("open", "/ext/slow", &sleepy);
    assert_eq!(code, 200, "{text}\n{}", open_sc.log.text());
    assert!(body(&text).starts_with("app GET /ext/slow"), "{text}");
    assert!(!text.contains("x-ext-authz-check-result"), "{text}");
    // The fail-open sidecar still obeys a decision that arrives in time.
    assert_eq!(ext("open", "/ext/no", &["x-ext-authz: deny"]).0, 403);
    // The authorizer goes down: failOpen false → 403, failOpen true → 200.
    authz.proc.kill();
    let (code, text) = ext("closed", "/ext/allowed", &["x-ext-authz: allow"]);
    assert_eq!(code, 403, "{text}");
    assert_eq!(ext("open", "/ext/allowed", &["x-ext-authz: allow"]).0, 200);
}
