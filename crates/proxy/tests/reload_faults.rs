//! Reload under faults (issue #11), on an in-process proxy: a policy file rewritten in place
//! (truncate, then write) never loads half-written; a certificate refused as not yet valid is
//! picked up by the clock alone; an expired certificate makes the sidecar not ready.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

const ID: &str = "spiffe://cluster.local/ns/foo/sa/web";

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: foo }
spec:
  action: DENY
  rules: [ { to: [ { operation: { paths: [\"/admin\"] } } ] } ]
";

fn write_config(dir: &Path, inb: u16, app: u16, admin: u16) -> std::path::PathBuf {
    let extra = format!("admin: {{ address: \"127.0.0.1:{admin}\" }}\nreloadPoll: 100ms\n");
    common::write_proxy_config(dir, "web", &[(inb, app, "http")], &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_rewritten_in_place_never_loads_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, ID);
    let (inb, admin) = (common::free_port(), common::free_port());
    let cfg = write_config(dir, inb, common::ok_backend().await, admin);
    let policy = dir.join("policies/deny.yaml");
    std::fs::write(&policy, DENY_ADMIN).unwrap();
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(common::get_status(inb, "/admin").await, 403);

    // An editor that truncates the file, then writes it back 150 ms later (a poll in between
    // sees the empty file). The DENY must hold throughout.
    let writer = tokio::spawn({
        let policy = policy.clone();
        async move {
            for _ in 0..3 {
                std::fs::write(&policy, "").unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                std::fs::write(&policy, DENY_ADMIN).unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        }
    });
    let until = Instant::now() + Duration::from_millis(2200);
    let mut checked = 0;
    while Instant::now() < until {
        assert_eq!(
            common::get_status(inb, "/admin").await,
            403,
            "the DENY vanished mid-write"
        );
        checked += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(checked > 20);

    // A file that really is emptied (and stays so) applies once it holds still.
    std::fs::write(&policy, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::get_status(inb, "/admin").await != 200 {
        assert!(
            Instant::now() < deadline,
            "an emptied policy file never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_yet_valid_is_picked_up_when_it_becomes_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, ID);
    let (inb, admin) = (common::free_port(), common::free_port());
    let cfg = write_config(dir, inb, common::ok_backend().await, admin);
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    let first = shared.current().own_not_after;

    // A new certificate from a CA whose clock runs 6 s ahead of ours: time for the watcher's
    // poll and settle period (about 1.3 s) with room for a slow, busy machine.
    let now = OffsetDateTime::now_utc();
    let until = now + time::Duration::hours(2);
    common::write_pki_valid(dir, ID, Some((now + time::Duration::seconds(6), until)));
    // Refused at first (not yet valid)...
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared
        .metrics
        .reloads_failed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(Instant::now() < deadline, "the reload was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shared.current().own_not_after, first);
    // ...then loaded with no further change on disk, once the clock has caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.current().own_not_after != until.unix_timestamp() {
        assert!(
            Instant::now() < deadline,
            "the valid certificate on disk was never loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_makes_the_sidecar_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = OffsetDateTime::now_utc();
    common::write_pki_valid(
        dir,
        ID,
        Some((
            now - time::Duration::hours(1),
            now + time::Duration::seconds(2),
        )),
    );
    let (inb, admin) = (common::free_port(), common::free_port());
    let cfg = write_config(dir, inb, common::ok_backend().await, admin);
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(common::get_status(admin, "/healthz/ready").await, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(common::get_status(admin, "/healthz/ready").await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_policy_folder_keeps_the_last_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, ID);
    let (inb, admin) = (common::free_port(), common::free_port());
    let cfg = write_config(dir, inb, common::ok_backend().await, admin);
    std::fs::write(dir.join("policies/deny.yaml"), DENY_ADMIN).unwrap();
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(common::get_status(inb, "/admin").await, 403);
    // The mount disappears (a volume detached, a folder moved away).
    std::fs::rename(dir.join("policies"), dir.join("gone")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared
        .metrics
        .reloads_failed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the vanished folder was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last policies stay in force: the DENY still holds.
    assert_eq!(common::get_status(inb, "/admin").await, 403);
    assert_eq!(common::get_status(inb, "/public").await, 200);
    // Back again: loaded (by the retry, with no other change).
    std::fs::rename(dir.join("gone"), dir.join("policies")).unwrap();
    let ok = shared
        .metrics
        .reloads_ok
        .load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared
        .metrics
        .reloads_ok
        .load(std::sync::atomic::Ordering::Relaxed)
        == ok
    {
        assert!(
            Instant::now() < deadline,
            "the folder's return was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::get_status(inb, "/admin").await, 403);
}
