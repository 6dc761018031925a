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
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::UnixListener;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use trustmesh_identity::{SpiffeId, TrustDomain};
use trustmesh_lifecycle::drain::Watch;

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
    /// Streams end when the drain starts.
    drain: Watch,
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

/// A server stream that ends when the drain starts. A Workload API stream never ends by itself,
/// and one left open would hold its connection, and the drain, until the deadline; ended, it
/// closes with status OK and the client reconnects (to the next agent).
struct UntilDrained<T> {
    updates: BoxStream<T>,
    drained: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

fn until_drained<T: Send + 'static>(updates: BoxStream<T>, drain: Watch) -> BoxStream<T> {
    Box::pin(UntilDrained {
        updates,
        drained: Box::pin(async move {
            drain.draining().await;
        }),
        ended: false,
    })
}

impl<T> Stream for UntilDrained<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended || self.drained.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(None);
        }
        self.updates.as_mut().poll_next(cx)
    }
}

/// A stream that emits `render(snapshot)` now (once there is an SVID) and on every change,
/// skipping repeats, until the client goes away or the drain starts.
fn updates<T: PartialEq + Clone + Send + 'static>(
    state: StateRx,
    render: fn(&Snapshot) -> Option<T>,
    drain: Watch,
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
    until_drained(Box::pin(stream), drain)
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
            self.drain.clone(),
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
            self.drain.clone(),
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
        Ok(Response::new(until_drained(
            Box::pin(stream),
            self.drain.clone(),
        )))
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

/// Binds `path` (replacing a stale socket from a previous run) and serves until `drain` has
/// been drained: then the socket stops accepting (new callers are refused at once), unary calls
/// in flight are answered, streams end, and each connection is told to close (HTTP/2 GOAWAY);
/// this returns once every connection has closed, or at once if the drain turns immediate.
pub async fn serve(
    path: &Path,
    state: StateRx,
    cfg: Arc<Config>,
    drain: Watch,
) -> Result<(), String> {
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
    // clients work. The accept loop owns the listener, so it closes when the drain starts.
    let (conn_tx, incoming) = tokio::sync::mpsc::channel(64);
    let accept_drain = drain.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = accept_drain.draining() => return,
            };
            let conn = accepted.map(|(stream, _)| {
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
            });
            if conn_tx.send(conn).await.is_err() {
                return;
            }
        }
    });
    let served = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WorkloadApi {
            state,
            cfg,
            jwt_cache: TokenCache::default(),
            drain: drain.clone(),
        }))
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async {
            drain.draining().await;
        });
    tokio::select! {
        r = served => r.map_err(|e| format!("Workload API server: {e}")),
        () = drain.immediate() => Ok(()),
    }
}
