//! Certificates built field by field with rcgen, for tests of what a verifier accepts and
//! refuses: a CA or a leaf is a spec (validity, SANs, key usages, path length, serial) that a
//! test bends one field at a time. `new` places validity around the fixed [`NOW_SECS`], so
//! verification at [`now`] does not depend on the clock; `around` places it around any time
//! (the wall clock, for certificates a running sidecar must accept).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

/// 2027-01-15T08:00:00Z — a fixed verification time so tests do not depend on the clock.
pub const NOW_SECS: i64 = 1_800_000_000;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

/// [`NOW_SECS`] as a verification time.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(NOW_SECS as u64))
}

pub fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

/// A CA: its certificate and what signs with it.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        trustmesh_identity::pem::cert_to_pem(&self.cert)
    }
}

pub struct CaSpec {
    pub cn: String,
    pub uri: Option<String>,
    pub extra_uris: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub path_len: Option<u8>,
    pub is_ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
}

impl CaSpec {
    /// A CA for `td` (its `spiffe://<td>` URI SAN), valid from 30 days before [`NOW_SECS`] to a
    /// year after.
    pub fn new(cn: &str, td: &str) -> CaSpec {
        CaSpec::around(cn, td, NOW_SECS)
    }

    /// [`CaSpec::new`] valid around `now` (seconds since the epoch).
    pub fn around(cn: &str, td: &str, now: i64) -> CaSpec {
        CaSpec {
            cn: cn.to_string(),
            uri: Some(format!("spiffe://{td}")),
            extra_uris: Vec::new(),
            not_before: now - 30 * DAY,
            not_after: now + 365 * DAY,
            path_len: None,
            is_ca: true,
            key_usages: vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ],
        }
    }

    fn params(&self) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.cn.as_str());
        dn.push(DnType::OrganizationName, "trustmesh tests");
        p.distinguished_name = dn;
        p.subject_alt_names = self
            .uri
            .iter()
            .chain(&self.extra_uris)
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .collect();
        p.not_before = at(self.not_before);
        p.not_after = at(self.not_after);
        p.is_ca = if self.is_ca {
            match self.path_len {
                Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
                None => IsCa::Ca(BasicConstraints::Unconstrained),
            }
        } else {
            IsCa::ExplicitNoCa
        };
        p.key_usages = self.key_usages.clone();
        p.use_authority_key_identifier_extension = true;
        p
    }

    pub fn self_signed(&self) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = self.params();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn signed_by(&self, parent: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = self.params();
        let cert = params.signed_by(&key, &parent.issuer).unwrap();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }
}

/// A root CA for `td` at the fixed time.
pub fn root(td: &str) -> Ca {
    CaSpec::new(&format!("root {td}"), td).self_signed()
}

/// An intermediate CA for `td` under `parent`, at the fixed time.
pub fn intermediate(parent: &Ca, td: &str) -> Ca {
    CaSpec::new(&format!("intermediate {td}"), td).signed_by(parent)
}

pub struct LeafSpec {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
    pub serial: Option<u64>,
}

impl LeafSpec {
    /// What Istio issues: one SPIFFE URI SAN, digitalSignature + keyEncipherment, server+client
    /// auth, short lifetime (an hour before [`NOW_SECS`] to a day after).
    pub fn new(uri: &str) -> LeafSpec {
        LeafSpec::around(uri, NOW_SECS)
    }

    /// [`LeafSpec::new`] valid around `now` (seconds since the epoch).
    pub fn around(uri: &str, now: i64) -> LeafSpec {
        LeafSpec {
            uris: vec![uri.to_string()],
            dns: vec![],
            not_before: now - HOUR,
            not_after: now + DAY,
            is_ca: false,
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            serial: None,
        }
    }

    pub fn signed_by(&self, ca: &Ca) -> CertificateDer<'static> {
        self.signed_with_key(ca).0
    }

    /// The certificate and its private key.
    pub fn signed_with_key(&self, ca: &Ca) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = self
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                self.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        p.not_before = at(self.not_before);
        p.not_after = at(self.not_after);
        p.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        p.key_usages = self.key_usages.clone();
        p.extended_key_usages = self.ekus.clone();
        p.use_authority_key_identifier_extension = true;
        if let Some(s) = self.serial {
            p.serial_number = Some(s.into());
        }
        let cert = p.signed_by(&key, &ca.issuer).unwrap().der().clone();
        (cert, key)
    }
}

/// A workload leaf for `uri` under `ca`, at the fixed time.
pub fn leaf(ca: &Ca, uri: &str) -> CertificateDer<'static> {
    LeafSpec::new(uri).signed_by(ca)
}
