//! End to end: `trustmesh ca serve` as a real process, called over TLS by a tonic client the
//! way istio-agent calls istiod, and its bundle endpoint fetched with curl.

// The call helper returns what the generated client returns.
#![allow(clippy::result_large_err)]

mod support;

use std::time::Duration;

use base64::Engine;

use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use support::*;
use tonic::Code;
use trustmesh_ca_server::client::{create_certificate, CaEndpoint, Credentials};
use trustmesh_identity::pem::certs_from_pem;
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::pki::{csr_for, verify_now};
use trustmesh_testkit::tools::{curl, python_dir, run_ok};

struct Fixture {
    dir: tempfile::TempDir,
    issuer: TokenIssuer,
    ca: CaEndpoint,
    _proc: Proc,
    bundle: std::net::SocketAddr,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let jwks = dir.path().join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "key-1");
    let (proc_, grpc, bundle) = start_ca(
        &ca_dir,
        &jwks,
        &["--max-ttl", "1h", "--bundle-listen", "127.0.0.1:0"],
    );
    Fixture {
        ca: endpoint(grpc, &ca_dir),
        dir,
        issuer,
        _proc: proc_,
        bundle: bundle.unwrap(),
        rt: runtime(),
    }
}

/// How a client reaches the CA at `grpc` serving the CA in `ca_dir`.
fn endpoint(grpc: std::net::SocketAddr, ca_dir: &std::path::Path) -> CaEndpoint {
    CaEndpoint {
        address: format!("https://{grpc}"),
        root_pem: std::fs::read(ca_dir.join("root-cert.pem")).unwrap(),
        server_name: "trustmesh-ca".into(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `trustmesh ca serve <args>` run to its end (a refused configuration).
fn ca_serve(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["ca", "serve"]).args(args).output().unwrap()
}

fn token_creds(t: String) -> Credentials {
    Credentials {
        bearer_token: Some(t),
        client_cert: None,
    }
}

impl Fixture {
    /// [`Fixture::call`] with a token for default/sleep.
    fn call_as_sleep(&self, csr: String, ttl_secs: u64) -> Result<Vec<String>, tonic::Status> {
        let creds = token_creds(self.issuer.token("default", "sleep"));
        self.call(&creds, csr, ttl_secs)
    }

    fn call(
        &self,
        creds: &Credentials,
        csr: String,
        ttl_secs: u64,
    ) -> Result<Vec<String>, tonic::Status> {
        self.rt.block_on(create_certificate(
            &self.ca,
            creds,
            csr,
            Duration::from_secs(ttl_secs),
        ))
    }

    /// Verifies an issued chain with the identity crate against root-cert.pem only.
    fn verify(&self, chain: &[String]) -> String {
        let roots = certs_from_pem(&self.ca.root_pem).unwrap();
        let certs: Vec<_> = chain
            .iter()
            .flat_map(|p| certs_from_pem(p.as_bytes()).unwrap())
            .collect();
        assert_eq!(
            certs.len(),
            chain.len(),
            "each cert_chain entry must hold exactly one PEM certificate"
        );
        assert_eq!(
            certs.last(),
            roots.first(),
            "the root must be the last entry, as istiod sends it"
        );
        let v = verify_now(&certs[..certs.len() - 1], &self.ca.root_pem, TD);
        v.id.to_string()
    }
}

#[test]
fn ca_server_issues_authenticates_and_publishes_bundle() {
    let f = fixture();
    let me = "spiffe://cluster.local/ns/default/sa/sleep";

    // A valid token for default/sleep gets exactly its own identity, leaf → intermediate → root.
    let (key, csr) = csr_for(me);
    let chain = f.call_as_sleep(csr, 600).expect("issue");
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(f.verify(&chain), me);

    // Zero TTL means the default (clipped to --max-ttl 1h).
    let (_, csr) = csr_for(me);
    let chain0 = f.call_as_sleep(csr, 0).expect("default ttl");
    assert_eq!(f.verify(&chain0), me);

    // A CSR without any SAN gets the caller's identity (the CA, not the CSR, decides it).
    let bare_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let bare = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&bare_key)
        .unwrap()
        .pem()
        .unwrap();
    let chain_bare = f.call_as_sleep(bare, 600).expect("CSR without SAN");
    assert_eq!(f.verify(&chain_bare), me);

    // Another identity in the same trust domain → PERMISSION_DENIED naming both.
    let (_, csr) = csr_for("spiffe://cluster.local/ns/prod/sa/payments");
    let e = f.call_as_sleep(csr, 600).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("ns/prod/sa/payments") && e.message().contains(me),
        "{}",
        e.message()
    );

    // Another trust domain → PERMISSION_DENIED that says so.
    let (_, csr) = csr_for("spiffe://evil.example/ns/default/sa/sleep");
    let e = f.call_as_sleep(csr, 600).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("trust domain evil.example"),
        "{}",
        e.message()
    );

    // A DNS SAN on top of the right ID is also more than the caller may have.
    let key2 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(vec!["payments.prod.svc".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::URI(me.try_into().unwrap()));
    let csr = p.serialize_request(&key2).unwrap().pem().unwrap();
    let e = f.call_as_sleep(csr, 600).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Tokens: signed by an unknown key, expired, wrong audience, untrusted issuer, none at all.
    let other = TokenIssuer::new(&f.dir.path().join("other-jwks.json"), "key-1");
    for (what, token) in [
        ("forged", other.token("default", "sleep")),
        (
            "expired",
            f.issuer
                .token_with(ISSUER, AUDIENCE, "default", "sleep", -3600),
        ),
        (
            "wrong audience",
            f.issuer
                .token_with(ISSUER, "not-istio", "default", "sleep", 600),
        ),
        (
            "untrusted issuer",
            f.issuer
                .token_with("https://evil.example", AUDIENCE, "default", "sleep", 600),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let (_, csr) = csr_for(me);
        let e = f.call(&token_creds(token), csr, 600).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
    }
    let (_, csr) = csr_for(me);
    let e = f.call(&Credentials::default(), csr, 600).unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("no credentials"), "{}", e.message());

    // TTL above --max-ttl → INVALID_ARGUMENT worded like istiod.
    let (_, csr) = csr_for(me);
    let e = f.call_as_sleep(csr, 7200).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("requested TTL 2h0m0s is greater than the max allowed TTL 1h0m0s"),
        "{}",
        e.message()
    );

    // Malformed CSR → INVALID_ARGUMENT.
    let e = f
        .call_as_sleep(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            600,
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A CSR whose signature does not verify (no proof of possession) → INVALID_ARGUMENT.
    let (_, csr) = csr_for(me);
    let body: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let e = f.call_as_sleep(tampered, 600).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Renewal with the issued certificate as the client certificate, no token at all.
    let chain_pem = chain[..chain.len() - 1].concat();
    let cert_creds = Credentials {
        bearer_token: None,
        client_cert: Some((chain_pem, key.serialize_pem())),
    };
    let (_, csr) = csr_for(me);
    let renewed = f
        .call(&cert_creds, csr, 600)
        .expect("renew with client certificate");
    assert_eq!(f.verify(&renewed), me);
    assert_ne!(renewed[0], chain[0], "a new certificate was issued");
    // ...but the certificate only entitles to its own identity.
    let (_, csr) = csr_for("spiffe://cluster.local/ns/default/sa/other");
    let e = f.call(&cert_creds, csr, 600).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Bundle endpoint, fetched by curl verifying the server against root-cert.pem.
    let root_file = f.dir.path().join("cacerts/root-cert.pem");
    let url = format!("https://localhost:{}/bundle", f.bundle.port());
    let (code, body) =
        f.rt.block_on(curl(&["--cacert", root_file.to_str().unwrap(), &url]));
    assert_eq!(code, 200, "curl failed: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key0 = &doc["keys"][0];
    assert_eq!(key0["use"], "x509-svid");
    assert_eq!(key0["kty"], "EC");
    assert_eq!(key0["crv"], "P-256");
    assert!(doc["spiffe_sequence"].as_u64().unwrap() > 0);
    assert!(doc["spiffe_refresh_hint"].as_u64().unwrap() > 0);
    let parsed = trustmesh_ca_server::bundle::parse(body.as_bytes()).unwrap();
    assert_eq!(
        parsed.x509_authorities,
        certs_from_pem(&f.ca.root_pem).unwrap()
    );
}

#[test]
fn ca_serve_reports_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let out = ca_serve(&["--ca", missing.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: loading CA"), "{err}");

    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let (ca, listen) = (ca_dir.to_str().unwrap(), "127.0.0.1:0");
    let out = ca_serve(&["--ca", ca, "--listen", listen, "--jwt-issuer", ISSUER]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in pairs"));
}

/// `--jwks https://...`: the issuer's keys come from a real HTTPS server (Python's
/// `http.server` behind `ssl`, certificates made with the openssl CLI), verified with
/// `--jwks-ca`.
#[test]
fn jwks_is_fetched_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tls = OpensslCa::new(d, "jwks", "jwks.test");
    let (srv_pem, srv_key) = tls.issue_server("srv", "DNS:localhost");
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let issuer = TokenIssuer::new(&www.join("jwks.json"), "url-key");
    let server = "import http.server, ssl, sys, functools\n\
        h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
        s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), h)\n\
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[2], sys.argv[3])\n\
        s.socket = c.wrap_socket(s.socket, server_side=True)\n\
        print('listening port=%d' % s.server_address[1], flush=True)\n\
        s.serve_forever()\n";
    let mut py = Proc::start(
        std::process::Command::new("python3")
            .args(["-c", server, www.to_str().unwrap()])
            .args([&srv_pem, &srv_key])
            .stderr(std::process::Stdio::null()),
    );
    let port = py.wait_line("listening port=", Duration::from_secs(10));

    let ca_dir = d.join("cacerts");
    make_ca(&ca_dir);
    let url = format!("https://localhost:{port}/jwks.json");
    // The keys are fetched at startup: the HTTPS server is gone before any token is checked.
    let (_proc, grpc, _) = start_ca(&ca_dir, &url, &["--jwks-ca", tls.root.to_str().unwrap()]);
    py.kill();

    let (ep, rt) = (endpoint(grpc, &ca_dir), runtime());
    let (_, csr) = csr_for("spiffe://cluster.local/ns/web/sa/frontend");
    let chain = rt
        .block_on(create_certificate(
            &ep,
            &token_creds(issuer.token("web", "frontend")),
            csr,
            Duration::from_secs(600),
        ))
        .expect("token verified with keys fetched over HTTPS");
    assert_eq!(chain.len(), 3);

    // Without --jwks-ca the URL cannot be verified, and the server refuses to start.
    let (ca, listen) = (ca_dir.to_str().unwrap(), "127.0.0.1:0");
    let out = ca_serve(&[
        "--ca",
        ca,
        "--listen",
        listen,
        "--jwt-issuer",
        ISSUER,
        "--jwks",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no root certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// grpcio (gRPC C-core, as used by many non-Go clients) calls `CreateCertificate` over TLS with
/// a hand-encoded request: wire compatibility with Istio's field numbers, not with our own stubs.
#[test]
fn grpcio_client_gets_a_certificate() {
    let f = fixture();
    let run = |sa: &str, ttl: u64| -> serde_json::Value {
        let (_, csr) = csr_for(&format!("spiffe://cluster.local/ns/default/sa/{sa}"));
        let csr_file = f.dir.path().join(format!("{sa}.csr"));
        std::fs::write(&csr_file, csr).unwrap();
        let token_file = f.dir.path().join("token");
        std::fs::write(&token_file, f.issuer.token("default", "sleep")).unwrap();
        let out = run_ok(
            std::process::Command::new("python3")
                .arg(python_dir().join("ca_client.py"))
                .arg(f.ca.address.trim_start_matches("https://"))
                .arg(f.dir.path().join("cacerts/root-cert.pem"))
                .arg("trustmesh-ca")
                .arg(&token_file)
                .arg(&csr_file)
                .arg(ttl.to_string()),
        );
        serde_json::from_str(&out).unwrap()
    };
    let ok = run("sleep", 600);
    assert_eq!(ok["code"], "OK", "{ok}");
    let chain: Vec<String> = ok["cert_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        f.verify(&chain),
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    let denied = run("other", 600);
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    let too_long = run("sleep", 7200);
    assert_eq!(too_long["code"], "INVALID_ARGUMENT", "{too_long}");
}

/// `--trust-domain` over certificates naming another domain (Istio's trust-domain migration:
/// meshConfig.trustDomain changes, the cacerts stay): the flag wins, a warning names both
/// domains, and a caller gets an SVID of the new domain that verifies to the same root.
#[test]
fn explicit_trust_domain_overrides_the_certificates_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let jwks = dir.path().join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "key-1");
    let args = ca_serve_args(
        &ca_dir,
        &jwks,
        "127.0.0.1:0",
        &["--trust-domain", "new.example"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_proc, log, grpc, _) = start_ca_args_logged(&args);
    wait_for("the override warning", Duration::from_secs(10), || {
        log.text()
            .contains(
                "--trust-domain new.example overrides the trust domain the CA certificates \
                 name (spiffe://cluster.local)",
            )
            .then_some(())
    });
    let ca = endpoint(grpc, &ca_dir);
    let (_, csr) = csr_for("spiffe://new.example/ns/default/sleep-is-not-this");
    let creds = token_creds(issuer.token("default", "sleep"));
    let rt = runtime();
    // A CSR for another identity is refused; the caller's own, in the new domain, is issued.
    assert!(rt
        .block_on(create_certificate(
            &ca,
            &creds,
            csr,
            Duration::from_secs(600)
        ))
        .is_err());
    let (_, csr) = csr_for("spiffe://new.example/ns/default/sa/sleep");
    let chain = rt
        .block_on(create_certificate(
            &ca,
            &creds,
            csr,
            Duration::from_secs(600),
        ))
        .unwrap();
    let certs: Vec<_> = chain
        .iter()
        .flat_map(|p| certs_from_pem(p.as_bytes()).unwrap())
        .collect();
    let v = verify_now(&certs[..certs.len() - 1], &ca.root_pem, "new.example");
    assert_eq!(v.id.as_str(), "spiffe://new.example/ns/default/sa/sleep");
}
