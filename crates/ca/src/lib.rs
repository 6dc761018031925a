//! trustmesh's certificate authority: Istio's `cacerts` layout (self-signed root or plug-in
//! intermediate) and X.509-SVID issuance following Istio's workload certificate profile.
//!
//! Pure issuance plus file I/O at the edges ([`CertificateAuthority::load`],
//! [`CertificateAuthority::write`], [`IssuedSvid::write_issued`]); the network-facing CA
//! server lives in its own crate and calls [`CertificateAuthority::issue`].
//!
//! ```no_run
//! use trustmesh_ca::{CertificateAuthority, InitOptions, IssueRequest};
//! use trustmesh_identity::{SpiffeId, TrustDomain};
//!
//! let td = TrustDomain::parse("cluster.local")?;
//! let root = CertificateAuthority::init_root(&td, &InitOptions::root())?;
//! let ca = CertificateAuthority::init_intermediate(&root, &td, &InitOptions::intermediate())?;
//! let svid = ca.issue(&IssueRequest::new(SpiffeId::istio(&td, "default", "web")?))?;
//! svid.write_issued("/etc/certs")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod authority;
mod certs;
mod csr;
mod der;
pub mod duration;
mod error;
pub mod fsutil;
mod init;
mod issue;
pub mod keys;

pub use authority::{
    CertificateAuthority, TtlPolicy, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE,
    DEFAULT_TRUST_DOMAIN, ROOT_CERT_FILE,
};
pub use certs::rfc3339;
pub use csr::MIN_RSA_BITS;
pub use error::CaError;
pub use init::{InitOptions, DEFAULT_CA_VALIDITY};
pub use issue::{IssueRequest, IssuedSvid, CLOCK_SKEW_GRACE, KEY_FILE};
pub use keys::KeyType;
