//! Istio security policy for trustmesh: parse, validate, resolve and evaluate
//! `PeerAuthentication`, `RequestAuthentication` and `AuthorizationPolicy` exactly as Istio
//! documents them. Pure logic; the only I/O is the [`load`] module.
//!
//! # API (stable; the proxy codes against it)
//! - [`MeshConfig::from_yaml_str`] / [`load::read_mesh`]: trust domain (+aliases), root
//!   namespace, ext_authz extension providers, `pathNormalization`.
//! - [`normalize`]: request normalization (Istio's path normalization modes, the requests
//!   refused before policy), shared by the proxy and `trustmesh authz check`.
//! - [`PolicySet::load`]`(paths, &mesh) -> Result<(PolicySet, Vec<Notice>), LoadError>`,
//!   [`PolicySet::from_yaml_str`], [`PolicySet::from_sources`]; only unreadable input
//!   (`LoadError::Read`) fails. Invalid resources are enforced fail-closed and listed by
//!   [`PolicySet::invalid_resources`] (name, namespace, location, reasons, [`Outcome`]);
//!   [`PolicySet::denies_everything`] says why when a document was not YAML at all.
//!   [`validate`] collects every problem instead of stopping at the first, and the same
//!   fail-closed list (`Report::invalid`).
//! - [`PolicySet::mtls_mode`]`(&Workload, port) -> (MtlsMode, Option<String>)`.
//! - [`PolicySet::jwt_rules`]`(&Workload) -> Vec<&JwtRule>`.
//! - [`PolicySet::evaluate`]`(&Request) -> Decision`: mTLS mode + CUSTOM → DENY → ALLOW, with
//!   every applicable policy explained (what `trustmesh authz check` prints).
//! - Hot path for the proxy, whose TLS layer already enforced the mTLS mode (pass
//!   `source.principal: None` when the peer was not verified):
//!   [`PolicySet::evaluate_authz_only`] returns `Verdict::Custom { provider, policy }` when a
//!   CUSTOM policy matches; call the provider, and if it allows call
//!   [`PolicySet::evaluate_after_custom`] (DENY → ALLOW only). These return only the deciding
//!   policy (and a matching AUDIT policy) in `policies`, and use the per-workload rule index.
//!
//! Dry-run policies (`istio.io/dry-run: "true"`) are reported by `evaluate` but never enforced.
//!
//! ```
//! use trustmesh_policy::{MeshConfig, PolicySet, Request, Verdict, Workload, MtlsMode};
//!
//! let mesh = MeshConfig::from_yaml_str(
//!     "extensionProviders:\n- name: opa\n  envoyExtAuthzGrpc: {service: opa.opa.svc, port: 9191}\n",
//! ).unwrap();
//! let yaml = r#"
//! apiVersion: security.istio.io/v1
//! kind: PeerAuthentication
//! metadata: {name: default, namespace: istio-system}
//! spec: {mtls: {mode: STRICT}}
//! ---
//! apiVersion: security.istio.io/v1
//! kind: AuthorizationPolicy
//! metadata: {name: ext, namespace: prod}
//! spec: {action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]}
//! ---
//! apiVersion: security.istio.io/v1
//! kind: AuthorizationPolicy
//! metadata: {name: frontend-only, namespace: prod}
//! spec:
//!   selector: {matchLabels: {app: reviews}}
//!   rules: [{from: [{source: {principals: [cluster.local/ns/prod/sa/frontend]}}]}]
//! "#;
//! let (set, _notices) = PolicySet::from_yaml_str("policies.yaml", yaml, &mesh).unwrap();
//!
//! let reviews = Workload::new("prod", &[("app", "reviews")]);
//! assert_eq!(set.mtls_mode(&reviews, 9080).0, MtlsMode::Strict);
//!
//! let req: Request = serde_json::from_value(serde_json::json!({
//!     "destination": {"namespace": "prod", "labels": {"app": "reviews"}, "port": 9080},
//!     "source": {"principal": "spiffe://cluster.local/ns/prod/sa/frontend"},
//!     "http": {"method": "GET", "path": "/admin/users", "host": "reviews"}
//! })).unwrap();
//! // Proxy hot path: the CUSTOM policy matches, so ask the external authorizer first...
//! let d = set.evaluate_authz_only(&req);
//! assert_eq!(d.decision, Verdict::Custom { provider: "opa".into(), policy: "prod/ext".into() });
//! // ...and when it allows, finish with DENY -> ALLOW.
//! assert_eq!(set.evaluate_after_custom(&req).decision, Verdict::Allow);
//! ```
//!
//! # Interpretations worth knowing
//! - Scope: an AuthorizationPolicy applies to workloads of its namespace whose labels include
//!   its `selector.matchLabels`; in the root namespace it applies mesh-wide (with a selector: to
//!   matching workloads of every namespace). Policies with `targetRef(s)` attach to gateways and
//!   waypoints and never to sidecar workloads.
//! - HTTP-only fields (`requestPrincipals`, `hosts`, `methods`, `paths`, `request.headers`,
//!   `request.auth.*`) on a TCP request (`http` absent): an ALLOW rule using one cannot match;
//!   DENY, AUDIT and CUSTOM rules ignore them and match on the rest (Istio's generator does the
//!   same, erring towards denying). CUSTOM with an `envoyExtAuthzHttp` provider does not apply
//!   to TCP at all; with `envoyExtAuthzGrpc` it does.
//! - CUSTOM policies with different providers that could select the same workload are a load
//!   problem (Istio would deny everything for such a workload), so a loaded set never has one.
//! - `hosts` match case-insensitively against the whole authority, port included (list
//!   `host` and `host:*` to accept both, as Istio's security best practices advise).
//! - `paths` match the path without its query string, *after* normalization: the proxy and
//!   `trustmesh authz check` both run [`normalize::http_request`] with the mesh's
//!   `pathNormalization` mode first (Istio's `BASE` by default), and refuse what it refuses. A path with `{*}` or `{**}` is an Envoy
//!   `uri_template`: `{*}` is one non-empty segment; `{**}` is any run of characters and `/`,
//!   possibly empty, but the `/`s written around it stay required, so `/foo/{**}` matches
//!   `/foo/` and `/foo/a/b` but not `/foo`, and `/store/{**}/cart` matches `/store//cart` but
//!   not `/store/cart`. Literal segments may follow `{**}`, operators may not; braces
//!   anywhere else, `*` inside a template and characters Envoy's parser refuses (`=`, `//`,
//!   no leading `/`) are load problems.
//! - `*` in a value, as Istio builds its matchers: a leading `*` is a suffix match and is
//!   tested first (`*a*` is the suffix `a*`), a trailing one a prefix match, `*` alone means
//!   "non-empty"; any other `*` is a literal character (`a*b` matches only `a*b`). Exceptions:
//!   in `namespaces` / `source.namespace` every `*` is a glob (Istio writes a regex); in
//!   `serviceAccounts` a `*` is refused; a trust domain takes one `*`, at either end.
//! - `requestPrincipals` and `request.auth.principal` values are split at their last `/`
//!   into issuer and subject, matched against the token's `iss` and `sub` apart:
//!   `https://example.com/*` needs issuer exactly `https://example.com`.
//! - `request.headers[...]` reads Envoy's header map: `:method`, `:path` (query included) and
//!   `:authority` come from the request line, `host` is never found (Envoy keeps it as
//!   `:authority`; `validate` warns), and `*` means "present", even with an empty value. Only
//!   conditions on real headers make the proxy copy headers for policy.
//! - `request.auth.claims[<c>]` of a top-level claim `scope`, `permission`, or one listed in
//!   the accepting jwtRule's `spaceDelimitedClaims` (the request's `auth.spaceDelimitedClaims`)
//!   matches each space-separated word of a string value; nested claims are never split.
//! - `serviceAccounts` / `source.serviceAccount` take `ns/sa`, or `sa` for one in the policy's
//!   namespace, at most 16 values. `trustDomains` / `source.trustDomain` match the peer's
//!   trust domain; the local domain or an alias stands for all of them. Conditions on
//!   `experimental.envoy.filters.*` (Envoy filter metadata) are refused: trustmesh has no such
//!   metadata and will not guess.
//! - An absent attribute (plaintext peer, no JWT, missing header) never satisfies a positive
//!   field and always satisfies a `not*` field, like Envoy's RBAC `not_id`.
//! - On a port whose mTLS mode is DISABLE the peer identity is not available to policies, so
//!   `evaluate` treats the peer as plaintext there.
//! - `validate` flags HTTP-only fields on well-known TCP ports (MySQL, PostgreSQL, Redis, ...):
//!   the configuration alone cannot tell a port's protocol, so other ports are not judged.
//! - Namespaces of resources without `metadata.namespace` default to `default`, as `kubectl
//!   apply` would; the mesh config tolerates unknown fields (it holds much unrelated config),
//!   security resources do not.
//! - Validation follows Istio's webhook (`pkg/config/validation/validation.go`): it rejects
//!   `from: []`, `to: []`, `portLevelMtls: {}`, `*` or an empty key in selector labels, more
//!   than one of selector/targetRef/targetRefs, targetRefs to other kinds or namespaces,
//!   CUSTOM without rules or with identity fields (principals, namespaces, request.auth.*),
//!   JWT timeouts under 1ms, `istio.io/dry-run` other than a boolean on an ALLOW or DENY
//!   AuthorizationPolicy. An unknown CUSTOM provider is only a warning, as in Istio.
//! - One invalid resource never disables the rest ([`failclosed`] has the full rules, after
//!   Istio's builder): an invalid ALLOW rule is dropped (all rules when the error is outside
//!   them); an invalid DENY or CUSTOM policy denies every request it selects; a CUSTOM policy
//!   whose provider is unknown denies what its rules match; AUDIT audits everything it
//!   selects; an unreadable action counts as DENY; an invalid PeerAuthentication is STRICT; an
//!   invalid JWT rule rejects every token of its issuer; an invalid selector widens the scope
//!   to the namespace; a document that is not YAML denies every request (it could have held
//!   any policy); a non-boolean dry-run value alone leaves the policy enforced as written.
//!   Dry-run policies stay dry-run when they fail closed.

mod authn;
pub mod authz;
mod build;
pub mod crd;
pub mod decision;
pub mod document;
pub mod failclosed;
pub mod fields;
mod index;
pub mod load;
pub mod matcher;
pub mod mesh;
mod mesh_shape;
pub mod normalize;
mod parity;
pub mod peer;
pub mod problem;
pub mod report;
pub mod request;
pub mod request_principal;
mod set;
pub mod shadow;
pub mod shape;
pub mod split;
pub mod template;

pub use build::validate;
pub use crd::{Action, JwtRule, MtlsMode};
pub use decision::{Decision, PolicyResult, Verdict};
pub use failclosed::{InvalidResource, Outcome};
pub use load::{ReadError, SourceText};
pub use mesh::{
    AccessLogEncoding, ExtensionProvider, H2UpgradePolicy, MeshConfig, OutboundMode,
    OutboundTrafficPolicy,
};
pub use normalize::{Normalization, PathNormalization};
pub use problem::{Location, Notice, Problem};
pub use report::Report;
pub use request::Request;
pub use set::{LoadError, PolicySet, WorkloadPolicies};
pub use shadow::{Shadow, ShadowResult};

use std::collections::BTreeMap;

/// A workload as policies select it: its namespace and pod labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    pub fn new(namespace: &str, labels: &[(&str, &str)]) -> Self {
        Workload {
            namespace: namespace.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}
