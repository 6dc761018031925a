//! Binds the server to `trustmesh_ca`: workload issuance through [`CertificateAuthority::issue`]
//! and the CA endpoint's own serving certificate.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use trustmesh_ca::{CaError, CertificateAuthority, IssueRequest, CA_KEY_FILE};
use trustmesh_identity::SpiffeId;

use crate::server::ServerIdentity;
use crate::signer::{SignError, Signer};

/// Namespace and service account of the CA's own identity: istiod's, so Istio-style
/// authorization policies that name the control plane keep working.
pub const CA_NAMESPACE: &str = "istio-system";
pub const CA_SERVICE_ACCOUNT: &str = "istiod";

pub struct CaSigner {
    pub ca: CertificateAuthority,
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
        match self.ca.issue(&req) {
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
        self.ca.roots().to_vec()
    }
}

/// Issues the CA endpoint's serving certificate: DNS names and IPs from `names` (so ordinary
/// TLS clients such as istio-agent or grpcio can verify it by host name) plus the SPIFFE ID
/// `spiffe://<td>/ns/istio-system/sa/istiod` (so SPIFFE-aware clients can verify it by ID).
///
/// Signing needs the CA key, which `CertificateAuthority` keeps private; it is read again from
/// `ca-key.pem` in the same Istio `cacerts` folder the CA was loaded from.
pub fn server_identity(
    ca_dir: &Path,
    ca: &CertificateAuthority,
    names: &[String],
    ttl: Duration,
) -> Result<ServerIdentity, String> {
    let key_path = ca_dir.join(CA_KEY_FILE);
    let key_pem =
        std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let ca_key = trustmesh_ca::keys::from_pem(&key_pem)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let issuer = Issuer::from_ca_cert_der(ca.ca_cert(), ca_key)
        .map_err(|e| format!("CA certificate: {e}"))?;

    let id = SpiffeId::istio(ca.trust_domain(), CA_NAMESPACE, CA_SERVICE_ACCOUNT)
        .map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut sans = Vec::new();
    for n in names {
        match n.parse::<IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(
                n.as_str()
                    .try_into()
                    .map_err(|e| format!("server name {n:?}: {e:?}"))?,
            )),
        }
    }
    sans.push(SanType::URI(
        id.as_str().try_into().map_err(|e| format!("{e:?}"))?,
    ));
    params.subject_alt_names = sans;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(2);
    let not_after = now + time::Duration::try_from(ttl).map_err(|e| e.to_string())?;
    params.not_after = not_after.min(ca.not_after());
    let mut serial = [0u8; 16];
    rand_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing: {e}"))?;
    let mut chain = vec![cert.der().clone()];
    chain.extend(ca.chain().iter().cloned());
    Ok(ServerIdentity {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

fn rand_bytes(buf: &mut [u8]) {
    use rand::RngCore;
    rand::thread_rng().fill_bytes(buf);
}
