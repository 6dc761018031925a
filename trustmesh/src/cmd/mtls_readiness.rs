//! `trustmesh mtls-readiness`: before a PeerAuthentication goes from PERMISSIVE to STRICT, which
//! sources still reach each workload port in plaintext. It reads the sidecars' own counts
//! (`trustmesh_inbound_sources_total` on each admin `/metrics`: per app port, mTLS or not, and
//! the source — SPIFFE ID, else workload, else address), so the answer is what actually
//! arrived since each sidecar started, not what policy would allow.
//!
//! Exit codes (scripts gate the switch on them): 0 every port seen is ready (only mTLS
//! arrived), 1 some port still receives plaintext, 2 a sidecar could not be read.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

const FAMILY: &str = "trustmesh_inbound_sources_total";

/// Which sources still reach each workload port in plaintext (PERMISSIVE → STRICT readiness).
///
/// Exit status: 0 when every port seen received only mTLS (READY for STRICT), 1 when some port
/// still receives plaintext (NOT READY), 2 when a sidecar's admin endpoint could not be read.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 every port seen received only mTLS (READY for STRICT); 1 a port still receives plaintext (NOT READY); 2 a sidecar's admin endpoint could not be read."
)]
pub struct Args {
    /// A sidecar's admin address (`host:port`); repeat for every sidecar to look at.
    #[arg(long = "admin", value_name = "ADDR", required = true)]
    pub admins: Vec<String>,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

/// What one workload port received.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Port {
    pub workload: String,
    pub namespace: String,
    pub port: u16,
    /// Source → requests and connections, in plaintext.
    pub plaintext: BTreeMap<String, u64>,
    /// Source → requests and connections over mTLS.
    pub mtls: BTreeMap<String, u64>,
    pub ready: bool,
}

pub fn run(a: Args) -> ExitCode {
    let mut ports: BTreeMap<(String, String, u16), Port> = BTreeMap::new();
    let mut failed = false;
    for addr in &a.admins {
        match super::admin_client::get_text(addr, "/metrics", "text/plain") {
            Ok(text) => collect(&text, &mut ports),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    let ports: Vec<Port> = ports.into_values().collect();
    if !super::output::print(a.output.format, &ports) {
        print!("{}", text(&ports));
    }
    if failed {
        ExitCode::from(2)
    } else if ports.iter().all(|p| p.ready) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Adds the samples of one sidecar's exposition to `ports`.
pub fn collect(exposition: &str, ports: &mut BTreeMap<(String, String, u16), Port>) {
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(FAMILY).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let (Ok(port), Ok(n)) = (get("port").parse::<u16>(), value.trim().parse::<f64>()) else {
            continue;
        };
        let key = (
            get("destination_workload_namespace"),
            get("destination_workload"),
            port,
        );
        let p = ports.entry(key.clone()).or_insert_with(|| Port {
            namespace: key.0,
            workload: key.1,
            port,
            ready: true,
            ..Port::default()
        });
        let side = if get("connection_security_policy") == "mutual_tls" {
            &mut p.mtls
        } else {
            &mut p.plaintext
        };
        *side.entry(get("source")).or_default() += n as u64;
        p.ready = p.plaintext.is_empty();
    }
}

/// `k="v",...` with Prometheus' escapes (`\\`, `\"`, `\n`).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

fn text(ports: &[Port]) -> String {
    let mut out = String::new();
    if ports.is_empty() {
        out.push_str("no inbound traffic recorded yet on these sidecars\n");
    }
    for p in ports {
        let verdict = if p.ready {
            "READY for STRICT".to_string()
        } else {
            format!("NOT READY: {} plaintext source(s)", p.plaintext.len())
        };
        out.push_str(&format!(
            "{}.{} port {}: {verdict}\n",
            p.workload, p.namespace, p.port
        ));
        for (src, n) in &p.plaintext {
            out.push_str(&format!("  plaintext  {src}  ({n})\n"));
        }
        for (src, n) in &p.mtls {
            out.push_str(&format!("  mtls       {src}  ({n})\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_with_plaintext_are_not_ready() {
        let exposition = r#"# TYPE trustmesh_inbound_sources_total counter
trustmesh_inbound_sources_total{destination_workload="web",destination_workload_namespace="foo",port="8080",connection_security_policy="mutual_tls",source="spiffe://cluster.local/ns/foo/sa/client"} 5
trustmesh_inbound_sources_total{destination_workload="web",destination_workload_namespace="foo",port="8080",connection_security_policy="none",source="address 127.0.0.1"} 3
trustmesh_inbound_sources_total{destination_workload="web",destination_workload_namespace="foo",port="9000",connection_security_policy="mutual_tls",source="spiffe://x/ns/a \"q\""} 2
trustmesh_other{port="1"} 9
"#;
        let mut ports = BTreeMap::new();
        collect(exposition, &mut ports);
        let ports: Vec<Port> = ports.into_values().collect();
        assert_eq!(ports.len(), 2);
        assert!(!ports[0].ready);
        assert_eq!(ports[0].plaintext["address 127.0.0.1"], 3);
        assert_eq!(ports[0].mtls["spiffe://cluster.local/ns/foo/sa/client"], 5);
        assert!(ports[1].ready);
        assert_eq!(ports[1].mtls["spiffe://x/ns/a \"q\""], 2);
        let t = text(&ports);
        assert!(
            t.contains("web.foo port 8080: NOT READY: 1 plaintext source(s)"),
            "{t}"
        );
        assert!(t.contains("web.foo port 9000: READY for STRICT"), "{t}");
    }
}
