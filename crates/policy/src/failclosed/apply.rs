//! Turning an invalid resource into its fail-closed form (the rules are in the parent module's
//! doc): the compiled AuthorizationPolicy, PeerAuthentication or RequestAuthentication is
//! rewritten in place, and an [`InvalidResource`] records what was done and why.

use std::collections::BTreeSet;

use super::{
    errors_within, index_under, placeholder_issuer, rejecting_rule, relative, selector_error,
    InvalidResource, Outcome, Sketch,
};
use crate::authn::RequestAuthn;
use crate::authz::{CompiledPolicy, CompiledRule};
use crate::crd::{Action, MtlsMode};
use crate::document::Broken;
use crate::mesh::MeshConfig;
use crate::peer::PeerPolicy;
use crate::problem::{Location, Problem};

/// Where the resource is and what it is called.
pub struct Ident<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub location: &'a Location,
}

impl Ident<'_> {
    fn record(&self, reasons: &[&Problem], outcome: Outcome, wide: bool) -> InvalidResource {
        InvalidResource::new(
            self.kind,
            self.name,
            self.namespace,
            self.location.clone(),
            reasons,
            outcome,
            wide,
        )
    }
}

fn note(reasons: &[&Problem], outcome: &Outcome) -> String {
    let why = reasons
        .first()
        .map(|p| format!("{}: {}", p.location, p.message))
        .unwrap_or_default();
    format!("invalid ({why}); fail-closed: {outcome}")
}

/// The CUSTOM provider is usable when the mesh defines it as an ext_authz provider.
fn provider_usable(p: &CompiledPolicy, mesh: &MeshConfig) -> bool {
    p.provider
        .as_deref()
        .and_then(|n| mesh.provider(n))
        .is_some_and(|e| e.is_ext_authz())
}

fn deny_all(p: &mut CompiledPolicy) {
    p.action = Action::Deny;
    p.provider = None;
    p.http_provider_only = false;
    p.rules = vec![CompiledRule::default()];
}

/// Applies fail-closed handling to an AuthorizationPolicy if it has errors (or a CUSTOM
/// provider Istio's builder could not use).
pub fn authorization(
    p: &mut CompiledPolicy,
    id: &Ident,
    problems: &[Problem],
    mesh: &MeshConfig,
) -> Option<InvalidResource> {
    let errors = errors_within(problems, id.location);
    let wide = selector_error(&errors, id.location);
    if wide {
        p.selector = None;
        p.targets_ref = false;
    }
    let (outcome, reasons) = if errors.is_empty() {
        if p.action != Action::Custom || p.provider.is_none() || provider_usable(p, mesh) {
            return None;
        }
        // pilot/pkg/security/authz/builder/builder.go: "failed to process CUSTOM action for
        // provider ..., will generate deny configs" — the rules become DENY rules.
        let reasons: Vec<&Problem> = problems
            .iter()
            .filter(|q| {
                q.location.file == id.location.file && q.location.document == id.location.document
            })
            .filter(|q| relative(q, id.location).starts_with("spec.provider"))
            .collect();
        p.action = Action::Deny;
        p.provider = None;
        p.http_provider_only = false;
        (Outcome::DeniesRuleMatches, reasons)
    } else if matches!(p.action, Action::Allow | Action::Deny)
        && errors
            .iter()
            .all(|q| relative(q, id.location).starts_with("metadata.annotations"))
    {
        (Outcome::EnforcedAsWritten, errors)
    } else {
        let outcome = match p.action {
            Action::Allow => {
                let rel = |q: &&Problem| index_under(relative(q, id.location), "spec.rules");
                let bad: BTreeSet<usize> = errors.iter().filter_map(rel).collect();
                let whole = errors.iter().any(|q| rel(q).is_none()) || bad.len() >= p.rules.len();
                for (i, r) in p.rules.iter_mut().enumerate() {
                    if whole || bad.contains(&i) {
                        *r = CompiledRule {
                            dropped: true,
                            ..Default::default()
                        };
                    }
                }
                if whole {
                    Outcome::AllowsNothing
                } else {
                    Outcome::DroppedRules(bad.into_iter().collect())
                }
            }
            Action::Deny | Action::Custom => {
                deny_all(p);
                Outcome::DeniesAll
            }
            Action::Audit => {
                p.rules = vec![CompiledRule::default()];
                Outcome::AuditsAll
            }
        };
        (outcome, errors)
    };
    p.fail_closed = Some(note(&reasons, &outcome));
    Some(id.record(&reasons, outcome, wide))
}

/// An invalid PeerAuthentication requires mTLS for its scope.
pub fn peer(p: &mut PeerPolicy, id: &Ident, problems: &[Problem]) -> Option<InvalidResource> {
    let errors = errors_within(problems, id.location);
    if errors.is_empty() {
        return None;
    }
    let wide = selector_error(&errors, id.location);
    if wide {
        p.selector = None;
    }
    p.mode = MtlsMode::Strict;
    p.port_modes.clear();
    Some(id.record(&errors, Outcome::StrictMtls, wide))
}

/// An invalid `jwtRules` entry rejects every token of its issuer; an error outside the rules
/// makes every rule do so.
pub fn request_authn(
    r: &mut RequestAuthn,
    id: &Ident,
    problems: &[Problem],
) -> Option<InvalidResource> {
    let errors = errors_within(problems, id.location);
    if errors.is_empty() {
        return None;
    }
    let wide = selector_error(&errors, id.location);
    if wide {
        r.selector = None;
        r.targets_ref = false;
    }
    let rel = |q: &&Problem| index_under(relative(q, id.location), "spec.jwtRules");
    let bad: BTreeSet<usize> = errors.iter().filter_map(rel).collect();
    let whole = errors.iter().any(|q| rel(q).is_none());
    let mut issuers = Vec::new();
    for (i, rule) in r.rules.iter_mut().enumerate() {
        if whole || bad.contains(&i) {
            let issuer = if rule.issuer.is_empty() {
                placeholder_issuer(id.namespace, id.name)
            } else {
                rule.issuer.clone()
            };
            issuers.push(issuer.clone());
            *rule = rejecting_rule(issuer);
        }
    }
    Some(id.record(&errors, Outcome::RejectsTokens(issuers), wide))
}

/// What a resource that could not be read at all becomes.
pub enum FromBroken {
    Authorization(CompiledPolicy),
    Peer(PeerPolicy),
    Request(RequestAuthn),
    /// Not YAML: deny every request.
    Everything,
}

/// Fail-closed form of a resource that did not parse, from what its [`Sketch`] could read.
pub fn broken(b: &Broken, problems: &[Problem]) -> (FromBroken, InvalidResource) {
    let errors = errors_within(problems, &b.location);
    let s: &Sketch = &b.sketch;
    let id = Ident {
        kind: &b.kind,
        name: &s.name,
        namespace: &s.namespace,
        location: &b.location,
    };
    let wide = s.selector_unreadable;
    let selector = if wide { None } else { s.selector.clone() };
    let (made, outcome) = match b.kind.as_str() {
        "" => {
            let r = InvalidResource::new(
                "",
                "",
                "",
                b.location.clone(),
                &errors,
                Outcome::DeniesEverything,
                false,
            );
            return (FromBroken::Everything, r);
        }
        "PeerAuthentication" => (
            FromBroken::Peer(PeerPolicy {
                name: format!("{}/{}", s.namespace, s.name),
                namespace: s.namespace.clone(),
                selector,
                mode: MtlsMode::Strict,
                port_modes: Default::default(),
                created: None,
            }),
            Outcome::StrictMtls,
        ),
        "RequestAuthentication" => {
            let issuers = if s.issuers.is_empty() {
                vec![placeholder_issuer(&s.namespace, &s.name)]
            } else {
                s.issuers.clone()
            };
            let shown = if s.issuers.is_empty() {
                Vec::new()
            } else {
                issuers.clone()
            };
            (
                FromBroken::Request(RequestAuthn {
                    namespace: s.namespace.clone(),
                    selector,
                    targets_ref: s.targets_ref && !wide,
                    rules: issuers.into_iter().map(rejecting_rule).collect(),
                }),
                Outcome::RejectsTokens(shown),
            )
        }
        kind => {
            // An absent action is ALLOW; an unreadable one (or an unknown kind of the
            // security group) could have been DENY.
            let action = match (kind, &s.action) {
                ("AuthorizationPolicy", None) => Some(Action::Allow),
                ("AuthorizationPolicy", Some(a)) => *a,
                _ => None,
            };
            let mut p = CompiledPolicy {
                name: format!("{}/{}", s.namespace, s.name),
                namespace: s.namespace.clone(),
                selector,
                action: Action::Allow,
                provider: None,
                dry_run: s.dry_run,
                targets_ref: s.targets_ref && !wide,
                location: b.location.clone(),
                http_provider_only: false,
                rules: Vec::new(),
                fail_closed: None,
            };
            let outcome = match action {
                Some(Action::Allow) => Outcome::AllowsNothing,
                Some(Action::Audit) => {
                    p.action = Action::Audit;
                    p.rules = vec![CompiledRule::default()];
                    Outcome::AuditsAll
                }
                _ => {
                    deny_all(&mut p);
                    Outcome::DeniesAll
                }
            };
            p.fail_closed = Some(note(&errors, &outcome));
            (FromBroken::Authorization(p), outcome)
        }
    };
    (made, id.record(&errors, outcome, wide))
}
