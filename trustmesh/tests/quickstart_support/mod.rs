//! What both quickstart modes' tests check the same way, kept out of `quickstart.rs` so each
//! test there reads as its scenario: one mesh at a time, the tour's control-plane steps and
//! its `proxy-status` table, `proxy-status --json` run as the quickstart printed it, and what a
//! finished run may not leave behind (namespaces, `/etc/netns` directories, processes).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each test starts a whole mesh (12 processes); one at a time keeps a 2-core machine from
/// turning timing into the thing under test.
static ONE_MESH_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn one_mesh() -> std::sync::MutexGuard<'static, ()> {
    ONE_MESH_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub const SPIFFE_IDS: [&str; 5] = [
    "spiffe://team-a.gke.local/ns/bookinfo/sa/frontend",
    "spiffe://team-a.gke.local/ns/bookinfo/sa/reviews",
    "spiffe://team-a.gke.local/ns/bookinfo/sa/ratings",
    "spiffe://team-a.gke.local/ns/finance/sa/payroll",
    "spiffe://team-b.eks.local/ns/analytics/sa/reporter",
];

/// The control plane a sidecar with SPIFFE ID `id` belongs to.
pub fn control_of(id: &str) -> &'static str {
    if id.contains("team-a") {
        "control-team-a.gke.local"
    } else {
        "control-team-b.eks.local"
    }
}

/// Both tours' steps that show the control plane at work; each must be there and pass.
pub const CONTROL_STEPS: &[&str] = &[
    "federate: team-a's control plane serves team-b's root + alias, then call again",
    "policy edit: DENY /ratings/* written to the control plane's config dir",
    "policy edit undone: the DENY file removed",
    "proxy-status: every sidecar SYNCED with its control plane",
];

/// Every step in `steps` printed a `[PASS]` line.
pub fn assert_steps_pass(stdout: &str, steps: &[&str]) {
    for step in steps {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("[PASS]") && l.ends_with(step)),
            "step {step:?} did not pass:\n{stdout}"
        );
    }
}

/// The operator's view printed the proxy-status table: every sidecar SYNCED, the team-a ones
/// with team-a's control plane and analytics with team-b's.
pub fn assert_synced_table(stdout: &str) {
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("        | "))
        .collect();
    for id in SPIFFE_IDS {
        let cp = control_of(id);
        assert!(
            table.iter().any(|l| l.contains(&format!("{id} "))
                && l.contains(cp)
                && l.contains(" SYNCED ")
                && !l.contains("NOT SYNCED")),
            "{id} not SYNCED with {cp} in the proxy-status table:\n{stdout}"
        );
    }
}

/// `cmd` (a `proxy-status` command line) with `--json`: (exit code, control plane name and
/// in-sync flag by SPIFFE ID).
pub fn proxy_status(mut cmd: Command) -> (Option<i32>, BTreeMap<String, (String, bool)>) {
    let out = cmd.args(["-o", "json"]).output().expect("run proxy-status");
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut proxies = BTreeMap::new();
    for d in docs.as_array().into_iter().flatten() {
        let cp = d["controlPlane"].as_str().unwrap_or("").to_string();
        for p in d["proxies"].as_array().into_iter().flatten() {
            proxies.insert(
                p["identity"].as_str().unwrap_or("").to_string(),
                (cp.clone(), p["inSync"].as_bool().unwrap_or(false)),
            );
        }
    }
    (out.status.code(), proxies)
}

/// `proxy-status --json` through `cmd` exits 0 and lists exactly the five sidecars, each in
/// sync with its trust domain's control plane.
pub fn assert_all_in_sync(cmd: Command) {
    let (code, proxies) = proxy_status(cmd);
    assert_eq!(code, Some(0), "proxy-status: {proxies:?}");
    let mut ids = SPIFFE_IDS.to_vec();
    ids.sort();
    assert_eq!(
        proxies.keys().map(String::as_str).collect::<Vec<_>>(),
        ids,
        "one connection per sidecar"
    );
    for (id, (cp, synced)) in &proxies {
        assert!(*synced, "{id} not in sync: {proxies:?}");
        assert_eq!(cp, control_of(id), "{id}'s control plane");
    }
}

/// A command from a printed command line (words split on spaces).
pub fn command_from(line: &str) -> Command {
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().expect("a program"));
    cmd.args(words);
    cmd
}

/// The admin addresses of the sidecars, from the "Operator's view" lines.
pub fn admin_addresses(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split("tls-check --admin ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Polls `check` every 100 ms until it is true; panics with `what` after `limit`.
pub fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a DENY of `GET /reviews/9` on reviews into `config_dir`; returns the file.
pub fn write_reviews_deny(config_dir: &str) -> std::path::PathBuf {
    let file = std::path::Path::new(config_dir).join("test-deny.yaml");
    std::fs::write(
        &file,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: { name: test-deny, namespace: bookinfo }\n\
         spec:\n  selector: { matchLabels: { app: reviews } }\n  action: DENY\n\
         \x20 rules:\n  - to: [ { operation: { paths: [\"/reviews/9\"] } } ]\n",
    )
    .unwrap();
    file
}

/// Tools `quickstart --transparent` needs besides `ip` (which `usable` checks).
pub const TRANSPARENT_TOOLS: &[&str] = &[
    "iptables",
    "iptables-restore",
    "curl",
    "setpriv",
    "getent",
    "python3",
];

/// What `quickstart --transparent` leaves of process `pid`: its namespaces (`tmq-<role>-<pid>`)
/// and their `/etc/netns` directories.
pub fn transparent_leftovers(pid: u32) -> Vec<String> {
    let suffix = format!("-{pid}");
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("tmq-") && n.ends_with(&suffix))
        .map(|n| format!("namespace {n}"))
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/netns") {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("tmq-") && n.ends_with(&suffix) {
                left.push(format!("/etc/netns/{n}"));
            }
        }
    }
    left
}

/// Held beside a transparent quickstart's [`Proc`](trustmesh_testkit::process::Proc), declared
/// after it: when the test fails, sends the quickstart SIGINT and waits (≤20 s) for its
/// namespaces to go, before the `Proc` SIGKILLs it, which would leave them behind.
pub struct InterruptOnPanic(pub u32);

impl Drop for InterruptOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // SAFETY: kill(2) on the quickstart's pid, which its Proc has not reaped yet.
        unsafe { libc::kill(self.0 as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !transparent_leftovers(self.0).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Processes whose command line names `dir` (the quickstart's temporary directory: every
/// control plane, agent and sidecar it starts is given a file there), as `pid: command`.
pub fn processes_using(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if line.contains(dir) {
            found.push(format!("{}: {line}", e.file_name().to_string_lossy()));
        }
    }
    found
}
