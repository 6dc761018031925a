//! Signals as daemons handle them (issue #11): SIGHUP, SIGUSR1 and SIGUSR2 no longer kill the
//! long-running commands; SIGTERM still stops them cleanly; SIGHUP makes the proxy reload now.

mod proxy_support;
mod support;

use std::time::Duration;

use support::*;

fn send(p: &Proc, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(p.child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn ca_server_and_agent_survive_hangup_and_user_signals() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    make_ca(&ca_dir);
    let jwks = dir.path().join("jwks.json");
    let _issuer = TokenIssuer::new(&jwks, "k1");
    let (mut ca, grpc, _) = start_ca(&ca_dir, &jwks, &[]);
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP] {
        send(&ca, sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            ca.child.try_wait().unwrap().is_none(),
            "signal {sig} killed the CA"
        );
    }
    // Still serving: the port accepts connections.
    std::net::TcpStream::connect(grpc).expect("still listening");

    // The node agent likewise.
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "trustDomain: cluster.local\n\
             ca: {{address: \"https://{grpc}\", rootCert: {root}, serverName: trustmesh-ca}}\n\
             tokenFile: {token}\n\
             identity: {{namespace: default, serviceAccount: sleep}}\n\
             outputDir: {out}\nworkloadApiSocket: {sock}\nttl: 1h\n",
            root = ca_dir.join("root-cert.pem").display(),
            token = dir.path().join("no-token-needed").display(),
            out = dir.path().join("certs").display(),
            sock = dir.path().join("run/agent.sock").display(),
        ),
    )
    .unwrap();
    let mut agent = Proc::spawn(&["agent", "--config", config.to_str().unwrap()]);
    agent.wait_line("workload-api ", Duration::from_secs(10));
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        send(&agent, sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "signal {sig} killed the agent"
        );
    }
    agent.kill();
    send(&ca, libc::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = ca.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop the CA"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reloads_on_sighup_and_ignores_user_signals() {
    use proxy_support::{
        curl_plain, free_port, http_backend, policy_dir, write_policy, Ca, Cfg, Proxy,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", "cluster.local");
    let cert = ca.issue("server", "spiffe://cluster.local/ns/foo/sa/app");
    let pol = policy_dir(dir, "policies");
    let backend = http_backend("app").await;
    let (inb, admin) = (free_port(), free_port());
    let mut cfg = Cfg::http_app(&ca, &cert, &pol, inb, backend, admin);
    // Polling so slow that only SIGHUP can explain a prompt reload.
    cfg.extra = "reloadPoll: 1m\n";
    let mut proxy = Proxy::start(dir, "app", &cfg.yaml(), admin).await;
    assert_eq!(curl_plain(inb, "/admin", &[]).await.0, 200);
    let pid = proxy.child.id() as libc::pid_t;
    for sig in [libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
    write_policy(
        &pol,
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: no-admin, namespace: foo }\n\
         spec: { action: DENY, rules: [ { to: [ { operation: { paths: [\"/admin\"] } } ] } ] }\n",
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while curl_plain(inb, "/admin", &[]).await.0 != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.alive(), "{}", proxy.logs());
    assert!(
        proxy.logs().contains("SIGHUP: reloading"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("SIGUSR1 received and ignored"),
        "{}",
        proxy.logs()
    );
}
