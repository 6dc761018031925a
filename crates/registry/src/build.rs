//! Building a [`Registry`] from source texts: parse, check each resource as Istio's webhook
//! would, turn ServiceEntry hosts into services and WorkloadEntries into workloads, attach
//! endpoints, allocate VIPs, and build every index once, so the questions asked per connection
//! are hash lookups. Kept apart from `registry` so the queries read on their own.

use std::collections::HashMap;

use trustmesh_identity::TrustDomain;
use trustmesh_policy::load::SourceText;
use trustmesh_policy::{Location, MeshConfig, Problem};

use crate::addr::AddressIndex;
use crate::alloc::{self, Candidate};
use crate::entries::{self, Context};
use crate::model::{EndpointAddress, Origin, Resolution, Service, TlsMode, Workload};
use crate::names::NameIndex;
use crate::options::Options;
use crate::parse::{self, Parsed};
use crate::registry::Registry;
use crate::report::Report;
use crate::rule_index::RuleIndex;
use crate::rules;
use crate::services;

/// Parses, checks and indexes; returns the registry even when problems were found (resources
/// with errors are left out, or for DestinationRules stand in failing closed).
pub(crate) fn build(
    sources: &[SourceText],
    mesh: &MeshConfig,
    options: &Options,
) -> (Registry, Report) {
    let mut parsed = Parsed::default();
    for s in sources {
        parse::parse_text(&s.file, &s.text, &mut parsed);
    }
    let mut report = Report {
        workload_entries: parsed.counts[0],
        service_entries: parsed.counts[1],
        destination_rules: parsed.counts[2],
        ..Report::default()
    };
    let mut reg = Registry {
        options: options.clone(),
        outbound: mesh.outbound_traffic_policy.mode,
        h2_upgrade: mesh.h2_upgrade_policy,
        root_namespace: mesh.root_namespace.clone(),
        ..Registry::default()
    };
    reg.trust_domain = match TrustDomain::parse(&mesh.trust_domain) {
        Ok(td) => Some(td),
        Err(e) => {
            report.problems.push(
                Problem::new(
                    Location::new("(mesh config)", 1, "trustDomain"),
                    format!("no workload identity can be made: {e}"),
                )
                .hint("set meshConfig.trustDomain to a bare name such as cluster.local"),
            );
            None
        }
    };
    workload_entries(&parsed, &mut reg, &mut report);
    service_entries(&parsed, &mut reg, &mut report);
    allocate(&mut reg, &mut report);
    index(&mut reg);
    destination_rules(&parsed, &mut reg, &mut report);
    report.services = reg.services.len();
    report.problems.splice(0..0, parsed.problems);
    report.notices.splice(0..0, parsed.notices);
    report.handled = parsed.handled;
    (reg, report)
}

fn workload_entries(parsed: &Parsed, reg: &mut Registry, report: &mut Report) {
    for r in &parsed.workload_entries {
        let cx = Context {
            origin: Origin::WorkloadEntry(r.name.clone()),
            namespace: &r.namespace,
            at: r.location.at("spec"),
            trust_domain: reg.trust_domain.as_ref(),
            pod: r.pod,
            node: r.node.clone(),
        };
        let Some(w) = entries::workload(&r.spec, cx, &mut report.problems) else {
            continue;
        };
        let by_name = reg.entries.entry(r.namespace.clone()).or_default();
        if by_name.contains_key(&r.name) {
            continue; // a duplicate, already reported; the first one counts
        }
        by_name.insert(r.name.clone(), reg.workloads.len() as u32);
        reg.workloads.push(w);
    }
}

fn service_entries(parsed: &Parsed, reg: &mut Registry, report: &mut Report) {
    let mut declared: HashMap<(String, String), Location> = HashMap::new();
    for r in &parsed.service_entries {
        let checked = services::check(
            r,
            reg.trust_domain.as_ref(),
            &mut report.problems,
            &mut report.notices,
        );
        let Some(c) = checked else { continue };
        // The workloads behind every host of this entry.
        let mut members: Vec<u32> = Vec::new();
        for w in c.endpoints {
            members.push(reg.workloads.len() as u32);
            reg.workloads.push(w);
        }
        if let Some(selector) = &c.selector {
            let mut selected: Vec<u32> = reg
                .entries
                .get(&r.namespace)
                .into_iter()
                .flat_map(|m| m.values().copied())
                .filter(|i| {
                    let w = &reg.workloads[*i as usize];
                    selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
                })
                .collect();
            selected.sort_unstable();
            members.extend(selected);
        }
        let dns_hosts = matches!(c.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
            && r.spec.endpoints.is_empty()
            && c.selector.is_none();
        for host in &c.hosts {
            let key = (r.namespace.clone(), host.clone());
            if let Some(first) = declared.get(&key) {
                report.problems.push(
                    Problem::new(r.location.at("spec.hosts"), format!("host {host} is also declared in namespace {} by the ServiceEntry at {first}", r.namespace))
                        .hint("the first declaration answers DNS and picks the DestinationRule; declare each host once per namespace")
                        .warning(),
                );
            } else {
                declared.insert(key, r.location.clone());
            }
            let index = reg.services.len();
            let mut hosts_members = members.clone();
            if dns_hosts {
                hosts_members.push(reg.workloads.len() as u32);
                reg.workloads.push(dns_host(
                    host,
                    &r.name,
                    &r.namespace,
                    r.location.at("spec.hosts"),
                ));
            }
            reg.services.push(Service {
                host: host.clone(),
                namespace: r.namespace.clone(),
                service_entry: r.name.clone(),
                location: c.location,
                resolution: c.resolution,
                ports: c.ports.clone(),
                addresses: c.addresses.clone(),
                auto_allocated: Vec::new(),
                subject_alt_names: r.spec.subject_alt_names.clone(),
                export_to: r.spec.export_to.clone(),
                source: r.location.clone(),
                created: r.created.clone(),
                index,
            });
            attach(reg, index, &hosts_members);
        }
    }
}

/// The endpoint of a DNS ServiceEntry without endpoints: the host itself (Istio: no labels, TLS
/// mode disabled, no service account).
fn dns_host(host: &str, entry: &str, namespace: &str, at: Location) -> Workload {
    Workload {
        origin: Origin::DnsHost {
            service_entry: entry.to_string(),
        },
        namespace: namespace.to_string(),
        address: EndpointAddress::Hostname(host.to_string()),
        ports: Default::default(),
        labels: Default::default(),
        network: String::new(),
        locality: String::new(),
        node: String::new(),
        weight: 0,
        service_account: String::new(),
        service_account_named: false,
        identity: None,
        tls_mode: TlsMode::Disabled,
        source: at,
    }
}

/// Records `members` as the endpoints of every port of service `index`.
fn attach(reg: &mut Registry, index: usize, members: &[u32]) {
    if reg.memberships.len() < reg.workloads.len() {
        reg.memberships.resize(reg.workloads.len(), Vec::new());
    }
    let service = &reg.services[index];
    let mut per_port = Vec::with_capacity(service.ports.len());
    for (pi, port) in service.ports.iter().enumerate() {
        let list: Vec<(u32, u16)> = members
            .iter()
            .map(|w| (*w, reg.workloads[*w as usize].port_for(port)))
            .collect();
        for (w, _) in &list {
            reg.memberships[*w as usize].push((index as u32, pi as u16));
        }
        per_port.push(list);
    }
    reg.endpoints.push(per_port);
}

/// Auto-allocated VIPs for the hosts that need one (see [`crate::alloc`]).
fn allocate(reg: &mut Registry, report: &mut Report) {
    let Some(range) = reg.options.auto_allocate.clone() else {
        return;
    };
    let wants = |s: &Service| {
        s.addresses.is_empty() && s.resolution != Resolution::None && !s.is_wildcard()
    };
    let candidates: Vec<Candidate> = reg
        .services
        .iter()
        .filter(|s| wants(s))
        .map(|s| Candidate {
            key: s.key(),
            created: s.created.clone(),
        })
        .collect();
    let mut in_use: Vec<ipnet::IpNet> = reg
        .services
        .iter()
        .flat_map(|s| s.addresses.iter().copied())
        .collect();
    in_use.extend(reg.workloads.iter().filter_map(|w| match w.address {
        EndpointAddress::Ip(ip) => Some(ipnet::IpNet::from(ip)),
        _ => None,
    }));
    let got = alloc::allocate(&range, &candidates, &in_use);
    for s in reg.services.iter_mut().filter(|s| wants(s)) {
        let key = s.key();
        if let Some(v4) = got.v4.get(&key) {
            s.auto_allocated.push((*v4).into());
        }
        if let Some(v6) = got.v6.get(&key) {
            s.auto_allocated.push((*v6).into());
        }
        if got.exhausted.contains(&key) {
            report.problems.push(
                Problem::new(
                    s.source.at("spec.hosts"),
                    format!(
                        "no address left in the auto-allocation range {} for {}",
                        range.v4, s.host
                    ),
                )
                .hint("give the ServiceEntry explicit addresses, or a larger range")
                .warning(),
            );
        }
    }
}

/// The address and name indexes.
fn index(reg: &mut Registry) {
    reg.memberships.resize(reg.workloads.len(), Vec::new());
    let mut addr = AddressIndex::default();
    let mut names = NameIndex::default();
    let mut by_host: HashMap<String, Vec<u32>> = HashMap::new();
    for s in &reg.services {
        let i = s.index as u32;
        by_host.entry(s.host.clone()).or_default().push(i);
        for net in &s.addresses {
            if net.prefix_len() == net.max_prefix_len() {
                addr.add_vip(net.addr(), i);
            } else {
                addr.add_cidr(*net, i);
            }
        }
        for ip in &s.auto_allocated {
            addr.add_vip(*ip, i);
        }
        // Istio listens on 0.0.0.0:<port> for HTTP ports (routing by Host), and for the ports
        // of a service with no address at all (no `addresses`, none allocated).
        let addressless = s.addresses.is_empty() && s.auto_allocated.is_empty();
        for p in &s.ports {
            if p.protocol.is_http() || addressless {
                addr.add_any_address(p.number, i);
            }
        }
        if !crate::dns::answers(reg, s).is_empty() {
            names.add(&s.host, i, &reg.options.domain_suffix);
        }
    }
    let mut by_identity: HashMap<_, Vec<u32>> = HashMap::new();
    for (i, w) in reg.workloads.iter().enumerate() {
        if let EndpointAddress::Ip(ip) = w.address {
            addr.add_workload(ip, i as u32);
        }
        if let Some(id) = &w.identity {
            by_identity.entry(id.clone()).or_default().push(i as u32);
        }
    }
    reg.by_identity = by_identity;
    reg.addresses = addr;
    reg.names = names;
    reg.by_host = by_host;
}

fn destination_rules(parsed: &Parsed, reg: &mut Registry, report: &mut Report) {
    let domain = reg.options.domain_suffix.clone();
    let mut compiled = Vec::new();
    for r in &parsed.destination_rules {
        if let Some(rule) = rules::compile(r, &domain, &mut report.problems, &mut report.notices) {
            compiled.push(rule);
        }
    }
    for b in &parsed.broken_rules {
        let reason = parsed
            .problems
            .iter()
            .find(|p| {
                p.location.file == b.location.file
                    && p.location.document == b.location.document
                    && p.location.field.starts_with(&b.location.field)
            })
            .map_or_else(
                || "the rule could not be read".to_string(),
                |p| p.to_string(),
            );
        if let Some(rule) = rules::stand_in(b, &reason, &domain) {
            compiled.push(rule);
        }
    }
    let merged = rules::merge(compiled, &mut report.problems);
    reg.rules = RuleIndex::new(merged);
}

/// Parses, checks and indexes everything, collecting every problem and notice.
pub fn validate(sources: &[SourceText], mesh: &MeshConfig, options: &Options) -> Report {
    build(sources, mesh, options).1
}

/// Building a registry is this module's work; the constructors live here so `registry` (the
/// built snapshot and its queries) does not depend on how it is built.
impl Registry {
    pub fn from_sources(
        sources: &[SourceText],
        mesh: &MeshConfig,
        options: &Options,
    ) -> (Registry, Report) {
        build(sources, mesh, options)
    }

    /// One YAML text (possibly multi-document); `file` labels locations in messages.
    pub fn from_yaml_str(
        file: &str,
        text: &str,
        mesh: &MeshConfig,
        options: &Options,
    ) -> (Registry, Report) {
        let source = SourceText {
            file: file.to_string(),
            text: text.to_string(),
        };
        build(std::slice::from_ref(&source), mesh, options)
    }
}
