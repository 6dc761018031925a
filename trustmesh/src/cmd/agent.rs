//! `trustmesh agent --config FILE`: the node agent (key + CSR, rotation, certificate files,
//! SPIFFE Workload API). SIGTERM or SIGINT drains it (rotation stops, Workload API calls in
//! flight are answered and streams end, for up to its `terminationDrain`, default `trustmesh_agent::DRAIN_DEADLINE`), a second
//! one stops it at once; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored.

use std::path::PathBuf;
use std::process::ExitCode;

use trustmesh_agent::Config;
use trustmesh_ca::KeyType;
use trustmesh_lifecycle::signals::Hangup;

#[derive(clap::Args)]
pub struct Args {
    /// Agent configuration (YAML): CA address and root, token file, trust domain, workload
    /// identity, output folder, Workload API socket, rotation fraction, TTL, federation.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Read the configuration, print old spellings still in use and the identity it would
    /// request, then exit: 0 when it is valid, 2 when it is not.
    #[arg(long)]
    pub check: bool,
    /// Algorithm of the workload keys: ECDSA (P-256, the default) or RSA (2048 bits, Istio's
    /// default); overrides the file's `keyAlgorithm`.
    #[arg(long, value_name = "ECDSA|RSA", value_parser = trustmesh_agent::config::parse_key_algorithm)]
    pub key_algorithm: Option<KeyType>,
}

pub fn run(a: Args) -> ExitCode {
    if a.check {
        return match Config::read(&a.config) {
            Ok((cfg, deprecations)) => {
                super::flags::report(&deprecations);
                println!(
                    "{}: ok: identity {}, CA {}, {} keys, {} deprecated spellings",
                    a.config.display(),
                    cfg.spiffe_id,
                    cfg.ca_address,
                    a.key_algorithm.unwrap_or(cfg.key_algorithm),
                    deprecations.iter().count(),
                );
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(2, e),
        };
    }
    super::init_logging();
    let mut cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => return super::fail(2, e),
    };
    if let Some(k) = a.key_algorithm {
        cfg.key_algorithm = k;
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
        if let Some(sock) = &cfg.workload_api_socket {
            println!("workload-api unix://{}", sock.display());
        }
        let deadline = cfg.termination_drain;
        let (trigger, drain) = trustmesh_lifecycle::drain::channel();
        let mut agent = tokio::spawn(trustmesh_agent::run(cfg, drain));
        tokio::select! {
            r = &mut agent => return match r {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => super::fail(1, e),
                Err(e) => super::fail(1, format!("agent task: {e}")),
            },
            _ = signals.shutdown() => {}
        }
        // Workload API calls in flight are answered; a second signal cuts them.
        trigger.shutdown(deadline, signals.again()).await;
        ExitCode::SUCCESS
    })
}
