//! The server library in-process (no CLI): issuance for the token's identity, refusal of any
//! other, and the error codes a client sees.

use std::time::Duration;

use tonic::Code;
use trustmesh_ca_server::client::{
    create_certificate, fetch_jwt_bundle, mint_jwt_svid, Credentials,
};
use trustmesh_testkit::ca_server::{csr, start_ca};

#[tokio::test]
async fn issues_only_the_tokens_identity() {
    let ca = start_ca(|_| {}).await;
    let (ep, creds) = (&ca.ep, &ca.creds);
    let now = trustmesh_testkit::pki::unix_now() as u64;
    let chain = create_certificate(
        ep,
        creds,
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO,
    )
    .await
    .expect("own identity is issued");
    assert_eq!(chain.len(), 2);

    let e = create_certificate(
        ep,
        creds,
        csr("spiffe://example.org/ns/ns1/sa/other"),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let e = create_certificate(
        ep,
        &Credentials::default(),
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // JWT-SVIDs: minted for the token's identity and verifiable with the published bundle.
    let (jwt, exp) = mint_jwt_svid(ep, creds, vec!["backend".into()], Duration::ZERO)
        .await
        .unwrap();
    assert!(
        exp > now && exp <= now + 301,
        "default JWT-SVID lifetime is 5 minutes"
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&fetch_jwt_bundle(ep).await.unwrap()).unwrap();
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
    let e = mint_jwt_svid(ep, creds, vec![], Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = mint_jwt_svid(
        ep,
        &Credentials::default(),
        vec!["backend".into()],
        Duration::ZERO,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    ca.running.shutdown();
}
