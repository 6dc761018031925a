//! `trustmesh quickstart`: the whole mesh on loopback and a scripted tour (see `trustmesh-demo`).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Leave the mesh running after the tour and print how to call it; Ctrl-C stops it.
    #[arg(long)]
    pub keep_running: bool,
}

pub fn run(a: Args) -> ExitCode {
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
    };
    match rt.block_on(trustmesh_demo::quickstart(opts, super::shutdown_signal)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => super::fail(1, format!("{e:#}")),
    }
}
