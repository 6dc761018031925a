//! A ServiceEntry checked as Istio's validating webhook would (`ValidateServiceEntry` in
//! pkg/config/validation), then turned into its parts: hosts, ports, addresses, inline
//! endpoints. Files on disk have no webhook, so a ServiceEntry Istio would refuse is reported
//! and left out, never half-used: a destination it would have described is then unknown, and
//! `outboundTrafficPolicy` decides, exactly as if it had not been applied.
//!
//! Checks (webhook parity): at least one host, none `*`, each a valid (wildcard) DNS name;
//! `addresses` are IPs or CIDRs, CIDRs only with NONE or STATIC resolution; port names are
//! DNS labels and unique, numbers 1-65535 and unique, protocols known; `workloadSelector` and
//! `endpoints` exclude each other; NONE takes no endpoints; STATIC endpoints are IPs or Unix
//! sockets (a Unix socket needs exactly one service port); DNS without endpoints needs hosts
//! that are not wildcards; endpoint `ports` must name a service port; several hosts need
//! HTTP or TLS ports unless the resolution is NONE (plain TCP cannot tell hosts apart).
//! `DYNAMIC_DNS` (ambient waypoints) is refused: trustmesh has no waypoint.

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;
use trustmesh_identity::TrustDomain;
use trustmesh_policy::{Notice, Problem};

use crate::crd::{LocationSpec, ResolutionSpec, ServiceEntrySpec};
use crate::entries::{self, Context};
use crate::model::{
    EndpointAddress, MeshLocation, Origin, Protocol, Resolution, ServicePort, Workload,
};
use crate::parse::Resource;

/// A valid ServiceEntry, in the registry's terms.
pub struct Checked {
    pub hosts: Vec<String>,
    pub addresses: Vec<IpNet>,
    pub ports: Vec<ServicePort>,
    pub location: MeshLocation,
    pub resolution: Resolution,
    pub endpoints: Vec<Workload>,
    pub selector: Option<BTreeMap<String, String>>,
}

/// Checks one ServiceEntry; `None` when it has an error (each is in `problems`).
pub fn check(
    r: &Resource<ServiceEntrySpec>,
    td: Option<&TrustDomain>,
    problems: &mut Vec<Problem>,
    notices: &mut Vec<Notice>,
) -> Option<Checked> {
    let before = problems.len();
    let spec = &r.spec;
    let at = r.location.at("spec");
    let resolution = match spec.resolution {
        ResolutionSpec::None => Resolution::None,
        ResolutionSpec::Static => Resolution::Static,
        ResolutionSpec::Dns => Resolution::Dns,
        ResolutionSpec::DnsRoundRobin => Resolution::DnsRoundRobin,
        ResolutionSpec::DynamicDns => {
            problems.push(
                Problem::new(at.at("resolution"), "DYNAMIC_DNS is not supported")
                    .hint("it serves ambient waypoints; use DNS with the hosts listed"),
            );
            Resolution::DynamicDns
        }
    };
    let hosts = hosts(r, problems);
    let addresses = addresses(r, resolution, problems);
    let ports = ports(r, problems);
    let mut endpoints = Vec::new();
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        problems.push(
            Problem::new(
                at.at("workloadSelector"),
                "only one of workloadSelector or endpoints can be set",
            )
            .hint("select WorkloadEntries by label, or list the endpoints inline, not both"),
        );
    }
    if resolution == Resolution::None && !spec.endpoints.is_empty() {
        problems.push(
            Problem::new(at.at("endpoints"), "no endpoints should be given for resolution NONE")
                .hint("with NONE connections go to the address the client asked for; use STATIC to list endpoints"),
        );
    }
    for (i, e) in spec.endpoints.iter().enumerate() {
        let cx = Context {
            origin: Origin::Inline {
                service_entry: r.name.clone(),
                index: i,
            },
            namespace: &r.namespace,
            at: at.at(format!("endpoints[{i}]")),
            trust_domain: td,
            pod: false,
            node: String::new(),
        };
        let Some(w) = entries::workload(e, cx, problems) else {
            continue;
        };
        endpoint_fits(&w, i, resolution, &ports, r, problems);
        endpoints.push(w);
    }
    if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && spec.endpoints.is_empty()
        && spec.workload_selector.is_none()
    {
        for (i, h) in spec.hosts.iter().enumerate() {
            if crate::host::is_wildcard(h) {
                problems.push(
                    Problem::new(
                        at.at(format!("hosts[{i}]")),
                        "hosts must not be wildcards for DNS resolution without endpoints",
                    )
                    .hint("the proxy resolves each host itself; list the hosts, or give endpoints"),
                );
            }
        }
    }
    if resolution != Resolution::None && spec.hosts.len() > 1 {
        if let Some(p) = ports
            .iter()
            .find(|p| !p.protocol.is_http() && !p.protocol.is_tls())
        {
            problems.push(
                Problem::new(at.at("hosts"), format!("several hosts with port {} ({}), which is neither HTTP nor TLS", p.number, protocol_name(p.protocol)))
                    .hint("plain TCP cannot tell hosts apart; use one ServiceEntry per host, or resolution NONE"),
            );
        }
    }
    if spec.export_to.iter().any(|e| e != "*") {
        notices.push(Notice {
            location: at.at("exportTo"),
            message: "exportTo is read but not enforced: every namespace sees this ServiceEntry"
                .into(),
        });
    }
    if problems[before..].iter().any(|p| !p.warning) {
        return None;
    }
    Some(Checked {
        hosts,
        addresses,
        ports,
        location: match spec.location {
            LocationSpec::MeshExternal => MeshLocation::MeshExternal,
            LocationSpec::MeshInternal => MeshLocation::MeshInternal,
        },
        resolution,
        endpoints,
        selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
    })
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Unspecified => "no protocol",
        p => p.as_str(),
    }
}

fn hosts(r: &Resource<ServiceEntrySpec>, problems: &mut Vec<Problem>) -> Vec<String> {
    let at = r.location.at("spec");
    if r.spec.hosts.is_empty() {
        problems.push(
            Problem::new(at.at("hosts"), "a ServiceEntry needs at least one host")
                .hint("name the service, e.g. httpbin.org or reviews.bookinfo.svc.cluster.local"),
        );
    }
    let mut out = Vec::new();
    for (i, h) in r.spec.hosts.iter().enumerate() {
        let why = if h == "*" {
            Some("`*` alone is not allowed".to_string())
        } else {
            crate::host::invalid(h)
        };
        match why {
            Some(why) => problems.push(
                Problem::new(
                    at.at(format!("hosts[{i}]")),
                    format!("invalid host \"{h}\": {why}"),
                )
                .hint("a DNS name, optionally starting with `*.`"),
            ),
            None => out.push(crate::host::normalize(h)),
        }
    }
    out
}

fn addresses(
    r: &Resource<ServiceEntrySpec>,
    resolution: Resolution,
    problems: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let at = r.location.at("spec");
    let mut out = Vec::new();
    for (i, a) in r.spec.addresses.iter().enumerate() {
        let net = match a.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => match a.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    problems.push(
                        Problem::new(
                            at.at(format!("addresses[{i}]")),
                            format!("\"{a}\" is not an IP address or CIDR"),
                        )
                        .hint("e.g. 10.0.0.5 or 10.0.0.0/24"),
                    );
                    continue;
                }
            },
        };
        let cidr = net.prefix_len() != net.max_prefix_len();
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            problems.push(
                Problem::new(
                    at.at(format!("addresses[{i}]")),
                    "CIDR addresses are allowed only for NONE or STATIC resolution",
                )
                .hint("give single addresses, or change the resolution"),
            );
        }
        out.push(net);
    }
    out
}

fn ports(r: &Resource<ServiceEntrySpec>, problems: &mut Vec<Problem>) -> Vec<ServicePort> {
    let at = r.location.at("spec");
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in r.spec.ports.iter().enumerate() {
        let at = at.at(format!("ports[{i}]"));
        let before = problems.len();
        if !is_dns_label(&p.name) {
            problems.push(
                Problem::new(
                    at.at("name"),
                    format!("port name \"{}\" is not a DNS label", p.name),
                )
                .hint("lower-case letters, digits and `-`, e.g. http or tcp-db"),
            );
        } else if !names.insert(p.name.clone()) {
            problems.push(
                Problem::new(
                    at.at("name"),
                    format!("port name \"{}\" is already defined", p.name),
                )
                .hint("port names must be unique"),
            );
        }
        let number = match u16::try_from(p.number) {
            Ok(n) if n > 0 => n,
            _ => {
                problems.push(
                    Problem::new(
                        at.at("number"),
                        format!("port {} is not between 1 and 65535", p.number),
                    )
                    .hint("give the port clients connect to"),
                );
                0
            }
        };
        if number > 0 && !numbers.insert(number) {
            problems.push(
                Problem::new(at.at("number"), format!("port {number} is already defined"))
                    .hint("port numbers must be unique"),
            );
        }
        let target_port = match p.target_port {
            0 => None,
            t => match u16::try_from(t) {
                Ok(t) => Some(t),
                Err(_) => {
                    problems.push(
                        Problem::new(
                            at.at("targetPort"),
                            format!("targetPort {t} is not between 1 and 65535"),
                        )
                        .hint("give the port the workloads listen on"),
                    );
                    None
                }
            },
        };
        let protocol = Protocol::parse(&p.protocol).unwrap_or_else(|| {
            problems.push(
                Problem::new(
                    at.at("protocol"),
                    format!("unsupported protocol \"{}\"", p.protocol),
                )
                .hint(
                    "one of HTTP, HTTPS, HTTP2, GRPC, GRPC-Web, TLS, TCP, MONGO, MYSQL, REDIS, UDP",
                ),
            );
            Protocol::Unspecified
        });
        if problems.len() == before {
            out.push(ServicePort {
                name: p.name.clone(),
                number,
                protocol,
                target_port,
            });
        }
    }
    out
}

/// Istio's `IsDNS1123Label`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether an inline endpoint suits the entry's resolution and ports.
fn endpoint_fits(
    w: &Workload,
    i: usize,
    resolution: Resolution,
    ports: &[ServicePort],
    r: &Resource<ServiceEntrySpec>,
    problems: &mut Vec<Problem>,
) {
    let at = r.location.at(format!("spec.endpoints[{i}]"));
    match (&w.address, resolution) {
        (EndpointAddress::Hostname(h), Resolution::Static) => problems.push(
            Problem::new(
                at.at("address"),
                format!("\"{h}\" is not an IP address, required for STATIC resolution"),
            )
            .hint("give an IP address, or use DNS resolution"),
        ),
        (EndpointAddress::Unix(_), Resolution::Dns | Resolution::DnsRoundRobin) => problems.push(
            Problem::new(
                at.at("address"),
                "a unix:// endpoint cannot be resolved by DNS",
            )
            .hint("use STATIC resolution for Unix sockets"),
        ),
        (EndpointAddress::Unix(_), _) if r.spec.ports.len() != 1 => problems.push(
            Problem::new(
                at.at("address"),
                "a unix:// endpoint needs exactly one service port",
            )
            .hint("list one port in spec.ports"),
        ),
        _ => {}
    }
    for name in w.ports.keys() {
        if !ports.iter().any(|p| &p.name == name) && r.spec.ports.iter().all(|p| &p.name != name) {
            problems.push(
                Problem::new(
                    at.at(format!("ports.{name}")),
                    format!("endpoint port \"{name}\" is not a port of the service entry"),
                )
                .hint("endpoint ports are keyed by the service port's name"),
            );
        }
    }
}
