//! PeerAuthentication and RequestAuthentication compiled for resolution, validated in the same
//! pass (`pkg/config/validation/validation.go` `ValidatePeerAuthentication`, `validateJwtRule`).

use crate::crd::{JwtRule, RequestAuthenticationSpec};
use crate::document::Resource;
use crate::mesh::MeshConfig;
use crate::peer::PeerPolicy;
use crate::problem::{Notice, Problem};
use crate::report::Report;

#[derive(Debug, Clone)]
pub(crate) struct RequestAuthn {
    pub(crate) namespace: String,
    pub(crate) selector: Option<Vec<(String, String)>>,
    pub(crate) targets_ref: bool,
    pub(crate) rules: Vec<JwtRule>,
}

pub(crate) fn compile_peer(
    r: &Resource,
    spec: &crate::crd::PeerAuthenticationSpec,
    mesh: &MeshConfig,
    report: &mut Report,
) -> PeerPolicy {
    let loc = r.location.at("spec");
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !has_selector {
        report.problems.push(
            Problem::new(loc.at("portLevelMtls"), "portLevelMtls requires a workload selector")
                .hint("add selector.matchLabels for the workload whose ports these are; Istio rejects port-level settings in namespace- or mesh-wide policies"),
        );
    }
    for port in spec.port_level_mtls.keys() {
        if *port == 0 || *port > 65535 {
            report.problems.push(
                Problem::new(
                    loc.at(format!("portLevelMtls.{port}")),
                    format!("{port} is not a valid port"),
                )
                .hint("use the workload's container port, 1-65535"),
            );
        }
    }
    if has_selector && r.namespace == mesh.root_namespace {
        report.notices.push(Notice {
            location: loc.at("selector"),
            message: format!(
                "PeerAuthentication {}/{} has a selector in the root namespace; Istio applies it to no workload",
                r.namespace, r.name
            ),
        });
    }
    PeerPolicy {
        name: format!("{}/{}", r.namespace, r.name),
        namespace: r.namespace.clone(),
        selector: spec.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        mode: spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default(),
        port_modes: spec
            .port_level_mtls
            .iter()
            .map(|(p, m)| (*p, m.mode))
            .collect(),
        created: r.creation_timestamp.clone(),
    }
}

pub(crate) fn compile_request_authn(
    r: &Resource,
    spec: &RequestAuthenticationSpec,
    problems: &mut Vec<Problem>,
) -> RequestAuthn {
    let loc = r.location.at("spec");
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let l = loc.at(format!("jwtRules[{i}]"));
        if rule.issuer.is_empty() && rule.jwks_uri.as_deref().unwrap_or("").is_empty() {
            problems.push(
                Problem::new(l.at("issuer"), "issuer or jwksUri must be set").hint(
                    "set issuer to the token's `iss` claim, e.g. https://accounts.example.com",
                ),
            );
        }
        // istio/api: spaceDelimitedClaims items have MinLength=1, the list MaxItems=64.
        if rule.space_delimited_claims.len() > 64 {
            problems.push(
                Problem::new(
                    l.at("spaceDelimitedClaims"),
                    format!(
                        "{} claims; Istio allows at most 64",
                        rule.space_delimited_claims.len()
                    ),
                )
                .hint("list only the claims policies match word by word"),
            );
        }
        for (field, vs) in [
            ("audiences", &rule.audiences),
            ("fromParams", &rule.from_params),
            ("fromCookies", &rule.from_cookies),
            ("spaceDelimitedClaims", &rule.space_delimited_claims),
        ] {
            for (j, v) in vs.iter().enumerate() {
                if v.is_empty() {
                    problems.push(
                        Problem::new(l.at(format!("{field}[{j}]")), "empty string")
                            .hint("remove the empty entry"),
                    );
                }
            }
        }
        if let Some(t) = &rule.timeout {
            // The proxy compiles the rule with this same parser and rule (Istio's
            // ValidateDuration: at least 1ms, whole milliseconds), so what validates, loads.
            if let Err(e) = trustmesh_config::Duration::parse_millis(t) {
                problems.push(
                    Problem::new(l.at("timeout"), e.to_string())
                        .hint("use a duration such as 5s, 500ms or 1m"),
                );
            }
        }
        if let Some(u) = &rule.jwks_uri {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                problems.push(
                    Problem::new(l.at("jwksUri"), format!("{u:?} is not an http(s) URL"))
                        .hint("jwksUri must be an https:// URL serving the JWKS"),
                );
            }
        }
        if let Some(j) = &rule.jwks {
            if serde_json::from_str::<serde_json::Value>(j).is_err() {
                problems.push(
                    Problem::new(l.at("jwks"), "jwks is not a JSON document").hint(
                        "jwks holds the JWKS inline as a JSON string, e.g. '{\"keys\":[...]}'",
                    ),
                );
            }
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                problems.push(
                    Problem::new(
                        l.at(format!("fromHeaders[{j}].name")),
                        "header name is empty",
                    )
                    .hint("e.g. name: Authorization, prefix: \"Bearer \""),
                );
            }
        }
        for (j, h) in rule.output_claim_to_headers.iter().enumerate() {
            if h.header.is_empty() || h.claim.is_empty() {
                problems.push(
                    Problem::new(
                        l.at(format!("outputClaimToHeaders[{j}]")),
                        "header and claim must both be set",
                    )
                    .hint("e.g. header: x-jwt-sub, claim: sub"),
                );
            } else if !crate::parity::is_header_name(&h.header) {
                problems.push(
                    Problem::new(
                        l.at(format!("outputClaimToHeaders[{j}].header")),
                        format!("{:?} is not a valid HTTP header name", h.header),
                    )
                    .hint("header names are tokens: letters, digits and !#$%&'*+-.^_`|~"),
                );
            }
        }
    }
    RequestAuthn {
        namespace: r.namespace.clone(),
        selector: spec.selector.as_ref().map(|s| {
            s.match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        targets_ref: spec.target_ref.is_some() || !spec.target_refs.is_empty(),
        rules: spec.jwt_rules.clone(),
    }
}
