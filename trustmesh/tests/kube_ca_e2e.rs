//! The control plane's CA against a real API server (tier 2; the same binaries and skip as
//! `kube_e2e.rs`): its keys kept in the cluster as istiod keeps them (`istio-ca-secret` made
//! when missing and reused at the next start), a `cacerts` plug-in CA picked up and rotated while
//! running (the CA's own certificate, what it issues and the roots ConfigMaps follow; a version
//! that does not load is refused), and the CA as the Kubernetes signer `trustmesh.io/workload`
//! (a service account's request for its own identity approved and signed, another denied,
//! another signer's left alone).

mod cluster;
mod control;

use std::time::Duration;

use cluster::{block_on, Cluster};
use control::{Control, TD};
use trustmesh_testkit::net::wait_for;

/// `cacerts` holding the CA folder `dir`, as `kubectl create secret generic` makes it.
fn put_cacerts(k: &Cluster, dir: &std::path::Path) {
    let file = |n: &str| format!("--from-file={n}={}", dir.join(n).display());
    let yaml = k.kubectl(&[
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        &file("ca-cert.pem"),
        &file("ca-key.pem"),
        &file("root-cert.pem"),
        &file("cert-chain.pem"),
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    k.apply(&yaml);
}

/// A certificate for foo/client through the CA at `cp`, trusting `root` for the CA's own
/// certificate; returns the chain.
async fn certificate(cp: &Control, root: &str, token: &str) -> Result<Vec<String>, String> {
    certificate_as(cp, root, token, "client").await
}

/// [`certificate`] for foo/`sa`.
async fn certificate_as(
    cp: &Control,
    root: &str,
    token: &str,
    sa: &str,
) -> Result<Vec<String>, String> {
    let endpoint = trustmesh_ca_server::client::CaEndpoint {
        address: format!("https://{}", cp.grpc),
        root_pem: root.as_bytes().to_vec(),
        server_name: "istiod.istio-system.svc".into(),
    };
    let creds = trustmesh_ca_server::client::Credentials {
        bearer_token: Some(token.to_string()),
        client_cert: None,
    };
    let csr = trustmesh_testkit::pki::csr_for(&format!("spiffe://{TD}/ns/foo/sa/{sa}")).1;
    trustmesh_ca_server::client::create_certificate(&endpoint, &creds, csr, Duration::ZERO)
        .await
        .map_err(|e| e.to_string())
}

fn same_pem(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace('\r', "").trim().to_string();
    norm(a) == norm(b)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_keeps_its_keys_in_the_cluster_and_follows_a_cacerts_rotation() {
    let Some((dir, k)) = cluster::start_or_skip("kubernetes CA tests") else {
        return;
    };
    k.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: { name: istio-system }\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: { name: foo }\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: client, namespace: foo }\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
         metadata: { name: csr-requester }\n\
         rules: [ { apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests], \
         verbs: [create, get] } ]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: { name: csr-requester }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-requester }\n\
         subjects: [ { kind: ServiceAccount, name: client, namespace: foo } ]\n",
    );
    let kubeconfig = k.kubeconfig.to_str().unwrap().to_string();
    let args = [
        "control",
        "--sign-csrs",
        "--kubeconfig",
        kubeconfig.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--monitoring-listen",
        "127.0.0.1:0",
    ];

    // No Secret: a self-signed root is made and kept in istio-ca-secret, as istiod does.
    let cp = Control::spawn(&args);
    let kept = k.kubectl(&[
        "get",
        "secret",
        "istio-ca-secret",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.data.ca-cert\\.pem}",
    ]);
    let kept = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, kept.trim()).unwrap(),
    )
    .unwrap();
    let first = wait_for("the roots ConfigMap", Duration::from_secs(30), || {
        k.published_roots("foo")
    });
    assert!(same_pem(&first, &kept), "{first}\n---\n{kept}");
    let token = k.token("foo", "client", "istio-ca");
    let chain = certificate(&cp, &first, &token).await.unwrap();
    assert!(same_pem(chain.last().unwrap(), &first));
    // The CSR API: a service account's request for its own identity is approved and signed;
    // for another identity it is denied with the reason; another signer's is left alone.
    let submit = |name: &str, id: &str, signer: &str| {
        let pem = trustmesh_testkit::pki::csr_for(id).1;
        let request = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem);
        let yaml = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\n\
             metadata: {{ name: {name} }}\nspec:\n  signerName: {signer}\n  \
             expirationSeconds: 3600\n  request: {request}\n  \
             usages: [digital signature, key encipherment, client auth, server auth]\n"
        );
        let out = k.kubectl_output(
            &[
                "--as",
                "system:serviceaccount:foo:client",
                "create",
                "-f",
                "-",
            ],
            Some(&yaml),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let field = |name: &str, path: &str| {
        k.kubectl(&["get", "csr", name, "-o", &format!("jsonpath={path}")])
    };
    submit(
        "own",
        &format!("spiffe://{TD}/ns/foo/sa/client"),
        "trustmesh.io/workload",
    );
    submit(
        "other",
        &format!("spiffe://{TD}/ns/foo/sa/server"),
        "trustmesh.io/workload",
    );
    submit(
        "foreign",
        &format!("spiffe://{TD}/ns/foo/sa/client"),
        "example.com/other",
    );
    let issued = wait_for("the CSR to be signed", Duration::from_secs(30), || {
        let c = field("own", "{.status.certificate}");
        (!c.trim().is_empty()).then_some(c)
    });
    let issued =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, issued.trim()).unwrap();
    let issued = String::from_utf8(issued).unwrap();
    assert_eq!(
        cluster::leaf_uris(&issued),
        [format!("spiffe://{TD}/ns/foo/sa/client")]
    );
    // The chain ends at the CA's root.
    let root_of_chain = issued
        .split_inclusive("-----END CERTIFICATE-----\n")
        .last()
        .unwrap();
    assert!(same_pem(root_of_chain, &first), "{issued}");
    assert!(field("own", "{.status.conditions[*].type}").contains("Approved"));
    let denied = wait_for(
        "the other CSR to be denied",
        Duration::from_secs(30),
        || {
            let c = field("other", "{.status.conditions[*].message}");
            (!c.trim().is_empty()).then_some(c)
        },
    );
    assert!(field("other", "{.status.conditions[*].type}").contains("Denied"));
    assert!(
        denied.contains("may obtain spiffe://cluster.local/ns/foo/sa/client only"),
        "{denied}"
    );
    assert!(field("other", "{.status.certificate}").trim().is_empty());
    assert!(
        field("foreign", "{.status.conditions}").trim().is_empty(),
        "another signer's CSR was touched"
    );

    // The next start (or another replica) signs with the same root.
    drop(cp);
    let cp = Control::spawn(&args);
    assert!(certificate(&cp, &first, &token).await.is_ok());

    // A plug-in CA in cacerts is picked up while running: the CA's own certificate, what it
    // issues and the roots ConfigMaps all move to it.
    for round in ["plugin-1", "plugin-2"] {
        let ca = dir.path().join(round);
        control::ca_init(&ca, TD);
        let root = std::fs::read_to_string(ca.join("root-cert.pem")).unwrap();
        put_cacerts(&k, &ca);
        wait_for(
            "the new roots in the ConfigMap",
            Duration::from_secs(30),
            || k.published_roots("foo").filter(|p| same_pem(p, &root)),
        );
        let chain = wait_for(
            "a certificate from the new CA",
            Duration::from_secs(30),
            || block_on(certificate(&cp, &root, &token)).ok(),
        );
        assert!(same_pem(chain.last().unwrap(), &root), "{round}");
    }
    // A cacerts that does not load is refused; the CA keeps signing.
    k.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: { name: cacerts, namespace: istio-system }\n\
         stringData: { ca-cert.pem: not a certificate }\n",
    );
    wait_for("the refusal in the log", Duration::from_secs(30), || {
        cp.log.text().contains("cannot be used").then_some(())
    });
    let root = std::fs::read_to_string(dir.path().join("plugin-2/root-cert.pem")).unwrap();
    assert!(certificate(&cp, &root, &token).await.is_ok());
}

/// An external Kubernetes signer for the test, made of kubectl and openssl: it approves the
/// requests of `signer_name` and signs them with the CA folder `ca` (copying the request's
/// SANs), except those for `refuse`, which it denies. Runs until `stop` is set.
fn external_signer(
    k: &cluster::Kubectl,
    dir: &std::path::Path,
    ca: &std::path::Path,
    signer_name: &str,
    refuse: &str,
    stop: &std::sync::atomic::AtomicBool,
) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let work = dir.join("external-signer");
    std::fs::create_dir_all(&work).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < deadline {
        let list: serde_json::Value =
            serde_json::from_str(&k.run(&["get", "csr", "-o", "json"])).unwrap();
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or("");
            if item["spec"]["signerName"] != signer_name
                || !item["status"]["certificate"].is_null()
                || !item["status"]["conditions"].is_null()
            {
                continue;
            }
            let wanted = item["metadata"]["annotations"]["trustmesh.io/identity"]
                .as_str()
                .unwrap_or("");
            if wanted == refuse {
                k.run(&["certificate", "deny", name]);
                continue;
            }
            k.run(&["certificate", "approve", name]);
            let request = b64
                .decode(item["spec"]["request"].as_str().unwrap())
                .unwrap();
            std::fs::write(work.join("req.pem"), request).unwrap();
            let s = |p: std::path::PathBuf| p.to_str().unwrap().to_string();
            trustmesh_testkit::tools::openssl(
                &work,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "req.pem",
                    "-CA",
                    &s(ca.join("ca-cert.pem")),
                    "-CAkey",
                    &s(ca.join("ca-key.pem")),
                    "-days",
                    "1",
                    "-copy_extensions",
                    "copyall",
                    "-out",
                    "leaf.pem",
                ],
            );
            let mut current: serde_json::Value =
                serde_json::from_str(&k.run(&["get", "csr", name, "-o", "json"])).unwrap();
            current["status"]["certificate"] =
                serde_json::json!(b64.encode(std::fs::read(work.join("leaf.pem")).unwrap()));
            let out = k.output(
                &[
                    "replace",
                    "--raw",
                    &format!(
                        "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/status"
                    ),
                    "-f",
                    "-",
                ],
                Some(&current.to_string()),
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_certificates_from_an_external_kubernetes_signer() {
    let Some((dir, k)) = cluster::start_or_skip("kubernetes external signer test") else {
        return;
    };
    k.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: { name: istio-system }\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: { name: foo }\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: client, namespace: foo }\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: server, namespace: foo }\n",
    );
    // The control plane's own CA (its serving certificate) and the external signer's CA.
    let make_ca = |name: &str| {
        let ca = dir.path().join(name);
        control::ca_init(&ca, TD);
        ca
    };
    let own = make_ca("own-ca");
    let external = make_ca("external-ca");
    let kubeconfig = k.kubeconfig.to_str().unwrap().to_string();
    let cp = Control::spawn(&[
        "control",
        "--kubeconfig",
        &kubeconfig,
        "--ca",
        own.to_str().unwrap(),
        "--external-signer",
        "example.com/external",
        "--external-signer-roots",
        external.join("root-cert.pem").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--monitoring-listen",
        "127.0.0.1:0",
    ]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let refuse = format!("spiffe://{TD}/ns/foo/sa/server");
    let kubectl = k.client();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            external_signer(
                &kubectl,
                dir.path(),
                &external,
                "example.com/external",
                &refuse,
                &stop,
            )
        });
        let own_root = std::fs::read_to_string(own.join("root-cert.pem")).unwrap();
        let external_root = std::fs::read_to_string(external.join("root-cert.pem")).unwrap();
        // The client's certificate comes from the external CA, for the client's identity.
        let client = k.token("foo", "client", "istio-ca");
        let chain = block_on(certificate(&cp, &own_root, &client)).unwrap();
        assert!(same_pem(chain.last().unwrap(), &external_root));
        assert_eq!(
            cluster::leaf_uris(&chain[0]),
            [format!("spiffe://{TD}/ns/foo/sa/client")]
        );
        // The signer's refusal reaches the caller.
        let server = k.token("foo", "server", "istio-ca");
        let refused = block_on(certificate_as(&cp, &own_root, &server, "server")).unwrap_err();
        assert!(
            refused.contains("refused") && refused.contains("Denied"),
            "{refused}"
        );
        // The requests are removed once answered.
        let left = k.kubectl(&["get", "csr", "-o", "name"]);
        assert!(left.trim().is_empty(), "{left}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
