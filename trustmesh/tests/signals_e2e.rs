//! Signals as daemons handle them (issue #11): SIGHUP, SIGUSR1 and SIGUSR2 no longer kill the
//! long-running commands; SIGTERM still stops them cleanly.

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
            "trust_domain: cluster.local\n\
             ca: {{address: \"https://{grpc}\", root_cert: {root}, server_name: trustmesh-ca}}\n\
             token_file: {token}\n\
             identity: {{namespace: default, service_account: sleep}}\n\
             output_dir: {out}\nworkload_api_socket: {sock}\nttl: 1h\n",
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
