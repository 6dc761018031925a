//! `trustmesh quickstart`: the whole mesh on loopback (or, with `--transparent`, in network
//! namespaces) and a scripted tour (see `trustmesh-demo`).

use std::process::ExitCode;

use trustmesh_lifecycle::signals::Hangup;

#[derive(clap::Args)]
pub struct Args {
    /// Leave the mesh running after the tour and print how to call it; Ctrl-C stops it.
    #[arg(long)]
    pub keep_running: bool,
    /// Run every workload in a network namespace of its own behind `trustmesh capture` and a
    /// transparent sidecar; unmodified apps call services by name (needs root, iproute2,
    /// iptables, curl, python3).
    #[arg(long)]
    pub transparent: bool,
}

pub fn run(a: Args) -> ExitCode {
    if a.transparent {
        if let Err(why) = trustmesh_demo::transparent::preflight() {
            return super::fail(2, why);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return super::fail(2, format!("cannot find the trustmesh executable: {e}")),
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return super::fail(2, format!("starting the runtime: {e}")),
    };
    let opts = trustmesh_demo::Options {
        exe,
        keep_running: a.keep_running,
        transparent: a.transparent,
    };
    let result = rt.block_on(async move {
        // SIGTERM or SIGINT (Ctrl-C) stops the mesh and cleans up; SIGHUP and SIGUSR1/2 are
        // ignored, as by the processes of the mesh.
        let signals = super::register_signals(Hangup::Ignore)?;
        let interrupted = || {
            let signals = signals.clone();
            async move {
                signals.shutdown().await;
            }
        };
        Ok(trustmesh_demo::quickstart(opts, interrupted).await)
    });
    match result {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::from(1),
        Ok(Err(e)) => super::fail(1, format!("{e:#}")),
        Err(code) => code,
    }
}
