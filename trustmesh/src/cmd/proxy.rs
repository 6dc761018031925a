//! `trustmesh proxy --config FILE`: run the mTLS sidecar proxy.
//!
//! Diagnostics go to stderr (`RUST_LOG` filters them, default `info`); stdout carries only the
//! JSON access log, one line per request or connection.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Proxy configuration file (YAML; see crates/proxy/README.md).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Read the configuration and every file it names (mesh config, trust bundles, own
    /// certificate and key, policies), print old spellings still in use and what would be
    /// served, then exit: 0 when it would start, 2 when it would not.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: Args) -> ExitCode {
    let Some(config) = a.config else {
        return super::fail(2, "--config FILE is required");
    };
    if a.check {
        return check(&config);
    }
    // The admin's `POST /logging` replaces the filter through this handle.
    if let Some((handle, base)) = super::init_reloadable_logging() {
        trustmesh_proxy::loglevel::install(Box::new(Filter(handle)), &base);
    }
    super::raise_fd_limit();
    // This runtime accepts connections and runs the admin endpoint, reloads and JWKS fetches;
    // the connections themselves run on the proxy's worker threads (crates/proxy/src/workers.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(1, format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(trustmesh_proxy::run(&config, return_start_up_pages)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(1, format!("{e:#}")),
    }
}

/// Once the proxy serves: what start-up touched of the program need not stay resident
/// ([`super::pages::return_start_up_pages`]).
fn return_start_up_pages() {
    let r = super::pages::return_start_up_pages();
    tracing::info!(
        mappings = r.mappings,
        rss_file_kb_before = ?r.file_kb_before,
        rss_file_kb_after = ?r.file_kb_after,
        "start-up's pages of the program returned to the page cache"
    );
}

/// The process's log filter, handed to the proxy (`trustmesh_proxy::loglevel`).
struct Filter(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl trustmesh_proxy::loglevel::LogControl for Filter {
    fn set_filter(&self, directives: &str) -> Result<(), String> {
        let f = tracing_subscriber::EnvFilter::try_new(directives)
            .map_err(|e| format!("the log filter {directives:?} is not valid: {e}"))?;
        self.0
            .reload(f)
            .map_err(|e| format!("the log filter could not be replaced: {e}"))
    }
}

/// `--check`: everything the proxy reads at start, nothing bound. The snapshot is built inside
/// a runtime because ext_authz clients are created with it.
fn check(config: &std::path::Path) -> ExitCode {
    let (cfg, deprecations) = match trustmesh_proxy::ProxyConfig::read(config) {
        Ok(r) => r,
        Err(e) => return super::fail(2, e),
    };
    super::flags::report(&deprecations);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(1, format!("cannot start the async runtime: {e}")),
    };
    if let Some(cp) = &cfg.control_plane {
        // Policies, registry and mesh config come from the control plane, which --check does
        // not contact: check what this file names.
        if let Err(e) = std::fs::read(&cp.root_cert) {
            return super::fail(
                2,
                format!("controlPlane.rootCert: {}: {e}", cp.root_cert.display()),
            );
        }
        println!(
            "{}: ok: workload {}/{}, policies, registry and mesh config from the control plane \
             at {} (not contacted), {} deprecated spellings",
            config.display(),
            cfg.workload.namespace,
            cfg.workload.service_account,
            cp.servers().join(", "),
            deprecations.iter().count(),
        );
        return ExitCode::SUCCESS;
    }
    let snap = match runtime.block_on(async { trustmesh_proxy::snapshot::build(cfg, 0, None) }) {
        Ok(s) => s,
        Err(e) => return super::fail(2, format!("{e:#}")),
    };
    let set = &snap.policies.set;
    for i in set.invalid_resources() {
        eprintln!("fail-closed: {}", i.summary());
    }
    if let Some(why) = set.denies_everything() {
        eprintln!("fail-closed: every request is denied: {why}");
    }
    println!(
        "{}: ok: workload {} ({} inbound, {} outbound listeners), trust domain {}, \
         {} authorization policies ({} invalid, enforced fail-closed), {} deprecated spellings",
        config.display(),
        snap.own_id,
        snap.config.inbound.len(),
        snap.config.outbound.len(),
        snap.mesh.trust_domain,
        set.authorization_policy_count(),
        set.invalid_resources().len(),
        deprecations.iter().count(),
    );
    ExitCode::SUCCESS
}
