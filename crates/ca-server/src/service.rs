//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the caller, decide
//! the one identity it may have, check the CSR against it, and sign.

// Handlers must return tonic::Status, so helpers do too; boxing it would only add a
// conversion on the (cold) error path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use tonic::{Request, Response, Status};
use trustmesh_identity::{SpiffeId, TrustConfig, TrustDomain, Usage};

use crate::auth::jwt::{JwtAuthenticator, ServiceAccount};
use crate::auth::node::{NodeAuthorizer, IMPERSONATED_IDENTITY};
use crate::auth::review::TokenReviewer;
use crate::csr;
use crate::jwt_authority::JwtAuthority;
use crate::pb::istio_certificate_service_server::IstioCertificateService;
use crate::pb::{IstioCertificateRequest, IstioCertificateResponse};
use crate::pb_jwt::jwt_svid_service_server::JwtSvidService;
use crate::pb_jwt::{
    FetchJwtBundleRequest, FetchJwtBundleResponse, MintJwtSvidRequest, MintJwtSvidResponse,
};
use crate::signer::Signer;

/// Everything `CreateCertificate` needs; shared by all connections.
pub struct CaService {
    pub signer: Arc<dyn Signer>,
    pub trust_domain: TrustDomain,
    pub jwt: JwtAuthenticator,
    /// Reviews tokens whose issuer is not one of `jwt`'s (Kubernetes TokenReview).
    pub reviewer: Option<Arc<dyn TokenReviewer>>,
    /// Lets node proxies obtain their node's workloads' certificates (`ImpersonatedIdentity`).
    pub node_authorizer: Option<Arc<dyn NodeAuthorizer>>,
    /// Anchors for renewal with a client certificate: the CA's own roots, local domain only
    /// (replaced by [`CaService::set_roots`] when the CA's roots change).
    pub trust: std::sync::RwLock<TrustConfig>,
    pub max_ttl: Duration,
    pub default_ttl: Duration,
    /// Signs JWT-SVIDs; `None` when the server runs without `--jwt-authority-key`.
    pub jwt_authority: Option<Arc<JwtAuthority>>,
    /// Requests refused so far (every refusal is also logged with its reason).
    pub refused: std::sync::atomic::AtomicU64,
}

impl CaService {
    /// Logs a refused request with who asked (address), why, and the running total: an operator
    /// must be able to see misconfigured agents and attacks, not only issuances.
    fn refused<T>(
        &self,
        what: &str,
        peer: Option<std::net::SocketAddr>,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(s) = &result {
            let total = self
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            tracing::warn!(
                %peer,
                code = ?s.code(),
                total,
                "refused {what}: {}",
                s.message()
            );
        }
        result
    }
}

/// JWT-SVIDs are bearer tokens: replayable by whoever holds one, so they live minutes.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);

/// How the caller proved who it is; logged with each issuance for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `account` is what the token said (with its pod when it is bound to one).
    Token {
        issuer: String,
        id: SpiffeId,
        account: ServiceAccount,
    },
    ClientCert {
        id: SpiffeId,
    },
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Token { issuer, id, .. } => write!(f, "{id} (token from {issuer})"),
            Caller::ClientCert { id } => write!(f, "{id} (client certificate)"),
        }
    }
}

impl Caller {
    pub fn id(&self) -> &SpiffeId {
        match self {
            Caller::Token { id, .. } | Caller::ClientCert { id } => id,
        }
    }
}

impl CaService {
    /// Tries the client certificate first, then the bearer token, like istiod's authenticator
    /// chain: the first that succeeds decides the identity, so a workload whose token expired can
    /// still renew with its valid certificate.
    pub async fn authenticate<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        self.authenticate_parts(certs.as_deref().map(|c| c.as_slice()), req.metadata())
            .await
    }

    /// [`CaService::authenticate`] over what a request carries: its client certificate chain
    /// (mTLS) and its metadata (the bearer token). Other services on the CA's port (the control
    /// plane's xDS) authenticate their callers with it, so every caller is judged alike.
    pub async fn authenticate_parts(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, Status> {
        let mut reasons = Vec::new();
        if let Some(certs) = certs {
            if !certs.is_empty() {
                let chain: Vec<CertificateDer<'static>> =
                    certs.iter().map(|c| c.clone().into_owned()).collect();
                let verified = trustmesh_identity::verify_svid_for(
                    &chain,
                    &self.trust.read().expect("trust lock"),
                    UnixTime::now(),
                    Usage::ClientAuth,
                );
                match verified {
                    Ok(v) if v.id.trust_domain() == &self.trust_domain => {
                        return Ok(Caller::ClientCert { id: v.id });
                    }
                    Ok(v) => reasons.push(format!(
                        "client certificate {} is not in trust domain {}",
                        v.id, self.trust_domain
                    )),
                    Err(e) => reasons.push(format!("client certificate: {e}")),
                }
            }
        }
        if let Some(token) = bearer_token(metadata)? {
            match self.token_account(token).await {
                Ok(sa) => {
                    let id = SpiffeId::istio(&self.trust_domain, &sa.namespace, &sa.name).map_err(
                        |e| {
                            Status::permission_denied(format!(
                                "service account {}/{} does not form a valid SPIFFE ID: {e}",
                                sa.namespace, sa.name
                            ))
                        },
                    )?;
                    return Ok(Caller::Token {
                        issuer: sa.issuer.clone(),
                        id,
                        account: sa,
                    });
                }
                Err(why) => reasons.push(why),
            }
        }
        if reasons.is_empty() {
            reasons.push(
                "no credentials: send a bearer token in \"authorization\" or connect with a client certificate"
                    .into(),
            );
        }
        Err(Status::unauthenticated(format!(
            "authentication failed: {}",
            reasons.join("; ")
        )))
    }

    /// The service account a bearer token speaks for: tokens of a configured issuer are verified
    /// offline (JWKS); any other goes to the reviewer when there is one.
    async fn token_account(&self, token: &str) -> Result<ServiceAccount, String> {
        match &self.reviewer {
            Some(r) if self.jwt.is_empty() || !self.jwt.knows_issuer_of(token) => r
                .review(token)
                .await
                .map_err(|e| format!("bearer token (TokenReview): {e}")),
            _ if self.jwt.is_empty() => {
                Err("bearer token given but no token issuer is configured".into())
            }
            _ => self
                .jwt
                .authenticate(token)
                .await
                .map_err(|e| format!("bearer token: {e}")),
        }
    }

    /// The identity a certificate request may obtain: the caller's own, or the one named in
    /// `ImpersonatedIdentity` when node authorization allows the caller it.
    fn identity_for(
        &self,
        caller: &Caller,
        metadata: Option<&prost_types::Struct>,
    ) -> Result<SpiffeId, Status> {
        let named = metadata
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
            .and_then(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) if !s.is_empty() => Some(s),
                _ => None,
            });
        let Some(named) = named else {
            return Ok(caller.id().clone());
        };
        if named == caller.id().as_str() {
            return Ok(caller.id().clone());
        }
        let requested = SpiffeId::parse(named).map_err(|e| {
            Status::invalid_argument(format!("{IMPERSONATED_IDENTITY} {named:?}: {e}"))
        })?;
        if requested.trust_domain() != &self.trust_domain {
            return Err(Status::permission_denied(format!(
                "{IMPERSONATED_IDENTITY} {requested} is not in this CA's trust domain {}",
                self.trust_domain
            )));
        }
        let (Some(authorizer), Caller::Token { account, .. }) = (&self.node_authorizer, caller)
        else {
            return Err(Status::permission_denied(format!(
                "{caller} asked for {requested} ({IMPERSONATED_IDENTITY}): node authorization \
                 needs a Kubernetes token and a control plane reading the cluster \
                 (--kube, --trusted-node-account)"
            )));
        };
        authorizer.authorize(account, &requested).map_err(|why| {
            Status::permission_denied(format!(
                "{caller} may not obtain {requested} ({IMPERSONATED_IDENTITY}): {why}"
            ))
        })?;
        Ok(requested)
    }

    /// Trusts client certificates of `roots` (the CA's roots after a rotation) from now on.
    pub fn set_roots(&self, roots: &[CertificateDer<'static>]) -> Result<(), String> {
        let trust = trust_for(&self.trust_domain, roots)?;
        *self.trust.write().expect("trust lock") = trust;
        Ok(())
    }

    /// The lifetime a request gets: [`crate::ttl::granted`] with this CA's default and maximum.
    pub fn ttl(&self, requested_secs: i64) -> Result<Duration, Status> {
        crate::ttl::granted(requested_secs, self.default_ttl, self.max_ttl)
            .map_err(Status::invalid_argument)
    }
}

/// A trust configuration holding only this CA's roots, for its own domain.
pub fn trust_for(
    td: &TrustDomain,
    roots: &[CertificateDer<'static>],
) -> Result<TrustConfig, String> {
    let mut bundles = trustmesh_identity::TrustBundleSet::new();
    for r in roots {
        bundles
            .add_root(td.clone(), r.clone())
            .map_err(|e| e.to_string())?;
    }
    Ok(TrustConfig::new(td.clone(), bundles))
}

fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, Status> {
    let Some(v) = metadata.get("authorization") else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| Status::unauthenticated("\"authorization\" metadata is not ASCII"))?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or_else(|| {
            Status::unauthenticated("\"authorization\" metadata must be \"Bearer <token>\"")
        })?;
    Ok(Some(token.trim()))
}

/// The CSR may ask for nothing, or for exactly the caller's SPIFFE ID; anything else means the
/// workload believes it is someone it is not.
pub fn check_csr_sans(req: &csr::CsrRequest, caller: &SpiffeId) -> Result<(), Status> {
    if let Some(other) = req.uri_sans.iter().find(|u| u.as_str() != caller.as_str()) {
        let why = match SpiffeId::parse(other) {
            Ok(id) if id.trust_domain() != caller.trust_domain() => format!(
                "trust domain {} is not this CA's trust domain {}",
                id.trust_domain(),
                caller.trust_domain()
            ),
            Ok(_) => "a different identity".to_string(),
            Err(_) => "not a valid SPIFFE ID".to_string(),
        };
        return Err(Status::permission_denied(format!(
            "caller is authenticated as {caller} and may only obtain a certificate for that ID, \
             but the CSR asks for {other} ({why})"
        )));
    }
    if req.uri_sans.len() > 1 {
        return Err(Status::invalid_argument(
            "CSR repeats its URI SAN; an X.509-SVID has exactly one",
        ));
    }
    if !req.other_sans.is_empty() {
        return Err(Status::permission_denied(format!(
            "caller {caller} may only obtain its SPIFFE ID, but the CSR also asks for {}",
            req.other_sans.join(", ")
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl IstioCertificateService for Arc<CaService> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr();
        let result = self.issue(request).await;
        self.refused("certificate request", peer, result)
    }
}

impl CaService {
    async fn issue(
        self: &Arc<Self>,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = self.authenticate(&request).await?;
        let body = request.into_inner();
        let ttl = self.ttl(body.validity_duration)?;
        let inspected =
            csr::inspect(&body.csr).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = self.identity_for(&caller, body.metadata.as_ref())?;
        check_csr_sans(&inspected, &id)?;
        if &id != caller.id() {
            tracing::info!(caller = %caller, node_workload = %id, "node authorization: certificate for a workload on the caller's node");
        }

        let signer = self.signer.clone();
        // Signing is CPU work; keep it off the reactor threads that serve handshakes.
        let chain = tokio::task::spawn_blocking(move || signer.sign(&body.csr, &id, ttl))
            .await
            .map_err(|e| Status::internal(format!("signing task failed: {e}")))?
            .map_err(|e| e.into_status())?;
        tracing::info!(caller = %caller, ttl_secs = ttl.as_secs(), "issued certificate");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain
                .iter()
                .map(trustmesh_identity::pem::cert_to_pem)
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl JwtSvidService for Arc<CaService> {
    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let peer = request.remote_addr();
        let result = self.mint(request).await;
        self.refused("JWT-SVID request", peer, result)
    }

    async fn fetch_jwt_bundle(
        &self,
        _request: Request<FetchJwtBundleRequest>,
    ) -> Result<Response<FetchJwtBundleResponse>, Status> {
        let authority = self.jwt_authority.as_ref().ok_or_else(no_jwt_authority)?;
        Ok(Response::new(FetchJwtBundleResponse {
            jwks: authority.jwks_json(),
        }))
    }
}

impl CaService {
    async fn mint(
        self: &Arc<Self>,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let authority = self.jwt_authority.clone().ok_or_else(no_jwt_authority)?;
        let caller = self.authenticate(&request).await?;
        let body = request.into_inner();
        let ttl = check_mint_request(&body, self.max_ttl)?;
        let (token, exp) = authority
            .mint(caller.id(), &body.audience, ttl)
            .map_err(|e| Status::internal(format!("signing JWT-SVID: {e}")))?;
        tracing::info!(caller = %caller, audience = ?body.audience, ttl_secs = ttl.as_secs(), "minted JWT-SVID");
        Ok(Response::new(MintJwtSvidResponse {
            token,
            expires_at: exp as i64,
        }))
    }
}

/// What a `MintJwtSvid` request may ask for: at least one audience, none empty; a lifetime up to
/// `max_ttl` (zero or negative: the JWT-SVID default, within `max_ttl`). Returns the lifetime.
pub fn check_mint_request(
    body: &MintJwtSvidRequest,
    max_ttl: Duration,
) -> Result<Duration, Status> {
    if body.audience.is_empty() || body.audience.iter().any(|a| a.is_empty()) {
        return Err(Status::invalid_argument(
            "a JWT-SVID needs at least one non-empty audience",
        ));
    }
    let default = DEFAULT_JWT_SVID_TTL.min(max_ttl);
    crate::ttl::granted(body.ttl_seconds, default, max_ttl).map_err(Status::invalid_argument)
}

fn no_jwt_authority() -> Status {
    Status::unimplemented("this CA has no JWT authority: start `ca serve` with --jwt-authority-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uris: &[&str], other: &[&str]) -> csr::CsrRequest {
        csr::CsrRequest {
            uri_sans: uris.iter().map(|s| s.to_string()).collect(),
            other_sans: other.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn csr_may_ask_for_the_callers_id_only() {
        let me = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        assert!(check_csr_sans(&req(&["spiffe://td/ns/a/sa/b"], &[]), &me).is_ok());
        assert!(check_csr_sans(&req(&[], &[]), &me).is_ok());
        let e = check_csr_sans(&req(&["spiffe://td/ns/a/sa/c"], &[]), &me).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = check_csr_sans(&req(&["spiffe://other/ns/a/sa/b"], &[]), &me).unwrap_err();
        assert!(
            e.message().contains("trust domain other"),
            "{}",
            e.message()
        );
        let e = check_csr_sans(&req(&["spiffe://td/ns/a/sa/b"], &["DNS:x"]), &me).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = check_csr_sans(
            &req(&["spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b"], &[]),
            &me,
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
