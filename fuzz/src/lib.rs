//! The fuzz targets' bodies, as plain functions: `src/bin/<target>.rs` hands them AFL's
//! inputs (AFL runs every committed corpus file first, and refuses to start if one crashes,
//! so fixed crashes stay fixed). Each checks properties that must hold for every input, not
//! only the absence of a panic.

mod grpc;
mod h1;
mod h1_hyper;
mod jwt;
mod keys;
#[cfg(test)]
mod seeds;

pub use grpc::{grpc_requests, handled};
pub use h1::h1;
pub use h1_hyper::{h1_hyper, h1_hyper_response};
pub use jwt::{jwt, verdicts, Verdicts};

use std::borrow::Cow;

use trustmesh_policy::normalize::{path_and_query, request, Normalization};

/// Path normalization: never panics; what it returns is a valid request target that
/// normalizes to itself (policy and app must agree on one path, whoever normalizes again);
/// in the modes that resolve dot segments none is left.
pub fn normalize(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = text.split_once(' ').unwrap_or(("GET", text));
    for mode in Normalization::ALL {
        let _ = request(method, target, mode);
        let Ok(out) = path_and_query(target, mode) else {
            continue;
        };
        let again = path_and_query(&out, mode).expect("a normalized path is accepted again");
        assert_eq!(
            again,
            out,
            "not idempotent in {} for {target:?}",
            mode.as_str()
        );
        // The proxy only ever normalizes targets the HTTP parser accepted; what it makes of
        // them must be accepted too (it is put back into the request).
        if http::uri::PathAndQuery::try_from(target).is_ok() {
            assert!(
                http::uri::PathAndQuery::try_from(out.as_ref()).is_ok(),
                "not a valid request target: {out:?} from {target:?}"
            );
        }
        if mode != Normalization::None {
            let path = out.split('?').next().unwrap_or_default();
            for seg in path.split('/') {
                assert!(seg != "." && seg != "..", "dot segment left in {out:?}");
            }
            assert!(!path.contains('\\'), "backslash left in {out:?}");
        }
        if let Cow::Borrowed(b) = &out {
            assert!(
                target.starts_with(b),
                "borrowed output must be the input's prefix"
            );
        }
    }
}

/// SPIFFE IDs and trust domains: never panics; what parses prints back to itself.
pub fn spiffe_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = trustmesh_identity::SpiffeId::parse(text) {
        let again = trustmesh_identity::SpiffeId::parse(id.as_str()).expect("reparse");
        assert_eq!(again, id);
        let td = trustmesh_identity::TrustDomain::parse(id.trust_domain().as_ref())
            .expect("an ID's trust domain parses");
        assert_eq!(&td, id.trust_domain());
    }
    let _ = trustmesh_identity::TrustDomain::parse(text);
}

/// Policy and mesh config loading: never panics, whatever the YAML or JSON.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mesh = trustmesh_policy::MeshConfig::from_yaml_str(text).unwrap_or_default();
    let sources = [trustmesh_policy::SourceText {
        file: "fuzz.yaml".into(),
        text: text.to_string(),
    }];
    let _ = trustmesh_policy::validate(&sources, &mesh);
    let _ = trustmesh_policy::PolicySet::from_sources(&sources, &mesh);
}

/// A CSR as the CA server reads it, and a certificate chain as the sidecar verifies it: never
/// panics, and nothing the fuzzer makes up verifies.
pub fn csr_and_svid(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = trustmesh_ca_server::csr::inspect(text);
        let _ = trustmesh_identity::pem::certs_from_pem(text.as_bytes());
    }
    let chain: Vec<rustls_pki_types::CertificateDer<'_>> = data
        .split(|&b| b == 0xff)
        .filter(|c| !c.is_empty())
        .take(4)
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let td = trustmesh_identity::TrustDomain::parse("example.org").unwrap();
    let trust = trustmesh_identity::TrustConfig::new(td, trustmesh_identity::TrustBundleSet::new());
    let verified =
        trustmesh_identity::verify_svid(&chain, &trust, rustls_pki_types::UnixTime::now());
    assert!(verified.is_err(), "an empty trust bundle anchors nothing");
}
