//! Fault drills (issue #11), with real processes: the sidecar's access log on a disk that fills
//! up. Traffic must continue, every record that cannot be written must be counted, and the file
//! must hold only whole JSON lines.

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
    let cfg = Cfg {
        ns: "foo",
        sa: "app",
        cert: &cert,
        bundles: vec![format!("{TD}={}", ca.root.display())],
        mesh: format!("{{ trustDomain: {TD} }}"),
        policy_dir: &pol,
        inbound: vec![Inbound {
            port: inb,
            target: backend,
            protocol: "http",
        }],
        outbound: vec![],
        admin,
        extra: "",
    };
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
