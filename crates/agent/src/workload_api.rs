//! The SPIFFE Workload API on a unix socket.
//!
//! Like istio-agent's per-pod SDS socket, the socket belongs to one workload, so every admitted
//! caller gets the one identity this agent was configured for. Who is admitted is decided per
//! connection from the kernel's credentials of the caller ([`crate::attest`]): by default
//! processes of the agent's own user, or the `workload_api_callers` configured; anyone else gets
//! PERMISSION_DENIED on every call. Folders the agent creates for the socket are 0750, and a
//! socket folder writable by every user is refused.

// Handlers must return tonic::Status, so helpers do too; boxing it would only add a
// conversion on the (cold) error path.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use trustmesh_identity::{SpiffeId, TrustDomain};

use crate::attest::{check_socket_folder, Attestation, Attested};
use crate::config::Config;
use crate::jwt::{self, TokenCache};
use crate::pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::pb::*;
use crate::state::{Snapshot, StateRx};

/// Header every Workload API request must carry (spec section 5.2): it stops a browser or a
/// confused proxy from being tricked into calling the API on a workload's behalf.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct WorkloadApi {
    state: StateRx,
    cfg: Arc<Config>,
    jwt_cache: TokenCache,
}

/// The spec's security header, then the caller's attestation (every call starts here).
fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.extensions().get::<Attestation>() {
        Some(a) if a.admitted => {}
        Some(a) => {
            return Err(Status::permission_denied(match &a.caller {
                Some(c) => format!(
                    "caller {c} is not admitted to this Workload API (workload_api_callers)"
                ),
                None => "the caller's credentials could not be read".to_string(),
            }))
        }
        None => return Err(Status::permission_denied("caller not attested")),
    }
    match req
        .metadata()
        .get(SECURITY_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing from request: \"{SECURITY_HEADER}: true\" is required"
        ))),
    }
}

fn concat(certs: &[rustls_pki_types::CertificateDer<'static>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

fn td_key(td: &trustmesh_identity::TrustDomain) -> String {
    format!("spiffe://{td}")
}

fn x509_svid_response(snap: &Snapshot) -> Option<X509svidResponse> {
    let svid = snap.svid.as_ref()?;
    Some(X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: svid.id.to_string(),
            x509_svid: concat(&svid.chain),
            x509_svid_key: svid.key_der.clone(),
            bundle: concat(&svid.roots),
            hint: String::new(),
        }],
        crl: Vec::new(),
        federated_bundles: snap
            .federated
            .iter()
            .map(|(td, roots)| (td_key(td), concat(roots)))
            .collect(),
    })
}

fn x509_bundles_response(snap: &Snapshot) -> Option<X509BundlesResponse> {
    let svid = snap.svid.as_ref()?;
    let mut bundles: HashMap<String, Vec<u8>> = snap
        .federated
        .iter()
        .map(|(td, roots)| (td_key(td), concat(roots)))
        .collect();
    bundles.insert(td_key(svid.id.trust_domain()), concat(&svid.roots));
    Some(X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    })
}

/// A stream that emits `render(snapshot)` now (once there is an SVID) and on every change,
/// skipping repeats, until the client goes away.
fn updates<T: PartialEq + Clone + Send + 'static>(
    state: StateRx,
    render: fn(&Snapshot) -> Option<T>,
) -> BoxStream<T> {
    let mut last: Option<T> = None;
    let stream = WatchStream::new(state).filter_map(move |snap| {
        let item = render(&snap)?;
        if last.as_ref() == Some(&item) {
            return None;
        }
        last = Some(item.clone());
        Some(Ok(item))
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(updates(
            self.state.clone(),
            x509_svid_response,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&req)?;
        Ok(Response::new(updates(
            self.state.clone(),
            x509_bundles_response,
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&req)?;
        let body = req.into_inner();
        let ours = &self.cfg.spiffe_id;
        check_jwtsvid_request(&body, ours)?;
        let token = self
            .jwt_cache
            .get(&self.cfg, &self.state, &body.audience)
            .await?;
        Ok(Response::new(JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: ours.to_string(),
                svid: token,
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&req)?;
        let local = self.cfg.trust_domain.clone();
        let mut last: Option<JwtBundlesResponse> = None;
        let stream = WatchStream::new(self.state.clone()).filter_map(move |snap| {
            let bundles = jwt::bundles(&snap, &local)?;
            let item = JwtBundlesResponse {
                bundles: bundles
                    .into_iter()
                    .map(|(td, b)| (td_key(&td), b))
                    .collect(),
            };
            if last.as_ref() == Some(&item) {
                return None;
            }
            last = Some(item.clone());
            Some(Ok(item))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        let body = req.into_inner();
        let bundles =
            jwt::bundles(&self.state.borrow(), &self.cfg.trust_domain).ok_or_else(|| {
                Status::unavailable("the JWT bundle has not been fetched from the CA yet")
            })?;
        validate_jwtsvid_request(&body, &bundles).map(Response::new)
    }
}

/// What `FetchJWTSVID` may ask for: at least one audience, none empty, and no identity but
/// this workload's own (`ours`).
pub fn check_jwtsvid_request(body: &JwtsvidRequest, ours: &SpiffeId) -> Result<(), Status> {
    if body.audience.is_empty() || body.audience.iter().any(|a| a.is_empty()) {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if !body.spiffe_id.is_empty() && body.spiffe_id != ours.as_str() {
        return Err(Status::permission_denied(format!(
            "no identity issued for {}: this workload is {ours}",
            body.spiffe_id
        )));
    }
    Ok(())
}

/// Answers `ValidateJWTSVID` from the JWT bundles the agent holds.
pub fn validate_jwtsvid_request(
    body: &ValidateJwtsvidRequest,
    bundles: &BTreeMap<TrustDomain, Vec<u8>>,
) -> Result<ValidateJwtsvidResponse, Status> {
    if body.audience.is_empty() {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if body.svid.is_empty() {
        return Err(Status::invalid_argument("svid must be specified"));
    }
    let (id, claims) = jwt::validate(&body.svid, &body.audience, bundles)?;
    Ok(ValidateJwtsvidResponse {
        spiffe_id: id.to_string(),
        claims: Some(jwt::to_struct(claims)),
    })
}

/// Binds `path` (replacing a stale socket from a previous run) and serves until the task ends.
pub async fn serve(path: &Path, state: StateRx, cfg: Arc<Config>) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        // Folders we create are ours and our group's only; an existing folder keeps its mode
        // (the operator may open it to workloads of other users, whom attestation then checks).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    check_socket_folder(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing stale socket {}: {e}", path.display())),
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    // Any user who can reach the socket may connect (the umask would otherwise lock out a
    // workload running under another user); what it may fetch is decided by attestation.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = cfg.workload_api_callers.clone();
    // Every connection is attested, then goes through the `:authority` shim so gRPC-core
    // clients work.
    let incoming = UnixListenerStream::new(listener).map(move |conn| {
        conn.map(|stream| {
            let attestation = Attestation::of(&stream, &policy);
            if !attestation.admitted {
                match &attestation.caller {
                    Some(c) => tracing::warn!(
                        caller = %c,
                        "Workload API: caller not admitted; its calls get PERMISSION_DENIED"
                    ),
                    None => tracing::warn!("Workload API: caller's credentials unreadable"),
                }
            }
            Attested {
                inner: crate::h2_authority::wrap(stream),
                attestation,
            }
        })
    });
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi {
            state,
            cfg,
            jwt_cache: TokenCache::default(),
        }))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| format!("Workload API server: {e}"))
}
