//! Fault drills (issue #11), with real processes: the sidecar's access log on a disk that fills
//! up (traffic must continue, every record that cannot be written must be counted, and the file
//! must hold only whole JSON lines); two proxies on one port; SIGTERM under load; a request its
//! client abandons.

mod proxy_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxy_support::*;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use trustmesh_testkit::http::{get_on, metric};
use trustmesh_testkit::process::exits_within;

/// A small tmpfs, unmounted (lazily, so a still-open file cannot keep it) when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mounting a tmpfs needs root (as in CI)");
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// One keep-alive HTTP/1.1 GET; the status code (`None`: no whole answer).
async fn get(s: &mut BufReader<TcpStream>, path: &str) -> Option<u16> {
    Some(get_on(s, "app", path, "").await?.status)
}

fn dropped(metrics: &str) -> u64 {
    metric(metrics, "trustmesh_access_log_dropped_total ").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_whole_counted_records_and_traffic_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let disk = SmallDisk::mount(&dir.join("disk"), "64k");
    let app = App::new(dir);
    let backend = http_backend("app").await;
    let (inb, yaml) = (app.inb, app.cfg(backend).yaml());
    let log = disk.0.join("access.log");
    let mut proxy = Proxy::start_logging_to(dir, "app", &yaml, app.admin, log.clone()).await;

    // Requests until the disk has been full for a while (bounded: 5,000 requests or 60 s).
    let mut client = BufReader::new(TcpStream::connect(("127.0.0.1", inb)).await.unwrap());
    let started = Instant::now();
    let mut sent = 0u64;
    let mut full_since: Option<u64> = None;
    while sent < 5_000 && started.elapsed() < Duration::from_secs(60) {
        let path = format!("/item/{sent}?padding={}", "x".repeat(100));
        assert_eq!(get(&mut client, &path).await, Some(200), "request {sent}");
        sent += 1;
        if sent % 50 == 0 {
            let d = dropped(&proxy.metrics().await);
            if d > 0 && full_since.is_none() {
                full_since = Some(sent);
            }
            if full_since.is_some_and(|at| sent >= at + 200) {
                break;
            }
        }
    }
    assert!(
        full_since.is_some(),
        "the 64 KiB disk never filled ({sent} requests)"
    );
    assert!(proxy.alive(), "{}", proxy.logs());

    // Every request is either a whole line in the file or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (lines, dropped_now) = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let d = dropped(&proxy.metrics().await);
        let lines = text.lines().count() as u64;
        if lines + d >= sent || Instant::now() > deadline {
            assert!(text.ends_with('\n'), "a cut record was left at the end");
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON lines only");
                assert_eq!(v["status"], 200);
            }
            break (lines, d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dropped_now > 0);
    assert_eq!(
        lines + dropped_now,
        sent,
        "{lines} written + {dropped_now} dropped"
    );
    assert!(
        proxy.logs().contains("access log: writing failed"),
        "{}",
        proxy.logs()
    );
    drop(proxy);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_on_one_port_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = App::new(dir);
    let backend = http_backend("app").await;
    let _first = app.start(dir, backend).await;
    let (inb, second) = (app.inb, dir.join("second.yaml"));
    let cfg = Cfg {
        admin: free_port(),
        ..app.cfg(backend)
    };
    std::fs::write(&second, cfg.yaml()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["proxy", "--config", second.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = exits_within(&mut child, Duration::from_secs(10)).await;
    let status = status.expect("the second proxy did not give up");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{inb}")) && err.contains("in use"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_was_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = App::new(dir);
    // 50 ms per answer, so requests are in flight when the signal comes.
    let backend = ok_backend_after(Duration::from_millis(50)).await;
    let mut proxy = app.start(dir, backend).await;
    let inb = app.inb;

    // 8 keep-alive clients, each sending requests back to back until the proxy closes.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut codes = Vec::new();
                let Ok(s) = TcpStream::connect(("127.0.0.1", inb)).await else {
                    return codes;
                };
                let mut s = BufReader::new(s);
                for _ in 0..400 {
                    match get_on(&mut s, "app", "/x", "").await {
                        Some(answer) => codes.push(answer.status.to_string()),
                        None => break,
                    }
                }
                codes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.signal(libc::SIGTERM);
    let mut codes = Vec::new();
    for c in clients {
        codes.extend(c.await.unwrap());
    }
    let exit = proxy.exits_within(Duration::from_secs(10)).await;
    let exit = exit.expect("the proxy did not stop");
    assert!(exit.success(), "{exit:?}: {}", proxy.logs());
    assert!(
        codes.len() >= 40,
        "load was running: {} answers",
        codes.len()
    );
    // Every answer a client got is the app's: nothing accepted was failed by the shutdown.
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
}

/// A request whose client gives up while the app is still thinking leaves the handler
/// mid-way; its access-log line is written all the same, once, saying so (issue #12: one
/// outcome record on every exit path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_abandons_is_logged_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = App::new(dir);
    let backend = silent_backend().await;
    let proxy = app.start(dir, backend).await;
    let inb = app.inb;
    for (path, version) in [
        ("/gone-h2", "--http2-prior-knowledge"),
        ("/gone-h1", "--http1.1"),
    ] {
        let (status, _) = curl_plain(inb, path, &[version, "--max-time", "1"]).await;
        assert_ne!(status, 200, "the app never answers");
    }
    for path in ["/gone-h2", "/gone-h1"] {
        let found = within(Duration::from_secs(5), || {
            let log = proxy.access_log();
            async move { log.lines().any(|l| l.contains(path)) }
        })
        .await;
        assert!(
            found.is_some(),
            "no line for {path}: {}",
            proxy.access_log()
        );
        let log = proxy.access_log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(path)).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["decision"], "allow", "{v}");
        assert!(v.get("status").is_none(), "no answer was sent: {v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("the client went away before the answer"),
            "{v}"
        );
    }
}
