//! Issuing X.509-SVIDs: Istio's workload certificate profile, from a CSR or a generated key.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use trustmesh_identity::SpiffeId;

use crate::authority::{CertificateAuthority, CERT_CHAIN_FILE, ROOT_CERT_FILE};
use crate::certs::{self, rfc3339};
use crate::csr;
use crate::error::CaError;
use crate::fsutil::{self, OutFile, CERT_MODE, KEY_MODE};
use crate::keys::{self, KeyType};
use crate::profile::{hex, random_serial, CLOCK_SKEW_GRACE};
use trustmesh_config::format_go;

/// File name of the private key in an issued-SVID directory (Istio's `key.pem`).
pub const KEY_FILE: &str = "key.pem";

/// A request for one workload certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub spiffe_id: SpiffeId,
    /// Requested lifetime; zero means the CA's default (Istio treats a non-positive TTL so).
    pub ttl: Duration,
    /// PEM CSR. When present its key is certified and no key is generated.
    pub csr_pem: Option<String>,
    /// Key to generate when there is no CSR.
    pub key_type: KeyType,
}

impl IssueRequest {
    /// A request with the CA's default TTL and a generated ECDSA P-256 key.
    pub fn new(spiffe_id: SpiffeId) -> Self {
        IssueRequest {
            spiffe_id,
            ttl: Duration::ZERO,
            csr_pem: None,
            key_type: KeyType::default(),
        }
    }
}

/// An issued certificate with everything a workload needs to use it.
#[derive(Clone)]
pub struct IssuedSvid {
    pub spiffe_id: SpiffeId,
    /// Leaf first, then the CA chain, ending with the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// `chain` as PEM: the content of Istio's `cert-chain.pem`.
    pub chain_pem: String,
    /// The CA's `root-cert.pem`.
    pub root_pem: String,
    /// PKCS#8 PEM of the generated key; `None` when issued from a CSR.
    pub key_pem: Option<String>,
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field("serial", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &self.key_pem.as_ref().map(|_| "[elided]"))
            .finish()
    }
}

impl IssuedSvid {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Writes `key.pem` (0600, only when the key was generated here), `cert-chain.pem` and
    /// `root-cert.pem`: the file names Istio uses for workload certificates. All or nothing:
    /// see [`fsutil`](crate::fsutil). The key is renamed into place first, so a watcher that
    /// reloads on the chain's change always finds the matching key already there.
    ///
    /// For a CSR-based certificate no key is written; a `key.pem` already in `dir` is kept only
    /// if it is the certified key (the usual `openssl req -key dir/key.pem` flow). A stale key
    /// next to a new chain would be a broken pair that fails at the first handshake, so that is
    /// refused before anything is written.
    pub fn write_issued(&self, dir: impl AsRef<Path>) -> Result<(), CaError> {
        let dir = dir.as_ref();
        if self.key_pem.is_none() {
            self.check_existing_key(&dir.join(KEY_FILE))?;
        }
        let mut files = Vec::with_capacity(3);
        if let Some(key) = &self.key_pem {
            files.push(OutFile {
                name: KEY_FILE,
                contents: key.as_bytes(),
                mode: KEY_MODE,
            });
        }
        files.push(OutFile {
            name: CERT_CHAIN_FILE,
            contents: self.chain_pem.as_bytes(),
            mode: CERT_MODE,
        });
        files.push(OutFile {
            name: ROOT_CERT_FILE,
            contents: self.root_pem.as_bytes(),
            mode: CERT_MODE,
        });
        fsutil::write_files_atomically(dir, &files)
    }

    fn check_existing_key(&self, path: &Path) -> Result<(), CaError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CaError::io(path, e)),
        };
        let leaf = certs::facts(self.leaf()).map_err(CaError::Crypto)?;
        let matches = keys::from_pem(&text).is_ok_and(|k| k.public_key_raw() == leaf.public_key);
        if matches {
            Ok(())
        } else {
            Err(CaError::malformed(
                path,
                "exists and is not the key of the issued certificate; remove it or write elsewhere",
            ))
        }
    }
}

impl CertificateAuthority {
    /// Issues a certificate for `req.spiffe_id`, valid from now.
    pub fn issue(&self, req: &IssueRequest) -> Result<IssuedSvid, CaError> {
        self.issue_at(req, OffsetDateTime::now_utc())
    }

    /// [`issue`](Self::issue) at an explicit "now", so lifetime rules are testable.
    ///
    /// Profile (Istio's `genCertTemplateFromCSR`): empty subject with a critical URI SAN that is
    /// exactly the SPIFFE ID, `CA:FALSE`, keyUsage digitalSignature + keyEncipherment, EKU
    /// serverAuth + clientAuth, random positive serial, notBefore 2 minutes in the past.
    /// A TTL above the maximum is refused; a notAfter beyond the CA chain's earliest expiry is
    /// clamped to it, exactly as Istio clamps to the signing certificate's notAfter (in a
    /// well-formed chain that is the same instant).
    pub fn issue_at(&self, req: &IssueRequest, now: OffsetDateTime) -> Result<IssuedSvid, CaError> {
        let id = &req.spiffe_id;
        if id.trust_domain() != &self.trust_domain {
            return Err(CaError::WrongTrustDomain {
                id: id.to_string(),
                ca_trust_domain: self.trust_domain.to_string(),
            });
        }
        if req.ttl > self.ttl.max_ttl {
            return Err(CaError::TtlTooLong {
                requested: format_go(req.ttl),
                max: format_go(self.ttl.max_ttl),
            });
        }
        let lifetime = if req.ttl.is_zero() {
            self.ttl.default_ttl
        } else {
            req.ttl
        };
        if now >= self.chain_not_after {
            return Err(CaError::SigningCertExpired(rfc3339(self.chain_not_after)));
        }

        self.svid(id, &[], lifetime, now, &req.csr_pem, req.key_type)
    }

    /// The CA endpoint's own serving certificate: the workload profile of [`issue_at`](Self::issue_at)
    /// for `id`, plus DNS and IP SANs from `names` so ordinary TLS clients (istio-agent, grpcio)
    /// can verify it by host name. Not bound by the workload TTL maximum (it is the CA's own
    /// certificate); still clamped to the CA chain's expiry. The key is generated here.
    pub fn issue_server(
        &self,
        id: &SpiffeId,
        names: &[String],
        ttl: Duration,
    ) -> Result<IssuedSvid, CaError> {
        let mut sans = Vec::with_capacity(names.len());
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    let bad =
                        |why: String| CaError::InvalidOptions(format!("server name {n:?}: {why}"));
                    rustls_pki_types::DnsName::try_from(n.as_str())
                        .map_err(|_| bad("not a DNS name or an IP address".into()))?;
                    SanType::DnsName(
                        n.as_str()
                            .try_into()
                            .map_err(|e: rcgen::Error| bad(e.to_string()))?,
                    )
                }
            });
        }
        let now = OffsetDateTime::now_utc();
        if now >= self.chain_not_after {
            return Err(CaError::SigningCertExpired(rfc3339(self.chain_not_after)));
        }
        self.svid(id, &sans, ttl, now, &None, KeyType::default())
    }

    /// Every SVID this CA signs, workload or its own: one profile, built here only.
    fn svid(
        &self,
        id: &SpiffeId,
        extra_sans: &[SanType],
        lifetime: Duration,
        now: OffsetDateTime,
        csr_pem: &Option<String>,
        key_type: KeyType,
    ) -> Result<IssuedSvid, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = extra_sans.to_vec();
        params.subject_alt_names.push(SanType::URI(
            id.as_str()
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Crypto(e.to_string()))?,
        ));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        let serial_hex = hex(serial.as_ref());
        params.serial_number = Some(serial);
        let not_before = (now - CLOCK_SKEW_GRACE)
            .replace_nanosecond(0)
            .expect("0 is valid");
        let wanted = now + lifetime;
        let not_after = wanted
            .min(self.chain_not_after)
            .replace_nanosecond(0)
            .expect("0 is valid");
        params.not_before = not_before;
        params.not_after = not_after;

        let (cert, key_pem) = match csr_pem {
            Some(pem) => {
                let parsed = csr::parse(pem)?;
                if let Some(other) = parsed.uri_sans.iter().find(|u| *u != id.as_str()) {
                    return Err(CaError::CsrIdentityMismatch {
                        csr: other.clone(),
                        requested: id.to_string(),
                    });
                }
                (sign(&params, &parsed.public_key, self)?, None)
            }
            None => {
                let key = keys::generate(key_type)?;
                (sign(&params, &key, self)?, Some(keys::to_pkcs8_pem(&key)))
            }
        };

        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(cert.der().clone());
        chain.extend(self.chain.iter().cloned());
        let mut chain_pem = certs::to_pem(&chain[..1]);
        chain_pem.push_str(&self.chain_pem);
        Ok(IssuedSvid {
            spiffe_id: id.clone(),
            chain,
            chain_pem,
            root_pem: self.roots_pem.clone(),
            key_pem,
            serial_hex,
            not_before,
            not_after,
        })
    }
}

fn sign(
    params: &CertificateParams,
    public_key: &impl PublicKeyData,
    ca: &CertificateAuthority,
) -> Result<rcgen::Certificate, CaError> {
    Ok(params.signed_by(public_key, &ca.issuer)?)
}
