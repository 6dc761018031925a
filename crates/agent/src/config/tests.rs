use super::*;

const BASE: &str = "trustDomain: cluster.local\nca: {address: \"https://127.0.0.1:15012\", rootCert: root.pem}\nidentity: {namespace: default, serviceAccount: sleep}\noutputDir: out\n";

fn parse(text: &str) -> Result<(Config, Deprecations), String> {
    Config::parse(text, Path::new("agent.yaml"), Path::new("/etc/agent")).map_err(|e| e.to_string())
}

fn ok(text: &str) -> Config {
    let (c, old) = parse(text).unwrap();
    assert!(old.is_empty(), "{:?}", old.messages());
    c
}

#[test]
fn minimal_config_gets_defaults() {
    let c = ok(BASE);
    assert_eq!(
        c.spiffe_id.as_str(),
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    assert_eq!(c.rotation_fraction, DEFAULT_ROTATION_FRACTION);
    assert_eq!(c.ttl, DEFAULT_TTL);
    assert_eq!(c.max_retry_interval, DEFAULT_MAX_RETRY_INTERVAL);
    assert_eq!(c.termination_drain, crate::DRAIN_DEADLINE);
    assert_eq!(c.ca_server_name, "127.0.0.1");
    assert_eq!(c.ca_root_cert, PathBuf::from("/etc/agent/root.pem"));
    assert_eq!(c.output_dir, PathBuf::from("/etc/agent/out"));
}

#[test]
fn every_key_in_its_camel_case_spelling() {
    let c = ok(&format!(
        "{BASE}tokenFile: t.jwt\nworkloadApiSocket: /run/a.sock\n\
         workloadApiCallers: [{{uid: 7}}]\nrotationFraction: 0.25\nttl: 1h30m\n\
         maxRetryInterval: 500ms\nterminationDrain: 2m30s\nfederation:\n  - trustDomain: b.example\n    \
         endpoint: https://b/bundle\n    rootCert: b.pem\n"
    ));
    assert_eq!(c.token_file, Some(PathBuf::from("/etc/agent/t.jwt")));
    assert_eq!(c.workload_api_socket, Some(PathBuf::from("/run/a.sock")));
    assert_eq!(c.workload_api_callers.0[0].uid, Some(7));
    assert_eq!(c.rotation_fraction, 0.25);
    assert_eq!(c.ttl, Duration::from_secs(5400));
    assert_eq!(c.max_retry_interval, Duration::from_millis(500));
    assert_eq!(c.termination_drain, Duration::from_secs(150));
    assert_eq!(c.federation[0].trust_domain.as_str(), "b.example");
    assert_eq!(c.federation[0].root_cert, PathBuf::from("/etc/agent/b.pem"));
}

#[test]
fn old_spellings_load_with_a_deprecation_naming_the_new_one() {
    let text = "trust_domain: cluster.local\n\
                ca: {address: \"https://127.0.0.1:15012\", root_cert: root.pem, server_name: ca}\n\
                token_file: t.jwt\nidentity: {namespace: default, service_account: sleep}\n\
                output_dir: out\nworkload_api_socket: a.sock\nworkload_api_callers: [{uid: 7}]\n\
                rotation_fraction: 0.5\nttl: 7d\nmax_retry_interval: 90\n\
                federation:\n  - trust_domain: b.example\n    endpoint: https://b/bundle\n    \
                root_cert: b.pem\n";
    let (c, old) = parse(text).unwrap();
    assert_eq!(c.ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.max_retry_interval, Duration::from_secs(90));
    assert_eq!(c.ca_server_name, "ca");
    assert_eq!(c.output_dir, PathBuf::from("/etc/agent/out"));
    assert_eq!(c.federation[0].root_cert, PathBuf::from("/etc/agent/b.pem"));
    let messages = old.messages();
    for (old, new) in [
        ("trust_domain", "trustDomain"),
        ("ca.root_cert", "ca.rootCert"),
        ("ca.server_name", "ca.serverName"),
        ("token_file", "tokenFile"),
        ("identity.service_account", "identity.serviceAccount"),
        ("output_dir", "outputDir"),
        ("workload_api_socket", "workloadApiSocket"),
        ("workload_api_callers", "workloadApiCallers"),
        ("rotation_fraction", "rotationFraction"),
        ("max_retry_interval", "maxRetryInterval"),
        ("federation[0].trust_domain", "federation[0].trustDomain"),
        ("federation[0].root_cert", "federation[0].rootCert"),
        ("ttl: 7d", "ttl: 168h"),
        ("maxRetryInterval: 90", "maxRetryInterval: 1m30s"),
    ] {
        let want = format!("agent.yaml: `{old}` is deprecated; write `{new}`");
        assert!(messages.contains(&want), "{want} not in {messages:#?}");
    }
    assert_eq!(messages.len(), 14, "{messages:#?}");
}

#[test]
fn both_spellings_are_an_error() {
    let e = parse(&format!("{BASE}output_dir: elsewhere\n")).unwrap_err();
    assert_eq!(
        e,
        "agent.yaml: outputDir: `output_dir` is the deprecated spelling of `outputDir`; \
         give only `outputDir`"
    );
    let text = BASE.replace("rootCert: root.pem", "rootCert: a.pem, root_cert: b.pem");
    let e = parse(&text).unwrap_err();
    assert!(e.starts_with("agent.yaml: ca.rootCert: `root_cert`"), "{e}");
}

#[test]
fn bad_duration_names_file_and_field() {
    let e = parse(&format!("{BASE}ttl: soon\n")).unwrap_err();
    assert!(
        e.starts_with("agent.yaml: ttl: invalid duration \"soon\""),
        "{e}"
    );
    let text = format!("{BASE}federation: []\nmaxRetryInterval: 1w\n");
    let e = parse(&text).unwrap_err();
    assert!(
        e.starts_with("agent.yaml: maxRetryInterval: invalid duration \"1w\""),
        "{e}"
    );
    for zero in ["ttl: 0s", "ttl: 500ms", "maxRetryInterval: 0"] {
        let e = parse(&format!("{BASE}{zero}\n")).unwrap_err();
        assert!(e.contains(zero.split(':').next().unwrap()), "{e}");
    }
    // What the old parser took, and Go's grammar besides.
    assert_eq!(
        ok(&format!("{BASE}ttl: 12s\n")).ttl,
        Duration::from_secs(12)
    );
    assert_eq!(
        ok(&format!("{BASE}ttl: 2h45m\n")).ttl,
        Duration::from_secs(9900)
    );
}

#[test]
fn rejects_bad_fraction_and_unknown_fields() {
    let e = parse(&format!("{BASE}rotationFraction: 1.5\n")).unwrap_err();
    assert!(
        e.starts_with("agent.yaml: rotationFraction: 1.5 must be"),
        "{e}"
    );
    let e = parse(&format!("{BASE}rotate: 1\n")).unwrap_err();
    assert!(e.starts_with("agent.yaml: rotate: unknown field"), "{e}");
    let e = parse("ca: {address: \"https://x:1\", rootCert: r}\nidentity: {namespace: a, serviceAccount: b}\noutputDir: o\n").unwrap_err();
    assert_eq!(e, "agent.yaml: trustDomain: is required");
}

#[test]
fn workload_api_callers() {
    let c = ok(BASE);
    assert_eq!(
        c.workload_api_callers,
        crate::attest::CallerPolicy::own_user()
    );
    let c = ok(&format!(
        "{BASE}workloadApiCallers: [{{uid: 1000}}, {{gid: 5, path: /bin/app}}]\n"
    ));
    assert_eq!(c.workload_api_callers.0.len(), 2);
    assert_eq!(c.workload_api_callers.0[1].gid, Some(5));
    for bad in ["[{}]", "[]", "[{path: app}]", "[{user: 5}]"] {
        let e = parse(&format!("{BASE}workloadApiCallers: {bad}\n")).unwrap_err();
        assert!(
            e.contains("workloadApiCallers") || e.contains("user"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn rejects_plaintext_ca() {
    let text = BASE.replace("https://", "http://");
    let e = parse(&text).unwrap_err();
    assert!(e.contains("https://"), "{e}");
}

#[test]
fn termination_drain_takes_only_go_durations() {
    let e = parse(&format!("{BASE}terminationDrain: 30\n")).unwrap_err();
    assert!(
        e.starts_with("agent.yaml: terminationDrain: invalid duration \"30\""),
        "{e}"
    );
}

#[test]
fn key_algorithm_takes_istios_spellings_and_defaults_to_ecdsa() {
    assert_eq!(ok(BASE).key_algorithm, KeyType::EcdsaP256);
    assert_eq!(
        ok(&format!("{BASE}keyAlgorithm: RSA\n")).key_algorithm,
        KeyType::Rsa2048
    );
    assert_eq!(
        ok(&format!("{BASE}keyAlgorithm: ecdsa\n")).key_algorithm,
        KeyType::EcdsaP256
    );
    let err = parse(&format!("{BASE}keyAlgorithm: DSA\n")).unwrap_err();
    assert!(
        err.contains("keyAlgorithm")
            && err.contains(
                "\"DSA\" is not a key algorithm: expected ECDSA (P-256, the default) or RSA"
            ),
        "{err}"
    );
}
