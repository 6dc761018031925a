//! The HTTP path's wiring of RequestAuthentication (jwt module) and the CUSTOM action (extauthz
//! module): a proxy started in-process from a real config file, an in-process gRPC authorizer
//! speaking Envoy's ext_authz API, a tiny HTTP backend, and `curl` as the client.

use std::time::Duration;

use trustmesh_testkit::http::headers_backend;
use trustmesh_testkit::jwt::Signer;
use trustmesh_testkit::net::{free_port, within};
use trustmesh_testkit::sidecar::{write_beside, Cfg};
use trustmesh_testkit::tools::curl;

use trustmesh_proxy::extauthz::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use trustmesh_proxy::extauthz::proto::envoy::r#type::v3::HttpStatus;
use trustmesh_proxy::extauthz::proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use trustmesh_proxy::extauthz::proto::envoy::service::auth::v3::check_response::HttpResponse;
use trustmesh_proxy::extauthz::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use trustmesh_proxy::extauthz::proto::google::rpc::Status;

/// A token from our issuer for `sub`, for the httpbin audience, with space-delimited roles.
fn token(key: &Signer, sub: &str) -> String {
    let now = trustmesh_testkit::pki::unix_now();
    key.sign(&serde_json::json!({
        "iss": "https://issuer.example", "sub": sub, "aud": "httpbin",
        "iat": now, "exp": now + 600, "roles": "editor admin",
    }))
}

/// Allows `/ext/allow*` (adding a header upstream and one to the response), denies the rest
/// with 418 and a body.
struct Authorizer;

fn header(k: &str, v: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for Authorizer {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let path = req
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .map(|h| h.path)
            .unwrap_or_default();
        let resp = if path.starts_with("/ext/allow") {
            CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-ext-authz-check", "allowed")],
                    response_headers_to_add: vec![header("x-ext-authz-said", "yes")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(Status {
                    code: 7, // PERMISSION_DENIED
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 418 }),
                    body: "denied by ext".into(),
                    headers: vec![],
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(resp))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_custom_are_enforced_on_the_http_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let signer = Signer::new("k1");
    let jwks = signer.jwks().to_string();

    let authz_port = free_port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Authorizer))
            .serve(([127, 0, 0, 1], authz_port).into()),
    );
    within(Duration::from_secs(2), || async {
        let authorizer = tokio::net::TcpStream::connect(("127.0.0.1", authz_port));
        authorizer.await.is_ok()
    })
    .await;

    let app = headers_backend().await;
    let inb = free_port();
    let cfg = Cfg {
        mesh: format!(
            "{{ trustDomain: cluster.local, extensionProviders: [ {{ name: my-authz, \
             envoyExtAuthzGrpc: {{ service: 127.0.0.1, port: {authz_port}, timeout: 2s }} }} ] }}"
        ),
        ..Cfg::beside("httpbin").inbound(inb, app, "http")
    };
    let cfg = write_beside(dir, &cfg);
    let pol = dir.join("policies");
    std::fs::write(
        pol.join("policies.yaml"),
        format!(
            r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{ name: jwt, namespace: foo }}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [httpbin]
    jwks: '{jwks}'
    outputClaimToHeaders:
    - {{ header: x-jwt-sub, claim: sub }}
    spaceDelimitedClaims: [roles]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: allow, namespace: foo }}
spec:
  action: ALLOW
  rules:
  - from: [ {{ source: {{ requestPrincipals: ["https://issuer.example/alice"] }} }} ]
    to: [ {{ operation: {{ paths: ["/jwt/*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/open", "/ext/*"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/roles/*"] }} }} ]
    when: [ {{ key: "request.auth.claims[roles]", values: [admin] }} ]
  - to: [ {{ operation: {{ paths: ["/roles-whole/*"] }} }} ]
    when: [ {{ key: "request.auth.claims[roles]", values: ["editor admin"] }} ]
  - to: [ {{ operation: {{ paths: ["/put-only"] }} }} ]
    when: [ {{ key: "request.headers[:method]", values: [PUT] }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: ext, namespace: foo }}
spec:
  action: CUSTOM
  provider: {{ name: my-authz }}
  rules:
  - to: [ {{ operation: {{ paths: ["/ext/*"] }} }} ]
"#
        ),
    )
    .unwrap();

    let (_shared, bound) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(bound.inbound[0].port(), inb);
    let url = |p: &str| format!("http://127.0.0.1:{inb}{p}");
    let alice = format!("Authorization: Bearer {}", token(&signer, "alice"));
    let bob = format!("Authorization: Bearer {}", token(&signer, "bob"));

    // No token: unauthenticated, allowed where no request principal is required. (The backend
    // echoes authorization headers, so the check below that the token is stripped is real.)
    let (code, body) = curl(&["-H", "Authorization: Basic dXNlcjpwdw==", &url("/open")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("authorization: basic"), "{body}");
    // A bad token is rejected with 401 even where it would not be needed.
    let (code, body) = curl(&["-H", "Authorization: Bearer a.b.c", &url("/open")]).await;
    assert_eq!(code, 401);
    assert!(body.starts_with("Jwt"), "{body}");
    // A token signed by another key: 401 "Jwt verification fails".
    let other_key = Signer::new("k1");
    let forged = format!("Authorization: Bearer {}", token(&other_key, "alice"));
    let (code, body) = curl(&["-H", &forged, &url("/jwt/x")]).await;
    assert_eq!((code, body.as_str()), (401, "Jwt verification fails"));
    // requestPrincipals: alice allowed, bob and anonymous denied.
    let (code, body) = curl(&["-H", &alice, &url("/jwt/x")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("x-jwt-sub: alice"),
        "claim output header: {body}"
    );
    assert!(
        !body.contains("authorization"),
        "token must not be forwarded: {body}"
    );
    assert_eq!(curl(&["-H", &bob, &url("/jwt/x")]).await.0, 403);
    assert_eq!(curl(&[&url("/jwt/x")]).await.0, 403);
    // spaceDelimitedClaims of the rule that accepted the token: `roles` is matched word by
    // word, as Envoy's jwt_authn normalizes it for Istio's RBAC rules.
    assert_eq!(curl(&["-H", &alice, &url("/roles/x")]).await.0, 200);
    assert_eq!(curl(&["-H", &alice, &url("/roles-whole/x")]).await.0, 403);
    assert_eq!(curl(&[&url("/roles/x")]).await.0, 403);
    // A pseudo-header condition works although no policy makes the proxy copy headers.
    assert_eq!(curl(&["-X", "PUT", &url("/put-only")]).await.0, 200);
    assert_eq!(curl(&[&url("/put-only")]).await.0, 403);
    // A client cannot forge the claim output header.
    let (_, body) = curl(&["-H", "x-jwt-sub: alice", &url("/open")]).await;
    assert!(!body.contains("x-jwt-sub"), "{body}");

    // CUSTOM: allow adds headers upstream and to the response; deny returns the authorizer's
    // status and body.
    let (code, body) = curl(&["-i", &url("/ext/allow")]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("x-ext-authz-check: allowed"), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("x-ext-authz-said: yes"),
        "{body}"
    );
    let (code, body) = curl(&[&url("/ext/other")]).await;
    assert_eq!((code, body.as_str()), (418, "denied by ext"));
}
