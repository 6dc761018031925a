//! AuthorizationPolicy → [`CompiledPolicy`], validating every field with its path as it goes.

use ipnet::IpNet;

use crate::crd::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::fields;
use crate::matcher::{parse_cidr, parse_port, AnyOf, HostMatch, PathMatch, StrMatch};
use crate::mesh::{MeshConfig, CLUSTER_LOCAL};
use crate::problem::{Location, Problem};
use crate::request_principal::RequestPrincipalField;

use super::model::*;

/// Trust-domain alias expansion (Istio "Security concepts", trust domain migration): a
/// principal `td/ns/x/sa/y` whose `td` is the local domain, an alias, or `cluster.local` also
/// matches the same `ns/x/sa/y` in every one of those domains. A `*suffix` trust domain that
/// covers some of them stays as written for those (the suffix match already covers them) and is
/// rewritten for the others. Principals not in that exact five-part form, or with a bare `*`
/// trust domain, are left alone.
pub fn expand_principal(p: &str, mesh: &MeshConfig) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    if parts.len() != 5 || parts[0] == "*" {
        return vec![p.to_string()];
    }
    let td = parts[0];
    let covers = |d: &str| match td.strip_prefix('*') {
        Some(suffix) => d.ends_with(suffix),
        None => d == td,
    };
    if td != CLUSTER_LOCAL && !mesh.trust_domains().any(covers) {
        return vec![p.to_string()];
    }
    let rest = &p[td.len()..];
    let mut out: Vec<String> = Vec::new();
    for d in mesh.trust_domains() {
        let s = if covers(d) {
            p.to_string()
        } else {
            format!("{d}{rest}")
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn expand_all(ps: &[String], mesh: &MeshConfig) -> Vec<String> {
    ps.iter().flat_map(|p| expand_principal(p, mesh)).collect()
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Ports that essentially always carry non-HTTP traffic; used only to warn about HTTP-only
/// fields that could never apply there (the config alone cannot tell a port's protocol).
const TCP_PORTS: [u16; 14] = [
    22, 25, 53, 1433, 1521, 2181, 3306, 5432, 5672, 6379, 9042, 9092, 11211, 27017,
];

struct Ctx<'a> {
    mesh: &'a MeshConfig,
    /// The policy's namespace: short `serviceAccounts` values name accounts in it.
    namespace: &'a str,
    problems: &'a mut Vec<Problem>,
}

/// Compiles and validates one policy. Problems are pushed; the policy is still returned (with
/// bad values dropped) so validation can continue, but callers must not enforce a policy set
/// that produced problems.
pub fn compile(
    name: &str,
    namespace: &str,
    dry_run: bool,
    spec: &AuthorizationPolicySpec,
    loc: &Location,
    mesh: &MeshConfig,
    problems: &mut Vec<Problem>,
) -> CompiledPolicy {
    let spec_loc = loc.at("spec");
    let mut cx = Ctx {
        mesh,
        namespace,
        problems,
    };
    // Selector and targetRef checks are shared by the three kinds: see `parity`.
    let targets_ref = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    match (spec.action, &spec.provider) {
        (Action::Custom, None) => cx.problems.push(
            Problem::new(spec_loc.at("provider"), "action CUSTOM requires a provider")
                .hint(provider_hint(mesh)),
        ),
        (Action::Custom, Some(p)) if p.name.is_empty() => cx.problems.push(
            Problem::new(
                spec_loc.at("provider.name"),
                "`provider.name` must not be empty",
            )
            .hint(provider_hint(mesh)),
        ),
        // Istio's webhook accepts an unknown provider; its builder then turns the policy's
        // rules into DENY rules (see `failclosed`). So a warning here, not an error.
        (Action::Custom, Some(p)) => match mesh.provider(&p.name) {
            None => cx.problems.push(
                Problem::new(
                    spec_loc.at("provider.name"),
                    format!("unknown extension provider {:?}", p.name),
                )
                .hint(provider_hint(mesh))
                .warning(),
            ),
            Some(ep) if !ep.is_ext_authz() => cx.problems.push(
                Problem::new(
                    spec_loc.at("provider.name"),
                    format!(
                        "extension provider {:?} is not an ext_authz provider",
                        p.name
                    ),
                )
                .hint("CUSTOM needs a provider with envoyExtAuthzGrpc or envoyExtAuthzHttp")
                .warning(),
            ),
            Some(_) => {}
        },
        (a, Some(_)) => cx.problems.push(
            Problem::new(
                spec_loc.at("provider"),
                format!(
                    "provider is only used with action CUSTOM, not {}",
                    a.as_str()
                ),
            )
            .hint("remove provider or set action: CUSTOM"),
        ),
        _ => {}
    }
    if spec.action == Action::Custom && spec.rules.is_empty() {
        cx.problems.push(
            Problem::new(spec_loc.at("rules"), "CUSTOM action without rules is meaningless: it never calls the provider")
                .hint("add rules selecting the requests to send to the external authorizer, e.g. `rules: [{}]` for all (Istio rejects a CUSTOM policy without rules)"),
        );
    }
    if spec.action == Action::Deny && spec.rules.is_empty() {
        cx.problems.push(
            Problem::new(spec_loc.at("rules"), "DENY action without rules is meaningless: it never matches")
                .hint("add an empty rule `rules: [{}]` to deny every request (Istio rejects a DENY policy without rules)"),
        );
    }
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(r, spec.action, &spec_loc.at(format!("rules[{i}]")), &mut cx))
        .collect();
    CompiledPolicy {
        name: format!("{namespace}/{name}"),
        namespace: namespace.to_string(),
        selector: spec.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        action: spec.action,
        provider: spec.provider.as_ref().map(|p| p.name.clone()),
        dry_run,
        targets_ref,
        location: loc.clone(),
        http_provider_only: spec.action == Action::Custom
            && spec
                .provider
                .as_ref()
                .and_then(|p| mesh.provider(&p.name))
                .is_some_and(|p| p.envoy_ext_authz_grpc.is_none()),
        rules,
        fail_closed: None,
    }
}

fn provider_hint(mesh: &MeshConfig) -> String {
    let names: Vec<&str> = mesh
        .extension_providers
        .iter()
        .filter(|p| p.is_ext_authz())
        .map(|p| p.name.as_str())
        .collect();
    if names.is_empty() {
        "define an envoyExtAuthzGrpc/envoyExtAuthzHttp entry in the mesh config's extensionProviders and pass it with --mesh".into()
    } else {
        format!(
            "set provider.name to one of the mesh extensionProviders: {}",
            names.join(", ")
        )
    }
}

fn compile_rule(r: &Rule, action: Action, loc: &Location, cx: &mut Ctx) -> CompiledRule {
    let mut out = CompiledRule::default();
    deny_on_tcp_warning(r, action, loc, cx);
    for (i, f) in r.from.iter().enumerate() {
        let l = loc.at(format!("from[{i}].source"));
        match &f.source {
            None => cx.problems.push(
                Problem::new(l, "from entry without source")
                    .hint("write `- source: {...}`; an empty from entry is rejected by Istio"),
            ),
            Some(s) => {
                let (c, http) = compile_source(s, &l, cx);
                out.http_only |= http;
                out.from.push(c);
            }
        }
    }
    for (i, t) in r.to.iter().enumerate() {
        let l = loc.at(format!("to[{i}].operation"));
        match &t.operation {
            None => cx.problems.push(
                Problem::new(l, "to entry without operation")
                    .hint("write `- operation: {...}`; an empty to entry is rejected by Istio"),
            ),
            Some(o) => {
                let (c, http) = compile_operation(o, &l, cx);
                out.http_only |= http;
                if http && !o.ports.is_empty() {
                    let ports: Vec<u16> = o.ports.iter().filter_map(|p| parse_port(p)).collect();
                    if !ports.is_empty() && ports.iter().all(|p| TCP_PORTS.contains(p)) {
                        cx.problems.push(
                            Problem::new(l.at("ports"), format!("HTTP-only fields (hosts/methods/paths) used on TCP port(s) {ports:?}"))
                                .hint("on TCP traffic an ALLOW rule using them never matches and a DENY rule ignores them (denying more); use principals, namespaces, ipBlocks or ports only")
                                .warning(),
                        );
                    }
                }
                out.to.push(c);
            }
        }
    }
    for (i, c) in r.when.iter().enumerate() {
        if let Some(cc) = compile_condition(c, &loc.at(format!("when[{i}]")), cx) {
            out.http_only |= cc.key.http_only();
            out.when.push(cc);
        }
    }
    out
}

/// Istio's validation warning: a DENY rule whose `from` or `to` uses only HTTP attributes
/// matches every TCP connection in its scope (the HTTP-only fields are dropped there).
fn deny_on_tcp_warning(r: &Rule, action: Action, loc: &Location, cx: &mut Ctx) {
    if action != Action::Deny {
        return;
    }
    let sources: Vec<&Source> = r.from.iter().filter_map(|f| f.source.as_ref()).collect();
    let ops: Vec<&Operation> = r.to.iter().filter_map(|t| t.operation.as_ref()).collect();
    let tcp_from = sources.iter().any(|s| {
        !(s.principals.is_empty()
            && s.not_principals.is_empty()
            && s.namespaces.is_empty()
            && s.not_namespaces.is_empty()
            && s.ip_blocks.is_empty()
            && s.not_ip_blocks.is_empty()
            && s.remote_ip_blocks.is_empty()
            && s.not_remote_ip_blocks.is_empty()
            && s.service_accounts.is_empty()
            && s.not_service_accounts.is_empty())
    });
    let tcp_to = ops
        .iter()
        .any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
    let (has_from, has_to) = (!sources.is_empty(), !ops.is_empty());
    if (has_from && !has_to && !tcp_from) || (has_to && !tcp_to) {
        cx.problems.push(
            Problem::new(loc.clone(), "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports in its scope")
                .hint("add `ports` to its operation so it applies only to the HTTP ports meant")
                .warning(),
        );
    }
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

fn compile_source(s: &Source, loc: &Location, cx: &mut Ctx) -> (CSource, bool) {
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

fn compile_operation(o: &Operation, loc: &Location, cx: &mut Ctx) -> (COperation, bool) {
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

fn compile_condition(c: &Condition, loc: &Location, cx: &mut Ctx) -> Option<CCondition> {
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
