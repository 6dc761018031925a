//! Starts the CA's listeners: the gRPC certificate service and, optionally, the bundle endpoint;
//! and drains them ([`Running::drain`], the lifecycle crate's drain primitive): both stop
//! accepting, and what they accepted is answered before they stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use trustmesh_identity::TrustDomain;
use trustmesh_lifecycle::drain::{Drained, Trigger};

use crate::auth::jwt::{IssuerConfig, JwtAuthenticator, JwtError};
use crate::auth::node::NodeAuthorizer;
use crate::auth::review::TokenReviewer;
use crate::jwt_authority::JwtAuthority;
use crate::limits::Limits;
use crate::pb::istio_certificate_service_server::IstioCertificateServiceServer;
use crate::pb_jwt::jwt_svid_service_server::JwtSvidServiceServer;
use crate::service::CaService;
use crate::signer::Signer;
use crate::tls::{ClientRoots, RotatingCert};

/// The certificate and key the CA's listeners present to clients.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Produces a fresh serving certificate; called at start and again at half its lifetime.
pub type IdentitySource = Arc<dyn Fn() -> Result<ServerIdentity, String> + Send + Sync>;

pub struct Options {
    /// Lifetime of the serving certificate; it is renewed at half of it.
    pub server_cert_ttl: Duration,
    pub trust_domain: TrustDomain,
    pub listen: SocketAddr,
    pub bundle_listen: Option<SocketAddr>,
    pub issuers: Vec<IssuerConfig>,
    pub audiences: Vec<String>,
    pub max_ttl: Duration,
    pub default_ttl: Duration,
    /// Enables JWT-SVID minting and adds the JWT authority to the bundle.
    pub jwt_authority: Option<JwtAuthority>,
    /// How long a verified bearer token is answered without checking its signature again (never
    /// past its `exp`); zero disables the cache. Default:
    /// [`crate::auth::cache::DEFAULT_MAX_AGE`].
    pub token_cache_max_age: Duration,
    /// Connections each listener holds at once ([`crate::limits::DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// A connection whose client sends nothing this long is closed
    /// ([`crate::limits::DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Reviews bearer tokens of issuers not in `issuers` (the Kubernetes TokenReview API).
    pub reviewer: Option<Arc<dyn TokenReviewer>>,
    /// Node authorization for node proxies' `ImpersonatedIdentity` requests.
    pub node_authorizer: Option<Arc<dyn NodeAuthorizer>>,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("trust bundle: {0}")]
    Trust(String),
}

/// How long `ca serve` gives calls in flight to finish once it is told to stop, before the rest
/// is cut: a CreateCertificate or MintJwtSvid call takes milliseconds, and a client that
/// connected just before the signal gets its answer well within this.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The running servers; dropping this does not stop them, [`Running::drain`] and
/// [`Running::shutdown`] do.
pub struct Running {
    pub addr: SocketAddr,
    pub bundle_addr: Option<SocketAddr>,
    /// The certificate service's connection limits (and what they refused).
    pub limits: Arc<Limits>,
    /// The bundle endpoint's, when it runs.
    pub bundle_limits: Option<Arc<Limits>>,
    roots: RootsHandle,
    tasks: Vec<JoinHandle<()>>,
    /// Told when a task ends by itself (before a drain, only on a fatal error).
    ended: mpsc::UnboundedReceiver<()>,
    trigger: Trigger,
}

impl Running {
    /// Stops every listener and connection at once.
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }

    /// Drains: both listeners close, calls and bundle requests in flight are answered and their
    /// connections closed, within `deadline`; `hurry` (a second signal) cuts them at once. The
    /// serving certificate's renewal stops with them.
    pub async fn drain(self, deadline: Duration, hurry: impl Future<Output = ()>) -> Drained {
        let drained = self.trigger.shutdown(deadline, hurry).await;
        for t in &self.tasks {
            t.abort();
        }
        drained
    }

    /// Follows the signer's current roots (after a plug-in CA's rotation): client certificates
    /// of the new roots are accepted on the next handshake and request, and the serving
    /// certificate is renewed from the new CA at once. The bundle endpoint's document is not
    /// rebuilt (it is `ca serve`'s; `control` serves bundles over xDS).
    pub async fn reload_roots(&self) -> Result<(), String> {
        let roots = self.roots.service.signer.roots();
        self.roots.client_roots.set(&roots)?;
        self.roots.service.set_roots(&roots)?;
        let source = self.roots.identity.clone();
        let fresh = tokio::task::spawn_blocking(move || source())
            .await
            .map_err(|e| e.to_string())??;
        self.roots.cert.set(fresh.chain, &fresh.key)?;
        tracing::info!(
            roots = roots.len(),
            "the CA's roots changed: client trust and serving certificate follow"
        );
        Ok(())
    }

    /// Waits until a listener task ends (they only end on a fatal error), then stops the rest.
    pub async fn wait(&mut self) {
        let _ = self.ended.recv().await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Spawns `task`, telling `ended` when it returns.
fn spawn(
    ended: &mpsc::UnboundedSender<()>,
    task: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let ended = ended.clone();
    tokio::spawn(async move {
        task.await;
        let _ = ended.send(());
    })
}

/// More gRPC services to serve on the certificate service's port, as istiod serves xDS and its
/// CA on 15012: built from the CA service, so they authenticate callers as it does.
pub type ExtraServices = Box<dyn FnOnce(Arc<CaService>) -> tonic::service::Routes + Send>;

/// Binds both listeners and starts serving. Errors (a taken port, an unreadable JWKS) surface
/// here, before anything is served.
pub async fn start(
    signer: Arc<dyn Signer>,
    identity: IdentitySource,
    opts: Options,
) -> Result<Running, ServerError> {
    start_with(signer, identity, opts, None).await
}

/// [`start`], with `extra` services on the certificate service's port.
pub async fn start_with(
    signer: Arc<dyn Signer>,
    identity: IdentitySource,
    opts: Options,
    extra: Option<ExtraServices>,
) -> Result<Running, ServerError> {
    let roots = signer.roots();
    let trust =
        crate::service::trust_for(&opts.trust_domain, &roots).map_err(ServerError::Trust)?;
    let jwt = JwtAuthenticator::new(opts.issuers, opts.audiences)
        .await?
        .with_cache_max_age(opts.token_cache_max_age);
    let service = Arc::new(CaService {
        signer: signer.clone(),
        trust_domain: opts.trust_domain.clone(),
        jwt,
        reviewer: opts.reviewer,
        node_authorizer: opts.node_authorizer,
        trust: std::sync::RwLock::new(trust),
        max_ttl: opts.max_ttl,
        default_ttl: opts.default_ttl.min(opts.max_ttl),
        jwt_authority: opts.jwt_authority.map(Arc::new),
        refused: Default::default(),
    });
    let jwt_authorities: Vec<serde_json::Value> = service
        .jwt_authority
        .iter()
        .map(|a| a.jwk().clone())
        .collect();

    let first = identity().map_err(ServerError::Tls)?;
    let cert = Arc::new(RotatingCert::new(first.chain, &first.key).map_err(ServerError::Tls)?);
    let client_roots = Arc::new(ClientRoots::new(&roots).map_err(ServerError::Tls)?);
    let grpc_tls =
        crate::tls::server_config_verifying(cert.clone(), client_roots.clone(), &[b"h2"])
            .map_err(ServerError::Tls)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: opts.listen,
        source,
    })?;
    let limits = Arc::new(Limits::new(
        "certificate service",
        opts.max_connections,
        opts.idle_timeout,
    ));
    // Every listener and the gRPC server hold a watch; the drain waits for them to let go.
    let (trigger, drain) = trustmesh_lifecycle::drain::channel();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let incoming =
        crate::tls::accept_tls(listener, Arc::new(grpc_tls), limits.clone(), drain.clone());
    let grpc_drain = drain.clone();
    let extra = extra.map(|f| f(service.clone()));
    let service_for_roots = service.clone();
    let grpc = spawn(&ended_tx, async move {
        // On a drain tonic stops taking connections, tells each connection to finish (HTTP/2
        // GOAWAY: calls already received are answered, new ones refused) and returns once every
        // connection has closed; an immediate drain stops waiting for them.
        let mut builder = tonic::transport::Server::builder();
        let router = match extra {
            // Extra services hold streams open for as long as the client stays (xDS), so the
            // per-request timeout cannot apply to this port; the CA's calls stay bounded by the
            // connection limits and idle timeout.
            Some(routes) => builder.add_routes(routes),
            // A request that takes this long is stuck; free its resources.
            None => builder
                .timeout(Duration::from_secs(30))
                .add_routes(tonic::service::Routes::default()),
        };
        let served = router
            .add_service(IstioCertificateServiceServer::new(service.clone()))
            .add_service(JwtSvidServiceServer::new(service))
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async {
                grpc_drain.draining().await;
            });
        let result = tokio::select! {
            r = served => r,
            () = grpc_drain.immediate() => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!("gRPC server stopped: {e}");
        }
    });
    let renew = spawn(
        &ended_tx,
        renew_serving_cert(cert.clone(), identity.clone(), opts.server_cert_ttl / 2),
    );
    let roots_handle = RootsHandle {
        service: service_for_roots,
        client_roots,
        cert: cert.clone(),
        identity,
    };
    let mut tasks = vec![grpc, renew];

    let mut bundle_addr = None;
    let mut bundle_limits = None;
    if let Some(baddr) = opts.bundle_listen {
        let doc = crate::bundle_endpoint::document(&roots, &jwt_authorities)
            .map_err(|e| ServerError::Bundle(e.to_string()))?;
        let tls = crate::tls::server_config(cert, &[b"http/1.1"]).map_err(ServerError::Tls)?;
        let l = TcpListener::bind(baddr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: baddr,
                source,
            })?;
        bundle_addr = Some(l.local_addr().map_err(|source| ServerError::Bind {
            addr: baddr,
            source,
        })?);
        // Limits of its own: a flood here cannot take the certificate service's connections.
        let own = Arc::new(Limits::new(
            "bundle endpoint",
            opts.max_connections,
            opts.idle_timeout,
        ));
        bundle_limits = Some(own.clone());
        tasks.push(spawn(
            &ended_tx,
            crate::bundle_endpoint::serve(l, Arc::new(tls), doc, own, drain.clone()),
        ));
    }
    Ok(Running {
        addr,
        bundle_addr,
        limits,
        bundle_limits,
        roots: roots_handle,
        tasks,
        ended,
        trigger,
    })
}

/// What must follow the CA's roots when they change.
struct RootsHandle {
    service: Arc<CaService>,
    client_roots: Arc<ClientRoots>,
    cert: Arc<RotatingCert>,
    identity: IdentitySource,
}

/// Renews the serving certificate every `every`; a failure is retried after a short pause
/// while the current certificate keeps being served.
async fn renew_serving_cert(cert: Arc<RotatingCert>, identity: IdentitySource, every: Duration) {
    let every = every.max(Duration::from_secs(1));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        let source = identity.clone();
        let fresh = tokio::task::spawn_blocking(move || source()).await;
        match fresh {
            Ok(Ok(id)) => match cert.set(id.chain, &id.key) {
                Ok(()) => {
                    tracing::info!("renewed the CA endpoint's serving certificate");
                    wait = every;
                }
                Err(e) => {
                    tracing::error!("renewed serving certificate unusable: {e}");
                    wait = Duration::from_secs(5).min(every);
                }
            },
            Ok(Err(e)) => {
                tracing::error!("renewing serving certificate failed: {e}");
                wait = Duration::from_secs(5).min(every);
            }
            Err(e) => {
                tracing::error!("renewal task failed: {e}");
                wait = Duration::from_secs(5).min(every);
            }
        }
    }
}
