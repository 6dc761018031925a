//! Shared by the CA server's in-process tests: a root CA on disk, a JWKS with one signing key,
//! the server started on loopback, and a token for `ns1/sa1`.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_ca_server::auth::cache::DEFAULT_MAX_AGE;
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource};
use trustmesh_ca_server::ca_signer::{server_identity, CaSigner};
use trustmesh_ca_server::client::{CaEndpoint, Credentials};
use trustmesh_ca_server::jwt_authority::JwtAuthority;
use trustmesh_ca_server::limits::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use trustmesh_ca_server::server::{start, IdentitySource, Options, Running};
use trustmesh_identity::TrustDomain;

pub const ISS: &str = "https://issuer.test";

pub fn csr(uri: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub running: Running,
    pub ep: CaEndpoint,
    /// Credentials of `system:serviceaccount:ns1:sa1`.
    pub creds: Credentials,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts a CA for `example.org` on loopback; `tweak` adjusts the options first.
pub async fn start_ca(tweak: impl FnOnce(&mut Options)) -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    CertificateAuthority::init_root(&td, &InitOptions::root())
        .unwrap()
        .write(dir.path())
        .unwrap();
    let ca = CertificateAuthority::load(dir.path()).unwrap();

    let signing = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = signing.public_key_raw();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "a",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();

    let signer = Arc::new(CaSigner { ca });
    let identity: IdentitySource = {
        let s = signer.clone();
        Arc::new(move || server_identity(&s.ca, &["localhost".into()], Duration::from_secs(3600)))
    };
    let mut opts = Options {
        server_cert_ttl: Duration::from_secs(3600),
        trust_domain: td,
        listen: "127.0.0.1:0".parse().unwrap(),
        bundle_listen: None,
        issuers: vec![IssuerConfig {
            issuer: ISS.into(),
            jwks: JwksSource::File(jwks_path),
        }],
        audiences: vec!["istio-ca".into()],
        max_ttl: Duration::from_secs(3600),
        default_ttl: Duration::from_secs(3600),
        jwt_authority: Some(JwtAuthority::load_or_create(&dir.path().join("jwt-key.pem")).unwrap()),
        token_cache_max_age: DEFAULT_MAX_AGE,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
    };
    tweak(&mut opts);
    let running = start(signer, identity, opts).await.unwrap();

    let claims = serde_json::json!({"iss": ISS, "aud": "istio-ca", "exp": now() + 300,
        "sub": "system:serviceaccount:ns1:sa1"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("a".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&signing.serialize_der()),
    )
    .unwrap();
    let ep = CaEndpoint {
        address: format!("https://{}", running.addr),
        root_pem: std::fs::read(dir.path().join("root-cert.pem")).unwrap(),
        server_name: "localhost".into(),
    };
    TestCa {
        dir,
        running,
        ep,
        creds: Credentials {
            bearer_token: Some(token),
            client_cert: None,
        },
    }
}
