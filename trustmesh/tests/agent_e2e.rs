//! End to end: `trustmesh agent` against `trustmesh ca serve` (real processes): certificate
//! files, rotation, riding out a CA outage, federation, and the SPIFFE Workload API as seen by
//! py-spiffe (a third-party client); a plug-in CA made by the openssl CLI without a SPIFFE URI,
//! served with `--trust-domain`, to an agent making RSA keys.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use support::*;
use trustmesh_identity::pem::certs_from_pem;
use trustmesh_identity::CertificateDer;
use trustmesh_testkit::pki::openssl::{openssl_cacerts, OsslKey};
use trustmesh_testkit::pki::{uri_sans, verify_now};
use trustmesh_testkit::tools::{python_dir, run_ok};

const ME: &str = "spiffe://cluster.local/ns/default/sa/sleep";

fn leaf(out: &Path) -> Option<CertificateDer<'static>> {
    let pem = std::fs::read(out.join("cert-chain.pem")).ok()?;
    certs_from_pem(&pem).ok()?.into_iter().next()
}

fn verify_files(out: &Path, root_pem: &[u8]) -> trustmesh_identity::VerifiedSvid {
    let chain = certs_from_pem(&std::fs::read(out.join("cert-chain.pem")).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(out.join("root-cert.pem")).unwrap(),
        root_pem,
        "root-cert.pem is the CA root"
    );
    verify_now(&chain, root_pem, TD)
}

/// The plug-in CA in `<base>/cacerts` and the token issuer it trusts (keys in
/// `<base>/jwks.json`); `<base>/istio-token` holds a token for default/sleep.
fn ca_and_token(base: &Path) -> (PathBuf, PathBuf) {
    let ca_dir = base.join("cacerts");
    make_ca(&ca_dir);
    let jwks = base.join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k1");
    std::fs::write(base.join("istio-token"), issuer.token("default", "sleep")).unwrap();
    (ca_dir, jwks)
}

/// Arguments of `ca serve` for `ca_dir`, with a JWT authority key next to it (persisted, so a
/// restarted CA keeps validating the JWT-SVIDs it minted).
fn ca_args(ca_dir: &Path, jwks: &Path, listen: &str) -> Vec<String> {
    let jwt_key = ca_dir.with_extension("jwt-key.pem");
    let extra = ["--bundle-listen", "127.0.0.1:0", "--jwt-authority-key"];
    let extra = [&extra[..], &[jwt_key.to_str().unwrap()]].concat();
    ca_serve_args(ca_dir, jwks, listen, &extra)
}

/// Starts `ca serve` with `args`: the process, its gRPC and bundle addresses.
fn start(args: &[String]) -> (Proc, SocketAddr, SocketAddr) {
    let (p, grpc, bundle) = start_ca_owned(args);
    (p, grpc, bundle.unwrap())
}

#[test]
fn agent_rotates_survives_ca_outage_and_serves_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();

    // The local CA (cluster.local) and a federated peer (other.example).
    let (ca_dir, jwks) = ca_and_token(base);
    let (mut ca, grpc, _) = start(&ca_args(&ca_dir, &jwks, "127.0.0.1:0"));
    // Later restarts reuse the ports the first start got.
    let fixed_args = ca_args(&ca_dir, &jwks, &grpc.to_string());

    let peer_dir = base.join("peer");
    make_root_ca(&peer_dir, "other.example");
    let (_peer, _, peer_bundle) = start(&ca_args(&peer_dir, &jwks, "127.0.0.1:0"));

    let out = base.join("certs");
    let sock = base.join("run/agent.sock");
    let extra = format!(
        "workloadApiSocket: {sock}\n\
         rotationFraction: 0.5\n\
         ttl: 12s\n\
         maxRetryInterval: 1s\n\
         federation:\n  - trustDomain: other.example\n    endpoint: https://localhost:{pb}/bundle\n    rootCert: {proot}\n",
        sock = sock.display(),
        pb = peer_bundle.port(),
        proot = peer_dir.join("root-cert.pem").display(),
    );
    let config_path = write_agent_config(base, &ca_dir, &grpc.to_string(), &extra);
    let mut agent = Proc::spawn(&["agent", "--config", config_path.to_str().unwrap()]);
    let root_pem = std::fs::read(ca_dir.join("root-cert.pem")).unwrap();

    // 1. Files appear, the key is private, the chain verifies as our identity.
    let first = wait_for("certificate files", Duration::from_secs(30), || leaf(&out));
    let mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "key.pem must be readable by its owner only");
    let v = verify_files(&out, &root_pem);
    assert_eq!(v.id.as_str(), ME);
    let life = v.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        life <= Duration::from_secs(13),
        "requested 12s TTL honoured, got {life:?} left"
    );

    // 2. Rotation at half of the 12 s lifetime: a new certificate within ~6 s (bounded at 12 s).
    let t0 = Instant::now();
    wait_for("rotation", Duration::from_secs(12), || {
        leaf(&out).filter(|l| *l != first)
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "rotated too early: {:?}",
        t0.elapsed()
    );
    verify_files(&out, &root_pem);

    // 3. The Workload API through py-spiffe, watching the stream across a rotation.
    let r = workload_api_client(&sock, &["--watch-seconds", "14"]);
    assert_eq!(r["spiffe_id"], ME);
    assert_eq!(r["key_matches_leaf"], true);
    assert_eq!(
        r["key_algorithm"], "EC secp256r1",
        "the default key algorithm"
    );
    assert_eq!(r["chain_len"], 2, "leaf and intermediate, no root");
    let local_root = STANDARD.encode(certs_from_pem(&root_pem).unwrap()[0].as_ref());
    assert_eq!(
        r["bundles"]["cluster.local"],
        serde_json::json!([local_root])
    );
    let peer_root = STANDARD.encode(
        certs_from_pem(&std::fs::read(peer_dir.join("root-cert.pem")).unwrap()).unwrap()[0]
            .as_ref(),
    );
    assert_eq!(
        r["bundles"]["other.example"],
        serde_json::json!([peer_root]),
        "federated bundle served"
    );
    // ...and written as a file a sidecar's trustBundles directory can follow.
    let written = std::fs::read(out.join("federated/other.example.pem")).expect("federated file");
    assert_eq!(
        certs_from_pem(&written).unwrap(),
        certs_from_pem(&std::fs::read(peer_dir.join("root-cert.pem")).unwrap()).unwrap()
    );
    assert_eq!(
        r["fetch_x509_bundles"],
        serde_json::json!(["cluster.local", "other.example"])
    );
    assert_eq!(
        r["no_header"]["code"], "INVALID_ARGUMENT",
        "{}",
        r["no_header"]
    );
    let jwt = &r["jwt"];
    assert_eq!(jwt["spiffe_id"], ME);
    assert_eq!(jwt["validated_by_agent"], ME);
    assert_eq!(
        jwt["validated_by_library"], ME,
        "py-spiffe verified the signature with the JWT bundle"
    );
    assert_eq!(
        jwt["audience"],
        serde_json::json!(["spiffe://cluster.local/ns/default/sa/backend"])
    );
    assert_eq!(
        jwt["bundle_domains"],
        serde_json::json!(["cluster.local", "other.example"]),
        "{jwt}"
    );
    assert_eq!(jwt["wrong_audience"]["code"], "INVALID_ARGUMENT", "{jwt}");
    assert_eq!(jwt["no_audience"]["code"], "INVALID_ARGUMENT", "{jwt}");
    assert_eq!(jwt["other_identity"]["code"], "PERMISSION_DENIED", "{jwt}");
    let streamed = r["streamed_leaves"].as_array().unwrap();
    assert_eq!(streamed.len(), 2, "the stream delivered a rotation: {r}");

    // 4. CA outage right after a rotation: past the renewal time the agent keeps the still-valid
    //    certificate in place and stays up.
    let before = leaf(&out).unwrap();
    let current = wait_for("a fresh rotation", Duration::from_secs(12), || {
        leaf(&out).filter(|l| *l != before)
    });
    let rotated_at = Instant::now();
    ca.kill();
    std::thread::sleep(Duration::from_secs(9).saturating_sub(rotated_at.elapsed()));
    assert_eq!(
        leaf(&out).unwrap(),
        current,
        "certificate kept while the CA is down"
    );
    let v = verify_files(&out, &root_pem);
    assert!(
        v.not_after > SystemTime::now(),
        "kept certificate is still valid"
    );
    assert!(agent.running(), "agent still running");

    // 5. The CA comes back on the same address: the agent renews promptly.
    let (_ca2, _, _) = start_ca_owned(&fixed_args);
    let renewed = wait_for(
        "renewal after the CA returns",
        Duration::from_secs(15),
        || leaf(&out).filter(|l| *l != current),
    );
    assert_ne!(renewed, current);
    verify_files(&out, &root_pem);
    agent.kill();
}

#[test]
fn agent_rejects_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yaml");
    std::fs::write(&cfg, "trustDomain: Cluster.Local\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["agent", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("agent.yaml"),
        "{err}"
    );
}

/// `agent --check` reads the file, prints old spellings with their replacements and the
/// identity it would request, and contacts nothing (the CA address is never dialled).
#[test]
fn check_flag_prints_deprecations_and_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yaml");
    let yaml = agent_yaml(
        "127.0.0.1:1",
        &dir.path().join("root-cert.pem"),
        "sleep",
        &dir.path().join("istio-token"),
        &dir.path().join("certs"),
        "rotation_fraction: 0.5\n",
    );
    std::fs::write(&cfg, yaml).unwrap();
    let out = std::process::Command::new(bin())
        .args(["agent", "--check", "--key-algorithm", "RSA", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok: identity spiffe://cluster.local/ns/default/sa/sleep, CA https://127.0.0.1:1, rsa2048 keys, 1 deprecated spellings"),
        "{stdout}"
    );
    assert!(
        stderr.starts_with("warning: ")
            && stderr.contains("`rotation_fraction` is deprecated; write `rotationFraction`"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("certs").exists(),
        "--check wrote certificates"
    );
}

/// Writes `<base>/agent.yaml` for `default/sleep` against the CA at `grpc` (roots in `ca_dir`),
/// with the token file `<base>/istio-token`, output in `<base>/certs`, and `extra` lines.
fn write_agent_config(base: &Path, ca_dir: &Path, grpc: &str, extra: &str) -> PathBuf {
    let (token, out) = (base.join("istio-token"), base.join("certs"));
    let root = ca_dir.join("root-cert.pem");
    let path = base.join("agent.yaml");
    std::fs::write(&path, agent_yaml(grpc, &root, "sleep", &token, &out, extra)).unwrap();
    path
}

/// Runs `tests/python/workload_api_client.py` (py-spiffe, a client we did not write) against
/// `sock` with `args`; what it printed, as JSON.
fn workload_api_client(sock: &Path, args: &[&str]) -> serde_json::Value {
    let socket = format!("unix://{}", sock.display());
    let out = run_ok(
        std::process::Command::new("python3")
            .arg(python_dir().join("workload_api_client.py"))
            .args(args)
            .env("SPIFFE_ENDPOINT_SOCKET", socket),
    );
    serde_json::from_str(&out).unwrap()
}

/// One FetchX509SVID through py-spiffe's grpcio, as ourselves; its status code.
fn probe(sock: &Path) -> String {
    let r = workload_api_client(sock, &["--probe"]);
    r["code"].as_str().unwrap_or_default().to_string()
}

/// One FetchX509SVID as another local user, with curl speaking gRPC over HTTP/2 (the Python
/// interpreter the tests use may live where that user cannot reach). Returns the response head
/// (with a trailers-only answer's `grpc-status`); an admitted caller's stream stays open, so
/// curl stops after 2 s.
fn probe_as_user(sock: &Path, request: &Path, uid: u32) -> String {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--max-time", "2"])
        .args(["--http2-prior-knowledge", "--unix-socket"])
        .arg(sock)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", "workload.spiffe.io: true", "--data-binary"])
        .arg(format!("@{}", request.display()))
        .arg("http://localhost/SpiffeWorkloadAPI/FetchX509SVID")
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
}

#[test]
fn workload_api_serves_only_attested_callers() {
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (ca_dir, jwks) = ca_and_token(base);
    let (_ca, grpc, _) = start(&ca_args(&ca_dir, &jwks, "127.0.0.1:0"));
    // The operator opened the socket's folder to every user: only attestation stands between
    // another account and the workload's key.
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(base.join("run")).unwrap();
    std::fs::set_permissions(base.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = base.join("run/agent.sock");
    let start = |callers: &str| {
        let path = write_agent_config(
            base,
            &ca_dir,
            &grpc.to_string(),
            &format!("workloadApiSocket: {}\nttl: 30m\n{callers}", sock.display()),
        );
        // The previous agent's socket file stays behind: wait for this agent's own.
        let _ = std::fs::remove_file(&sock);
        let agent = Proc::spawn(&["agent", "--config", path.to_str().unwrap()]);
        wait_for("the Workload API serving", Duration::from_secs(30), || {
            (leaf(&base.join("certs")).is_some() && sock.exists()).then_some(())
        });
        agent
    };

    // An empty X509SVIDRequest in gRPC framing, readable by the other user.
    let request = base.join("run/x509-request.bin");
    std::fs::write(&request, [0u8; 5]).unwrap();
    std::fs::set_permissions(&request, std::fs::Permissions::from_mode(0o644)).unwrap();
    let denied = "grpc-status: 7";

    // Default: the agent's own user only.
    let mut agent = start("");
    assert_eq!(probe(&sock), "OK");
    let head = probe_as_user(&sock, &request, NOBODY);
    assert!(head.contains(denied), "{head}");
    assert!(
        head.contains("not%20admitted"),
        "the message says why: {head}"
    );
    agent.kill();

    // Configured callers replace the default: here only the other user.
    let mut agent = start(&format!("workloadApiCallers: [{{uid: {NOBODY}}}]\n"));
    let head = probe_as_user(&sock, &request, NOBODY);
    assert!(
        head.starts_with("http/2 200") && !head.contains("grpc-status"),
        "{head}"
    );
    assert_eq!(probe(&sock), "PERMISSION_DENIED");
    agent.kill();

    // A rule on the binary: our uid, but only through the interpreter's own executable.
    let python = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    let me = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let me = me.unwrap();
    let mut agent = start(&format!(
        "workloadApiCallers: [{{uid: {me}, path: {python}}}]\n"
    ));
    assert_eq!(probe(&sock), "OK");
    let head = probe_as_user(&sock, &request, me);
    assert!(
        head.contains(denied),
        "curl is not the admitted binary: {head}"
    );
    agent.kill();

    // A socket folder every user can write is refused at start.
    std::fs::set_permissions(base.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "agent",
            "--config",
            base.join("agent.yaml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by every user"), "{err}");
}

#[test]
fn a_permanent_refusal_is_reported_and_not_hammered() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (ca_dir, jwks) = ca_and_token(base);
    let (_ca, grpc, _) = start(&ca_args(&ca_dir, &jwks, "127.0.0.1:0"));
    // The CA's maximum is 1h: a 2h request is refused every time, whatever the backoff.
    let path = write_agent_config(
        base,
        &ca_dir,
        &grpc.to_string(),
        "ttl: 2h\nmaxRetryInterval: 1s\n",
    );
    let mut agent = std::process::Command::new(bin())
        .args(["agent", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let _ = agent.kill();
    let out = agent.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let refusals = log.matches("will keep refusing").count();
    // Before: a retry about every second (maxRetryInterval 1s, no certificate).
    assert_eq!(refusals, 1, "one attempt, then a slow retry:\n{log}");
    assert!(log.contains("CA refused (INVALID_ARGUMENT)"), "{log}");
}

#[test]
fn an_agent_started_before_its_ca_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let (ca_dir, jwks) = ca_and_token(base);
    // The CA's address is chosen now; nothing listens there yet.
    let grpc = format!("127.0.0.1:{}", free_port());
    let out = base.join("certs");
    let path = write_agent_config(base, &ca_dir, &grpc, "ttl: 30m\nmaxRetryInterval: 2s\n");
    let mut agent = Proc::spawn(&["agent", "--config", path.to_str().unwrap()]);
    // The CA is down for 3 s: no certificate, the agent stays up and keeps trying.
    std::thread::sleep(Duration::from_secs(3));
    assert!(leaf(&out).is_none());
    assert!(agent.running(), "agent still running");
    // The CA comes up: the agent obtains its certificate within its retry cap.
    let (_ca, _, _) = start(&ca_args(&ca_dir, &jwks, &grpc));
    let started = Instant::now();
    wait_for(
        "a certificate once the CA is up",
        Duration::from_secs(15),
        || leaf(&out),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "maxRetryInterval is 2s (±20 %): {:?}",
        started.elapsed()
    );
    verify_files(&out, &std::fs::read(ca_dir.join("root-cert.pem")).unwrap());
    agent.kill();
}

/// A plug-in intermediate made by the openssl CLI as Istio's tools/certs makes it, with no
/// spiffe:// URI SAN anywhere: `ca serve` (and `control`, which takes its flags) refuses to guess
/// its trust domain; with `--trust-domain mesh.example` an agent making RSA keys gets an SVID for
/// spiffe://mesh.example/ns/default/sa/sleep; the Workload API hands py-spiffe the RSA key
/// (PKCS#8 DER) with the root under mesh.example, and the bundle endpoint serves that root
/// behind an SVID of mesh.example, which is what a federating peer checks.
#[test]
fn plugin_ca_without_uri_serves_the_given_trust_domain_to_an_rsa_agent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let ca_dir = base.join("cacerts");
    std::fs::create_dir_all(&ca_dir).unwrap();
    openssl_cacerts(&ca_dir, OsslKey::EcPkcs8, OsslKey::EcSec1, None);
    for f in ["ca-cert.pem", "root-cert.pem"] {
        let cert = &certs_from_pem(&std::fs::read(ca_dir.join(f)).unwrap()).unwrap()[0];
        assert!(uri_sans(cert).is_empty(), "{f} names no SPIFFE ID");
    }
    let ca_path = ca_dir.to_str().unwrap();
    for cmd in [
        &["ca", "serve"][..],
        &["control", "--monitoring-listen", "127.0.0.1:0"],
    ] {
        let out = std::process::Command::new(bin())
            .args(cmd)
            .args(["--ca", ca_path, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
        assert!(
            err.contains("no certificate of the chain names a trust domain")
                && err.contains("pass --trust-domain"),
            "{cmd:?}: {err}"
        );
    }

    let jwks = base.join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k1");
    std::fs::write(base.join("istio-token"), issuer.token("default", "sleep")).unwrap();
    let mut args = ca_args(&ca_dir, &jwks, "127.0.0.1:0");
    args.extend(["--trust-domain".to_string(), "mesh.example".to_string()]);
    let (_ca, grpc, bundle) = start(&args);

    let sock = base.join("run/agent.sock");
    let extra = format!("workloadApiSocket: {}\nttl: 30m\n", sock.display());
    let cfg = write_agent_config(base, &ca_dir, &grpc.to_string(), &extra);
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    let yaml = yaml.replace(&format!("trustDomain: {TD}"), "trustDomain: mesh.example");
    std::fs::write(&cfg, yaml).unwrap();
    let cfg = cfg.to_str().unwrap();
    let (mut agent, log) =
        Proc::spawn_logged(&["agent", "--config", cfg, "--key-algorithm", "RSA"]);

    let out = base.join("certs");
    wait_for("certificate files", Duration::from_secs(30), || {
        assert!(!log.text().contains("ERROR"), "{}", log.text());
        leaf(&out)
    });
    let root_pem = std::fs::read(ca_dir.join("root-cert.pem")).unwrap();
    let chain = certs_from_pem(&std::fs::read(out.join("cert-chain.pem")).unwrap()).unwrap();
    let v = verify_now(&chain, &root_pem, "mesh.example");
    assert_eq!(v.id.as_str(), "spiffe://mesh.example/ns/default/sa/sleep");
    let key = std::fs::read_to_string(out.join("key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let text = run_ok(
        std::process::Command::new("openssl")
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(out.join("key.pem")),
    );
    assert!(text.contains("Private-Key: (2048 bit"), "{text}");

    let r = workload_api_client(&sock, &[]);
    assert_eq!(r["spiffe_id"], "spiffe://mesh.example/ns/default/sa/sleep");
    assert_eq!(r["key_algorithm"], "RSA 2048");
    assert_eq!(r["key_matches_leaf"], true);
    let root = STANDARD.encode(certs_from_pem(&root_pem).unwrap()[0].as_ref());
    assert_eq!(r["bundles"], serde_json::json!({ "mesh.example": [root] }));

    // The bundle endpoint: curl verifies it against the openssl root and gets that root; the
    // certificate it serves is an SVID of mesh.example.
    let url = format!("https://localhost:{}/bundle", bundle.port());
    let root_file = ca_dir.join("root-cert.pem");
    let body = run_ok(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&root_file)
            .arg(&url),
    );
    let doc = trustmesh_ca_server::bundle::parse(body.as_bytes()).unwrap();
    assert_eq!(doc.x509_authorities, certs_from_pem(&root_pem).unwrap());
    let shown = run_ok(
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &bundle.to_string(), "-showcerts"])
            .stdin(std::process::Stdio::null()),
    );
    let served = certs_from_pem(shown.as_bytes()).unwrap();
    let ids = uri_sans(&served[0]);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with("spiffe://mesh.example/"), "{ids:?}");
    agent.kill();
}
