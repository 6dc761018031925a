//! Loading a configuration: what succeeds, and that every failure names the file and field at
//! fault — the message an operator sees at startup or in a refused reload.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use trustmesh_proxy::config::ProxyConfig;
use trustmesh_proxy::snapshot;

/// Writes root-cert.pem, cert-chain.pem, key.pem (for `id`) and other-key.pem into `dir`.
fn write_pki(dir: &Path, id: &str) {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = Issuer::new(root, root_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let other = KeyPair::generate().unwrap();
    std::fs::write(dir.join("other-key.pem"), other.serialize_pem()).unwrap();
}

const BASE: &str = r#"workload: { namespace: foo, serviceAccount: web, labels: { app: web } }
certs: { key: key.pem, certChain: cert-chain.pem }
trustBundles: [ "cluster.local=root-cert.pem" ]
mesh: { trustDomain: cluster.local }
policyDir: policies
inbound: [ { port: 15006, targetPort: 8080, protocol: http } ]
outbound: [ { port: 15001, peer: "127.0.0.1:16006", peerIdentity: "spiffe://cluster.local/ns/bar/sa/api" } ]
"#;

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_pki(tmp.path(), "spiffe://cluster.local/ns/foo/sa/web");
    std::fs::create_dir(tmp.path().join("policies")).unwrap();
    tmp
}

fn build(dir: &Path, yaml: &str) -> Result<snapshot::Snapshot, String> {
    let file = dir.join("proxy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let cfg = ProxyConfig::load(&file).map_err(|e| e.to_string())?;
    snapshot::build(cfg, 1).map_err(|e| format!("{e:#}"))
}

#[test]
fn a_good_config_builds() {
    let tmp = setup();
    let snap = build(tmp.path(), BASE).unwrap();
    assert_eq!(
        snap.own_id.to_string(),
        "spiffe://cluster.local/ns/foo/sa/web"
    );
    assert!(snap.own_not_after > snap.own_not_before);
    assert_eq!(snap.client_tls.len(), 1);
    assert!(snap.client_tls[0].is_some());
    // No policies: PERMISSIVE, as Istio's default.
    assert_eq!(
        snap.policies.mtls_mode(8080),
        trustmesh_policy::MtlsMode::Permissive
    );
}

#[test]
fn key_not_matching_the_certificate_is_refused() {
    let tmp = setup();
    let err = build(
        tmp.path(),
        &BASE.replace("key: key.pem", "key: other-key.pem"),
    )
    .unwrap_err();
    assert!(
        err.contains("other-key.pem") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn missing_local_root_is_explained() {
    let tmp = setup();
    let err = build(
        tmp.path(),
        &BASE.replace(
            "cluster.local=root-cert.pem",
            "elsewhere.example=root-cert.pem",
        ),
    )
    .unwrap_err();
    assert!(
        err.contains("trustBundles") && err.contains("cluster.local"),
        "{err}"
    );
}

#[test]
fn certificate_outside_the_trust_config_is_refused() {
    let tmp = setup();
    // Our cert says cluster.local, but the mesh now is another domain that does not trust it.
    let yaml = BASE
        .replace(
            "mesh: { trustDomain: cluster.local }",
            "mesh: { trustDomain: other.example }",
        )
        .replace("cluster.local=root-cert.pem", "other.example=root-cert.pem");
    let err = build(tmp.path(), &yaml).unwrap_err();
    assert!(
        err.contains("cert-chain.pem") && err.contains("not a valid SVID"),
        "{err}"
    );
}

#[test]
fn bad_peer_identity_names_the_field() {
    let tmp = setup();
    let err = build(
        tmp.path(),
        &BASE.replace("spiffe://cluster.local/ns/bar/sa/api", "https://nope"),
    )
    .unwrap_err();
    assert!(err.contains("outbound[0].peerIdentity"), "{err}");
}

#[test]
fn invalid_policy_names_the_file() {
    let tmp = setup();
    std::fs::write(
        tmp.path().join("policies/bad.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: x, namespace: foo }\nspec:\n  action: MAYBE\n",
    )
    .unwrap();
    let err = build(tmp.path(), BASE).unwrap_err();
    assert!(err.contains("bad.yaml"), "{err}");
}

#[test]
fn missing_files_are_named() {
    let tmp = setup();
    let err = build(
        tmp.path(),
        &BASE.replace("cert-chain.pem", "missing-chain.pem"),
    )
    .unwrap_err();
    assert!(err.contains("missing-chain.pem"), "{err}");
    let err = build(
        tmp.path(),
        &BASE.replace("policyDir: policies", "policyDir: nowhere"),
    )
    .unwrap_err();
    assert!(
        err.contains("policyDir") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn watched_files_cover_config_certs_bundles_and_policies() {
    let tmp = setup();
    std::fs::create_dir(tmp.path().join("policies/team")).unwrap();
    std::fs::write(tmp.path().join("policies/team/a.yaml"), "").unwrap();
    let file = tmp.path().join("proxy.yaml");
    std::fs::write(&file, BASE).unwrap();
    let cfg = ProxyConfig::load(&file).unwrap();
    let files = snapshot::watched_files(&cfg, Some(&file));
    for want in [
        "proxy.yaml",
        "key.pem",
        "cert-chain.pem",
        "root-cert.pem",
        "policies/team/a.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(want)),
            "{want} not watched: {files:?}"
        );
    }
    // Any content change changes the fingerprint.
    let before = trustmesh_proxy::reload::fingerprint(&files);
    std::fs::write(tmp.path().join("policies/team/a.yaml"), "# changed\n").unwrap();
    assert_ne!(before, trustmesh_proxy::reload::fingerprint(&files));
}
