//! The control plane end to end (tier 2): `trustmesh control` serving real `trustmesh proxy`
//! sidecars that have no policy, registry or mesh files, only `controlPlane:` and their
//! certificate. A policy edit reaches every sidecar and is enforced; a control plane killed
//! leaves enforcement running and is rejoined; a push a sidecar cannot apply is NACKed, shown
//! by `proxy-status`, and applied in no part; two replicas serve the same answers and a sidecar
//! fails over; a sidecar authenticated as one workload can never get another's configuration
//! or certificate.

mod control;

use std::time::Duration;

use control::*;
use trustmesh_testkit::net::wait_for;

const DENY_SECRET: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-secret, namespace: foo }
spec:
  selector: { matchLabels: { app: server } }
  action: DENY
  rules:
  - to: [ { operation: { paths: [\"/secret\"] } } ]
";

#[test]
fn a_policy_edit_reaches_every_sidecar_and_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    let cp = Control::start(&mesh, 0, "cp-a", &[]);
    let pair = start_pair(&mesh, &[cp.grpc]);
    assert_eq!(status(pair.out, "/secret"), 200, "no policy yet");

    mesh.write("deny.yaml", DENY_SECRET);
    wait_for("the DENY enforced", Duration::from_secs(5), || {
        (status(pair.out, "/secret") == 403).then_some(())
    });
    assert_eq!(status(pair.out, "/open"), 200, "only /secret is denied");
    wait_for("both sidecars in sync", Duration::from_secs(5), || {
        in_sync(&cp, &["server", "client"]).then_some(())
    });
    let (code, _) = proxy_status(&[&cp]);
    assert_eq!(
        code, 0,
        "proxy-status exits 0 when every sidecar is in sync"
    );

    // A change in another namespace is nobody's business here: nothing is sent to either.
    let before = proxies(&cp.syncz());
    mesh.write(
        "bar.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: bar-only, namespace: bar }\nspec: { action: DENY, rules: [ {} ] }\n",
    );
    wait_for(
        "the control plane saw the change",
        Duration::from_secs(5),
        || (cp.syncz()["resources"].as_u64() == Some(2)).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = proxies(&cp.syncz());
    for (id, p) in &before {
        assert_eq!(
            p["pushes"], after[id]["pushes"],
            "{id} was sent something for a policy of namespace bar"
        );
    }
    assert_eq!(
        status(pair.out, "/open"),
        200,
        "bar's DENY-all does not reach foo"
    );

    // Removing the policy reaches them too.
    mesh.remove("deny.yaml");
    wait_for("the DENY lifted", Duration::from_secs(5), || {
        (status(pair.out, "/secret") == 200).then_some(())
    });
}

#[test]
fn enforcement_survives_a_control_plane_outage_and_the_sidecars_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    let port = free();
    mesh.write("deny.yaml", DENY_SECRET);
    let mut cp = Control::start(&mesh, port, "cp-a", &[]);
    let pair = start_pair(&mesh, &[cp.grpc]);
    assert_eq!(status(pair.out, "/secret"), 403);

    assert_eq!(
        sidecar_metric(pair.server_admin, "trustmesh_xds_connected "),
        Some(1)
    );
    cp.proc.kill();
    drop(cp);
    wait_for(
        "the sidecar noticing the outage",
        Duration::from_secs(5),
        || (sidecar_metric(pair.server_admin, "trustmesh_xds_connected ") == Some(0)).then_some(()),
    );
    for _ in 0..10 {
        assert_eq!(
            status(pair.out, "/secret"),
            403,
            "the DENY holds without the control plane"
        );
        assert_eq!(
            status(pair.out, "/open"),
            200,
            "traffic flows without the control plane"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A change made while it is down is served when it is back.
    mesh.remove("deny.yaml");
    let cp = Control::start(&mesh, port, "cp-a2", &[]);
    wait_for(
        "the sidecars reconnected and took the change",
        Duration::from_secs(30),
        || {
            (status(pair.out, "/secret") == 200 && in_sync(&cp, &["server", "client"]))
                .then_some(())
        },
    );
}

#[test]
fn a_push_a_sidecar_cannot_apply_is_nacked_shown_and_applied_in_no_part() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    // A federated trust domain's root, served to every sidecar from a file the operator edits.
    let other = dir.path().join("other-ca");
    trustmesh_testkit::tools::run_ok(std::process::Command::new(bin()).args([
        "ca",
        "init",
        "--trust-domain",
        "other.example",
        "--out",
        other.to_str().unwrap(),
    ]));
    let bundle = dir.path().join("other-bundle.pem");
    std::fs::copy(other.join("root-cert.pem"), &bundle).unwrap();
    let flag = format!("other.example={}", bundle.display());
    mesh.write("deny.yaml", DENY_SECRET);
    let cp = Control::start(&mesh, 0, "cp-a", &["--trust-bundle", &flag]);
    let pair = start_pair(&mesh, &[cp.grpc]);
    wait_for("in sync", Duration::from_secs(5), || {
        in_sync(&cp, &["server", "client"]).then_some(())
    });

    // The operator puts a workload certificate (not a CA) where the root belongs.
    let leaf = mesh.svid("other", "leaf");
    let tmp = dir.path().join("bundle.tmp");
    std::fs::copy(leaf.join("cert-chain.pem"), &tmp).unwrap();
    std::fs::rename(&tmp, &bundle).unwrap();
    let nack = wait_for(
        "a NACK shown by proxy-status",
        Duration::from_secs(5),
        || {
            let p = proxies(&cp.syncz());
            let s = p.get(&format!("spiffe://{TD}/ns/foo/sa/server"))?;
            let n = s["nacks"].as_array()?.first()?.as_str()?.to_string();
            Some((
                n,
                s["types"]["TrustBundle"].as_str().unwrap_or("").to_string(),
            ))
        },
    );
    assert!(
        nack.0.contains("other.example"),
        "the reason names the bundle: {}",
        nack.0
    );
    assert_eq!(nack.1, "NACKED");
    let (code, _) = proxy_status(&[&cp]);
    assert_eq!(
        code, 1,
        "proxy-status exits 1 while a sidecar is out of sync"
    );
    assert!(
        cp.metrics()
            .lines()
            .any(|l| l.starts_with("pilot_total_xds_rejects ") && !l.ends_with(" 0")),
        "NACKs are counted"
    );
    assert!(
        sidecar_metric(pair.server_admin, "trustmesh_xds_pushes_rejected_total ").unwrap_or(0) >= 1,
        "the sidecar counts what it refused"
    );
    // Nothing of it applied, and the sidecar enforces what it had.
    assert_eq!(status(pair.out, "/secret"), 403);
    assert_eq!(status(pair.out, "/open"), 200);

    // A policy file that stops being YAML: the control plane keeps serving its last good
    // contents and says so; the DENY stays.
    mesh.write("deny.yaml", "apiVersion: [unclosed\n");
    wait_for("the problem reported", Duration::from_secs(5), || {
        let doc = cp.syncz();
        let problems = doc["problems"].as_array()?.clone();
        problems
            .iter()
            .any(|p| {
                p.as_str()
                    .is_some_and(|s| s.contains("deny.yaml") && s.contains("last good"))
            })
            .then_some(())
    });
    assert_eq!(
        status(pair.out, "/secret"),
        403,
        "the last good DENY is still served"
    );

    // Fixed: the bundle is taken and every sidecar is in sync again.
    std::fs::copy(other.join("root-cert.pem"), &bundle).unwrap();
    mesh.write("deny.yaml", DENY_SECRET);
    wait_for("in sync again", Duration::from_secs(5), || {
        in_sync(&cp, &["server", "client"]).then_some(())
    });
}

#[test]
fn two_replicas_answer_alike_and_a_sidecar_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    mesh.write("deny.yaml", DENY_SECRET);
    let mut a = Control::start(&mesh, 0, "cp-a", &[]);
    let b = Control::start(&mesh, 0, "cp-b", &[]);
    assert_eq!(
        a.syncz()["version"],
        b.syncz()["version"],
        "two replicas on one source serve one version"
    );
    let pair = start_pair(&mesh, &[a.grpc, b.grpc]);
    assert_eq!(status(pair.out, "/secret"), 403);
    wait_for("both sidecars on replica a", Duration::from_secs(5), || {
        (proxies(&a.syncz()).len() == 2).then_some(())
    });
    a.proc.kill();
    wait_for(
        "both sidecars on replica b, in sync",
        Duration::from_secs(20),
        || in_sync(&b, &["server", "client"]).then_some(()),
    );
    mesh.remove("deny.yaml");
    wait_for("replica b's push enforced", Duration::from_secs(5), || {
        (status(pair.out, "/secret") == 200).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_gets_only_its_own_workloads_configuration_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    mesh.write(
        "policies.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: for-client, namespace: foo }\n\
         spec: { selector: { matchLabels: { app: client } }, action: ALLOW, rules: [ {} ] }\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: for-server, namespace: foo }\n\
         spec: { selector: { matchLabels: { app: server } }, action: ALLOW, rules: [ {} ] }\n\
         ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: other-ns, namespace: bar }\nspec: { action: ALLOW, rules: [ {} ] }\n\
         ---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: { name: client-vm, namespace: foo }\n\
         spec: { address: 198.18.0.10, serviceAccount: client, labels: { app: client } }\n",
    );
    let jwks = dir.path().join("jwks.json");
    let issuer = trustmesh_testkit::jwt::TokenIssuer::new(&jwks, "k8s");
    let cp = Control::start(
        &mesh,
        0,
        "cp-a",
        &[
            "--jwt-issuer",
            trustmesh_testkit::jwt::K8S_ISSUER,
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    let svid = mesh.svid("foo", "client");
    let types = [trustmesh_xds::types::ISTIO_RESOURCE];
    let wait = Duration::from_millis(1500);

    let own = xds_as(
        cp.grpc,
        &mesh.root(),
        &svid,
        "foo",
        &[("app", "client")],
        &types,
        wait,
    )
    .await;
    let names = own.names.get(types[0]).cloned().unwrap_or_default();
    assert!(
        names.contains(&"AuthorizationPolicy/foo/for-client".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("for-server")),
        "another workload's policy: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("/bar/")),
        "another namespace's policy: {names:?}"
    );

    // At bootstrap a service-account token does what the certificate does, no more.
    let token = trustmesh_xds::client::Credentials {
        client_cert: None,
        bearer_token: Some(issuer.token("foo", "client")),
    };
    let by_token = xds_with(
        cp.grpc,
        &mesh.root(),
        token.clone(),
        "foo",
        &[("app", "client")],
        &types,
        wait,
    )
    .await;
    assert_eq!(
        by_token.names.get(types[0]),
        Some(&names),
        "{:?}",
        by_token.lost
    );
    let wrong = xds_with(
        cp.grpc,
        &mesh.root(),
        token,
        "bar",
        &[("app", "client")],
        &types,
        wait,
    )
    .await;
    assert!(wrong.names.is_empty() && !wrong.lost.is_empty());
    let forged = trustmesh_xds::client::Credentials {
        client_cert: None,
        bearer_token: Some("not-a-token".into()),
    };
    let nobody = xds_with(
        cp.grpc,
        &mesh.root(),
        forged,
        "foo",
        &[("app", "client")],
        &types,
        wait,
    )
    .await;
    assert!(nobody.names.is_empty());
    assert!(
        nobody.lost.iter().any(|w| w.contains("UNAUTHENTICATED")),
        "{:?}",
        nobody.lost
    );

    // Claiming another namespace, or another workload's labels, is refused.
    let ns = xds_as(
        cp.grpc,
        &mesh.root(),
        &svid,
        "bar",
        &[("app", "client")],
        &types,
        wait,
    )
    .await;
    assert!(ns.names.is_empty(), "{:?}", ns.names);
    assert!(
        ns.lost
            .iter()
            .any(|w| w.contains("PERMISSION_DENIED") && w.contains("NAMESPACE")),
        "{:?}",
        ns.lost
    );
    let labels = xds_as(
        cp.grpc,
        &mesh.root(),
        &svid,
        "foo",
        &[("app", "server")],
        &types,
        wait,
    )
    .await;
    assert!(labels.names.is_empty(), "{:?}", labels.names);
    assert!(
        labels.lost.iter().any(|w| w.contains("WorkloadEntry")),
        "{:?}",
        labels.lost
    );
    // ztunnel's mesh-wide types are for node proxies only.
    let ambient = xds_as(
        cp.grpc,
        &mesh.root(),
        &svid,
        "foo",
        &[("app", "client")],
        &[trustmesh_xds::types::AUTHORIZATION],
        wait,
    )
    .await;
    assert!(ambient.names.is_empty());
    assert!(
        ambient.lost.iter().any(|w| w.contains("PERMISSION_DENIED")),
        "{:?}",
        ambient.lost
    );

    // The CA on the same port certifies the caller's own identity only.
    let endpoint = trustmesh_ca_server::client::CaEndpoint {
        address: format!("https://{}", cp.grpc),
        root_pem: std::fs::read(mesh.root()).unwrap(),
        server_name: "istiod.istio-system.svc".into(),
    };
    let creds = trustmesh_ca_server::client::Credentials {
        bearer_token: None,
        client_cert: Some((
            std::fs::read_to_string(svid.join("cert-chain.pem")).unwrap(),
            std::fs::read_to_string(svid.join("key.pem")).unwrap(),
        )),
    };
    let other = trustmesh_testkit::pki::csr_for(&format!("spiffe://{TD}/ns/foo/sa/server")).1;
    let refused =
        trustmesh_ca_server::client::create_certificate(&endpoint, &creds, other, Duration::ZERO)
            .await;
    assert!(
        refused.is_err(),
        "a certificate for another workload was issued"
    );
    let mine = trustmesh_testkit::pki::csr_for(&format!("spiffe://{TD}/ns/foo/sa/client")).1;
    let issued =
        trustmesh_ca_server::client::create_certificate(&endpoint, &creds, mine, Duration::ZERO)
            .await;
    assert!(issued.is_ok(), "{issued:?}");
}

#[test]
fn certificate_rotation_through_the_control_plane_resumes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = Mesh::new(dir.path());
    mesh.write("deny.yaml", DENY_SECRET);
    let jwks = dir.path().join("jwks.json");
    let issuer = trustmesh_testkit::jwt::TokenIssuer::new(&jwks, "k8s");
    let token = dir.path().join("token");
    std::fs::write(&token, issuer.token("foo", "server")).unwrap();
    let port = free();
    let ca_flags = [
        "--jwt-issuer",
        trustmesh_testkit::jwt::K8S_ISSUER,
        "--jwks",
        jwks.to_str().unwrap(),
    ];
    let mut cp = Control::start(&mesh, port, "cp-a", &ca_flags);
    // The server's agent gets its certificates from the control plane's CA (same port as xDS).
    let out = dir.path().join("agent-server");
    let agent_cfg = dir.path().join("agent.yaml");
    std::fs::write(
        &agent_cfg,
        format!(
            "trustDomain: {TD}\n\
             ca: {{ address: \"https://{grpc}\", rootCert: {root}, serverName: istiod.istio-system.svc }}\n\
             tokenFile: {token}\n\
             identity: {{ namespace: foo, serviceAccount: server }}\n\
             outputDir: {out}\nttl: 8s\nmaxRetryInterval: 1s\n",
            grpc = cp.grpc,
            root = mesh.root().display(),
            token = token.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let (mut agent, agent_log) =
        trustmesh_testkit::process::Proc::start_logged(std::process::Command::new(bin()).args([
            "agent",
            "--config",
            agent_cfg.to_str().unwrap(),
        ]));
    let chain = out.join("cert-chain.pem");
    let first = wait_for(
        "the agent's first certificate",
        Duration::from_secs(15),
        || std::fs::read(&chain).ok().filter(|c| !c.is_empty()),
    );
    let pair = start_pair_with(&mesh, &[cp.grpc], out.clone());
    let rotated = wait_for("a rotation", Duration::from_secs(15), || {
        std::fs::read(&chain).ok().filter(|c| *c != first)
    });

    cp.proc.kill();
    wait_for(
        "the agent's renewal failing",
        Duration::from_secs(15),
        || (agent_log.count("renewal failed") >= 1).then_some(()),
    );
    assert_eq!(
        status(pair.out, "/secret"),
        403,
        "the DENY holds during the outage"
    );
    assert_eq!(
        status(pair.out, "/open"),
        200,
        "traffic flows during the outage"
    );
    assert!(agent.running(), "the agent keeps running");

    let cp = Control::start(&mesh, port, "cp-a2", &ca_flags);
    wait_for(
        "a renewal after the control plane is back",
        Duration::from_secs(15),
        || std::fs::read(&chain).ok().filter(|c| *c != rotated),
    );
    wait_for(
        "both sidecars back in sync",
        Duration::from_secs(30),
        || in_sync(&cp, &["server", "client"]).then_some(()),
    );
    assert_eq!(status(pair.out, "/secret"), 403);
    assert_eq!(status(pair.out, "/open"), 200);
}
