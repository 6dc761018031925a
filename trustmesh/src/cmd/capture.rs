//! `trustmesh capture`: install, remove and show the rules that send a workload's traffic
//! through its sidecar, what Istio's `istio-iptables` does in a pod's init container. Flags take
//! istio-iptables' long names and short letters where it has one, so an existing init
//! container's command line carries over; `--proxy-port` and `--inbound-port` are ours (with
//! Istio's `--envoy-port` and `--inbound-capture-port` as aliases).
//!
//! Exit codes: 0 done, 1 the rules could not be read or applied (reason printed), 2 invalid
//! flags.

use std::process::ExitCode;

use trustmesh_capture::ops::{self, Step};
use trustmesh_capture::options::{
    self, DEFAULT_DNS_PORT, DEFAULT_INBOUND_PORT, DEFAULT_PROXY_PORT, DEFAULT_PROXY_UID,
};
use trustmesh_capture::{iptables, CaptureError, DnsCapture, DnsServers, Options};

#[derive(clap::Subcommand)]
pub enum CaptureCommand {
    /// Install the capture rules in this network namespace (run inside the workload's, as root),
    /// replacing any installed before.
    Install(Box<InstallArgs>),
    /// Remove every chain and rule `install` made, and nothing else.
    Remove(RemoveArgs),
    /// Print the capture rules installed now (ours only), as iptables-save shows them.
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Port of the sidecar's outbound listener: outbound TCP is redirected here.
    #[arg(
        short = 'p',
        long,
        visible_alias = "envoy-port",
        value_name = "PORT",
        default_value_t = DEFAULT_PROXY_PORT
    )]
    pub proxy_port: u16,
    /// Port of the sidecar's inbound listener: inbound TCP is redirected here.
    #[arg(
        short = 'z',
        long,
        visible_alias = "inbound-capture-port",
        value_name = "PORT",
        default_value_t = DEFAULT_INBOUND_PORT
    )]
    pub inbound_port: u16,
    /// The HBONE port (HTTP/2 CONNECT over mTLS), never captured inbound: the sidecar listens
    /// there itself. Empty for none.
    #[arg(short = 'e', long, value_name = "PORT", default_value = "15008")]
    pub inbound_tunnel_port: String,
    /// User id(s) of the proxy: their traffic is never captured (except to the workload's own
    /// address over loopback, which goes to the inbound port). Comma list, repeatable.
    /// Default 1337.
    #[arg(short = 'u', long, value_name = "UID,...", value_delimiter = ',')]
    pub proxy_uid: Vec<String>,
    /// Group id(s) of the proxy, treated like --proxy-uid. Comma list, repeatable. Default: the
    /// --proxy-uid values.
    #[arg(short = 'g', long, value_name = "GID,...", value_delimiter = ',')]
    pub proxy_gid: Vec<String>,
    /// Inbound ports to capture: a comma list, "*" for all, "" for none.
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        visible_alias = "inbound-ports",
        value_name = "PORTS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub inbound_ports: Vec<String>,
    /// Inbound ports never captured (only with --istio-inbound-ports "*"). Comma list.
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        visible_alias = "inbound-ports-exclude",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub inbound_ports_exclude: Vec<String>,
    /// Outbound destinations to capture: CIDRs (comma list), "*" for all, "" for none.
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        visible_alias = "outbound-ranges",
        value_name = "CIDRS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub outbound_ranges: Vec<String>,
    /// Outbound destinations never captured: CIDRs, comma list.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        visible_alias = "outbound-ranges-exclude",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub outbound_ranges_exclude: Vec<String>,
    /// Outbound ports always captured, whatever the destination. Comma list.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        visible_alias = "outbound-ports",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub outbound_ports: Vec<String>,
    /// Outbound ports never captured (TCP and UDP). Comma list.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        visible_alias = "outbound-ports-exclude",
        value_name = "PORTS",
        value_delimiter = ','
    )]
    pub outbound_ports_exclude: Vec<String>,
    /// Network interfaces whose traffic is never captured, either way. Comma list.
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        visible_alias = "exclude-interfaces",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub exclude_interfaces: Vec<String>,
    /// Capture the workload's DNS (UDP and TCP port 53) to --dns-port, for the servers in
    /// --dns-servers (default: the nameservers of /etc/resolv.conf) or all with
    /// --capture-all-dns. The proxy's own DNS is never captured.
    #[arg(long)]
    pub redirect_dns: bool,
    /// With --redirect-dns: capture DNS to every server, not only the listed ones.
    #[arg(long, requires = "redirect_dns")]
    pub capture_all_dns: bool,
    /// With --redirect-dns: the DNS servers whose traffic is captured. Comma list.
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        requires = "redirect_dns",
        conflicts_with = "capture_all_dns"
    )]
    pub dns_servers: Vec<String>,
    /// Port of the DNS proxy (UDP and TCP).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_DNS_PORT)]
    pub dns_port: u16,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 shown (installed or not); 1 iptables-save failed; 2 invalid options."
)]
pub struct ShowArgs {
    /// IPv4 only: leave ip6tables alone.
    #[arg(long)]
    pub ipv4_only: bool,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

#[derive(clap::Args)]
pub struct Common {
    /// Print the exact iptables-restore input (per family) instead of applying it.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// IPv4 only: leave ip6tables alone (IPv6 is skipped anyway when the kernel has none).
    #[arg(long)]
    pub ipv4_only: bool,
}

pub fn run(c: CaptureCommand) -> ExitCode {
    let ipt = iptables::Iptables::system();
    match c {
        CaptureCommand::Install(a) => {
            let opts = match options_from(&a) {
                Ok(o) => o,
                Err(e) => return super::fail(2, format!("invalid capture options: {e}")),
            };
            let families = families(a.common.ipv4_only);
            finish(
                "installed",
                a.common.dry_run,
                ops::install(&ipt, &opts, &families, a.common.dry_run),
            )
        }
        CaptureCommand::Remove(a) => {
            let families = families(a.common.ipv4_only);
            finish(
                "removed",
                a.common.dry_run,
                ops::remove(&ipt, &families, a.common.dry_run),
            )
        }
        CaptureCommand::Show(a) => {
            match ops::show(&ipt, &families(a.ipv4_only)) {
                Ok(shown) => {
                    let doc: std::collections::BTreeMap<String, serde_json::Value> = shown
                    .iter()
                    .map(|(family, text)| {
                        let rules: Vec<&str> = text.lines().collect();
                        (family.to_string(), serde_json::json!({ "installed": !rules.is_empty(), "rules": rules }))
                    })
                    .collect();
                    if super::output::print(a.output.format, &doc) {
                        return ExitCode::SUCCESS;
                    }
                    for (family, text) in shown {
                        if text.is_empty() {
                            println!("# {family}: no capture rules installed");
                        } else {
                            println!("# {family}");
                            print!("{text}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn families(ipv4_only: bool) -> Vec<trustmesh_capture::Family> {
    if !ipv4_only && !iptables::ipv6_available() {
        eprintln!("note: this kernel has no IPv6; only IPv4 rules are handled");
    }
    ops::families(ipv4_only)
}

/// Prints what was done (or, for a dry run, the restore input) and picks the exit code.
fn finish(done: &str, dry_run: bool, result: Result<Vec<Step>, CaptureError>) -> ExitCode {
    let steps = match result {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    for step in &steps {
        let family = step.family;
        match (&step.script, dry_run) {
            (None, _) => println!("{family}: nothing of ours installed"),
            (Some(script), true) => {
                if step.assumed_clean {
                    eprintln!(
                        "note: the current {family} rules could not be read (not root?); \
                         this is the input for a namespace without our rules"
                    );
                }
                println!("# {family}: {} --noflush", family.restore_tool());
                print!("{script}");
            }
            (Some(_), false) => println!("{family}: {done}"),
        }
    }
    ExitCode::SUCCESS
}

fn fail(e: CaptureError) -> ExitCode {
    let code = if matches!(e, CaptureError::Invalid(_)) {
        2
    } else {
        1
    };
    super::fail(code, e)
}

/// The flags as [`Options`], with istio-iptables' defaults for what was not given.
fn options_from(a: &InstallArgs) -> Result<Options, String> {
    let mut proxy_uids =
        options::parse_ids(&a.proxy_uid).map_err(|e| format!("--proxy-uid: {e}"))?;
    if proxy_uids.is_empty() {
        proxy_uids = vec![DEFAULT_PROXY_UID];
    }
    let mut proxy_gids =
        options::parse_ids(&a.proxy_gid).map_err(|e| format!("--proxy-gid: {e}"))?;
    if proxy_gids.is_empty() {
        proxy_gids = proxy_uids.clone();
    }
    let dns = if a.redirect_dns {
        Some(DnsCapture {
            port: a.dns_port,
            servers: dns_servers(a)?,
        })
    } else {
        None
    };
    Ok(Options {
        proxy_port: a.proxy_port,
        inbound_port: a.inbound_port,
        inbound_tunnel_port: match a.inbound_tunnel_port.trim() {
            "" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("--inbound-tunnel-port: {p:?} is not a port"))?,
            ),
        },
        proxy_uids,
        proxy_gids,
        inbound_ports: options::parse_ports_or_all(&a.inbound_ports)
            .map_err(|e| format!("--istio-inbound-ports: {e}"))?,
        inbound_ports_exclude: options::parse_ports(&a.inbound_ports_exclude)
            .map_err(|e| format!("--istio-local-exclude-ports: {e}"))?,
        outbound_ranges: options::parse_ranges_or_all(&a.outbound_ranges)
            .map_err(|e| format!("--istio-service-cidr: {e}"))?,
        outbound_ranges_exclude: options::parse_cidrs(&a.outbound_ranges_exclude)
            .map_err(|e| format!("--istio-service-exclude-cidr: {e}"))?,
        outbound_ports: options::parse_ports(&a.outbound_ports)
            .map_err(|e| format!("--istio-outbound-ports: {e}"))?,
        outbound_ports_exclude: options::parse_ports(&a.outbound_ports_exclude)
            .map_err(|e| format!("--istio-local-outbound-ports-exclude: {e}"))?,
        exclude_interfaces: options::split(&a.exclude_interfaces),
        dns,
    })
}

/// `--capture-all-dns`, `--dns-servers`, or the nameservers of /etc/resolv.conf, as Istio's
/// agent reads them.
fn dns_servers(a: &InstallArgs) -> Result<DnsServers, String> {
    if a.capture_all_dns {
        return Ok(DnsServers::All);
    }
    let given = options::parse_addrs(&a.dns_servers).map_err(|e| format!("--dns-servers: {e}"))?;
    if !given.is_empty() {
        return Ok(DnsServers::List(given));
    }
    const RESOLV_CONF: &str = "/etc/resolv.conf";
    const GIVE: &str = "give --dns-servers or --capture-all-dns";
    let text = std::fs::read_to_string(RESOLV_CONF).map_err(|e| {
        format!("--redirect-dns: cannot read {RESOLV_CONF} for the DNS servers ({e}); {GIVE}")
    })?;
    let found = options::resolv_conf_servers(&text);
    if found.is_empty() {
        return Err(format!(
            "--redirect-dns: {RESOLV_CONF} names no nameserver; {GIVE}"
        ));
    }
    Ok(DnsServers::List(found))
}
