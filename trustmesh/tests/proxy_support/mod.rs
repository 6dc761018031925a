//! Shared by the `trustmesh proxy` end-to-end tests (proxy_e2e, proxy_authn_e2e,
//! migration_e2e): certificates minted with the `openssl` CLI, real `trustmesh proxy`
//! processes killed on drop, clients we did not write (`curl`, `openssl s_client`), a small
//! HTTP/TCP backend inside the test, and the proxy config writer.
//!
//! Every wait is bounded (attempt count and wall time), so a broken proxy fails a test instead
//! of hanging it.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// PKI with the openssl CLI
// ---------------------------------------------------------------------------------------------

pub fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root CA for one trust domain.
pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
    pub root: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str, td: &str) -> Ca {
        let root = dir.join(format!("{name}-root.pem"));
        let key = dir.join(format!("{name}-root.key"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                root.to_str().unwrap(),
                "-days",
                "2",
                "-subj",
                &format!("/O={td}/CN={name} root"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-addext",
                &format!("subjectAltName=URI:spiffe://{td}"),
            ],
            dir,
        );
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            root,
        }
    }

    /// Issues a workload SVID; returns (cert-chain.pem, key.pem).
    pub fn issue(&self, label: &str, spiffe_id: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(format!("{}-{label}", self.name));
        let key = base.with_extension("key.pem");
        let csr = base.with_extension("csr");
        let cert = base.with_extension("cert.pem");
        let ext = base.with_extension("ext");
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName=critical,URI:{spiffe_id}\n"
            ),
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
                "-subj",
                "/O=trustmesh-test",
            ],
            &self.dir,
        );
        let root_key = self.dir.join(format!("{}-root.key", self.name));
        let serial = format!("{}", 1000 + rand_u32() % 1_000_000);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.root.to_str().unwrap(),
                "-CAkey",
                root_key.to_str().unwrap(),
                "-set_serial",
                &serial,
                "-days",
                "1",
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            &self.dir,
        );
        (cert, key)
    }
}

pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

// ---------------------------------------------------------------------------------------------
// Ports, backend, proxy process
// ---------------------------------------------------------------------------------------------

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny HTTP/1.1 backend that answers every request with `<name> <method> <path>` and the
/// `x-forwarded-client-cert` it received (plus every `x-test-*` and `x-ext-authz-*` header as
/// `name=value` lines), so tests see exactly what the proxy forwarded.
pub async fn http_backend(name: &'static str) -> u16 {
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = serve_http(name, s).await;
            });
        }
    });
    port
}

pub async fn serve_http(name: &str, s: TcpStream) -> std::io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    for _ in 0..1000 {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line)).await??;
        if n == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut xfcc = String::new();
        let mut rid = String::new();
        let mut len = 0usize;
        let mut extra = String::new();
        for _ in 0..200 {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "x-forwarded-client-cert" {
                    xfcc = v.trim().to_string();
                }
                if k == "x-request-id" {
                    rid = v.trim().to_string();
                }
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.starts_with("x-test-") || k.starts_with("x-ext-authz-") {
                    extra.push_str(&format!("{k}={}\n", v.trim()));
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let resp = format!("{name} {method} {path}\nxfcc: {xfcc}\nrid: {rid}\n{extra}");
        w.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{resp}",
                resp.len()
            )
            .as_bytes(),
        )
        .await?;
    }
    Ok(())
}

/// A TCP echo backend.
pub async fn echo_backend() -> u16 {
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

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
            assert!(
                Instant::now() < deadline,
                "proxy {name} not ready: {}",
                p.logs()
            );
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
}

/// Minimal HTTP/1.1 GET for the admin port: (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// Runs curl; returns (HTTP status or 0 when no response, body).
pub async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// curl over mTLS with a client certificate (server identity is a SPIFFE URI, not a host name,
/// so curl's host name check is skipped with -k; the proxy's check of *our* cert is under test).
pub async fn curl_mtls(
    port: u16,
    path: &str,
    cert: &(PathBuf, PathBuf),
    extra: &[&str],
) -> (u16, String) {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut args = vec![
        "-k",
        "--cert",
        cert.0.to_str().unwrap(),
        "--key",
        cert.1.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).await
}

pub async fn curl_plain(port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&url);
    curl(&args).await
}

/// `openssl s_client` sending one HTTP/1.1 request; returns everything it printed.
pub async fn s_client(port: u16, cert: Option<&(PathBuf, PathBuf)>) -> String {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
        "-no_ign_eof",
    ]);
    if let Some((c, k)) = cert {
        cmd.args(["-cert", c.to_str().unwrap(), "-key", k.to_str().unwrap()]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET /via-s-client HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), async move {
        // Keep stdin open until the response arrives, then let it drop.
        let out = child.wait_with_output().await;
        drop(stdin);
        out
    })
    .await;
    match out {
        Ok(Ok(o)) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        _ => "timeout".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Config writing
// ---------------------------------------------------------------------------------------------

pub struct Inbound {
    pub port: u16,
    pub target: u16,
    pub protocol: &'static str,
}

pub struct Outbound {
    pub port: u16,
    pub peer: u16,
    pub expect: String, // "peerIdentity: ..." or "peerTrustDomain: ..."
}

pub struct Cfg<'a> {
    pub ns: &'a str,
    pub sa: &'a str,
    pub cert: &'a (PathBuf, PathBuf),
    pub bundles: Vec<String>,
    pub mesh: String,
    pub policy_dir: &'a Path,
    pub inbound: Vec<Inbound>,
    pub outbound: Vec<Outbound>,
    pub admin: u16,
    pub extra: &'a str,
}

impl<'a> Cfg<'a> {
    /// Workload `foo/app` with one plaintext-or-mTLS HTTP listener `inb` in front of `backend`,
    /// trusting `ca` for `cluster.local`, policies from `pol`.
    pub fn http_app(
        ca: &Ca,
        cert: &'a (PathBuf, PathBuf),
        pol: &'a Path,
        inb: u16,
        backend: u16,
        admin: u16,
    ) -> Cfg<'a> {
        Cfg {
            ns: "foo",
            sa: "app",
            cert,
            bundles: vec![format!("cluster.local={}", ca.root.display())],
            mesh: "{ trustDomain: cluster.local }".into(),
            policy_dir: pol,
            inbound: vec![Inbound {
                port: inb,
                target: backend,
                protocol: "http",
            }],
            outbound: vec![],
            admin,
            extra: "",
        }
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "workload:\n  namespace: {}\n  serviceAccount: {}\n  labels: {{ app: {} }}\n\
             certs:\n  key: {}\n  certChain: {}\n\
             trustBundles:\n",
            self.ns,
            self.sa,
            self.sa,
            self.cert.1.display(),
            self.cert.0.display()
        );
        for b in &self.bundles {
            y.push_str(&format!("  - \"{b}\"\n"));
        }
        y.push_str(&format!("mesh: {}\n", self.mesh));
        y.push_str(&format!("policyDir: {}\n", self.policy_dir.display()));
        y.push_str("inbound:\n");
        if self.inbound.is_empty() {
            y.push_str("  []\n");
        }
        for i in &self.inbound {
            y.push_str(&format!(
                "  - {{ port: {}, targetPort: {}, protocol: {} }}\n",
                i.port, i.target, i.protocol
            ));
        }
        y.push_str("outbound:\n");
        if self.outbound.is_empty() {
            y.push_str("  []\n");
        }
        for o in &self.outbound {
            y.push_str(&format!(
                "  - {{ port: {}, peer: \"127.0.0.1:{}\", {} }}\n",
                o.port, o.peer, o.expect
            ));
        }
        y.push_str(&format!(
            "admin:\n  address: \"127.0.0.1:{}\"\n",
            self.admin
        ));
        y.push_str(self.extra);
        y
    }
}

pub fn policy_dir(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn write_policy(dir: &Path, file: &str, yaml: &str) {
    // Write then rename, as config management tools do, so the proxy never sees half a file.
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// Polls `check` every 100 ms for at most `limit`; returns the elapsed time when it held.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    for _ in 0..1000 {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A server-first backend (like SMTP or MySQL): greets on connect, then echoes.
pub async fn greeter_backend() -> u16 {
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if s.write_all(b"220 hello\r\n").await.is_ok() {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    port
}

/// Runs `trustmesh <args>` and asserts success.
pub fn trustmesh(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(args)
        .output()
        .expect("run trustmesh");
    assert!(
        out.status.success(),
        "trustmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
