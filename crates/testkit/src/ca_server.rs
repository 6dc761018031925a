//! The CA server in-process (tier 1), as its own tests and its issue-rate bench start it: a root
//! CA for `example.org` on disk, a JWKS with one signing key, the server started through its
//! public `start` on loopback with the options a test adjusts, and credentials for `ns1/sa1`.
//! (Behind the `ca-server` feature, so only that crate's tests build it.)

use std::sync::Arc;
use std::time::Duration;

use trustmesh_ca_server::auth::cache::DEFAULT_MAX_AGE;
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource};
use trustmesh_ca_server::ca_signer::{server_identity, CaSigner};
use trustmesh_ca_server::client::{CaEndpoint, Credentials};
use trustmesh_ca_server::jwt_authority::JwtAuthority;
use trustmesh_ca_server::limits::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use trustmesh_ca_server::server::{start, IdentitySource, Options, Running};
use trustmesh_identity::TrustDomain;

use crate::jwt::{Signer, ISTIO_CA_AUDIENCE};
use crate::pki::istio::write_root_ca;

/// The token issuer the test CA trusts.
pub const ISS: &str = "https://issuer.test";
/// The trust domain it serves.
pub const TD: &str = "example.org";

pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub running: Running,
    /// How a client reaches it: `https://<addr>`, the root, server name `localhost`.
    pub ep: CaEndpoint,
    /// Credentials of `system:serviceaccount:ns1:sa1`.
    pub creds: Credentials,
    signer: Signer,
}

impl TestCa {
    /// A bearer token from [`ISS`] for `ns/sa`, valid for `exp_in` seconds.
    pub fn token(&self, ns: &str, sa: &str, exp_in: i64) -> String {
        self.signer
            .service_account_token(ISS, ISTIO_CA_AUDIENCE, ns, sa, exp_in)
    }
}

/// Starts a CA for [`TD`] on loopback; `tweak` adjusts the options first.
pub async fn start_ca(tweak: impl FnOnce(&mut Options)) -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_root_ca(dir.path(), TD);
    let signer = Signer::new("a");
    let jwks_path = dir.path().join("jwks.json");
    signer.write_jwks(&jwks_path);

    let ca_signer = Arc::new(CaSigner::new(ca));
    let identity: IdentitySource = {
        let s = ca_signer.clone();
        Arc::new(move || {
            server_identity(
                &s.current(),
                &["localhost".into()],
                Duration::from_secs(3600),
            )
        })
    };
    let mut opts = Options {
        server_cert_ttl: Duration::from_secs(3600),
        trust_domain: TrustDomain::parse(TD).unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        bundle_listen: None,
        issuers: vec![IssuerConfig {
            issuer: ISS.into(),
            jwks: JwksSource::File(jwks_path),
        }],
        audiences: vec![ISTIO_CA_AUDIENCE.into()],
        max_ttl: Duration::from_secs(3600),
        default_ttl: Duration::from_secs(3600),
        jwt_authority: Some(JwtAuthority::load_or_create(&dir.path().join("jwt-key.pem")).unwrap()),
        token_cache_max_age: DEFAULT_MAX_AGE,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        reviewer: None,
        node_authorizer: None,
    };
    tweak(&mut opts);
    let running = start(ca_signer, identity, opts).await.unwrap();
    let ep = CaEndpoint {
        address: format!("https://{}", running.addr),
        root_pem: std::fs::read(dir.path().join("root-cert.pem")).unwrap(),
        server_name: "localhost".into(),
    };
    let creds = Credentials {
        bearer_token: Some(signer.service_account_token(ISS, ISTIO_CA_AUDIENCE, "ns1", "sa1", 300)),
        client_cert: None,
    };
    TestCa {
        dir,
        running,
        ep,
        creds,
        signer,
    }
}

/// A CSR for `uri` made with a fresh key (the key is not needed again).
pub fn csr(uri: &str) -> String {
    crate::pki::csr_for(uri).1
}
