//! `trustmesh agent --config FILE`: the node agent (key + CSR, rotation, certificate files,
//! SPIFFE Workload API).

use std::path::PathBuf;
use std::process::ExitCode;

use trustmesh_agent::Config;
use trustmesh_lifecycle::signals::Hangup;

#[derive(clap::Args)]
pub struct Args {
    /// Agent configuration (YAML): CA address and root, token file, trust domain, workload
    /// identity, output folder, Workload API socket, rotation fraction, TTL, federation.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(a: Args) -> ExitCode {
    super::init_logging();
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => return super::fail(2, e),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return super::fail(1, format!("starting runtime: {e}")),
    };
    rt.block_on(async move {
        let signals = match super::register_signals(Hangup::Ignore) {
            Ok(s) => s,
            Err(code) => return code,
        };
        if let Some(sock) = &cfg.workload_api_socket {
            println!("workload-api unix://{}", sock.display());
        }
        tokio::select! {
            r = trustmesh_agent::run(cfg) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => super::fail(1, e),
            },
            _ = signals.shutdown() => ExitCode::SUCCESS,
        }
    })
}
