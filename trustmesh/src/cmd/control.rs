//! `trustmesh control`: the control plane (istiod's role for security and the registry). The
//! CA of `ca serve` with, on the same port, incremental xDS serving each sidecar the policies,
//! registry entries, mesh config and trust bundles its workload needs from a watched directory
//! of Istio YAML (and, with `--kube`, the cluster: `control_kube`); and the monitoring port
//! with `/metrics` and `/debug/syncz`.
//! `trustmesh proxy-status` prints what `/debug/syncz` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use trustmesh_ca_server::signer::Signer;
use trustmesh_control::run::{self, Options};
use trustmesh_control::source::DirSource;
use trustmesh_lifecycle::signals::Hangup;

use super::ca_serve::{self, Prepared};
use super::control_kube::{self, KubeArgs};

#[derive(clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub ca: ca_serve::Args,
    /// Directory of Istio YAML served to the sidecars (AuthorizationPolicy, PeerAuthentication,
    /// RequestAuthentication, ServiceEntry, WorkloadEntry, DestinationRule), watched.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The mesh config (any shape `validate --mesh` takes), watched; default: the CA's trust
    /// domain and Istio's defaults.
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// Roots of another trust domain served to every sidecar (federation), as `TD=FILE`;
    /// repeatable, watched. The CA's own roots are always served.
    #[arg(long = "trust-bundle", value_name = "TD=FILE")]
    pub trust_bundles: Vec<String>,
    /// The monitoring port (istiod's 15014): /metrics, /debug/syncz, /ready.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    pub monitoring_listen: SocketAddr,
    /// SPIFFE ID of a node proxy (ztunnel) allowed to read every workload and policy in
    /// ztunnel's form; repeatable. Default: `spiffe://<trust domain>/ns/istio-system/sa/ztunnel`.
    #[arg(long = "ambient-identity", value_name = "SPIFFE_ID")]
    pub ambient_identities: Vec<String>,
    /// Where ServiceEntries without addresses get their virtual IP in ztunnel's resources
    /// (Istio's DNS auto-allocation); must be every sidecar's `capture.vipRange`.
    #[arg(long, value_name = "CIDR", default_value = trustmesh_registry::options::DEFAULT_AUTO_ALLOCATE_V4)]
    pub vip_range: ipnet::Ipv4Net,
    /// This replica's name in `proxy-status` (default: the host name and process id).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub fn run(a: ControlArgs) -> ExitCode {
    super::init_logging();
    super::raise_fd_limit();
    let deadline = a.ca.termination_drain.get();
    let mut bundles = Vec::new();
    for b in &a.trust_bundles {
        match b.split_once('=') {
            Some((td, f)) if !td.is_empty() && !f.is_empty() => {
                bundles.push((td.to_string(), PathBuf::from(f)))
            }
            _ => {
                return super::fail(
                    2,
                    format!(
                    "--trust-bundle {b:?}: expected TD=FILE (e.g. team-b.local=/etc/b/root.pem)"
                ),
                )
            }
        }
    }
    if !a.kube.enabled() && a.kube.external_signer.is_some() {
        return super::fail(
            2,
            "--external-signer needs --kube or --kubeconfig: it asks the cluster's CSR API",
        );
    }
    if !a.kube.enabled() && !a.kube.trusted_node_accounts.is_empty() {
        return super::fail(
            2,
            "--trusted-node-account needs --kube or --kubeconfig: node authorization looks up \
             the caller's node in the cluster",
        );
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let signals = match super::register_signals(Hangup::Ignore) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let mut cluster = None;
        if a.kube.enabled() {
            match control_kube::connect(&a.kube).await {
                Ok(c) => cluster = Some(c),
                Err(code) => return code,
            }
        }
        let prepared = match (&mut cluster, &a.ca.ca) {
            (Some(c), None) => c.load_ca(&a.ca, &a.kube).await,
            _ => ca_serve::prepare(&a.ca, cluster.is_some()),
        };
        let Prepared {
            signer,
            identity,
            opts: mut ca_opts,
        } = match prepared {
            Ok(p) => p,
            Err(code) => return code,
        };
        let td = ca_opts.trust_domain.to_string();
        let ambient_identities = if a.ambient_identities.is_empty() {
            vec![format!("spiffe://{td}/ns/istio-system/sa/ztunnel")]
        } else {
            a.ambient_identities.clone()
        };
        let name = a.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "control".into());
            format!("{host}-{}", std::process::id())
        });
        let files = DirSource::new(a.config_dir.clone(), a.mesh.clone(), bundles);
        let mut opts = Options {
            source: Box::new(files),
            monitor_listen: Some(a.monitoring_listen),
            ambient_identities,
            name,
            registry: trustmesh_registry::Options {
                auto_allocate: Some(trustmesh_registry::options::AutoAllocate {
                    v4: a.vip_range,
                    v6: None,
                }),
                ..Default::default()
            },
        };
        // What signs workload certificates: the CA, or with --external-signer a Kubernetes
        // signer (the CA's own serving certificate stays with the CA).
        let mut workload_signer: Arc<dyn Signer> = signer.clone();
        if let Some(c) = &cluster {
            match c.external_signer(&a.kube) {
                Ok(Some(s)) => workload_signer = s,
                Ok(None) => {}
                Err(code) => return code,
            }
        }
        if let Some(c) = &mut cluster {
            c.attach(&a.kube, &mut ca_opts, &mut opts, workload_signer.as_ref())
                .await;
            if a.kube.sign_csrs {
                c.sign_csrs(&a.ca, signer.clone(), ca_opts.trust_domain.clone());
            }
        }
        let running = match run::start(workload_signer, identity, ca_opts, opts).await {
            Ok(r) => r,
            Err(e) => return super::fail(1, format!("{e:#}")),
        };
        // Machine-readable lines: tests and scripts started with port 0 learn the real ports.
        println!("listening grpc={}", running.ca.addr);
        if let Some(m) = running.monitor_addr {
            println!("listening monitoring={m}");
        }
        if let Some(b) = running.ca.bundle_addr {
            println!("listening bundle={b}");
        }
        match &mut cluster {
            Some(c) => {
                let stop = signals.shutdown();
                tokio::pin!(stop);
                let mut tick = tokio::time::interval(control_kube::REPORT_EVERY);
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        ca = c.next_rotation() => c.rotate(ca, &a.ca, &signer, &running).await,
                        _ = tick.tick() => {
                            c.follow_roots(&running.control.world());
                            c.report(&running.control.problems()).await;
                        }
                    }
                }
            }
            None => {
                signals.shutdown().await;
            }
        }
        if let Some(c) = cluster {
            c.stop();
        }
        running.drain(deadline, signals.again()).await;
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 every sidecar is in sync; 1 one is not (NACKED or STALE), or a replica cannot be reached."
)]
pub struct StatusArgs {
    /// Monitoring address of a control plane replica (`host:port`); repeatable.
    #[arg(
        long = "control",
        value_name = "ADDR",
        default_value = "127.0.0.1:15014"
    )]
    pub controls: Vec<String>,
    /// The same as `-o json` (kept for scripts written before `-o`).
    #[arg(long, hide = true)]
    pub json: bool,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

/// `trustmesh proxy-status`: every connected sidecar, its identity, the version it ACKed and
/// whether it is in sync, per control-plane replica. Exit 0 when every sidecar is in sync, 1
/// when one is not (or a replica cannot be reached), so scripts can wait on it.
pub fn proxy_status(a: StatusArgs) -> ExitCode {
    let mut docs = Vec::new();
    let mut ok = true;
    for c in &a.controls {
        match super::admin_client::get_json(c, "/debug/syncz") {
            Ok(v) => docs.push(v),
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
            }
        }
    }
    let format = if a.json {
        super::output::Format::Json
    } else {
        a.output.format
    };
    let structured = super::output::print(format, &docs);
    if !structured {
        println!(
            "{:<40} {:<50} {:<14} {:<20} {:<9} TYPES",
            "NAME", "IDENTITY", "CONTROL", "VERSION", "SYNCED"
        );
    }
    for d in &docs {
        let cp = d["controlPlane"].as_str().unwrap_or("");
        for problem in d["problems"].as_array().into_iter().flatten() {
            eprintln!("{cp}: config problem: {}", problem.as_str().unwrap_or(""));
        }
        for p in d["proxies"].as_array().into_iter().flatten() {
            let in_sync = p["inSync"].as_bool().unwrap_or(false);
            ok &= in_sync;
            if structured {
                continue;
            }
            let types: Vec<String> = p["types"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(t, s)| format!("{t}={}", s.as_str().unwrap_or("")))
                .collect();
            println!(
                "{:<40} {:<50} {:<14} {:<20} {:<9} {}",
                p["node"].as_str().unwrap_or(""),
                p["identity"].as_str().unwrap_or(""),
                cp,
                p["ackedVersion"].as_str().unwrap_or(""),
                if in_sync { "SYNCED" } else { "NOT SYNCED" },
                types.join(" ")
            );
            for n in p["nacks"].as_array().into_iter().flatten() {
                println!("    NACK {}", n.as_str().unwrap_or(""));
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
