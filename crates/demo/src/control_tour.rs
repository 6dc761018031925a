//! The loopback tour's control-plane steps: a policy edit made the way an operator makes it
//! (a file written into the control plane's config directory, then removed), enforced once
//! `proxy-status` says every sidecar took it; and the operator's view of the mesh, the
//! `proxy-status` table itself. Kept apart from [`crate::tour`], whose steps would read the
//! same with per-sidecar files.

use std::time::Duration;

use crate::mesh::Mesh;
use crate::policies::{RATINGS_FREEZE, RATINGS_FREEZE_FILE};
use crate::report::{describe_sync, expect_status, short_status, via, Report};
use crate::workloads::{ALL, FRONTEND, RATINGS, TD_A, TD_B};

/// How long a config change may take to reach every sidecar (the control plane notices a file
/// within ~200 ms; the rest is one push per sidecar).
const SYNC_LIMIT: Duration = Duration::from_secs(10);

/// Writes a DENY policy for ratings into the config directory, checks it is enforced once in
/// sync, removes it, checks ratings answers again.
pub async fn policy_edit(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!("\n== Policy changes through the control plane");
    let file = mesh.control.config_dir.join(RATINGS_FREEZE_FILE);
    let before = mesh.control.versions().await;
    mesh.control
        .write_config(RATINGS_FREEZE_FILE, RATINGS_FREEZE)?;
    let synced = mesh
        .control
        .wait_synced(&before, &[TD_A, TD_B], &[&RATINGS], SYNC_LIMIT)
        .await;
    let o = via(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record_ran(
        "policy edit: DENY /ratings/* written to the control plane's config dir",
        Some(&format!("write {}", file.display())),
        "proxy-status in sync, then frontend GET /ratings/7 -> HTTP 403",
        format!("{}, {}", describe_sync(&synced), short_status(&o)),
        synced.is_ok() && expect_status(&o, 403) && o.body().contains("RBAC"),
    );

    let before = mesh.control.versions().await;
    mesh.control.remove_config(RATINGS_FREEZE_FILE)?;
    let synced = mesh
        .control
        .wait_synced(&before, &[TD_A, TD_B], &[&RATINGS], SYNC_LIMIT)
        .await;
    let o = via(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record_ran(
        "policy edit undone: the DENY file removed",
        Some(&format!("rm {}", file.display())),
        "proxy-status in sync, then frontend GET /ratings/7 -> HTTP 200",
        format!("{}, {}", describe_sync(&synced), short_status(&o)),
        synced.is_ok() && expect_status(&o, 200),
    );
    Ok(())
}

/// Prints `trustmesh proxy-status` for both control planes; passes when it exits 0 and lists
/// every workload's sidecar as SYNCED.
pub async fn operator_view(mesh: &Mesh, report: &mut Report) {
    println!("\n== Operator's view (trustmesh proxy-status)");
    let command = mesh.control.proxy_status_command();
    let (observed, ok) = match mesh.control.proxy_status(false).await {
        Ok((code, out, err)) => {
            for line in out.lines().chain(err.lines()) {
                println!("        | {line}");
            }
            let synced = ALL
                .iter()
                .filter(|w| {
                    let id = w.spiffe_id();
                    out.lines().any(|l| {
                        l.contains(&id) && l.contains(" SYNCED ") && !l.contains("NOT SYNCED")
                    })
                })
                .count();
            let code = code.map_or("a signal".to_string(), |c| c.to_string());
            (
                format!("exit {code}, {synced} of {} sidecars SYNCED", ALL.len()),
                code == "0" && synced == ALL.len(),
            )
        }
        Err(e) => (format!("{e:#}"), false),
    };
    report.record_ran(
        "proxy-status: every sidecar SYNCED with its control plane",
        Some(&command),
        &format!("exit 0, {} of {} sidecars SYNCED", ALL.len(), ALL.len()),
        observed,
        ok,
    );
}
