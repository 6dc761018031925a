//! Certificates issued per second through the real gRPC API: TLS on loopback, bearer-token
//! authentication, CSR checks and signing, with N concurrent clients each on its own HTTP/2
//! connection (as N agents would be).
//!
//! `cargo bench -p trustmesh-ca-server --bench issue_rate -- [--clients N] [--seconds S]
//! [--max-certs M]` runs for S seconds or M certificates, whichever comes first. Under
//! `cargo test` (no `--bench` argument) it does a 1-second smoke run and asserts that
//! certificates were issued. CSRs and tokens are made before the clock starts, so the figure is
//! the server's cost, not the clients' key generation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_ca_server::auth::cache::DEFAULT_MAX_AGE;
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource};
use trustmesh_ca_server::ca_signer::{server_identity, CaSigner};
use trustmesh_ca_server::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use trustmesh_ca_server::pb::IstioCertificateRequest;
use trustmesh_ca_server::server::{start, IdentitySource, Options};
use trustmesh_identity::TrustDomain;

const ISS: &str = "https://bench.issuer";
/// Distinct CSRs per client, cycled; signing does not depend on the CSR being fresh.
const CSRS_PER_CLIENT: usize = 16;

struct Args {
    clients: usize,
    seconds: f64,
    max_certs: u64,
    smoke: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let smoke = !argv.iter().any(|a| a == "--bench");
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    Args {
        clients: get("--clients").and_then(|v| v.parse().ok()).unwrap_or(8),
        seconds: get("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 1.0 } else { 5.0 }),
        max_certs: get("--max-certs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 200 } else { 1_000_000 }),
        smoke,
    }
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (issued, elapsed) = rt.block_on(run(&a));
    let rate = issued as f64 / elapsed.as_secs_f64();
    println!(
        "ca-server issue rate: {issued} certificates in {:.2}s with {} clients = {rate:.0} certs/s",
        elapsed.as_secs_f64(),
        a.clients
    );
    assert!(issued > 0, "no certificate was issued");
    if a.smoke {
        println!("1 passed, 0 failed");
    }
}

async fn run(a: &Args) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("bench.local").unwrap();
    CertificateAuthority::init_root(&td, &InitOptions::root())
        .unwrap()
        .write(dir.path())
        .unwrap();
    let ca = CertificateAuthority::load(dir.path()).unwrap();

    let signing = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = signing.public_key_raw();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "b",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..])}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();

    let signer = Arc::new(CaSigner { ca });
    let identity: IdentitySource = {
        let s = signer.clone();
        Arc::new(move || server_identity(&s.ca, &["localhost".into()], Duration::from_secs(3600)))
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
            jwt_authority: None,
            // As `ca serve` runs by default: each client's token is verified once.
            token_cache_max_age: DEFAULT_MAX_AGE,
            max_connections: trustmesh_ca_server::limits::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: trustmesh_ca_server::limits::DEFAULT_IDLE_TIMEOUT,
        },
    )
    .await
    .unwrap();
    let root = std::fs::read(dir.path().join("root-cert.pem")).unwrap();

    // Everything the clients send is prepared before timing starts.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut work = Vec::new();
    for c in 0..a.clients {
        let sa = format!("sa{c}");
        let claims = serde_json::json!({"iss": ISS, "aud": "istio-ca", "exp": now + 3600,
            "sub": format!("system:serviceaccount:bench:{sa}")});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("b".into());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&signing.serialize_der());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let csrs: Vec<String> = (0..CSRS_PER_CLIENT)
            .map(|_| {
                let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                let id = format!("spiffe://bench.local/ns/bench/sa/{sa}");
                p.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
                p.serialize_request(&k).unwrap().pem().unwrap()
            })
            .collect();
        let channel = Endpoint::from_shared(format!("https://{}", running.addr))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&root))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        work.push((IstioCertificateServiceClient::new(channel), token, csrs));
    }

    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, token, csrs) in work {
        let (issued, stop, max) = (issued.clone(), stop.clone(), a.max_certs);
        tasks.push(tokio::spawn(async move {
            let auth = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                let mut req = tonic::Request::new(IstioCertificateRequest {
                    csr: csrs[i % csrs.len()].clone(),
                    validity_duration: 3600,
                    metadata: None,
                });
                req.metadata_mut().insert("authorization", auth.clone());
                let resp = client.create_certificate(req).await.expect("issue");
                assert_eq!(resp.into_inner().cert_chain.len(), 2);
                if issued.fetch_add(1, Ordering::Relaxed) + 1 >= max {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    running.shutdown();
    (issued.load(Ordering::Relaxed), elapsed)
}
