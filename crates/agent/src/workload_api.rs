//! The SPIFFE Workload API on a unix socket.
//!
//! Like istio-agent's per-pod SDS socket, the socket belongs to one workload, so every caller
//! gets the one identity this agent was configured for; access is controlled by who can open
//! the socket, i.e. by the permissions of the folder it is created in.

// Handlers must return tonic::Status, so helpers do too; boxing it would only add a
// conversion on the (cold) error path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;

use tokio::net::UnixListener;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use crate::pb::*;
use crate::state::{Snapshot, StateRx};

/// Header every Workload API request must carry (spec section 5.2): it stops a browser or a
/// confused proxy from being tricked into calling the API on a workload's behalf.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

const JWT_UNIMPLEMENTED: &str = "JWT-SVIDs are not issued by this agent: trustmesh's CA has no \
     JWT authority for the trust domain yet; use X.509-SVIDs (FetchX509SVID)";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct WorkloadApi {
    state: StateRx,
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
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
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&req)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        Err(Status::unimplemented(JWT_UNIMPLEMENTED))
    }
}

/// Binds `path` (replacing a stale socket from a previous run) and serves until the task ends.
pub async fn serve(path: &Path, state: StateRx) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing stale socket {}: {e}", path.display())),
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    // Every connection goes through the `:authority` shim so gRPC-core clients work.
    let incoming =
        UnixListenerStream::new(listener).map(|conn| conn.map(crate::h2_authority::wrap));
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi { state }))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| format!("Workload API server: {e}"))
}
