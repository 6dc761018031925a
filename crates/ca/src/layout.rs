//! Which files of a CA directory hold what: Istio's `cacerts` layout or the `kubernetes.io/tls`
//! secret cert-manager writes, which istiod accepts for its plug-in CA as well.
//!
//! istiod (pilot/pkg/bootstrap, `detectSigningCABundle`) looks for `tls.crt` first: when it is
//! there the directory is a TLS secret, the signing certificate is `tls.crt` (possibly followed
//! by its chain), the key `tls.key`, the root `ca.crt`, and the chain `tls.crt` then `ca.crt`;
//! otherwise the four `cacerts` files. A bundle that is only partly there is refused
//! ("incomplete signing CA bundle"). The same order is kept here, so a directory holding both
//! layouts is read as istiod reads it, and a half-present layout fails with the files it lacks
//! named, not with whichever file happened to be opened first.

use std::path::{Path, PathBuf};

use crate::error::CaError;

/// File names of Istio's plug-in CA layout (the `cacerts` secret / directory).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// File names of a `kubernetes.io/tls` secret as cert-manager writes it (Istio's
/// `TLSSecretCACertFile`, `TLSSecretCAPrivateKeyFile`, `TLSSecretRootCertFile`).
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
pub const TLS_ROOT_FILE: &str = "ca.crt";

/// The two layouts a CA directory may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem`.
    Cacerts,
    /// `tls.crt` (signing certificate, then its chain), `tls.key`, `ca.crt` (the root).
    KubernetesTls,
}

impl Layout {
    /// Names of the files, in messages: "Istio cacerts", "cert-manager (kubernetes.io/tls)".
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Cacerts => "Istio cacerts layout",
            Layout::KubernetesTls => "cert-manager layout (kubernetes.io/tls secret)",
        }
    }
}

/// Where each part of the CA is read from.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub layout: Layout,
    /// File names used in messages.
    pub cert_name: &'static str,
    pub key_name: &'static str,
    pub chain_name: &'static str,
    pub root_name: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The chain from the signing certificate up; in the TLS layout that is `tls.crt` itself
    /// (the loader completes it with the root from `ca.crt`, as istiod appends `ca.crt`).
    pub chain: PathBuf,
    pub root: PathBuf,
    /// The `cacerts` files are present too but ignored, as istiod ignores them then.
    pub shadowed: bool,
}

/// Decides the layout of `dir` the way istiod does, refusing half-present layouts.
pub(crate) fn detect(dir: &Path) -> Result<Files, CaError> {
    let has = |name: &str| dir.join(name).exists();
    let tls_present: Vec<&str> = [TLS_CERT_FILE, TLS_KEY_FILE, TLS_ROOT_FILE]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let incomplete = |present: &[&str], missing: Vec<&str>| CaError::InvalidCa {
        dir: dir.to_path_buf(),
        reason: format!(
            "incomplete {}: {} present but {} missing; cert-manager writes tls.crt (the CA \
             certificate and its chain), tls.key and ca.crt (the root) together",
            Layout::KubernetesTls.describe(),
            present.join(", "),
            missing.join(", ")
        ),
    };
    if has(TLS_CERT_FILE) {
        let missing: Vec<&str> = [TLS_KEY_FILE, TLS_ROOT_FILE]
            .into_iter()
            .filter(|f| !has(f))
            .collect();
        if !missing.is_empty() {
            return Err(incomplete(&tls_present, missing));
        }
        let shadowed = [CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE]
            .iter()
            .any(|f| has(f));
        return Ok(Files {
            layout: Layout::KubernetesTls,
            cert_name: TLS_CERT_FILE,
            key_name: TLS_KEY_FILE,
            chain_name: TLS_CERT_FILE,
            root_name: TLS_ROOT_FILE,
            cert: dir.join(TLS_CERT_FILE),
            key: dir.join(TLS_KEY_FILE),
            chain: dir.join(TLS_CERT_FILE),
            root: dir.join(TLS_ROOT_FILE),
            shadowed,
        });
    }
    // Stray tls.key / ca.crt beside a complete cacerts layout are ignored, as istiod ignores
    // them; without ca-cert.pem they are most likely a TLS secret that lost its tls.crt.
    if !tls_present.is_empty() && !has(CA_CERT_FILE) {
        return Err(incomplete(&tls_present, vec![TLS_CERT_FILE]));
    }
    Ok(Files {
        layout: Layout::Cacerts,
        cert_name: CA_CERT_FILE,
        key_name: CA_KEY_FILE,
        chain_name: CERT_CHAIN_FILE,
        root_name: ROOT_CERT_FILE,
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
        chain: dir.join(CERT_CHAIN_FILE),
        root: dir.join(ROOT_CERT_FILE),
        shadowed: false,
    })
}
