//! What a verified token tells about a request: the authenticator produces it, the header
//! outputs and policy read it.

use hyper::http::HeaderName;
use serde_json::Value;

/// The verified identity a request carries (Istio's `request.auth.*` attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthInfo {
    /// `<iss>/<sub>`: what AuthorizationPolicy `requestPrincipals` match against.
    pub principal: String,
    pub issuer: String,
    pub subject: String,
    /// The token's `aud` as a list.
    pub audiences: Vec<String>,
    /// The `azp` claim (`request.auth.presenter`).
    pub presenter: Option<String>,
    /// Every claim of the token (`request.auth.claims[...]`).
    pub claims: Value,
    /// The accepting rule's `spaceDelimitedClaims`: policy splits these claims (and `scope`,
    /// `permission`) on spaces, as Envoy's `jwt_authn` does for the metadata RBAC reads.
    pub space_delimited_claims: Vec<String>,
    pub raw_token: String,
    /// Index into the rules given to [`JwtAuthenticator::new`] of the rule that accepted it.
    pub rule_index: usize,
    /// Headers whose tokens must not be forwarded (rules without `forwardOriginalToken`).
    pub(crate) strip_headers: Vec<HeaderName>,
}
