//! The `grpc_requests` target: the request messages of the CA's and the agent's gRPC services,
//! decoded from protobuf and handed to the code their handlers run.
//!
//! Input: one byte choosing the message, then its protobuf encoding (what tonic hands to
//! prost once it has taken the gRPC frame apart; the framing and HTTP/2 are tonic's and
//! hyper's). The handlers' own steps run from there, minus the network: the CA's lifetime
//! and CSR checks and its signing, the JWT-SVID request checks and minting, and the Workload
//! API's JWT-SVID checks and validation. What must hold besides "no panic": a decoded message
//! re-encodes to the same message; the CA signs only the caller's identity, for no longer than
//! its maximum; nothing validates as `forgery.test`; a minted JWT-SVID validates as the caller.

use std::sync::OnceLock;
use std::time::Duration;

use prost::Message;
use trustmesh_agent::pb::{JwtsvidRequest, ValidateJwtsvidRequest};
use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_ca_server::ca_signer::CaSigner;
use trustmesh_ca_server::jwt_authority::JwtAuthority;
use trustmesh_ca_server::pb::IstioCertificateRequest;
use trustmesh_ca_server::pb_jwt::MintJwtSvidRequest;
use trustmesh_ca_server::signer::Signer;
use trustmesh_identity::{SpiffeId, TrustBundleSet, TrustConfig, UnixTime};

use crate::keys::*;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

struct Ca {
    signer: CaSigner,
    trust: TrustConfig,
    jwt: JwtAuthority,
    jwt_bundles: std::collections::BTreeMap<trustmesh_identity::TrustDomain, Vec<u8>>,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = CertificateAuthority::init_root(&known_domain(), &InitOptions::root())
            .expect("CA for known.test");
        let mut roots = TrustBundleSet::new();
        for root in ca.roots() {
            roots.add_root(known_domain(), root.clone()).expect("root");
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let jwt = JwtAuthority::from_key(&key).expect("JWT authority");
        let jwt_bundles = std::collections::BTreeMap::from([(known_domain(), jwt.jwks_json())]);
        Ca {
            signer: CaSigner::new(ca),
            trust: TrustConfig::new(known_domain(), roots),
            jwt,
            jwt_bundles,
        }
    })
}

fn caller() -> SpiffeId {
    SpiffeId::parse(CALLER).expect("valid ID")
}

/// Decodes `T`; a message that decodes re-encodes to bytes that decode to a message encoding
/// to those same bytes. Compared as bytes, not with `==`: a `number_value` in the CA request's
/// metadata (a protobuf Struct) may be NaN, which is never equal to itself although its bits
/// survive the round trip (seed `ca-metadata-nan`, found by this target).
fn decode<T: Message + Default>(body: &[u8]) -> Option<T> {
    let msg = T::decode(body).ok()?;
    let bytes = msg.encode_to_vec();
    let again = T::decode(bytes.as_slice()).expect("re-encoded message decodes");
    assert!(
        again.encode_to_vec() == bytes,
        "protobuf round trip changed the message"
    );
    Some(msg)
}

pub fn grpc_requests(data: &[u8]) {
    handled(data);
}

/// Runs one input; `true` when the request went all the way (signed, minted, validated,
/// admitted), `false` when it was undecodable or refused on the way.
pub fn handled(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    match kind % 4 {
        0 => create_certificate(body),
        1 => mint_jwt_svid(body),
        2 => fetch_jwt_svid(body),
        _ => validate_jwt_svid(body),
    }
}

/// `IstioCertificateService/CreateCertificate`, after the caller authenticated as [`CALLER`].
fn create_certificate(body: &[u8]) -> bool {
    let Some(req) = decode::<IstioCertificateRequest>(body) else {
        return false;
    };
    let Ok(ttl) = trustmesh_ca_server::ttl::granted(req.validity_duration, DEFAULT_TTL, MAX_TTL)
    else {
        return false;
    };
    assert!(!ttl.is_zero() && ttl <= MAX_TTL, "granted {ttl:?}");
    let Ok(asked) = trustmesh_ca_server::csr::inspect(&req.csr) else {
        return false;
    };
    let caller = caller();
    if trustmesh_ca_server::service::check_csr_sans(&asked, &caller).is_err() {
        return false;
    }
    assert!(
        asked.uri_sans.iter().all(|u| u == CALLER) && asked.other_sans.is_empty(),
        "a CSR asking for {asked:?} passed the SAN check"
    );
    let ca = ca();
    let Ok(chain) = ca.signer.sign(&req.csr, &caller, ttl) else {
        return false;
    };
    let svid = trustmesh_identity::verify_svid(&chain, &ca.trust, UnixTime::now())
        .expect("what the CA signed verifies against its root");
    assert_eq!(svid.id, caller, "the CA signed another identity");
    let life = svid
        .not_after
        .duration_since(svid.not_before)
        .unwrap_or_default();
    // Issuance backdates notBefore for clock skew; nothing beyond that.
    let grace = Duration::from_secs(trustmesh_ca::CLOCK_SKEW_GRACE.whole_seconds() as u64);
    assert!(life <= ttl + grace, "{life:?} for {ttl:?}");
    true
}

/// `JwtSvidService/MintJwtSvid`, for [`CALLER`].
fn mint_jwt_svid(body: &[u8]) -> bool {
    let Some(req) = decode::<MintJwtSvidRequest>(body) else {
        return false;
    };
    let Ok(ttl) = trustmesh_ca_server::service::check_mint_request(&req, MAX_TTL) else {
        return false;
    };
    assert!(!ttl.is_zero() && ttl <= MAX_TTL, "granted {ttl:?}");
    let ca = ca();
    let (token, _) = ca.jwt.mint(&caller(), &req.audience, ttl).expect("mint");
    for audience in &req.audience {
        let (id, _) = trustmesh_agent::jwt::validate(&token, audience, &ca.jwt_bundles)
            .unwrap_or_else(|e| {
                panic!("a minted JWT-SVID does not validate for {audience:?}: {e}")
            });
        assert_eq!(id, caller());
    }
    true
}

/// `SpiffeWorkloadAPI/FetchJWTSVID`'s checks (the token itself comes from the CA).
fn fetch_jwt_svid(body: &[u8]) -> bool {
    let Some(req) = decode::<JwtsvidRequest>(body) else {
        return false;
    };
    if trustmesh_agent::workload_api::check_jwtsvid_request(&req, &caller()).is_err() {
        return false;
    }
    assert!(!req.audience.is_empty());
    assert!(req.spiffe_id.is_empty() || req.spiffe_id == CALLER);
    true
}

/// `SpiffeWorkloadAPI/ValidateJWTSVID` with both key sets in the agent's bundles.
fn validate_jwt_svid(body: &[u8]) -> bool {
    let Some(req) = decode::<ValidateJwtsvidRequest>(body) else {
        return false;
    };
    let Ok(resp) = trustmesh_agent::workload_api::validate_jwtsvid_request(&req, &agent_bundles())
    else {
        return false;
    };
    let id = SpiffeId::parse(&resp.spiffe_id).expect("a validated ID parses");
    assert_eq!(
        id.trust_domain(),
        &known_domain(),
        "forged JWT-SVID accepted by the agent"
    );
    true
}
