//! The tours' control-plane steps: a policy edit made the way an operator makes it (a file
//! written into the control plane's config directory, then removed), enforced once
//! `proxy-status` says every sidecar took it; and the operator's view of the mesh, the
//! `proxy-status` table itself. Both tours run them (the loopback one from [`crate::tour`],
//! `--transparent` from its own), each making the call the way its apps do; kept apart from
//! the tours, whose other steps would read the same with per-sidecar files.

use std::future::Future;
use std::time::Duration;

use crate::client::Outcome;
use crate::control::ControlPlanes;
use crate::policies::{RATINGS_FREEZE, RATINGS_FREEZE_FILE};
use crate::report::{describe_sync, expect_status, short_status, Report};
use crate::workloads::{ALL, RATINGS, TD_A, TD_B};

/// How long a config change may take to reach every sidecar (the control plane notices a file
/// within ~200 ms; the rest is one push per sidecar).
const SYNC_LIMIT: Duration = Duration::from_secs(10);

/// Writes a DENY policy for ratings into the config directory, checks it is enforced once in
/// sync, removes it, checks ratings answers again. `frontend_gets_ratings` is frontend's
/// `GET /ratings/7`, made as the tour's apps make calls.
pub async fn policy_edit<F, Fut>(
    control: &ControlPlanes,
    report: &mut Report,
    frontend_gets_ratings: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Outcome>,
{
    println!("\n== Policy changes through the control plane");
    let file = control.config_dir.join(RATINGS_FREEZE_FILE);
    let before = control.versions().await;
    control.write_config(RATINGS_FREEZE_FILE, RATINGS_FREEZE)?;
    let synced = control
        .wait_synced(&before, &[TD_A, TD_B], &[&RATINGS], SYNC_LIMIT)
        .await;
    let o = frontend_gets_ratings().await;
    report.record_ran(
        "policy edit: DENY /ratings/* written to the control plane's config dir",
        Some(&format!("write {}", file.display())),
        "proxy-status in sync, then frontend GET /ratings/7 -> HTTP 403",
        format!("{}, {}", describe_sync(&synced), short_status(&o)),
        synced.is_ok() && expect_status(&o, 403) && o.body().contains("RBAC"),
    );

    let before = control.versions().await;
    control.remove_config(RATINGS_FREEZE_FILE)?;
    let synced = control
        .wait_synced(&before, &[TD_A, TD_B], &[&RATINGS], SYNC_LIMIT)
        .await;
    let o = frontend_gets_ratings().await;
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
pub async fn operator_view(control: &ControlPlanes, report: &mut Report) {
    println!("\n== Operator's view (trustmesh proxy-status)");
    let command = control.proxy_status_command();
    let (observed, ok) = match control.proxy_status(false).await {
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
