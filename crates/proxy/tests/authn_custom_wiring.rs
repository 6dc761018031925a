//! The HTTP path's wiring of RequestAuthentication (jwt module) and the CUSTOM action (extauthz
//! module): a proxy started in-process from a real config file, an in-process gRPC authorizer
//! speaking Envoy's ext_authz API, a tiny HTTP backend, and `curl` as the client.

mod common;

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// An ES256 signing key and the JWKS publishing its public half.
fn jwt_key() -> (jsonwebtoken::EncodingKey, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let raw = key.public_key_raw(); // 0x04 || X || Y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    }]});
    (enc, jwks.to_string())
}

fn token(key: &jsonwebtoken::EncodingKey, sub: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://issuer.example", "sub": sub, "aud": "httpbin",
        "iat": now, "exp": now + 600, "roles": "editor admin",
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Backend answering `<method> <path>` plus every `x-*` and `authorization` header it received
/// except XFCC.
async fn backend() -> u16 {
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                for _ in 0..100 {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut out = line
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    out.push('\n');
                    let mut len = 0usize;
                    for _ in 0..200 {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        let interesting =
                            lower.starts_with("x-") || lower.starts_with("authorization");
                        if interesting && !lower.starts_with("x-forwarded-client-cert") {
                            out.push_str(&lower);
                            out.push('\n');
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
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

async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_custom_are_enforced_on_the_http_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, "spiffe://cluster.local/ns/foo/sa/httpbin");
    let (signer, jwks) = jwt_key();

    let authz_port = common::free_port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Authorizer))
            .serve(([127, 0, 0, 1], authz_port).into()),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", authz_port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pol = dir.join("policies");
    std::fs::create_dir(&pol).unwrap();
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

    let app = backend().await;
    let (inb, admin) = (common::free_port(), common::free_port());
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"workload: {{ namespace: foo, serviceAccount: httpbin, labels: {{ app: httpbin }} }}
certs: {{ key: key.pem, certChain: cert-chain.pem }}
trustBundles: [ "cluster.local=root-cert.pem" ]
mesh:
  trustDomain: cluster.local
  extensionProviders:
  - name: my-authz
    envoyExtAuthzGrpc: {{ service: 127.0.0.1, port: {authz_port}, timeout: 2s }}
policyDir: policies
inbound: [ {{ port: {inb}, targetPort: {app}, protocol: http }} ]
admin: {{ address: "127.0.0.1:{admin}" }}
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
    let (other_key, _) = jwt_key();
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
