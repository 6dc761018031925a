//! Splitting YAML text into Istio security resources (pure; the text comes from `load`).
//!
//! The text is split into objects by [`crate::split`] (multi-document files, `kind: List`). Kinds
//! other than the three security CRDs are skipped with a notice so a whole manifests folder can be
//! pointed at; unknown fields inside a security resource are problems naming the field path.
//! A security resource that cannot be read, and a document that is not YAML at all, are kept as
//! [`Broken`] so the set can fail closed for them (see [`crate::failclosed`]).

use serde::Deserialize;

use crate::crd::DRY_RUN_ANNOTATION;
use crate::crd::{
    Action, AuthorizationPolicySpec, ObjectMeta, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::failclosed::{sketch, Sketch};
use crate::problem::{Location, Notice, Problem};
use crate::split::{kind_and_api, Piece};

/// API versions accepted for the security kinds, as Istio serves them.
pub const API_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

#[derive(Debug, Clone)]
pub enum Spec {
    Authorization(AuthorizationPolicySpec),
    Peer(PeerAuthenticationSpec),
    Request(RequestAuthenticationSpec),
}

/// One parsed security resource and where it came from (`location.field` is the path of the
/// object itself: empty, or `items[3]` inside a List).
#[derive(Debug, Clone)]
pub struct Resource {
    pub location: Location,
    pub name: String,
    pub namespace: String,
    pub creation_timestamp: Option<String>,
    pub dry_run: bool,
    pub spec: Spec,
}

/// A security resource that could not be read (kind known, or in the `security.istio.io`
/// group), or a document that is not YAML (`kind` empty): what little is known about it.
#[derive(Debug)]
pub struct Broken {
    pub location: Location,
    pub kind: String,
    pub sketch: Sketch,
}

/// Everything found in a set of texts.
#[derive(Debug, Default)]
pub struct Parsed {
    pub resources: Vec<Resource>,
    pub broken: Vec<Broken>,
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
}

impl Parsed {
    /// A resource (or a whole document) that cannot be used: its problem, and what is known of
    /// it so it can be enforced fail-closed.
    fn broken(&mut self, problem: Problem, location: Location, kind: String, sketch: Sketch) {
        self.problems.push(problem);
        self.broken.push(Broken {
            location,
            kind,
            sketch,
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Object<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

/// Parses one file's text; `file` is only used to label locations.
pub fn parse_text(file: &str, text: &str, out: &mut Parsed) {
    for piece in crate::split::split(file, text) {
        match piece {
            Piece::Object(loc, value) => parse_object(loc, value, out),
            Piece::Problem(p) => out.problems.push(p),
            Piece::Unreadable(p) => {
                let location = p.location.clone();
                out.broken(p, location, String::new(), Sketch::default());
            }
        }
    }
}

fn parse_object(loc: Location, value: serde_yaml::Value, out: &mut Parsed) {
    let (kind, api) = kind_and_api(&value);
    let known = matches!(
        kind.as_str(),
        "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication"
    );
    if !known && api.starts_with("security.istio.io/") {
        // Misspelt kind of the security group: it was meant as a policy, maybe a DENY.
        let problem = Problem::new(
            loc.at("kind"),
            format!("unknown security.istio.io kind {kind:?}"),
        )
        .hint("use AuthorizationPolicy, PeerAuthentication or RequestAuthentication");
        out.broken(problem, loc, kind, sketch(&value));
        return;
    }
    if !known {
        let what = if kind.is_empty() {
            "(no kind)".to_string()
        } else {
            kind
        };
        out.notices.push(Notice {
            location: loc,
            message: format!("skipped {what} {api}: not a security.istio.io policy kind"),
        });
        return;
    }
    if !API_VERSIONS.contains(&api.as_str()) {
        let problem = Problem::new(
            loc.at("apiVersion"),
            format!("unsupported apiVersion {api:?} for {kind}"),
        )
        .hint("use security.istio.io/v1 or security.istio.io/v1beta1");
        out.broken(problem, loc, kind, sketch(&value));
        return;
    }
    crate::parity::empty_lists(&kind, &value, &loc, &mut out.problems);
    let raw = value.clone();
    let result = match kind.as_str() {
        "AuthorizationPolicy" => {
            de::<AuthorizationPolicySpec>(&loc, value).map(|(m, s)| (m, Spec::Authorization(s)))
        }
        "PeerAuthentication" => {
            de::<PeerAuthenticationSpec>(&loc, value).map(|(m, s)| (m, Spec::Peer(s)))
        }
        _ => de::<RequestAuthenticationSpec>(&loc, value).map(|(m, s)| (m, Spec::Request(s))),
    };
    match result {
        Ok((meta, spec)) => {
            if meta.name.is_empty() {
                let problem = Problem::new(loc.at("metadata.name"), "metadata.name is required")
                    .hint("give every policy a name so decisions can report it");
                out.broken(problem, loc, kind, sketch(&raw));
                return;
            }
            let dry_run = dry_run(&meta, &spec, &loc, out);
            out.resources.push(Resource {
                location: loc,
                name: meta.name,
                namespace: meta.namespace.unwrap_or_else(|| "default".to_string()),
                creation_timestamp: meta.creation_timestamp,
                dry_run,
                spec,
            })
        }
        Err(p) => out.broken(p, loc, kind, sketch(&raw)),
    }
}

/// The `istio.io/dry-run` annotation. Istio's webhook (`checkDryRunAnnotation` in
/// pkg/config/validation/validation.go) accepts it only on ALLOW and DENY AuthorizationPolicies
/// and only as a Go boolean; its builder (`isDryRun` in pilot/pkg/security/authz/builder/
/// builder.go) enforces a policy whose value does not parse, so that is what we do too.
fn dry_run(meta: &ObjectMeta, spec: &Spec, loc: &Location, out: &mut Parsed) -> bool {
    let Some(v) = meta.annotations.get(DRY_RUN_ANNOTATION) else {
        return false;
    };
    let at = loc.at("metadata.annotations");
    let action = match spec {
        Spec::Authorization(s) => s.action,
        _ => {
            out.problems.push(
                Problem::new(
                    at,
                    format!("{DRY_RUN_ANNOTATION} is only supported on AuthorizationPolicy"),
                )
                .hint("remove the annotation"),
            );
            return false;
        }
    };
    if matches!(action, Action::Custom | Action::Audit) {
        out.problems.push(
            Problem::new(
                at.clone(),
                format!(
                    "{DRY_RUN_ANNOTATION} only supports action ALLOW or DENY, not {}",
                    action.as_str()
                ),
            )
            .hint("remove the annotation"),
        );
    }
    match v.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
        "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
        other => {
            out.problems.push(
                Problem::new(at, format!("{DRY_RUN_ANNOTATION}: {other:?} is not a boolean; the policy is enforced (not dry-run), as Istio's builder does"))
                    .hint("use \"true\" or \"false\""),
            );
            false
        }
    }
}

/// Fields people put in a policy that belong to the mesh config (users of the trust-domain
/// migration guides write them into a PeerAuthentication): said where they go instead.
fn misplaced(path: &str) -> Option<&'static str> {
    match path.rsplit('.').next()? {
        "trustDomainAliases" => Some(
            "aliases are meshConfig.trustDomainAliases (the mesh config, --mesh or the control \
             plane's mesh file), not a field of a policy",
        ),
        "trustDomain" => Some(
            "the trust domain is meshConfig.trustDomain (the mesh config, --mesh or the control \
             plane's mesh file), not a field of a policy",
        ),
        _ => None,
    }
}

fn de<S: for<'de> Deserialize<'de> + Default>(
    loc: &Location,
    value: serde_yaml::Value,
) -> Result<(ObjectMeta, S), Problem> {
    match serde_path_to_error::deserialize::<_, Object<S>>(value) {
        Ok(o) => Ok((o.metadata, o.spec)),
        Err(e) => {
            let path = e.path().to_string();
            let msg = e.inner().to_string();
            let hint = if let Some(h) = misplaced(&path) {
                h
            } else if msg.contains("unknown field") {
                "check the spelling against the Istio reference; unknown fields are rejected so a typo cannot silently change access"
            } else {
                "check the value's type against the Istio reference"
            };
            // serde_path_to_error's path already ends with an unknown field's own name.
            let field = if path == "." { String::new() } else { path };
            Err(Problem::new(loc.at(field), msg).hint(hint))
        }
    }
}
