//! `trustmesh quickstart`: the whole system on loopback — two CAs with different roots, CA
//! servers, node agents, sidecar proxies in front of demo apps, an external authorizer — and a
//! scripted tour that shows Istio's security model working, step by step.
//!
//! Layout: [`procs`] supervises child processes; [`workloads`], [`identities`] (CAs, agents,
//! trust bundles), [`tokens`] and [`policies`] are what both ways of running share; [`mesh`]
//! writes the loopback configuration and starts the sidecars, which take their policies, mesh
//! config and trust bundles from a control plane per trust domain ([`control`]; its steps of
//! the tour are [`control_tour`]); [`backend`] and [`authz_server`]
//! are the in-process demo services, [`client`] makes bounded HTTP calls, [`tour`] runs the
//! steps and keeps the score.
//!
//! With `--transparent` (root only), [`transparent`] builds the same mesh in network namespaces
//! ([`netns`]) behind `trustmesh capture`, and tours it with unmodified apps calling by name.

pub mod authz_server;
pub mod backend;
pub mod client;
pub mod control;
pub mod control_tour;
pub mod files;
pub mod identities;
pub mod mesh;
pub mod netns;
pub mod policies;
pub mod procs;
pub mod report;
pub mod tokens;
pub mod tour;
pub mod transparent;
pub mod workloads;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

/// How the quickstart runs.
pub struct Options {
    /// The `trustmesh` binary every child process runs (normally the current executable).
    pub exe: PathBuf,
    /// Leave the mesh running after the tour, until Ctrl-C.
    pub keep_running: bool,
    /// Workloads in network namespaces behind the capture and transparent sidecars (root only;
    /// check [`transparent::preflight`] first).
    pub transparent: bool,
}

/// The mesh a finished tour leaves, for `--keep-running`.
enum Running {
    Loopback(mesh::Mesh),
    Transparent(transparent::mesh::Mesh),
}

/// Runs the quickstart. `Ok(true)` when every step behaved as expected. `interrupted` resolves
/// when the user wants out (the CLI passes Ctrl-C / SIGTERM); it is awaited during the tour and,
/// with `keep_running`, afterwards — either way every child is stopped, then the network
/// namespaces (with `transparent`) and the temporary directory removed.
pub async fn quickstart<F, Fut>(opts: Options, interrupted: F) -> anyhow::Result<bool>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let tmp = tempfile::Builder::new()
        .prefix("trustmesh-quickstart-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let mut sup = procs::Supervisor::new(opts.exe.clone(), dir.join("logs"))?;
    // The transparent mesh's namespaces: owned here, outside the tour, so they are deleted on
    // every way out, and only after the processes inside them are stopped.
    let mut net = netns::Network::default();
    let what = if opts.transparent {
        println!(
            "trustmesh quickstart --transparent: a mesh in network namespaces, its files in {}",
            dir.display()
        );
        format!("the network namespaces and {}", dir.display())
    } else {
        println!(
            "trustmesh quickstart: a mesh on loopback in {}",
            dir.display()
        );
        dir.display().to_string()
    };

    let started = Instant::now();
    let outcome = tokio::select! {
        r = session(opts.transparent, &dir, &mut sup, &mut net, started) => Some(r),
        _ = interrupted() => None,
    };
    let result = match outcome {
        None => {
            println!("\ninterrupted: stopping every process and removing {what}");
            Ok(false)
        }
        Some(Ok((ok, running))) => {
            if opts.keep_running {
                match &running {
                    Running::Loopback(mesh) => print_how_to_use(mesh),
                    Running::Transparent(mesh) => transparent::print_how_to_use(mesh),
                }
                println!("\nmesh running; press Ctrl-C to stop it and clean up");
                interrupted().await;
                println!("\nstopping every process and removing {what}");
            }
            Ok(ok)
        }
        Some(Err(e)) => Err(e),
    };
    sup.shutdown().await;
    net.remove_all();
    match &result {
        Err(_) => {
            // Keep the logs when set-up itself failed: they are the only way to see why.
            let kept = tmp.keep();
            eprintln!("logs kept in {}", kept.join("logs").display());
        }
        Ok(_) => drop(tmp),
    }
    result
}

async fn session(
    transparent: bool,
    dir: &std::path::Path,
    sup: &mut procs::Supervisor,
    net: &mut netns::Network,
    started: Instant,
) -> anyhow::Result<(bool, Running)> {
    let mut progress = |what: &str| {
        println!("  [{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    };
    let mut report = report::Report::default();
    let running = if transparent {
        let mesh = transparent::mesh::Mesh::start(dir, sup, net, &mut progress).await?;
        progress(&format!("mesh up: {} processes", sup.count()));
        transparent::tour::run(&mesh, &mut report).await?;
        Running::Transparent(mesh)
    } else {
        let mesh = mesh::Mesh::start(dir, sup, &mut progress).await?;
        progress(&format!("mesh up: {} processes", sup.count()));
        tour::run(&mesh, &mut report).await?;
        Running::Loopback(mesh)
    };
    // A process that died during the tour is a failure even if no step noticed it.
    let alive = sup.check_alive();
    report.record_alive(sup.count(), alive.as_ref().err().map(|e| format!("{e:#}")));
    report.print_summary();
    println!("  tour took {:.1}s", started.elapsed().as_secs_f64());
    Ok((report.all_ok(), running))
}

fn print_how_to_use(mesh: &mesh::Mesh) {
    use workloads::{ANALYTICS, FRONTEND, PAYROLL, RATINGS, REVIEWS};
    println!("\nTry it yourself (each URL is an app's sidecar outbound listener):");
    println!(
        "  curl -s http://{}/reviews/1              # frontend -> reviews over mTLS",
        mesh.route(&FRONTEND, &REVIEWS)
    );
    println!(
        "  curl -s http://{}/admin                 # 403 by AuthorizationPolicy",
        mesh.route(&FRONTEND, &RATINGS)
    );
    println!(
        "  curl -s -H 'x-demo-approval: granted' http://{}/salaries/bob   # ext_authz",
        mesh.route(&FRONTEND, &PAYROLL)
    );
    println!(
        "  curl -s http://{}/reviews/1              # team-b -> team-a, federated",
        mesh.route(&ANALYTICS, &REVIEWS)
    );
    println!("Operator's view (the control planes, then each sidecar's admin endpoint):");
    println!("  {}", mesh.control.proxy_status_command());
    println!(
        "  policies: edit the Istio YAML in {} (both control planes watch it)",
        mesh.control.config_dir.display()
    );
    for (name, sc) in &mesh.sidecars {
        println!(
            "  {name:<9} trustmesh tls-check --admin {}    curl -s http://{}/config_dump",
            sc.admin, sc.admin
        );
    }
    println!(
        "  trustmesh authz check --admin {} --request req.json",
        mesh.sidecar(&REVIEWS).admin
    );
    println!(
        "Files (configs, certificates, policies, logs): {}",
        mesh.dir.display()
    );
}
