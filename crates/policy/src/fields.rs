//! Value rules of the AuthorizationPolicy fields whose format Istio checks beyond "not empty":
//! service accounts, trust domains, and `experimental.envoy.filters.*` condition keys. Kept
//! apart from `authz` so each rule sits next to the Istio function it mirrors.
//!
//! Sources: `CheckServiceAccount`, `CheckWildcardValues`, `CheckTrustDomainValues` and
//! `ValidateAttribute` in Istio's `pkg/config/security/security.go`; how values are turned
//! into matchers: `srcServiceAccountGenerator`, `srcTrustDomainGenerator` and
//! `envoyFilterGenerator` in `pilot/pkg/security/authz/model/generator.go`, and
//! `MigrateTrustDomain` in `model/model.go`.

use crate::mesh::MeshConfig;
use crate::problem::{Location, Problem};

/// Istio's bound on `serviceAccounts` / `notServiceAccounts` / `source.serviceAccount` values.
pub const MAX_SERVICE_ACCOUNTS: usize = 16;
/// Istio's bound on the length of one service account value.
pub const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// The prefix of Istio's experimental condition keys that read Envoy filter metadata.
pub const EXPERIMENTAL_PREFIX: &str = "experimental.envoy.filters.";

const SA_FORMAT: &str = "write \"<namespace>/<serviceaccount>\", or \"<serviceaccount>\" for one in the policy's own namespace";

/// `CheckServiceAccount`: at most 16 values, each `sa` or `ns/sa`, no `*`, at most 320
/// characters. Istio stops at the first bad value; every one is reported here.
pub fn check_service_accounts(
    vs: &[String],
    field: &str,
    loc: &Location,
    problems: &mut Vec<Problem>,
) {
    if vs.len() > MAX_SERVICE_ACCOUNTS {
        problems.push(
            Problem::new(
                loc.at(field),
                format!(
                    "{} values; Istio allows at most {MAX_SERVICE_ACCOUNTS}",
                    vs.len()
                ),
            )
            .hint("split the rule, or use principals/namespaces for larger sets"),
        );
    }
    for (i, v) in vs.iter().enumerate() {
        let bad = if v.is_empty() {
            Some("empty value".to_string())
        } else if v.contains('*') {
            Some(format!(
                "{v:?}: wildcards are not allowed in service accounts"
            ))
        } else if v.matches('/').count() > 1 {
            Some(format!("{v:?} has more than one `/`"))
        } else if v.len() > MAX_SERVICE_ACCOUNT_LEN {
            Some(format!(
                "{v:?} is longer than {MAX_SERVICE_ACCOUNT_LEN} characters"
            ))
        } else if let Some((ns, sa)) = v.split_once('/') {
            if ns.is_empty() {
                Some(format!("{v:?} has an empty namespace"))
            } else if sa.is_empty() {
                Some(format!("{v:?} has an empty service account"))
            } else {
                None
            }
        } else {
            None
        };
        if let Some(msg) = bad {
            let hint = if v.contains('*') {
                "list the service accounts, or use principals or namespaces, which accept `*`"
            } else {
                SA_FORMAT
            };
            problems.push(Problem::new(loc.at(format!("{field}[{i}]")), msg).hint(hint));
        }
    }
}

/// A service account value as the `ns/sa` it stands for: the short form names one in the
/// policy's namespace (Istio: `serviceAccountRegex(policy namespace, value)`).
pub fn resolve_service_account(v: &str, policy_namespace: &str) -> String {
    if v.contains('/') {
        v.to_string()
    } else {
        format!("{policy_namespace}/{v}")
    }
}

/// `CheckWildcardValues` (and, with `no_slash`, `CheckTrustDomainValues`): non-empty, at most
/// one `*`, and only at the start or the end.
pub fn check_wildcard_values(
    vs: &[String],
    field: &str,
    no_slash: bool,
    loc: &Location,
    problems: &mut Vec<Problem>,
) {
    for (i, v) in vs.iter().enumerate() {
        let stars = v.matches('*').count();
        let bad = if v.is_empty() {
            Some("empty value".to_string())
        } else if stars > 1 {
            Some(format!("{v:?}: at most one `*` is allowed"))
        } else if stars == 1 && !v.starts_with('*') && !v.ends_with('*') {
            Some(format!(
                "{v:?}: `*` is only allowed at the start or the end"
            ))
        } else if no_slash && v.contains('/') {
            Some(format!("{v:?}: a trust domain cannot contain `/`"))
        } else {
            None
        };
        if let Some(msg) = bad {
            problems.push(
                Problem::new(loc.at(format!("{field}[{i}]")), msg)
                    .hint("a trust domain value is exact (cluster.local), a prefix (corp-*), a suffix (*.corp) or `*`"),
            );
        }
    }
}

/// Trust-domain migration for `trustDomains` values (Istio's `ExpandTrustDomainAliases`): a
/// value naming the local trust domain or one of its aliases stands for all of them.
pub fn expand_trust_domains(vs: &[String], mesh: &MeshConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in vs {
        let group: Vec<String> = if mesh.trust_domains().any(|d| d == v) {
            mesh.trust_domains().map(str::to_string).collect()
        } else {
            vec![v.clone()]
        };
        for d in group {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

/// Why an `experimental.envoy.filters.*` condition is refused. Istio accepts any such key of
/// the form `a[b]` and matches Envoy dynamic metadata written by filter `a`; trustmesh has no
/// Envoy filters, so the condition could never be evaluated as Istio would. Refusing the
/// policy is the fail-closed choice: silently treating the metadata as absent would make an
/// ALLOW rule never match and a DENY rule's `notValues` always match.
pub fn experimental_key_problem(key: &str, loc: &Location) -> Problem {
    let well_formed = key
        .find('[')
        .is_some_and(|open| key.ends_with(']') && open > 0 && open < key.len() - 2);
    let msg = if well_formed {
        format!("{key:?} reads Envoy filter metadata, which trustmesh does not have; this condition cannot be evaluated")
    } else {
        format!("bad key {key:?}: Istio expects experimental.envoy.filters.<filter>[<key>], and trustmesh cannot evaluate such conditions anyway")
    };
    Problem::new(loc.at("key"), msg).hint(
        "remove the condition or express it with supported attributes (see the supported keys in the docs)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Istio: pkg/config/security/security_test.go (TestCheckServiceAccount).
    #[test]
    fn service_accounts() {
        let loc = Location::new("p.yaml", 1, "spec");
        let check = |vs: &[&str]| {
            let vs: Vec<String> = vs.iter().map(|s| s.to_string()).collect();
            let mut ps = Vec::new();
            check_service_accounts(&vs, "serviceAccounts", &loc, &mut ps);
            ps.len()
        };
        assert_eq!(check(&["ns/sa", "sa"]), 0);
        assert_eq!(check(&["ns/*"]), 1);
        assert_eq!(check(&["*"]), 1);
        assert_eq!(check(&["a/b/c"]), 1);
        assert_eq!(check(&["/sa"]), 1);
        assert_eq!(check(&["ns/"]), 1);
        assert_eq!(check(&[""]), 1);
        let long = "x".repeat(321);
        assert_eq!(check(&[long.as_str()]), 1);
        let many: Vec<String> = (0..17).map(|i| format!("ns/sa{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(check(&many), 1);
        assert_eq!(check(&many[..16]), 0);
        assert_eq!(resolve_service_account("sa", "prod"), "prod/sa");
        assert_eq!(resolve_service_account("dev/sa", "prod"), "dev/sa");
    }

    // Istio: pkg/config/security/security.go (CheckWildcardValues, CheckTrustDomainValues).
    #[test]
    fn trust_domain_values() {
        let loc = Location::new("p.yaml", 1, "spec");
        let check = |v: &str, no_slash: bool| {
            let mut ps = Vec::new();
            check_wildcard_values(&[v.to_string()], "trustDomains", no_slash, &loc, &mut ps);
            ps.len()
        };
        for ok in ["cluster.local", "*", "*.corp", "corp-*"] {
            assert_eq!(check(ok, true), 0, "{ok}");
        }
        for bad in ["", "a*b", "*a*", "a/b"] {
            assert_eq!(check(bad, true), 1, "{bad}");
        }
        assert_eq!(check("a/b", false), 0);
    }
}
