//! Startup: load and check everything, bind every listener, then serve until a shutdown signal,
//! and drain.
//!
//! All binding happens before any serving so a port conflict or bad file aborts startup with a
//! clear error rather than leaving a half-working proxy. Signals are handled by the lifecycle
//! crate's one module for them, registered before anything is served: SIGTERM or SIGINT drains
//! (for up to `timeouts.terminationDrain`), a second one closes what is left at once, SIGHUP reloads now,
//! SIGUSR1 and SIGUSR2 are logged and ignored.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use trustmesh_lifecycle::drain;
use trustmesh_lifecycle::signals::{Hangup, Signals};

use crate::config::ProxyConfig;
use crate::state::Shared;

/// Addresses actually bound, for logs and tests.
#[derive(Debug, Clone)]
pub struct Bound {
    pub inbound: Vec<SocketAddr>,
    pub outbound: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Transparent mode: the capture's inbound and outbound ports, and the DNS proxy (UDP).
    pub capture_inbound: Option<SocketAddr>,
    pub capture_outbound: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    /// The HBONE listener (`capture.hbonePort` or `hbone:`).
    pub hbone: Option<SocketAddr>,
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
    let (snap, attach) = if cfg.control_plane.is_some() {
        let (snap, attach) = crate::xds::start(&cfg).await?;
        (snap, Some(attach))
    } else {
        let cfg_for_build = cfg.clone();
        let snap =
            tokio::task::spawn_blocking(move || crate::snapshot::build(cfg_for_build, 1, None))
                .await
                .context("loading configuration")??;
        crate::snapshot::warm_up(&snap).await;
        (snap, None)
    };
    // Each listener holds a watch of the drain, and each connection it accepts a clone.
    let (trigger, drain) = drain::channel();
    let shared = Shared::new(snap, trigger).context("starting worker threads")?;
    if let Some(a) = attach {
        a.running(&shared);
    }

    let mut bound = Bound {
        inbound: vec![],
        outbound: vec![],
        admin: None,
        capture_inbound: None,
        capture_outbound: None,
        dns: None,
        hbone: None,
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
    let captured = match &cfg.capture {
        Some(c) => {
            let inbound = bind(
                SocketAddr::new(c.inbound_address(), c.inbound_port),
                "capture.inboundPort",
            )
            .await?;
            let outbound = bind(
                SocketAddr::new(c.outbound_address(), c.outbound_port),
                "capture.outboundPort",
            )
            .await?;
            bound.capture_inbound = Some(inbound.local_addr()?);
            bound.capture_outbound = Some(outbound.local_addr()?);
            Some((inbound, outbound))
        }
        None => None,
    };
    let hbone = match cfg.hbone_listener() {
        Some(h) => {
            let ln = bind(SocketAddr::new(h.address, h.port), "hbone port").await?;
            bound.hbone = Some(ln.local_addr()?);
            Some(ln)
        }
        None => None,
    };
    let admin = match &cfg.admin {
        Some(a) => {
            let ln = bind(a.address, "admin.address").await?;
            bound.admin = Some(ln.local_addr()?);
            Some(ln)
        }
        None => None,
    };

    for (i, ln) in inbound.into_iter().enumerate() {
        tokio::spawn(crate::inbound::serve(shared.clone(), i, ln, drain.clone()));
    }
    for (i, ln) in outbound.into_iter().enumerate() {
        tokio::spawn(crate::outbound::serve(shared.clone(), i, ln, drain.clone()));
    }
    if let Some((inbound, outbound)) = captured {
        let (in_slot, out_slot) = cfg.capture_slots();
        tokio::spawn(crate::inbound::serve_captured(
            shared.clone(),
            in_slot,
            inbound,
            drain.clone(),
        ));
        tokio::spawn(crate::captured::serve(
            shared.clone(),
            out_slot,
            outbound,
            drain.clone(),
        ));
    }
    if let Some(ln) = hbone {
        let slot = cfg.hbone_slot();
        tokio::spawn(crate::hbone::serve(shared.clone(), slot, ln, drain.clone()));
    }
    if let Some(c) = cfg.capture.as_ref().filter(|c| c.dns) {
        bound.dns = Some(start_dns(&shared, c, drain.clone()).await?);
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

/// The DNS proxy on loopback (the capture sends the workload's port-53 traffic there),
/// answering from the registry and forwarding the rest to the system's resolvers.
async fn start_dns(
    shared: &Arc<Shared>,
    c: &crate::config::CaptureConfig,
    drain: drain::Watch,
) -> anyhow::Result<SocketAddr> {
    let upstreams =
        trustmesh_dns::Upstreams::system().map_err(|e| anyhow::anyhow!("capture.dns: {e}"))?;
    let names = Arc::new(crate::names::RegistryNames(shared.clone()));
    let bound = trustmesh_dns::start(
        SocketAddr::new(c.dns_address(), c.dns_port),
        names,
        upstreams,
        drain,
    )
    .await
    .map_err(|e| anyhow::anyhow!("capture.dnsPort: {e}"))?;
    let _ = shared.metrics.dns.set(bound.counters.clone());
    Ok(bound.udp)
}

/// Runs the proxy until SIGINT/SIGTERM, then drains; SIGHUP reloads the configuration and SIGUSR1
/// reopens the access log file. `ready` runs once, when everything is bound
/// and served (the binary hands start-up's pages back to the kernel there).
pub async fn run(config_file: &Path, ready: impl FnOnce()) -> anyhow::Result<()> {
    // Registered before anything is served, so no signal finds the default action (exit).
    let signals = Signals::register(Hangup::Reload).context("handling signals")?;
    let (shared, bound) = start(config_file).await?;
    // SIGUSR1 reopens the access log from here on, before the line below says the proxy is
    // ready and before the task below first waits.
    signals.take_reopens();
    tracing::info!(
        identity = %shared.current().own_id,
        inbound = ?bound.inbound,
        outbound = ?bound.outbound,
        admin = ?bound.admin,
        capture_inbound = ?bound.capture_inbound,
        capture_outbound = ?bound.capture_outbound,
        dns = ?bound.dns,
        hbone = ?bound.hbone,
        "trustmesh proxy ready"
    );
    ready();
    let reloads = (signals.clone(), shared.clone());
    tokio::spawn(async move {
        let (signals, shared) = reloads;
        loop {
            signals.reload().await;
            shared.request_reload();
        }
    });
    let reopens = signals.clone();
    tokio::spawn(async move {
        loop {
            reopens.reopen().await;
            crate::accesslog::reopen();
        }
    });
    signals.shutdown().await;
    drain(&shared, signals.again()).await;
    // The access log of the last requests may still sit in per-thread buffers.
    crate::accesslog::flush();
    Ok(())
}

/// Stops accepting, then gives open connections up to `timeouts.terminationDrain` to finish (HTTP
/// connections finish their request in flight; TCP relays and upgraded tunnels keep going, as
/// Envoy's do) before closing what is left; `hurry` closes it at once.
pub async fn drain(shared: &Shared, hurry: impl std::future::Future<Output = ()>) {
    let deadline = shared.current().config.timeouts.drain();
    shared.drain(deadline, hurry).await;
}
