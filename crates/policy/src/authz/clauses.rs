//! The clauses of a rule — `from.source`, `to.operation`, `when` conditions — compiled and
//! checked field by field, each problem naming its field path. The policy-level compiler
//! (`compile`) walks the rules and hands each clause here.

use ipnet::IpNet;

use crate::crd::{Condition, Operation, Source};
use crate::fields;
use crate::matcher::{parse_cidr, parse_port, AnyOf, HostMatch, PathMatch, StrMatch};
use crate::mesh::MeshConfig;
use crate::problem::{Location, Problem};
use crate::request_principal::RequestPrincipalField;

use super::model::*;
use super::principals::expand_all;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// What compiling one policy carries through its clauses: the mesh, the policy's namespace,
/// and where problems go.
pub(super) struct Ctx<'a> {
    pub mesh: &'a MeshConfig,
    /// The policy's namespace: short `serviceAccounts` values name accounts in it.
    pub namespace: &'a str,
    pub problems: &'a mut Vec<Problem>,
}

fn empty_values(vs: &[String], field: &str, loc: &Location, cx: &mut Ctx) {
    for (i, v) in vs.iter().enumerate() {
        if v.is_empty() {
            cx.problems.push(
                Problem::new(loc.at(format!("{field}[{i}]")), "empty value")
                    .hint("remove the empty string; use \"*\" to require presence"),
            );
        }
    }
}

fn check_principals(vs: &[String], field: &str, loc: &Location, cx: &mut Ctx) {
    for (i, v) in vs.iter().enumerate() {
        if let Some(rest) = v.strip_prefix("spiffe://") {
            cx.problems.push(
                Problem::new(
                    loc.at(format!("{field}[{i}]")),
                    format!("principal {v:?} has a spiffe:// prefix and will never match"),
                )
                .hint(format!("Istio principals omit the scheme: write {rest:?}"))
                .warning(),
            );
        }
    }
}

fn ip_field(
    pos: &[String],
    neg: &[String],
    names: (&str, &str),
    loc: &Location,
    cx: &mut Ctx,
) -> IpField {
    IpField {
        pos: cidrs(pos, names.0, loc, cx),
        neg: cidrs(neg, names.1, loc, cx),
    }
}

fn cidrs(vs: &[String], field: &str, loc: &Location, cx: &mut Ctx) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        match parse_cidr(v) {
            Some(n) => out.push(n),
            None => cx.problems.push(
                Problem::new(
                    loc.at(format!("{field}[{i}]")),
                    format!("{v:?} is not an IP address or CIDR"),
                )
                .hint("use a form like 10.0.0.0/16, 192.168.1.7 or 2001:db8::/32"),
            ),
        }
    }
    out
}

fn ports(vs: &[String], field: &str, loc: &Location, cx: &mut Ctx) -> Vec<u16> {
    let mut out = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        match parse_port(v) {
            Some(p) => out.push(p),
            None => cx.problems.push(
                Problem::new(
                    loc.at(format!("{field}[{i}]")),
                    format!("{v:?} is not a port number"),
                )
                .hint("ports are decimal strings from 0 to 65535, e.g. \"8080\""),
            ),
        }
    }
    out
}

pub(super) fn compile_source(s: &Source, loc: &Location, cx: &mut Ctx) -> (CSource, bool) {
    let empty = s.principals.is_empty()
        && s.not_principals.is_empty()
        && s.request_principals.is_empty()
        && s.not_request_principals.is_empty()
        && s.namespaces.is_empty()
        && s.not_namespaces.is_empty()
        && s.service_accounts.is_empty()
        && s.not_service_accounts.is_empty()
        && s.ip_blocks.is_empty()
        && s.not_ip_blocks.is_empty()
        && s.remote_ip_blocks.is_empty()
        && s.not_remote_ip_blocks.is_empty()
        && s.trust_domains.is_empty()
        && s.not_trust_domains.is_empty();
    if empty {
        cx.problems.push(
            Problem::new(loc.clone(), "source has no fields")
                .hint("Istio rejects an empty source; remove the from entry to match any source"),
        );
    }
    let identity_fields =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if identity_fields > 0 && s.service_accounts.len() + s.not_service_accounts.len() > 0 {
        cx.problems.push(
            Problem::new(
                loc.clone(),
                "serviceAccounts cannot be combined with namespaces or principals",
            )
            .hint("use either serviceAccounts (\"ns/sa\") or principals/namespaces in one source"),
        );
    }
    for (field, vs) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
    ] {
        empty_values(vs, field, loc, cx);
    }
    check_principals(&s.principals, "principals", loc, cx);
    check_principals(&s.not_principals, "notPrincipals", loc, cx);
    for (field, vs) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        fields::check_service_accounts(vs, field, loc, cx.problems);
    }
    for (field, vs) in [
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ] {
        fields::check_wildcard_values(vs, field, true, loc, cx.problems);
    }
    let http = !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
    let c = CSource {
        principals: StrField::new(
            &expand_all(&s.principals, cx.mesh),
            &expand_all(&s.not_principals, cx.mesh),
        ),
        request_principals: RequestPrincipalField::new(
            &s.request_principals,
            &s.not_request_principals,
        ),
        namespaces: StrField::with(
            &s.namespaces,
            &s.not_namespaces,
            StrMatch::compile_namespace,
        ),
        service_accounts: service_accounts(&s.service_accounts, &s.not_service_accounts, cx),
        trust_domains: StrField::new(
            &fields::expand_trust_domains(&s.trust_domains, cx.mesh),
            &fields::expand_trust_domains(&s.not_trust_domains, cx.mesh),
        ),
        ip_blocks: ip_field(
            &s.ip_blocks,
            &s.not_ip_blocks,
            ("ipBlocks", "notIpBlocks"),
            loc,
            cx,
        ),
        remote_ip_blocks: ip_field(
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            ("remoteIpBlocks", "notRemoteIpBlocks"),
            loc,
            cx,
        ),
    };
    (c, http)
}

/// Service accounts are matched exactly (no wildcards), short values in the policy's namespace.
fn service_accounts(pos: &[String], neg: &[String], cx: &Ctx) -> StrField {
    let resolve = |vs: &[String]| -> AnyOf {
        AnyOf(
            vs.iter()
                .map(|v| StrMatch::Exact(fields::resolve_service_account(v, cx.namespace).into()))
                .collect(),
        )
    };
    StrField {
        pos: resolve(pos),
        neg: resolve(neg),
    }
}

pub(super) fn compile_operation(o: &Operation, loc: &Location, cx: &mut Ctx) -> (COperation, bool) {
    let empty = o.hosts.is_empty()
        && o.not_hosts.is_empty()
        && o.ports.is_empty()
        && o.not_ports.is_empty()
        && o.methods.is_empty()
        && o.not_methods.is_empty()
        && o.paths.is_empty()
        && o.not_paths.is_empty();
    if empty {
        cx.problems.push(
            Problem::new(loc.clone(), "operation has no fields").hint(
                "Istio rejects an empty operation; remove the to entry to match any operation",
            ),
        );
    }
    for (field, vs) in [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ] {
        empty_values(vs, field, loc, cx);
    }
    for (field, vs) in [("methods", &o.methods), ("notMethods", &o.not_methods)] {
        for (i, m) in vs.iter().enumerate() {
            let token = !m.is_empty()
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let bad = if !token {
                Some(format!("{m:?} is not a valid HTTP method"))
            } else if m.contains('*') {
                None
            } else if m.bytes().any(|b| b.is_ascii_lowercase()) {
                Some(format!("{m:?} is lower-case; methods are matched case-sensitively and requests use upper case"))
            } else if !METHODS.contains(&m.as_str()) {
                Some(format!("{m:?} is not a standard HTTP method"))
            } else {
                None
            };
            if let Some(msg) = bad {
                cx.problems.push(
                    Problem::new(loc.at(format!("{field}[{i}]")), msg)
                        .hint(format!("use one of {}", METHODS.join(", ")))
                        .warning(),
                );
            }
        }
    }
    for (field, vs) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (i, p) in vs.iter().enumerate() {
            if let Some(e) = crate::template::path_error(p) {
                cx.problems.push(
                    Problem::new(
                        loc.at(format!("{field}[{i}]")),
                        format!("invalid path {p:?}: {e}"),
                    )
                    .hint("templates use whole segments: /api/{*}/items, /static/{**}, /store/{**}/cart"),
                );
            }
        }
    }
    let http = !(o.hosts.is_empty()
        && o.not_hosts.is_empty()
        && o.methods.is_empty()
        && o.not_methods.is_empty()
        && o.paths.is_empty()
        && o.not_paths.is_empty());
    let c = COperation {
        hosts: (
            o.hosts.iter().map(|h| HostMatch::compile(h)).collect(),
            o.not_hosts.iter().map(|h| HostMatch::compile(h)).collect(),
        ),
        ports: (
            ports(&o.ports, "ports", loc, cx),
            ports(&o.not_ports, "notPorts", loc, cx),
        ),
        methods: StrField::new(&o.methods, &o.not_methods),
        paths: (
            o.paths.iter().map(|p| PathMatch::compile(p)).collect(),
            o.not_paths.iter().map(|p| PathMatch::compile(p)).collect(),
        ),
    };
    (c, http)
}

pub(super) fn compile_condition(c: &Condition, loc: &Location, cx: &mut Ctx) -> Option<CCondition> {
    if c.key.starts_with(fields::EXPERIMENTAL_PREFIX) {
        cx.problems
            .push(fields::experimental_key_problem(&c.key, loc));
        return None;
    }
    let key = match CondKey::parse(&c.key) {
        Ok(k) => k,
        Err(e) => {
            cx.problems.push(
                Problem::new(loc.at("key"), e).hint(format!("supported keys: {SUPPORTED_KEYS}")),
            );
            return None;
        }
    };
    empty_values(&c.values, "values", loc, cx);
    empty_values(&c.not_values, "notValues", loc, cx);
    for (field, vs) in [("values", &c.values), ("notValues", &c.not_values)] {
        match key {
            CondKey::SourceServiceAccount => {
                fields::check_service_accounts(vs, field, loc, cx.problems)
            }
            CondKey::SourceTrustDomain => {
                fields::check_wildcard_values(vs, field, false, loc, cx.problems)
            }
            _ => {}
        }
    }
    if key == CondKey::Header("host".into()) {
        cx.problems.push(
            Problem::new(
                loc.at("key"),
                "request.headers[host] never has a value: Envoy keeps the Host header as :authority",
            )
            .hint("use request.headers[:authority], or operation.hosts")
            .warning(),
        );
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        cx.problems.push(
            Problem::new(
                loc.clone(),
                format!("condition {:?} has neither values nor notValues", c.key),
            )
            .hint("add values (any matches) and/or notValues (none may match)"),
        );
    }
    let values =
        match key {
            CondKey::SourceIp | CondKey::RemoteIp | CondKey::DestinationIp => CondValues::Ip(
                ip_field(&c.values, &c.not_values, ("values", "notValues"), loc, cx),
            ),
            CondKey::DestinationPort => CondValues::Port(
                ports(&c.values, "values", loc, cx),
                ports(&c.not_values, "notValues", loc, cx),
            ),
            CondKey::SourcePrincipal => {
                check_principals(&c.values, "values", loc, cx);
                check_principals(&c.not_values, "notValues", loc, cx);
                CondValues::Str(StrField::new(
                    &expand_all(&c.values, cx.mesh),
                    &expand_all(&c.not_values, cx.mesh),
                ))
            }
            CondKey::Header(_) => CondValues::Str(StrField::with(
                &c.values,
                &c.not_values,
                StrMatch::compile_header,
            )),
            CondKey::SourceNamespace => CondValues::Str(StrField::with(
                &c.values,
                &c.not_values,
                StrMatch::compile_namespace,
            )),
            CondKey::SourceServiceAccount => {
                CondValues::Str(service_accounts(&c.values, &c.not_values, cx))
            }
            CondKey::AuthPrincipal => {
                CondValues::RequestPrincipal(RequestPrincipalField::new(&c.values, &c.not_values))
            }
            CondKey::SourceTrustDomain => CondValues::Str(StrField::new(
                &fields::expand_trust_domains(&c.values, cx.mesh),
                &fields::expand_trust_domains(&c.not_values, cx.mesh),
            )),
            _ => CondValues::Str(StrField::new(&c.values, &c.not_values)),
        };
    Some(CCondition {
        key,
        raw_key: c.key.clone(),
        values,
    })
}
