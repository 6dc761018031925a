//! Shared by the transparent-mesh tests (tier 2, needs root as in CI: mesh_e2e, mesh_policy_e2e):
//! a hub namespace with a bridge, one network namespace per workload on it, real `trustmesh
//! proxy` sidecars behind `trustmesh capture`, and unmodified apps and clients — Python servers,
//! and curl as uid 65534 so the capture takes its connections. A test file that uses it declares
//! `mod support;` too (for the `trustmesh` binary's path).
//!
//! Each test passes its own [`Net`]: every address comes from the benchmarking range
//! 198.18.0.0/15, the workloads from one /24 (the hub at `.1`) and the auto-allocated service
//! VIPs from another, so tests of different files never share a subnet. Everything is removed
//! when the guards drop — namespaces, their links and `/etc/netns/<name>` — pass or fail, and
//! every wait is bounded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::bin;
use trustmesh_testkit::netns::{self, Netns};
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::process::{Log, Proc};
use trustmesh_testkit::tools::{stderr, stdout};

/// The apps' uid: not the sidecar's (root), so the capture takes their connections.
pub const APP_UID: &str = "65534";
/// What a transparent-mesh test needs besides `ip`.
pub const TOOLS: &[&str] = &["iptables", "ip6tables", "curl", "setpriv", "getent"];

/// The addresses of one test's mesh.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    /// The workloads' /24 without its last byte (`198.18.1`); the hub is `.1`.
    pub prefix: &'static str,
    /// Where services without addresses get their VIP (`capture.vipRange`).
    pub vips: &'static str,
}

impl Net {
    /// `<prefix>.<host>`.
    pub fn addr(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    /// The hub's address, where the namespaces' DNS goes and nothing answers: every name an
    /// app resolves is answered by its sidecar's DNS proxy.
    pub fn hub(&self) -> String {
        self.addr(1)
    }
}

/// The hub namespace with its bridge.
pub struct Hub {
    pub ns: Netns,
    pub net: Net,
}

pub fn hub(net: Net) -> Hub {
    let ns = Netns::create("hub");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["addr", "add", &format!("{}/24", net.hub()), "dev", "br0"]);
    ns.ip(&["link", "set", "br0", "up"]);
    Hub { ns, net }
}

/// `/etc/netns/<name>/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`;
/// removed on drop.
struct Resolv(PathBuf);

impl Resolv {
    fn new(ns: &Netns, nameserver: &str) -> Resolv {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        Resolv(dir)
    }
}

impl Drop for Resolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A workload namespace on the hub's bridge.
pub struct Node {
    pub ns: Netns,
    pub addr: String,
    pub net: Net,
    _resolv: Resolv,
}

pub fn node(hub: &Hub, tag: &str, addr: &str) -> Node {
    let ns = Netns::create(tag);
    let (dev, hub_end) = netns::veth(&ns, &[&format!("{addr}/24")], &hub.ns, &[]);
    hub.ns.ip(&["link", "set", &hub_end, "master", "br0"]);
    // The VIPs are not on any link; a route lets the app's connect reach the capture.
    ns.ip(&["route", "add", hub.net.vips, "dev", &dev]);
    let resolv = Resolv::new(&ns, &hub.net.hub());
    Node {
        ns,
        addr: addr.to_string(),
        net: hub.net,
        _resolv: resolv,
    }
}

impl Node {
    /// A GET on the sidecar's admin port (on the namespace's loopback; root's connections are
    /// not captured); the body.
    pub fn admin(&self, path: &str) -> String {
        let out = self
            .ns
            .command("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:15000{path}"))
            .output()
            .unwrap();
        stdout(&out)
    }
}

/// What a sidecar's config file says; [`Spec::yaml`] renders it.
#[derive(Clone, Debug)]
pub struct Spec {
    pub ns: String,
    pub sa: String,
    /// The workload's `app` label.
    pub app: String,
    /// `trustBundles` entries: `<td>=<file>` or a directory.
    pub bundles: Vec<String>,
    /// The `mesh:` value: an inline map or a quoted file name.
    pub mesh: String,
    pub policy_dir: PathBuf,
    /// Top-level lines appended as they are.
    pub extra: String,
}

impl Spec {
    /// Workload `ns/sa` labelled `app: <app>`, in `ca`'s trust domain (trusting only `ca`),
    /// ALLOW_ANY, reading policies and the registry from `<dir>/mesh`.
    pub fn new(dir: &Path, ca: &OpensslCa, ns: &str, sa: &str, app: &str) -> Spec {
        Spec {
            ns: ns.into(),
            sa: sa.into(),
            app: app.into(),
            bundles: vec![format!("{}={}", ca.td, ca.root.display())],
            mesh: format!(
                "{{ trustDomain: {}, outboundTrafficPolicy: {{ mode: ALLOW_ANY }} }}",
                ca.td
            ),
            policy_dir: dir.join("mesh"),
            extra: String::new(),
        }
    }

    /// The config file's text, for the SVID `cert` and the VIP range `vips`.
    pub fn yaml(&self, cert: &(PathBuf, PathBuf), vips: &str) -> String {
        let bundles: Vec<String> = self.bundles.iter().map(|b| format!("\"{b}\"")).collect();
        format!(
            "workload: {{ namespace: {}, serviceAccount: {}, labels: {{ app: {} }} }}\n\
             certs: {{ key: {}, certChain: {} }}\n\
             trustBundles: [ {} ]\n\
             mesh: {}\n\
             policyDir: {}\n\
             capture: {{ vipRange: {vips} }}\n\
             admin: {{ address: \"127.0.0.1:15000\" }}\n\
             reloadPoll: 200ms\n{}",
            self.ns,
            self.sa,
            self.app,
            cert.1.display(),
            cert.0.display(),
            bundles.join(", "),
            self.mesh,
            self.policy_dir.display(),
            self.extra,
        )
    }
}

/// A sidecar: its process, its log, and its config file (rewritten to reload it).
pub struct Sidecar {
    pub proc: Proc,
    pub log: Log,
    pub config: PathBuf,
    pub spec: Spec,
    cert: (PathBuf, PathBuf),
    vips: &'static str,
    /// The access log (stdout) lines read so far.
    access: Vec<String>,
}

/// The sidecar of workload `ns/sa` (`app: <app>`) in `n`, with an SVID from `ca`, under the
/// outbound traffic policy `mode`.
#[allow(clippy::too_many_arguments)]
pub fn sidecar(
    dir: &Path,
    ca: &OpensslCa,
    n: &Node,
    ns: &str,
    sa: &str,
    app: &str,
    mode: &str,
) -> Sidecar {
    let mut spec = Spec::new(dir, ca, ns, sa, app);
    spec.mesh = spec.mesh.replace("ALLOW_ANY", mode);
    let cert = issue(ca, n, &format!("spiffe://{}/ns/{ns}/sa/{sa}", ca.td));
    start_sidecar(dir, n, spec, cert)
}

/// An SVID for `id` from `ca`, its files named for the node.
pub fn issue(ca: &OpensslCa, n: &Node, id: &str) -> (PathBuf, PathBuf) {
    let label = format!(
        "{}-{}",
        n.ns.name(),
        id.rsplit('/').next().unwrap_or("svid")
    );
    ca.issue(&label, id)
}

/// Installs the capture in `n` and starts the sidecar `spec` there with the SVID `cert`;
/// waits (≤20 s) until it is ready.
pub fn start_sidecar(dir: &Path, n: &Node, spec: Spec, cert: (PathBuf, PathBuf)) -> Sidecar {
    let config = dir.join(format!("{}.yaml", n.ns.name()));
    write_atomically(&config, &spec.yaml(&cert, n.net.vips));
    // The capture first, as an init container runs it; the sidecar runs as root (uid 0).
    let out =
        n.ns.command(bin())
            .args(["capture", "install", "--proxy-uid", "0", "--redirect-dns"])
            .output()
            .unwrap();
    assert!(out.status.success(), "capture install: {}", stderr(&out));
    let (proc, log) = Proc::start_logged(
        n.ns.command(bin())
            .args(["proxy", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info"),
    );
    wait("sidecar ready", Duration::from_secs(20), || {
        log.text().contains("trustmesh proxy ready")
    });
    Sidecar {
        proc,
        log,
        config,
        spec,
        cert,
        vips: n.net.vips,
        access: Vec::new(),
    }
}

impl Sidecar {
    /// Rewrites the config file with `change` applied to the spec (the sidecar reloads it).
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut Spec)) {
        change(&mut self.spec);
        write_atomically(&self.config, &self.spec.yaml(&self.cert, self.vips));
    }

    /// The access log so far, one JSON value per line (lines that are not JSON skipped).
    pub fn access_log(&mut self) -> Vec<serde_json::Value> {
        self.access_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access log so far as written (`accessLogEncoding: TEXT` lines too).
    pub fn access_lines(&mut self) -> &[String] {
        while let Ok(line) = self.proc.lines.try_recv() {
            self.access.push(line);
        }
        &self.access
    }
}

/// Writes `file` whole (a temporary file renamed over it), as config management does.
pub fn write_atomically(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The echo app: its name and the XFCC header its sidecar set (or `-`).
pub const ECHO: &str = r#"
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} xfcc={self.headers.get('x-forwarded-client-cert', '-')}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"#;

/// The echo app `name` on `port` in `n`.
pub fn echo(n: &Netns, name: &str, port: u16) -> Proc {
    Proc::start(
        n.command("/usr/bin/python3")
            .args(["-c", ECHO, name, &port.to_string()]),
    )
}

/// Apps on several ports of one namespace, one thread each; every argument is `kind:port` or
/// `kind:port:name`:
///
/// - `http`: answers any method with `<name> <METHOD> <target>` and then every request header
///   as `<lowercase name>: <value>`, one a line (HTTP/1.1 keep-alive, bodies read and dropped);
///   prints `<name> <METHOD> <target>` on stdout for each request, so a test knows what reached
///   the app;
/// - `echo`: a TCP echo;
/// - `greeter`: a server-first TCP protocol: says `220 hello\r\n` as soon as a client connects;
/// - `upgrade`: answers a request with `101 Switching Protocols`, then echoes bytes; prints
///   `upgrade <target>` on stdout for each request it saw.
pub const APPS: &str = r#"
import http.server, socket, socketserver, sys, threading

def http_app(port, name):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def answer(self):
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            print(f"{name} {self.command} {self.path}", flush=True)
            lines = [f"{name} {self.command} {self.path}"]
            lines += [f"{k.lower()}: {v}" for k, v in self.headers.items()]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = answer
        def log_message(self, *a):
            pass
    http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()

class TCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

def echo_app(port, name):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)
    TCP(("0.0.0.0", port), H).serve_forever()

def greeter_app(port, name):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(b"220 hello\r\n")
            self.request.recv(1024)
    TCP(("0.0.0.0", port), H).serve_forever()

def upgrade_app(port, name):
    class H(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline().decode(errors="replace")
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            print("upgrade", line.split(" ")[1] if " " in line else "-", flush=True)
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)
    TCP(("0.0.0.0", port), H).serve_forever()

kinds = {"http": http_app, "echo": echo_app, "greeter": greeter_app, "upgrade": upgrade_app}
for arg in sys.argv[1:]:
    kind, port, *name = arg.split(":")
    threading.Thread(target=kinds[kind], args=(int(port), name[0] if name else kind),
                     daemon=True).start()
threading.Event().wait()
"#;

/// [`APPS`] in `n`, each of `apps` (`http:8080:httpbin`, `echo:9000`, ...) listening; waits
/// (≤10 s) until every port accepts connections.
pub fn apps(n: &Netns, apps: &[&str]) -> Proc {
    let proc = Proc::start(n.command("/usr/bin/python3").args(["-c", APPS]).args(apps));
    let ports: Vec<u16> = apps
        .iter()
        .map(|a| a.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    wait("the apps listening", Duration::from_secs(10), || {
        let out = n.command("ss").args(["-Htln"]).output().unwrap();
        let listening = stdout(&out);
        ports.iter().all(|p| listening.contains(&format!(":{p} ")))
    });
    proc
}

/// curl as the app (uid 65534, so the capture takes it); `-i` shows the headers.
pub fn curl(n: &Netns, url: &str, extra: &[&str]) -> Output {
    n.command("setpriv")
        .args(["--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"])
        .args(curl_args(url, extra))
        .output()
        .unwrap()
}

/// A Python `script` run in `n` as the app (uid 65534, so the capture takes its connections).
pub fn python_as_app(n: &Netns, script: &str) -> Output {
    n.command("setpriv")
        .args(["--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .output()
        .unwrap()
}

/// As the app: `GET /chat` to `host:port` asking to switch to WebSocket, then `hello` once
/// the answer's head is in. Prints the answer's status line, then the first 5 bytes that come
/// back (an `upgrade` app of [`apps`] echoes them).
pub fn upgrade_then_hello(n: &Netns, host: &str, port: u16) -> Output {
    let script = format!(
        r#"
import socket
s = socket.create_connection(("{host}", {port}), timeout=5)
s.sendall(b"GET /chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
print(head.split(b"\r\n")[0].decode())
s.sendall(b"hello")
print(s.recv(5).decode(errors="replace"))
"#
    );
    python_as_app(n, &script)
}

fn curl_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "curl",
        "-q",
        "-sS",
        "-i",
        "--noproxy",
        "*",
        "--max-time",
        "5",
    ];
    args.extend_from_slice(extra);
    args.push(url);
    args
}

/// The status code and the whole response of a curl -i, or what went wrong.
pub fn get(n: &Netns, url: &str) -> (u16, String) {
    get_with(n, url, &[])
}

pub fn get_with(n: &Netns, url: &str, extra: &[&str]) -> (u16, String) {
    response(curl(n, url, extra))
}

/// [`get_with`] with curl running as root: for a namespace without a sidecar, where nothing
/// is captured anyway and the client may read the test's key files (client certificates).
pub fn get_as_root(n: &Netns, url: &str, extra: &[&str]) -> (u16, String) {
    let args = curl_args(url, extra);
    response(n.command(args[0]).args(&args[1..]).output().unwrap())
}

fn response(out: Output) -> (u16, String) {
    if !out.status.success() {
        return (
            0,
            format!("curl failed ({:?}): {}", out.status.code(), stderr(&out)),
        );
    }
    let text = stdout(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

pub fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {limit:?}");
}

/// A WorkloadEntry: workload `ns/<name>` at `addr`, labelled `app: <app>`, with a sidecar
/// whose identity is service account `sa`.
pub fn workload_entry(name: &str, ns: &str, addr: &str, sa: &str, app: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata: {{ name: {name}, namespace: {ns} }}\n\
         spec: {{ address: {addr}, labels: {{ app: {app} }}, serviceAccount: {sa} }}\n---\n"
    )
}

/// A MESH_INTERNAL ServiceEntry `<name>.<ns>.svc.cluster.local` over the workloads labelled
/// `app: <app>`, with `ports` as (number, protocol).
pub fn service_entry(name: &str, ns: &str, app: &str, ports: &[(u16, &str)]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!("{{ number: {n}, name: p{n}, protocol: {p} }}"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {{ name: {name}, namespace: {ns} }}\n\
         spec:\n  hosts: [ {name}.{ns}.svc.cluster.local ]\n  location: MESH_INTERNAL\n\
         \x20 resolution: STATIC\n  ports: [ {} ]\n  workloadSelector: {{ labels: {{ app: {app} }} }}\n---\n",
        ports.join(", ")
    )
}
