//! trustmesh's certificate authority: Istio's `cacerts` layout (self-signed root or plug-in
//! intermediate) and X.509-SVID issuance following Istio's workload certificate profile.
//!
//! Pure issuance plus file I/O at the edges ([`CertificateAuthority::load`],
//! [`CertificateAuthority::write`], [`IssuedSvid::write_issued`]); the network-facing CA
//! server lives in its own crate and calls [`CertificateAuthority::issue`].
//!
//! Where Istio's behaviour is defined, it is followed, so certificates and errors look the same
//! to operators and peers:
//! - workload TTL: default 24h, maximum 90 days; a request above the maximum is refused with
//!   Istio's message ("requested TTL ... is greater than the max allowed TTL ...");
//! - a leaf never outlives its CA: notAfter is clamped to the CA's notAfter (Istio clamps to the
//!   signing certificate), and issuance stops once the signing certificate has expired;
//! - notBefore is 2 minutes in the past (Istio's `ClockSkewGracePeriod`);
//! - empty subject, critical URI SAN holding only the SPIFFE ID, `CA:FALSE`, keyUsage
//!   digitalSignature + keyEncipherment, EKU serverAuth + clientAuth, 128-bit random serial;
//! - `cacerts` files: `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem` (signing cert .. root),
//!   `root-cert.pem`; or, as istiod also accepts and prefers when `tls.crt` is there,
//!   cert-manager's `tls.crt`, `tls.key`, `ca.crt`; keys in PKCS#8, PKCS#1 or SEC1 are read,
//!   PKCS#8 is written.
//!
//! Beyond Istio, a CSR whose URI SANs name another identity is refused rather than ignored,
//! and a `cacerts` directory is checked as a whole at load (key matches, chain signatures,
//! expiry, path lengths) so a broken CA fails at start-up, not at the first handshake.
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
mod chain;
mod csr;
mod der;
pub mod duration;
mod error;
pub mod fsutil;
mod init;
mod issue;
pub mod keys;
pub mod layout;
mod profile;

pub use authority::{
    CertificateAuthority, TtlPolicy, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE,
    DEFAULT_TRUST_DOMAIN, ROOT_CERT_FILE,
};
pub use certs::rfc3339;
pub use csr::MIN_RSA_BITS;
pub use error::CaError;
pub use init::{InitOptions, DEFAULT_CA_VALIDITY};
pub use issue::{IssueRequest, IssuedSvid, KEY_FILE};
pub use keys::KeyType;
pub use layout::{Layout, TLS_CERT_FILE, TLS_KEY_FILE, TLS_ROOT_FILE};
pub use profile::CLOCK_SKEW_GRACE;
