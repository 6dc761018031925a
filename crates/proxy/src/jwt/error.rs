//! Why a request's token was rejected.
//!
//! Every variant is a 401 for the caller. The `Display` text of each variant is the status message
//! Envoy's `jwt_authn` filter (which Istio configures) puts in the response body, so clients and
//! tests written against Istio see the same words; the variant's fields carry the detail for logs.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt header is an invalid Base64url encoded")]
    BadHeader { detail: String },
    #[error("Jwt payload is an invalid Base64url encoded or invalid JSON")]
    BadPayload { detail: String },
    #[error("Jwt issuer is not configured")]
    UnknownIssuer { issuer: Option<String> },
    #[error("Jwt algorithm is not supported")]
    UnsupportedAlgorithm { alg: String },
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey { kid: Option<String> },
    #[error("Jwt verification fails")]
    InvalidSignature,
    #[error("Jwt is expired")]
    Expired { exp: i64, now: i64 },
    #[error("Jwt not yet valid")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed { token_audiences: Vec<String> },
    #[error("Jwt claim {claim} is not a number")]
    BadTimeClaim { claim: &'static str },
    /// The issuer's JWKS could not be fetched yet (and no earlier copy is cached).
    #[error("Jwks remote fetch is failed")]
    JwksUnavailable { issuer: String, reason: String },
}

impl JwtError {
    /// HTTP status the proxy answers with: always 401, as Envoy's `jwt_authn` does.
    pub fn http_status(&self) -> u16 {
        401
    }

    /// Response body for the rejection (Envoy's message for this failure).
    pub fn http_body(&self) -> String {
        self.to_string()
    }
}

/// A RequestAuthentication rule that cannot be used at all (reported at configuration time).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtConfigError {
    #[error("jwtRules[{index}]: issuer is required")]
    MissingIssuer { index: usize },
    #[error("jwtRules[{index}]: invalid jwks: {reason}")]
    InvalidJwks { index: usize, reason: String },
    #[error("jwtRules[{index}]: invalid jwksUri {uri:?}: {reason}")]
    InvalidJwksUri {
        index: usize,
        uri: String,
        reason: String,
    },
    #[error("jwtRules[{index}]: invalid header name {name:?}")]
    InvalidHeaderName { index: usize, name: String },
    #[error("jwtRules[{index}]: invalid timeout {value:?}")]
    InvalidTimeout { index: usize, value: String },
}
