//! AuthorizationPolicy compiled for evaluation, with validation done in the same pass so every
//! problem is found once and reported with its field path.
//!
//! Semantics ("Authorization Policy" reference, section "Rule"): within a rule `from`, `to`
//! and `when` are ANDed; entries of `from`/`to` are ORed; fields inside a Source/Operation are
//! ANDed; values of one field are ORed; a `not*` field matches when no value matches. An absent
//! request attribute never matches a positive field and always satisfies a negative one.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::crd::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::fields;
use crate::matcher::{parse_cidr, parse_port, AnyOf, HostMatch, PathMatch, StrMatch};
use crate::mesh::{MeshConfig, CLUSTER_LOCAL};
use crate::problem::{Location, Problem};
use crate::request::Request;
use crate::request_principal::RequestPrincipalField;

/// An AuthorizationPolicy ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub name: String,
    pub namespace: String,
    /// `None` (or empty) selects every workload in scope.
    pub selector: Option<Vec<(String, String)>>,
    pub action: Action,
    pub provider: Option<String>,
    pub dry_run: bool,
    /// Policies with `targetRef(s)` attach to gateways/waypoints, never to sidecars.
    pub targets_ref: bool,
    /// Where the policy was defined (for problems found across policies).
    pub location: Location,
    /// CUSTOM with an `envoyExtAuthzHttp` provider: Istio does not apply it to TCP traffic.
    pub http_provider_only: bool,
    pub rules: Vec<CompiledRule>,
    /// Set when the policy is invalid and enforced fail-closed: why, and what is done instead.
    pub fail_closed: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CompiledRule {
    pub from: Vec<CSource>,
    pub to: Vec<COperation>,
    pub when: Vec<CCondition>,
    /// Uses a field that only exists for HTTP (Istio: an ALLOW rule with one cannot match TCP
    /// traffic; for DENY the field is ignored so the rule matches on the rest).
    pub http_only: bool,
    /// An invalid ALLOW rule, dropped as Istio's builder drops it: it never matches.
    pub dropped: bool,
}

#[derive(Debug, Clone, Default)]
pub struct StrField {
    pub pos: AnyOf,
    pub neg: AnyOf,
}

impl StrField {
    fn new(pos: &[String], neg: &[String]) -> Self {
        StrField {
            pos: AnyOf::compile(pos),
            neg: AnyOf::compile(neg),
        }
    }
    fn with(pos: &[String], neg: &[String], f: fn(&str) -> StrMatch) -> Self {
        StrField {
            pos: AnyOf::compile_with(pos, f),
            neg: AnyOf::compile_with(neg, f),
        }
    }
    fn set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }
    #[inline]
    fn check(&self, v: Option<&str>) -> bool {
        (self.pos.is_empty() || v.is_some_and(|v| self.pos.matches(v)))
            && (self.neg.is_empty() || !v.is_some_and(|v| self.neg.matches(v)))
    }
}

#[derive(Debug, Clone, Default)]
pub struct IpField {
    pub pos: Vec<IpNet>,
    pub neg: Vec<IpNet>,
}

impl IpField {
    fn set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }
    fn check(&self, v: Option<IpAddr>) -> bool {
        let hit = |l: &[IpNet]| v.is_some_and(|ip| l.iter().any(|n| n.contains(&ip)));
        (self.pos.is_empty() || hit(&self.pos)) && (self.neg.is_empty() || !hit(&self.neg))
    }
}

#[derive(Debug, Clone, Default)]
pub struct CSource {
    pub principals: StrField,
    pub request_principals: RequestPrincipalField,
    pub namespaces: StrField,
    pub service_accounts: StrField,
    pub trust_domains: StrField,
    pub ip_blocks: IpField,
    pub remote_ip_blocks: IpField,
}

#[derive(Debug, Clone, Default)]
pub struct COperation {
    pub hosts: (Vec<HostMatch>, Vec<HostMatch>),
    pub ports: (Vec<u16>, Vec<u16>),
    pub methods: StrField,
    pub paths: (Vec<PathMatch>, Vec<PathMatch>),
}

/// A `when` key, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum CondKey {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    /// `source.serviceAccount`: `ns/sa` of the peer.
    SourceServiceAccount,
    /// `source.trustDomain`: the trust domain of the peer's identity.
    SourceTrustDomain,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaims(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
}

impl CondKey {
    /// Parses a condition key ("Authorization Policy Conditions" reference).
    pub fn parse(key: &str) -> Result<CondKey, String> {
        let fixed = match key {
            "source.ip" => Some(CondKey::SourceIp),
            "remote.ip" => Some(CondKey::RemoteIp),
            "source.namespace" => Some(CondKey::SourceNamespace),
            "source.principal" => Some(CondKey::SourcePrincipal),
            "source.serviceAccount" => Some(CondKey::SourceServiceAccount),
            "source.trustDomain" => Some(CondKey::SourceTrustDomain),
            "request.auth.principal" => Some(CondKey::AuthPrincipal),
            "request.auth.audiences" => Some(CondKey::AuthAudiences),
            "request.auth.presenter" => Some(CondKey::AuthPresenter),
            "destination.ip" => Some(CondKey::DestinationIp),
            "destination.port" => Some(CondKey::DestinationPort),
            "connection.sni" => Some(CondKey::ConnectionSni),
            _ => None,
        };
        if let Some(k) = fixed {
            return Ok(k);
        }
        if let Some(rest) = key.strip_prefix("request.headers[") {
            let name = rest
                .strip_suffix(']')
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']));
            return name
                .map(|n| CondKey::Header(n.to_ascii_lowercase()))
                .ok_or_else(|| "expected request.headers[<header-name>]".to_string());
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            let mut names = Vec::new();
            let mut r = rest;
            while let Some(s) = r.strip_prefix('[') {
                let end = s.find(']').ok_or("unclosed `[` in claim name")?;
                if end == 0 {
                    return Err("empty claim name".into());
                }
                names.push(s[..end].to_string());
                r = &s[end + 1..];
            }
            if names.is_empty() || !r.is_empty() {
                return Err("expected request.auth.claims[<name>] or nested [<a>][<b>]".into());
            }
            return Ok(CondKey::AuthClaims(names));
        }
        Err(format!("unknown condition key {key:?}"))
    }

    /// Whether evaluating it needs the request's real headers copied into the request:
    /// pseudo-headers are built from the request line and `host` is never found.
    pub fn reads_request_headers(&self) -> bool {
        match self {
            CondKey::Header(n) => {
                n != "host" && !crate::request::SYNTHESIZED_HEADERS.contains(&n.as_str())
            }
            _ => false,
        }
    }

    pub fn http_only(&self) -> bool {
        matches!(
            self,
            CondKey::Header(_)
                | CondKey::AuthPrincipal
                | CondKey::AuthAudiences
                | CondKey::AuthPresenter
                | CondKey::AuthClaims(_)
        )
    }
}

#[derive(Debug, Clone)]
pub enum CondValues {
    Str(StrField),
    /// `request.auth.principal`: issuer and subject matched apart.
    RequestPrincipal(RequestPrincipalField),
    Ip(IpField),
    Port(Vec<u16>, Vec<u16>),
}

#[derive(Debug, Clone)]
pub struct CCondition {
    pub key: CondKey,
    pub raw_key: String,
    pub values: CondValues,
}

pub const SUPPORTED_KEYS: &str =
    "request.headers[<name>], source.ip, remote.ip, source.namespace, \
source.principal, source.serviceAccount, source.trustDomain, request.auth.principal, request.auth.audiences, request.auth.presenter, \
request.auth.claims[<name>], destination.ip, destination.port, connection.sni";

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

/// Request attributes a rule needs, resolved once per request.
pub struct Attrs<'r> {
    pub req: &'r Request,
    pub principal: Option<&'r str>,
    pub namespace: Option<&'r str>,
    /// `(namespace, service account)` of the peer.
    pub service_account: Option<(&'r str, &'r str)>,
    pub trust_domain: Option<&'r str>,
    pub path: Option<&'r str>,
}

impl<'r> Attrs<'r> {
    /// `drop_peer`: evaluate as if plaintext (the peer identity is not verified, e.g. DISABLE).
    pub fn new(req: &'r Request, drop_peer: bool) -> Self {
        let (principal, namespace, service_account, trust_domain) = if drop_peer {
            (None, None, None, None)
        } else {
            (
                req.peer_principal(),
                req.source_namespace(),
                req.source_service_account(),
                req.source_trust_domain(),
            )
        };
        Attrs {
            req,
            principal,
            namespace,
            service_account,
            trust_domain,
            path: req.http.as_ref().map(|h| crate::matcher::url_path(&h.path)),
        }
    }
}

/// Why a rule did not match (built only when explaining).
pub type Miss = Option<String>;

fn miss(explain: bool, f: impl FnOnce() -> String) -> Result<(), Miss> {
    Err(explain.then(f))
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "(none)".to_string(), |s| format!("{s:?}"))
}

impl CompiledPolicy {
    /// Istio generates DENY, AUDIT and CUSTOM rules "wider" on TCP: their HTTP-only fields are
    /// dropped and the rule matches on the rest. Only ALLOW rules using them are skipped.
    pub fn widens_on_tcp(&self) -> bool {
        self.action != Action::Allow
    }
}

impl CompiledRule {
    /// Whether the rule matches. On TCP (`req.http` is None) with `deny_semantics` the
    /// HTTP-only fields are ignored; without it, a rule that uses any cannot match.
    pub fn check(&self, a: &Attrs, deny_semantics: bool, explain: bool) -> Result<(), Miss> {
        if self.dropped {
            return miss(explain, || {
                "dropped: the rule is invalid, so it matches nothing (fail-closed)".into()
            });
        }
        let tcp = a.req.http.is_none();
        if tcp && self.http_only && !deny_semantics {
            return miss(explain, || {
                "uses HTTP-only fields (requestPrincipals/hosts/methods/paths/request.*) on a TCP connection: an ALLOW rule cannot match".into()
            });
        }
        let skip_http = tcp && deny_semantics;
        if !self.from.is_empty() {
            let mut first = None;
            let hit =
                self.from
                    .iter()
                    .enumerate()
                    .any(|(i, s)| match s.check(a, skip_http, explain) {
                        Ok(()) => true,
                        Err(m) => {
                            if first.is_none() {
                                first = m.map(|m| format!("from[{i}].source.{m}"));
                            }
                            false
                        }
                    });
            if !hit {
                return Err(first);
            }
        }
        if !self.to.is_empty() {
            let mut first = None;
            let hit =
                self.to
                    .iter()
                    .enumerate()
                    .any(|(i, o)| match o.check(a, skip_http, explain) {
                        Ok(()) => true,
                        Err(m) => {
                            if first.is_none() {
                                first = m.map(|m| format!("to[{i}].operation.{m}"));
                            }
                            false
                        }
                    });
            if !hit {
                return Err(first);
            }
        }
        for (i, c) in self.when.iter().enumerate() {
            if skip_http && c.key.http_only() {
                continue;
            }
            c.check(a, explain)
                .map_err(|m| m.map(|m| format!("when[{i}] {m}")))?;
        }
        Ok(())
    }
}

/// Explains a failed positive/negative field check: which list the value failed and its entries.
fn explain_field<M: std::fmt::Display>(
    names: (&str, &str),
    what: &str,
    value: &str,
    pos: &[M],
    pos_ok: bool,
    neg: &[M],
) -> String {
    let join = |l: &[M]| {
        l.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !pos_ok {
        format!("{}: {what} {value} is not one of [{}]", names.0, join(pos))
    } else {
        format!("{}: {what} {value} is excluded by [{}]", names.1, join(neg))
    }
}

fn explain_str(names: (&str, &str), what: &str, f: &StrField, v: Option<&str>) -> String {
    let pos_ok = f.pos.is_empty() || v.is_some_and(|v| f.pos.matches(v));
    explain_field(names, what, &show(v), &f.pos.0, pos_ok, &f.neg.0)
}

fn explain_ip(names: (&str, &str), what: &str, f: &IpField, v: Option<IpAddr>) -> String {
    let pos_ok = f.pos.is_empty() || v.is_some_and(|ip| f.pos.iter().any(|n| n.contains(&ip)));
    let shown = v.map_or("(none)".to_string(), |ip| ip.to_string());
    explain_field(names, what, &shown, &f.pos, pos_ok, &f.neg)
}

impl CSource {
    fn check(&self, a: &Attrs, skip_http: bool, explain: bool) -> Result<(), Miss> {
        let peer = a.principal;
        if self.principals.set() && !self.principals.check(peer) {
            return miss(explain, || {
                explain_str(
                    ("principals", "notPrincipals"),
                    "peer principal",
                    &self.principals,
                    peer,
                )
            });
        }
        if !skip_http && self.request_principals.set() {
            let auth = a.req.auth.as_ref();
            let (iss, sub) = auth.map_or((None, None), |x| x.issuer_subject());
            if !self.request_principals.check(iss, sub) {
                return miss(explain, || {
                    let f = &self.request_principals;
                    explain_field(
                        ("requestPrincipals", "notRequestPrincipals"),
                        "request principal",
                        &show(auth.map(|x| x.principal.as_str())),
                        &f.pos,
                        f.pos_ok(iss, sub),
                        &f.neg,
                    )
                });
            }
        }
        if self.namespaces.set() && !self.namespaces.check(a.namespace) {
            return miss(explain, || {
                explain_str(
                    ("namespaces", "notNamespaces"),
                    "source namespace",
                    &self.namespaces,
                    a.namespace,
                )
            });
        }
        if self.service_accounts.set() {
            let sa = a.service_account.map(|(n, s)| format!("{n}/{s}"));
            if !self.service_accounts.check(sa.as_deref()) {
                return miss(explain, || {
                    explain_str(
                        ("serviceAccounts", "notServiceAccounts"),
                        "source service account",
                        &self.service_accounts,
                        sa.as_deref(),
                    )
                });
            }
        }
        if self.trust_domains.set() && !self.trust_domains.check(a.trust_domain) {
            return miss(explain, || {
                explain_str(
                    ("trustDomains", "notTrustDomains"),
                    "source trust domain",
                    &self.trust_domains,
                    a.trust_domain,
                )
            });
        }
        if self.ip_blocks.set() && !self.ip_blocks.check(a.req.source.ip) {
            return miss(explain, || {
                explain_ip(
                    ("ipBlocks", "notIpBlocks"),
                    "source ip",
                    &self.ip_blocks,
                    a.req.source.ip,
                )
            });
        }
        if self.remote_ip_blocks.set() && !self.remote_ip_blocks.check(a.req.source.remote_ip) {
            return miss(explain, || {
                explain_ip(
                    ("remoteIpBlocks", "notRemoteIpBlocks"),
                    "remote ip",
                    &self.remote_ip_blocks,
                    a.req.source.remote_ip,
                )
            });
        }
        Ok(())
    }
}

fn list_check<M>(pos: &[M], neg: &[M], f: impl Fn(&M) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&f)) && !neg.iter().any(f)
}

impl COperation {
    fn check(&self, a: &Attrs, skip_http: bool, explain: bool) -> Result<(), Miss> {
        let port = a.req.destination.port;
        if !list_check(&self.ports.0, &self.ports.1, |p| *p == port) {
            return miss(explain, || {
                let pos_ok = self.ports.0.is_empty() || self.ports.0.contains(&port);
                explain_field(
                    ("ports", "notPorts"),
                    "destination port",
                    &port.to_string(),
                    &self.ports.0,
                    pos_ok,
                    &self.ports.1,
                )
            });
        }
        if skip_http {
            return Ok(());
        }
        let http = a.req.http.as_ref();
        if !(self.hosts.0.is_empty() && self.hosts.1.is_empty()) {
            let host = http.map(|h| h.host.as_str());
            let ok = match host {
                Some(h) => list_check(&self.hosts.0, &self.hosts.1, |m| m.matches(h)),
                None => self.hosts.0.is_empty(),
            };
            if !ok {
                return miss(explain, || {
                    let pos_ok = self.hosts.0.is_empty()
                        || host.is_some_and(|h| self.hosts.0.iter().any(|m| m.matches(h)));
                    explain_field(
                        ("hosts", "notHosts"),
                        "host",
                        &show(host),
                        &self.hosts.0,
                        pos_ok,
                        &self.hosts.1,
                    )
                });
            }
        }
        if self.methods.set() {
            let m = http.map(|h| h.method.as_str());
            if !self.methods.check(m) {
                return miss(explain, || {
                    explain_str(("methods", "notMethods"), "method", &self.methods, m)
                });
            }
        }
        if !(self.paths.0.is_empty() && self.paths.1.is_empty()) {
            let ok = match a.path {
                Some(p) => list_check(&self.paths.0, &self.paths.1, |m| m.matches(p)),
                None => self.paths.0.is_empty(),
            };
            if !ok {
                return miss(explain, || {
                    let pos_ok = self.paths.0.is_empty()
                        || a.path
                            .is_some_and(|p| self.paths.0.iter().any(|m| m.matches(p)));
                    explain_field(
                        ("paths", "notPaths"),
                        "path",
                        &show(a.path),
                        &self.paths.0,
                        pos_ok,
                        &self.paths.1,
                    )
                });
            }
        }
        Ok(())
    }
}

/// The string values of one request attribute, without allocating: none, one, a list of
/// strings (audiences), a JSON claim array (only its string items can match) or a
/// space-delimited claim's words.
#[derive(Clone)]
enum Vals<'a> {
    One(Option<&'a str>),
    Strs(std::slice::Iter<'a, String>),
    Json(std::slice::Iter<'a, serde_json::Value>),
    Words(std::str::Split<'a, char>),
}

impl<'a> Iterator for Vals<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        match self {
            Vals::One(v) => v.take(),
            Vals::Strs(it) => it.next().map(String::as_str),
            Vals::Json(it) => it.find_map(|v| v.as_str()),
            Vals::Words(it) => it.find(|w| !w.is_empty()),
        }
    }
}

/// A JSON claim as the strings it can match: a string, or each string of an array. A
/// space-delimited claim's string is its words, as Envoy's `jwt_authn` puts it in the
/// metadata Istio's RBAC rules read (split on single spaces, empty words dropped; a string
/// with no word stays as it is).
fn claim_vals(v: Option<&serde_json::Value>, space_delimited: bool) -> Vals<'_> {
    match v {
        Some(serde_json::Value::String(s))
            if space_delimited && s.split(' ').any(|w| !w.is_empty()) =>
        {
            Vals::Words(s.split(' '))
        }
        Some(serde_json::Value::String(s)) => Vals::One(Some(s)),
        Some(serde_json::Value::Array(items)) => Vals::Json(items.iter()),
        _ => Vals::One(None),
    }
}

impl CCondition {
    fn check(&self, a: &Attrs, explain: bool) -> Result<(), Miss> {
        let req = a.req;
        let auth = req.auth.as_ref();
        let sa_buf: Option<String>;
        let vals: Vals = match &self.key {
            CondKey::Header(n) => Vals::One(req.http.as_ref().and_then(|h| h.policy_header(n))),
            CondKey::SourceNamespace => Vals::One(a.namespace),
            CondKey::SourcePrincipal => Vals::One(a.principal),
            CondKey::SourceServiceAccount => {
                sa_buf = a.service_account.map(|(n, s)| format!("{n}/{s}"));
                Vals::One(sa_buf.as_deref())
            }
            CondKey::AuthPrincipal => Vals::One(auth.map(|x| x.principal.as_str())),
            CondKey::AuthPresenter => {
                Vals::One(auth.map(|x| x.presenter.as_str()).filter(|p| !p.is_empty()))
            }
            CondKey::AuthAudiences => match auth {
                Some(x) => Vals::Strs(x.audiences.iter()),
                None => Vals::One(None),
            },
            CondKey::AuthClaims(path) => {
                let mut cur = auth.and_then(|x| x.claims.get(&path[0]));
                for p in &path[1..] {
                    cur = cur.and_then(|v| v.get(p));
                }
                // Envoy splits top-level claims only.
                let split = path.len() == 1 && auth.is_some_and(|x| x.is_space_delimited(&path[0]));
                claim_vals(cur, split)
            }
            CondKey::SourceTrustDomain => Vals::One(a.trust_domain),
            CondKey::ConnectionSni => Vals::One(req.connection.sni.as_deref()),
            CondKey::SourceIp
            | CondKey::RemoteIp
            | CondKey::DestinationIp
            | CondKey::DestinationPort => Vals::One(None),
        };
        let ok = match &self.values {
            CondValues::Str(f) => {
                (f.pos.is_empty() || vals.clone().any(|v| f.pos.matches(v)))
                    && (f.neg.is_empty() || !vals.clone().any(|v| f.neg.matches(v)))
            }
            CondValues::Ip(f) => f.check(match self.key {
                CondKey::SourceIp => req.source.ip,
                CondKey::RemoteIp => req.source.remote_ip,
                _ => req.destination.ip,
            }),
            CondValues::Port(pos, neg) => {
                let p = req.destination.port;
                list_check(pos, neg, |x| *x == p)
            }
            CondValues::RequestPrincipal(f) => {
                let (iss, sub) = auth.map_or((None, None), |x| x.issuer_subject());
                f.check(iss, sub)
            }
        };
        if ok {
            Ok(())
        } else {
            miss(explain, || {
                let got = match &self.values {
                    CondValues::Str(_) | CondValues::RequestPrincipal(_) => {
                        let all: Vec<&str> = vals.clone().collect();
                        if all.is_empty() {
                            "(none)".to_string()
                        } else {
                            format!("{all:?}")
                        }
                    }
                    CondValues::Ip(_) => format!(
                        "{:?}",
                        match self.key {
                            CondKey::SourceIp => req.source.ip,
                            CondKey::RemoteIp => req.source.remote_ip,
                            _ => req.destination.ip,
                        }
                    ),
                    CondValues::Port(..) => req.destination.port.to_string(),
                };
                {
                    let j = |l: Vec<String>| l.join(", ");
                    let (pos, neg) = match &self.values {
                        CondValues::Str(f) => (
                            j(f.pos.0.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.0.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::Ip(f) => (
                            j(f.pos.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::Port(p, n) => (
                            j(p.iter().map(|m| m.to_string()).collect()),
                            j(n.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::RequestPrincipal(f) => (
                            j(f.pos.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.iter().map(|m| m.to_string()).collect()),
                        ),
                    };
                    let mut want = Vec::new();
                    if !pos.is_empty() {
                        want.push(format!("values [{pos}]"));
                    }
                    if !neg.is_empty() {
                        want.push(format!("notValues [{neg}]"));
                    }
                    format!("{}: got {got}, need {}", self.raw_key, want.join(" and "))
                }
            })
        }
    }
}
