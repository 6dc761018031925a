//! Trust bundles: the root certificates that anchor each trust domain.
//!
//! A domain may hold several roots at once — during root rotation both the old and the new root
//! must verify, and a federated domain may publish more than one authority.

use std::collections::BTreeMap;

use rustls_pki_types::{CertificateDer, TrustAnchor};
use thiserror::Error;

use crate::x509;
use crate::TrustDomain;

/// Why a certificate cannot be used as a root of trust.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BundleError {
    #[error("root for trust domain {td} is malformed: {reason}")]
    Malformed { td: TrustDomain, reason: String },
    #[error(
        "certificate {subject:?} cannot be a root for trust domain {td}: it is not a CA \
         (basicConstraints cA is not true)"
    )]
    NotCa { td: TrustDomain, subject: String },
    #[error(
        "certificate {subject:?} cannot be a root for trust domain {td}: its key usage does not \
         include keyCertSign"
    )]
    NoKeyCertSign { td: TrustDomain, subject: String },
}

/// A root plus what verification needs from it, computed once when the root is added so the
/// per-handshake path does no parsing of roots.
#[derive(Debug, Clone)]
pub(crate) struct RootMeta {
    pub anchor: TrustAnchor<'static>,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The root's own pathLenConstraint. Enforced by us: webpki reduces anchors to subject and
    /// key and so would ignore it, while Go and OpenSSL honour it.
    pub path_len: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct DomainRoots {
    certs: Vec<CertificateDer<'static>>,
    meta: Vec<RootMeta>,
}

/// Roots per trust domain. Only domains with at least one root are present.
#[derive(Debug, Clone, Default)]
pub struct TrustBundleSet {
    domains: BTreeMap<TrustDomain, DomainRoots>,
}

impl TrustBundleSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root for `td`. Returns `Ok(false)` if this exact certificate was already a root of
    /// `td` (re-loading a bundle is idempotent). Rejects certificates that are not CAs: trusting
    /// a leaf as an anchor would let whoever holds its key mint identities.
    pub fn add_root(
        &mut self,
        td: impl Into<TrustDomain>,
        cert: CertificateDer<'static>,
    ) -> Result<bool, BundleError> {
        let td = td.into();
        let malformed = |reason: String| BundleError::Malformed {
            td: td.clone(),
            reason,
        };
        let facts = x509::facts(&cert).map_err(malformed)?;
        if !facts.is_ca {
            return Err(BundleError::NotCa {
                td,
                subject: facts.subject,
            });
        }
        if facts.key_usage.is_some_and(|k| !k.key_cert_sign) {
            return Err(BundleError::NoKeyCertSign {
                td,
                subject: facts.subject,
            });
        }
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| malformed(format!("unusable as a trust anchor: {e}")))?
            .to_owned();
        let entry = self.domains.entry(td).or_default();
        if entry.certs.iter().any(|c| c.as_ref() == cert.as_ref()) {
            return Ok(false);
        }
        entry.certs.push(cert);
        entry.meta.push(RootMeta {
            anchor,
            subject: facts.subject,
            not_before: facts.not_before,
            not_after: facts.not_after,
            path_len: facts.path_len,
        });
        Ok(true)
    }

    /// The roots of `td`, in the order they were added; empty if the domain is unknown.
    pub fn roots(&self, td: &TrustDomain) -> &[CertificateDer<'static>] {
        self.domains.get(td).map_or(&[], |d| &d.certs)
    }

    pub(crate) fn root_entries(
        &self,
        td: &TrustDomain,
    ) -> impl Iterator<Item = (&CertificateDer<'static>, &RootMeta)> {
        self.domains
            .get(td)
            .into_iter()
            .flat_map(|d| d.certs.iter().zip(d.meta.iter()))
    }

    /// Whether `td` has at least one root.
    pub fn contains(&self, td: &TrustDomain) -> bool {
        self.domains.contains_key(td)
    }

    /// Trust domains that have roots, in sorted order.
    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }

    /// Total number of roots across all domains.
    pub fn len(&self) -> usize {
        self.domains.values().map(|d| d.certs.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Adds every root of `other` (already validated when it was added there).
    pub fn merge(&mut self, other: TrustBundleSet) {
        for (td, roots) in other.domains {
            let entry = self.domains.entry(td).or_default();
            for (cert, meta) in roots.certs.into_iter().zip(roots.meta) {
                if !entry.certs.iter().any(|c| c.as_ref() == cert.as_ref()) {
                    entry.certs.push(cert);
                    entry.meta.push(meta);
                }
            }
        }
    }

    /// Drops all roots of `td` (e.g. when a federation relationship is removed).
    pub fn remove_domain(&mut self, td: &TrustDomain) -> bool {
        self.domains.remove(td).is_some()
    }
}
