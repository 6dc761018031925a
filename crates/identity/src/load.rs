//! Reading certificates and trust bundles from PEM files and directories: the crate's only I/O.
//!
//! Errors always name the file, because bundle directories are assembled from many sources
//! (ConfigMaps, federation syncs) and "no trust domain" without a path is useless at 3 a.m.

use std::fs;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::pem::{certs_from_pem, PemError};
use crate::{x509, BundleError, SpiffeId, TrustBundleSet, TrustDomain};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Pem { path: PathBuf, source: PemError },
    #[error(
        "{}: certificate #{index} ({subject:?}) has no spiffe://<trust domain> URI SAN; give the \
         trust domain explicitly",
        .path.display()
    )]
    NoTrustDomain {
        path: PathBuf,
        index: usize,
        subject: String,
    },
    #[error(
        "{}: certificate #{index} ({subject:?}) names several trust domains in its URI SANs ({}); \
         give the trust domain explicitly",
        .path.display(), .found.join(", ")
    )]
    AmbiguousTrustDomain {
        path: PathBuf,
        index: usize,
        subject: String,
        found: Vec<String>,
    },
    #[error("{}: certificate #{index}: {source}", .path.display())]
    Bundle {
        path: PathBuf,
        index: usize,
        source: BundleError,
    },
    #[error("{}: no *.pem or *.crt files in directory", .path.display())]
    NoCertFiles { path: PathBuf },
}

/// All certificates in a PEM file (e.g. a `cert-chain.pem`, leaf first).
pub fn certs_from_pem_file(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    certs_from_pem(&bytes).map_err(|source| LoadError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

/// A bundle from one PEM file holding one or more roots. Each root belongs to `td` if given,
/// otherwise to the trust domain of its own `spiffe://<td>` URI SAN.
pub fn bundle_from_pem_file(
    path: impl AsRef<Path>,
    td: Option<TrustDomain>,
) -> Result<TrustBundleSet, LoadError> {
    let mut set = TrustBundleSet::new();
    add_pem_file(&mut set, path.as_ref(), td.as_ref())?;
    Ok(set)
}

/// A bundle from every `*.pem` / `*.crt` file directly in `dir` (sorted by name, subdirectories
/// ignored); trust domains come from each root's URI SAN.
pub fn bundle_from_dir(dir: impl AsRef<Path>) -> Result<TrustBundleSet, LoadError> {
    bundle_from_dir_with(dir, None)
}

/// Like [`bundle_from_dir`], but every root belongs to `td` when it is given.
pub fn bundle_from_dir_with(
    dir: impl AsRef<Path>,
    td: Option<&TrustDomain>,
) -> Result<TrustBundleSet, LoadError> {
    let dir = dir.as_ref();
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_cert_ext = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt"));
        // Follows symlinks on purpose: Kubernetes mounts ConfigMap keys as links into `..data/`.
        if is_cert_ext && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(LoadError::NoCertFiles {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    let mut set = TrustBundleSet::new();
    for file in files {
        add_pem_file(&mut set, &file, td)?;
    }
    Ok(set)
}

/// Adds every root in the PEM file at `path` to `set`.
pub fn add_pem_file(
    set: &mut TrustBundleSet,
    path: &Path,
    td: Option<&TrustDomain>,
) -> Result<(), LoadError> {
    let certs = certs_from_pem_file(path)?;
    for (i, cert) in certs.into_iter().enumerate() {
        let index = i + 1;
        let domain = match td {
            Some(td) => td.clone(),
            None => trust_domain_of_root(&cert, path, index)?,
        };
        set.add_root(domain, cert)
            .map_err(|source| LoadError::Bundle {
                path: path.to_path_buf(),
                index,
                source,
            })?;
    }
    Ok(())
}

/// The trust domain a CA certificate declares for itself via a `spiffe://` URI SAN (SPIFFE
/// signing authorities carry the trust domain's ID).
fn trust_domain_of_root(
    cert: &CertificateDer<'_>,
    path: &Path,
    index: usize,
) -> Result<TrustDomain, LoadError> {
    let facts = x509::facts(cert).map_err(|reason| LoadError::Pem {
        path: path.to_path_buf(),
        source: PemError::BadCertificate { index, reason },
    })?;
    let mut tds: Vec<TrustDomain> = facts
        .uri_sans
        .iter()
        .filter_map(|u| SpiffeId::parse(u).ok())
        .map(|id| id.trust_domain().clone())
        .collect();
    tds.sort();
    tds.dedup();
    match tds.len() {
        1 => Ok(tds.remove(0)),
        0 => Err(LoadError::NoTrustDomain {
            path: path.to_path_buf(),
            index,
            subject: facts.subject,
        }),
        _ => Err(LoadError::AmbiguousTrustDomain {
            path: path.to_path_buf(),
            index,
            subject: facts.subject,
            found: tds.iter().map(|t| t.to_string()).collect(),
        }),
    }
}
