//! Startup: load and check everything, bind every listener, then serve until a shutdown signal.
//!
//! All binding happens before any serving so a port conflict or bad file aborts startup with a
//! clear error rather than leaving a half-working proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::ProxyConfig;
use crate::state::Shared;

/// Addresses actually bound, for logs and tests.
#[derive(Debug, Clone)]
pub struct Bound {
    pub inbound: Vec<SocketAddr>,
    pub outbound: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: cannot listen on {addr}"))
}

/// Loads `config_file`, binds, and starts every task on the current runtime. Returns the shared
/// state and the bound addresses; the tasks run until the runtime stops.
pub async fn start(config_file: &Path) -> anyhow::Result<(Arc<Shared>, Bound)> {
    let cfg = ProxyConfig::load(config_file)?;
    // Before the files are read: a change made while they load is then seen by the watcher.
    let loaded =
        crate::reload::fingerprint(&crate::snapshot::watched_files(&cfg, Some(config_file)));
    let cfg_for_build = cfg.clone();
    let snap = tokio::task::spawn_blocking(move || crate::snapshot::build(cfg_for_build, 1))
        .await
        .context("loading configuration")??;
    crate::snapshot::warm_up(&snap).await;
    let shared = Shared::new(snap).context("starting worker threads")?;

    let mut bound = Bound {
        inbound: vec![],
        outbound: vec![],
        admin: None,
    };
    let mut inbound = Vec::new();
    for (i, l) in cfg.inbound.iter().enumerate() {
        let ln = bind(SocketAddr::new(l.address, l.port), &format!("inbound[{i}]")).await?;
        bound.inbound.push(ln.local_addr()?);
        inbound.push(ln);
    }
    let mut outbound = Vec::new();
    for (i, l) in cfg.outbound.iter().enumerate() {
        let ln = bind(
            SocketAddr::new(l.address, l.port),
            &format!("outbound[{i}]"),
        )
        .await?;
        bound.outbound.push(ln.local_addr()?);
        outbound.push(ln);
    }
    let admin = match &cfg.admin {
        Some(a) => {
            let ln = bind(a.address, "admin.address").await?;
            bound.admin = Some(ln.local_addr()?);
            Some(ln)
        }
        None => None,
    };

    for (i, ln) in inbound.into_iter().enumerate() {
        tokio::spawn(crate::inbound::serve(shared.clone(), i, ln));
    }
    for (i, ln) in outbound.into_iter().enumerate() {
        tokio::spawn(crate::outbound::serve(shared.clone(), i, ln));
    }
    if let Some(ln) = admin {
        tokio::spawn(crate::admin::serve(shared.clone(), ln));
    }
    tokio::spawn(crate::reload::watch(
        shared.clone(),
        config_file.to_path_buf(),
        loaded,
    ));
    Ok((shared, bound))
}

/// Runs the proxy until SIGINT/SIGTERM.
pub async fn run(config_file: &Path) -> anyhow::Result<()> {
    // Registered before anything is served, so no signal finds the default action (exit).
    let signals = UserSignals::register();
    let (shared, bound) = start(config_file).await?;
    tracing::info!(
        identity = %shared.current().own_id,
        inbound = ?bound.inbound,
        outbound = ?bound.outbound,
        admin = ?bound.admin,
        "trustmesh proxy ready"
    );
    signals.handle(&shared);
    shutdown_signal().await;
    drain(&shared).await;
    // The access log of the last requests may still sit in per-thread buffers.
    crate::accesslog::flush();
    Ok(())
}

/// SIGHUP reloads the configuration now (as daemons do); SIGUSR1 and SIGUSR2 are logged and
/// ignored. Without handlers their default action kills the process mid-request.
struct UserSignals(Vec<(tokio::signal::unix::Signal, &'static str)>);

impl UserSignals {
    fn register() -> UserSignals {
        use tokio::signal::unix::{signal, SignalKind};
        UserSignals(
            [
                (SignalKind::hangup(), "SIGHUP"),
                (SignalKind::user_defined1(), "SIGUSR1"),
                (SignalKind::user_defined2(), "SIGUSR2"),
            ]
            .into_iter()
            .filter_map(|(kind, name)| signal(kind).ok().map(|s| (s, name)))
            .collect(),
        )
    }

    fn handle(self, shared: &Arc<Shared>) {
        for (mut s, name) in self.0 {
            let shared = shared.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if name == "SIGHUP" {
                        tracing::info!("SIGHUP: reloading the configuration");
                        shared.request_reload();
                    } else {
                        tracing::info!("{name} received and ignored");
                    }
                }
            });
        }
    }
}

/// Stops accepting, then gives open connections up to `timeouts.terminationDrain` to finish.
pub async fn drain(shared: &Shared) {
    let limit = shared.current().config.timeouts.drain();
    shared.begin_drain();
    let start = std::time::Instant::now();
    let active = || {
        shared
            .metrics
            .active_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    tracing::info!(active = active(), ?limit, "draining before shutdown");
    while active() > 0 && start.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tracing::info!(still_open = active(), "shutting down");
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
