//! `trustmesh migrate plan --admin ADDR... --mesh NEW`: before a trust-domain change or an
//! alias removal, replays the peers each sidecar has recently served (`/peers`) against the
//! proposed mesh config — would the peer's certificate still be accepted, would the sidecar's
//! policies (principals re-expanded over the new trust domain and aliases) still let its
//! requests through — and lists what would be refused. Nothing changes anywhere.
//!
//! What it cannot see, it says: requests are replayed without their JWTs (a policy on request
//! principals or claims is judged as the sidecar judged the request without them, and the
//! same way under both configs, so it never shows as a change), and only the peers recorded
//! since the sidecar started (`crate::peers` keeps the most recent ones).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};
use trustmesh_policy::{load, MeshConfig, PolicySet, Request, Verdict};

use super::sidecar::Loaded;

#[derive(clap::Subcommand)]
pub enum MigrateCommand {
    /// List what running sidecars would refuse under a proposed mesh config (trust domain,
    /// aliases), from the peers they have recently served.
    Plan(PlanArgs),
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 nothing recently served would be refused; 1 something would be (listed); 2 a sidecar or the mesh file could not be read."
)]
pub struct PlanArgs {
    /// Admin address of a sidecar (repeatable): each is asked what it has loaded and whom it
    /// has served.
    #[arg(long = "admin", value_name = "ADDR", required = true)]
    pub admins: Vec<String>,
    /// The proposed mesh config (any shape `--mesh` takes elsewhere).
    #[arg(long, value_name = "FILE")]
    pub mesh: PathBuf,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

pub fn run(c: MigrateCommand) -> ExitCode {
    match c {
        MigrateCommand::Plan(a) => plan(a),
    }
}

fn plan(a: PlanArgs) -> ExitCode {
    let proposed = match load::read_mesh(&a.mesh) {
        Err(e) => return super::fail(2, e),
        Ok(Err(p)) => return super::fail(2, p),
        Ok(Ok(m)) => m,
    };
    let mut sidecars = Vec::new();
    let mut refused_total = 0;
    for addr in &a.admins {
        match sidecar_plan(addr, &proposed) {
            Ok(p) => {
                refused_total += p["refused"].as_array().map_or(0, Vec::len);
                sidecars.push(p);
            }
            Err(e) => return super::fail(2, e),
        }
    }
    let report = json!({
        "proposed": { "trustDomain": proposed.trust_domain, "trustDomainAliases": proposed.trust_domain_aliases },
        "sidecars": sidecars,
        "refused": refused_total,
    });
    if !super::output::print(a.output.format, &report) {
        print_text(&report);
    }
    if refused_total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One sidecar's plan: what it would refuse, and notes on the proposed config itself.
fn sidecar_plan(addr: &str, proposed: &MeshConfig) -> Result<Value, String> {
    let loaded = Loaded::fetch(addr)?;
    let certs = super::admin_client::get_json(addr, "/certs")?;
    let peers = super::admin_client::get_json(addr, "/peers")?;
    let now_set = loaded.policies(&loaded.mesh)?;
    let then_set = loaded.policies(proposed)?;
    let bundles: BTreeSet<String> = certs["trustBundles"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let own = certs["workload"]["spiffeId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut notes = Vec::new();
    if !bundles.contains(&proposed.trust_domain) {
        notes.push(format!(
            "this sidecar holds no trust bundle for the proposed trust domain {}: certificates \
             issued in it cannot be verified here until its root is given under that name",
            proposed.trust_domain
        ));
    }
    if !own.is_empty() && !accepted(td_of(&own), proposed, &bundles) {
        notes.push(format!(
            "this sidecar's own identity {own} is outside the proposed trust domain and its \
             aliases: peers that move to the proposed config refuse it until it is reissued"
        ));
    }
    let (namespace, labels) = loaded.workload();
    let mut refused = Vec::new();
    let mut kept = 0u64;
    for seen in peers["peers"].as_array().into_iter().flatten() {
        let principal = seen["principal"].as_str();
        let port = seen["port"].as_u64().unwrap_or(0) as u16;
        let who = principal.unwrap_or("a plaintext peer").to_string();
        let entry = |why: String, request: Option<String>| {
            json!({
                "peer": who,
                "port": port,
                "requests": seen["requests"],
                "lastSeen": seen["lastSeen"],
                "request": request,
                "why": why,
            })
        };
        if let Some(p) = principal {
            let td = td_of(p);
            if !accepted(td, proposed, &bundles) {
                refused.push(entry(
                    format!(
                        "its trust domain {td} would not be trusted: not the proposed trust \
                         domain {}, not an alias, and no bundle for it (the TLS handshake fails)",
                        proposed.trust_domain
                    ),
                    None,
                ));
                continue;
            }
        }
        let mut base = Request::default();
        base.destination.namespace = namespace.clone();
        base.destination.labels = labels.clone();
        base.destination.port = port;
        base.source.principal = principal.map(str::to_string);
        let samples: Vec<Option<&Value>> = match seen["samples"].as_array() {
            Some(s) if !s.is_empty() => s.iter().map(Some).collect(),
            _ => vec![None],
        };
        let mut flipped = false;
        for sample in samples {
            let mut req = base.clone();
            let what = sample.map(|s| {
                let h = trustmesh_policy::request::Http {
                    method: s["method"].as_str().unwrap_or("GET").to_string(),
                    path: s["path"].as_str().unwrap_or("/").to_string(),
                    host: s["host"].as_str().unwrap_or("").to_string(),
                    headers: Default::default(),
                };
                let what = format!("{} {} (host {})", h.method, h.path, h.host);
                req.http = Some(h);
                what
            });
            if let Some(why) = flips(&now_set, &then_set, &req) {
                refused.push(entry(why, what));
                flipped = true;
            }
        }
        if !flipped {
            kept += 1;
        }
    }
    Ok(json!({
        "admin": addr,
        "identity": own,
        "current": { "trustDomain": loaded.mesh.trust_domain, "trustDomainAliases": loaded.mesh.trust_domain_aliases },
        "refused": refused,
        "peersKept": kept,
        "notes": notes,
    }))
}

/// Whether policy lets `req` through now and refuses it under the proposed config: the reason.
fn flips(now: &PolicySet, then: &PolicySet, req: &Request) -> Option<String> {
    let before = now.evaluate(req);
    if before.decision == Verdict::Deny {
        return None;
    }
    let after = then.evaluate(req);
    (after.decision == Verdict::Deny).then(|| format!("policy would deny it: {}", after.reason))
}

/// Local, alias, or a domain this sidecar holds a bundle for (federation), under `mesh`.
fn accepted(td: &str, mesh: &MeshConfig, bundles: &BTreeSet<String>) -> bool {
    mesh.trust_domains().any(|d| d == td) || bundles.contains(td)
}

fn td_of(spiffe_id: &str) -> &str {
    spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

fn print_text(r: &Value) {
    println!(
        "proposed: trust domain {}, aliases {}",
        r["proposed"]["trustDomain"].as_str().unwrap_or("?"),
        list(&r["proposed"]["trustDomainAliases"])
    );
    for s in r["sidecars"].as_array().into_iter().flatten() {
        println!();
        println!(
            "{} ({}): now trust domain {}, aliases {}",
            s["admin"].as_str().unwrap_or("?"),
            s["identity"].as_str().unwrap_or("?"),
            s["current"]["trustDomain"].as_str().unwrap_or("?"),
            list(&s["current"]["trustDomainAliases"])
        );
        for n in s["notes"].as_array().into_iter().flatten() {
            println!("  note: {}", n.as_str().unwrap_or(""));
        }
        let refused = s["refused"].as_array().cloned().unwrap_or_default();
        if refused.is_empty() {
            println!(
                "  nothing recently served would be refused ({} peer/port pairs replayed)",
                s["peersKept"]
            );
        }
        for x in refused {
            let req = x["request"]
                .as_str()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            println!(
                "  REFUSED {} on port {}{req} ({} requests seen): {}",
                x["peer"].as_str().unwrap_or("?"),
                x["port"],
                x["requests"],
                x["why"].as_str().unwrap_or("")
            );
        }
    }
}

fn list(v: &Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
