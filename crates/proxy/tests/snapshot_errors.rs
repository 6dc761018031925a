//! Loading a configuration: what succeeds, and that every failure names the file and field at
//! fault — the message an operator sees at startup or in a refused reload.

use std::path::Path;

use trustmesh_proxy::config::ProxyConfig;
use trustmesh_proxy::snapshot;
use trustmesh_testkit::pki::write_pki;

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
    // root-cert.pem, cert-chain.pem and key.pem for `web`, and a key of nothing: other-key.pem.
    write_pki(tmp.path(), "spiffe://cluster.local/ns/foo/sa/web");
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(tmp.path().join("other-key.pem"), other.serialize_pem()).unwrap();
    std::fs::create_dir(tmp.path().join("policies")).unwrap();
    tmp
}

fn build(dir: &Path, yaml: &str) -> Result<snapshot::Snapshot, String> {
    let file = dir.join("proxy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let cfg = ProxyConfig::load(&file).map_err(|e| e.to_string())?;
    snapshot::build(cfg, 1, None).map_err(|e| format!("{e:#}"))
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

/// An invalid policy no longer refuses the snapshot: it is enforced fail-closed (an unreadable
/// action could be DENY, so it denies what it selects; pilot/pkg/security/authz/builder/
/// builder.go is the model) and named with its file on /config_dump.
#[test]
fn invalid_policy_is_enforced_fail_closed_and_named() {
    let tmp = setup();
    std::fs::write(
        tmp.path().join("policies/bad.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: x, namespace: foo }\nspec:\n  action: MAYBE\n",
    )
    .unwrap();
    let snap = build(tmp.path(), BASE).unwrap();
    let dump = snap.policies.dump(&[8080]);
    let inv = &dump["invalidResources"][0];
    assert_eq!(inv["name"], "x");
    assert_eq!(inv["outcome"], "denies_all");
    assert!(
        inv["location"]["file"]
            .as_str()
            .unwrap()
            .ends_with("bad.yaml"),
        "{inv}"
    );
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

/// A RequestAuthentication rule that cannot be used rejects every token of its issuer instead
/// of refusing the snapshot, as Istio falls back to a key nobody can sign for when a JWKS cannot
/// be used (pilot/pkg/model/jwks_resolver.go); one whose rules cannot be read at all makes
/// every token unknown (pkg/config/validation/validation.go would have rejected it).
#[test]
fn unusable_jwt_rules_reject_tokens() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = |iss: &str| {
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"EdDSA","kid":"trustmesh-fail-closed"}"#),
            b64(&format!(r#"{{"iss":"{iss}","sub":"x","exp":4102444800}}"#)),
            b64("not a signature")
        )
    };
    let check = |snap: &snapshot::Snapshot, iss: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token(iss)).parse().unwrap(),
        );
        snap.policies.authenticate(&h, &"/".parse().unwrap())
    };
    for (spec, iss) in [
        // The policy crate accepts this JSON; the authenticator finds no usable key in it.
        (
            r#"{jwtRules: [{issuer: "https://i", jwks: '{"keys":[]}'}]}"#,
            "https://i",
        ),
        // Unreadable rules: a placeholder issuer, so every token is of an unknown issuer.
        ("{jwtRules: [{issuer: 3, bogus: 1}]}", "https://anyone"),
    ] {
        let tmp = setup();
        std::fs::write(
            tmp.path().join("policies/ra.yaml"),
            format!("apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{ name: ra, namespace: foo }}\nspec: {spec}\n"),
        )
        .unwrap();
        let snap = build(tmp.path(), BASE).unwrap();
        assert!(check(&snap, iss).is_err(), "{spec}: token accepted");
        // No token: still passes unauthenticated.
        let none = snap
            .policies
            .authenticate(&http::HeaderMap::new(), &"/".parse().unwrap());
        assert!(matches!(none, Ok(None)), "{spec}");
    }
}

/// A policy file that is not YAML could hold any policy: at startup the snapshot still builds
/// (so the admin endpoints can show why) and its policies deny every request; a reload with it
/// is refused instead (see `reload::try_reload`), keeping the last snapshot.
#[test]
fn unreadable_policy_file_denies_everything_at_startup() {
    let tmp = setup();
    std::fs::write(tmp.path().join("policies/zz.yaml"), "spec: [unclosed\n").unwrap();
    let snap = build(tmp.path(), BASE).unwrap();
    let why = snap.policies.set.denies_everything().unwrap().to_string();
    assert!(why.contains("zz.yaml"), "{why}");
    let dump = snap.policies.dump(&[8080]);
    assert_eq!(dump["deniesEverything"], why.as_str());
    assert!(dump["documents"][0]["unreadable"].is_string(), "{dump}");
}
