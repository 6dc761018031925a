//! Workload certificates from an external signer through the Kubernetes CSR API, as istiod's
//! RA mode does it for cert-manager (istio-csr) and other Kubernetes signers: the CA still
//! authenticates the caller and decides the one identity it may have; the certificate is asked
//! of the signer named by `--external-signer` with a CertificateSigningRequest, and what comes
//! back is checked to name that identity before it is handed out.
//!
//! The control plane's own serving certificate stays with its own CA; workloads are given the
//! external signer's roots (`--external-signer-roots`).

use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use rustls_pki_types::CertificateDer;
use trustmesh_ca_server::signer::{SignError, Signer};
use trustmesh_identity::SpiffeId;

use crate::csr::{state, State};

/// How long a request may wait for the external signer.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Kubernetes refuses `expirationSeconds` below this.
const MIN_EXPIRATION: i32 = 600;
const POLL: Duration = Duration::from_millis(200);

pub struct ExternalSigner {
    client: Client,
    signer_name: String,
    roots: Vec<CertificateDer<'static>>,
    runtime: tokio::runtime::Handle,
}

impl ExternalSigner {
    /// `roots`: the external signer's roots, handed to workloads as the trust domain's bundle.
    /// Must be made on the runtime the requests run on.
    pub fn new(
        client: Client,
        signer_name: String,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<ExternalSigner, String> {
        if roots.is_empty() {
            return Err("the external signer's roots file holds no certificate".into());
        }
        Ok(ExternalSigner {
            client,
            signer_name,
            roots,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    async fn request(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        let req = CertificateSigningRequest {
            metadata: kube::api::ObjectMeta {
                generate_name: Some("trustmesh-workload-".into()),
                annotations: Some([("trustmesh.io/identity".to_string(), id.to_string())].into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: self.signer_name.clone(),
                request: ByteString(csr_pem.as_bytes().to_vec()),
                expiration_seconds: Some(
                    i32::try_from(ttl.as_secs())
                        .unwrap_or(i32::MAX)
                        .max(MIN_EXPIRATION),
                ),
                usages: Some(
                    [
                        "digital signature",
                        "key encipherment",
                        "client auth",
                        "server auth",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                ..Default::default()
            },
            status: None,
        };
        let created = api
            .create(&PostParams::default(), &req)
            .await
            .map_err(|e| {
                SignError::Internal(format!("creating a CertificateSigningRequest: {e}"))
            })?;
        let name = created.name_any();
        let answer = tokio::time::timeout(TIMEOUT, wait_for_answer(&api, &name)).await;
        // Istio's RA removes its requests once answered; so do we, whatever the answer.
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            tracing::debug!(csr = %name, "removing the CertificateSigningRequest: {e}");
        }
        let pem = match answer {
            Ok(Ok(pem)) => pem,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SignError::Internal(format!(
                "the signer {} did not answer CertificateSigningRequest {name} within {TIMEOUT:?}",
                self.signer_name
            )))
            }
        };
        let mut chain = trustmesh_identity::pem::certs_from_pem(pem.as_bytes())
            .map_err(|e| SignError::Internal(format!("the signer's certificate: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| SignError::Internal("the signer returned no certificate".into()))?;
        let named = trustmesh_identity::inspect::CertInfo::from_der(leaf)
            .map(|i| i.uri_sans)
            .unwrap_or_default();
        if named != [id.to_string()] {
            return Err(SignError::Internal(format!(
                "the signer {} issued a certificate for {named:?}, not {id}; it is not handed out",
                self.signer_name
            )));
        }
        if !chain.last().is_some_and(|c| self.roots.contains(c)) {
            chain.push(self.roots[0].clone());
        }
        // What sidecars will check, checked first: an answer that does not chain to the roots
        // workloads are given would only fail later, far from its cause.
        let trust = trustmesh_ca_server::service::trust_for(id.trust_domain(), &self.roots)
            .map_err(SignError::Internal)?;
        trustmesh_identity::verify_svid(&chain, &trust, rustls_pki_types::UnixTime::now())
            .map_err(|e| {
                SignError::Internal(format!(
                    "the signer {}'s certificate does not verify against --external-signer-roots: {e}",
                    self.signer_name
                ))
            })?;
        Ok(chain)
    }
}

/// The issued chain (PEM), or the signer's refusal.
async fn wait_for_answer(
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<String, SignError> {
    loop {
        let r = api.get(name).await.map_err(|e| {
            SignError::Internal(format!("reading CertificateSigningRequest {name}: {e}"))
        })?;
        if state(&r) == State::Done {
            let status = r.status.unwrap_or_default();
            if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
                return String::from_utf8(c.0).map_err(|_| {
                    SignError::Internal("the signer's certificate is not PEM".into())
                });
            }
            let why: Vec<String> = status
                .conditions
                .into_iter()
                .flatten()
                .filter(|c| c.status == "True" && (c.type_ == "Denied" || c.type_ == "Failed"))
                .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                .collect();
            return Err(SignError::PermissionDenied(format!(
                "the signer refused CertificateSigningRequest {name}: {}",
                why.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Signer for ExternalSigner {
    /// Called on a blocking thread (the CA signs off the reactor), so it may wait here.
    fn sign(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, SignError> {
        self.runtime.block_on(self.request(csr_pem, id, ttl))
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        self.roots.clone()
    }
}
