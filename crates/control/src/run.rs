//! Starting the control plane: the CA's port with xDS beside the certificate service, the
//! monitoring port, and the source watcher that rebuilds the world when the configuration
//! changes — debounced, so an editor's burst of writes or a `kubectl apply` of many objects is
//! one push.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use trustmesh_ca_server::server::{
    self, IdentitySource, Options as CaOptions, Running as CaRunning,
};
use trustmesh_ca_server::signer::Signer;
use trustmesh_xds::server::Ads;

use crate::source::{Source, POLL};
use crate::views::ControlPlane;
use crate::world::{Settings, World};

/// How long the source must hold still before a change is pushed.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A source that keeps changing is pushed at least this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

pub struct Options {
    pub source: Box<dyn Source>,
    pub monitor_listen: Option<SocketAddr>,
    pub ambient_identities: Vec<String>,
    pub name: String,
    /// VIPs of ServiceEntries without addresses, in ztunnel's resources.
    pub registry: trustmesh_registry::Options,
}

pub struct Running {
    pub ca: CaRunning,
    pub monitor_addr: Option<SocketAddr>,
    pub control: Arc<ControlPlane>,
    signer: Arc<dyn Signer>,
    /// The roots served as the local trust domain's bundle; the watcher rebuilds on a change.
    roots: tokio::sync::watch::Sender<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Follows the signer's roots after it was given a new CA (a plug-in CA's rotation): the
    /// CA port trusts and presents the new chain, and every sidecar is pushed the new bundle.
    pub async fn reload_roots(&self) -> Result<(), String> {
        self.ca.reload_roots().await?;
        self.roots.send_replace(roots_pem(self.signer.as_ref()));
        Ok(())
    }

    /// Drains the CA/xDS port (streams are closed; sidecars keep their configuration and
    /// reconnect to another replica), and stops the watcher.
    pub async fn drain(self, deadline: Duration, hurry: impl std::future::Future<Output = ()>) {
        for t in &self.tasks {
            t.abort();
        }
        self.ca.drain(deadline, hurry).await;
    }
}

/// The CA's roots as one PEM text, as `root-cert.pem` holds them.
pub fn roots_pem(signer: &dyn Signer) -> String {
    signer
        .roots()
        .iter()
        .map(|r| {
            // LF line ends, as root-cert.pem is written everywhere else (the crate's default is
            // CRLF).
            let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
            pem::encode_config(&pem::Pem::new("CERTIFICATE", r.to_vec()), lf)
        })
        .collect()
}

pub async fn start(
    signer: Arc<dyn Signer>,
    identity: IdentitySource,
    ca_opts: CaOptions,
    opts: Options,
) -> anyhow::Result<Running> {
    let settings = Settings {
        trust_domain: ca_opts.trust_domain.to_string(),
        local_roots: roots_pem(signer.as_ref()),
        registry: opts.registry,
    };
    let mut source = opts.source;
    let inputs = source.read();
    let world = World::build(&inputs, &settings, 1);
    for p in &world.problems {
        tracing::warn!("config source: {p}");
    }
    let cp = Arc::new(ControlPlane::new(world, opts.name, opts.ambient_identities));
    let for_routes = cp.clone();
    let extra: server::ExtraServices = Box::new(move |ca| {
        let _ = for_routes.ca.set(ca);
        tonic::service::Routes::new(Ads::new(for_routes).service())
    });
    let ca = server::start_with(signer.clone(), identity, ca_opts, Some(extra))
        .await
        .context("starting the CA and xDS port")?;
    let mut tasks = Vec::new();
    let mut monitor_addr = None;
    if let Some(addr) = opts.monitor_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("monitoring port: cannot listen on {addr}"))?;
        monitor_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(crate::monitor::serve(cp.clone(), l)));
    }
    let (roots, roots_rx) = tokio::sync::watch::channel(settings.local_roots.clone());
    tasks.push(tokio::spawn(watch(
        cp.clone(),
        Arc::new(Mutex::new(source)),
        settings,
        roots_rx,
    )));
    Ok(Running {
        ca,
        monitor_addr,
        control: cp,
        signer,
        roots,
        tasks,
    })
}

/// Polls the source; after a change holds still for [`DEBOUNCE`], rebuilds the world and,
/// when anything served differs, installs it (which wakes every stream).
async fn watch(
    cp: Arc<ControlPlane>,
    source: Arc<Mutex<Box<dyn Source>>>,
    mut settings: Settings,
    mut roots: tokio::sync::watch::Receiver<String>,
) {
    let fp = |s: &Arc<Mutex<Box<dyn Source>>>| s.lock().expect("source poisoned").fingerprint();
    let mut last = fp(&source);
    let mut generation = cp.world().generation;
    loop {
        tokio::time::sleep(POLL).await;
        let mut now = fp(&source);
        let new_roots = roots.has_changed().unwrap_or(false);
        if new_roots {
            settings.local_roots = roots.borrow_and_update().clone();
        }
        if now == last && !new_roots {
            continue;
        }
        let started = Instant::now();
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let again = fp(&source);
            if again == now || started.elapsed() >= DEBOUNCE_MAX {
                break;
            }
            now = again;
        }
        last = now;
        let (src, s) = (source.clone(), settings.clone());
        let next = generation + 1;
        let built = tokio::task::spawn_blocking(move || {
            let inputs = src.lock().expect("source poisoned").read();
            World::build(&inputs, &s, next)
        })
        .await;
        let Ok(world) = built else {
            tracing::error!("rebuilding the configuration failed");
            continue;
        };
        cp.status
            .counters
            .world_builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for p in &world.problems {
            tracing::warn!("config source: {p}");
        }
        let current = cp.world();
        if world.version == current.version {
            // Nothing served changed; only what is reported may have (a file that stopped or
            // started parsing while its last good contents are served).
            if world.problems != current.problems {
                cp.report(world.problems);
            }
            continue;
        }
        generation = next;
        tracing::info!(generation, version = %world.version, resources = world.resource_count(), "configuration changed; pushing");
        cp.install(world);
    }
}
