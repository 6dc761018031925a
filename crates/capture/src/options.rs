//! What to capture, as typed values: the planner reads only this, and the CLI's job is to turn
//! flags into it. Defaults are Istio's (`tools/istio-iptables`: ports 15001, 15006, 15053, proxy
//! uid 1337 with the gid defaulting to the uid) with the sidecar injector's usual choices
//! (`*` inbound ports, `*` outbound ranges).
//!
//! The `parse_*` functions read the comma-list syntax istio-iptables takes (`*` for all, an
//! empty list for none), so a flag value and a test read the same way.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::family::Family;

/// The sidecar's outbound listener (Envoy's `virtualOutbound`).
pub const DEFAULT_PROXY_PORT: u16 = 15001;
/// The sidecar's inbound listener (Envoy's `virtualInbound`).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// The DNS proxy's port (istio-agent's DNS listener).
pub const DEFAULT_DNS_PORT: u16 = 15053;
/// The HBONE port (`--inbound-tunnel-port`): arriving tunnels go to the proxy's own listener
/// there, never through the inbound capture.
pub const DEFAULT_INBOUND_TUNNEL_PORT: u16 = 15008;
/// Istio's default uid for the proxy (`istio-proxy`).
pub const DEFAULT_PROXY_UID: u32 = 1337;

/// Destination ports: every one, or a list (which may be empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    List(Vec<u16>),
}

/// Destination networks: every one, or a list (which may be empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ranges {
    All,
    List(Vec<IpNet>),
}

/// Which DNS traffic to send to the DNS proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCapture {
    /// Where the DNS proxy listens (UDP and TCP).
    pub port: u16,
    pub servers: DnsServers,
}

/// DNS to every server (Istio's `--capture-all-dns`), or only to these (Istio reads them from
/// `/etc/resolv.conf`), so a local resolver the proxy itself forwards to is not captured again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsServers {
    All,
    List(Vec<IpAddr>),
}

/// Everything the planner needs; `Default` is a sidecar's usual capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Outbound TCP goes here.
    pub proxy_port: u16,
    /// Inbound TCP goes here.
    pub inbound_port: u16,
    /// The proxy's own traffic, recognized by owner, is never captured.
    pub proxy_uids: Vec<u32>,
    pub proxy_gids: Vec<u32>,
    /// Inbound destination ports to capture.
    pub inbound_ports: Ports,
    /// Inbound ports left alone; only read when `inbound_ports` is [`Ports::All`], as in Istio.
    pub inbound_ports_exclude: Vec<u16>,
    /// The proxy's HBONE port, left alone inbound as istio-iptables leaves it (`None`: none).
    pub inbound_tunnel_port: Option<u16>,
    /// Outbound destinations to capture.
    pub outbound_ranges: Ranges,
    /// Outbound destinations left alone (checked before any inclusion).
    pub outbound_ranges_exclude: Vec<IpNet>,
    /// Outbound destination ports captured whatever the destination address.
    pub outbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (TCP and UDP, checked first).
    pub outbound_ports_exclude: Vec<u16>,
    /// Interfaces whose traffic is never captured, either way.
    pub exclude_interfaces: Vec<String>,
    pub dns: Option<DnsCapture>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            proxy_port: DEFAULT_PROXY_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            proxy_uids: vec![DEFAULT_PROXY_UID],
            proxy_gids: vec![DEFAULT_PROXY_UID],
            inbound_ports: Ports::All,
            inbound_ports_exclude: Vec::new(),
            inbound_tunnel_port: Some(DEFAULT_INBOUND_TUNNEL_PORT),
            outbound_ranges: Ranges::All,
            outbound_ranges_exclude: Vec::new(),
            outbound_ports: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            exclude_interfaces: Vec::new(),
            dns: None,
        }
    }
}

impl Options {
    /// Refuses what would make a broken or unsafe rule set, with a sentence for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.proxy_uids.is_empty() && self.proxy_gids.is_empty() {
            return Err(
                "no proxy uid or gid: the sidecar's own connections would be captured \
                        and loop back into it; give --proxy-uid or --proxy-gid"
                    .into(),
            );
        }
        for (what, port) in [
            ("proxy port", self.proxy_port),
            ("inbound port", self.inbound_port),
            ("DNS port", self.dns.as_ref().map_or(1, |d| d.port)),
        ] {
            if port == 0 {
                return Err(format!("the {what} must be between 1 and 65535"));
            }
        }
        for name in &self.exclude_interfaces {
            check_interface(name)?;
        }
        Ok(())
    }
}

/// Splits comma lists the way istio-iptables does: items trimmed, empty items dropped, and
/// several values (a repeated flag) joined.
pub fn split<S: AsRef<str>>(values: &[S]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `*` (all) or ports; an empty list captures nothing.
pub fn parse_ports_or_all<S: AsRef<str>>(values: &[S]) -> Result<Ports, String> {
    let items = split(values);
    if items.iter().any(|i| i == "*") {
        return Ok(Ports::All);
    }
    Ok(Ports::List(parse_ports(&items)?))
}

/// Port numbers, 1 to 65535.
pub fn parse_ports<S: AsRef<str>>(values: &[S]) -> Result<Vec<u16>, String> {
    split(values)
        .iter()
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port (1 to 65535)")),
        })
        .collect()
}

/// `*` (all) or CIDRs; an empty list captures nothing.
pub fn parse_ranges_or_all<S: AsRef<str>>(values: &[S]) -> Result<Ranges, String> {
    let items = split(values);
    if items.iter().any(|i| i == "*") {
        return Ok(Ranges::All);
    }
    Ok(Ranges::List(parse_cidrs(&items)?))
}

/// CIDRs (`10.0.0.0/8`, `fd00::/8`); a bare address is that one host. Host bits are cleared,
/// as iptables itself would.
pub fn parse_cidrs<S: AsRef<str>>(values: &[S]) -> Result<Vec<IpNet>, String> {
    split(values)
        .iter()
        .map(|c| {
            if c == "*" {
                return Err("\"*\" cannot be excluded: that would capture nothing; \
                            give an empty list of ranges to capture instead"
                    .to_string());
            }
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{c:?} is not an IP range in CIDR form (10.0.0.0/8)"))
        })
        .collect()
}

/// User or group ids, as numbers (the kernel's owner match compares numbers).
pub fn parse_ids<S: AsRef<str>>(values: &[S]) -> Result<Vec<u32>, String> {
    split(values)
        .iter()
        .map(|i| {
            i.parse::<u32>()
                .map_err(|_| format!("{i:?} is not a numeric user or group id"))
        })
        .collect()
}

/// DNS server addresses.
pub fn parse_addrs<S: AsRef<str>>(values: &[S]) -> Result<Vec<IpAddr>, String> {
    split(values)
        .iter()
        .map(|a| {
            a.parse::<IpAddr>()
                .map_err(|_| format!("{a:?} is not an IP address"))
        })
        .collect()
}

/// The `nameserver` lines of a resolv.conf text, as Istio's agent reads them.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A link-local server may carry a zone (`fe80::1%eth0`); iptables takes no zone.
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect()
}

pub(crate) fn of_family(nets: &[IpNet], family: Family) -> Vec<IpNet> {
    nets.iter()
        .filter(|n| Family::of(&n.addr()) == family)
        .copied()
        .collect()
}

/// Interface names go into the rule text verbatim, so only what Linux allows in one.
fn check_interface(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':' && c != '"');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a network interface name"))
    }
}
