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
}

pub fn run(a: Args) -> ExitCode {
    let Some(config) = a.config else {
        return super::fail(2, "--config FILE is required");
    };
    super::init_logging();
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
    match runtime.block_on(trustmesh_proxy::run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(1, format!("{e:#}")),
    }
}
