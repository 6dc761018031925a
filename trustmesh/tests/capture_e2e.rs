//! `trustmesh capture` as an init container runs it (tier 2; needs root, as in CI): the real
//! binary installs its rules inside a network namespace of the test's own, so the machine's
//! firewall is never touched, and real connections check what is captured and what is not.
//!
//! Two namespaces joined by a veth pair, with addresses only from the benchmarking range
//! 198.18.0.0/15 (and the veth ends' own IPv6 link-local addresses): the "workload"
//! (198.18.0.1) with the capture rules, and a "peer" (198.18.0.2 and .3). The sidecar is
//! played by listeners of this test process, running as root (`--proxy-uid 0`) inside the
//! workload namespace, which answer with the `original_dst` of what they accepted; the app is
//! uid 65534 (curl and bash under `setpriv`). Every client command runs under `timeout`, the
//! servers are stopped and the namespaces deleted when a test ends, pass or fail.
//!
//! IPv6 is checked inbound, over link-local addresses: `PREROUTING`'s REDIRECT keeps the
//! interface's address. Outbound, Linux cannot redirect a connection to a link-local
//! destination onto `::1` (the answer to the link-local source has no route from `lo`), and
//! this test uses no other IPv6 addresses, so outbound IPv6 is left to the planner's unit
//! tests (the same rules with `::1`, checked as text).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::bin;
use trustmesh_capture::original_dst;
use trustmesh_testkit::netns::{self, Netns};
use trustmesh_testkit::tools::{run_ok, stderr, stdout};

const WORKLOAD: &str = "198.18.0.1";
const PEER: &str = "198.18.0.2";
const PEER_EXCLUDED: &str = "198.18.0.3";
const APP_UID: &str = "65534";
const TOOLS: &[&str] = &[
    "iptables",
    "ip6tables",
    "curl",
    "setpriv",
    "timeout",
    "bash",
    "dd",
];

/// The options of the main scenario: istio-iptables' flags, plus DNS capture.
const INSTALL: &[&str] = &[
    "--proxy-uid",
    "0",
    "--istio-local-exclude-ports",
    "8081",
    "--istio-service-exclude-cidr",
    "198.18.0.3/32",
    "--istio-local-outbound-ports-exclude",
    "81",
    "--redirect-dns",
    "--capture-all-dns",
];

#[test]
fn captures_outbound_inbound_and_dns_and_leaves_the_exclusions_alone() {
    if !netns::usable("capture_e2e", TOOLS) {
        return;
    }
    let (workload, peer) = (Netns::create("wl"), Netns::create("peer"));
    let (wl_dev, peer_dev) = netns::veth(
        &workload,
        &[&format!("{WORKLOAD}/29")],
        &peer,
        &[&format!("{PEER}/29"), &format!("{PEER_EXCLUDED}/29")],
    );
    let peer_v6 = netns::link_local(&peer, &peer_dev).unwrap();
    let peer_v6_url = format!("[{peer_v6}%25{wl_dev}]");
    let wl_v6 = netns::link_local(&workload, &wl_dev).unwrap();
    let wl_v6_url = format!("[{wl_v6}%25{peer_dev}]");

    let mut servers = Servers::default();
    // The sidecar's listeners (dual-stack, as a sidecar binds) and its DNS proxy.
    servers.tcp(&workload, "[::]:15001", "outbound", Report::OriginalDst);
    servers.tcp(&workload, "[::]:15006", "inbound", Report::OriginalDst);
    servers.tcp(&workload, "[::]:15053", "dns-proxy", Report::OriginalDst);
    // On loopback, as istio-agent binds it: an answer must leave from the address the query
    // was redirected to, or conntrack cannot give it back the resolver's address.
    servers.udp(&workload, "127.0.0.1:15053", "dns-proxy");
    // The app.
    servers.tcp(&workload, "[::]:8080", "app", Report::Local);
    servers.tcp(&workload, "[::]:8081", "app", Report::Local);
    // The peer's real services.
    servers.tcp(&peer, "[::]:80", "peer", Report::Local);
    servers.tcp(&peer, "[::]:81", "peer", Report::Local);
    servers.udp(&peer, "0.0.0.0:53", "peer-dns");

    // The app's and the proxy's connections from the workload, and the peer's to it.
    let app = |url: &str| curl(&workload, App, url);
    let proxy = |url: &str| curl(&workload, Proxy, url);
    let from_peer = |url: &str| curl(&peer, Proxy, url);

    // Before capture nothing is redirected.
    assert_eq!(app(&http(PEER, 80)), "peer 198.18.0.2 80");

    capture(&workload, "install", INSTALL);

    // Outbound TCP from the app goes to the outbound port, which learns where it was going;
    // the proxy's own connections are not captured.
    assert_eq!(app(&http(PEER, 80)), "outbound 198.18.0.2 80");
    assert_eq!(proxy(&http(PEER, 80)), "peer 198.18.0.2 80");
    assert_eq!(proxy(&http(&peer_v6_url, 80)), format!("peer {peer_v6} 80"));
    // Inbound TCP goes to the inbound port, IPv6 too, except the excluded port.
    assert_eq!(from_peer(&http(WORKLOAD, 8080)), "inbound 198.18.0.1 8080");
    assert_eq!(
        from_peer(&http(&wl_v6_url, 8080)),
        format!("inbound {wl_v6} 8080")
    );
    assert_eq!(from_peer(&http(WORKLOAD, 8081)), "app 198.18.0.1 8081");
    assert_eq!(
        from_peer(&http(&wl_v6_url, 8081)),
        format!("app {wl_v6} 8081")
    );
    // Excluded destinations and ports reach the peer directly.
    assert_eq!(app(&http(PEER_EXCLUDED, 80)), "peer 198.18.0.3 80");
    assert_eq!(app(&http(PEER, 81)), "peer 198.18.0.2 81");
    // Loopback: the app talking to itself is left alone, and so is the proxy talking to the
    // app on 127.0.0.1; the proxy calling the workload's own address goes to the inbound side;
    // the proxy's passthrough from 127.0.0.6 to that address does not loop.
    assert_eq!(app(&http("127.0.0.1", 8080)), "app 127.0.0.1 8080");
    assert_eq!(app(&http(WORKLOAD, 8080)), "app 198.18.0.1 8080");
    assert_eq!(proxy(&http("127.0.0.1", 8080)), "app 127.0.0.1 8080");
    assert_eq!(proxy(&http(WORKLOAD, 8080)), "inbound 198.18.0.1 8080");
    let passthrough = ["--interface", "127.0.0.6"];
    let answer = curl_with(&workload, Proxy, &http(WORKLOAD, 8080), &passthrough);
    assert_eq!(answer, "app 198.18.0.1 8080");
    // DNS: the app's queries (UDP and TCP) go to the DNS proxy, the proxy's own do not.
    assert_eq!(udp_query(&workload, App, PEER, 53), "dns-proxy");
    assert_eq!(udp_query(&workload, Proxy, PEER, 53), "peer-dns");
    assert_eq!(app(&http(PEER, 53)), "dns-proxy 198.18.0.2 53");

    // Installing other options replaces ours: without DNS capture the app reaches the peer's
    // resolver, and the raw table holds nothing of ours.
    capture(&workload, "install", &["--proxy-uid", "0"]);
    assert_eq!(udp_query(&workload, App, PEER, 53), "peer-dns");
    assert!(!save(&workload, "iptables-save").contains("TRUSTMESH_OUTPUT_DNS"));
    assert_eq!(app(&http(PEER, 80)), "outbound 198.18.0.2 80");

    // After remove nothing is captured any more.
    capture(&workload, "remove", &[]);
    assert_eq!(app(&http(PEER, 80)), "peer 198.18.0.2 80");
    assert_eq!(from_peer(&http(WORKLOAD, 8080)), "app 198.18.0.1 8080");
}

#[test]
fn install_is_idempotent_and_remove_restores_the_namespace_rules() {
    if !netns::usable("capture_e2e", TOOLS) {
        return;
    }
    let ns = Netns::create("rules");
    // Someone else's rules, in every table we write to and one we do not.
    restore(&ns, "iptables-restore", FOREIGN_V4);
    restore(&ns, "ip6tables-restore", FOREIGN_V6);
    let before = [
        normalized(&save(&ns, "iptables-save")),
        normalized(&save(&ns, "ip6tables-save")),
    ];

    // A dry run prints the rules and applies nothing.
    let dry = capture(&ns, "install", &[&["--dry-run"], INSTALL].concat());
    assert!(
        dry.contains("# IPv4: iptables-restore --noflush\n*nat\n"),
        "{dry}"
    );
    assert!(dry.contains("-A OUTPUT -j TRUSTMESH_OUTPUT\n"), "{dry}");
    assert!(
        dry.contains("# IPv6: ip6tables-restore --noflush\n"),
        "{dry}"
    );
    assert_eq!(normalized(&save(&ns, "iptables-save")), before[0]);

    capture(&ns, "install", INSTALL);
    let once = [save(&ns, "iptables-save"), save(&ns, "ip6tables-save")];
    capture(&ns, "install", INSTALL);
    let twice = [save(&ns, "iptables-save"), save(&ns, "ip6tables-save")];
    for (a, b) in once.iter().zip(&twice) {
        assert_eq!(
            rule_count(a),
            rule_count(b),
            "installing twice added rules:\n{b}"
        );
        assert_eq!(normalized(a), normalized(b));
        assert_eq!(b.matches("-j TRUSTMESH_OUTPUT\n").count(), 1, "{b}");
    }
    // `show` lists ours, all of them, and nothing else.
    let v4 = &twice[0];
    let ours =
        rule_count(v4) - rule_count(FOREIGN_V4) + rule_count(&twice[1]) - rule_count(FOREIGN_V6);
    let shown = capture(&ns, "show", &[]);
    assert!(shown.starts_with("# IPv4\n"), "{shown}");
    assert!(shown.contains("\n# IPv6\n"), "{shown}");
    assert_eq!(shown.matches("\n-A ").count(), ours, "{shown}");
    assert!(
        !shown.contains("FOREIGN") && !shown.contains("sctp"),
        "{shown}"
    );

    // remove --dry-run names what it would delete and deletes nothing.
    let dry = capture(&ns, "remove", &["--dry-run"]);
    assert!(dry.contains("-X TRUSTMESH_OUTPUT\n"), "{dry}");
    assert_eq!(
        save(&ns, "iptables-save").matches("TRUSTMESH").count(),
        v4.matches("TRUSTMESH").count()
    );

    capture(&ns, "remove", &[]);
    let after = [
        normalized(&save(&ns, "iptables-save")),
        normalized(&save(&ns, "ip6tables-save")),
    ];
    assert_eq!(after, before, "remove left the namespace's rules changed");
    assert!(!after.concat().iter().any(|l| l.contains("TRUSTMESH")));
    assert_eq!(
        capture(&ns, "show", &[]),
        "# IPv4: no capture rules installed\n# IPv6: no capture rules installed\n"
    );
    assert!(capture(&ns, "remove", &[]).contains("nothing of ours installed"));
}

#[test]
fn refuses_bad_options_and_non_root_callers_before_touching_anything() {
    if !netns::usable("capture_e2e", TOOLS) {
        return;
    }
    let ns = Netns::create("bad");
    let out = capture_output(&ns, "install", &["--istio-service-exclude-cidr", "*"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--istio-service-exclude-cidr"),
        "{}",
        stderr(&out)
    );
    let out = capture_output(&ns, "install", &["--proxy-uid", "istio-proxy"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a numeric user or group id"),
        "{}",
        stderr(&out)
    );
    // Not root: one sentence that says so, exit code 1.
    let out = client(&ns, App, bin().to_str().unwrap())
        .args(["capture", "install"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("this takes root"), "{}", stderr(&out));
    assert!(!save(&ns, "iptables-save").contains("TRUSTMESH"));
}

const FOREIGN_V4: &str = "\
*nat
:FOREIGN - [0:0]
-A OUTPUT -d 198.18.0.5/32 -j FOREIGN
-A FOREIGN -p tcp -j RETURN
COMMIT
*raw
-A OUTPUT -d 198.18.0.5/32 -j ACCEPT
COMMIT
*filter
-A INPUT -s 198.18.0.5/32 -j ACCEPT
COMMIT
";

const FOREIGN_V6: &str = "\
*nat
-A OUTPUT -p sctp -j ACCEPT
COMMIT
*raw
-A PREROUTING -p sctp -j ACCEPT
COMMIT
";

// ---------------------------------------------------------------------------------------------
// The binary, iptables and clients.

/// `trustmesh capture <sub> <args>` in `ns`, asserting success; its stdout.
fn capture(ns: &Netns, sub: &str, args: &[&str]) -> String {
    let out = capture_output(ns, sub, args);
    assert!(
        out.status.success(),
        "capture {sub} {args:?} failed ({:?}): {}",
        out.status.code(),
        stderr(&out)
    );
    stdout(&out)
}

fn capture_output(ns: &Netns, sub: &str, args: &[&str]) -> Output {
    let mut cmd = ns.command("timeout");
    cmd.arg("60").arg(bin()).args(["capture", sub]).args(args);
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn save(ns: &Netns, tool: &str) -> String {
    run_ok(&mut ns.command(tool))
}

fn restore(ns: &Netns, tool: &str, text: &str) {
    let mut child = ns
        .command(tool)
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{tool} refused:\n{text}");
}

/// iptables-save text without its comments and counters, which change by themselves.
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(at) if l.starts_with(':') => format!("{} [0:0]", &l[..at]),
            _ => l.to_string(),
        })
        .collect()
}

fn rule_count(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("-A ")).count()
}

#[derive(Clone, Copy)]
enum Who {
    /// The workload's app: uid and gid 65534.
    App,
    /// The sidecar: root (`--proxy-uid 0`, and the gid defaults to it).
    Proxy,
}
use Who::*;

/// `timeout 10 [setpriv …] <program>` inside `ns`.
fn client(ns: &Netns, who: Who, program: &str) -> Command {
    let mut cmd = ns.command("timeout");
    cmd.arg("10");
    if let App = who {
        cmd.args([
            "setpriv",
            "--reuid",
            APP_UID,
            "--regid",
            APP_UID,
            "--clear-groups",
        ]);
    }
    cmd.arg(program);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `http://<host>:<port>/` (an IPv6 host comes bracketed, with its zone).
fn http(host: &str, port: u16) -> String {
    format!("http://{host}:{port}/")
}

fn curl(ns: &Netns, who: Who, url: &str) -> String {
    curl_with(ns, who, url, &[])
}

/// The body curl got (`<label> <address> <port>`), or what went wrong, so a failed assertion
/// shows it.
fn curl_with(ns: &Netns, who: Who, url: &str, extra: &[&str]) -> String {
    let out = client(ns, who, "curl")
        .args(["-q", "-sS", "-g", "--noproxy", "*", "--max-time", "5"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    answer(out)
}

/// One UDP datagram to `addr:port` and the answer (bash's `/dev/udp` connects the socket, so
/// only an answer from `addr:port` counts). `dd` reads the answer in one call: bash's `read`
/// takes a byte at a time, and the first byte would consume the whole datagram.
fn udp_query(ns: &Netns, who: Who, addr: &str, port: u16) -> String {
    let script = format!(
        "exec 3<>/dev/udp/{addr}/{port} && printf q >&3 && timeout 5 dd bs=512 count=1 status=none <&3"
    );
    answer(
        client(ns, who, "bash")
            .args(["-c", &script])
            .output()
            .unwrap(),
    )
}

fn answer(out: Output) -> String {
    if out.status.success() {
        stdout(&out).trim().to_string()
    } else {
        format!("failed ({:?}): {}", out.status.code(), stderr(&out).trim())
    }
}

// ---------------------------------------------------------------------------------------------
// The servers: threads of this process whose sockets live in a namespace.

enum Report {
    /// What `original_dst` says (the sidecar's listeners).
    OriginalDst,
    /// The address the connection arrived at (a real service).
    Local,
}

/// Server threads, stopped and joined on drop.
#[derive(Default)]
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Answers each HTTP request on `bind` with `<label> <address> <port>` and closes.
    fn tcp(&mut self, ns: &Netns, bind: &'static str, label: &'static str, report: Report) {
        let listener = ns.run(move || TcpListener::bind(bind).expect(bind));
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => answer_http(conn, label, &report),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept on {bind}: {e}"),
                }
            }
        }));
    }

    /// Answers each datagram on `bind` with `<label>\n`.
    fn udp(&mut self, ns: &Netns, bind: &'static str, label: &'static str) {
        let socket = ns.run(move || UdpSocket::bind(bind).expect(bind));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{label}\n").as_bytes(), from);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn answer_http(mut conn: TcpStream, label: &str, report: &Report) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let addr = match report {
        Report::OriginalDst => original_dst(&conn),
        Report::Local => conn.local_addr(),
    };
    let body = match addr.map(unmapped) {
        Ok(a) => format!("{label} {} {}\n", a.ip(), a.port()),
        Err(e) => format!("{label} error: {e}\n"),
    };
    // Read the request head (bounded in size and time), then answer and close.
    let (mut head, mut buf, started) = (Vec::new(), [0u8; 1024], Instant::now());
    while !head.windows(4).any(|w| w == b"\r\n\r\n")
        && head.len() < 16 * 1024
        && started.elapsed() < Duration::from_secs(2)
    {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        conn,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// An IPv4 client of a dual-stack listener, as the IPv4 address it is.
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}
