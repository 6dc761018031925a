//! The agent's X.509-SVID: generated key, CSR, the CA's answer checked before it is trusted,
//! and the files the proxy watches.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, PublicKeyData, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use trustmesh_ca::KeyType;
use trustmesh_identity::pem::{certs_from_pem, certs_to_pem};
use trustmesh_identity::{SpiffeId, TrustBundleSet, TrustConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

/// File names in the output folder, the names istio-agent uses for file-mounted certificates.
pub const KEY_FILE: &str = "key.pem";
pub const CHAIN_FILE: &str = "cert-chain.pem";
pub const ROOT_FILE: &str = "root-cert.pem";

/// One identity with its key, ready to be served.
#[derive(Debug, Clone)]
pub struct Svid {
    pub id: SpiffeId,
    /// Leaf first, then intermediates; never the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// Roots of the local trust domain.
    pub roots: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial_hex: String,
    /// When this host obtained it. CAs backdate `notBefore` to absorb clock skew (Istio's by
    /// two minutes), so the lifetime that matters for rotation starts here, not there.
    pub received_at: SystemTime,
}

impl Svid {
    /// When to renew: after `fraction` of the lifetime has passed, counting from when the
    /// certificate became usable here (the later of `notBefore` and its arrival). Counting from
    /// a backdated `notBefore` would make a 6-second certificate look half-used on arrival.
    pub fn refresh_at(&self, fraction: f64) -> SystemTime {
        let start = self.not_before.max(self.received_at);
        let life = self.not_after.duration_since(start).unwrap_or_default();
        start + life.mul_f64(fraction)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// A fresh key of `algorithm`: generated here, it never leaves this host. RSA 2048 goes through
/// the `rsa` crate (ring signs with RSA keys but cannot make them; openssl is no dependency of
/// ours). It is a prime search with a wide spread: a whole `trustmesh ca issue --key-type
/// rsa2048` took 0.15-0.5 s on a shared 2-core machine with `rsa` optimised (1.6-14 s without,
/// hence the dev profile's opt-level for it), against 0.02 s for ECDSA P-256; so callers on an
/// async runtime run it on a blocking thread.
pub fn new_key(algorithm: KeyType) -> Result<KeyPair, String> {
    trustmesh_ca::keys::generate(algorithm).map_err(|e| format!("generating {algorithm} key: {e}"))
}

/// A CSR carrying exactly one URI SAN, the SPIFFE ID.
pub fn csr_pem(key: &KeyPair, id: &SpiffeId) -> Result<String, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e: rcgen::Error| format!("SPIFFE ID as URI SAN: {e}"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("building CSR: {e}"))
}

/// Turns the CA's answer (PEM certificates, leaf first, root last) into an [`Svid`], refusing
/// one that does not verify, names another identity or certifies another key: a confused or
/// compromised CA must not make the agent serve something the workload did not ask for.
pub fn from_ca_response(
    pems: &[String],
    key: &KeyPair,
    expected: &SpiffeId,
) -> Result<Svid, String> {
    let mut certs = Vec::new();
    for p in pems {
        certs.extend(certs_from_pem(p.as_bytes()).map_err(|e| format!("CA response: {e}"))?);
    }
    if certs.len() < 2 {
        return Err(format!(
            "CA response has {} certificate(s); expected the leaf and at least the root",
            certs.len()
        ));
    }
    let root = certs.pop().expect("len checked");
    let svid = assemble(certs, vec![root], key.serialize_der(), expected)?;
    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).map_err(|e| e.to_string())?;
    if leaf.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("CA returned a certificate for a different key than the CSR's".into());
    }
    Ok(svid)
}

/// Verifies `chain` against `roots` as an X.509-SVID of `expected`.
fn assemble(
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    expected: &SpiffeId,
) -> Result<Svid, String> {
    let mut bundles = TrustBundleSet::new();
    for r in &roots {
        bundles
            .add_root(expected.trust_domain().clone(), r.clone())
            .map_err(|e| format!("root certificate: {e}"))?;
    }
    let trust = TrustConfig::new(expected.trust_domain().clone(), bundles);
    let verified = trustmesh_identity::verify_svid(&chain, &trust, UnixTime::now())
        .map_err(|e| format!("certificate does not verify: {e}"))?;
    if &verified.id != expected {
        return Err(format!(
            "certificate is for {}, expected {expected}",
            verified.id
        ));
    }
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| e.to_string())?;
    let to_time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok(Svid {
        id: verified.id,
        not_before: to_time(leaf.validity().not_before.timestamp()),
        not_after: to_time(leaf.validity().not_after.timestamp()),
        serial_hex: leaf.raw_serial_as_string().replace(':', ""),
        received_at: SystemTime::now(),
        chain,
        roots,
        key_der,
    })
}

/// Loads a previous run's files, if they still hold a valid SVID for `expected`, so a restarted
/// agent serves at once even while the CA is unreachable.
pub fn load_existing(dir: &Path, expected: &SpiffeId, algorithm: KeyType) -> Option<Svid> {
    let chain = certs_from_pem(&std::fs::read(dir.join(CHAIN_FILE)).ok()?).ok()?;
    let roots = certs_from_pem(&std::fs::read(dir.join(ROOT_FILE)).ok()?).ok()?;
    let key_pem = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    // A key of the other algorithm (the config changed) is replaced at once, not at the next
    // rotation, so `keyAlgorithm` takes effect when the agent restarts.
    if trustmesh_ca::keys::key_type_of(&key) != Some(algorithm) {
        return None;
    }
    if chain.is_empty() {
        return None;
    }
    let (_, leaf) = X509Certificate::from_der(&chain[0]).ok()?;
    if leaf.public_key().raw != key.subject_public_key_info().as_slice() {
        return None;
    }
    let mut svid = assemble(chain, roots, key.serialize_der(), expected).ok()?;
    if let Ok(written) = std::fs::metadata(dir.join(CHAIN_FILE)).and_then(|m| m.modified()) {
        svid.received_at = written.min(svid.received_at);
    }
    Some(svid)
}

/// Writes the three files so that a watcher never reads a half-written one: each goes to a
/// temporary file in the same folder and is renamed over the old one. The root goes first (so
/// a new chain is already trusted when it appears) and the chain last (a proxy that reloads
/// when the chain changes then finds the matching key in place).
pub fn write_files(dir: &Path, svid: &Svid) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let key_pem = pem_block("PRIVATE KEY", &svid.key_der);
    write_atomic(
        &dir.join(ROOT_FILE),
        certs_to_pem(&svid.roots).as_bytes(),
        0o644,
    )?;
    write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
    write_atomic(
        &dir.join(CHAIN_FILE),
        certs_to_pem(&svid.chain).as_bytes(),
        0o644,
    )?;
    Ok(())
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Writes `data` to `path` via a temporary sibling and a rename; the temporary file gets `mode`
/// before any byte is written, so a key is never readable by others even for an instant.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustmesh_ca::{CertificateAuthority, InitOptions, IssueRequest};
    use trustmesh_identity::TrustDomain;

    /// Files of a previous run are reused only when their key is of the configured algorithm,
    /// so a changed `keyAlgorithm` takes effect at restart; an RSA key round-trips as PKCS#8.
    #[test]
    fn existing_files_are_reused_only_for_the_same_key_algorithm() {
        let td = TrustDomain::parse("cluster.local").unwrap();
        let ca = CertificateAuthority::init_root(&td, &InitOptions::root()).unwrap();
        let id = SpiffeId::istio(&td, "default", "sleep").unwrap();
        for (made, other) in [
            (KeyType::EcdsaP256, KeyType::Rsa2048),
            (KeyType::Rsa2048, KeyType::EcdsaP256),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut req = IssueRequest::new(id.clone());
            req.key_type = made;
            ca.issue(&req).unwrap().write_issued(dir.path()).unwrap();
            let svid = load_existing(dir.path(), &id, made).expect("same algorithm reused");
            let key = KeyPair::try_from(svid.key_der.as_slice()).unwrap();
            assert_eq!(trustmesh_ca::keys::key_type_of(&key), Some(made));
            assert!(
                load_existing(dir.path(), &id, other).is_none(),
                "{made} kept for {other}"
            );
        }
    }
}
