//! Shared by the CA server and agent end-to-end tests: a CA folder, a token issuer, and a
//! `trustmesh` child process that is killed when the test ends (pass or fail).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};

pub const TD: &str = "cluster.local";
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const AUDIENCE: &str = "istio-ca";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trustmesh"))
}

/// A plug-in CA (root → intermediate) in Istio's cacerts layout, made with `trustmesh ca init`,
/// so issued chains have an intermediate like a production mesh.
pub fn make_ca(dir: &Path) {
    let root = dir.with_extension("root");
    ca_init(&["--trust-domain", TD, "--out", root.to_str().unwrap()]);
    ca_init(&[
        "--trust-domain",
        TD,
        "--out",
        dir.to_str().unwrap(),
        "--parent",
        root.to_str().unwrap(),
    ]);
}

/// A self-signed root CA for trust domain `td`.
pub fn make_root_ca(dir: &Path, td: &str) {
    ca_init(&["--trust-domain", td, "--out", dir.to_str().unwrap()]);
}

fn ca_init(args: &[&str]) {
    let out = Command::new(bin())
        .args(["ca", "init"])
        .args(args)
        .output()
        .expect("run trustmesh ca init");
    assert!(
        out.status.success(),
        "trustmesh ca init {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token issuer: an ES256 key whose JWKS is written to `jwks_path`.
pub struct TokenIssuer {
    key: KeyPair,
    pub kid: String,
}

impl TokenIssuer {
    pub fn new(jwks_path: &Path, kid: &str) -> TokenIssuer {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        assert_eq!(raw.len(), 65);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
        }]});
        std::fs::write(jwks_path, serde_json::to_vec(&jwks).unwrap()).unwrap();
        TokenIssuer {
            key,
            kid: kid.to_string(),
        }
    }

    /// A projected service-account token for `ns/sa`, like the kubelet mounts for istio-agent.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.token_with(ISSUER, AUDIENCE, ns, sa, 600)
    }

    pub fn token_with(&self, iss: &str, aud: &str, ns: &str, sa: &str, exp_in: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({
            "iss": iss, "aud": [aud], "sub": format!("system:serviceaccount:{ns}:{sa}"),
            "iat": now, "nbf": now - 5, "exp": now + exp_in,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "0"}},
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// A child process killed on drop; stderr is inherited so failures show its log.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::start(args, Stdio::inherit())
    }

    fn start(args: &[&str], stderr: Stdio) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn trustmesh");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    /// Waits (bounded) for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l[prefix.len()..].to_string(),
                Ok(_) => continue,
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("no {prefix:?} line within {timeout:?} (process status: {status:?})")
                }
            }
        }
    }

    /// Like [`Proc::spawn`], but the process's log (its stderr) is also kept, for tests that
    /// assert on what it said; every line is still echoed to the test's stderr.
    pub fn spawn_logged(args: &[&str]) -> (Proc, Log) {
        let mut p = Proc::start(args, Stdio::piped());
        let log = Log::default();
        let (err, kept) = (p.child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut text = kept.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        (p, log)
    }

    /// Still running (not exited)?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`Proc::spawn_logged`] process has written to stderr so far.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `trustmesh ca serve` on ephemeral ports; returns the process and its addresses.
pub fn start_ca(
    ca_dir: &Path,
    jwks: &Path,
    extra: &[&str],
) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let mut args = vec![
        "ca",
        "serve",
        "--ca",
        ca_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--jwt-issuer",
        ISSUER,
        "--jwks",
        jwks.to_str().unwrap(),
        "--audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    start_ca_args(&args)
}

pub fn start_ca_args(args: &[&str]) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let mut p = Proc::spawn(args);
    let (grpc, bundle) = ca_addresses(&mut p, args);
    (p, grpc, bundle)
}

/// Like [`start_ca_args`], keeping the CA's log (see [`Proc::spawn_logged`]).
pub fn start_ca_args_logged(args: &[&str]) -> (Proc, Log, SocketAddr, Option<SocketAddr>) {
    let (mut p, log) = Proc::spawn_logged(args);
    let (grpc, bundle) = ca_addresses(&mut p, args);
    (p, log, grpc, bundle)
}

/// The addresses a starting `ca serve` announces on stdout.
fn ca_addresses(p: &mut Proc, args: &[&str]) -> (SocketAddr, Option<SocketAddr>) {
    let grpc: SocketAddr = p
        .wait_line("listening grpc=", Duration::from_secs(30))
        .parse()
        .unwrap();
    let bundle = if args.contains(&"--bundle-listen") {
        Some(
            p.wait_line("listening bundle=", Duration::from_secs(10))
                .parse()
                .unwrap(),
        )
    } else {
        None
    };
    (grpc, bundle)
}

/// Sends `sig` to the process.
pub fn send_signal(p: &Proc, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(p.child.id() as libc::pid_t, sig) }, 0);
}

/// Waits (bounded by `timeout`) for the process to exit; its status and how long it took.
pub fn exit_within(p: &mut Proc, timeout: Duration) -> (std::process::ExitStatus, Duration) {
    let started = std::time::Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return (s, started.elapsed());
        }
        assert!(
            started.elapsed() < timeout,
            "the process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
