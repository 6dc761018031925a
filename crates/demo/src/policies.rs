//! The demo's configuration as Istio users write it: the `meshConfig` each sidecar reads and the
//! security policies (PeerAuthentication, RequestAuthentication, AuthorizationPolicy) that
//! govern the workloads. Both quickstarts apply exactly these, so the tour's verdicts mean the
//! same in either.

use std::net::SocketAddr;

use crate::tokens::USER_ISSUER;
use crate::workloads::TD_A;

/// Mesh config in Istio's `meshConfig` shape.
pub fn mesh_config(trust_domain: &str, aliases: &[&str], authz: SocketAddr) -> String {
    format!(
        "trustDomain: {trust_domain}\ntrustDomainAliases: [{aliases}]\nrootNamespace: istio-system\n\
         extensionProviders:\n  - name: demo-authz\n    envoyExtAuthzGrpc:\n      service: \"{ip}\"\n\
         \x20     port: {port}\n      timeout: 2s\n      failOpen: false\n",
        aliases = aliases.join(", "),
        ip = authz.ip(),
        port = authz.port(),
    )
}

/// The demo's Istio policies, exactly as they would be applied to a cluster.
pub fn policies(user_jwk: &serde_json::Value) -> String {
    let jwks = serde_json::json!({ "keys": [user_jwk] }).to_string();
    format!(
        r#"# Mesh-wide: every workload requires mutual TLS.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
# ratings: only frontend may read ratings.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-viewer
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: ratings
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["{TD_A}/ns/bookinfo/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/ratings/*"]
---
# reviews: tokens from the demo issuer are validated when present...
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: reviews-jwt
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: reviews
  jwtRules:
  - issuer: "{USER_ISSUER}"
    jwks: '{jwks}'
    outputPayloadToHeader: x-jwt-payload
---
# ...and required for /api.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews-api-needs-jwt
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: reviews
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/api/*"]
    from:
    - source:
        requestPrincipals: ["{USER_ISSUER}/*"]
  - to:
    - operation:
        notPaths: ["/api/*"]
---
# payroll: salaries are decided by the external authorizer...
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: payroll-ext-authz
  namespace: finance
spec:
  selector:
    matchLabels:
      app: payroll
  action: CUSTOM
  provider:
    name: demo-authz
  rules:
  - to:
    - operation:
        paths: ["/salaries/*"]
---
# ...and nobody deletes anything.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: payroll-no-delete
  namespace: finance
spec:
  selector:
    matchLabels:
      app: payroll
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["DELETE"]
"#
    )
}

/// The file the tour writes into the control plane's config directory, and removes again.
pub const RATINGS_FREEZE_FILE: &str = "ratings-freeze.yaml";

/// An incident response: nobody reads ratings until it is lifted. A DENY wins over the
/// ALLOW above, so frontend's allowed call is refused while this is in force.
pub const RATINGS_FREEZE: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-freeze
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: ratings
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/ratings/*"]
"#;
