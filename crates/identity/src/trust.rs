//! Which trust domains a workload accepts peers from, and which roots anchor each of them.

use rustls_pki_types::CertificateDer;

use crate::bundle::RootMeta;
use crate::{TrustBundleSet, TrustDomain};

/// A workload's trust configuration: its own domain, Istio-style trust-domain aliases, and the
/// bundles of every domain it knows (its own plus federated ones).
///
/// Aliases model Istio's trust-domain migration: peers still presenting `spiffe://old-td/...`
/// certificates are issued by the same CA as the local domain, so the local roots anchor them.
/// A federated domain, by contrast, is anchored only by its own bundle — a certificate for domain
/// B signed by A's root must never be accepted just because A is trusted.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub local: TrustDomain,
    pub aliases: Vec<TrustDomain>,
    pub bundles: TrustBundleSet,
}

impl TrustConfig {
    pub fn new(local: TrustDomain, bundles: TrustBundleSet) -> Self {
        TrustConfig {
            local,
            aliases: Vec::new(),
            bundles,
        }
    }

    pub fn with_aliases(mut self, aliases: impl IntoIterator<Item = TrustDomain>) -> Self {
        self.aliases.extend(aliases);
        self
    }

    pub fn is_local_or_alias(&self, td: &TrustDomain) -> bool {
        *td == self.local || self.aliases.contains(td)
    }

    /// Whether peers of `td` can be authenticated at all: the local domain, an alias, or a
    /// domain we hold a bundle for (federation).
    pub fn accepts(&self, td: &TrustDomain) -> bool {
        self.is_local_or_alias(td) || self.bundles.contains(td)
    }

    /// The roots that may anchor a certificate whose SPIFFE ID is in `td`: `td`'s own bundle,
    /// plus the local roots when `td` is the local domain or an alias. Duplicates are removed.
    /// Empty for a domain that is not accepted.
    pub fn anchors_for(&self, td: &TrustDomain) -> Vec<&CertificateDer<'static>> {
        self.anchor_entries(td)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    pub(crate) fn anchor_entries(
        &self,
        td: &TrustDomain,
    ) -> Vec<(&CertificateDer<'static>, &RootMeta)> {
        let mut out: Vec<(&CertificateDer<'static>, &RootMeta)> =
            self.bundles.root_entries(td).collect();
        if *td != self.local && self.aliases.contains(td) {
            for entry in self.bundles.root_entries(&self.local) {
                if !out.iter().any(|(c, _)| c.as_ref() == entry.0.as_ref()) {
                    out.push(entry);
                }
            }
        }
        out
    }
}
