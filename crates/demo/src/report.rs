//! What every tour reports with: the steps and their verdicts, and the small helpers that
//! turn a call's outcome into a step's words. A leaf the explicit tour, the control-plane steps
//! and the transparent tour all use, so none of them imports another for these.

use std::time::Duration;

use crate::client::{call, Outcome};
use crate::mesh::Mesh;
use crate::workloads::Workload;

/// One step's verdict.
pub struct Step {
    pub title: String,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

/// Collects steps and prints each as it completes.
#[derive(Default)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    pub fn record(&mut self, title: &str, expected: &str, observed: String, ok: bool) {
        self.record_ran(title, None, expected, observed, ok)
    }

    /// As [`Report::record`], with the command the step ran (shown between title and verdict).
    pub fn record_ran(
        &mut self,
        title: &str,
        ran: Option<&str>,
        expected: &str,
        observed: String,
        ok: bool,
    ) {
        let n = self.steps.len() + 1;
        let mark = if ok { "PASS" } else { "FAIL" };
        println!("  {n:>2}. [{mark}] {title}");
        if let Some(ran) = ran {
            println!("        ran:      {ran}");
        }
        println!("        expected: {expected}");
        println!("        observed: {observed}");
        self.steps.push(Step {
            title: title.into(),
            expected: expected.into(),
            observed,
            ok,
        });
    }

    /// The last step: every CA server or control plane, agent and sidecar is still running.
    pub fn record_alive(&mut self, processes: usize, died: Option<String>) {
        let ok = died.is_none();
        println!("\n== Health");
        self.record(
            "every CA or control plane, agent and sidecar still running",
            &format!("{processes} processes alive"),
            died.unwrap_or_else(|| format!("{processes} processes alive")),
            ok,
        );
    }

    pub fn all_ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// The closing table.
    pub fn print_summary(&self) {
        let width = self.steps.iter().map(|s| s.title.len()).max().unwrap_or(10);
        println!();
        println!("  {:<3} {:<width$}  result", "#", "step");
        println!("  {}", "-".repeat(width + 13));
        for (i, s) in self.steps.iter().enumerate() {
            let mark = if s.ok { "PASS" } else { "FAIL" };
            println!("  {:<3} {:<width$}  {mark}", i + 1, s.title);
        }
        let passed = self.steps.iter().filter(|s| s.ok).count();
        println!("\n  {passed} passed, {} failed", self.steps.len() - passed);
    }
}

pub fn peer_of(o: &Outcome) -> Option<String> {
    o.json()
        .and_then(|j| j.get("peer").and_then(|p| p.as_str().map(str::to_string)))
}

/// A call from `from`'s app to `to`, through `from`'s sidecar.
pub async fn via(
    mesh: &Mesh,
    from: &Workload,
    to: &Workload,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Outcome {
    call(mesh.route(from, to), method, path, headers).await
}

pub fn expect_status(o: &Outcome, want: u16) -> bool {
    o.status() == Some(want)
}

/// How a wait for `proxy-status` ended, for a step's "observed" line.
pub fn describe_sync(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => format!("in sync after {:.1}s", d.as_secs_f64()),
        Err(why) => why.clone(),
    }
}

pub fn short_status(o: &Outcome) -> String {
    match o.status() {
        Some(s) => format!("HTTP {s}"),
        None => o.describe(),
    }
}

pub fn abbrev(serial: Option<&str>) -> String {
    match serial {
        Some(s) => s.chars().take(11).collect::<String>() + "…",
        None => "?".into(),
    }
}

/// Polls a sidecar's admin endpoint through `admin` (a GET of the path it is given) until its
/// live config shows trust domain `td` as an alias and holds `td`'s bundle, for at most
/// `limit`. Both tours ask it of reviews, each reaching the admin port its own way.
pub async fn wait_for_alias<F, Fut>(admin: F, td: &str, limit: Duration) -> bool
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        let alias = admin("/config_dump").await.json().is_some_and(|j| {
            j["trustDomainAliases"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == td))
        });
        let bundle = admin("/certs")
            .await
            .json()
            .is_some_and(|j| j["trustBundles"].get(td).is_some());
        if alias && bundle {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The serial number of the certificate a sidecar serves, from its `/certs` answer.
pub fn served_serial(certs: &Outcome) -> Option<String> {
    certs
        .json()?
        .pointer("/workload/chain/0/serial")?
        .as_str()
        .map(str::to_string)
}
