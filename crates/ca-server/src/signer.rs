//! The seam between the network edge and the CA's keys: the server only needs "sign this CSR
//! for this identity" and "what are the roots", which keeps the gRPC code testable apart from
//! key storage.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use thiserror::Error;
use tonic::Status;
use trustmesh_identity::SpiffeId;

#[derive(Debug, Error)]
pub enum SignError {
    /// The request itself is unacceptable (bad CSR, bad TTL).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request asks for something the caller is not entitled to.
    #[error("{0}")]
    PermissionDenied(String),
    /// The CA failed; nothing the caller can fix.
    #[error("{0}")]
    Internal(String),
}

impl SignError {
    pub fn into_status(self) -> Status {
        match self {
            SignError::InvalidArgument(m) => Status::invalid_argument(m),
            SignError::PermissionDenied(m) => Status::permission_denied(m),
            SignError::Internal(m) => Status::internal(format!("CA failed to sign: {m}")),
        }
    }
}

pub trait Signer: Send + Sync + 'static {
    /// Signs `csr_pem` as an X.509-SVID for `id`, valid for `ttl`. Returns the chain leaf first,
    /// root last.
    fn sign(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, SignError>;

    /// The roots workloads must trust (the last element of every chain, plus any roots kept
    /// during a root rotation).
    fn roots(&self) -> Vec<CertificateDer<'static>>;
}
