//! The client side of incremental ADS, for sidecars: subscribe to every type the handler
//! wants, hand each response to the [`Handler`], ACK what it applied and NACK (with its reason)
//! what it refused, and reconnect with backoff — to the next server in the list, so two
//! control-plane replicas share the sidecars and take over each other's.
//!
//! Nothing here forgets configuration: the handler keeps what it last applied across
//! disconnects, and on each reconnect the client declares it (`initial_resource_versions`) so
//! the server resends only what changed meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::core::Node;
use crate::pb::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::{DeltaDiscoveryRequest, Resource};
use crate::rpc;

/// How the client proves who it is on each connection.
#[derive(Default, Clone)]
pub struct Credentials {
    /// The workload's SVID as PEM (chain, key), presented for mTLS.
    pub client_cert: Option<(String, String)>,
    /// A bearer token (bootstrap, before the first certificate).
    pub bearer_token: Option<String>,
}

/// Reads the credentials again at every connection attempt, so a rotated certificate or token
/// is used from the next connection on.
pub type CredentialSource = Arc<dyn Fn() -> Credentials + Send + Sync>;

pub struct Options {
    /// `https://host:port` of each server, tried in turn.
    pub servers: Vec<String>,
    /// PEM roots that verify the servers' certificates.
    pub root_pem: Vec<u8>,
    /// The name the servers' certificates carry.
    pub server_name: String,
    pub credentials: CredentialSource,
    pub node: Node,
    /// Types to subscribe to, each as a wildcard subscription.
    pub types: Vec<String>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Receives what the servers send.
pub trait Handler: Send + 'static {
    /// Applies one response. An error refuses it whole: the handler must keep what it had, and
    /// the reason goes back to the server in the NACK.
    fn apply(
        &mut self,
        type_url: &str,
        updated: Vec<Resource>,
        removed: Vec<String>,
    ) -> Result<(), String>;
    /// What the handler holds of `type_url`: name → version.
    fn held(&self, type_url: &str) -> HashMap<String, String>;
    /// The connection state, for logs and metrics.
    fn connection(&mut self, _state: Connection<'_>) {}
}

pub enum Connection<'a> {
    Connected { server: &'a str },
    Lost { server: &'a str, why: &'a str },
}

/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until the task is dropped: connect, stream, and on any failure try the next server.
pub async fn run<H: Handler>(opts: Options, handler: Arc<Mutex<H>>) {
    let mut backoff = opts.backoff_min;
    let mut i = 0usize;
    loop {
        let server = opts.servers[i % opts.servers.len()].clone();
        i = i.wrapping_add(1);
        let started = Instant::now();
        let why = match session(&opts, &server, &handler).await {
            Ok(()) => "the server closed the stream".to_string(),
            Err(e) => e,
        };
        handler
            .lock()
            .expect("handler poisoned")
            .connection(Connection::Lost {
                server: &server,
                why: &why,
            });
        if started.elapsed() >= STABLE {
            backoff = opts.backoff_min;
        }
        // Jitter spreads the reconnects of many sidecars after a control plane restart.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let wait = backoff.mul_f64(jitter);
        tracing::warn!(%server, "control plane connection lost ({why}); reconnecting in {wait:?}");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

async fn channel(opts: &Options, server: &str, creds: &Credentials) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&opts.root_pem))
        .domain_name(opts.server_name.clone());
    if let Some((chain, key)) = &creds.client_cert {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    Endpoint::from_shared(server.to_string())
        .map_err(|e| format!("address {server:?}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS configuration: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        // A server that vanished without closing the connection is noticed within a minute.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))
}

async fn session<H: Handler>(
    opts: &Options,
    server: &str,
    handler: &Arc<Mutex<H>>,
) -> Result<(), String> {
    let creds = (opts.credentials)();
    let ch = channel(opts, server, &creds).await?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for (n, t) in opts.types.iter().enumerate() {
        let held = handler.lock().expect("handler poisoned").held(t);
        let req = DeltaDiscoveryRequest {
            node: (n == 0).then(|| opts.node.clone()),
            type_url: t.clone(),
            initial_resource_versions: held,
            ..Default::default()
        };
        tx.send(req).await.map_err(|_| "request queue closed")?;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &creds.bearer_token {
        let v = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| "the token has characters not allowed in a header".to_string())?;
        request.metadata_mut().insert("authorization", v);
    }
    let mut responses = AggregatedDiscoveryServiceClient::new(ch)
        .max_decoding_message_size(16 << 20)
        .delta_aggregated_resources(request)
        .await
        .map_err(|s| format!("{}: {}", code(s.code()), s.message()))?
        .into_inner();
    handler
        .lock()
        .expect("handler poisoned")
        .connection(Connection::Connected { server });
    tracing::info!(%server, "connected to the control plane");
    loop {
        let resp = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{}: {}", code(s.code()), s.message())),
        };
        let h = handler.clone();
        let (type_url, nonce) = (resp.type_url.clone(), resp.nonce.clone());
        let applied = tokio::task::spawn_blocking(move || {
            h.lock().expect("handler poisoned").apply(
                &resp.type_url,
                resp.resources,
                resp.removed_resources,
            )
        })
        .await
        .map_err(|e| format!("applying a response failed: {e}"))?;
        let error_detail = match applied {
            Ok(()) => None,
            Err(why) => {
                tracing::warn!(%type_url, %nonce, "refused a push from the control plane (NACK): {why}");
                // INVALID_ARGUMENT, as Envoy sends for a configuration it cannot apply.
                Some(rpc::Status {
                    code: 3,
                    message: why,
                    details: vec![],
                })
            }
        };
        let reply = DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail,
            ..Default::default()
        };
        tx.send(reply).await.map_err(|_| "request queue closed")?;
    }
}

/// A gRPC status code as the gRPC spec names it (`PERMISSION_DENIED`), not Rust's Debug.
fn code(c: tonic::Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
