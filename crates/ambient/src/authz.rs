//! AuthorizationPolicy → ztunnel's L4 `istio.security.Authorization`, decided the way istiod
//! decides it for ambient (istio/istio `pilot/pkg/serviceregistry/ambient/authorization.go`,
//! `convertAuthorizationPolicy`, `handleRule` and their helpers), because ztunnel's behaviour
//! for a given policy must be the one Istio users already expect.
//!
//! The parts worth knowing, all istiod's:
//! - `targetRef(s)` policies are for waypoints and gateways: not sent to ztunnel. AUDIT and
//!   CUSTOM are not sent either. Dry-run policies are not sent unless [`AuthzOptions::dry_run`]
//!   (istiod's `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`, off by default).
//! - Each rule becomes one group: one `Rules` for its `to` list, one for its `from` list, one per
//!   `when` condition. HTTP-only attributes (hosts, methods, paths and their negations,
//!   (not)requestPrincipals, (not)remoteIpBlocks, any condition key other than source.ip,
//!   source.namespace, source.principal, destination.ip and destination.port) are left out of
//!   the matches. In an ALLOW policy a rule using one is dropped whole (it could never be
//!   satisfied at L4), so the policy allows less; in a DENY policy the rule is kept without
//!   them, so it denies more — except that a `when` on such a key becomes an empty match,
//!   which ztunnel never matches.
//! - Values: `*` is "present", `*x` a suffix, `x*` a prefix, anything else exact. Ports that
//!   are not decimal numbers up to 65535 and IPs/CIDRs that do not parse are skipped, not
//!   refused. `serviceAccounts` without `ns/` are in the policy's namespace.
//! - `trustDomains` / `notTrustDomains` are ignored by istiod's ambient conversion (neither
//!   translated nor reported); trustmesh does the same so ztunnel matches what istiod serves.

use std::net::IpAddr;

use trustmesh_policy::crd::{
    Action as PolicyAction, AuthorizationPolicySpec, Condition, Operation, Rule, Source,
};
use trustmesh_policy::document::{Resource, Spec};

use crate::istio::security::{
    string_match::MatchType, Action, Address, Authorization, Group, Match, Rules, Scope,
    ServiceAccountMatch, StringMatch,
};

/// Switches istiod has for the conversion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthzOptions {
    /// Send dry-run policies (with `dry_run` set) instead of dropping them; ztunnel 1.29 and
    /// later only log their matches, older ones would enforce them.
    pub dry_run: bool,
}

/// A conversion and the status istiod would report on the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// `None` when ztunnel must not receive the policy.
    pub authorization: Option<Authorization>,
    pub status: Option<Status>,
}

/// Why a policy was not sent, or was sent with less than it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A dry-run policy while [`AuthzOptions::dry_run`] is off.
    DryRunDisabled,
    /// AUDIT or CUSTOM: ztunnel has no such action.
    UnsupportedAction(PolicyAction),
    /// HTTP-only attributes were found (sorted names) and left out.
    HttpAttributes {
        found: Vec<String>,
        effect: HttpEffect,
    },
}

/// What leaving HTTP attributes out did to the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEffect {
    /// ALLOW: the rules using them were dropped; less is allowed than written.
    AllowRulesDropped,
    /// DENY: enforced without them; more is denied than written.
    DenyBroadened,
    /// DENY: nothing enforceable is left; the policy has no effect at ztunnel.
    DenyNoEffect,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::DryRunDisabled => {
                f.write_str("dry-run policies are not sent to ztunnel (not enabled)")
            }
            Status::UnsupportedAction(a) => {
                write!(f, "ztunnel cannot enforce action {}", a.as_str())
            }
            Status::HttpAttributes { found, effect } => {
                write!(
                    f,
                    "HTTP attributes need a waypoint (found: {}); ",
                    found.join(", ")
                )?;
                f.write_str(match effect {
                    HttpEffect::AllowRulesDropped => "the ALLOW rules using them never match",
                    HttpEffect::DenyBroadened => "the DENY rules are enforced without them",
                    HttpEffect::DenyNoEffect => "nothing of this DENY policy is left to enforce",
                })
            }
        }
    }
}

/// The xDS resource name of an authorization: `namespace/name` (istiod
/// `WorkloadAuthorization.ResourceName`), also what workloads list in
/// `authorization_policies`.
pub fn authorization_resource_name(a: &Authorization) -> String {
    format!("{}/{}", a.namespace, a.name)
}

/// An AuthorizationPolicy as ztunnel receives it, or `None` when istiod would not send it,
/// with istiod's defaults (dry-run policies not sent). Follows istiod's
/// `convertAuthorizationPolicy`; see [`convert_authorization`] for the reasons.
pub fn authorization(policy: &Resource, root_namespace: &str) -> Option<Authorization> {
    convert_authorization(policy, root_namespace, AuthzOptions::default()).authorization
}

/// istiod's `convertAuthorizationPolicy`: the L4 policy and the status istiod would report.
/// A resource that is not an AuthorizationPolicy converts to nothing, without status.
pub fn convert_authorization(
    policy: &Resource,
    root_namespace: &str,
    options: AuthzOptions,
) -> Converted {
    let none = |status| Converted {
        authorization: None,
        status,
    };
    let Spec::Authorization(spec) = &policy.spec else {
        return none(None);
    };
    if policy.dry_run && !options.dry_run {
        return none(Some(Status::DryRunDisabled));
    }
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        // For waypoints and gateways; ztunnel never sees it, and istiod reports nothing.
        return none(None);
    }
    let scope = match &spec.selector {
        Some(_) => Scope::WorkloadSelector,
        None if policy.namespace == root_namespace => Scope::Global,
        None => Scope::Namespace,
    };
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
        other => return none(Some(Status::UnsupportedAction(other))),
    };
    let mut out = Authorization {
        name: policy.name.clone(),
        namespace: policy.namespace.clone(),
        scope: scope as i32,
        action: action as i32,
        groups: Vec::new(),
        dry_run: policy.dry_run,
        extensions: Vec::new(),
    };
    let mut http = std::collections::BTreeSet::new();
    for rule in &spec.rules {
        if let Some(rules) = convert_rule(action, rule, &policy.namespace, &mut http) {
            out.groups.push(Group { rules });
        }
    }
    let status = (!http.is_empty()).then(|| {
        let effect = match action {
            Action::Deny if !has_effective_groups(&out.groups) => HttpEffect::DenyNoEffect,
            Action::Deny => HttpEffect::DenyBroadened,
            Action::Allow => HttpEffect::AllowRulesDropped,
        };
        Status::HttpAttributes {
            found: http.into_iter().collect(),
            effect,
        }
    });
    Converted {
        authorization: Some(out),
        status,
    }
}

/// The `authorization_policies` of a workload (istiod `buildWorkloadPolicies`, without the
/// PeerAuthentication part): `namespace/name` of every policy that converts, has a non-empty
/// selector matching `labels`, and lives in the workload's namespace or the root namespace;
/// sorted.
pub fn workload_policies(
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
    policies: &[Resource],
    root_namespace: &str,
    options: AuthzOptions,
) -> Vec<String> {
    let mut names: Vec<String> = policies
        .iter()
        .filter(|p| p.namespace == namespace || p.namespace == root_namespace)
        .filter(|p| match &p.spec {
            Spec::Authorization(AuthorizationPolicySpec {
                selector: Some(sel),
                ..
            }) => {
                !sel.match_labels.is_empty()
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
            }
            _ => false,
        })
        .filter_map(|p| convert_authorization(p, root_namespace, options).authorization)
        .map(|a| authorization_resource_name(&a))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// istiod's `handleRule`: the rules of one group, or `None` when an ALLOW rule uses an HTTP
/// attribute. HTTP attribute names found are added to `http`.
fn convert_rule(
    action: Action,
    rule: &Rule,
    policy_namespace: &str,
    http: &mut std::collections::BTreeSet<String>,
) -> Option<Vec<Rules>> {
    let empty_op = Operation::default();
    let empty_source = Source::default();
    let mut found = false;
    let mut note = |names: Vec<&'static str>, found: &mut bool| {
        *found |= !names.is_empty();
        http.extend(names.into_iter().map(str::to_string));
    };

    let mut to = Vec::new();
    for t in &rule.to {
        let op = t.operation.as_ref().unwrap_or(&empty_op);
        note(http_operation_fields(op), &mut found);
        to.push(Match {
            destination_ports: ports(&op.ports),
            not_destination_ports: ports(&op.not_ports),
            ..Match::default()
        });
    }
    let mut from = Vec::new();
    for f in &rule.from {
        let s = f.source.as_ref().unwrap_or(&empty_source);
        note(http_source_fields(s), &mut found);
        from.push(Match {
            source_ips: ips(&s.ip_blocks),
            not_source_ips: ips(&s.not_ip_blocks),
            namespaces: strings(&s.namespaces),
            not_namespaces: strings(&s.not_namespaces),
            service_accounts: service_accounts(&s.service_accounts, policy_namespace),
            not_service_accounts: service_accounts(&s.not_service_accounts, policy_namespace),
            principals: strings(&s.principals),
            not_principals: strings(&s.not_principals),
            ..Match::default()
        });
    }

    let mut rules = Vec::new();
    if !to.is_empty() {
        rules.push(Rules { matches: to });
    }
    if !from.is_empty() {
        rules.push(Rules { matches: from });
    }
    for when in &rule.when {
        if !L4_CONDITION_KEYS.contains(&when.key.as_str()) {
            found = true;
            http.insert(when.key.clone());
        }
        rules.push(Rules {
            matches: vec![condition(when)],
        });
    }
    if action == Action::Allow && found {
        return None;
    }
    Some(rules)
}

/// Condition keys ztunnel can evaluate.
const L4_CONDITION_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// One `when` condition as a single match; any other key gives an empty match.
fn condition(when: &Condition) -> Match {
    let (v, nv) = (&when.values, &when.not_values);
    let mut m = Match::default();
    match when.key.as_str() {
        "source.namespace" => {
            m.namespaces = strings(v);
            m.not_namespaces = strings(nv);
        }
        "source.principal" => {
            m.principals = strings(v);
            m.not_principals = strings(nv);
        }
        "source.ip" => {
            m.source_ips = ips(v);
            m.not_source_ips = ips(nv);
        }
        "destination.port" => {
            m.destination_ports = ports(v);
            m.not_destination_ports = ports(nv);
        }
        "destination.ip" => {
            m.destination_ips = ips(v);
            m.not_destination_ips = ips(nv);
        }
        _ => {}
    }
    m
}

fn http_operation_fields(op: &Operation) -> Vec<&'static str> {
    [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(n, _)| n)
    .collect()
}

fn http_source_fields(s: &Source) -> Vec<&'static str> {
    [
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(n, _)| n)
    .collect()
}

/// istiod's `hasEffectiveRules`: some group would ever match at ztunnel (a group without rules
/// matches everything; a rule whose matches are all empty matches nothing).
fn has_effective_groups(groups: &[Group]) -> bool {
    groups.iter().any(|g| {
        g.rules
            .iter()
            .all(|r| r.matches.iter().any(|m| *m != Match::default()))
    })
}

/// istiod's `stringToMatch`.
fn strings(values: &[String]) -> Vec<StringMatch> {
    values
        .iter()
        .map(|v| {
            let t = if v == "*" {
                MatchType::Presence(())
            } else if let Some(rest) = v.strip_prefix('*') {
                MatchType::Suffix(rest.to_string())
            } else if let Some(rest) = v.strip_suffix('*') {
                MatchType::Prefix(rest.to_string())
            } else {
                MatchType::Exact(v.clone())
            };
            StringMatch {
                match_type: Some(t),
            }
        })
        .collect()
}

/// istiod's `stringToServiceAccountMatch`: `ns/sa`, or `sa` in the policy's namespace.
fn service_accounts(values: &[String], policy_namespace: &str) -> Vec<ServiceAccountMatch> {
    values
        .iter()
        .map(|v| {
            let (ns, sa) = v.split_once('/').unwrap_or((policy_namespace, v));
            ServiceAccountMatch {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            }
        })
        .collect()
}

/// istiod's `stringToPort`: decimal numbers up to 65535; anything else is skipped.
fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|v| v.parse::<u64>().ok())
        .filter(|p| *p <= 65535)
        .map(|p| p as u32)
        .collect()
}

/// istiod's `stringToIP`: an IP (full length) or `ip/bits` (the address as written, not
/// masked); what does not parse is skipped.
fn ips(values: &[String]) -> Vec<Address> {
    values.iter().filter_map(|v| ip_prefix(v)).collect()
}

fn ip_prefix(v: &str) -> Option<Address> {
    let (ip, bits) = match v.split_once('/') {
        Some((ip, bits)) => {
            let ip: IpAddr = ip.parse().ok()?;
            // Go's netip.ParsePrefix: decimal, no sign, no leading zero, at most the IP's width.
            if bits.is_empty()
                || !bits.bytes().all(|b| b.is_ascii_digit())
                || (bits.len() > 1 && bits.starts_with('0'))
            {
                return None;
            }
            let bits: u32 = bits.parse().ok()?;
            (ip, bits)
        }
        None => {
            let ip: IpAddr = v.parse().ok()?;
            (ip, width(ip))
        }
    };
    if bits > width(ip) {
        return None;
    }
    Some(Address {
        address: crate::ip::octets(ip),
        length: bits,
    })
}

fn width(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}
