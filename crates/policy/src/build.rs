//! Building a [`PolicySet`] from source texts: parse, run the webhook-parity checks, compile,
//! apply fail-closed handling to every invalid resource, index. Kept apart from `set` so the
//! evaluation code reads on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use crate::authn::{compile_peer, compile_request_authn};
use crate::authz::{self, CompiledPolicy};
use crate::crd::Action;
use crate::document::{self, Parsed, Spec};
use crate::failclosed::apply::{self, FromBroken, Ident};
use crate::load::{self, SourceText};
use crate::mesh::MeshConfig;
use crate::problem::{Notice, Problem};
use crate::report::Report;
use crate::set::{LoadError, PolicySet};

/// Parses, validates and compiles; returns the set even when problems were found.
pub(crate) fn build(sources: &[SourceText], mesh: &MeshConfig) -> (PolicySet, Report) {
    let mut parsed = Parsed::default();
    for s in sources {
        document::parse_text(&s.file, &s.text, &mut parsed);
    }
    let mut report = Report {
        problems: parsed.problems,
        notices: parsed.notices,
        ..Default::default()
    };
    let mut out = Compiled::default();
    let mut seen: HashMap<(&'static str, String, String), String> = HashMap::new();
    for r in &parsed.resources {
        let kind = kind_of(&r.spec);
        if let Some(first) = seen.insert(
            (kind, r.namespace.clone(), r.name.clone()),
            r.location.to_string(),
        ) {
            report.problems.push(
                Problem::new(
                    r.location.at("metadata.name"),
                    format!("duplicate {kind} {}/{}", r.namespace, r.name),
                )
                .hint(format!(
                    "first defined at {first}; Kubernetes keeps only one object per name"
                )),
            );
        }
        compile_resource(r, kind, mesh, &mut report, &mut out);
    }
    let deny_everything = from_broken(&parsed.broken, &mut report, &mut out);
    let mut authz = out.authz;
    authz.sort_by(|a, b| a.name.cmp(&b.name));
    check_custom_providers(&authz, mesh, &mut report.problems);
    let mut authz_by_ns: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, p) in authz.iter().enumerate() {
        authz_by_ns
            .entry(p.namespace.clone())
            .or_default()
            .push(i as u32);
    }
    let set = PolicySet {
        mesh: mesh.clone(),
        authz,
        authz_by_ns,
        peer: out.peers,
        request_authn: out.request_authn,
        views: RwLock::new(HashMap::new()),
        invalid: report.invalid.clone(),
        deny_everything,
    };
    (set, report)
}

/// The compiled resources, by kind.
#[derive(Default)]
struct Compiled {
    authz: Vec<CompiledPolicy>,
    peers: Vec<crate::peer::PeerPolicy>,
    request_authn: Vec<crate::authn::RequestAuthn>,
}

fn kind_of(spec: &Spec) -> &'static str {
    match spec {
        Spec::Authorization(_) => "AuthorizationPolicy",
        Spec::Peer(_) => "PeerAuthentication",
        Spec::Request(_) => "RequestAuthentication",
    }
}

/// One resource: the webhook-parity checks, compilation, and fail-closed handling of whatever
/// problems it has.
fn compile_resource(
    r: &document::Resource,
    kind: &'static str,
    mesh: &MeshConfig,
    report: &mut Report,
    out: &mut Compiled,
) {
    let spec_loc = r.location.at("spec");
    let (selector, target_ref, target_refs) = match &r.spec {
        Spec::Authorization(s) => (&s.selector, &s.target_ref, &s.target_refs[..]),
        Spec::Peer(s) => (&s.selector, &None, &[][..]),
        Spec::Request(s) => (&s.selector, &s.target_ref, &s.target_refs[..]),
    };
    crate::parity::selector(selector.as_ref(), &spec_loc, &mut report.problems);
    crate::parity::target_refs(
        selector.is_some(),
        target_ref.as_ref(),
        target_refs,
        &spec_loc,
        &mut report.problems,
    );
    let id = Ident {
        kind,
        name: &r.name,
        namespace: &r.namespace,
        location: &r.location,
    };
    match &r.spec {
        Spec::Authorization(spec) => {
            report.authorization_policies += 1;
            if spec.action == Action::Custom {
                crate::parity::custom_fields(spec, &spec_loc, &mut report.problems);
            }
            let mut p = authz::compile(
                &r.name,
                &r.namespace,
                r.dry_run,
                spec,
                &r.location,
                mesh,
                &mut report.problems,
            );
            report
                .invalid
                .extend(apply::authorization(&mut p, &id, &report.problems, mesh));
            out.authz.push(p);
        }
        Spec::Peer(spec) => {
            report.peer_authentications += 1;
            let mut p = compile_peer(r, spec, mesh, report);
            report
                .invalid
                .extend(apply::peer(&mut p, &id, &report.problems));
            out.peers.push(p);
        }
        Spec::Request(spec) => {
            report.request_authentications += 1;
            let mut ra = compile_request_authn(r, spec, &mut report.problems);
            report
                .invalid
                .extend(apply::request_authn(&mut ra, &id, &report.problems));
            out.request_authn.push(ra);
        }
    }
}

/// What stands in for documents that could not be parsed into a resource (fail-closed); the
/// reason to deny everything when one could not be read as YAML at all.
fn from_broken(
    broken: &[document::Broken],
    report: &mut Report,
    out: &mut Compiled,
) -> Option<String> {
    let mut deny_everything = None;
    for b in broken {
        let (made, inv) = apply::broken(b, &report.problems);
        match made {
            FromBroken::Authorization(p) => {
                report.authorization_policies += 1;
                out.authz.push(p);
            }
            FromBroken::Peer(p) => {
                report.peer_authentications += 1;
                out.peers.push(p);
            }
            FromBroken::Request(r) => {
                report.request_authentications += 1;
                out.request_authn.push(r);
            }
            FromBroken::Everything => {
                deny_everything.get_or_insert_with(|| {
                    format!(
                        "fail-closed: {} could not be read as YAML, so it could hold any policy; every request is denied until it is fixed",
                        b.location
                    )
                });
            }
        }
        report.invalid.push(inv);
    }
    deny_everything
}

/// Istio's ext_authz integration supports one provider per workload ("Authorization Policy"
/// reference, CUSTOM action): flag CUSTOM policies with different providers that can select the
/// same workload (same namespace or the root namespace, and selectors that do not conflict).
fn check_custom_providers(
    authz: &[CompiledPolicy],
    mesh: &MeshConfig,
    problems: &mut Vec<Problem>,
) {
    let custom: Vec<&CompiledPolicy> = authz
        .iter()
        .filter(|p| p.action == Action::Custom && !p.targets_ref && p.provider.is_some())
        .collect();
    let compatible = |a: &Option<Vec<(String, String)>>, b: &Option<Vec<(String, String)>>| {
        let (Some(a), Some(b)) = (a, b) else {
            return true;
        };
        a.iter()
            .all(|(k, v)| b.iter().all(|(k2, v2)| k != k2 || v == v2))
    };
    for (i, b) in custom.iter().enumerate() {
        let clash = custom[..i].iter().find(|a| {
            a.provider != b.provider
                && (a.namespace == b.namespace
                    || a.namespace == mesh.root_namespace
                    || b.namespace == mesh.root_namespace)
                && compatible(&a.selector, &b.selector)
        });
        if let Some(a) = clash {
            problems.push(
                Problem::new(
                    b.location.at("spec.provider.name"),
                    format!(
                        "CUSTOM provider {:?} may apply to the same workloads as provider {:?} of {}",
                        b.provider.as_deref().unwrap_or(""),
                        a.provider.as_deref().unwrap_or(""),
                        a.name
                    ),
                )
                .hint("Istio supports one ext_authz provider per workload and denies every request to a workload with two; use one provider or make the selectors disjoint")
                .warning(),
            );
        }
    }
}

/// Parses, validates and compiles everything, collecting every problem and notice.
pub fn validate(sources: &[SourceText], mesh: &MeshConfig) -> Report {
    build(sources, mesh).1
}

/// Building a set is this module's work; the constructors live here so `set` (the built
/// set and its queries) does not depend on how it is built.
impl PolicySet {
    /// Reads files/directories and builds the set. Only unreadable input is an error; invalid
    /// resources are enforced fail-closed (see [`PolicySet::invalid_resources`]).
    pub fn load(
        paths: &[PathBuf],
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        let sources = load::read_paths(paths)?;
        PolicySet::from_sources(&sources, mesh)
    }

    pub fn from_sources(
        sources: &[SourceText],
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        let (set, report) = crate::build::build(sources, mesh);
        let (warnings, errors): (Vec<Problem>, Vec<Problem>) =
            report.problems.into_iter().partition(|p| p.warning);
        let mut notices = report.notices;
        // Errors outside any security resource (a document that is not an object, a List
        // without items) change nothing that is enforced; they are passed on as notices.
        let inside = |p: &Problem| {
            set.invalid.iter().any(|i| {
                !crate::failclosed::errors_within(std::slice::from_ref(p), &i.location).is_empty()
            })
        };
        notices.extend(errors.into_iter().filter(|p| !inside(p)).map(|e| Notice {
            location: e.location,
            message: match e.hint {
                Some(h) => format!("error: {} (hint: {h})", e.message),
                None => format!("error: {}", e.message),
            },
        }));
        notices.extend(warnings.into_iter().map(|w| Notice {
            location: w.location,
            message: match w.hint {
                Some(h) => format!("warning: {} (hint: {h})", w.message),
                None => format!("warning: {}", w.message),
            },
        }));
        Ok((set, notices))
    }

    /// One YAML text (possibly multi-document); `file` labels locations in messages.
    pub fn from_yaml_str(
        file: &str,
        text: &str,
        mesh: &MeshConfig,
    ) -> Result<(PolicySet, Vec<Notice>), LoadError> {
        PolicySet::from_sources(
            &[SourceText {
                file: file.into(),
                text: text.into(),
            }],
            mesh,
        )
    }
}
