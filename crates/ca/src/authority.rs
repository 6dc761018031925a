//! The CA itself: a signing key, its certificate, the chain up to the root, and the TTL policy,
//! read from Istio's `cacerts` layout or cert-manager's `kubernetes.io/tls` one (`layout`),
//! written to the `cacerts` layout.
//!
//! The trust domain the CA issues in is, as for istiod, a setting of the mesh
//! (`meshConfig.trustDomain`), not a property of the certificates: a plug-in intermediate made
//! by openssl or cert-manager carries no `spiffe://` URI. [`CertificateAuthority::load_to_serve`]
//! therefore takes an explicit domain over whatever the certificates name, and refuses to guess
//! when neither says one.
//!
//! Loading is deliberately strict: a CA with a mismatched key, a broken chain or an expired
//! certificate would hand out certificates that no peer accepts, and that failure would only
//! surface later, far from its cause. Every check names the file at fault.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use trustmesh_identity::{SpiffeId, TrustDomain};

use crate::certs::{self, CertFacts};
use crate::chain::{check_chain, check_validity, ChainError};
use crate::error::CaError;
use crate::fsutil::{self, OutFile, CERT_MODE, KEY_MODE};
use crate::keys;
use crate::layout::{self, Layout};
pub use crate::layout::{CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE};

/// Trust domain assumed for a `cacerts` directory whose certificates carry no `spiffe://` URI:
/// Istio's own default, which is what an Istio CA with the same files would issue for.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Workload certificate lifetimes. Defaults are Istio's: `DEFAULT_WORKLOAD_CERT_TTL` 24h and
/// `MAX_WORKLOAD_CERT_TTL` 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Used when a request asks for no particular lifetime (TTL zero).
    pub default_ttl: Duration,
    /// Requests above this are refused, as Istio does, rather than silently shortened: a
    /// caller that asked for 1 year and got 90 days would find out at the worst moment.
    pub max_ttl: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// A loaded or freshly created certificate authority.
pub struct CertificateAuthority {
    pub(crate) trust_domain: TrustDomain,
    /// The domain a `spiffe://` URI SAN of the chain names, if any (see [`derived_trust_domain`]).
    pub(crate) named_trust_domain: Option<TrustDomain>,
    /// How the directory it was loaded from is laid out, and whether the other layout's files
    /// were there too (and ignored).
    pub(crate) layout: (Layout, bool),
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// `cert-chain.pem`: the signing cert first, then its issuers, ending at a root.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// `root-cert.pem`: may hold several roots (during a root rotation).
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) signing: CertFacts,
    /// Earliest notAfter along the chain: nothing issued may outlive it.
    pub(crate) chain_not_after: OffsetDateTime,
    pub(crate) chain_pem: String,
    pub(crate) roots_pem: String,
    pub(crate) ttl: TtlPolicy,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("subject", &self.signing.subject)
            .field("not_after", &self.signing.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &"[elided]")
            .finish()
    }
}

impl CertificateAuthority {
    /// Loads an Istio `cacerts` directory. The trust domain is the one the root (or signing
    /// certificate) names in a `spiffe://<td>` URI SAN, else Istio's default `cluster.local`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, CaError> {
        load(
            dir.as_ref(),
            TdRule::NamedOrDefault,
            OffsetDateTime::now_utc(),
        )
    }

    /// Loads a CA directory to serve from, deciding the trust domain as istiod does: the
    /// explicit one (`--trust-domain`, Istio's `meshConfig.trustDomain`) when given, even if
    /// the certificates name another (see [`named_trust_domain`](Self::named_trust_domain)
    /// to warn about it); otherwise the one the certificates name; with neither, an error
    /// asking for `--trust-domain` rather than a guess, because a wrong guess issues
    /// certificates no peer of the mesh accepts.
    pub fn load_to_serve(
        dir: impl AsRef<Path>,
        trust_domain: Option<&TrustDomain>,
    ) -> Result<Self, CaError> {
        load(
            dir.as_ref(),
            TdRule::Serve(trust_domain),
            OffsetDateTime::now_utc(),
        )
    }

    /// Like [`load`](Self::load) with an explicit trust domain, for `cacerts` without SPIFFE
    /// URIs (openssl-made). Refused if the certificates name a different trust domain.
    pub fn load_with_trust_domain(
        dir: impl AsRef<Path>,
        trust_domain: &TrustDomain,
    ) -> Result<Self, CaError> {
        load(
            dir.as_ref(),
            TdRule::Exactly(trust_domain),
            OffsetDateTime::now_utc(),
        )
    }

    /// Writes the four `cacerts` files atomically; `ca-key.pem` is PKCS#8 with mode 0600.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), CaError> {
        let ca_cert = certs::to_pem(&self.chain[..1]);
        let key = keys::to_pkcs8_pem(self.issuer.key());
        fsutil::write_files_atomically(
            dir.as_ref(),
            &[
                OutFile {
                    name: CA_KEY_FILE,
                    contents: key.as_bytes(),
                    mode: KEY_MODE,
                },
                OutFile {
                    name: CA_CERT_FILE,
                    contents: ca_cert.as_bytes(),
                    mode: CERT_MODE,
                },
                OutFile {
                    name: CERT_CHAIN_FILE,
                    contents: self.chain_pem.as_bytes(),
                    mode: CERT_MODE,
                },
                OutFile {
                    name: ROOT_CERT_FILE,
                    contents: self.roots_pem.as_bytes(),
                    mode: CERT_MODE,
                },
            ],
        )
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust domain the certificates name in a `spiffe://` URI SAN, if any; differs from
    /// [`trust_domain`](Self::trust_domain) when an explicit domain overrode it.
    pub fn named_trust_domain(&self) -> Option<&TrustDomain> {
        self.named_trust_domain.as_ref()
    }

    /// The layout of the directory it was loaded from, and whether the other layout's files
    /// were present too and ignored (istiod reads `tls.crt` first, so does this crate).
    pub fn layout(&self) -> (Layout, bool) {
        self.layout
    }

    /// The signing certificate (`ca-cert.pem`).
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// `cert-chain.pem`: signing cert first, root last.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// `root-cert.pem` contents: the trust anchors to distribute to workloads.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// notAfter of the signing certificate.
    pub fn not_after(&self) -> OffsetDateTime {
        self.signing.not_after
    }

    /// Human name of the signing key's algorithm (`ECDSA P-256`, `RSA`, ...).
    pub fn key_algorithm(&self) -> &'static str {
        keys::describe(self.issuer.key().algorithm())
    }

    pub fn ttl_policy(&self) -> TtlPolicy {
        self.ttl
    }

    /// Replaces the TTL policy; refused when the default exceeds the maximum or either is 0.
    pub fn set_ttl_policy(&mut self, policy: TtlPolicy) -> Result<(), CaError> {
        if policy.max_ttl.is_zero() || policy.default_ttl.is_zero() {
            return Err(CaError::InvalidOptions(
                "TTLs must be greater than zero".into(),
            ));
        }
        if policy.default_ttl > policy.max_ttl {
            return Err(CaError::InvalidOptions(format!(
                "default TTL {} is greater than the max TTL {}",
                trustmesh_config::format_go(policy.default_ttl),
                trustmesh_config::format_go(policy.max_ttl)
            )));
        }
        self.ttl = policy;
        Ok(())
    }

    /// Assembles a CA from parts already known to be consistent (fresh from `init_*`) or
    /// verified by [`load`]. Also runs the issuer-name probe: see [`probe_issuer`].
    pub(crate) fn from_parts(
        trust_domain: TrustDomain,
        key: KeyPair,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
        facts: &[CertFacts],
        invalid: &dyn Fn(String) -> CaError,
    ) -> Result<Self, CaError> {
        let issuer = Issuer::from_ca_cert_der(&chain[0], key).map_err(|_| {
            invalid(format!(
                "{CA_CERT_FILE} subject cannot be used as an issuer name (multi-valued RDN or \
                 unsupported string type); reissue the CA with a simple subject"
            ))
        })?;
        probe_issuer(&issuer, &chain[0], &facts[0]).map_err(invalid)?;
        let chain_not_after = facts
            .iter()
            .map(|f| f.not_after)
            .min()
            .expect("non-empty chain");
        Ok(CertificateAuthority {
            trust_domain,
            named_trust_domain: derived_trust_domain(facts),
            layout: (Layout::Cacerts, false),
            issuer,
            chain_pem: certs::to_pem(&chain),
            roots_pem: certs::to_pem(&roots),
            chain,
            roots,
            signing: facts[0].clone(),
            chain_not_after,
            ttl: TtlPolicy::default(),
        })
    }
}

/// Signs a throw-away certificate and checks that its issuer name is byte-identical to the CA
/// certificate's subject, and that it verifies under the CA certificate's key. rcgen rebuilds
/// the issuer name from parsed attributes; webpki matches names byte-for-byte, so any
/// re-encoding difference would make every issued certificate unverifiable. Better to find out
/// at load time than at the first handshake.
fn probe_issuer(
    issuer: &Issuer<'static, KeyPair>,
    ca_der: &CertificateDer<'_>,
    ca: &CertFacts,
) -> Result<(), String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serial_number = Some(SerialNumber::from_slice(&[1]));
    params.is_ca = IsCa::ExplicitNoCa;
    let probe = params
        .signed_by(issuer.key(), issuer)
        .map_err(|e| format!("cannot sign with {CA_KEY_FILE}: {e}"))?;
    let probe_facts = certs::facts(probe.der()).map_err(|e| format!("probe certificate: {e}"))?;
    if probe_facts.issuer_raw != ca.subject_raw {
        return Err(format!(
            "{CA_CERT_FILE} subject ({}) cannot be reproduced byte-for-byte as an issuer name; \
             reissue the CA with UTF8String/PrintableString attributes",
            ca.subject
        ));
    }
    if !certs::signed_by(probe.der(), ca_der) {
        return Err(format!("{CA_KEY_FILE} does not match {CA_CERT_FILE}"));
    }
    Ok(())
}

/// How [`load`] decides the trust domain.
enum TdRule<'a> {
    /// The named one, else Istio's default `cluster.local` (`load`, `ca issue`).
    NamedOrDefault,
    /// This one; certificates naming another are refused (`ca init --parent`, `ca issue`).
    Exactly(&'a TrustDomain),
    /// The explicit one over the named one; neither is an error (`ca serve`, `control`).
    Serve(Option<&'a TrustDomain>),
}

fn load(
    dir: &Path,
    rule: TdRule<'_>,
    now: OffsetDateTime,
) -> Result<CertificateAuthority, CaError> {
    let invalid = |reason: String| CaError::InvalidCa {
        dir: dir.to_path_buf(),
        reason,
    };
    let files = layout::detect(dir)?;
    let (cert_file, key_file) = (files.cert_name, files.key_name);

    // Read everything first so a missing file is reported before any content problem.
    let ca_certs = certs::read_pem_certs(&files.cert)?;
    let key_text = std::fs::read_to_string(&files.key).map_err(|e| CaError::io(&files.key, e))?;
    let chain = certs::read_pem_certs(&files.chain)?;
    let roots = certs::read_pem_certs(&files.root)?;
    let key = keys::from_pem(&key_text).map_err(|r| CaError::malformed(&files.key, r))?;

    // Like Istio, the first certificate of ca-cert.pem (tls.crt) is the signing certificate.
    let ca_der = ca_certs[0].clone();
    let ca = certs::facts(&ca_der).map_err(|r| CaError::malformed(&files.cert, r))?;
    if !ca.is_ca {
        return Err(invalid(format!(
            "{cert_file} is not a CA certificate (basicConstraints CA:TRUE missing)"
        )));
    }
    if ca.key_cert_sign == Some(false) {
        return Err(invalid(format!(
            "{cert_file} keyUsage does not allow keyCertSign"
        )));
    }
    if key.public_key_raw() != ca.public_key.as_slice() {
        return Err(invalid(format!("{key_file} does not match {cert_file}")));
    }
    check_validity(&ca, cert_file, "CA certificate", now).map_err(invalid)?;

    let (chain, facts) = check_chain(chain, &ca_der, &roots, &files, now).map_err(|e| match e {
        ChainError::Invalid(r) => invalid(r),
        ChainError::Malformed(p, r) => CaError::malformed(p, r),
    })?;
    let derived = derived_trust_domain(&facts);
    let trust_domain = match (rule, derived) {
        (TdRule::Exactly(td), Some(found)) if *td != found => {
            return Err(invalid(format!(
                "trust domain {td} was requested but the CA certificates name spiffe://{found}"
            )))
        }
        (TdRule::Exactly(td) | TdRule::Serve(Some(td)), _) => td.clone(),
        (_, Some(found)) => found,
        (TdRule::NamedOrDefault, None) => {
            TrustDomain::parse(DEFAULT_TRUST_DOMAIN).expect("valid default")
        }
        (TdRule::Serve(None), None) => {
            return Err(invalid(format!(
                "no certificate of the chain names a trust domain (a spiffe://<trust domain> \
                 URI SAN, which CAs made by openssl or cert-manager usually lack); pass \
                 --trust-domain with the mesh's trust domain (Istio's meshConfig.trustDomain, \
                 e.g. --trust-domain {DEFAULT_TRUST_DOMAIN})"
            )))
        }
    };
    let mut ca =
        CertificateAuthority::from_parts(trust_domain, key, chain, roots, &facts, &invalid)?;
    ca.layout = (files.layout, files.shadowed);
    Ok(ca)
}

/// The trust domain named by a `spiffe://<td>` URI SAN (empty path), looking at the signing
/// certificate first and then up the chain: the nearest CA that names a domain is the one this
/// CA serves (an intermediate made for a trust domain migration names the new domain while its
/// root still names the old one).
pub(crate) fn derived_trust_domain(facts: &[CertFacts]) -> Option<TrustDomain> {
    facts.iter().find_map(|f| {
        f.uri_sans.iter().find_map(|u| {
            let id = SpiffeId::parse(u).ok()?;
            id.path().is_empty().then(|| id.trust_domain().clone())
        })
    })
}
