//! The server library in-process (no CLI): issuance for the token's identity, refusal of any
//! other, and the error codes a client sees.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use tonic::Code;
use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_ca_server::auth::cache::DEFAULT_MAX_AGE;
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource};
use trustmesh_ca_server::ca_signer::{server_identity, CaSigner};
use trustmesh_ca_server::client::{
    create_certificate, fetch_jwt_bundle, mint_jwt_svid, CaEndpoint, Credentials,
};
use trustmesh_ca_server::jwt_authority::JwtAuthority;
use trustmesh_ca_server::server::{start, IdentitySource, Options};
use trustmesh_identity::TrustDomain;

const ISS: &str = "https://issuer.test";

fn csr(uri: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn issues_only_the_tokens_identity() {
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
        let (s, d) = (signer.clone(), dir.path().to_path_buf());
        Arc::new(move || {
            server_identity(&d, &s.ca, &["localhost".into()], Duration::from_secs(3600))
        })
    };
    let running = start(
        signer,
        identity,
        Options {
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
            jwt_authority: Some(
                JwtAuthority::load_or_create(&dir.path().join("jwt-key.pem")).unwrap(),
            ),
            token_cache_max_age: DEFAULT_MAX_AGE,
        },
    )
    .await
    .unwrap();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": ISS, "aud": "istio-ca", "exp": now + 300,
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
    let creds = Credentials {
        bearer_token: Some(token),
        client_cert: None,
    };
    let chain = create_certificate(
        &ep,
        &creds,
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO,
    )
    .await
    .expect("own identity is issued");
    assert_eq!(chain.len(), 2);

    let e = create_certificate(
        &ep,
        &creds,
        csr("spiffe://example.org/ns/ns1/sa/other"),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let e = create_certificate(
        &ep,
        &Credentials::default(),
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // JWT-SVIDs: minted for the token's identity and verifiable with the published bundle.
    let (jwt, exp) = mint_jwt_svid(&ep, &creds, vec!["backend".into()], Duration::ZERO)
        .await
        .unwrap();
    assert!(
        exp > now && exp <= now + 301,
        "default JWT-SVID lifetime is 5 minutes"
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&fetch_jwt_bundle(&ep).await.unwrap()).unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in bundle");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["backend"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "spiffe://example.org/ns/ns1/sa/sa1");
    let e = mint_jwt_svid(&ep, &creds, vec![], Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = mint_jwt_svid(
        &ep,
        &Credentials::default(),
        vec!["backend".into()],
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    running.shutdown();
}
