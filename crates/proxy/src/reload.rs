//! Hot reload by polling: every `reloadPoll` the watched files' metadata is fingerprinted
//! (path, size, modification and change times, inode); any change rebuilds a full snapshot and
//! swaps it in once the files hold still.
//!
//! A reload applies even when some policy resources are invalid (they are enforced fail-closed
//! and named in the log, /config_dump and the metrics); it is refused, keeping the last good
//! snapshot, only when something cannot be read at all — including a policy file that is not
//! YAML.
//!
//! Polling rather than inotify because the files this watches are routinely replaced through
//! symlink swaps (Kubernetes Secret/ConfigMap volumes) and renames (atomic writes), which event
//! APIs report inconsistently. Metadata rather than contents because reading every file every
//! second slowed new connections and scaled with the size of the policy folder; a `stat` per
//! file catches every write (the change time moves even when size and mtime are forced back).
//!
//! Three things besides a change make it act:
//! - content still being written is not loaded: a change is applied only after the files have
//!   held still for [`SETTLE`] (a truncate-then-write once loaded an empty policy file, so a
//!   DENY and a STRICT PeerAuthentication vanished for a poll interval); writers should still
//!   replace files by rename;
//! - a refused reload is tried again every [`RETRY_REFUSED`] although nothing changed: a
//!   certificate refused as not yet valid (clock skew) becomes valid by the clock alone;
//! - SIGHUP asks for a reload now ([`Shared::request_reload`]).
//!
//! It also says loudly when policy documents disappear, and when the served certificate expires.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ProxyConfig;
use crate::state::Shared;

/// How long changed files must hold still before they are loaded.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Settling gives up waiting after this long (a file rewritten continuously) and loads.
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// How often a refused reload is tried again with no change in the files.
pub const RETRY_REFUSED: Duration = Duration::from_secs(5);

/// Hash of every watched file's path and metadata; missing files hash as absent.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    trustmesh_config::watch::fingerprint(files)
}

/// Listener-shaping fields cannot change without rebinding sockets; say so instead of silently
/// ignoring the edit.
fn listeners_changed(a: &ProxyConfig, b: &ProxyConfig) -> bool {
    let ser = |c: &ProxyConfig| {
        serde_json::to_string(&(
            &c.inbound,
            &c.outbound,
            &c.capture,
            &c.admin,
            &c.control_plane,
        ))
        .unwrap_or_default()
    };
    ser(a) != ser(b)
}

/// Loads the config file (if any) and builds a snapshot from it. Returns it with the
/// fingerprint of the files it was built from, taken before they were read: a change made
/// while the build reads them then differs from it and is loaded at the next poll.
pub fn try_reload(
    shared: &Shared,
    config_file: &Path,
    generation: u64,
) -> anyhow::Result<(crate::snapshot::Snapshot, u64)> {
    let cfg = ProxyConfig::load(config_file)?;
    let fp = fingerprint(&crate::snapshot::watched_files(&cfg, Some(config_file)));
    if listeners_changed(&shared.startup_config, &cfg) {
        anyhow::bail!(
            "{}: inbound/outbound/capture/admin listeners or controlPlane changed; those need a \
             restart",
            config_file.display()
        );
    }
    // With a control plane, the policies and registry are the ones it last sent; only the
    // config file and the certificate come from disk.
    let snap = crate::snapshot::build(cfg, generation, Some(&shared.current().inputs))?;
    // A policy document that is not YAML could hold any policy. At startup the set then denies
    // every request (there is nothing better to enforce); on reload the last good snapshot
    // still has that file's previous, readable contents, which is strictly more precise, so
    // the reload is refused. Invalid but readable resources do not refuse a reload: they are
    // enforced fail-closed and the rest applies.
    if let Some(why) = snap.policies.set.denies_everything() {
        anyhow::bail!("policies: {why}");
    }
    Ok((snap, fp))
}

/// Runs forever, applying changes. Failures keep the last good snapshot and are logged once per
/// distinct change, then retried every [`RETRY_REFUSED`]. `loaded` is the fingerprint of the
/// files the running snapshot was built from, taken before it was built (a fingerprint taken
/// here would hide a change made in between, until some later change).
pub async fn watch(shared: Arc<Shared>, config_file: PathBuf, loaded: u64) {
    let poll = shared.current().config.reload_poll.get();
    let files_of = |shared: &Shared| {
        crate::snapshot::watched_files(&shared.current().config, Some(&config_file))
    };
    let mut last = loaded;
    // Since when the files on disk are refused (a retry needs no change).
    let mut refused_at: Option<Instant> = None;
    let mut expiry_reported = 0i64;
    loop {
        let asked = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            _ = shared.reload_requested() => true,
        };
        report_expiry(&shared, &mut expiry_reported);
        // The watch set itself can change (a new file in the policy directory), so recompute it.
        let mut fp = fingerprint(&files_of(&shared));
        let retry = refused_at.is_some_and(|t| t.elapsed() >= RETRY_REFUSED);
        if fp == last && !asked && !retry {
            continue;
        }
        if fp != last {
            fp = settle(&files_of, &shared, fp).await;
        }
        last = fp;
        let shared2 = shared.clone();
        let cfg_file = config_file.clone();
        // The control plane's pushes install snapshots too; number after whichever is current.
        let next = shared.current().generation + 1;
        let result =
            tokio::task::spawn_blocking(move || try_reload(&shared2, &cfg_file, next)).await;
        match result {
            Ok(Ok((snap, _)))
                if snap.inputs.from_control_plane
                    && !Arc::ptr_eq(&snap.inputs, &shared.current().inputs) =>
            {
                // A push arrived while this was built from the previous one: build again.
                last = 0;
            }
            Ok(Ok((snap, built_from))) => {
                crate::snapshot::warm_up(&snap).await;
                warn_if_policies_vanished(&shared.current(), &snap);
                shared.install(snap);
                shared.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation = next, "configuration reloaded");
                refused_at = None;
                // Over the new snapshot's watch set (a directory may have gained files).
                last = built_from;
            }
            Ok(Err(e)) => {
                shared
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                if refused_at.is_none() || !retry {
                    tracing::error!(
                        "reload refused, keeping the last good configuration (retrying every \
                         {RETRY_REFUSED:?}): {e:#}"
                    );
                } else {
                    tracing::debug!("reload still refused: {e:#}");
                }
                refused_at = Some(Instant::now());
            }
            Err(e) => {
                shared
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload task failed: {e}");
                refused_at = Some(Instant::now());
            }
        }
    }
}

/// Waits until the watched files hold still for [`SETTLE`] (at most [`SETTLE_MAX`]); returns
/// their fingerprint then.
async fn settle(files_of: &impl Fn(&Shared) -> Vec<PathBuf>, shared: &Shared, mut fp: u64) -> u64 {
    let started = Instant::now();
    loop {
        tokio::time::sleep(SETTLE).await;
        let again = fingerprint(&files_of(shared));
        if again == fp || started.elapsed() >= SETTLE_MAX {
            return again;
        }
        fp = again;
    }
}

/// Policy documents that disappear take their DENY rules and STRICT modes with them; that must
/// never pass quietly (an emptied file or folder means "no policies").
fn warn_if_policies_vanished(old: &crate::snapshot::Snapshot, new: &crate::snapshot::Snapshot) {
    let (before, after) = (old.policies.documents.len(), new.policies.documents.len());
    if after < before {
        tracing::warn!(
            before,
            after,
            "policy documents disappeared on reload; if a file was being rewritten in place, \
             write a new file and rename it over the old one instead"
        );
    }
}

/// Logs once, loudly, when the certificate being served has expired (peers refuse it from now
/// on); `/healthz/ready` reports it too.
fn report_expiry(shared: &Shared, reported_for: &mut i64) {
    let not_after = shared.metrics.cert_expiry_unix.load(Ordering::Relaxed);
    if not_after != *reported_for && crate::clock::unix_now() >= not_after {
        *reported_for = not_after;
        tracing::error!(
            not_after,
            "the served certificate has EXPIRED: peers will refuse our handshakes until a valid \
             certificate is loaded"
        );
    }
}
