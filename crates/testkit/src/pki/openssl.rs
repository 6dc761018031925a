//! Certificates made by the openssl CLI, the independent implementation we must interoperate
//! with: a root per trust domain issuing workload SVIDs and TLS server certificates
//! ([`OpensslCa`]), and Istio's plug-in `cacerts` made the way Istio's `tools/certs` Makefile
//! makes them, with every key encoding openssl writes ([`openssl_cacerts`]), also laid out as
//! the `kubernetes.io/tls` secret cert-manager writes ([`cert_manager_layout`]).

use std::path::{Path, PathBuf};

use crate::tools::openssl;

/// `openssl req` arguments for a new unencrypted P-256 key, written to the file that follows.
const NEW_P256_KEY: [&str; 6] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

/// A root CA for one trust domain, its files in `dir` named after `name`.
pub struct OpensslCa {
    pub dir: PathBuf,
    pub name: String,
    pub td: String,
    /// `<name>-root.pem`, the trust bundle.
    pub root: PathBuf,
}

impl OpensslCa {
    /// A self-signed P-256 root (`spiffe://<td>` URI SAN), valid for two days.
    pub fn new(dir: &Path, name: &str, td: &str) -> OpensslCa {
        let root = dir.join(format!("{name}-root.pem"));
        let key = dir.join(format!("{name}-root.key"));
        let (key, out) = (key.to_str().unwrap(), root.to_str().unwrap());
        let subject = format!("/O={td}/CN={name} root");
        let san = format!("subjectAltName=URI:spiffe://{td}");
        let ca = [
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ];
        let ext = ["-addext", ca[0], "-addext", ca[1], "-addext", &san];
        let validity = ["-days", "2", "-subj", &subject];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &NEW_P256_KEY[..],
                &[key, "-out", out],
                &validity,
                &ext,
            ]
            .concat(),
        );
        OpensslCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            td: td.to_string(),
            root,
        }
    }

    /// Issues a workload SVID for `spiffe_id` (Istio's profile); returns (cert.pem, key.pem).
    pub fn issue(&self, label: &str, spiffe_id: &str) -> (PathBuf, PathBuf) {
        self.sign(
            label,
            &format!(
                "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName=critical,URI:{spiffe_id}\n"
            ),
        )
    }

    /// Issues a TLS server certificate for `san` (`IP:127.0.0.1`, `DNS:localhost`); returns
    /// (cert.pem, key.pem).
    pub fn issue_server(&self, label: &str, san: &str) -> (PathBuf, PathBuf) {
        self.sign(
            label,
            &format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
    }

    /// A new P-256 key and a certificate for it with the extensions `ext` (openssl extfile
    /// lines), signed by this root.
    fn sign(&self, label: &str, ext: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(format!("{}-{label}", self.name));
        let key = base.with_extension("key.pem");
        let csr = base.with_extension("csr");
        let cert = base.with_extension("cert.pem");
        let ext_file = base.with_extension("ext");
        std::fs::write(&ext_file, ext).unwrap();
        let (key_file, csr_file) = (key.to_str().unwrap(), csr.to_str().unwrap());
        let request = [key_file, "-out", csr_file, "-subj", "/O=trustmesh-test"];
        openssl(
            &self.dir,
            &[&["req", "-new"], &NEW_P256_KEY[..], &request].concat(),
        );
        let root_key = self.dir.join(format!("{}-root.key", self.name));
        let serial = format!("{}", 1000 + rand_u32() % 1_000_000);
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.root.to_str().unwrap(),
                "-CAkey",
                root_key.to_str().unwrap(),
                "-set_serial",
                &serial,
                "-days",
                "1",
                "-extfile",
                ext_file.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        (cert, key)
    }
}

/// A random-enough serial source without a random crate: std's per-process hasher keys.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Key flavours openssl writes.
#[derive(Clone, Copy, Debug)]
pub enum OsslKey {
    /// `openssl genrsa -traditional 4096`: PKCS#1 `RSA PRIVATE KEY`, the size Istio's cert tools use.
    RsaPkcs1,
    /// The same encoding at 2048 bits, where the size is not what is tested (and 4096 is slow).
    RsaPkcs1Small,
    /// `openssl ecparam -genkey`: SEC1 `EC PRIVATE KEY` preceded by `EC PARAMETERS`.
    EcSec1,
    /// `openssl genpkey`: PKCS#8 `PRIVATE KEY` (EC P-256).
    EcPkcs8,
}

/// Writes a private key of `kind` to `dir/out`.
pub fn gen_key(dir: &Path, kind: OsslKey, out: &str) {
    let rsa = |bits| openssl(dir, &["genrsa", "-traditional", "-out", out, bits]);
    match kind {
        OsslKey::RsaPkcs1 => rsa("4096"),
        OsslKey::RsaPkcs1Small => rsa("2048"),
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

/// Builds an Istio-style plug-in `cacerts` directory in `dir` the way Istio's `tools/certs`
/// Makefile does: a root (`O=Istio, CN=Root CA`, no SPIFFE URI) and an intermediate with
/// `pathlen:0` signed by it; `cert-chain.pem` = intermediate + root. `root_san` adds a URI SAN
/// to the root when given. The files land in `dir` (keys, requests and extension files too).
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
    let request = |key: &str, subject: &str, out: &str| {
        openssl(
            dir,
            &[
                "req", "-new", "-sha256", "-key", key, "-subj", subject, "-out", out,
            ],
        );
    };
    let sign = |days: &str, signer: &[&str], ext: &str, csr: &str, out: &str| {
        let mut args = vec!["x509", "-req", "-sha256", "-days", days];
        args.extend_from_slice(signer);
        args.extend_from_slice(&["-extfile", ext, "-in", csr, "-out", out]);
        openssl(dir, &args);
    };
    request("root-key.pem", "/O=Istio/CN=Root CA", "root.csr");
    sign(
        "3650",
        &["-signkey", "root-key.pem"],
        "root.ext",
        "root.csr",
        "root-cert.pem",
    );
    request(
        "ca-key.pem",
        "/O=Istio/CN=Intermediate CA/L=cluster1",
        "ca.csr",
    );
    let by_root = [
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
    ];
    sign("730", &by_root, "ca.ext", "ca.csr", "ca-cert.pem");
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

/// Lays the openssl-made `cacerts` in `from` out in `to` as cert-manager's `kubernetes.io/tls`
/// secret: `tls.crt` the CA certificate (followed by the root when `root_in_tls_crt`, as
/// cert-manager does when the issuer returns the whole chain), `tls.key` its key, `ca.crt` the
/// root.
pub fn cert_manager_layout(from: &Path, to: &Path, root_in_tls_crt: bool) {
    std::fs::create_dir_all(to).unwrap();
    let read = |f: &str| std::fs::read_to_string(from.join(f)).unwrap();
    let mut tls_crt = read("ca-cert.pem");
    if root_in_tls_crt {
        tls_crt.push_str(&read("root-cert.pem"));
    }
    std::fs::write(to.join("tls.crt"), tls_crt).unwrap();
    std::fs::write(to.join("tls.key"), read("ca-key.pem")).unwrap();
    std::fs::write(to.join("ca.crt"), read("root-cert.pem")).unwrap();
}

/// `openssl req -new` in `dir`: a CSR signed by the key in `key`, with `subject` and the URI SAN
/// `uri`, written to `out`; returns the CSR's PEM.
pub fn csr(dir: &Path, key: &str, subject: &str, uri: &str, out: &str) -> String {
    let san = format!("subjectAltName=URI:{uri}");
    let args = [
        "req", "-new", "-key", key, "-subj", subject, "-addext", &san, "-out", out,
    ];
    openssl(dir, &args);
    std::fs::read_to_string(dir.join(out)).unwrap()
}
