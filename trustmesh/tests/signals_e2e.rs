//! Signals as daemons handle them (issue #11): SIGHUP, SIGUSR1 and SIGUSR2 no longer kill the
//! long-running commands; SIGTERM still stops them cleanly; SIGHUP makes the proxy reload now.

mod proxy_support;
mod support;

use std::time::Duration;

use support::*;

#[test]
fn ca_server_and_agent_survive_hangup_and_user_signals() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let jwks = dir.path().join("jwks.json");
    let _issuer = TokenIssuer::new(&jwks, "k1");
    let (mut ca, grpc, _) = start_ca(&ca_dir, &jwks, &[]);
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP] {
        ca.signal(sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(ca.running(), "signal {sig} killed the CA");
    }
    // Still serving: the port accepts connections.
    std::net::TcpStream::connect(grpc).expect("still listening");

    // The node agent likewise.
    let config = dir.path().join("agent.yaml");
    let (root, token) = (
        ca_dir.join("root-cert.pem"),
        dir.path().join("no-token-needed"),
    );
    let sock = dir.path().join("run/agent.sock");
    let extra = format!("workloadApiSocket: {}\nttl: 1h\n", sock.display());
    let yaml = agent_yaml(
        &grpc.to_string(),
        &root,
        "sleep",
        &token,
        &dir.path().join("certs"),
        &extra,
    );
    std::fs::write(&config, yaml).unwrap();
    let mut agent = Proc::spawn(&["agent", "--config", config.to_str().unwrap()]);
    agent.wait_line("workload-api ", Duration::from_secs(10));
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        agent.signal(sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(agent.running(), "signal {sig} killed the agent");
    }
    agent.kill();
    ca.signal(libc::SIGTERM);
    let status = ca.exited_within(Duration::from_secs(10));
    let status = status.expect("SIGTERM did not stop the CA");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reloads_on_sighup_reopens_its_log_on_sigusr1_and_ignores_sigusr2() {
    use proxy_support::{curl_plain, http_backend, write_policy, App};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = App::new(dir);
    let backend = http_backend("app").await;
    // Polling so slow that only SIGHUP can explain a prompt reload.
    let yaml = app.cfg(backend).extra("reloadPoll: 1m\n").yaml();
    let mut proxy = proxy_support::Proxy::start(dir, "app", &yaml, app.admin).await;
    let inb = app.inb;
    assert_eq!(curl_plain(inb, "/admin", &[]).await.0, 200);
    for sig in [libc::SIGUSR1, libc::SIGUSR2] {
        proxy.signal(sig);
    }
    write_policy(
        &app.pol,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: no-admin, namespace: foo }\n\
         spec: { action: DENY, rules: [ { to: [ { operation: { paths: [\"/admin\"] } } ] } ] }\n",
    );
    proxy.signal(libc::SIGHUP);
    let reloaded = proxy_support::within(Duration::from_secs(5), || async {
        curl_plain(inb, "/admin", &[]).await.0 == 403
    })
    .await;
    assert!(
        reloaded.is_some(),
        "SIGHUP did not reload: {}",
        proxy.logs()
    );
    assert!(proxy.alive(), "{}", proxy.logs());
    assert!(
        proxy.logs().contains("SIGHUP: reloading"),
        "{}",
        proxy.logs()
    );
    // SIGUSR1 reopens the access log file, as Envoy's does (`proxy_e2e` checks the file).
    assert!(
        proxy
            .logs()
            .contains("SIGUSR1: reopening the access log file"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("SIGUSR2 received and ignored"),
        "{}",
        proxy.logs()
    );
}
