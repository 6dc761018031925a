//! The programs we did not write, as tests run them: curl, `openssl s_client` and dig as clients,
//! the openssl CLI as an independent certificate maker and verifier, Python with grpcio,
//! py-spiffe and PyJWT as third-party peers (`tests/python/`). Agreeing with them is the point
//! of tier 2, so their output is returned as they printed it, and a failing run panics with
//! its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// `tests/python` at the repository root.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python")
}

/// Runs `cmd` to completion and asserts it succeeded; its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert_success(&format!("{cmd:?}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with the program's exit code and stderr unless `out` is a success.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
}

/// A finished program's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A finished program's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl <args>` in `dir` and asserts success; its stdout.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    run_ok(Command::new("openssl").args(args).current_dir(dir))
}

/// Whether python3 can import `modules` (`"jwt, cryptography"`); when it cannot, prints a loud
/// SKIP for `what`, except under CI (`CI` set), where the absence is a failure.
pub fn python_has(modules: &str, what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 cannot import {modules}: pip install -r tests/python/requirements.txt"
        );
        eprintln!("\n!!!!! SKIP: python3 cannot import {modules}; {what} not run !!!!!\n");
    }
    ok
}

/// Whether `dig` is installed; when it is not, prints a loud SKIP for `what`, except under CI
/// (`CI` set), where the absence is a failure (`.ci/run` installs it).
pub fn dig_available(what: &str) -> bool {
    tool_available("dig", "-v", "bind9-dnsutils", what)
}

/// Whether `program` runs (`program version_flag` succeeds); when it does not, prints a loud
/// SKIP for `what`, except under CI (`CI` set), where the absence is a failure: `.ci/run`
/// installs the Debian package `package`.
pub fn tool_available(program: &str, version_flag: &str, package: &str, what: &str) -> bool {
    let ok = Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {program} is missing: apt-get install {package}"
        );
        eprintln!("\n!!!!! SKIP: {program} is not installed; {what} not run !!!!!\n");
    }
    ok
}

/// Runs `dig <args>` (one try, 2 s timeout) and returns what it printed on stdout.
pub async fn dig(args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .args(["+tries=1", "+time=2"])
        .args(args)
        .output()
        .await
        .expect("run dig");
    stdout(&out)
}

/// Runs curl (silent, 5 s at most) with `args`; returns (HTTP status or 0 when no response,
/// body).
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

/// curl over mTLS with a client certificate `(cert-chain.pem, key.pem)`. The server's identity
/// is a SPIFFE URI, not a host name, so curl's host name check is skipped with -k; the
/// server's check of *our* certificate is what is under test.
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

/// curl over plain HTTP to a loopback port.
pub async fn curl_plain(port: u16, path: &str, extra: &[&str]) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&url);
    curl(&args).await
}

/// `openssl s_client` sending one HTTP/1.1 request (`GET /via-s-client`), with a client
/// certificate when given; everything it printed, or `timeout` after 10 s.
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
        .stderr(Stdio::piped())
        .kill_on_drop(true);
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
        Ok(Ok(o)) => format!("{}{}", stdout(&o), stderr(&o)),
        _ => "timeout".into(),
    }
}

/// Envoy's ext_authz gRPC API served by Python grpcio (`tests/python/ext_authz_server.py`,
/// which compiles our .proto files with grpc_tools): a third-party authorizer that records
/// every CheckRequest it gets. Killed on drop.
pub struct ExtAuthzServer {
    pub proc: crate::process::Proc,
    pub port: u16,
    log: PathBuf,
}

impl ExtAuthzServer {
    /// Starts the server, its log of checks in `dir`; waits (≤30 s, it compiles the protos
    /// first) for the port it reports.
    pub fn start(dir: &Path) -> ExtAuthzServer {
        ExtAuthzServer::start_with(Command::new("python3"), dir, "127.0.0.1")
    }

    /// [`ExtAuthzServer::start`], admitting the TCP connections (checks without an HTTP
    /// request) of the peers with these SPIFFE IDs and refusing the others.
    pub fn start_allowing(dir: &Path, principals: &[&str]) -> ExtAuthzServer {
        let allow: Vec<&str> = principals
            .iter()
            .flat_map(|p| ["--allow-principal", p])
            .collect();
        ExtAuthzServer::launch(Command::new("python3"), dir, "127.0.0.1", &allow)
    }

    /// [`ExtAuthzServer::start`] run by `python` (`python3`, or `ip netns exec <ns> python3` for
    /// a server in a network namespace), listening on `bind` (`0.0.0.0`: every address).
    pub fn start_with(python: Command, dir: &Path, bind: &str) -> ExtAuthzServer {
        ExtAuthzServer::launch(python, dir, bind, &[])
    }

    fn launch(mut python: Command, dir: &Path, bind: &str, extra: &[&str]) -> ExtAuthzServer {
        let log = dir.join("ext-authz-checks.jsonl");
        let mut proc = crate::process::Proc::start(
            python
                .arg(python_dir().join("ext_authz_server.py"))
                .arg("--log")
                .arg(&log)
                .args(["--bind", bind])
                .args(["--max-seconds", "120"])
                .args(extra),
        );
        let port = proc.wait_line("PORT ", Duration::from_secs(30));
        ExtAuthzServer {
            port: port.trim().parse().unwrap(),
            proc,
            log,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CheckRequests the server recorded, oldest first.
    pub fn seen(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Whether nginx is installed; when it is not, prints a loud SKIP for `what`, except under CI
/// (`CI` set), where the absence is a failure (`.ci/run` installs `nginx-light`).
pub fn nginx_available(what: &str) -> bool {
    tool_available("nginx", "-v", "nginx-light", what)
}

/// nginx serving the `server { ... }` blocks a test wrote, as one foreground process (no
/// master, no daemon) with its pid file, logs and temporary files in `dir/nginx`, which is also
/// its prefix: a relative path in the test's blocks (`access_log checks.log fmt;`) lands there
/// and reads back with [`Nginx::file`]. Killed on drop.
pub struct Nginx {
    pub proc: crate::process::Proc,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http_blocks` inside its `http { }` block and waits (≤10 s) until
    /// `port` on 127.0.0.1 accepts connections.
    pub fn start(dir: &Path, http_blocks: &str, port: u16) -> Nginx {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             {http_blocks}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let proc = crate::process::Proc::start(
            Command::new("nginx")
                .arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&file)
                .args(["-g", "daemon off; master_process off;"]),
        );
        let mut nginx = Nginx { proc, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                nginx.proc.running() && std::time::Instant::now() < deadline,
                "nginx did not listen on {port}: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// nginx's own error log (start-up problems, each request's errors).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// A file nginx writes in its folder (an access log the test's blocks named).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}
