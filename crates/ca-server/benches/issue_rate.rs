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
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use trustmesh_ca_server::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use trustmesh_ca_server::pb::IstioCertificateRequest;
use trustmesh_testkit::ca_server::{csr, start_ca, TD};

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
    // As `ca serve` runs by default: each client's token is verified once.
    let ca = start_ca(|o| o.jwt_authority = None).await;

    // Everything the clients send is prepared before timing starts.
    let mut work = Vec::new();
    for c in 0..a.clients {
        let sa = format!("sa{c}");
        let token = ca.token("bench", &sa, 3600);
        let id = format!("spiffe://{TD}/ns/bench/sa/{sa}");
        let csrs: Vec<String> = (0..CSRS_PER_CLIENT).map(|_| csr(&id)).collect();
        let channel = Endpoint::from_shared(ca.ep.address.clone())
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca.ep.root_pem))
                    .domain_name(ca.ep.server_name.clone()),
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
    ca.running.shutdown();
    (issued.load(Ordering::Relaxed), elapsed)
}
