//! SIGTERM under load finishes what was accepted, in every binary (issue #12), with real
//! processes on loopback: `ca serve` with CreateCertificate calls in flight, and the node agent
//! with Workload API calls in flight and streams open. (The proxy's drill with HTTP requests in
//! flight is `fault_drills.rs`'s `sigterm_under_load_finishes_what_was_accepted`; here its TCP
//! relays, which run until the drain deadline, and a second signal.)
//!
//! Which calls a server accepted is not visible to a client: a call refused because the
//! listener had closed fails much like one cut in the middle. The server's log tells: the CA logs
//! every certificate it issues and every JWT-SVID it mints, so after the drain the clients must
//! hold exactly as many as were logged. A process that exits with calls in flight has issued
//! some whose answers never left.

mod proxy_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use tonic::Code;
use trustmesh_ca_server::client::{create_certificate, CaEndpoint, Credentials};

const ME: &str = "spiffe://cluster.local/ns/default/sa/sleep";
/// Concurrent clients, each making at most `CALLS` calls back to back for at most `LOAD_FOR`.
const CLIENTS: usize = 16;
const CALLS: usize = 400;
const LOAD_FOR: Duration = Duration::from_secs(20);
/// How long load runs before the signal.
const BEFORE_SIGNAL: Duration = Duration::from_secs(1);
/// A drained process is gone within this (their deadlines are longer; draining takes less).
const EXIT_BOUND: Duration = Duration::from_secs(10);

fn csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(ME.try_into().unwrap())];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `ca serve` for `ca_dir` on an ephemeral port, with its log kept.
fn start_ca(ca_dir: &Path, jwks: &Path, jwt_key: &Path) -> (Proc, Log, std::net::SocketAddr) {
    let (p, log, grpc, _) = start_ca_args_logged(&[
        "ca",
        "serve",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--jwt-issuer",
        ISSUER,
        "--jwks",
        jwks.to_str().unwrap(),
        "--audience",
        AUDIENCE,
        "--jwt-authority-key",
        jwt_key.to_str().unwrap(),
    ]);
    (p, log, grpc)
}

/// How many lines of `log` contain `needle`, once the count has stopped moving (the reader
/// thread may still be catching up with what the process wrote).
fn settled_count(log: &Log, needle: &str) -> usize {
    let mut last = log.count(needle);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let now = log.count(needle);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// How a call fails that a closing server did not take in: the listener was closed, the
/// connection closed before the request was sent, or HTTP/2 GOAWAY refused it. (An answer the
/// server gives, INTERNAL for a call cut inside it included, is none of these.)
fn not_taken_in(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// What one client saw: calls answered, and the error that ended its loop, if any.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    ended_by: Option<(Code, String)>,
}

/// One client's loop: `call` (given the call's number) at most [`CALLS`] times and not past
/// `stop_at`, counting answers; the first error ends the loop and is kept.
async fn calls_until<F, Fut>(stop_at: Instant, mut call: F) -> Seen
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut seen = Seen::default();
    for n in 0..CALLS {
        if Instant::now() > stop_at {
            break;
        }
        match call(n).await {
            Ok(()) => seen.answered += 1,
            Err(s) => {
                seen.ended_by = Some((s.code(), s.message().to_string()));
                break;
            }
        }
    }
    seen
}

#[test]
fn ca_serve_sigterm_under_load_finishes_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let jwks = dir.path().join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k1");
    let (mut ca, log, grpc) = start_ca(&ca_dir, &jwks, &dir.path().join("jwt-key.pem"));
    let ep = CaEndpoint {
        address: format!("https://{grpc}"),
        root_pem: std::fs::read(ca_dir.join("root-cert.pem")).unwrap(),
        server_name: "trustmesh-ca".into(),
    };
    let creds = Credentials {
        bearer_token: Some(issuer.token("default", "sleep")),
        client_cert: None,
    };

    let rt = runtime();
    let seen: Vec<Seen> = rt.block_on(async {
        let stop_at = Instant::now() + LOAD_FOR;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (ep, creds, csr) = (ep.clone(), creds.clone(), csr());
                tokio::spawn(async move {
                    calls_until(stop_at, |_| {
                        let (ep, creds, csr) = (&ep, &creds, csr.clone());
                        async move {
                            let ttl = Duration::from_secs(600);
                            let chain = create_certificate(ep, creds, csr, ttl).await?;
                            assert!(!chain.is_empty());
                            Ok(())
                        }
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(BEFORE_SIGNAL).await;
        send_signal(&ca, libc::SIGTERM);
        let mut seen = Vec::new();
        for c in clients {
            seen.push(c.await.unwrap());
        }
        seen
    });
    let (status, took) = exit_within(&mut ca, EXIT_BOUND);
    assert!(status.success(), "{status:?}: {}", log.text());
    let answered: usize = seen.iter().map(|s| s.answered).sum();
    eprintln!("{answered} certificates issued; ca serve exited {took:?} after the load ended");
    assert!(answered >= CLIENTS, "load was running: {seen:?}");
    for s in &seen {
        // After the signal nothing new gets in: the loops end on an unreachable CA.
        let (code, message) = s.ended_by.as_ref().expect("no loop outlived the CA");
        assert!(not_taken_in(*code), "{code:?}: {message}");
    }
    // Every call the CA took in was answered: the clients hold every certificate it issued.
    let issued = settled_count(&log, "issued certificate");
    assert_eq!(issued, answered, "{seen:?}");
    assert!(log.text().contains("drained"), "{}", log.text());
}

mod workload_api {
    use std::path::Path;

    use tonic::transport::{Channel, Endpoint, Uri};
    use trustmesh_agent::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;

    pub type Client = SpiffeWorkloadApiClient<Channel>;

    /// A client of the Workload API on the unix socket `sock` (its own connection).
    pub async fn connect(sock: &Path) -> Result<Client, tonic::transport::Error> {
        let sock = sock.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let sock = sock.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(sock).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await?;
        Ok(SpiffeWorkloadApiClient::new(channel))
    }

    /// `body` with the security header every Workload API call carries.
    pub fn request<T>(body: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        r
    }
}

#[test]
fn agent_sigterm_under_load_finishes_what_was_accepted() {
    use trustmesh_agent::pb::{JwtsvidRequest, X509svidRequest};

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let ca_dir = base.join("cacerts");
    make_ca(&ca_dir);
    let jwks = base.join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k1");
    let (_ca, ca_log, grpc) = start_ca(&ca_dir, &jwks, &base.join("jwt-key.pem"));
    let token = base.join("istio-token");
    std::fs::write(&token, issuer.token("default", "sleep")).unwrap();
    let sock = base.join("run/agent.sock");
    let config = base.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "trust_domain: cluster.local\n\
             ca: {{address: \"https://{grpc}\", root_cert: {root}, server_name: trustmesh-ca}}\n\
             token_file: {token}\n\
             identity: {{namespace: default, service_account: sleep}}\n\
             output_dir: {out}\nworkload_api_socket: {sock}\nttl: 1h\n",
            root = ca_dir.join("root-cert.pem").display(),
            token = token.display(),
            out = base.join("certs").display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let (mut agent, agent_log) =
        Proc::spawn_logged(&["agent", "--config", config.to_str().unwrap()]);
    agent.wait_line("workload-api ", Duration::from_secs(10));

    let rt = runtime();
    let (seen, streams) = rt.block_on(async {
        // Two X.509-SVID streams, open from before the signal: each must end, not break.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut streams = Vec::new();
        while streams.len() < 2 {
            assert!(Instant::now() < deadline, "no SVID served");
            let Ok(mut client) = workload_api::connect(&sock).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(resp) = client
                .fetch_x509svid(workload_api::request(X509svidRequest {}))
                .await
            else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = resp.into_inner();
            let first = stream
                .message()
                .await
                .expect("first SVID")
                .expect("a message");
            assert_eq!(first.svids[0].spiffe_id, ME);
            streams.push(tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ok(()),
                        Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
            }));
        }

        // Clients asking for JWT-SVIDs, each for audiences of its own, so every call goes on
        // to the CA (the agent caches tokens per audience) and is in flight for a while.
        let stop_at = Instant::now() + LOAD_FOR;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let sock = sock.clone();
                tokio::spawn(async move {
                    let client = workload_api::connect(&sock).await.unwrap();
                    calls_until(stop_at, |n| {
                        // A clone shares the connection; each call needs its own handle.
                        let mut client = client.clone();
                        let req = workload_api::request(JwtsvidRequest {
                            audience: vec![format!("drain-{i}-{n}")],
                            spiffe_id: String::new(),
                        });
                        async move {
                            let r = client.fetch_jwtsvid(req).await?;
                            assert_eq!(r.into_inner().svids[0].spiffe_id, ME);
                            Ok(())
                        }
                    })
                    .await
                })
            })
            .collect();
        tokio::time::sleep(BEFORE_SIGNAL).await;
        send_signal(&agent, libc::SIGTERM);
        let mut seen = Vec::new();
        for c in clients {
            seen.push(c.await.unwrap());
        }
        let mut ended = Vec::new();
        for s in streams {
            ended.push(tokio::time::timeout(EXIT_BOUND, s).await);
        }
        (seen, ended)
    });
    let (status, took) = exit_within(&mut agent, EXIT_BOUND);
    assert!(status.success(), "{status:?}: {}", agent_log.text());
    let answered: usize = seen.iter().map(|s| s.answered).sum();
    eprintln!("{answered} JWT-SVIDs fetched; the agent exited {took:?} after the load ended");
    assert!(answered >= CLIENTS, "load was running: {seen:?}");
    for s in &seen {
        let (code, message) = s.ended_by.as_ref().expect("no loop outlived the agent");
        assert!(not_taken_in(*code), "{code:?}: {message}");
    }
    for s in streams {
        let ended = s.expect("the stream ended at the drain").unwrap();
        assert_eq!(ended, Ok(()), "a stream ends cleanly, not cut");
    }
    // Every call the agent took in was answered: the clients hold every JWT-SVID the CA minted
    // for them.
    let minted = settled_count(&ca_log, "minted JWT-SVID");
    assert_eq!(minted, answered, "{seen:?}");
    assert!(agent_log.text().contains("drained"), "{}", agent_log.text());
}

/// The proxy's access-log reason for a relay the drain closed.
const STOPPED: &str = "closed at shutdown: the drain deadline passed or a second signal came";

/// A proxy with one plaintext TCP listener in front of an echo server, and a relay open
/// through it.
async fn proxy_with_a_relay(dir: &Path) -> (proxy_support::Proxy, u16, tokio::net::TcpStream) {
    use proxy_support::{echo_backend, free_port, policy_dir, Ca, Cfg, Proxy};
    let ca = Ca::new(dir, "mesh", TD);
    let cert = ca.issue("server", &format!("spiffe://{TD}/ns/foo/sa/app"));
    let pol = policy_dir(dir, "policies");
    let backend = echo_backend().await;
    let (port, admin) = (free_port(), free_port());
    let mut cfg = Cfg::http_app(&ca, &cert, &pol, port, backend, admin);
    cfg.inbound[0].protocol = "tcp";
    let proxy = Proxy::start(dir, "app", &cfg.yaml(), admin).await;
    let mut relay = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    echo(&mut relay, b"before").await;
    (proxy, port, relay)
}

async fn echo(s: &mut tokio::net::TcpStream, what: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(what).await.unwrap();
    let mut back = vec![0u8; what.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(back, what);
}

/// Resolves once the relay is closed by the proxy (bounded by `limit`).
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(limit, s.read(&mut buf))
        .await
        .expect("the relay was closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, not more bytes");
}

fn kill(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// As Envoy's TCP proxy: a relay open at SIGTERM keeps carrying bytes through the drain while
/// readiness answers 503 and the listener refuses newcomers, and is closed at `timeouts.terminationDrain` (5 s by
/// default), its access-log line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_keeps_tcp_relays_until_the_drain_deadline() {
    use proxy_support::{http_get, within};
    let tmp = tempfile::tempdir().unwrap();
    let (mut proxy, port, mut relay) = proxy_with_a_relay(tmp.path()).await;
    let admin = proxy.admin;
    kill(&proxy.child, libc::SIGTERM);
    let signalled = Instant::now();
    let unready = within(Duration::from_secs(3), || async move {
        matches!(http_get(admin, "/healthz/ready").await, Some((503, _)))
    })
    .await;
    assert!(
        unready.is_some(),
        "readiness 503 while draining: {}",
        proxy.logs()
    );
    let refused = within(Duration::from_secs(3), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(refused.is_some(), "the listener closes at the drain");
    echo(&mut relay, b"during the drain").await;

    closed_within(&mut relay, Duration::from_secs(10)).await;
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(4500) && closed_after < Duration::from_secs(8),
        "closed {closed_after:?} after the signal, terminationDrain is 5 s"
    );
    let deadline = Instant::now() + EXIT_BOUND;
    let status = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}: {}", proxy.logs());
    let log = proxy.access_log();
    let line = log
        .lines()
        .find(|l| l.contains("\"protocol\":\"tcp\""))
        .unwrap_or_else(|| panic!("no line for the relay: {log}"));
    assert!(line.contains(STOPPED), "{line}");
}

/// A second SIGTERM does not wait for the deadline: what is still open is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_the_proxy_at_once() {
    use proxy_support::{http_get, within};
    let tmp = tempfile::tempdir().unwrap();
    let (mut proxy, _, mut relay) = proxy_with_a_relay(tmp.path()).await;
    let admin = proxy.admin;
    kill(&proxy.child, libc::SIGTERM);
    let unready = within(Duration::from_secs(3), || async move {
        matches!(http_get(admin, "/healthz/ready").await, Some((503, _)))
    })
    .await;
    assert!(unready.is_some(), "draining: {}", proxy.logs());
    kill(&proxy.child, libc::SIGINT);
    let again = Instant::now();
    closed_within(&mut relay, Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not stop at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}: {}", proxy.logs());
    assert!(
        again.elapsed() < Duration::from_secs(2),
        "{:?}",
        again.elapsed()
    );
    assert!(
        proxy
            .logs()
            .contains("SIGINT received again: stopping at once"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.access_log().contains(STOPPED),
        "{}",
        proxy.access_log()
    );
}
