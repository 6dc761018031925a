//! What happens to a resource Istio would not have let in: one invalid resource must not
//! disable the whole configuration, and must not open a hole either.
//!
//! In Istio the validating webhook keeps invalid resources out of the cluster, and the builder
//! (`pilot/pkg/security/authz/builder/builder.go`, `pilot/pkg/security/authz/model/model.go`)
//! still copes with what slips through: an ALLOW rule it cannot build is skipped ("a smaller
//! allow policy, i.e. less likely to allow"), a DENY or AUDIT value it cannot build is ignored
//! ("a wider deny or audit policy"), a CUSTOM policy whose provider cannot be used has its rules
//! turned into DENY rules, and a JWKS that cannot be fetched is replaced by a key set nobody can
//! sign for (`pilot/pkg/model/jwks_resolver.go`). Files on disk have no webhook, so trustmesh
//! applies the same direction to every resource with an error, per resource:
//!
//! - ALLOW: each rule with an error is dropped; an error outside the rules drops every rule
//!   (the policy still selects its workloads, so they deny what no other ALLOW rule allows).
//! - DENY, CUSTOM: the policy denies every request it selects. (Istio's builder would ignore a
//!   DENY value it cannot build; it also skips a rule with an unknown `when` key even for DENY,
//!   which opens a hole — we do not follow that.) A CUSTOM policy whose provider is unknown or
//!   not ext_authz keeps its rules as DENY rules, exactly as Istio's builder does.
//! - AUDIT: audits every request it selects (AUDIT never changes a decision).
//! - An action that cannot be read is treated as DENY.
//! - PeerAuthentication: mTLS is STRICT for its whole scope, port-level settings ignored.
//! - RequestAuthentication: a `jwtRules` entry with an error rejects every token of its issuer
//!   (like Istio's JWKS fallback); when the rules cannot be read at all, every token presented
//!   to the workloads it selects is rejected. Requests without a token still pass, as always.
//! - A selector (or selector/targetRef combination) with an error cannot say which workloads
//!   are meant, so the resource applies to its whole namespace (mesh-wide in the root
//!   namespace), to sidecars.
//! - Dry-run policies stay dry-run: they are reported, never enforced. A dry-run value that is
//!   not a boolean (the only error) leaves an ALLOW or DENY policy enforced as written, as
//!   Istio's builder does.
//! - A document that is not valid YAML could have held any resource anywhere, so the set
//!   denies every request until it is fixed.
//! - Documents of other kinds are skipped: they are not security policy.

pub(crate) mod apply;

use std::fmt;

use serde_yaml::Value;

use crate::crd::{Action, JwtRule};
use crate::problem::{Location, Problem};

/// What was done with an invalid resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// ALLOW: these rules (indices) were dropped; the others apply.
    DroppedRules(Vec<usize>),
    /// ALLOW: every rule dropped; the workloads it selects allow only what other ALLOW
    /// policies allow.
    AllowsNothing,
    /// DENY, CUSTOM or unreadable action: denies every request it selects.
    DeniesAll,
    /// CUSTOM whose provider cannot be used: its rules deny what they match.
    DeniesRuleMatches,
    /// AUDIT: audits every request it selects.
    AuditsAll,
    /// PeerAuthentication: STRICT for its scope.
    StrictMtls,
    /// RequestAuthentication: tokens of these issuers are rejected (empty: every token).
    RejectsTokens(Vec<String>),
    /// The document could not be parsed: every request is denied.
    DeniesEverything,
    /// Only the `istio.io/dry-run` value is wrong: enforced as written, not dry-run (Istio's
    /// builder does the same).
    EnforcedAsWritten,
}

impl Outcome {
    /// Short machine-readable label (metrics, JSON).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::DroppedRules(_) => "dropped_rules",
            Outcome::AllowsNothing => "allows_nothing",
            Outcome::DeniesAll => "denies_all",
            Outcome::DeniesRuleMatches => "denies_rule_matches",
            Outcome::AuditsAll => "audits_all",
            Outcome::StrictMtls => "strict_mtls",
            Outcome::RejectsTokens(_) => "rejects_tokens",
            Outcome::DeniesEverything => "denies_everything",
            Outcome::EnforcedAsWritten => "enforced_as_written",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::DroppedRules(rs) => {
                let rs: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
                write!(f, "dropped rule(s) {}; the other rules apply", rs.join(", "))
            }
            Outcome::AllowsNothing => write!(
                f,
                "dropped every rule: allows nothing, so the workloads it selects allow only what other ALLOW policies allow"
            ),
            Outcome::DeniesAll => write!(f, "denies all requests it selects"),
            Outcome::DeniesRuleMatches => write!(f, "denies the requests its rules match"),
            Outcome::AuditsAll => write!(f, "audits all requests it selects"),
            Outcome::StrictMtls => write!(f, "requires mTLS (STRICT) for the workloads it selects"),
            Outcome::RejectsTokens(is) if is.is_empty() => {
                write!(f, "rejects every JWT presented to the workloads it selects")
            }
            Outcome::RejectsTokens(is) => {
                write!(f, "rejects every JWT of issuer(s) {}", is.join(", "))
            }
            Outcome::DeniesEverything => write!(
                f,
                "denies every request: the document cannot be read, so it could have held any policy"
            ),
            Outcome::EnforcedAsWritten => write!(f, "enforced as written, not as a dry run"),
        }
    }
}

/// A resource with an error, and how it is enforced instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidResource {
    /// `AuthorizationPolicy`, ..., or empty when the document could not be read.
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub location: Location,
    /// The errors, each with its location.
    pub reasons: Vec<String>,
    #[serde(serialize_with = "outcome_label")]
    pub outcome: Outcome,
    /// The sentence for [`InvalidResource::outcome`].
    pub action: String,
    /// The selector had an error, so the whole namespace is in scope.
    pub namespace_wide: bool,
}

fn outcome_label<S: serde::Serializer>(o: &Outcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.label())
}

impl InvalidResource {
    pub fn new(
        kind: &str,
        name: &str,
        namespace: &str,
        location: Location,
        reasons: &[&Problem],
        outcome: Outcome,
        namespace_wide: bool,
    ) -> Self {
        InvalidResource {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            location,
            reasons: reasons.iter().map(|p| p.to_string()).collect(),
            action: outcome.to_string(),
            outcome,
            namespace_wide,
        }
    }

    /// `Kind ns/name` (or the location for an unreadable document).
    pub fn title(&self) -> String {
        if self.kind.is_empty() {
            format!("unreadable document {}", self.location)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// One line: what, where, what was done, why (first reason; `+N more`).
    pub fn summary(&self) -> String {
        let more = match self.reasons.len() {
            0 | 1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        let wide = if self.namespace_wide {
            " (its selector is invalid, so it applies to its whole namespace)"
        } else {
            ""
        };
        format!(
            "{} at {}: {}{wide}; because {}{more}",
            self.title(),
            self.location,
            self.action,
            self.reasons.first().map(String::as_str).unwrap_or("?")
        )
    }
}

impl fmt::Display for InvalidResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The errors among `problems` located inside the object at `loc` (same file and document,
/// field path at or below `loc.field`).
pub fn errors_within<'a>(problems: &'a [Problem], loc: &Location) -> Vec<&'a Problem> {
    problems
        .iter()
        .filter(|p| !p.warning && within(&p.location, loc))
        .collect()
}

fn within(l: &Location, obj: &Location) -> bool {
    if l.file != obj.file || l.document != obj.document {
        return false;
    }
    obj.field.is_empty()
        || l.field == obj.field
        || l.field
            .strip_prefix(obj.field.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The field path of `p` relative to the object at `obj` (`spec.rules[2].from`).
pub fn relative<'a>(p: &'a Problem, obj: &Location) -> &'a str {
    let f = p.location.field.as_str();
    if obj.field.is_empty() {
        f
    } else {
        f.strip_prefix(obj.field.as_str())
            .map(|r| r.trim_start_matches('.'))
            .unwrap_or(f)
    }
}

/// The index N of a field path under `<list>[N]` (`spec.rules`, `spec.jwtRules`).
pub fn index_under(field: &str, list: &str) -> Option<usize> {
    let rest = field.strip_prefix(list)?.strip_prefix('[')?;
    rest[..rest.find(']')?].parse().ok()
}

/// Whether any error is about the workload selector (or selector/targetRef exclusivity).
pub fn selector_error(errors: &[&Problem], obj: &Location) -> bool {
    errors
        .iter()
        .any(|p| relative(p, obj).starts_with("spec.selector"))
}

/// A JWKS whose only key is an Ed25519 public key derived from a hash (SHA-256 of a fixed
/// sentence), so no private key exists for it: a token can never verify against it. Istio uses
/// a public-only key the same way when a JWKS cannot be fetched.
pub const REJECT_ALL_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","use":"sig","kid":"trustmesh-fail-closed","x":"_aw5L1xEbZienJOPKqKv-J8-M9lLGuRfAbehc96-IhA"}]}"#;

/// The issuer given to a fail-closed rule whose own issuer is unknown; no token carries it, so
/// with it in force every token is rejected as of an unknown issuer.
pub fn placeholder_issuer(namespace: &str, name: &str) -> String {
    format!("trustmesh.invalid/{namespace}/{name}")
}

/// A rule that rejects every token of `issuer` (found at the default locations).
pub fn rejecting_rule(issuer: String) -> JwtRule {
    JwtRule {
        issuer,
        jwks: Some(REJECT_ALL_JWKS.to_string()),
        ..Default::default()
    }
}

/// What can still be read from a security resource that does not deserialize: enough to
/// decide its scope and how to fail closed.
#[derive(Debug, Default)]
pub struct Sketch {
    pub name: String,
    pub namespace: String,
    /// `None`: the action field is absent (ALLOW); `Some(None)`: present but unreadable.
    pub action: Option<Option<Action>>,
    pub selector: Option<Vec<(String, String)>>,
    /// The selector was present but not a plain string map.
    pub selector_unreadable: bool,
    pub targets_ref: bool,
    pub dry_run: bool,
    pub issuers: Vec<String>,
}

/// Reads name, namespace, action, selector, targetRef and JWT issuers leniently.
pub fn sketch(value: &Value) -> Sketch {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let meta = value.get("metadata");
    let spec = value.get("spec");
    let mut out = Sketch {
        name: s(meta.and_then(|m| m.get("name"))).unwrap_or_else(|| "(unnamed)".into()),
        namespace: s(meta.and_then(|m| m.get("namespace"))).unwrap_or_else(|| "default".into()),
        ..Default::default()
    };
    out.dry_run = meta
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(crate::crd::DRY_RUN_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True"));
    let Some(spec) = spec else {
        return out;
    };
    out.action = spec.get("action").map(|a| match a.as_str() {
        Some("ALLOW") => Some(Action::Allow),
        Some("DENY") => Some(Action::Deny),
        Some("AUDIT") => Some(Action::Audit),
        Some("CUSTOM") => Some(Action::Custom),
        _ => None,
    });
    if let Some(sel) = spec.get("selector") {
        let labels = sel.get("matchLabels").and_then(Value::as_mapping).map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().map(str::to_string),
                        v.as_str().map(str::to_string),
                    )
                })
                .collect::<Vec<_>>()
        });
        match labels {
            Some(l) if l.iter().all(|(k, v)| k.is_some() && v.is_some()) => {
                out.selector = Some(l.into_iter().filter_map(|(k, v)| Some((k?, v?))).collect());
            }
            None if sel.as_mapping().is_some_and(|m| m.is_empty()) => {}
            _ => out.selector_unreadable = true,
        }
    }
    out.targets_ref = spec.get("targetRef").is_some() || spec.get("targetRefs").is_some();
    if let Some(rules) = spec.get("jwtRules").and_then(Value::as_sequence) {
        out.issuers = rules
            .iter()
            .filter_map(|r| s(r.get("issuer")))
            .filter(|i| !i.is_empty())
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_within_an_object() {
        let obj = Location::new("f", 1, "items[1]");
        let p = |f: &str| Problem::new(Location::new("f", 1, f), "x");
        assert!(within(&p("items[1].spec").location, &obj));
        assert!(within(&p("items[1]").location, &obj));
        assert!(!within(&p("items[10].spec").location, &obj));
        assert!(!within(&Location::new("f", 2, "items[1]"), &obj));
        assert_eq!(
            index_under("spec.rules[12].from[0]", "spec.rules"),
            Some(12)
        );
        assert_eq!(index_under("spec.selector", "spec.rules"), None);
    }

    #[test]
    fn sketch_reads_what_it_can() {
        let v: Value = serde_yaml::from_str(
            "metadata: {name: p, namespace: prod}\nspec: {action: MAYBE, selector: {matchLabels: {app: a}}, bogus: 1}\n",
        )
        .unwrap();
        let s = sketch(&v);
        assert_eq!((s.name.as_str(), s.namespace.as_str()), ("p", "prod"));
        assert_eq!(s.action, Some(None));
        assert_eq!(s.selector, Some(vec![("app".into(), "a".into())]));
    }
}
