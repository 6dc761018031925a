//! The one error type of the CA crate.
//!
//! Every variant renders as a single line that names the file or the request at fault, because
//! these messages end up verbatim on an operator's terminal or in a CA server's log, where the
//! question is always "which file / which request, and what is wrong with it".

use std::io;
use std::path::PathBuf;

/// Why a CA could not be loaded or written, or why it refused to issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A required file is absent.
    #[error("{}: file not found", path.display())]
    Missing { path: PathBuf },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file exists but its content is unusable (bad PEM, no certificate, unsupported key).
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },

    /// The files parse, but together they do not make a usable CA (key mismatch, expired
    /// certificate, broken chain, not a CA certificate, ...).
    #[error("CA in {}: {reason}", dir.display())]
    InvalidCa { dir: PathBuf, reason: String },

    /// The requested lifetime exceeds the CA's maximum. Worded like Istio's CA so operators
    /// recognise it.
    #[error("requested TTL {requested} is greater than the max allowed TTL {max}")]
    TtlTooLong { requested: String, max: String },

    /// The CSR names a different identity than the one being issued.
    #[error("CSR asks for {csr}, request is for {requested}")]
    CsrIdentityMismatch { csr: String, requested: String },

    /// The CSR cannot be used (unparsable, bad self-signature, weak or unsupported key).
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),

    /// The requested SPIFFE ID is outside the trust domain this CA signs for.
    #[error("{id} is not in trust domain {ca_trust_domain} served by this CA")]
    WrongTrustDomain { id: String, ca_trust_domain: String },

    /// The signing certificate is past its notAfter; nothing it signs would verify.
    #[error("signing certificate has expired at {0}")]
    SigningCertExpired(String),

    /// An option given to `init_*` or to the TTL policy is unusable.
    #[error("{0}")]
    InvalidOptions(String),

    /// Key generation or signing failed inside the crypto library.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl CaError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> CaError {
        let path = path.into();
        if source.kind() == io::ErrorKind::NotFound {
            CaError::Missing { path }
        } else {
            CaError::Io { path, source }
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> CaError {
        CaError::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// True when the error comes from unusable input files or options rather than from the
    /// CA refusing a well-formed request; CLIs map the two to different exit codes.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CaError::Missing { .. }
                | CaError::Io { .. }
                | CaError::Malformed { .. }
                | CaError::InvalidCa { .. }
                | CaError::InvalidCsr(_)
                | CaError::InvalidOptions(_)
        )
    }
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Crypto(e.to_string())
    }
}
