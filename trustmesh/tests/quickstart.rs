//! The README's first command, run as a newcomer would: `trustmesh quickstart` must bring the
//! whole mesh up on loopback, with its sidecars configured by a control plane per trust
//! domain, pass every step of its tour, exit 0, and leave nothing behind.
//! Its `--transparent` variant (root, network namespaces: tier 2) must do the same with its
//! control planes in the hub namespace, and remove every namespace and process it made.

mod quickstart_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quickstart_support::{
    admin_addresses, assert_all_in_sync, assert_steps_pass, assert_synced_table, command_from,
    one_mesh, processes_using, proxy_status, transparent_leftovers, until, write_reviews_deny,
    InterruptOnPanic, CONTROL_STEPS, TRANSPARENT_TOOLS,
};
use trustmesh_testkit::http::blocking_get;
use trustmesh_testkit::netns;
use trustmesh_testkit::process::Proc;

/// A `trustmesh quickstart --keep-running` that has finished its tour.
struct KeptMesh {
    proc: Proc,
    /// Its stdout up to and including "press Ctrl-C".
    lines: Vec<String>,
    /// The temporary directory named on its first line.
    dir: String,
    /// The five sidecars' admin addresses, from the "Operator's view" lines.
    admins: Vec<String>,
    /// The control planes' monitoring addresses, from the printed `proxy-status` command.
    controls: Vec<String>,
    /// The control planes' config directory, from the "policies: edit" line.
    config_dir: String,
}

/// Starts `trustmesh quickstart --keep-running` and waits (≤120 s) for it to say
/// "press Ctrl-C".
fn start_kept_mesh() -> KeptMesh {
    let mut mesh = Proc::start(
        Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["quickstart", "--keep-running"])
            .stderr(Stdio::null()),
    );
    let mut lines = Vec::new();
    let ready = |l: &str| l.contains("press Ctrl-C");
    if mesh
        .lines_until(ready, Duration::from_secs(120), &mut lines)
        .is_none()
    {
        panic!("no 'press Ctrl-C' line in time:\n{}", lines.join("\n"));
    }
    let dir = lines[0].split(" in ").nth(1).expect("dir on first line");
    let admins = admin_addresses(&lines);
    assert_eq!(
        admins.len(),
        5,
        "one admin endpoint per sidecar:\n{}",
        lines.join("\n")
    );
    let controls: Vec<String> = lines
        .iter()
        .find_map(|l| l.split("trustmesh proxy-status ").nth(1))
        .expect("the proxy-status command line")
        .split_whitespace()
        .filter(|w| *w != "--control")
        .map(str::to_string)
        .collect();
    assert_eq!(controls.len(), 2, "a control plane per trust domain");
    let config_dir = lines
        .iter()
        .find_map(|l| l.split("edit the Istio YAML in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the config directory line")
        .to_string();
    KeptMesh {
        proc: mesh,
        dir: dir.trim().to_string(),
        admins,
        controls,
        config_dir,
        lines,
    }
}

#[test]
fn quickstart_tour_passes_and_cleans_up() {
    let _one = one_mesh();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .arg("quickstart")
        .output()
        .expect("run trustmesh quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every step printed a verdict and none failed.
    let passes = stdout.matches("[PASS]").count();
    assert!(
        passes >= 18,
        "expected at least 18 passing steps, saw {passes}:\n{stdout}"
    );
    assert_steps_pass(&stdout, CONTROL_STEPS);
    assert_synced_table(&stdout);
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    assert!(
        stdout.contains(&format!("{passes} passed, 0 failed")),
        "{stdout}"
    );
    // The rotation step waited for a real rotation, so the tour cannot be instant.
    assert!(started.elapsed() > Duration::from_secs(5));

    // The temporary directory named on the first line is gone.
    let dir = stdout
        .lines()
        .next()
        .and_then(|l| l.split(" in ").nth(1))
        .expect("first line names the directory");
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} was left behind"
    );
}

/// `--keep-running` leaves the mesh up and says how to use it; Ctrl-C (SIGINT) then stops every
/// child process and removes the temporary files.
#[test]
fn keep_running_then_ctrl_c_cleans_up() {
    let _one = one_mesh();
    let KeptMesh {
        proc: mut mesh,
        lines,
        dir,
        admins,
        controls,
        config_dir,
    } = start_kept_mesh();
    // The admin addresses it printed are live while the mesh runs.
    for a in &admins {
        assert!(
            std::net::TcpStream::connect(a).is_ok(),
            "{a} should be listening"
        );
    }

    // The operator's view of a live sidecar: reviews' identity, its bundles (team-b federated
    // during the tour) and STRICT mTLS from the mesh-wide PeerAuthentication.
    let reviews_admin = lines
        .iter()
        .find(|l| l.trim_start().starts_with("reviews "))
        .and_then(|l| l.split("tls-check --admin ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("reviews admin line");
    let out = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["tls-check", "--admin", reviews_admin, "--output", "json"])
        .output()
        .expect("run tls-check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tls-check JSON");
    assert_eq!(
        r["spiffeId"],
        "spiffe://team-a.gke.local/ns/bookinfo/sa/reviews"
    );
    assert_eq!(r["trustDomainAliases"][0], "team-b.eks.local");
    assert!(r["trustBundles"].get("team-b.eks.local").is_some(), "{r}");
    let modes: Vec<&serde_json::Value> = r["inboundMtls"].as_object().unwrap().values().collect();
    assert_eq!(modes.len(), 1, "{r}");
    assert_eq!(modes[0]["mode"], "STRICT");
    assert_eq!(modes[0]["policy"], "istio-system/default");

    // `authz check` against the live sidecar evaluates exactly what it has loaded; the
    // destination defaults to the sidecar's own workload and port.
    let authz = |request: &str| -> serde_json::Value {
        let mut child = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["authz", "check", "--admin", reviews_admin, "--request", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run authz check");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("authz check JSON")
    };
    let no_token = authz(
        r#"{"source":{"principal":"spiffe://team-a.gke.local/ns/bookinfo/sa/frontend"},
            "http":{"method":"GET","path":"/api/reviews","host":"reviews"}}"#,
    );
    assert_eq!(no_token["decision"], "DENY", "{no_token}");
    assert_eq!(
        no_token["policies"][0]["name"],
        "bookinfo/reviews-api-needs-jwt"
    );
    let federated = authz(
        r#"{"source":{"principal":"spiffe://team-b.eks.local/ns/analytics/sa/reporter"},
            "http":{"method":"GET","path":"/reviews/1","host":"reviews"}}"#,
    );
    assert_eq!(federated["decision"], "ALLOW", "{federated}");
    let plaintext = authz(r#"{"http":{"method":"GET","path":"/reviews/1","host":"reviews"}}"#);
    assert_eq!(plaintext["decision"], "DENY", "{plaintext}");
    assert_eq!(plaintext["mtlsMode"], "STRICT");

    control_plane_serves_the_live_mesh(&dir, &lines, &controls, &config_dir, reviews_admin);

    mesh.signal(libc::SIGINT);
    let exit = mesh.exited_within(Duration::from_secs(20));
    let exit = exit.expect("quickstart did not stop after SIGINT");
    // The tour had finished and passed before the interrupt, so the exit code reports success.
    assert!(
        exit.success(),
        "exit status {exit}; the tour printed:\n{}",
        lines.join("\n")
    );
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} was left behind"
    );
    for a in admins.iter().chain(&controls) {
        assert!(
            std::net::TcpStream::connect(a).is_err(),
            "{a} still listening: a child process survived"
        );
    }
}

/// The control planes of a kept mesh, as an operator uses them: `proxy-status` lists the five
/// sidecars in sync (exit 0); the sidecars' own configs name a control plane and no policy or
/// mesh file; a DENY policy written into the printed config directory reaches reviews' sidecar
/// and is enforced on a real call within 10 s, and removing it lifts it again.
fn control_plane_serves_the_live_mesh(
    dir: &str,
    lines: &[String],
    controls: &[String],
    config_dir: &str,
    reviews_admin: &str,
) {
    let status = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trustmesh"));
        cmd.arg("proxy-status");
        for c in controls {
            cmd.args(["--control", c]);
        }
        cmd
    };
    assert_all_in_sync(status());

    let reviews_cfg = std::fs::read_to_string(format!("{dir}/workloads/reviews/proxy.yaml"))
        .expect("reviews' sidecar config");
    assert!(reviews_cfg.contains("controlPlane:"), "{reviews_cfg}");
    assert!(!reviews_cfg.contains("policyDir"), "{reviews_cfg}");
    assert!(!reviews_cfg.contains("\nmesh:"), "{reviews_cfg}");

    // frontend -> reviews through frontend's sidecar, from the printed curl line.
    let route: std::net::SocketAddr = lines
        .iter()
        .find(|l| l.contains("/reviews/1") && l.contains("frontend -> reviews"))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|r| r.split('/').next())
        .expect("the frontend -> reviews curl line")
        .parse()
        .unwrap();
    let get = |path: &str| blocking_get(route, path).map(|(status, _)| status);
    assert_eq!(get("/reviews/9"), Some(200));

    let file = write_reviews_deny(config_dir);
    let until_status = |want: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get("/reviews/9") != Some(want) {
            assert!(
                Instant::now() < deadline,
                "GET /reviews/9 not {want} within 10 s of the config change; reviews' admin \
                 {reviews_admin}; proxy-status: {:?}",
                proxy_status(status())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until_status(403);
    // Only the denied path: the rest of reviews still answers.
    assert_eq!(get("/reviews/1"), Some(200));
    std::fs::remove_file(&file).unwrap();
    until_status(200);
}

/// Even when the quickstart itself is killed outright (SIGKILL: no chance to clean up), no
/// control plane, agent or sidecar outlives it: the kernel signals each child when its parent
/// dies.
#[test]
fn children_do_not_outlive_a_killed_quickstart() {
    let _one = one_mesh();
    let KeptMesh {
        proc: mut mesh,
        dir,
        admins,
        controls,
        ..
    } = start_kept_mesh();
    mesh.kill(); // SIGKILL
                 // Sidecars drain for up to 5 s on SIGTERM; allow a little more.
    let deadline = Instant::now() + Duration::from_secs(10);
    for a in admins.iter().chain(&controls) {
        while std::net::TcpStream::connect(a).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{a} still listening after the quickstart was killed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Nothing could clean up the files of a SIGKILLed run; the test does.
    let _ = std::fs::remove_dir_all(dir);
}

/// The steps of the transparent tour that must be there, and pass.
const TRANSPARENT_STEPS: &[&str] = &[
    "frontend's app resolves reviews.bookinfo",
    "frontend -> reviews by name; captured, mTLS; reviews sees frontend's SPIFFE ID",
    "outsider without a sidecar -> reviews in plaintext (PeerAuthentication STRICT)",
    "team-b analytics -> team-a reviews, not federated",
    "frontend GET /admin/config on ratings (path not allowed)",
    "GET /api/reviews with a forged token",
    "GET /api/reviews with a valid token",
    "GET /salaries/alice with approval",
    "DELETE /salaries/alice with approval (DENY policy after CUSTOM)",
    "reviews' certificate rotates; the app's open connection keeps working",
];

/// `trustmesh quickstart --transparent` (tier 2: root, network namespaces, iptables, as in CI):
/// the tour with every workload in a namespace behind the capture passes every step within a
/// minute, its control-plane steps included (federation, the policy edit, a proxy-status table
/// run in the hub namespace with all five sidecars SYNCED), exits 0, and leaves no namespace,
/// `/etc/netns` directory, process or temporary file behind.
#[test]
fn transparent_tour_passes_and_cleans_up() {
    if !netns::usable("quickstart --transparent", TRANSPARENT_TOOLS) {
        return;
    }
    let _one = one_mesh();
    let started = Instant::now();
    let mut qs = Proc::start(
        Command::new(env!("CARGO_BIN_EXE_trustmesh")).args(["quickstart", "--transparent"]),
    );
    let pid = qs.child.id();
    let _cleanup = InterruptOnPanic(pid);
    let mut lines = Vec::new();
    let done = qs.lines_until(
        |l| l.contains("tour took"),
        Duration::from_secs(60),
        &mut lines,
    );
    let stdout = lines.join("\n");
    assert!(done.is_some(), "no end of the tour within 60 s:\n{stdout}");
    let exit = qs
        .exited_within(Duration::from_secs(20))
        .expect("quickstart did not exit after its tour");
    assert!(exit.success(), "exit status {exit}:\n{stdout}");
    assert!(started.elapsed() < Duration::from_secs(60), "{stdout}");

    assert_steps_pass(&stdout, TRANSPARENT_STEPS);
    assert_steps_pass(&stdout, CONTROL_STEPS);
    assert_synced_table(&stdout);
    // proxy-status ran where the control planes run: in the hub namespace.
    let hub = format!("ip netns exec tmq-hub-{pid} ");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("ran:") && l.contains(&hub) && l.contains(" proxy-status ")),
        "no proxy-status run in tmq-hub-{pid}:\n{stdout}"
    );
    let passes = stdout.matches("[PASS]").count();
    assert!(passes >= 19, "{passes} passing steps:\n{stdout}");
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
    assert!(
        stdout.contains(&format!("{passes} passed, 0 failed")),
        "{stdout}"
    );

    let dir = lines[0]
        .rsplit(" in ")
        .next()
        .expect("first line names the directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
    assert_eq!(transparent_leftovers(pid), Vec::<String>::new());
    assert_eq!(processes_using(dir), Vec::<String>::new());
}

/// `--transparent --keep-running`: the namespaces are there while the mesh runs, and an app
/// in one reaches a service by name with the command the quickstart prints; the control
/// planes run in the hub namespace, the printed `proxy-status` shows every sidecar in sync
/// with its own, the sidecars' configs hold `controlPlane:` and no policy or mesh file, and a
/// DENY written to the printed config directory is enforced on the app's call within 10 s
/// and lifted when removed; Ctrl-C (SIGINT) then stops every process and removes the
/// namespaces and their `/etc/netns` directories.
#[test]
fn transparent_keep_running_then_ctrl_c_removes_the_namespaces() {
    if !netns::usable("quickstart --transparent", TRANSPARENT_TOOLS) {
        return;
    }
    let _one = one_mesh();
    let mut qs = Proc::start(
        Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args(["quickstart", "--transparent", "--keep-running"])
            .stderr(Stdio::null()),
    );
    let pid = qs.child.id();
    let _cleanup = InterruptOnPanic(pid);
    let mut lines = Vec::new();
    let ready = qs.lines_until(
        |l| l.contains("press Ctrl-C"),
        Duration::from_secs(60),
        &mut lines,
    );
    let stdout = lines.join("\n");
    assert!(ready.is_some(), "no 'press Ctrl-C' line in time:\n{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let left = transparent_leftovers(pid);
    assert_eq!(
        left.len(),
        2 * 6 + 1,
        "6 namespaces with a resolver and the hub: {left:?}"
    );

    // The printed `app` helper, as a user would paste it, then a call by name.
    let helper = lines
        .iter()
        .find(|l| l.trim_start().starts_with("app() {"))
        .expect("the app() helper line");
    let app = |command: &str| {
        let script = format!("{helper}\napp frontend {command}");
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let body = app("curl -s http://reviews.bookinfo:9080/reviews/1");
    assert!(
        body.contains("\"peer\":\"spiffe://team-a.gke.local/ns/bookinfo/sa/frontend\""),
        "{body}"
    );

    // The operator's view: the printed proxy-status runs in the hub namespace, where the
    // control planes are, and lists each sidecar in sync with its trust domain's.
    let status_line = lines
        .iter()
        .map(|l| l.trim())
        .find(|l| {
            l.starts_with(&format!("ip netns exec tmq-hub-{pid} ")) && l.contains(" proxy-status ")
        })
        .expect("the proxy-status command line");
    assert_all_in_sync(command_from(status_line));
    let dir = lines[0].rsplit(" in ").next().expect("dir on first line");
    for (w, control) in [
        ("reviews", "198.18.2.1:15012"),
        ("analytics", "198.18.2.1:16012"),
    ] {
        let cfg = std::fs::read_to_string(format!("{dir}/workloads/{w}/proxy.yaml")).unwrap();
        assert!(
            cfg.contains("controlPlane:") && cfg.contains(control),
            "{cfg}"
        );
        assert!(
            !cfg.contains("policyDir") && !cfg.contains("\nmesh:"),
            "{cfg}"
        );
    }
    let config_dir = lines
        .iter()
        .find_map(|l| l.split("edit the Istio YAML in ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("the config directory line");
    let registry = std::path::Path::new(config_dir).join("registry.yaml");
    assert!(registry.is_file(), "the registry is in {config_dir}");

    let status = |path: &str| {
        app(&format!(
            "curl -s -o /dev/null -w %{{http_code}} http://reviews.bookinfo:9080{path}"
        ))
    };
    let file = write_reviews_deny(config_dir);
    until(Duration::from_secs(10), "the DENY on /reviews/9", || {
        status("/reviews/9") == "403"
    });
    assert_eq!(status("/reviews/1"), "200", "only the denied path");
    std::fs::remove_file(&file).unwrap();
    until(Duration::from_secs(10), "the DENY lifted", || {
        status("/reviews/9") == "200"
    });

    qs.signal(libc::SIGINT);
    let exit = qs
        .exited_within(Duration::from_secs(20))
        .expect("quickstart did not stop after SIGINT");
    assert!(exit.success(), "exit status {exit}:\n{stdout}");
    assert_eq!(transparent_leftovers(pid), Vec::<String>::new());
    assert_eq!(processes_using(dir), Vec::<String>::new());
}

/// Without root, `--transparent` refuses at once with exit 2 and says why (as root, the test
/// drops to uid 65534 to see it).
#[test]
fn transparent_refuses_without_root() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_trustmesh"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_trustmesh"))
    };
    let out = cmd.args(["quickstart", "--transparent"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if root && stderr.starts_with("setpriv: ") {
        // The build directory is not open to uid 65534 (under /root, say); the refusal itself
        // is also covered by the demo crate's unit tests of its preflight check.
        eprintln!(
            "SKIP transparent_refuses_without_root: uid 65534 cannot run the binary: {stderr}"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("quickstart --transparent needs root"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing started");
}
