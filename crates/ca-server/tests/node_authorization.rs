//! How the CA routes bearer tokens and `ImpersonatedIdentity`, in-process: tokens of a
//! configured JWKS issuer are verified offline and all others go to the token reviewer; a node
//! proxy's request for another identity is granted only by the node authorizer, refused without
//! one, and the certificate names the identity granted. The Kubernetes implementations of both
//! traits run against a real API server in `trustmesh/tests/kube_e2e.rs`; here they are stand-ins
//! answering from fixed tables, so these rules are checked in every CI run.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use trustmesh_ca_server::auth::node::NodeAuthorizer;
use trustmesh_ca_server::auth::review::{PodRef, Review, ServiceAccount, TokenReviewer};
use trustmesh_ca_server::client::{create_certificate, create_certificate_for, Credentials};
use trustmesh_identity::SpiffeId;
use trustmesh_testkit::ca_server::{csr, start_ca};

/// Answers as an API server would for three tokens.
struct Reviews;

impl TokenReviewer for Reviews {
    fn review<'a>(&'a self, token: &'a str) -> Review<'a> {
        Box::pin(async move {
            let sa = |ns: &str, name: &str, pod: Option<&str>| ServiceAccount {
                namespace: ns.into(),
                name: name.into(),
                issuer: "review".into(),
                pod: pod.map(|p| PodRef {
                    name: p.into(),
                    uid: "uid-1".into(),
                }),
            };
            match token {
                "node-token" => Ok(sa("istio-system", "ztunnel", Some("ztunnel-a"))),
                "web-token" => Ok(sa("shop", "web", None)),
                _ => Err("the API server refused it".into()),
            }
        })
    }
}

/// ztunnel on node A, where only `shop/web` runs.
struct NodeA;

impl NodeAuthorizer for NodeA {
    fn authorize(&self, caller: &ServiceAccount, requested: &SpiffeId) -> Result<(), String> {
        let node_proxy = caller.namespace == "istio-system" && caller.name == "ztunnel";
        if node_proxy && caller.pod.is_some() && requested.service_account() == Some("web") {
            Ok(())
        } else {
            Err(format!("no pod of {requested} runs on node A"))
        }
    }
}

fn bearer(token: &str) -> Credentials {
    Credentials {
        bearer_token: Some(token.into()),
        client_cert: None,
    }
}

const WEB: &str = "spiffe://example.org/ns/shop/sa/web";
const DB: &str = "spiffe://example.org/ns/shop/sa/db";

#[tokio::test]
async fn tokens_are_reviewed_and_impersonation_needs_the_node_authorizer() {
    let ca = start_ca(|o| {
        o.reviewer = Some(Arc::new(Reviews));
        o.node_authorizer = Some(Arc::new(NodeA));
    })
    .await;
    let ep = &ca.ep;
    // A token no JWKS issuer knows is reviewed; the reviewer's answer decides.
    assert!(
        create_certificate(ep, &bearer("web-token"), csr(WEB), Duration::ZERO)
            .await
            .is_ok()
    );
    let e = create_certificate(ep, &bearer("stolen"), csr(WEB), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("TokenReview"), "{}", e.message());
    // The JWKS issuer's tokens are still verified offline.
    assert!(create_certificate(
        ep,
        &ca.creds,
        csr("spiffe://example.org/ns/ns1/sa/sa1"),
        Duration::ZERO
    )
    .await
    .is_ok());

    // The node proxy obtains what the authorizer grants, and the certificate names it.
    let chain = create_certificate_for(
        ep,
        &bearer("node-token"),
        csr(WEB),
        Duration::ZERO,
        Some(WEB),
    )
    .await
    .expect("web runs on node A");
    let leaf = trustmesh_identity::pem::certs_from_pem(chain[0].as_bytes()).unwrap();
    assert_eq!(trustmesh_testkit::pki::uri_sans(&leaf[0]), [WEB]);
    let e = create_certificate_for(ep, &bearer("node-token"), csr(DB), Duration::ZERO, Some(DB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("no pod of"), "{}", e.message());
    // Naming an identity does not let the CSR ask for another one.
    let e = create_certificate_for(
        ep,
        &bearer("node-token"),
        csr(DB),
        Duration::ZERO,
        Some(WEB),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A workload's token impersonates nobody, nor does another trust domain's identity pass.
    let e = create_certificate_for(ep, &bearer("web-token"), csr(DB), Duration::ZERO, Some(DB))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let other = "spiffe://other.org/ns/shop/sa/web";
    let e = create_certificate_for(
        ep,
        &bearer("node-token"),
        csr(other),
        Duration::ZERO,
        Some(other),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("trust domain"), "{}", e.message());
    // Naming one's own identity is an ordinary request.
    assert!(create_certificate_for(
        ep,
        &bearer("web-token"),
        csr(WEB),
        Duration::ZERO,
        Some(WEB)
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn without_a_node_authorizer_impersonation_is_refused() {
    let ca = start_ca(|o| o.reviewer = Some(Arc::new(Reviews))).await;
    let e = create_certificate_for(
        &ca.ep,
        &bearer("node-token"),
        csr(WEB),
        Duration::ZERO,
        Some(WEB),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("node authorization needs"),
        "{}",
        e.message()
    );
}
