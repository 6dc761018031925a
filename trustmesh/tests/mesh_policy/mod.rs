//! The shared part of mesh_policy_e2e (see its header for the map of what is where): the
//! test's addresses, its folder and hub, and the clients and probes every topology uses.

mod authentication;
mod authorization;
mod findings;
mod http_requests;
mod peer_authentication;
mod trust_domains;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::mesh_support::{get_as_root, hub, Hub, Net, Node, Sidecar, APP_UID};
use crate::support;
use serde_json::Value;
use trustmesh_testkit::netns::{self, Netns};
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::process::Proc;
use trustmesh_testkit::sidecar::write_policy;
use trustmesh_testkit::tools::{stderr, stdout};

const TD: &str = "cluster.local";
/// Workloads in 198.18.3.0/24, VIPs in 198.19.3.0/24 (mesh_e2e has 198.18.1.0/24): every test
/// here has a hub of its own, so they share the subnet without meeting.
const NET: Net = Net {
    prefix: "198.18.3",
    vips: "198.19.3.0/24",
};
/// Where the explicit mode's tests call from: `foo/sleep`, the client of Istio's samples.
const SLEEP: u8 = 10;
/// A namespace without a sidecar: curl (plain, or mTLS with a certificate of the test's), the
/// authorizer, a JWKS server.
const OUTSIDE: u8 = 30;

/// (cert-chain.pem, key.pem).
type Svid = (PathBuf, PathBuf);

fn id(ns: &str, sa: &str) -> String {
    format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
}

/// A test's folder, with `mesh/` (the registry and every policy, read by every sidecar, as
/// from one control plane), the mesh CA, and the hub.
fn setup(registry: &str) -> (tempfile::TempDir, OpensslCa, Hub) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("mesh")).unwrap();
    std::fs::write(tmp.path().join("mesh/registry.yaml"), registry).unwrap();
    let ca = OpensslCa::new(tmp.path(), "mesh", TD);
    (tmp, ca, hub(NET))
}

/// Writes a policy file into the mesh folder (whole, renamed into place).
fn policy(dir: &Path, file: &str, yaml: &str) {
    write_policy(&dir.join("mesh"), file, yaml);
}

fn unpolicy(dir: &Path, file: &str) {
    std::fs::remove_file(dir.join("mesh").join(file)).unwrap();
}

/// curl from a namespace without a sidecar, over mTLS with the client certificate `cert`
/// (`-k`: the server's identity is a SPIFFE ID, not a host name; ours is what is checked).
fn get_mtls(n: &Netns, url: &str, cert: &Svid, extra: &[&str]) -> (u16, String) {
    let (c, k) = (cert.0.to_str().unwrap(), cert.1.to_str().unwrap());
    let args = [&["-k", "--cert", c, "--key", k][..], extra].concat();
    get_as_root(n, url, &args)
}

/// The body of a curl -i response.
fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of the header `name` (lowercase) in the app's echo of the request.
fn seen_header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    body(text)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// Every value of the header `name` (lowercase) in the app's echo of the request.
fn seen_headers<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    body(text)
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

/// `openssl s_client` from `n` to `addr` sending one HTTP/1.1 request (`GET /via-s-client`),
/// with a client certificate when given; everything it printed. Its stdin stays open for a
/// second so the answer can arrive.
fn s_client(n: &Netns, addr: &str, cert: Option<&Svid>) -> String {
    let cert = cert.map_or(String::new(), |(c, k)| {
        format!("-cert {} -key {}", c.display(), k.display())
    });
    let script = format!(
        "(printf 'GET /via-s-client HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'; \
         sleep 1) | timeout 10 openssl s_client -connect {addr} -quiet -no_ign_eof {cert} 2>&1"
    );
    stdout(&n.command("sh").args(["-c", &script]).output().unwrap())
}

/// The TLS version a handshake from `n` to `addr` with `version` (`-tls1_3`) agreed on, as
/// `openssl s_client -brief` prints it (with its own security level lowered, so a refusal is
/// the server's).
fn tls_version(n: &Netns, addr: &str, cert: &Svid, version: &str) -> String {
    let out = n
        .command("timeout")
        .args(["10", "openssl", "s_client", "-connect", addr, version])
        .args(["-cipher", "DEFAULT@SECLEVEL=0", "-brief"])
        .args(["-cert", cert.0.to_str().unwrap()])
        .args(["-key", cert.1.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    stderr(&out) + &stdout(&out)
}

/// Sends `bytes` from `n` to `addr` over TCP and returns the first line of the answer (empty
/// when the connection closed without one).
fn raw(n: &Netns, addr: &str, bytes: &[u8]) -> String {
    let (addr, bytes) = (addr.to_string(), bytes.to_vec());
    n.run(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line.trim_end().to_string()
    })
}

/// The value of the metric line `name` (with its labels) in `metrics`.
fn metric(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `/config_dump` of the sidecar in `n`.
fn config_dump(n: &Node) -> Value {
    serde_json::from_str(&n.admin("/config_dump")).unwrap()
}

/// The requests an [`apps`] HTTP app printed (`<name> <METHOD> <target>`) since last asked
/// (until none has come for 200 ms: the lines travel through a pipe and a thread).
fn app_saw(app: &Proc) -> Vec<String> {
    let settle = Duration::from_millis(200);
    std::iter::from_fn(|| app.lines.recv_timeout(settle).ok()).collect()
}

/// Waits until the sidecar's access log has a line that `find` picks, and returns it.
fn access_line(sc: &mut Sidecar, what: &str, find: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = sc.access_log().into_iter().find(&find) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line for {what}: {:?}",
            sc.access_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn strict_in(ns: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{ name: default, namespace: {ns} }}\nspec:\n  mtls: {{ mode: STRICT }}\n")
}

/// The app's own line client (run as uid 65534, so the capture takes its connection): one
/// connection to `host:port`, stdin lines sent, received lines printed; it exits when the
/// connection closes.
const LINE_CLIENT: &str = r#"
import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(None)
def back():
    for line in s.makefile("rb"):
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()
    os._exit(0)
threading.Thread(target=back, daemon=True).start()
for line in sys.stdin:
    s.sendall(line.encode())
"#;

/// One TCP connection carrying lines there and back, through a client process whose stdin
/// the test writes and whose stdout lines come back.
struct Conversation {
    proc: Proc,
    stdin: std::process::ChildStdin,
}

impl Conversation {
    fn start(cmd: &mut std::process::Command) -> Conversation {
        let mut proc = Proc::start(cmd.stdin(Stdio::piped()).stderr(Stdio::null()));
        let stdin = proc.child.stdin.take().unwrap();
        Conversation { proc, stdin }
    }

    /// `openssl s_client` from `n` to `addr` with the client certificate `cert`.
    fn s_client(n: &Netns, addr: &str, cert: &Svid) -> Conversation {
        Conversation::start(
            n.command("openssl")
                .args(["s_client", "-connect", addr, "-quiet"])
                .args(["-cert", cert.0.to_str().unwrap()])
                .args(["-key", cert.1.to_str().unwrap()]),
        )
    }

    /// The app in `n` (uid 65534) connecting to `host:port`.
    fn app(n: &Netns, host: &str, port: u16) -> Conversation {
        Conversation::start(
            n.command("setpriv")
                .args(["--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"])
                .args([
                    "/usr/bin/python3",
                    "-c",
                    LINE_CLIENT,
                    host,
                    &port.to_string(),
                ]),
        )
    }

    /// Says `word`; the line that came back within 3 s, or `None` (closed, or nothing).
    fn say(&mut self, word: &str) -> Option<String> {
        writeln!(self.stdin, "{word}").ok()?;
        self.proc.lines.recv_timeout(Duration::from_secs(3)).ok()
    }
}
