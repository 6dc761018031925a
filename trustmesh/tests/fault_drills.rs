//! Fault drills (issue #11), with real processes: the sidecar's access log on a disk that fills
//! up (traffic must continue, every record that cannot be written must be counted, and the file
//! must hold only whole JSON lines); two proxies on one port; SIGTERM under load; a request its
//! client abandons.

mod proxy_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proxy_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TD: &str = "cluster.local";

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

/// One keep-alive HTTP/1.1 GET; the status code.
async fn get(s: &mut BufReader<TcpStream>, path: &str) -> u16 {
    s.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut status = String::new();
    s.read_line(&mut status).await.unwrap();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        s.read_line(&mut h).await.unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    status.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

fn dropped(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("trustmesh_access_log_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_whole_counted_records_and_traffic_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let disk = SmallDisk::mount(&dir.join("disk"), "64k");
    let ca = Ca::new(dir, "mesh", TD);
    let cert = ca.issue("server", &format!("spiffe://{TD}/ns/foo/sa/app"));
    let pol = policy_dir(dir, "policies");
    let backend = http_backend("app").await;
    let (inb, admin) = (free_port(), free_port());
    let cfg = Cfg::http_app(&ca, &cert, &pol, inb, backend, admin);
    let log = disk.0.join("access.log");
    let mut proxy = Proxy::start_logging_to(dir, "app", &cfg.yaml(), admin, log.clone()).await;

    // Requests until the disk has been full for a while (bounded: 5,000 requests or 60 s).
    let mut client = BufReader::new(TcpStream::connect(("127.0.0.1", inb)).await.unwrap());
    let started = Instant::now();
    let mut sent = 0u64;
    let mut full_since: Option<u64> = None;
    while sent < 5_000 && started.elapsed() < Duration::from_secs(60) {
        let path = format!("/item/{sent}?padding={}", "x".repeat(100));
        assert_eq!(get(&mut client, &path).await, 200, "request {sent}");
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
    let ca = Ca::new(dir, "mesh", TD);
    let cert = ca.issue("server", &format!("spiffe://{TD}/ns/foo/sa/app"));
    let pol = policy_dir(dir, "policies");
    let backend = http_backend("app").await;
    let (inb, admin, admin2) = (free_port(), free_port(), free_port());
    let _first = Proxy::start(
        dir,
        "first",
        &Cfg::http_app(&ca, &cert, &pol, inb, backend, admin).yaml(),
        admin,
    )
    .await;
    let second = dir.join("second.yaml");
    std::fs::write(
        &second,
        Cfg::http_app(&ca, &cert, &pol, inb, backend, admin2).yaml(),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["proxy", "--config", second.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the second proxy did not give up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{inb}")) && err.contains("in use"),
        "{err}"
    );
}

/// A backend that takes 50 ms per answer, so requests are in flight when the signal comes.
async fn slow_backend() -> u16 {
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.get_mut().write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_was_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let cert = ca.issue("server", &format!("spiffe://{TD}/ns/foo/sa/app"));
    let pol = policy_dir(dir, "policies");
    let backend = slow_backend().await;
    let (inb, admin) = (free_port(), free_port());
    let mut proxy = Proxy::start(
        dir,
        "app",
        &Cfg::http_app(&ca, &cert, &pol, inb, backend, admin).yaml(),
        admin,
    )
    .await;

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
                    let req = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n";
                    if s.get_mut().write_all(req).await.is_err() {
                        break;
                    }
                    let mut status = String::new();
                    match tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut status))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => break,
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if s.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        break;
                    }
                    codes.push(status.split(' ').nth(1).unwrap_or("0").to_string());
                }
                codes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(proxy.child.id() as i32, libc::SIGTERM) },
        0
    );
    let mut codes = Vec::new();
    for c in clients {
        codes.extend(c.await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}: {}", proxy.logs());
    assert!(
        codes.len() >= 40,
        "load was running: {} answers",
        codes.len()
    );
    // Every answer a client got is the app's: nothing accepted was failed by the shutdown.
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
}

/// An app that reads requests and never answers.
async fn silent_backend() -> u16 {
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = ln.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// A request whose client gives up while the app is still thinking leaves the handler
/// mid-way; its access-log line is written all the same, once, saying so (issue #12: one
/// outcome record on every exit path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_abandons_is_logged_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new(dir, "mesh", TD);
    let cert = ca.issue("server", &format!("spiffe://{TD}/ns/foo/sa/app"));
    let pol = policy_dir(dir, "policies");
    let backend = silent_backend().await;
    let (inb, admin) = (free_port(), free_port());
    let proxy = Proxy::start(
        dir,
        "app",
        &Cfg::http_app(&ca, &cert, &pol, inb, backend, admin).yaml(),
        admin,
    )
    .await;
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
