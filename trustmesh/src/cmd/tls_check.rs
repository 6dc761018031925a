//! `trustmesh tls-check --admin ADDR`: what a running sidecar presents and accepts — its SPIFFE
//! ID and certificate lifetime, the trust domains and roots it trusts, and the effective mTLS mode
//! of every inbound port with the PeerAuthentication that set it (like `istioctl x describe` and
//! `istioctl proxy-config secret`).

use std::process::ExitCode;

use serde_json::Value;

use super::admin_client::get_json;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 no problem found; 1 a problem (expired certificate, an identity outside the mesh's trust domains, no bundle for the local trust domain); 2 the sidecar's admin port could not be read."
)]
pub struct Args {
    /// Admin address of the sidecar (its `admin.address`), e.g. 127.0.0.1:15000.
    #[arg(long, value_name = "ADDR")]
    pub admin: String,
    /// Warn when the workload certificate expires within this many seconds (a warning does not
    /// change the exit code; an expired certificate does).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub warn_expiry: i64,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

pub fn run(a: Args) -> ExitCode {
    let certs = match get_json(&a.admin, "/certs") {
        Ok(v) => v,
        Err(e) => return super::fail(2, e),
    };
    let dump = match get_json(&a.admin, "/config_dump") {
        Ok(v) => v,
        Err(e) => return super::fail(2, e),
    };
    let report = build(&certs, &dump, a.warn_expiry);
    if !super::output::print(a.output.format, &report) {
        print_text(&report);
    }
    if report["problems"].as_array().is_some_and(|p| p.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Folds the two admin documents into one report, and lists what an operator should act on.
fn build(certs: &Value, dump: &Value, warn_expiry: i64) -> Value {
    let w = &certs["workload"];
    let id = w["spiffeId"].as_str().unwrap_or("?").to_string();
    let expires_in = w["expiresInSeconds"].as_i64().unwrap_or(0);
    let local = dump["trustDomain"].as_str().unwrap_or("?").to_string();
    let aliases: Vec<String> = dump["trustDomainAliases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let bundles = certs["trustBundles"]
        .as_object()
        .cloned()
        .unwrap_or_default();

    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if expires_in <= 0 {
        problems.push(format!("workload certificate expired {}s ago", -expires_in));
    } else if expires_in < warn_expiry {
        warnings.push(format!(
            "workload certificate expires in {expires_in}s: fine for short-lived certificates \
             an agent rotates; otherwise renew it"
        ));
    }
    let own_td = id
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    if own_td != local && !aliases.iter().any(|a| a == own_td) {
        problems.push(format!(
            "the workload's identity is in trust domain {own_td}, but the mesh's is {local} \
             (and it is not an alias): peers will not accept it"
        ));
    }
    if !bundles.contains_key(&local) {
        problems.push(format!(
            "no trust bundle for the local trust domain {local}: no peer of the mesh can be verified"
        ));
    }
    let ports = dump["policies"]["mtlsByPort"].clone();
    serde_json::json!({
        "admin": dump["config"]["admin"]["address"],
        "spiffeId": id,
        "certificate": {
            "notBefore": w["notBefore"],
            "notAfter": w["notAfter"],
            "expiresInSeconds": expires_in,
            "chain": w["chain"],
        },
        "trustDomain": local,
        "trustDomainAliases": aliases,
        "trustBundles": bundles,
        "inboundMtls": ports,
        "configGeneration": dump["generation"],
        "problems": problems,
        "warnings": warnings,
    })
}

fn print_text(r: &Value) {
    println!("identity      {}", r["spiffeId"].as_str().unwrap_or("?"));
    let c = &r["certificate"];
    println!(
        "certificate   valid {} -> {} (expires in {})",
        c["notBefore"].as_str().unwrap_or("?"),
        c["notAfter"].as_str().unwrap_or("?"),
        human(c["expiresInSeconds"].as_i64().unwrap_or(0))
    );
    if let Some(chain) = c["chain"].as_array() {
        for (i, cert) in chain.iter().enumerate() {
            println!(
                "  [{i}] serial {}  issuer {}",
                cert["serial"].as_str().unwrap_or("?"),
                cert["issuer"].as_str().unwrap_or("?")
            );
        }
    }
    let aliases: Vec<&str> = r["trustDomainAliases"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!(
        "trust domain  {}{}",
        r["trustDomain"].as_str().unwrap_or("?"),
        if aliases.is_empty() {
            String::new()
        } else {
            format!(" (aliases: {})", aliases.join(", "))
        }
    );
    println!("trusts        (peers of these trust domains are verified against these roots)");
    if let Some(b) = r["trustBundles"].as_object() {
        for (td, roots) in b {
            for root in roots.as_array().into_iter().flatten() {
                println!(
                    "  {td:<24} {}  expires {}",
                    root["subject"].as_str().unwrap_or("?"),
                    root["notAfter"].as_str().unwrap_or("?")
                );
            }
        }
    }
    println!("inbound mTLS  (effective PeerAuthentication mode per port)");
    if let Some(ports) = r["inboundMtls"].as_object() {
        for (port, m) in ports {
            let by = m["policy"]
                .as_str()
                .unwrap_or("default: no PeerAuthentication applies");
            println!(
                "  port {port:<6} {:<10} from {by}",
                m["mode"].as_str().unwrap_or("?")
            );
        }
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        println!("warning       {}", w.as_str().unwrap_or(""));
    }
    match r["problems"].as_array() {
        Some(p) if !p.is_empty() => {
            println!("problems");
            for x in p {
                println!("  ! {}", x.as_str().unwrap_or(""));
            }
        }
        _ => println!("status        OK"),
    }
}

fn human(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expires: i64, td: &str) -> (Value, Value) {
        let certs = serde_json::json!({
            "workload": {"spiffeId": format!("spiffe://{td}/ns/a/sa/b"), "expiresInSeconds": expires,
                          "notBefore": "x", "notAfter": "y", "chain": []},
            "trustBundles": {"cluster.local": [{"subject": "O=cluster.local"}]},
        });
        let dump = serde_json::json!({
            "trustDomain": "cluster.local", "trustDomainAliases": ["old.local"],
            "policies": {"mtlsByPort": {"8080": {"mode": "STRICT", "policy": "istio-system/default"}}},
        });
        (certs, dump)
    }

    #[test]
    fn healthy_sidecar_has_no_problems() {
        let (c, d) = sample(3600, "cluster.local");
        let r = build(&c, &d, 300);
        assert_eq!(r["problems"].as_array().unwrap().len(), 0, "{r}");
        assert_eq!(r["inboundMtls"]["8080"]["mode"], "STRICT");
        // An alias is as good as the local domain.
        let (c, d) = sample(3600, "old.local");
        assert!(build(&c, &d, 300)["problems"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn expiry_and_foreign_identity_are_reported() {
        let (c, d) = sample(100, "cluster.local");
        let r = build(&c, &d, 300);
        assert!(r["problems"].as_array().unwrap().is_empty(), "{r}");
        assert!(
            r["warnings"][0]
                .as_str()
                .unwrap()
                .contains("expires in 100s"),
            "{r}"
        );
        let (c, d) = sample(-5, "other.td");
        let p = build(&c, &d, 300)["problems"].clone();
        assert!(p[0].as_str().unwrap().contains("expired 5s ago"), "{p}");
        assert!(
            p[1].as_str().unwrap().contains("trust domain other.td"),
            "{p}"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(59), "59s");
        assert_eq!(human(61), "1m01s");
        assert_eq!(human(3 * 3600 + 120), "3h02m");
        assert_eq!(human(2 * 86400 + 3600), "2d01h");
        assert_eq!(human(0), "expired");
    }
}
