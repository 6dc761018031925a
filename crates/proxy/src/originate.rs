//! TLS the sidecar originates for the app: a DestinationRule `tls.mode: SIMPLE` (verify the
//! server, no client certificate) or `MUTUAL` (with the rule's client certificate and key),
//! the way Istio's egress TLS origination works — the app speaks plain HTTP to the service, the
//! sidecar speaks TLS to it.
//!
//! The server is verified with WebPKI against `caCertificates` (the operating system's trust
//! store when the rule names none, as Envoy's default in Istio), for the name the rule's
//! `subjectAltNames` give (any one of them), else the SNI. `insecureSkipVerify: true` accepts any
//! certificate, as Istio documents it; it is logged when the config is built. Only file paths are
//! supported: `credentialName` needs Kubernetes secrets, and the registry already refuses it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use trustmesh_registry::Originate;

/// A built origination: the config and the name sent as SNI.
pub struct Origination {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Option<String>,
}

/// Builds the client side of SIMPLE (`mutual == false`) or MUTUAL TLS from a rule's settings.
/// Errors name the file or setting at fault.
pub fn build(o: &Originate, mutual: bool) -> Result<Origination, String> {
    let provider = crate::tls::provider();
    let roots = match &o.ca_certificates {
        Some(file) => roots_from(Path::new(file))?,
        None => crate::tls::system_roots(),
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("caCertificates: {e}"))?;
    if o.insecure_skip_verify {
        tracing::warn!("a DestinationRule sets insecureSkipVerify: its servers are not verified");
    }
    let verifier = Arc::new(NamedVerifier {
        webpki,
        names: o.subject_alt_names.clone(),
        skip: o.insecure_skip_verify,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = if mutual {
        let (cert, key) = match (&o.client_certificate, &o.private_key) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                return Err(
                    "MUTUAL needs clientCertificate and privateKey (credentialName is not \
                     supported without Kubernetes)"
                        .into(),
                )
            }
        };
        let chain = certs_from(Path::new(cert))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("privateKey {key}: no usable private key: {e}"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("clientCertificate {cert}: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Origination {
        config: Arc::new(config),
        sni: o.sni.clone(),
    })
}

fn certs_from(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let certs = trustmesh_identity::pem::certs_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE blocks found", file.display()));
    }
    Ok(certs)
}

fn roots_from(file: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from(file)? {
        roots
            .add(c)
            .map_err(|e| format!("caCertificates {}: {e}", file.display()))?;
    }
    Ok(roots)
}

/// WebPKI verification for the names a rule expects (any one of `names`; the SNI when it
/// names none), or none at all with `skip`.
#[derive(Debug)]
struct NamedVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    names: Vec<String>,
    skip: bool,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.skip {
            return Ok(ServerCertVerified::assertion());
        }
        if self.names.is_empty() {
            return self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            );
        }
        let mut last = None;
        for n in &self.names {
            let Ok(name) = ServerName::try_from(n.as_str()) else {
                continue;
            };
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, &name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General(
            "none of the DestinationRule's subjectAltNames is a valid server name".into(),
        )))
    }

    // Handshake signatures are checked as WebPKI checks them, with the same provider.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
