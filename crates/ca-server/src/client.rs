//! A client of `IstioCertificateService` over TLS, used by the node agent (and by tests as a
//! stand-in for istio-agent).
//!
//! The server is verified by host name against the given roots only; when a current SVID is
//! supplied it is presented as the client certificate, so renewal works even when the bearer
//! token has lapsed.

// Handlers must return tonic::Status, so helpers do too; boxing it would only add a
// conversion on the (cold) error path.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::pb::IstioCertificateRequest;
use crate::pb_jwt::jwt_svid_service_client::JwtSvidServiceClient;
use crate::pb_jwt::{FetchJwtBundleRequest, MintJwtSvidRequest};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct CaEndpoint {
    /// `https://host:port`.
    pub address: String,
    /// PEM roots that verify the CA's serving certificate.
    pub root_pem: Vec<u8>,
    /// Name expected in the CA's serving certificate.
    pub server_name: String,
}

/// Credentials for one call; at least one should be set.
#[derive(Default, Clone)]
pub struct Credentials {
    pub bearer_token: Option<String>,
    /// Current SVID (chain PEM, key PEM), presented for mTLS.
    pub client_cert: Option<(String, String)>,
}

/// Calls `CreateCertificate`. A TTL of zero asks for the CA's default. Transport failures come
/// back as `UNAVAILABLE` with the cause in the message.
pub async fn create_certificate(
    ca: &CaEndpoint,
    creds: &Credentials,
    csr_pem: String,
    ttl: Duration,
) -> Result<Vec<String>, Status> {
    create_certificate_for(ca, creds, csr_pem, ttl, None).await
}

/// [`create_certificate`] as a node proxy asks for a workload on its node: `impersonated`
/// goes in the request's `ImpersonatedIdentity` metadata, as ztunnel sends it.
pub async fn create_certificate_for(
    ca: &CaEndpoint,
    creds: &Credentials,
    csr_pem: String,
    ttl: Duration,
    impersonated: Option<&str>,
) -> Result<Vec<String>, Status> {
    let mut client = IstioCertificateServiceClient::new(connect(ca, creds).await?);
    let metadata = impersonated.map(|id| prost_types::Struct {
        fields: [(
            crate::auth::node::IMPERSONATED_IDENTITY.to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
            },
        )]
        .into(),
    });
    let mut req = Request::new(IstioCertificateRequest {
        csr: csr_pem,
        validity_duration: ttl.as_secs() as i64,
        metadata,
    });
    authorize(&mut req, creds)?;
    Ok(client
        .create_certificate(req)
        .await?
        .into_inner()
        .cert_chain)
}

/// Asks the CA's JWT authority for a JWT-SVID; returns the token and its expiry (Unix seconds).
pub async fn mint_jwt_svid(
    ca: &CaEndpoint,
    creds: &Credentials,
    audience: Vec<String>,
    ttl: Duration,
) -> Result<(String, u64), Status> {
    let mut client = JwtSvidServiceClient::new(connect(ca, creds).await?);
    let mut req = Request::new(MintJwtSvidRequest {
        audience,
        ttl_seconds: ttl.as_secs() as i64,
    });
    authorize(&mut req, creds)?;
    let resp = client.mint_jwt_svid(req).await?.into_inner();
    Ok((resp.token, resp.expires_at.max(0) as u64))
}

/// Fetches the trust domain's JWT bundle (a JWK Set, JSON).
pub async fn fetch_jwt_bundle(ca: &CaEndpoint) -> Result<Vec<u8>, Status> {
    let mut client = JwtSvidServiceClient::new(connect(ca, &Credentials::default()).await?);
    Ok(client
        .fetch_jwt_bundle(FetchJwtBundleRequest {})
        .await?
        .into_inner()
        .jwks)
}

async fn connect(ca: &CaEndpoint, creds: &Credentials) -> Result<Channel, Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.root_pem))
        .domain_name(ca.server_name.clone());
    if let Some((chain, key)) = &creds.client_cert {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    let endpoint = Endpoint::from_shared(ca.address.clone())
        .map_err(|e| Status::invalid_argument(format!("CA address {:?}: {e}", ca.address)))?
        .tls_config(tls)
        .map_err(|e| Status::invalid_argument(format!("TLS configuration: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    endpoint.connect().await.map_err(|e| {
        Status::unavailable(format!(
            "cannot reach CA at {}: {}",
            ca.address,
            error_chain(&e)
        ))
    })
}

fn authorize<T>(req: &mut Request<T>, creds: &Credentials) -> Result<(), Status> {
    if let Some(token) = &creds.bearer_token {
        let v = MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
            Status::invalid_argument("token contains characters not allowed in metadata")
        })?;
        req.metadata_mut().insert("authorization", v);
    }
    Ok(())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
