//! Creating CAs: a self-signed root, or an intermediate signed by a parent CA (Istio's
//! "plug-in CA": each cluster's istiod signs with an intermediate under a shared root).

use std::time::Duration;

use rand::RngCore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, SanType};
use time::OffsetDateTime;
use trustmesh_identity::TrustDomain;

use crate::authority::CertificateAuthority;
use crate::certs::{self, rfc3339};
use crate::error::CaError;
use crate::keys::{self, KeyType};
use crate::profile::{hex, random_serial, CLOCK_SKEW_GRACE};

/// Options for [`CertificateAuthority::init_root`] / [`init_intermediate`](CertificateAuthority::init_intermediate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub key_type: KeyType,
    /// Lifetime of the CA certificate. Istio's self-signed root default is 10 years.
    pub validity: Duration,
    /// `pathLenConstraint`; `None` leaves it unconstrained.
    pub path_len: Option<u8>,
    /// Common name; when `None`, roots get none (Istio's root subject is just `O=<td>`) and
    /// intermediates get a unique one (see [`InitOptions::intermediate`]).
    pub common_name: Option<String>,
    /// Lets an intermediate serve a different trust domain than its parent. Off by default so a
    /// typo cannot mint a CA for a domain nobody meant to create; on for a trust domain migration
    /// (old-td → new-td under one root) or a shared root across clusters with their own domains,
    /// where peers then trust the root for the new domain too (`new-td=root-cert.pem`) or alias it.
    pub cross_trust_domain: bool,
}

/// Istio's `DefaultSelfSignedCACertTTL`: 3650 days.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);

impl InitOptions {
    /// Root defaults: ECDSA P-256, 10 years, no path length limit.
    pub fn root() -> Self {
        InitOptions {
            key_type: KeyType::EcdsaP256,
            validity: DEFAULT_CA_VALIDITY,
            path_len: None,
            common_name: None,
            cross_trust_domain: false,
        }
    }

    /// Intermediate defaults: like the root but `pathlen:0`, as Istio's cert tooling makes
    /// cluster CAs: the intermediate may sign workloads, not further CAs.
    pub fn intermediate() -> Self {
        InitOptions {
            path_len: Some(0),
            ..InitOptions::root()
        }
    }
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions::root()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed root: `CA:TRUE`, keyCertSign + cRLSign, subject `O=<td>` (Istio's
    /// self-signed CA uses the trust domain as organisation), URI SAN `spiffe://<td>` so
    /// trust bundles can tell which domain the root anchors.
    pub fn init_root(trust_domain: &TrustDomain, opts: &InitOptions) -> Result<Self, CaError> {
        let now = OffsetDateTime::now_utc();
        check_validity_option(opts)?;
        let key = keys::generate(opts.key_type)?;
        let mut params = ca_params(trust_domain, opts, now, now + opts.validity)?;
        params.distinguished_name = subject(trust_domain, opts.common_name.as_deref());
        let cert = params.self_signed(&key)?;
        let chain = vec![cert.der().clone()];
        let facts = vec![certs::facts(cert.der()).map_err(CaError::Crypto)?];
        let invalid = |r: String| CaError::Crypto(r);
        CertificateAuthority::from_parts(
            trust_domain.clone(),
            key,
            chain.clone(),
            chain,
            &facts,
            &invalid,
        )
    }

    /// Creates an intermediate CA signed by `parent`. Its `cert-chain.pem` is the new
    /// certificate followed by the parent's chain, its roots are the parent's roots. The
    /// validity is clipped to the parent's notAfter (a CA cannot usefully outlive its issuer),
    /// and the path length is tightened to fit under the parent's own constraint.
    pub fn init_intermediate(
        parent: &CertificateAuthority,
        trust_domain: &TrustDomain,
        opts: &InitOptions,
    ) -> Result<Self, CaError> {
        let now = OffsetDateTime::now_utc();
        check_validity_option(opts)?;
        if *trust_domain != parent.trust_domain && !opts.cross_trust_domain {
            return Err(CaError::InvalidOptions(format!(
                "parent CA serves trust domain {}, not {trust_domain} (to create an intermediate \
                 for another trust domain under this root, e.g. for a trust domain migration, \
                 ask for it explicitly: --cross-trust-domain)",
                parent.trust_domain
            )));
        }
        if now >= parent.chain_not_after {
            return Err(CaError::SigningCertExpired(rfc3339(parent.chain_not_after)));
        }
        let mut opts = opts.clone();
        if let Some(parent_len) = parent.signing.path_len {
            if parent_len == 0 {
                return Err(CaError::InvalidOptions(
                    "parent CA has pathLenConstraint 0: it may sign workloads but not further CAs"
                        .into(),
                ));
            }
            let limit = u8::try_from(parent_len - 1).unwrap_or(u8::MAX);
            opts.path_len = Some(opts.path_len.map_or(limit, |p| p.min(limit)));
        }
        let not_after = (now + opts.validity).min(parent.chain_not_after);
        let key = keys::generate(opts.key_type)?;
        let mut params = ca_params(trust_domain, &opts, now, not_after)?;
        // A unique CN keeps this CA's subject distinct from its parent's and from sibling or
        // successor intermediates, so name-based chain building never picks the wrong one.
        let cn = opts.common_name.clone().unwrap_or_else(|| {
            let mut tag = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut tag);
            format!("Intermediate CA {}", hex(&tag))
        });
        params.distinguished_name = subject(trust_domain, Some(&cn));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &parent.issuer)?;

        let mut chain = vec![cert.der().clone()];
        chain.extend(parent.chain.iter().cloned());
        let mut facts = vec![certs::facts(cert.der()).map_err(CaError::Crypto)?];
        facts.extend(
            parent
                .chain
                .iter()
                .map(|c| certs::facts(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(CaError::Crypto)?,
        );
        let invalid = |r: String| CaError::Crypto(r);
        CertificateAuthority::from_parts(
            trust_domain.clone(),
            key,
            chain,
            parent.roots.clone(),
            &facts,
            &invalid,
        )
    }
}

fn check_validity_option(opts: &InitOptions) -> Result<(), CaError> {
    if opts.validity < Duration::from_secs(3600) {
        return Err(CaError::InvalidOptions(format!(
            "CA validity {} is too short (minimum 1h)",
            trustmesh_config::format_go(opts.validity)
        )));
    }
    Ok(())
}

fn ca_params(
    td: &TrustDomain,
    opts: &InitOptions,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.not_before = (now - CLOCK_SKEW_GRACE)
        .replace_nanosecond(0)
        .expect("0 is valid");
    params.not_after = not_after.replace_nanosecond(0).expect("0 is valid");
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(match opts.path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let uri = td.id().to_string();
    params.subject_alt_names = vec![SanType::URI(
        uri.try_into()
            .map_err(|e: rcgen::Error| CaError::Crypto(e.to_string()))?,
    )];
    Ok(params)
}

fn subject(td: &TrustDomain, cn: Option<&str>) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, td.as_str());
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    dn
}
