//! AuthorizationPolicy → [`CompiledPolicy`], validating every field with its path as it goes:
//! the policy and its rules here, each rule's clauses in [`super::clauses`].

use crate::crd::{Action, AuthorizationPolicySpec, Operation, Rule, Source};
use crate::matcher::parse_port;
use crate::mesh::MeshConfig;
use crate::problem::{Location, Problem};

use super::clauses::*;
use super::model::*;

/// Ports that essentially always carry non-HTTP traffic; used only to warn about HTTP-only
/// fields that could never apply there (the config alone cannot tell a port's protocol).
const TCP_PORTS: [u16; 14] = [
    22, 25, 53, 1433, 1521, 2181, 3306, 5432, 5672, 6379, 9042, 9092, 11211, 27017,
];

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
