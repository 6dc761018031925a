//! Hot reload by polling: every `reloadPollMs` the watched files are fingerprinted (path, size,
//! content hash); any change rebuilds a full snapshot and swaps it in.
//!
//! A reload applies even when some policy resources are invalid (they are enforced fail-closed
//! and named in the log, /config_dump and the metrics); it is refused, keeping the last good
//! snapshot, only when something cannot be read at all — including a policy file that is not
//! YAML.
//!
//! Polling rather than inotify because the files this watches are routinely replaced through
//! symlink swaps (Kubernetes Secret/ConfigMap volumes) and renames (atomic writes), which event
//! APIs report inconsistently; hashing a handful of small files once a second is cheap and
//! catches every form of change, including a directory gaining or losing a file.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ProxyConfig;
use crate::state::Shared;

/// Hash of every watched file's path and contents; missing files hash as absent.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => {
                1u8.hash(&mut h);
                bytes.hash(&mut h);
            }
            Err(_) => 0u8.hash(&mut h),
        }
    }
    h.finish()
}

/// Listener-shaping fields cannot change without rebinding sockets; say so instead of silently
/// ignoring the edit.
fn listeners_changed(a: &ProxyConfig, b: &ProxyConfig) -> bool {
    let ser = |c: &ProxyConfig| {
        serde_json::to_string(&(&c.inbound, &c.outbound, &c.admin)).unwrap_or_default()
    };
    ser(a) != ser(b)
}

/// Loads the config file (if any) and builds a snapshot from it.
pub fn try_reload(
    shared: &Shared,
    config_file: &Path,
    generation: u64,
) -> anyhow::Result<crate::snapshot::Snapshot> {
    let cfg = ProxyConfig::load(config_file)?;
    if listeners_changed(&shared.startup_config, &cfg) {
        anyhow::bail!(
            "{}: inbound/outbound/admin listeners changed; listener changes need a restart",
            config_file.display()
        );
    }
    let snap = crate::snapshot::build(cfg, generation)?;
    // A policy document that is not YAML could hold any policy. At startup the set then denies
    // every request (there is nothing better to enforce); on reload the last good snapshot
    // still has that file's previous, readable contents, which is strictly more precise, so
    // the reload is refused. Invalid but readable resources do not refuse a reload: they are
    // enforced fail-closed and the rest applies.
    if let Some(why) = snap.policies.set.denies_everything() {
        anyhow::bail!("policies: {why}");
    }
    Ok(snap)
}

/// Runs forever, applying changes. Failures keep the last good snapshot and are logged once per
/// distinct change (not once per poll).
pub async fn watch(shared: Arc<Shared>, config_file: PathBuf) {
    let poll = Duration::from_millis(shared.current().config.reload_poll_ms);
    let files_of = |shared: &Shared| {
        crate::snapshot::watched_files(&shared.current().config, Some(&config_file))
    };
    let mut last = fingerprint(&files_of(&shared));
    let mut generation = shared.current().generation;
    loop {
        tokio::time::sleep(poll).await;
        // The watch set itself can change (a new file in the policy directory), so recompute it.
        let files = files_of(&shared);
        let fp = fingerprint(&files);
        if fp == last {
            continue;
        }
        last = fp;
        let shared2 = shared.clone();
        let cfg_file = config_file.clone();
        let next = generation + 1;
        let result =
            tokio::task::spawn_blocking(move || try_reload(&shared2, &cfg_file, next)).await;
        match result {
            Ok(Ok(snap)) => {
                crate::snapshot::warm_up(&snap).await;
                generation = next;
                shared.install(snap);
                shared.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(generation, "configuration reloaded");
                // A directory may have gained files; refresh the fingerprint over the new set.
                last = fingerprint(&files_of(&shared));
            }
            Ok(Err(e)) => {
                shared
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload refused, keeping the last good configuration: {e:#}");
                // If a writer was mid-way through a file while we read it, its final contents
                // differ from what we fingerprinted: look again on the next poll.
                if fingerprint(&files_of(&shared)) != fp {
                    last = 0;
                }
            }
            Err(e) => {
                shared
                    .metrics
                    .reloads_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload task failed: {e}");
            }
        }
    }
}
