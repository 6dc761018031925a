//! SPIFFE identities for trustmesh: IDs and trust domains, trust bundles, and X.509-SVID
//! verification.
//!
//! Everything here is pure logic over bytes and values, so the data plane, the agent and the CLI
//! all make the same trust decisions; the only file I/O lives in [`load`].

pub mod bundle;
pub mod inspect;
pub mod load;
pub mod pem;
pub mod spiffe;
pub mod svid;
pub mod trust;
pub mod verified;
mod x509;

pub use bundle::{BundleError, TrustBundleSet};
pub use spiffe::{IdError, SpiffeId, TrustDomain};
pub use svid::{verify_svid, verify_svid_for, SvidError, Usage, VerifiedSvid};
pub use trust::TrustConfig;
pub use verified::ChainVerifier;

pub use rustls_pki_types::{CertificateDer, UnixTime};
