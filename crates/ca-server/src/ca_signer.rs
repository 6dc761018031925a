//! Binds the server to `trustmesh_ca`: workload issuance through [`CertificateAuthority::issue`]
//! and the CA endpoint's own serving certificate.

use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use trustmesh_ca::{CaError, CertificateAuthority, IssueRequest};
use trustmesh_identity::SpiffeId;

use crate::server::ServerIdentity;
use crate::signer::{SignError, Signer};

/// Namespace and service account of the CA's own identity: istiod's, so Istio-style
/// authorization policies that name the control plane keep working.
pub const CA_NAMESPACE: &str = "istio-system";
pub const CA_SERVICE_ACCOUNT: &str = "istiod";

/// Signs with a [`CertificateAuthority`] that can be replaced while serving (a plug-in CA's
/// rotation): calls in flight finish with the CA they started with.
pub struct CaSigner {
    ca: std::sync::RwLock<std::sync::Arc<CertificateAuthority>>,
}

impl CaSigner {
    pub fn new(ca: CertificateAuthority) -> CaSigner {
        CaSigner {
            ca: std::sync::RwLock::new(std::sync::Arc::new(ca)),
        }
    }

    /// The CA signing now.
    pub fn current(&self) -> std::sync::Arc<CertificateAuthority> {
        self.ca.read().expect("CA lock").clone()
    }

    /// Signs with `ca` from now on; the server's trust follows with
    /// [`crate::server::Running::reload_roots`].
    pub fn replace(&self, ca: CertificateAuthority) {
        *self.ca.write().expect("CA lock") = std::sync::Arc::new(ca);
    }
}

impl Signer for CaSigner {
    fn sign(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let req = IssueRequest {
            spiffe_id: id.clone(),
            ttl,
            csr_pem: Some(csr_pem.to_string()),
            key_type: Default::default(),
        };
        match self.current().issue(&req) {
            Ok(issued) => Ok(issued.chain),
            Err(e @ (CaError::TtlTooLong { .. } | CaError::InvalidCsr(_))) => {
                Err(SignError::InvalidArgument(e.to_string()))
            }
            Err(e @ (CaError::CsrIdentityMismatch { .. } | CaError::WrongTrustDomain { .. })) => {
                Err(SignError::PermissionDenied(e.to_string()))
            }
            Err(e) => Err(SignError::Internal(e.to_string())),
        }
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.current().roots().to_vec()
    }
}

/// Issues the CA endpoint's serving certificate ([`CertificateAuthority::issue_server`]): DNS
/// names and IPs from `names` plus the SPIFFE ID `spiffe://<td>/ns/istio-system/sa/istiod`, so
/// ordinary TLS clients verify it by host name and SPIFFE-aware ones by ID.
pub fn server_identity(
    ca: &CertificateAuthority,
    names: &[String],
    ttl: Duration,
) -> Result<ServerIdentity, String> {
    let id = SpiffeId::istio(ca.trust_domain(), CA_NAMESPACE, CA_SERVICE_ACCOUNT)
        .map_err(|e| e.to_string())?;
    let issued = ca
        .issue_server(&id, names, ttl)
        .map_err(|e| format!("CA serving certificate: {e}"))?;
    let key_pem = issued.key_pem.as_deref().unwrap_or_default();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("CA serving certificate key: {e}"))?;
    Ok(ServerIdentity {
        chain: issued.chain,
        key,
    })
}
