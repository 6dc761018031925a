//! `trustmesh validate` and `trustmesh authz check`: thin wiring over `trustmesh_policy`, and
//! over `trustmesh_registry` for the networking kinds (WorkloadEntry, ServiceEntry,
//! DestinationRule) kept in the same files: `validate` reports both crates' problems one way,
//! and `authz check` can name a request's source or destination by a WorkloadEntry.
//!
//! Exit codes: `validate` 0 clean / 1 problems found / 2 unreadable input; `authz check` 0 when
//! the request was evaluated (whatever the decision) / 2 on bad input, so scripts can tell
//! "denied" from "could not evaluate" by the JSON, not by guessing at the exit code.
//!
//! Invalid resources do not stop `authz check`: it evaluates with them enforced fail-closed,
//! exactly as the proxy does, and lists them (`invalidResources` in JSON), so the answer is the
//! one the data plane would give.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use trustmesh_policy::{
    load, normalize, validate as validate_sources, InvalidResource, MeshConfig, PolicySet, Request,
    Verdict,
};
use trustmesh_registry::{Options as RegistryOptions, Registry};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Security policies and the service registry's kinds (WorkloadEntry, ServiceEntry, DestinationRule) are checked together.\nExit status: 0 clean, 1 problems found (warnings included), 2 unreadable input."
)]
pub struct ValidateArgs {
    /// Policy YAML file or directory (repeatable); multi-document files and `kind: List` work.
    #[arg(long = "config", required = true, value_name = "DIR|FILE")]
    pub config: Vec<PathBuf>,
    /// Istio mesh config (trustDomain, trustDomainAliases, rootNamespace, extensionProviders).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuthzCommand {
    /// Evaluate one request (JSON) against the policies and explain the decision.
    Check(CheckArgs),
}

use super::output::Format;

const REQUEST_HELP: &str = r#"The request is JSON (source.principal absent = plaintext peer, http absent = TCP,
auth absent = no valid JWT):
  {"destination": {"namespace": "prod", "labels": {"app": "reviews"}, "ip": "10.0.0.2", "port": 9080},
   "source": {"principal": "spiffe://cluster.local/ns/prod/sa/frontend", "ip": "10.0.0.1", "remoteIp": "10.0.0.1"},
   "connection": {"sni": "reviews.prod"},
   "http": {"method": "GET", "path": "/api/v1", "host": "reviews:9080", "headers": {"x-token": "a"}},
   "auth": {"principal": "https://issuer/sub", "audiences": ["a"], "presenter": "p", "claims": {"groups": ["x"]}}}
Exit status: 0 when evaluated (whatever the decision), 2 on bad input."#;

#[derive(clap::Args, Debug)]
#[command(after_help = REQUEST_HELP)]
pub struct CheckArgs {
    /// Policy YAML file or directory (repeatable).
    #[arg(
        long = "config",
        required_unless_present = "admin",
        value_name = "DIR|FILE"
    )]
    pub config: Vec<PathBuf>,
    #[arg(long, value_name = "FILE", conflicts_with = "admin")]
    pub mesh: Option<PathBuf>,
    /// Ask a running sidecar instead: evaluate against exactly the policies and mesh config it
    /// has loaded (its admin address). The request's destination defaults to that sidecar's
    /// workload and first inbound port.
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    pub admin: Option<String>,
    /// Request description as JSON, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub request: String,
    /// The request comes from this WorkloadEntry (`namespace/name`, from the --config files):
    /// `source.principal` becomes its identity (its serviceAccount in the mesh's trust domain),
    /// `source.ip` its address unless the request gives one.
    #[arg(long, value_name = "NS/NAME", conflicts_with = "admin")]
    pub from_workload_entry: Option<String>,
    /// The request goes to this WorkloadEntry: `destination.namespace` and `labels` become its
    /// own (the request may leave them out), `destination.ip` its address unless given.
    #[arg(long, value_name = "NS/NAME", conflicts_with = "admin")]
    pub to_workload_entry: Option<String>,
    /// Output format (JSON by default, as this command has always printed).
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Json)]
    pub output: Format,
}

/// Loads the mesh config; `Err` carries the exit code and is already reported.
fn mesh(path: Option<&Path>) -> Result<MeshConfig, (u8, String)> {
    let Some(path) = path else {
        return Ok(MeshConfig::default());
    };
    match load::read_mesh(path) {
        Err(e) => Err((2, e.to_string())),
        Ok(Err(p)) => Err((if p.unreadable { 2 } else { 1 }, p.to_string())),
        Ok(Ok(m)) => {
            // The proxy builds its ext_authz providers and its access log format with this
            // same code, so what it would refuse is refused here too.
            trustmesh_proxy::extauthz::providers(&m)
                .map_err(|e| (1, format!("{}: {e:#}", path.display())))?;
            trustmesh_proxy::accesslog::format::Format::from_mesh(&m)
                .map_err(|e| (1, format!("{}: accessLogFormat: {e}", path.display())))?;
            Ok(m)
        }
    }
}

pub fn validate(a: ValidateArgs) -> ExitCode {
    let mesh = match mesh(a.mesh.as_deref()) {
        Ok(m) => m,
        Err((code, e)) => return super::fail(code, e),
    };
    let sources = match load::read_paths(&a.config) {
        Ok(s) => s,
        Err(e) => return super::fail(2, e),
    };
    let report = validate_sources(&sources, &mesh);
    let registry = trustmesh_registry::validate(&sources, &mesh, &RegistryOptions::default());
    // The policy reader skips the registry's kinds with a notice, and both readers report the
    // same trouble with the text around the objects: say each thing once.
    let notices = report
        .notices
        .iter()
        .filter(|n| !registry.handled.contains(&n.location))
        .chain(&registry.notices);
    let notices: Vec<String> = notices.map(|n| n.to_string()).collect();
    let problems: Vec<&trustmesh_policy::Problem> = report
        .problems
        .iter()
        .chain(
            registry
                .problems
                .iter()
                .filter(|p| !report.problems.contains(p)),
        )
        .collect();
    let structured = serde_json::json!({
        "files": sources.len(),
        "counts": {
            "AuthorizationPolicy": report.authorization_policies,
            "PeerAuthentication": report.peer_authentications,
            "RequestAuthentication": report.request_authentications,
            "WorkloadEntry": registry.workload_entries,
            "ServiceEntry": registry.service_entries,
            "DestinationRule": registry.destination_rules,
        },
        "problems": problems.iter().map(|p| serde_json::json!({
            "problem": p.to_string(),
            "unreadable": p.unreadable,
        })).collect::<Vec<_>>(),
        "failClosed": report.invalid.iter().map(|i| i.summary()).collect::<Vec<_>>(),
        "notices": notices,
    });
    if !super::output::print(a.output.format, &structured) {
        for n in &notices {
            eprintln!("note: {n}");
        }
        for p in &problems {
            println!("{p}");
        }
        for i in &report.invalid {
            println!("fail-closed: {}", i.summary());
        }
    }
    let summary = format!(
        "{} file(s): {} AuthorizationPolicy, {} PeerAuthentication, {} RequestAuthentication; {} WorkloadEntry, {} ServiceEntry, {} DestinationRule; {} problem(s); {} resource(s) enforced fail-closed",
        sources.len(),
        report.authorization_policies,
        report.peer_authentications,
        report.request_authentications,
        registry.workload_entries,
        registry.service_entries,
        registry.destination_rules,
        problems.len(),
        report.invalid.len()
    );
    if a.output.format == Format::Text {
        eprintln!("{summary}");
    }
    if problems.iter().any(|p| p.unreadable) {
        ExitCode::from(2)
    } else if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn authz(c: AuthzCommand) -> ExitCode {
    match c {
        AuthzCommand::Check(a) => check(a),
    }
}

/// Reads the request JSON; fields of `destination` it leaves out are taken from `defaults`
/// (used with `--admin`, where the destination is the sidecar's own workload).
fn read_request(src: &str, defaults: &serde_json::Value) -> Result<Request, String> {
    let text = if src == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(src).map_err(|e| format!("{src}: cannot read: {e}"))?
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{src}: invalid request JSON: {e}"))?;
    if let (Some(defaults), Some(req)) = (defaults.as_object(), value.as_object_mut()) {
        let dest = req
            .entry("destination")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(dest) = dest.as_object_mut() {
            for (k, v) in defaults {
                if !v.is_null() {
                    dest.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    serde_json::from_value(value).map_err(|e| {
        format!("{src}: invalid request JSON: {e} (hint: see `trustmesh authz check --help`; fields: destination{{namespace,labels,ip,port}}, source{{principal,ip,remoteIp}}, connection{{sni}}, http{{method,path,host,headers}}, auth{{principal,audiences,presenter,claims}})")
    })
}

fn check(a: CheckArgs) -> ExitCode {
    let named = match Named::load(&a) {
        Ok(n) => n,
        Err(e) => return super::fail(2, e),
    };
    let (set, defaults) = match &a.admin {
        Some(addr) => match from_sidecar(addr) {
            Ok(x) => x,
            Err(e) => return super::fail(2, e),
        },
        None => match from_files(&a, &named.handled) {
            Ok(set) => (set, named.destination_defaults()),
            Err(e) => return super::fail(2, e),
        },
    };
    let mut req = match read_request(&a.request, &defaults) {
        Ok(r) => r,
        Err(e) => return super::fail(2, e),
    };
    named.apply(&mut req);
    // The sidecar normalizes (or refuses) the request before any policy sees it; so do we, with
    // the same code and the mesh's mode, so the answer here is the sidecar's.
    let mode = set.mesh().path_normalization.normalization;
    let original = match normalize::http_request(&mut req, mode) {
        Ok(original) => original,
        Err(refusal) => return print_refusal(a.output, &req, refusal),
    };
    let d = set.evaluate(&req);
    let invalid = set.invalid_resources();
    match a.output {
        Format::Json | Format::Yaml => {
            let mut json = match serde_json::to_value(&d) {
                Ok(v) => v,
                Err(e) => return super::fail(2, e),
            };
            if let Some(obj) = json.as_object_mut() {
                if let Some(http) = &req.http {
                    let mut n = serde_json::json!({ "mode": mode.as_str(), "path": http.path });
                    if let Some(o) = &original {
                        n["originalPath"] = serde_json::json!(o);
                    }
                    obj.insert("normalization".into(), n);
                }
                if let Ok(list) = serde_json::to_value(invalid) {
                    obj.insert("invalidResources".into(), list);
                }
            }
            super::output::print(a.output, &json);
        }
        Format::Text => {
            if let (Some(o), Some(http)) = (&original, &req.http) {
                println!("path normalized ({}): {o} -> {}", mode.as_str(), http.path);
            }
            print!("{}", text(&req, &d, invalid))
        }
    }
    ExitCode::SUCCESS
}

/// A request the sidecar refuses before policy (400, or 405 for CONNECT): reported as a DENY
/// with the status and the reason.
fn print_refusal(output: Format, req: &Request, refusal: normalize::Rejection) -> ExitCode {
    let (method, path) = req
        .http
        .as_ref()
        .map(|h| (h.method.as_str(), h.path.as_str()))
        .unwrap_or_default();
    let json = serde_json::json!({
        "decision": "DENY",
        "reason": format!("refused before policy: {refusal}"),
        "refusedBeforePolicy": { "status": refusal.status(), "reason": refusal.label() },
        "policies": [],
    });
    if !super::output::print(output, &json) {
        println!(
            "DENY: HTTP {method} {path} is refused with {} before any policy: {refusal}",
            refusal.status()
        );
    }
    ExitCode::SUCCESS
}

/// The WorkloadEntries `--from-workload-entry` and `--to-workload-entry` name, read by the
/// service registry from the same `--config` files as the policies.
#[derive(Default)]
struct Named {
    source: Option<trustmesh_registry::Workload>,
    destination: Option<trustmesh_registry::Workload>,
    /// The objects the registry read: the policy loader's "skipped" notices for them are noise.
    handled: Vec<trustmesh_policy::Location>,
}

impl Named {
    fn load(a: &CheckArgs) -> Result<Named, String> {
        if a.from_workload_entry.is_none() && a.to_workload_entry.is_none() {
            return Ok(Named::default());
        }
        let mesh = mesh(a.mesh.as_deref()).map_err(|(_, e)| e)?;
        let (registry, report) = Registry::load(&a.config, &mesh, &RegistryOptions::default())
            .map_err(|e| e.to_string())?;
        let find = |flag: &str, value: &Option<String>| -> Result<_, String> {
            let Some(v) = value else { return Ok(None) };
            let Some((namespace, name)) = v.split_once('/') else {
                return Err(format!("--{flag}: expected namespace/name, got \"{v}\""));
            };
            let who = trustmesh_registry::SelfRef::Entry { namespace, name };
            match registry.identify(who) {
                Ok(w) => Ok(Some(w.clone())),
                Err(e) => Err(format!("--{flag}: {e} in the --config files (hint: `trustmesh validate` reports entries it could not read)")),
            }
        };
        Ok(Named {
            source: find("from-workload-entry", &a.from_workload_entry)?,
            destination: find("to-workload-entry", &a.to_workload_entry)?,
            handled: report.handled,
        })
    }

    /// What the request's destination may leave out.
    fn destination_defaults(&self) -> serde_json::Value {
        match &self.destination {
            Some(w) => serde_json::json!({ "namespace": w.namespace, "labels": w.labels }),
            None => serde_json::Value::Null,
        }
    }

    fn apply(&self, req: &mut Request) {
        let ip = |w: &trustmesh_registry::Workload| match w.address {
            trustmesh_registry::EndpointAddress::Ip(ip) => Some(ip),
            _ => None,
        };
        if let Some(w) = &self.source {
            req.source.principal = w.identity.as_ref().map(|id| id.to_string());
            req.source.ip = req.source.ip.or(ip(w));
        }
        if let Some(w) = &self.destination {
            req.destination.namespace = w.namespace.clone();
            req.destination.labels = w.labels.clone();
            req.destination.ip = req.destination.ip.or(ip(w));
        }
    }
}

fn from_files(a: &CheckArgs, quiet: &[trustmesh_policy::Location]) -> Result<PolicySet, String> {
    let mesh = mesh(a.mesh.as_deref()).map_err(|(_, e)| e)?;
    match PolicySet::load(&a.config, &mesh) {
        Ok((set, notices)) => {
            for n in notices.iter().filter(|n| !quiet.contains(&n.location)) {
                eprintln!("note: {n}");
            }
            for i in set.invalid_resources() {
                eprintln!("fail-closed: {}", i.summary());
            }
            Ok(set)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Rebuilds the policy set a running sidecar has loaded, from its `/config_dump`: the same
/// documents and mesh config, evaluated by the same engine, so the answer is the sidecar's.
/// Returns it with the destination defaults (the sidecar's workload and first inbound port).
fn from_sidecar(addr: &str) -> Result<(PolicySet, serde_json::Value), String> {
    let loaded = super::sidecar::Loaded::fetch(addr)?;
    let set = loaded.policies(&loaded.mesh)?;
    let dump = &loaded.dump;
    let port = dump["config"]["inbound"][0]["targetPort"].clone();
    let defaults = serde_json::json!({
        "namespace": dump["policies"]["workload"]["namespace"],
        "labels": dump["policies"]["workload"]["labels"],
        "port": port,
    });
    Ok((set, defaults))
}

/// A short explanation a person can act on: decision, why, the mTLS mode, each policy, then
/// the resources enforced fail-closed.
fn text(req: &Request, d: &trustmesh_policy::Decision, invalid: &[InvalidResource]) -> String {
    let mut out = String::new();
    let verdict = match &d.decision {
        Verdict::Custom { provider, .. } => format!("CUSTOM (external authorizer {provider:?})"),
        v => v.as_str().to_string(),
    };
    let what = match &req.http {
        Some(h) => format!("HTTP {} {} (host {:?})", h.method, h.path, h.host),
        None => "TCP connection".to_string(),
    };
    let from = req
        .source
        .principal
        .as_deref()
        .unwrap_or("a plaintext peer");
    let labels: Vec<String> = req
        .destination
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.push_str(&format!(
        "{verdict}: {what} from {from} to namespace {} ({}) port {}\n",
        req.destination.namespace,
        if labels.is_empty() {
            "no labels".to_string()
        } else {
            labels.join(",")
        },
        req.destination.port
    ));
    out.push_str(&format!("  why: {}\n", d.reason));
    if let Some(m) = d.mtls_mode {
        let by = d
            .mtls_policy
            .as_deref()
            .map_or("default".to_string(), |p| format!("PeerAuthentication {p}"));
        out.push_str(&format!("  mTLS: {} ({by})\n", m.as_str()));
    }
    if d.policies.is_empty() {
        out.push_str("  no AuthorizationPolicy applies to this workload\n");
    } else {
        out.push_str("  policies:\n");
        for p in &d.policies {
            let mark = if p.matched { "✓" } else { "✗" };
            let dry = if p.dry_run {
                " [dry-run, not enforced]"
            } else {
                ""
            };
            let prov = p
                .provider
                .as_deref()
                .map(|x| format!(" provider={x}"))
                .unwrap_or_default();
            let fc = p
                .fail_closed
                .as_deref()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            out.push_str(&format!(
                "    {mark} {} {}{prov}{dry}{fc}: {}\n",
                p.action.as_str(),
                p.name,
                p.reason
            ));
        }
    }
    if !invalid.is_empty() {
        out.push_str(
            "  invalid resources (enforced fail-closed, the rest evaluated as written):\n",
        );
        for i in invalid {
            out.push_str(&format!("    ! {}\n", i.summary()));
        }
    }
    out
}
