//! The key sets the JWT-handling targets verify against (written by `make_jwt_seeds.py`).
//!
//! `known.test` signs the valid seeds, so the fuzzer starts from tokens that verify and reaches
//! the code that runs after a signature check. `forgery.test` publishes public keys whose
//! private halves were thrown away when they were made: no token can legitimately verify
//! against them, so any that does is a forgery the verifier let through.

use std::collections::BTreeMap;

use trustmesh_identity::TrustDomain;

pub const KNOWN_JWKS: &str = include_str!("../keys/known-jwks.json");
pub const FORGERY_JWKS: &str = include_str!("../keys/forgery-jwks.json");

/// The issuers (`iss`) of the two key sets, for the verifiers that select keys by issuer.
pub const KNOWN_ISSUER: &str = "https://known.test";
pub const FORGERY_ISSUER: &str = "https://forgery.test";

/// The audience the targets ask for.
pub const AUDIENCE: &str = "fuzz";

/// The identity the known seeds carry, and the caller the CA targets sign for.
pub const CALLER: &str = "spiffe://known.test/ns/default/sa/fuzz";

pub fn known_domain() -> TrustDomain {
    TrustDomain::parse("known.test").expect("valid trust domain")
}

pub fn forgery_domain() -> TrustDomain {
    TrustDomain::parse("forgery.test").expect("valid trust domain")
}

/// The agent's JWT bundles: both key sets, by trust domain.
pub fn agent_bundles() -> BTreeMap<TrustDomain, Vec<u8>> {
    BTreeMap::from([
        (known_domain(), KNOWN_JWKS.as_bytes().to_vec()),
        (forgery_domain(), FORGERY_JWKS.as_bytes().to_vec()),
    ])
}
