//! Reload under faults (issue #11), on an in-process proxy: a policy file rewritten in place
//! (truncate, then write) never loads half-written; a certificate refused as not yet valid is
//! picked up by the clock alone; an expired certificate makes the sidecar not ready.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use trustmesh_testkit::http::{get_status, ok_backend};
use trustmesh_testkit::net::{free_port, until, within};
use trustmesh_testkit::pki::{write_pki, write_pki_valid};
use trustmesh_testkit::sidecar::write_proxy_config;

const ID: &str = "spiffe://cluster.local/ns/foo/sa/web";

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: foo }
spec:
  action: DENY
  rules: [ { to: [ { operation: { paths: [\"/admin\"] } } ] } ]
";

/// The sidecar for `web` in `dir` (PKI written unless already there) in front of `app` on `inb`,
/// polling for changes every 100 ms.
fn write_config(dir: &Path, inb: u16, app: u16) -> std::path::PathBuf {
    write_proxy_config(dir, "web", &[(inb, app, "http")], "reloadPoll: 100ms\n")
}

/// Waits (at most `secs` seconds) until `counter` differs from `from`; panics with `what`.
async fn changes(counter: &AtomicU64, from: u64, secs: u64, what: &str) {
    let changed = || counter.load(Ordering::Relaxed) != from;
    until(what, Duration::from_secs(secs), changed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_rewritten_in_place_never_loads_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_pki(dir, ID);
    let inb = free_port();
    let cfg = write_config(dir, inb, ok_backend().await);
    let policy = dir.join("policies/deny.yaml");
    std::fs::write(&policy, DENY_ADMIN).unwrap();
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(get_status(inb, "/admin").await, 403);

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
            get_status(inb, "/admin").await,
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
    let applied = within(Duration::from_secs(5), || async {
        get_status(inb, "/admin").await == 200
    })
    .await;
    assert!(applied.is_some(), "an emptied policy file never applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_yet_valid_is_picked_up_when_it_becomes_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_pki(dir, ID);
    let inb = free_port();
    let cfg = write_config(dir, inb, ok_backend().await);
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    let first = shared.current().own_not_after;

    // A new certificate from a CA whose clock runs 6 s ahead of ours: time for the watcher's
    // poll and settle period (about 1.3 s) with room for a slow, busy machine.
    let now = OffsetDateTime::now_utc();
    let until = now + time::Duration::hours(2);
    write_pki_valid(dir, ID, Some((now + time::Duration::seconds(6), until)));
    // Refused at first (not yet valid)...
    let failed = &shared.metrics.reloads_failed;
    changes(failed, 0, 5, "the reload to be refused").await;
    assert_eq!(shared.current().own_not_after, first);
    // ...then loaded with no further change on disk, once the clock has caught up.
    let loaded = || shared.current().own_not_after == until.unix_timestamp();
    let what = "the valid certificate on disk to be loaded";
    trustmesh_testkit::net::until(what, Duration::from_secs(20), loaded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_makes_the_sidecar_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = OffsetDateTime::now_utc();
    write_pki_valid(
        dir,
        ID,
        Some((
            now - time::Duration::hours(1),
            now + time::Duration::seconds(2),
        )),
    );
    let inb = free_port();
    let cfg = write_config(dir, inb, ok_backend().await);
    let (_, bound) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    let admin = bound.admin.expect("an admin listener").port();
    assert_eq!(get_status(admin, "/healthz/ready").await, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get_status(admin, "/healthz/ready").await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_policy_folder_keeps_the_last_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_pki(dir, ID);
    let inb = free_port();
    let cfg = write_config(dir, inb, ok_backend().await);
    std::fs::write(dir.join("policies/deny.yaml"), DENY_ADMIN).unwrap();
    let (shared, _) = trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    assert_eq!(get_status(inb, "/admin").await, 403);
    // The mount disappears (a volume detached, a folder moved away).
    std::fs::rename(dir.join("policies"), dir.join("gone")).unwrap();
    let failed = &shared.metrics.reloads_failed;
    changes(failed, 0, 5, "the vanished folder to be noticed").await;
    // The last policies stay in force: the DENY still holds.
    assert_eq!(get_status(inb, "/admin").await, 403);
    assert_eq!(get_status(inb, "/public").await, 200);
    // Back again: loaded (by the retry, with no other change).
    std::fs::rename(dir.join("gone"), dir.join("policies")).unwrap();
    let reloads = &shared.metrics.reloads_ok;
    let ok = reloads.load(Ordering::Relaxed);
    changes(reloads, ok, 10, "the folder's return to be loaded").await;
    assert_eq!(get_status(inb, "/admin").await, 403);
}
