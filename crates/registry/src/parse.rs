//! From text to the registry's resources: the text is split into objects by the policy crate's
//! [`trustmesh_policy::split`] (multi-document files, `kind: List`), so one folder can hold
//! security policies and networking resources side by side and both readers agree on every
//! location. This module keeps WorkloadEntry, ServiceEntry and DestinationRule objects and
//! quietly leaves every other kind to whoever reads it; an unknown kind of the
//! `networking.istio.io` group is a problem (a misspelt ServiceEntry would otherwise vanish).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use trustmesh_policy::crd::ObjectMeta;
use trustmesh_policy::split::{kind_and_api, split, Piece};
use trustmesh_policy::{Location, Notice, Problem};

use crate::crd::{DestinationRuleSpec, ServiceEntrySpec, WorkloadEntrySpec};

/// API versions Istio serves the networking kinds at.
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The kinds this crate reads.
pub const KINDS: [&str; 3] = ["WorkloadEntry", "ServiceEntry", "DestinationRule"];

/// Other `networking.istio.io` kinds: read by nobody here, skipped quietly.
const OTHER_NETWORKING_KINDS: [&str; 6] = [
    "VirtualService",
    "Gateway",
    "Sidecar",
    "EnvoyFilter",
    "WorkloadGroup",
    "ProxyConfig",
];

/// One parsed resource and where it came from.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    pub location: Location,
    pub name: String,
    pub namespace: String,
    pub created: Option<String>,
    /// Stands for a Kubernetes pod ([`crate::model::POD_ANNOTATION`]): its TLS mode follows
    /// the pod's label alone, as Istio reads pods.
    pub pod: bool,
    /// [`crate::model::NODE_ANNOTATION`], when the object is a pod's.
    pub node: String,
    pub spec: S,
}

/// A DestinationRule that could not be read, with the host it names when that much is
/// readable: connections to that host are refused rather than sent with TLS settings nobody
/// can know (see [`crate::rules`]).
#[derive(Debug, Clone)]
pub struct BrokenRule {
    pub location: Location,
    pub name: String,
    pub namespace: String,
    pub host: Option<String>,
}

/// Everything found in a set of texts.
#[derive(Debug, Default)]
pub struct Parsed {
    pub workload_entries: Vec<Resource<WorkloadEntrySpec>>,
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    pub broken_rules: Vec<BrokenRule>,
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
    /// Every object of a kind this crate reads (or of an unknown networking kind), valid or
    /// not: the objects other readers of the same files need not mention.
    pub handled: Vec<Location>,
    /// Objects of each of [`KINDS`] met, readable or not.
    pub counts: [usize; 3],
    seen: HashMap<(String, String, String), String>,
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

/// Parses one file's text into `out`; `file` only labels locations.
pub fn parse_text(file: &str, text: &str, out: &mut Parsed) {
    for piece in split(file, text) {
        match piece {
            Piece::Object(loc, value) => parse_object(loc, value, out),
            Piece::Problem(p) | Piece::Unreadable(p) => out.problems.push(p),
        }
    }
}

fn parse_object(loc: Location, value: serde_yaml::Value, out: &mut Parsed) {
    let (kind, api) = kind_and_api(&value);
    let networking = api.starts_with("networking.istio.io/");
    if !KINDS.contains(&kind.as_str()) {
        if networking && !OTHER_NETWORKING_KINDS.contains(&kind.as_str()) {
            out.handled.push(loc.clone());
            out.problems.push(
                Problem::new(
                    loc.at("kind"),
                    format!("unknown networking.istio.io kind \"{kind}\""),
                )
                .hint("the service registry reads WorkloadEntry, ServiceEntry and DestinationRule"),
            );
        }
        return;
    }
    out.handled.push(loc.clone());
    if let Some(i) = KINDS.iter().position(|k| *k == kind) {
        out.counts[i] += 1;
    }
    if !API_VERSIONS.contains(&api.as_str()) {
        let problem = Problem::new(
            loc.at("apiVersion"),
            format!("unsupported apiVersion \"{api}\" for {kind}"),
        )
        .hint("use networking.istio.io/v1 (or v1beta1, v1alpha3)");
        return broken(out, &kind, &loc, &value, problem);
    }
    match kind.as_str() {
        "WorkloadEntry" => {
            if let Some(r) = resource(out, &kind, &loc, &value) {
                out.workload_entries.push(r);
            }
        }
        "ServiceEntry" => {
            if let Some(r) = resource(out, &kind, &loc, &value) {
                out.service_entries.push(r);
            }
        }
        _ => {
            if let Some(r) = resource(out, &kind, &loc, &value) {
                out.destination_rules.push(r);
            }
        }
    }
}

/// Deserializes one object; on failure records the problem (and a broken DestinationRule).
fn resource<S: DeserializeOwned + Default>(
    out: &mut Parsed,
    kind: &str,
    loc: &Location,
    value: &serde_yaml::Value,
) -> Option<Resource<S>> {
    let object: Object<S> = match serde_path_to_error::deserialize(value.clone()) {
        Ok(o) => o,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let hint = if message.contains("unknown field") {
                "check the spelling against the Istio reference; unknown fields are refused so a typo cannot silently change where traffic goes"
            } else {
                "check the value's type against the Istio reference"
            };
            let field = if path == "." { String::new() } else { path };
            let problem = Problem::new(loc.at(field), message).hint(hint);
            broken(out, kind, loc, value, problem);
            return None;
        }
    };
    let meta = object.metadata;
    if meta.name.is_empty() {
        let problem = Problem::new(loc.at("metadata.name"), "metadata.name is required")
            .hint("give every resource a name so problems and decisions can report it");
        broken(out, kind, loc, value, problem);
        return None;
    }
    let namespace = meta.namespace.unwrap_or_else(|| "default".to_string());
    let key = (kind.to_string(), namespace.clone(), meta.name.clone());
    if let Some(first) = out.seen.get(&key) {
        out.problems.push(
            Problem::new(
                loc.at("metadata.name"),
                format!("duplicate {kind} {namespace}/{}", meta.name),
            )
            .hint(format!(
                "first defined at {first}; Kubernetes keeps only one object per name"
            )),
        );
    } else {
        out.seen.insert(key, loc.to_string());
    }
    Some(Resource {
        location: loc.clone(),
        name: meta.name,
        namespace,
        created: meta.creation_timestamp,
        pod: meta.annotations.contains_key(crate::model::POD_ANNOTATION),
        node: meta
            .annotations
            .get(crate::model::NODE_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        spec: object.spec,
    })
}

/// A resource that cannot be used: its problem, and for a DestinationRule what is readable of
/// it, so connections to its host fail closed.
fn broken(out: &mut Parsed, kind: &str, loc: &Location, value: &serde_yaml::Value, p: Problem) {
    out.problems.push(p);
    if kind != "DestinationRule" {
        return;
    }
    let text = |v: Option<&serde_yaml::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let meta = value.get("metadata");
    out.broken_rules.push(BrokenRule {
        location: loc.clone(),
        name: text(meta.and_then(|m| m.get("name"))).unwrap_or_default(),
        namespace: text(meta.and_then(|m| m.get("namespace")))
            .unwrap_or_else(|| "default".to_string()),
        host: text(value.get("spec").and_then(|s| s.get("host"))),
    });
}
