//! Shared by the CA server and agent end-to-end tests (tier 2): what needs this package's
//! `trustmesh` binary — a CA folder made with `trustmesh ca init`, `trustmesh ca serve` started
//! on ephemeral ports, and `Proc::spawn` for any `trustmesh` subcommand — on top of the test
//! kit (token issuer, child processes killed when the test ends, pass or fail).

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use trustmesh_testkit::jwt::TokenIssuer;
pub use trustmesh_testkit::jwt::{ISTIO_CA_AUDIENCE as AUDIENCE, K8S_ISSUER as ISSUER};
pub use trustmesh_testkit::net::{free_port, wait_for};
pub use trustmesh_testkit::process::{Log, Proc};
use trustmesh_testkit::tools::run_ok;

pub const TD: &str = "cluster.local";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trustmesh"))
}

/// `Proc::spawn(args)`: the kit's [`Proc`] running this package's `trustmesh` binary.
pub trait SpawnTrustmesh: Sized {
    /// Starts `trustmesh <args>`; stderr is inherited so failures show its log.
    fn spawn(args: &[&str]) -> Self;
    /// Starts `trustmesh <args>` keeping its log (stderr) too.
    fn spawn_logged(args: &[&str]) -> (Self, Log);
}

impl SpawnTrustmesh for Proc {
    fn spawn(args: &[&str]) -> Proc {
        Proc::start(Command::new(bin()).args(args))
    }

    fn spawn_logged(args: &[&str]) -> (Proc, Log) {
        Proc::start_logged(Command::new(bin()).args(args))
    }
}

/// Runs `trustmesh <args>` and asserts success; its stdout.
pub fn trustmesh(args: &[&str]) -> String {
    run_ok(Command::new(bin()).args(args))
}

/// A plug-in CA (root → intermediate) in Istio's cacerts layout, made with `trustmesh ca init`,
/// so issued chains have an intermediate like a production mesh.
pub fn make_ca(dir: &Path) {
    let root = dir.with_extension("root");
    let (root, dir) = (root.to_str().unwrap(), dir.to_str().unwrap());
    trustmesh(&["ca", "init", "--trust-domain", TD, "--out", root]);
    trustmesh(&[
        "ca",
        "init",
        "--trust-domain",
        TD,
        "--out",
        dir,
        "--parent",
        root,
    ]);
}

/// A self-signed root CA for trust domain `td`.
pub fn make_root_ca(dir: &Path, td: &str) {
    trustmesh(&[
        "ca",
        "init",
        "--trust-domain",
        td,
        "--out",
        dir.to_str().unwrap(),
    ]);
}

/// Starts `trustmesh ca serve` for `ca_dir` on ephemeral ports, trusting the token issuer whose
/// keys are at `jwks` (a file or an https URL), then `extra`; returns the process and its
/// addresses.
pub fn start_ca(
    ca_dir: &Path,
    jwks: impl AsRef<std::ffi::OsStr>,
    extra: &[&str],
) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let jwks = Path::new(jwks.as_ref());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_ca_owned(&[serve_args(ca_dir, jwks, "127.0.0.1:0"), extra].concat())
}

/// Starts `trustmesh <args>` (a `ca serve` command line) and waits for the addresses it
/// reports: gRPC, and the bundle endpoint when `--bundle-listen` is given.
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

/// [`start_ca_args`] with owned arguments (`ca_args` builders).
pub fn start_ca_owned(args: &[String]) -> (Proc, SocketAddr, Option<SocketAddr>) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    start_ca_args(&refs)
}

/// `ca serve` for `ca_dir` listening on `listen`, trusting the token issuer whose keys are in
/// `jwks` for [`AUDIENCE`].
fn serve_args(ca_dir: &Path, jwks: &Path, listen: &str) -> Vec<String> {
    let (ca_dir, jwks) = (ca_dir.to_str().unwrap(), jwks.to_str().unwrap());
    let args = ["ca", "serve", "--ca", ca_dir, "--listen", listen];
    let token = [
        "--jwt-issuer",
        ISSUER,
        "--jwks",
        jwks,
        "--audience",
        AUDIENCE,
    ];
    args.iter().chain(&token).map(|s| s.to_string()).collect()
}

/// The arguments of `ca serve` for `ca_dir` listening on `listen`, trusting the token issuer
/// whose keys are in `jwks`, with a 1h maximum TTL, then `extra`.
pub fn ca_serve_args(ca_dir: &Path, jwks: &Path, listen: &str, extra: &[&str]) -> Vec<String> {
    let mut args = serve_args(ca_dir, jwks, listen);
    args.extend(
        ["--max-ttl", "1h"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string()),
    );
    args
}

/// An agent config for `default/<sa>` against the CA at `grpc` (its root in `root`), with the
/// token in `token` and the certificate files written to `out`, then the `extra` lines.
pub fn agent_yaml(
    grpc: &str,
    root: &Path,
    sa: &str,
    token: &Path,
    out: &Path,
    extra: &str,
) -> String {
    format!(
        "trustDomain: {TD}\n\
         ca:\n  address: https://{grpc}\n  rootCert: {root}\n  serverName: trustmesh-ca\n\
         tokenFile: {token}\n\
         identity: {{namespace: default, serviceAccount: {sa}}}\n\
         outputDir: {out}\n{extra}",
        root = root.display(),
        token = token.display(),
        out = out.display(),
    )
}
