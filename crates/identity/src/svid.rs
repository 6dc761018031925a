//! X.509-SVID verification: standard RFC 5280 path validation (delegated to rustls-webpki) plus
//! the SPIFFE-specific leaf rules of the X509-SVID spec, anchored per trust domain.
//!
//! The trust-domain binding is the security-critical part: the roots used to anchor a chain are
//! chosen from the SPIFFE ID *in the leaf*, so a federated domain's CA can only vouch for its own
//! identities and never mint `spiffe://<local-domain>/...` ones.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, Der, TrustAnchor, UnixTime};
use thiserror::Error;

use crate::bundle::RootMeta;
use crate::x509::{self, CertFacts};
use crate::{IdError, SpiffeId, TrustConfig, TrustDomain};

// DER contents (without tag/length) of the extended key usage OIDs we accept.
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

/// The TLS role the SVID is being accepted for. A proxy verifying a client uses `ClientAuth`, a
/// client verifying a server `ServerAuth`; `Any` accepts either (X509-SVID leaves normally carry
/// both). A certificate without an EKU extension is valid for every usage, and
/// `anyExtendedKeyUsage` matches everything, as in Go's crypto/x509 (which Istio uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    ClientAuth,
    ServerAuth,
    #[default]
    Any,
}

impl Usage {
    fn permits_oid(self, oid: &[u8]) -> bool {
        oid == EKU_ANY
            || match self {
                Usage::ClientAuth => oid == EKU_CLIENT_AUTH,
                Usage::ServerAuth => oid == EKU_SERVER_AUTH,
                Usage::Any => oid == EKU_CLIENT_AUTH || oid == EKU_SERVER_AUTH,
            }
    }

    fn permits(self, eku: &x509::EkuFacts) -> bool {
        eku.any
            || match self {
                Usage::ClientAuth => eku.client_auth,
                Usage::ServerAuth => eku.server_auth,
                Usage::Any => eku.client_auth || eku.server_auth,
            }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Usage::ClientAuth => "clientAuth",
            Usage::ServerAuth => "serverAuth",
            Usage::Any => "serverAuth or clientAuth",
        })
    }
}

impl webpki::ExtendedKeyUsageValidator for Usage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if [EKU_ANY, EKU_CLIENT_AUTH, EKU_SERVER_AUTH]
                .into_iter()
                .any(|oid| self.permits_oid(oid) && webpki::KeyPurposeId::new(oid) == id)
            {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        let required = match self {
            Usage::ClientAuth => webpki::KeyUsage::client_auth(),
            _ => webpki::KeyUsage::server_auth(),
        };
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext { required, present },
        ))
    }
}

/// A successfully verified X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSvid {
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Leaf serial number, lowercase hex.
    pub serial_hex: String,
    /// Certificates on the verified path: leaf, the intermediates actually used, and the root.
    pub chain_len: usize,
    /// The latest `notBefore` and the earliest `notAfter` over the whole verified path (leaf,
    /// intermediates used, root): the window in which this verdict holds as it is
    /// ([`crate::verified`] keeps verdicts for that long and no longer).
    pub path_not_before: SystemTime,
    pub path_not_after: SystemTime,
}

/// Why a presented chain is not an acceptable X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SvidError {
    #[error("empty certificate chain (expected the leaf SVID first, then intermediates)")]
    EmptyChain,
    #[error("malformed certificate chain: {0}")]
    Malformed(String),
    #[error("leaf certificate has no URI SAN; an X.509-SVID carries its SPIFFE ID as exactly one URI SAN")]
    NoUriSan,
    #[error("leaf certificate has {} URI SANs ({}); an X.509-SVID must have exactly one", .uris.len(), .uris.join(", "))]
    MultipleUriSans { uris: Vec<String> },
    #[error("leaf URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId { uri: String, source: IdError },
    #[error("leaf SPIFFE ID {id} has no path; workload SVIDs must identify a workload, not a trust domain")]
    LeafIdHasNoPath { id: SpiffeId },
    /// Said with the peer's SPIFFE ID: an operator reading the log learns who was refused, not
    /// only which domain.
    #[error("peer {id}: trust domain {td} is not trusted (not the local domain, an alias, or a federated domain with a bundle)")]
    UntrustedTrustDomain { id: SpiffeId, td: TrustDomain },
    #[error("peer {id}: no root certificates are configured for trust domain {td}")]
    NoRootsFor { id: SpiffeId, td: TrustDomain },
    #[error(
        "leaf certificate is a CA (basicConstraints cA=true); an X.509-SVID leaf must not be a CA"
    )]
    LeafIsCa,
    #[error("bad key usage: {0}")]
    BadKeyUsage(String),
    #[error("{cert} has extended key usage [{}], which does not allow {usage}", .present.join(", "))]
    BadExtendedKeyUsage {
        cert: String,
        usage: Usage,
        present: Vec<String>,
    },
    #[error("{cert} expired at {}", fmt_time(*.not_after))]
    Expired { cert: String, not_after: SystemTime },
    #[error("{cert} is not valid until {}", fmt_time(*.not_before))]
    NotYetValid {
        cert: String,
        not_before: SystemTime,
    },
    #[error("certificate for {id} is not signed by a root of trust domain {td}")]
    UnknownIssuer { id: SpiffeId, td: TrustDomain },
    #[error("bad signature in certificate chain: {0}")]
    BadSignature(String),
    #[error("an intermediate certificate in the chain is not a CA")]
    IntermediateNotCa,
    #[error("certificate chain violates a CA's pathLenConstraint")]
    PathLenExceeded,
    #[error("certificate chain violates a CA's name constraints")]
    NameConstraintViolation,
}

fn fmt_time(t: SystemTime) -> String {
    x509::rfc3339(unix_secs(t))
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Verifies `chain` (leaf first, then intermediates) as an X.509-SVID for either TLS role.
pub fn verify_svid(
    chain: &[CertificateDer<'_>],
    trust: &TrustConfig,
    now: UnixTime,
) -> Result<VerifiedSvid, SvidError> {
    verify_svid_for(chain, trust, now, Usage::Any)
}

/// Verifies `chain` as an X.509-SVID acceptable for `usage`.
///
/// Leaf checks run before path building so the most specific reason is reported (a leaf with two
/// URI SANs is rejected as such, not as an unknown issuer).
pub fn verify_svid_for(
    chain: &[CertificateDer<'_>],
    trust: &TrustConfig,
    now: UnixTime,
    usage: Usage,
) -> Result<VerifiedSvid, SvidError> {
    let (leaf_der, intermediates) = chain.split_first().ok_or(SvidError::EmptyChain)?;
    let leaf = x509::facts(leaf_der)
        .map_err(|r| SvidError::Malformed(format!("leaf certificate: {r}")))?;
    let id = leaf_spiffe_id(&leaf)?;
    check_leaf(&leaf, usage)?;

    let td = id.trust_domain();
    if !trust.accepts(td) {
        return Err(SvidError::UntrustedTrustDomain {
            id: id.clone(),
            td: td.clone(),
        });
    }
    let roots = trust.anchor_entries(td);
    if roots.is_empty() {
        return Err(SvidError::NoRootsFor {
            id: id.clone(),
            td: td.clone(),
        });
    }

    let ee = webpki::EndEntityCert::try_from(leaf_der)
        .map_err(|e| SvidError::Malformed(format!("leaf certificate: {e}")))?;
    let now_secs = now.as_secs() as i64;
    // webpki treats anchors as bare (subject, key) pairs and ignores their validity window, so
    // roots outside theirs are kept out of the first attempt.
    let (current, stale): (Vec<_>, Vec<_>) = roots
        .iter()
        .map(|(_, meta)| *meta)
        .partition(|m| m.not_before <= now_secs && now_secs <= m.not_after);

    let path = match build_path(&ee, &current, intermediates, now, usage) {
        Ok(path) => path,
        Err(PathError::Webpki(webpki::Error::UnknownIssuer)) if !stale.is_empty() => {
            // Only a stale root would complete the path: report that root's validity problem.
            if let Some(root) = stale_root_used(&ee, &stale, intermediates, now, usage) {
                return Err(root_validity_error(root, now_secs));
            }
            return Err(SvidError::UnknownIssuer {
                id: id.clone(),
                td: td.clone(),
            });
        }
        Err(PathError::Webpki(e)) => return Err(map_webpki_error(e, chain, &id, usage)),
        Err(PathError::Svid(e)) => return Err(e),
    };

    Ok(VerifiedSvid {
        not_before: system_time(leaf.not_before),
        not_after: system_time(leaf.not_after),
        serial_hex: leaf.serial_hex,
        chain_len: path.len,
        path_not_before: system_time(path.not_before.max(leaf.not_before)),
        path_not_after: system_time(path.not_after.min(leaf.not_after)),
        id,
    })
}

fn leaf_spiffe_id(leaf: &CertFacts) -> Result<SpiffeId, SvidError> {
    let uri = match leaf.uri_sans.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [uri] => uri,
        many => {
            return Err(SvidError::MultipleUriSans {
                uris: many.to_vec(),
            })
        }
    };
    let id = SpiffeId::parse(uri).map_err(|source| SvidError::InvalidSpiffeId {
        uri: uri.clone(),
        source,
    })?;
    if id.path().is_empty() {
        return Err(SvidError::LeafIdHasNoPath { id });
    }
    Ok(id)
}

/// The X509-SVID leaf rules (spec section 5.2 and 4.3/4.4) that generic path validation skips.
fn check_leaf(leaf: &CertFacts, usage: Usage) -> Result<(), SvidError> {
    if leaf.is_ca {
        return Err(SvidError::LeafIsCa);
    }
    if let Some(ku) = leaf.key_usage {
        if ku.key_cert_sign || ku.crl_sign {
            return Err(SvidError::BadKeyUsage(
                "leaf certificate has keyCertSign or cRLSign; an X.509-SVID leaf must not be able \
                 to sign certificates or CRLs"
                    .into(),
            ));
        }
        if !ku.digital_signature {
            return Err(SvidError::BadKeyUsage(
                "leaf certificate key usage lacks digitalSignature, which TLS authentication needs"
                    .into(),
            ));
        }
    }
    if let Some(eku) = &leaf.eku {
        if !usage.permits(eku) {
            return Err(SvidError::BadExtendedKeyUsage {
                cert: "leaf certificate".into(),
                usage,
                present: eku.names.clone(),
            });
        }
    }
    Ok(())
}

enum PathError {
    Webpki(webpki::Error),
    Svid(SvidError),
}

/// A borrowed view of a stored anchor, so verification allocates no copies of root data.
fn view<'a>(a: &'a TrustAnchor<'static>) -> TrustAnchor<'a> {
    TrustAnchor {
        subject: Der::from(a.subject.as_ref()),
        subject_public_key_info: Der::from(a.subject_public_key_info.as_ref()),
        name_constraints: a.name_constraints.as_ref().map(|n| Der::from(n.as_ref())),
    }
}

/// Runs webpki path building against `roots` and applies the signing-certificate key usage rule
/// to the intermediates on the chosen path. Returns the path length.
/// What the verified path adds to the leaf's facts: its length and the validity window of its
/// intermediates and root.
struct PathFacts {
    len: usize,
    not_before: i64,
    not_after: i64,
}

fn build_path(
    ee: &webpki::EndEntityCert<'_>,
    roots: &[&RootMeta],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<PathFacts, PathError> {
    let anchors: Vec<TrustAnchor<'_>> = roots.iter().map(|m| view(&m.anchor)).collect();
    // Checked while webpki is still choosing a path, so another root can be tried if this one's
    // pathLenConstraint is too tight.
    let root_path_len = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let spki = path.anchor().subject_public_key_info.as_ref();
        let limit = roots
            .iter()
            .find(|m| m.anchor.subject_public_key_info.as_ref() == spki)
            .and_then(|m| m.path_len);
        match limit {
            Some(max) if path.intermediate_certificates().count() > max as usize => {
                Err(webpki::Error::PathLenConstraintViolated)
            }
            _ => Ok(()),
        }
    };
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            Some(&root_path_len),
        )
        .map_err(PathError::Webpki)?;
    let spki = path.anchor().subject_public_key_info.as_ref();
    let root = roots
        .iter()
        .find(|m| m.anchor.subject_public_key_info.as_ref() == spki);
    let mut facts_of_path = PathFacts {
        len: 2,
        not_before: root.map_or(i64::MIN, |m| m.not_before),
        not_after: root.map_or(i64::MAX, |m| m.not_after),
    };
    for cert in path.intermediate_certificates() {
        facts_of_path.len += 1;
        let facts = x509::facts(cert.der().as_ref())
            .map_err(|r| PathError::Svid(SvidError::Malformed(format!("intermediate: {r}"))))?;
        facts_of_path.not_before = facts_of_path.not_before.max(facts.not_before);
        facts_of_path.not_after = facts_of_path.not_after.min(facts.not_after);
        // RFC 5280 6.1.4 (n) and X509-SVID 4.3: a signing certificate with a key usage extension
        // must assert keyCertSign. webpki deliberately ignores key usage, so check it here.
        if facts.key_usage.is_some_and(|k| !k.key_cert_sign) {
            return Err(PathError::Svid(SvidError::BadKeyUsage(format!(
                "intermediate certificate {:?} signed the chain but its key usage lacks keyCertSign",
                facts.subject
            ))));
        }
    }
    Ok(facts_of_path)
}

/// Which stale root (if any) completes the path.
fn stale_root_used<'a>(
    ee: &webpki::EndEntityCert<'_>,
    stale: &[&'a RootMeta],
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Option<&'a RootMeta> {
    stale
        .iter()
        .copied()
        .find(|root| build_path(ee, &[root], intermediates, now, usage).is_ok())
}

fn root_validity_error(root: &RootMeta, now: i64) -> SvidError {
    let cert = format!("root certificate {:?}", root.subject);
    if now < root.not_before {
        SvidError::NotYetValid {
            cert,
            not_before: system_time(root.not_before),
        }
    } else {
        SvidError::Expired {
            cert,
            not_after: system_time(root.not_after),
        }
    }
}

/// Describes the chain certificate whose validity bound equals `secs`, for messages that would
/// otherwise only say "a certificate expired".
fn describe_by_time(
    chain: &[CertificateDer<'_>],
    secs: i64,
    bound: fn(&CertFacts) -> i64,
) -> String {
    for (i, der) in chain.iter().enumerate() {
        if let Ok(f) = x509::facts(der) {
            if bound(&f) == secs {
                return if i == 0 {
                    "leaf certificate".to_string()
                } else {
                    format!("intermediate certificate {:?}", f.subject)
                };
            }
        }
    }
    "a certificate in the chain".to_string()
}

fn map_webpki_error(
    e: webpki::Error,
    chain: &[CertificateDer<'_>],
    id: &SpiffeId,
    usage: Usage,
) -> SvidError {
    use webpki::Error as W;
    match e {
        W::CertExpired { not_after, .. } => {
            let secs = not_after.as_secs() as i64;
            SvidError::Expired {
                cert: describe_by_time(chain, secs, |f| f.not_after),
                not_after: system_time(secs),
            }
        }
        W::CertNotValidYet { not_before, .. } => {
            let secs = not_before.as_secs() as i64;
            SvidError::NotYetValid {
                cert: describe_by_time(chain, secs, |f| f.not_before),
                not_before: system_time(secs),
            }
        }
        W::UnknownIssuer => SvidError::UnknownIssuer {
            id: id.clone(),
            td: id.trust_domain().clone(),
        },
        W::InvalidSignatureForPublicKey => SvidError::BadSignature(
            "a certificate's signature does not verify with its issuer's public key".into(),
        ),
        W::SignatureAlgorithmMismatch
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            SvidError::BadSignature(format!(
                "the signature algorithm is not one the issuer's key can verify or that is \
                 accepted ({e})"
            ))
        }
        W::CaUsedAsEndEntity => SvidError::LeafIsCa,
        W::EndEntityUsedAsCa => SvidError::IntermediateNotCa,
        W::PathLenConstraintViolated => SvidError::PathLenExceeded,
        W::NameConstraintViolation => SvidError::NameConstraintViolation,
        W::RequiredEkuNotFoundContext(ctx) => SvidError::BadExtendedKeyUsage {
            cert: "an intermediate certificate".into(),
            usage,
            present: ctx
                .present
                .iter()
                .map(|oid| {
                    oid.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .collect(),
        },
        other => SvidError::Malformed(format!("{other:?}")),
    }
}
