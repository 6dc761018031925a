//! Shared by the `trustmesh proxy` end-to-end tests (tier 2: proxy_e2e, proxy_authn_e2e,
//! migration_e2e, fault_drills, signals_e2e): real `trustmesh proxy` processes killed on drop,
//! started from a config the test kit writes, with certificates minted by the `openssl` CLI,
//! clients we did not write (`curl`, `openssl s_client`) and test backends from the kit.
//!
//! Every wait is bounded (attempt count and wall time), so a broken proxy fails a test instead
//! of hanging it.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use trustmesh_testkit::http::{
    echo_backend, greeter_backend, http_backend, http_get, ok_backend_after, silent_backend,
};
pub use trustmesh_testkit::net::{free_port, within};
pub use trustmesh_testkit::pki::openssl::OpensslCa as Ca;
pub use trustmesh_testkit::sidecar::{policy_dir, write_policy, Cfg, Inbound, Outbound};
pub use trustmesh_testkit::tools::{curl, curl_mtls, curl_plain, s_client};
use trustmesh_testkit::{process, tools};

pub struct Proxy {
    pub child: Child,
    pub admin: u16,
    pub stderr: PathBuf,
    pub stdout: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts `trustmesh proxy --config <dir>/<name>.yaml` and waits (≤10 s) until ready.
    pub async fn start(dir: &Path, name: &str, yaml: &str, admin: u16) -> Proxy {
        let stdout = dir.join(format!("{name}.stdout"));
        Proxy::start_logging_to(dir, name, yaml, admin, stdout).await
    }

    /// [`Proxy::start`] with the access log (stdout) going to `stdout`.
    pub async fn start_logging_to(
        dir: &Path,
        name: &str,
        yaml: &str,
        admin: u16,
        stdout: PathBuf,
    ) -> Proxy {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["proxy", "--config", cfg.to_str().unwrap()])
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn trustmesh proxy");
        let mut p = Proxy {
            child,
            admin,
            stderr,
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..200 {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("proxy {name} exited with {st}: {}", p.logs());
            }
            if let Some((200, _)) = http_get(admin, "/healthz/ready").await {
                return p;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy {name} not ready: {}", p.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.expect("metrics").1
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` (`libc::SIGTERM`, ...).
    pub fn signal(&self, sig: libc::c_int) {
        process::signal(&self.child, sig);
    }

    /// Waits (without blocking the runtime) up to `limit` for the proxy to exit.
    pub async fn exits_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        process::exits_within(&mut self.child, limit).await
    }
}

/// Runs `trustmesh <args>` and asserts success.
pub fn trustmesh(args: &[&str]) {
    tools::run_ok(Command::new(env!("CARGO_BIN_EXE_trustmesh")).args(args));
}

/// Runs `trustmesh <args>` in `dir` (so paths may be relative to it) and asserts success.
pub fn trustmesh_in(dir: &Path, args: &[&str]) {
    tools::run_ok(
        Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(args)
            .current_dir(dir),
    );
}

/// `trustmesh ca issue --ca <dir>/<ca> --spiffe-id <id> --out <dir>/<label>` and `extra`;
/// returns (cert-chain.pem, key.pem).
pub fn ca_issue(dir: &Path, ca: &str, label: &str, id: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let mut args = vec!["ca", "issue", "--ca", ca, "--spiffe-id", id, "--out", label];
    args.extend_from_slice(extra);
    trustmesh_in(dir, &args);
    let out = dir.join(label);
    (out.join("cert-chain.pem"), out.join("key.pem"))
}

/// The usual one-sidecar setup: workload `foo/app` with an openssl-made SVID of `cluster.local`,
/// an empty `policies` folder and free ports for its HTTP listener and admin endpoint.
pub struct App {
    pub ca: Ca,
    pub cert: (PathBuf, PathBuf),
    pub pol: PathBuf,
    pub inb: u16,
    pub admin: u16,
}

impl App {
    pub fn new(dir: &Path) -> App {
        let ca = Ca::new(dir, "mesh", "cluster.local");
        let cert = ca.issue("server", "spiffe://cluster.local/ns/foo/sa/app");
        App {
            ca,
            cert,
            pol: policy_dir(dir, "policies"),
            inb: free_port(),
            admin: free_port(),
        }
    }

    /// Its config with the listener in front of `backend`.
    pub fn cfg(&self, backend: u16) -> Cfg<'_> {
        Cfg::http_app(
            &self.ca, &self.cert, &self.pol, self.inb, backend, self.admin,
        )
    }

    /// Starts it in front of `backend` as `<dir>/app.yaml` and waits until it is ready.
    pub async fn start(&self, dir: &Path, backend: u16) -> Proxy {
        Proxy::start(dir, "app", &self.cfg(backend).yaml(), self.admin).await
    }
}
