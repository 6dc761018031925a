//! `trustmesh control --kubeconfig` against a real API server (tier 2; needs etcd and
//! kube-apiserver binaries given by path in `TRUSTMESH_ETCD` and `TRUSTMESH_KUBE_APISERVER`, and
//! kubectl; skipped with a SKIP line when they are not given).
//!
//! Istio's CRDs are applied with kubectl; policies are created, edited and deleted; Services
//! and pods become the registry; tokens come from `kubectl create token` and are checked with
//! TokenReview (a token for another audience, or of a deleted service account, is refused);
//! `istio-ca-root-cert` appears in every namespace, a new one included, and comes back when
//! deleted. What the control plane serves is read by our own xDS client authenticated with
//! those tokens, and certificates are asked of its CA with them.

mod cluster;
mod control;

use std::time::Duration;

use cluster::block_on;
use control::{xds_with, Control, Mesh, TD};
use trustmesh_testkit::net::wait_for;

const CRDS: &str = include_str!("cluster/istio-crds.yaml");

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata: { name: istio-system }
---
apiVersion: v1
kind: Namespace
metadata: { name: foo }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: client, namespace: foo }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: server, namespace: foo }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: ztunnel, namespace: istio-system }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: istio, namespace: istio-system }
data:
  mesh: |
    trustDomain: cluster.local
---
apiVersion: v1
kind: Service
metadata: { name: server, namespace: foo }
spec:
  selector: { app: server }
  ports: [ { name: http, port: 80, targetPort: web } ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: for-client, namespace: foo }
spec:
  selector: { matchLabels: { app: client } }
  action: DENY
  rules: [ { to: [ { operation: { paths: [ /secret ] } } ] } ]
";

/// The names of the Istio resources the control plane serves to `foo/client` holding `token`,
/// or the reasons its stream was refused.
async fn served(cp: &Control, mesh: &Mesh, token: &str) -> Result<Vec<String>, Vec<String>> {
    let creds = trustmesh_xds::client::Credentials {
        client_cert: None,
        bearer_token: Some(token.to_string()),
    };
    let types = [trustmesh_xds::types::ISTIO_RESOURCE];
    let seen = xds_with(
        cp.grpc,
        &mesh.root(),
        creds,
        "foo",
        &[("app", "client")],
        &types,
        Duration::from_millis(1500),
    )
    .await;
    match seen.names.get(types[0]) {
        Some(n) => Ok(n.clone()),
        None => Err(seen.lost),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_reads_the_cluster_and_its_ca_asks_it_about_tokens() {
    let Some((dir, k)) = cluster::start_or_skip("kubernetes tests") else {
        return;
    };
    k.apply(CRDS);
    for crd in ["authorizationpolicies", "serviceentries", "workloadentries"] {
        let name = format!(
            "crd/{crd}.{}.istio.io",
            if crd == "authorizationpolicies" {
                "security"
            } else {
                "networking"
            }
        );
        k.kubectl(&[
            "wait",
            "--for=condition=Established",
            &name,
            "--timeout=30s",
        ]);
    }
    k.apply(SETUP);
    k.running_pod(
        "foo",
        "client-1",
        "client",
        "{ app: client }",
        "198.18.44.5",
        "node-a",
    );
    k.running_pod(
        "foo",
        "server-1",
        "server",
        "{ app: server, security.istio.io/tlsMode: istio }",
        "198.18.44.6",
        "node-b",
    );
    k.running_pod(
        "istio-system",
        "ztunnel-a",
        "ztunnel",
        "{ app: ztunnel }",
        "198.18.44.2",
        "node-a",
    );

    let mesh = Mesh::new(dir.path());
    let kubeconfig = k.kubeconfig.to_str().unwrap().to_string();
    // A federated trust domain's root, served beside the CA's own.
    let other = dir.path().join("other-ca");
    control::ca_init(&other, "other.example");
    let other_root = std::fs::read_to_string(other.join("root-cert.pem")).unwrap();
    let federated = format!("other.example={}", other.join("root-cert.pem").display());
    let cp = Control::start(
        &mesh,
        0,
        "cp-k8s",
        &[
            "--kubeconfig",
            &kubeconfig,
            "--token-review-cache",
            "1s",
            "--trusted-node-account",
            "istio-system/ztunnel",
            "--trust-bundle",
            &federated,
        ],
    );

    // A token from the cluster, checked by TokenReview, opens the client's view: its policy,
    // the Service and the pods as registry entries.
    let client = k.token("foo", "client", "istio-ca");
    let want = [
        "AuthorizationPolicy/foo/for-client",
        "ServiceEntry/foo/server",
        "WorkloadEntry/foo/client-1",
        "WorkloadEntry/foo/server-1",
    ];
    // No retry: the control plane serves nothing before it has listed every kind once, so its
    // very first answer already holds the cluster's policies (no window without the DENY).
    let names = served(&cp, &mesh, &client).await.unwrap();
    for w in want {
        assert!(names.iter().any(|g| g == w), "{w} missing from {names:?}");
    }
    // And nothing had to be rebuilt since: the first configuration built held the cluster.
    let generation = cp.metrics().lines().find_map(|l| {
        l.strip_prefix("trustmesh_control_config_generation ")
            .map(str::to_string)
    });
    assert_eq!(generation.as_deref(), Some("1"), "{}", cp.log.text());
    assert!(
        names.iter().all(|n| !n.contains("/kube-system/")),
        "{names:?}"
    );

    // An edit through the API server reaches the sidecars: a new policy, and a deletion.
    k.apply(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: audit, namespace: foo }\nspec: { action: AUDIT, rules: [ {} ] }\n",
    );
    k.kubectl(&["delete", "authorizationpolicy", "for-client", "-n", "foo"]);
    wait_for("the edit to be served", Duration::from_secs(30), || {
        let got = block_on(served(&cp, &mesh, &client)).ok()?;
        (got.contains(&"AuthorizationPolicy/foo/audit".to_string())
            && !got.contains(&"AuthorizationPolicy/foo/for-client".to_string()))
        .then_some(())
    });

    // A policy the control plane refuses is reported, and the rest keeps being served.
    k.apply(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: broken, namespace: foo }\nspec: { action: SOMETIMES }\n",
    );
    wait_for(
        "the broken policy to be reported",
        Duration::from_secs(30),
        || {
            let doc = cp.syncz();
            let problems = doc["problems"].to_string();
            (problems.contains("kubernetes AuthorizationPolicy foo/broken")).then_some(())
        },
    );
    // ...and as an Event on the policy, where `kubectl describe` shows it.
    let event = wait_for(
        "an Event on the broken policy",
        Duration::from_secs(30),
        || {
            let out = k.kubectl(&[
                "get",
                "events",
                "-n",
                "foo",
                "--field-selector",
                "involvedObject.kind=AuthorizationPolicy,involvedObject.name=broken",
                "-o",
                "jsonpath={.items[*].type} {.items[*].reason} {.items[*].message}",
            ]);
            (!out.trim().is_empty()).then_some(out)
        },
    );
    assert!(
        event.starts_with("Warning Invalid kubernetes AuthorizationPolicy foo/broken"),
        "{event}"
    );
    assert!(event.contains("SOMETIMES"), "{event}");
    let got = block_on(served(&cp, &mesh, &client)).unwrap();
    assert!(
        got.contains(&"AuthorizationPolicy/foo/audit".to_string()),
        "{got:?}"
    );

    // TokenReview refuses a token for another audience.
    let other = k.token("foo", "client", "some-api");
    let refused = block_on(served(&cp, &mesh, &other)).unwrap_err();
    assert!(
        refused
            .iter()
            .any(|w| w.contains("UNAUTHENTICATED") && w.contains("audience")),
        "{refused:?}"
    );

    // The CA issues the token's own identity, and stops once the service account is deleted.
    let server = k.token("foo", "server", "istio-ca");
    let endpoint = trustmesh_ca_server::client::CaEndpoint {
        address: format!("https://{}", cp.grpc),
        root_pem: std::fs::read(mesh.root()).unwrap(),
        server_name: "istiod.istio-system.svc".into(),
    };
    let creds = trustmesh_ca_server::client::Credentials {
        bearer_token: Some(server.clone()),
        client_cert: None,
    };
    let ask = |id: &str| {
        let csr = trustmesh_testkit::pki::csr_for(&format!("spiffe://{TD}/ns/foo/sa/{id}")).1;
        trustmesh_ca_server::client::create_certificate(&endpoint, &creds, csr, Duration::ZERO)
    };
    assert!(ask("server").await.is_ok());
    assert!(
        ask("client").await.is_err(),
        "another account's certificate was issued"
    );
    k.kubectl(&["delete", "serviceaccount", "server", "-n", "foo"]);
    // The API server's own view of service accounts is a cache too: wait until it refuses...
    wait_for(
        "the API server to refuse the token",
        Duration::from_secs(30),
        || {
            let review = k.kubectl_output(
                &[
                    "create",
                    "-o",
                    "jsonpath={.status.authenticated}",
                    "-f",
                    "-",
                ],
                Some(&format!(
                    "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\n\
                 spec: {{ token: {server}, audiences: [istio-ca] }}\n"
                )),
            );
            (String::from_utf8_lossy(&review.stdout).trim() != "true").then_some(())
        },
    );
    // ...then ours holds an accepted token for at most --token-review-cache (1s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = ask("server").await;
    let why = format!("{after:?}");
    assert!(
        after.is_err(),
        "a deleted service account's token was honoured"
    );
    assert!(why.contains("TokenReview"), "{why}");

    // Node authorization: ztunnel's pod-bound token obtains the identity of a pod on its node,
    // and no other; an unbound token, or a workload's, impersonates nobody.
    let bound = k
        .kubectl(&[
            "create",
            "token",
            "ztunnel",
            "-n",
            "istio-system",
            "--audience",
            "istio-ca",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "ztunnel-a",
        ])
        .trim()
        .to_string();
    let unbound = k.token("istio-system", "ztunnel", "istio-ca");
    let node_ask = |token: String, sa: &'static str| {
        let endpoint = endpoint.clone();
        async move {
            let id = format!("spiffe://{TD}/ns/foo/sa/{sa}");
            let creds = trustmesh_ca_server::client::Credentials {
                bearer_token: Some(token),
                client_cert: None,
            };
            let csr = trustmesh_testkit::pki::csr_for(&id).1;
            trustmesh_ca_server::client::create_certificate_for(
                &endpoint,
                &creds,
                csr,
                Duration::ZERO,
                Some(&id),
            )
            .await
        }
    };
    let chain = node_ask(bound.clone(), "client")
        .await
        .expect("client-1 runs on node-a");
    assert_eq!(
        cluster::leaf_uris(&chain[0]),
        [format!("spiffe://{TD}/ns/foo/sa/client")]
    );
    let other_node = format!("{:?}", node_ask(bound, "server").await.unwrap_err());
    assert!(
        other_node.contains("no pod of foo/server runs on node"),
        "{other_node}"
    );
    let unbound = format!("{:?}", node_ask(unbound, "client").await.unwrap_err());
    assert!(unbound.contains("not bound to a pod"), "{unbound}");
    let workload = format!(
        "{:?}",
        node_ask(client.clone(), "server").await.unwrap_err()
    );
    assert!(
        workload.contains("not a trusted node account"),
        "{workload}"
    );

    // The roots in every namespace (the CA's first, then the federated ones), a new namespace
    // included; a deleted copy comes back.
    let root = std::fs::read_to_string(mesh.root()).unwrap();
    let want = format!("{}\n{}", root.trim(), other_root.trim());
    for ns in ["foo", "default", "kube-system"] {
        let pem = wait_for("istio-ca-root-cert", Duration::from_secs(30), || {
            k.published_roots(ns)
                .filter(|p| p.replace('\r', "") == want)
        });
        assert!(pem.starts_with(root.trim()), "{ns}");
    }
    k.kubectl(&["create", "namespace", "late"]);
    wait_for(
        "the root ConfigMap in a new namespace",
        Duration::from_secs(30),
        || k.published_roots("late"),
    );
    k.kubectl(&["delete", "configmap", "istio-ca-root-cert", "-n", "foo"]);
    wait_for(
        "the root ConfigMap to come back",
        Duration::from_secs(30),
        || k.published_roots("foo"),
    );
}
