//! CAs made by `trustmesh_ca`, the code that issues in production, so tests of everything
//! downstream (the CA server, the agent) run against the same certificate profiles a mesh gets:
//! a root, or Istio's plug-in shape (root → intermediate), in memory or written in Istio's
//! `cacerts` layout (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`).

use std::path::Path;

use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_identity::TrustDomain;

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

/// A plug-in CA for `domain`: (root, intermediate under it), in memory.
pub fn plugin_ca(domain: &str) -> (CertificateAuthority, CertificateAuthority) {
    let root = CertificateAuthority::init_root(&td(domain), &InitOptions::root()).unwrap();
    let ca =
        CertificateAuthority::init_intermediate(&root, &td(domain), &InitOptions::intermediate())
            .unwrap();
    (root, ca)
}

/// A root CA for `domain` written to `dir` in the cacerts layout, and loaded back from there
/// (as `ca serve --ca <dir>` would load it).
pub fn write_root_ca(dir: &Path, domain: &str) -> CertificateAuthority {
    CertificateAuthority::init_root(&td(domain), &InitOptions::root())
        .unwrap()
        .write(dir)
        .unwrap();
    CertificateAuthority::load(dir).unwrap()
}
