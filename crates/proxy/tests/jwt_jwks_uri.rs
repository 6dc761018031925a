//! Remote JWKS (`jwksUri`, OpenID discovery) served by a small local HTTP(S) server on loopback:
//! initial fetch, periodic refresh, a failing refresh keeping the cached keys, key rotation,
//! fail-closed before the first successful fetch, https with a private CA, and the refresher
//! stopping with the authenticator.
//!
//! Keys come from `openssl`, JWKs and tokens from PyJWT (tests/python/jwt_tool.py). Without
//! PyJWT the tests print a loud SKIP, except under CI (`CI` set), where that is a failure.

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{HeaderMap, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trustmesh_proxy::jwt::{JwtAuthenticator, JwtError, JwtOptions, JwtRule};
use trustmesh_testkit::jwt::{bearer, jwks, pyjwt, Key};
use trustmesh_testkit::net::until;
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::tools::python_has;

const ISS: &str = "https://remote-issuer.trustmesh.test";
/// The last good key set is cached process-wide per (issuer, URI); each test that depends on
/// starting without keys uses its own issuer so a reused loopback port cannot seed it.
const COLD_ISS: &str = "https://cold-start.trustmesh.test";
const TLS_ISS: &str = "https://tls-issuer.trustmesh.test";

fn pyjwt_available() -> bool {
    python_has("jwt, cryptography", "JWKS test")
}

fn ec_key(dir: &Path, name: &str) -> Key {
    Key::generate(dir, "p256", name)
}

fn jwks_of(key: &Key) -> String {
    jwks(&[key])
}

fn token(key: &Key, iss: &str, sub: &str) -> String {
    pyjwt(
        key,
        "ES256",
        json!({"iss": iss, "sub": sub, "exp": "now+600"}),
    )
}

/// What the test server answers on /jwks: a document, or HTTP 500 when `None`.
#[derive(Clone)]
struct JwksServer {
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    base: String,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl JwksServer {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://127.0.0.1:{port}");
        let body: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h, jwks_uri) = (body.clone(), hits.clone(), format!("{base}/jwks"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (b, h, jwks_uri, tls) = (b.clone(), h.clone(), jwks_uri.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (b, h, jwks_uri) = (b.clone(), h.clone(), jwks_uri.clone());
                            async move {
                                let resp = match req.uri().path() {
                                    "/jwks" => {
                                        h.fetch_add(1, Ordering::SeqCst);
                                        match b.lock().unwrap().clone() {
                                            Some(doc) => Response::new(Full::new(Bytes::from(doc))),
                                            None => {
                                                let mut r =
                                                    Response::new(Full::new(Bytes::from("down")));
                                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                                r
                                            }
                                        }
                                    }
                                    "/.well-known/openid-configuration" => {
                                        Response::new(Full::new(Bytes::from(
                                            json!({ "jwks_uri": jwks_uri }).to_string(),
                                        )))
                                    }
                                    _ => {
                                        let mut r = Response::new(Full::new(Bytes::new()));
                                        *r.status_mut() = StatusCode::NOT_FOUND;
                                        r
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                });
            }
        });
        JwksServer {
            body,
            hits,
            base,
            task: Arc::new(task),
        }
    }

    fn serve(&self, doc: Option<String>) {
        *self.body.lock().unwrap() = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn fast_options() -> JwtOptions {
    JwtOptions {
        refresh_interval: Duration::from_millis(300),
        retry_interval: Duration::from_millis(100),
        fetch_timeout: Duration::from_secs(2),
        tls: None,
    }
}

fn remote_rule(uri: String) -> JwtRule {
    remote_rule_for(ISS, uri)
}

fn remote_rule_for(issuer: &str, uri: String) -> JwtRule {
    JwtRule {
        issuer: issuer.into(),
        jwks_uri: Some(uri),
        ..Default::default()
    }
}

/// Polls `cond` every 20 ms for at most 10 s.
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    until(what, Duration::from_secs(10), cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_failure_keeps_cache_and_rotation_is_picked_up() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ec_key(dir.path(), "old"), ec_key(dir.path(), "new"));
    let server = JwksServer::start(None).await;
    server.serve(Some(jwks_of(&old)));
    let auth = JwtAuthenticator::new(
        vec![remote_rule(format!("{}/jwks", server.base))],
        fast_options(),
    )
    .unwrap();
    assert!(
        auth.wait_ready(Duration::from_secs(5)).await,
        "{:?}",
        auth.jwks_status()
    );
    let old_token = token(&old, ISS, "alice");
    let uri = Uri::from_static("/");
    assert_eq!(
        auth.authenticate(&bearer(&old_token), &uri)
            .unwrap()
            .unwrap()
            .subject,
        "alice"
    );

    // The endpoint breaks: refreshes fail, the cached keys keep working.
    server.serve(None);
    let before = auth.jwks_status()[0].attempts;
    eventually("two failed refreshes", || {
        let s = &auth.jwks_status()[0];
        s.attempts >= before + 2 && s.last_error.as_deref().is_some_and(|e| e.contains("500"))
    })
    .await;
    assert_eq!(auth.jwks_status()[0].keys, 1);
    assert!(auth
        .authenticate(&bearer(&old_token), &uri)
        .unwrap()
        .is_some());

    // A policy reload rebuilds the authenticator: it starts from the last good keys instead
    // of rejecting tokens until its own fetch (which fails here) completes.
    let rebuilt = JwtAuthenticator::new(
        vec![remote_rule(format!("{}/jwks", server.base))],
        fast_options(),
    )
    .unwrap();
    assert!(rebuilt
        .authenticate(&bearer(&old_token), &uri)
        .unwrap()
        .is_some());
    drop(rebuilt);

    // The issuer rotates its key: the next refresh replaces the set.
    server.serve(Some(jwks_of(&new)));
    eventually("a successful refresh", || {
        auth.jwks_status()[0].last_error.is_none()
    })
    .await;
    let new_token = token(&new, ISS, "bob");
    assert_eq!(
        auth.authenticate(&bearer(&new_token), &uri)
            .unwrap()
            .unwrap()
            .subject,
        "bob"
    );
    assert!(matches!(
        auth.authenticate(&bearer(&old_token), &uri),
        Err(JwtError::NoMatchingKey { .. })
    ));

    // Dropping the authenticator stops its refresher.
    drop(auth);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = server.hits();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(server.hits(), hits, "refresher still running after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_yet_fails_closed_then_recovers() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key(dir.path(), "k");
    let server = JwksServer::start(None).await;
    let auth = JwtAuthenticator::new(
        vec![remote_rule_for(COLD_ISS, format!("{}/jwks", server.base))],
        fast_options(),
    )
    .unwrap();
    assert!(!auth.wait_ready(Duration::from_secs(5)).await);
    let t = token(&key, COLD_ISS, "carol");
    let uri = Uri::from_static("/");
    match auth.authenticate(&bearer(&t), &uri) {
        Err(e @ JwtError::JwksUnavailable { .. }) => {
            assert_eq!(e.http_status(), 401);
            assert_eq!(e.http_body(), "Jwks remote fetch is failed");
            let JwtError::JwksUnavailable { reason, issuer } = e else {
                unreachable!()
            };
            assert_eq!(issuer, COLD_ISS);
            assert!(reason.contains("500"), "{reason}");
        }
        other => panic!("expected JwksUnavailable, got {other:?}"),
    }
    // Requests without a token are unaffected.
    assert_eq!(auth.authenticate(&HeaderMap::new(), &uri), Ok(None));

    server.serve(Some(jwks_of(&key)));
    eventually("recovery after retry", || auth.jwks_status()[0].keys == 1).await;
    assert!(auth.authenticate(&bearer(&t), &uri).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_discovery_when_no_jwks_is_given() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key(dir.path(), "k");
    let server = JwksServer::start(None).await;
    server.serve(Some(jwks_of(&key)));
    let issuer = server.base.clone();
    let rule = JwtRule {
        issuer: issuer.clone(),
        ..Default::default()
    };
    let auth = JwtAuthenticator::new(vec![rule], fast_options()).unwrap();
    assert!(
        auth.wait_ready(Duration::from_secs(5)).await,
        "{:?}",
        auth.jwks_status()
    );
    let t = token(&key, &issuer, "dave");
    let info = auth
        .authenticate(&bearer(&t), &Uri::from_static("/"))
        .unwrap()
        .unwrap();
    assert_eq!(info.principal, format!("{issuer}/dave"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_jwks_uri_with_a_trusted_and_an_untrusted_ca() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if !pyjwt_available() {
        return;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let dir = tempfile::tempdir().unwrap();
    // A private CA and a 127.0.0.1 server certificate, made with the openssl CLI.
    let private = OpensslCa::new(dir.path(), "jwks-test", "jwks.test");
    let (ca, (leaf, leaf_key)) = (&private.root, private.issue_server("srv", "IP:127.0.0.1"));
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_file(&leaf).unwrap()],
            PrivateKeyDer::from_pem_file(&leaf_key).unwrap(),
        )
        .unwrap();
    let server = JwksServer::start(Some(Arc::new(server_cfg))).await;
    let key = ec_key(dir.path(), "k");
    server.serve(Some(jwks_of(&key)));
    let t = token(&key, TLS_ISS, "erin");
    let uri = Uri::from_static("/");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let options = JwtOptions {
        tls: Some(Arc::new(client_cfg)),
        ..fast_options()
    };
    let rule = remote_rule_for(TLS_ISS, format!("{}/jwks", server.base));
    // The system trust store does not know our private CA: the fetch must fail, closed.
    // (Checked first: a successful fetch of the same URI would seed later authenticators.)
    let untrusted = JwtAuthenticator::new(vec![rule.clone()], fast_options()).unwrap();
    assert!(!untrusted.wait_ready(Duration::from_secs(5)).await);
    let status = &untrusted.jwks_status()[0];
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS")),
        "{status:?}"
    );
    assert!(matches!(
        untrusted.authenticate(&bearer(&t), &uri),
        Err(JwtError::JwksUnavailable { .. })
    ));

    let trusted = JwtAuthenticator::new(vec![rule], options).unwrap();
    assert!(
        trusted.wait_ready(Duration::from_secs(5)).await,
        "{:?}",
        trusted.jwks_status()
    );
    assert_eq!(
        trusted
            .authenticate(&bearer(&t), &uri)
            .unwrap()
            .unwrap()
            .subject,
        "erin"
    );
}
