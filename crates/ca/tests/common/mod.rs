//! Shared helpers for the CA integration tests: openssl-made `cacerts` directories (the
//! independent implementation we must interoperate with) and certificate inspection.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// Runs openssl in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Key flavours openssl writes.
#[derive(Clone, Copy, Debug)]
pub enum OsslKey {
    /// `openssl genrsa -traditional 4096`: PKCS#1 `RSA PRIVATE KEY`, the size Istio's cert tools use.
    RsaPkcs1,
    /// `openssl ecparam -genkey`: SEC1 `EC PRIVATE KEY` preceded by `EC PARAMETERS`.
    EcSec1,
    /// `openssl genpkey`: PKCS#8 `PRIVATE KEY` (EC P-256).
    EcPkcs8,
}

pub fn gen_key(dir: &Path, kind: OsslKey, out: &str) {
    match kind {
        OsslKey::RsaPkcs1 => openssl(dir, &["genrsa", "-traditional", "-out", out, "4096"]),
        OsslKey::EcSec1 => openssl(
            dir,
            &["ecparam", "-genkey", "-name", "prime256v1", "-out", out],
        ),
        OsslKey::EcPkcs8 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                out,
            ],
        ),
    };
}

/// Builds an Istio-style plug-in `cacerts` directory in `dir` the way Istio's
/// `tools/certs` Makefile does: a root (`O=Istio, CN=Root CA`, no SPIFFE URI) and an
/// intermediate with `pathlen:0` signed by it; `cert-chain.pem` = intermediate + root.
/// `san` adds a URI SAN to the root when given. Returns nothing; files land in `dir`.
pub fn openssl_cacerts(dir: &Path, root_key: OsslKey, ca_key: OsslKey, root_san: Option<&str>) {
    gen_key(dir, root_key, "root-key.pem");
    gen_key(dir, ca_key, "ca-key.pem");
    let mut root_ext = String::from(
        "subjectKeyIdentifier = hash\nbasicConstraints = critical, CA:true\n\
         keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\n",
    );
    if let Some(san) = root_san {
        root_ext.push_str(&format!("subjectAltName = URI:{san}\n"));
    }
    std::fs::write(dir.join("root.ext"), root_ext).unwrap();
    std::fs::write(
        dir.join("ca.ext"),
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
         basicConstraints = critical, CA:true, pathlen:0\n\
         keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign\n\
         subjectAltName = DNS:istiod.istio-system.svc\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-sha256",
            "-key",
            "root-key.pem",
            "-subj",
            "/O=Istio/CN=Root CA",
            "-out",
            "root.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-signkey",
            "root-key.pem",
            "-extfile",
            "root.ext",
            "-in",
            "root.csr",
            "-out",
            "root-cert.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-sha256",
            "-key",
            "ca-key.pem",
            "-subj",
            "/O=Istio/CN=Intermediate CA/L=cluster1",
            "-out",
            "ca.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "730",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-extfile",
            "ca.ext",
            "-in",
            "ca.csr",
            "-out",
            "ca-cert.pem",
        ],
    );
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

/// Parses the first certificate of a DER buffer and hands it to `f`.
pub fn with_cert<R>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let (_, cert) = X509Certificate::from_der(der).expect("valid certificate");
    f(&cert)
}

/// URI SANs of a certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    with_cert(der, |c| {
        c.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}
