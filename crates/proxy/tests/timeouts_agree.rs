//! `trustmesh policy validate` and the proxy agree on every timeout string: what validates
//! loads, and what the proxy refuses does not validate. Both read these fields with
//! `trustmesh_config::Duration` (Go's grammar); the JWT rule adds Istio's `ValidateDuration`
//! (at least 1ms, whole milliseconds) on both sides.

use std::path::Path;

use trustmesh_policy::{load, validate, MeshConfig, SourceText};
use trustmesh_proxy::jwt::{JwtAuthenticator, JwtOptions, JwtRule};
use trustmesh_proxy::{extauthz, snapshot, ProxyConfig};

/// `(timeout, ext_authz accepts, jwtRules accepts)`.
const TABLE: &[(&str, bool, bool)] = &[
    ("5s", true, true),
    ("500ms", true, true),
    ("1.5s", true, true),
    ("0.5s", true, true),
    ("1m30s", true, true),
    ("1h30m", true, true),
    ("2h45m30.5s", true, true),
    ("+10s", true, true),
    ("1000us", true, true),
    ("1000µs", true, true),
    ("0.000000001s", true, false),
    ("100us", true, false),
    ("1.5ms", true, false),
    ("0s", true, false),
    ("0", true, false),
    ("5", false, false),
    ("1.5", false, false),
    ("5 s", false, false),
    (" 5s", false, false),
    ("1d", false, false),
    ("1e3ms", false, false),
    ("-1s", false, false),
    ("-0", false, false),
    ("soon", false, false),
    ("", false, false),
    ("s", false, false),
    ("9999999h", false, false),
];

fn quoted(t: &str) -> String {
    serde_json::to_string(t).unwrap()
}

fn mesh_yaml(timeout: &str) -> String {
    format!(
        "extensionProviders:\n- name: authz\n  envoyExtAuthzGrpc:\n    service: 127.0.0.1\n    \
         port: 9191\n    timeout: {}\n",
        quoted(timeout)
    )
}

/// `trustmesh policy validate --mesh FILE` reads the mesh config with `load::read_mesh`.
fn validate_accepts_ext_authz(dir: &Path, timeout: &str) -> bool {
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, mesh_yaml(timeout)).unwrap();
    load::read_mesh(&file).unwrap().is_ok()
}

/// The proxy loads its inline mesh config, then builds the ext_authz providers from it.
fn proxy_accepts_ext_authz(timeout: &str) -> bool {
    let mesh: String = mesh_yaml(timeout)
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let text = format!(
        "workload: {{ namespace: foo, serviceAccount: web }}\n\
         certs: {{ key: key.pem, certChain: chain.pem }}\n\
         inbound: [ {{ port: 15006, targetPort: 8080, protocol: http }} ]\n\
         mesh:\n{mesh}"
    );
    // The inline mesh config is read with the rest of the file, so a bad timeout can already
    // be refused there.
    let Ok((cfg, _)) = ProxyConfig::parse(&text, Path::new("p.yaml"), Path::new(".")) else {
        return false;
    };
    snapshot::load_mesh(&cfg)
        .and_then(|m| extauthz::providers(&m))
        .is_ok()
}

fn validate_accepts_jwt(timeout: &str) -> bool {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\n\
         metadata: {{name: p, namespace: prod}}\n\
         spec: {{jwtRules: [{{issuer: i, jwksUri: 'https://i/jwks', timeout: {}}}]}}\n",
        quoted(timeout)
    );
    let source = SourceText {
        file: "p.yaml".into(),
        text,
    };
    let report = validate(&[source], &MeshConfig::default());
    report.problems.iter().all(|p| p.warning)
}

fn proxy_accepts_jwt(timeout: &str) -> bool {
    let rule = JwtRule {
        issuer: "i".into(),
        jwks_uri: Some("https://i/jwks".into()),
        timeout: Some(timeout.into()),
        ..Default::default()
    };
    JwtAuthenticator::new(vec![rule], JwtOptions::default()).is_ok()
}

#[tokio::test]
async fn validate_and_proxy_agree_on_ext_authz_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    for (timeout, accepted, _) in TABLE {
        let v = validate_accepts_ext_authz(dir.path(), timeout);
        let p = proxy_accepts_ext_authz(timeout);
        assert_eq!(
            (v, p),
            (*accepted, *accepted),
            "ext_authz timeout {timeout:?}: validate {v}, proxy {p}"
        );
    }
}

#[test]
fn validate_and_proxy_agree_on_jwt_timeouts() {
    for (timeout, _, accepted) in TABLE {
        let v = validate_accepts_jwt(timeout);
        let p = proxy_accepts_jwt(timeout);
        assert_eq!(
            (v, p),
            (*accepted, *accepted),
            "jwtRules timeout {timeout:?}: validate {v}, proxy {p}"
        );
    }
}

#[test]
fn a_bad_ext_authz_timeout_names_the_field() {
    let e = MeshConfig::from_yaml_str(&mesh_yaml("5 seconds"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "(mesh config): extensionProviders[0].envoyExtAuthzGrpc.timeout: invalid duration \"5 seconds\""
        ),
        "{e}"
    );
}
