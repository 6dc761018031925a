//! Checks Istio's validating webhook makes that are not about one field's grammar: workload
//! selectors, `targetRef(s)`, lists that are present but empty, and the fields CUSTOM cannot
//! use. Kept apart from the compilers so "what the webhook rejects" can be read in one place
//! against `pkg/config/validation/validation.go` (`validateWorkloadSelector`,
//! `validateOneOfSelectorType`, `validatePolicyTargetReference`, `ValidateAuthorizationPolicy`,
//! `ValidatePeerAuthentication`, `validateJwtRule`).

use serde_yaml::Value;

use crate::crd::{AuthorizationPolicySpec, TargetRef, WorkloadSelector};
use crate::problem::{Location, Problem};

/// `selector`: no empty label key, no `*` in keys or values; a selector without labels is
/// accepted with a warning (it selects every workload in scope).
pub fn selector(sel: Option<&WorkloadSelector>, spec: &Location, problems: &mut Vec<Problem>) {
    let Some(sel) = sel else {
        return;
    };
    let loc = spec.at("selector.matchLabels");
    for (k, v) in &sel.match_labels {
        if k.is_empty() {
            problems.push(
                Problem::new(loc.clone(), format!("empty label key (value {v:?})"))
                    .hint("selectors match pod labels by exact key and value"),
            );
        }
        if k.contains('*') || v.contains('*') {
            problems.push(
                Problem::new(loc.at(k), format!("wildcard in selector label {k}={v}"))
                    .hint("selectors match exact label values; omit the selector to select every workload in the namespace"),
            );
        }
    }
    if sel.match_labels.is_empty() {
        problems.push(
            Problem::new(
                spec.at("selector"),
                "workload selector specified without labels",
            )
            .hint("it selects every workload in scope; remove it or add matchLabels")
            .warning(),
        );
    }
}

/// Group and kind a `targetRef` may name (Istio's `allowedTargetRefs`; an empty group is core).
const TARGET_KINDS: [(&str, &str); 4] = [
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// At most one of `selector`, `targetRef`, `targetRefs`; each reference names a supported kind,
/// has a name and no namespace.
pub fn target_refs(
    has_selector: bool,
    one: Option<&TargetRef>,
    many: &[TargetRef],
    spec: &Location,
    problems: &mut Vec<Problem>,
) {
    let set =
        usize::from(has_selector) + usize::from(one.is_some()) + usize::from(!many.is_empty());
    if set > 1 {
        let at = if has_selector {
            "selector"
        } else {
            "targetRef"
        };
        problems.push(
            Problem::new(
                spec.at(at),
                "only one of selector, targetRef or targetRefs can be set",
            )
            .hint("use selector for sidecar workloads, targetRefs for gateways/waypoints"),
        );
    }
    let refs = one.map(|r| (spec.at("targetRef"), r)).into_iter().chain(
        many.iter()
            .enumerate()
            .map(|(i, r)| (spec.at(format!("targetRefs[{i}]")), r)),
    );
    for (loc, r) in refs {
        if r.name.is_empty() {
            problems.push(
                Problem::new(loc.at("name"), "targetRef name must be set")
                    .hint("name the Service or Gateway"),
            );
        }
        if !r.namespace.is_empty() {
            problems.push(
                Problem::new(loc.at("namespace"), "targetRef namespace must not be set")
                    .hint("cross-namespace references are not supported; put the policy in the target's namespace"),
            );
        }
        let group = if r.group.is_empty() {
            "core"
        } else {
            r.group.as_str()
        };
        if !TARGET_KINDS.contains(&(group, r.kind.as_str())) {
            problems.push(
                Problem::new(loc.at("kind"), format!("targetRef to {}/{} is not supported", r.group, r.kind))
                    .hint("use kind Service (group \"\"), ServiceEntry (networking.istio.io), Gateway or GatewayClass (gateway.networking.k8s.io)"),
            );
        }
    }
}

/// Lists that are present but empty, which typed parsing cannot tell from absent ones:
/// `rules[i].from: []` and `rules[i].to: []` (AuthorizationPolicy), `portLevelMtls: {}`
/// (PeerAuthentication).
pub fn empty_lists(kind: &str, value: &Value, obj: &Location, problems: &mut Vec<Problem>) {
    let Some(spec) = value.get("spec") else {
        return;
    };
    let empty_seq =
        |v: Option<&Value>| v.and_then(Value::as_sequence).is_some_and(|s| s.is_empty());
    match kind {
        "AuthorizationPolicy" => {
            let rules = spec.get("rules").and_then(Value::as_sequence);
            for (i, r) in rules.into_iter().flatten().enumerate() {
                for (f, what) in [("from", "source"), ("to", "operation")] {
                    if empty_seq(r.get(f)) {
                        problems.push(
                            Problem::new(
                                obj.at(format!("spec.rules[{i}].{f}")),
                                format!("`{f}` must not be empty"),
                            )
                            .hint(format!(
                                "remove `{f}` to match any {what}; Istio rejects an empty list"
                            )),
                        );
                    }
                }
            }
        }
        "PeerAuthentication"
            if spec
                .get("portLevelMtls")
                .and_then(Value::as_mapping)
                .is_some_and(|m| m.is_empty()) =>
        {
            problems.push(
                Problem::new(
                    obj.at("spec.portLevelMtls"),
                    "portLevelMtls, if set, must have at least one port",
                )
                .hint("remove it or list ports"),
            );
        }
        _ => {}
    }
}

/// Source fields and `when` keys Istio does not support with action CUSTOM.
pub fn custom_fields(spec: &AuthorizationPolicySpec, loc: &Location, problems: &mut Vec<Problem>) {
    for (i, r) in spec.rules.iter().enumerate() {
        let rl = loc.at(format!("rules[{i}]"));
        for (j, f) in r.from.iter().enumerate() {
            let Some(s) = &f.source else { continue };
            for (name, set) in [
                ("principals", !s.principals.is_empty()),
                ("notPrincipals", !s.not_principals.is_empty()),
                ("requestPrincipals", !s.request_principals.is_empty()),
                ("notRequestPrincipals", !s.not_request_principals.is_empty()),
                ("namespaces", !s.namespaces.is_empty()),
                ("notNamespaces", !s.not_namespaces.is_empty()),
                ("serviceAccounts", !s.service_accounts.is_empty()),
                ("notServiceAccounts", !s.not_service_accounts.is_empty()),
            ] {
                if set {
                    problems.push(unsupported(rl.at(format!("from[{j}].source.{name}")), name));
                }
            }
        }
        for (j, c) in r.when.iter().enumerate() {
            let k = c.key.as_str();
            if matches!(
                k,
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            ) || k.starts_with("request.auth.")
            {
                problems.push(unsupported(rl.at(format!("when[{j}].key")), k));
            }
        }
    }
}

fn unsupported(loc: Location, what: &str) -> Problem {
    Problem::new(loc, format!("{what} is not supported with action CUSTOM"))
        .hint("match on ipBlocks, remoteIpBlocks, hosts, ports, methods, paths or request headers; the external authorizer sees the identity itself")
}

/// An HTTP header name (RFC 9110 token), as Istio's `ValidateStrictHTTPHeaderName` requires of
/// `outputClaimToHeaders[].header`.
pub fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
