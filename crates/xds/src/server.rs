//! The server side of incremental ADS: one task per stream, which learns who the client is
//! from its first request (through [`Views::admit`]), then answers each subscribed type with
//! the difference between what the client holds and what [`Views::resources`] says it should
//! hold — at subscription time and again whenever the world changes.
//!
//! A change that does not touch a client's view costs that client a comparison of versions and
//! no bytes; a change to one resource sends that one resource. One response per type is in
//! flight at a time: the next waits for the ACK or NACK (so the server always knows what the
//! client holds), and changes made meanwhile are folded into it.

// Handlers must return tonic::Status, so helpers do too.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tonic::codec::{Codec, Streaming};
use tonic::{Request, Status};

use crate::codec::SmallBuffers;
use crate::core::Node;
use crate::pb::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use crate::state::{Delta, Reply, TypeState};
pub use crate::state::{ResourceMap, Versioned};

/// The rustls certificate type tonic hands out for a TLS peer.
mod rustls_pki {
    pub type CertificateDer = tonic::transport::CertificateDer<'static>;
}

/// What the transport knows of a caller before it is admitted.
pub struct Caller<'a> {
    pub metadata: &'a tonic::metadata::MetadataMap,
    /// The client certificate chain, when it presented one over mTLS.
    pub certs: Option<&'a [CertificateDer]>,
    pub remote: Option<SocketAddr>,
}

/// What happened on a stream, for the operator's view and metrics.
pub enum Event<'a> {
    Sent {
        type_url: &'a str,
        nonce: &'a str,
        updated: usize,
        removed: usize,
        bytes: usize,
    },
    Acked {
        type_url: &'a str,
        nonce: &'a str,
    },
    Nacked {
        type_url: &'a str,
        nonce: &'a str,
        reason: &'a str,
    },
    Closed,
}

/// What the server serves; the control plane implements it.
#[tonic::async_trait]
pub trait Views: Send + Sync + 'static {
    /// A connected, authenticated client.
    type Client: Send + Sync + 'static;
    /// Authenticates a new stream from its first request's node and the connection; an error
    /// ends the stream with that status.
    async fn admit(&self, caller: Caller<'_>, node: &Node) -> Result<Self::Client, Status>;
    /// Bumped whenever what [`Views::resources`] answers may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
    /// What `client` should hold of `type_url` now. An error refuses the subscription (an
    /// unknown type, or one this client may not have) and ends the stream with it.
    fn resources(&self, client: &Self::Client, type_url: &str) -> Result<Arc<ResourceMap>, Status>;
    /// The version of the whole configuration, sent as `system_version_info`.
    fn system_version(&self) -> String;
    fn event(&self, client: &Self::Client, event: Event<'_>);
}

/// The gRPC service: `DeltaAggregatedResources` over `V`.
pub struct Ads<V: Views> {
    pub(crate) views: Arc<V>,
}

impl<V: Views> Ads<V> {
    pub fn new(views: Arc<V>) -> Ads<V> {
        Ads { views }
    }
}

/// Largest message accepted or sent: 16 MiB, as Envoy's default maximum for xDS. Resources are
/// small but a full push of a big namespace is not.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;

/// Responses queued per stream before the stream task waits for the client to read.
const QUEUE: usize = 8;

/// What a stream's queue carries. Boxed: tokio's channel allocates its slots 32 at a time
/// whatever its capacity, and a response or a status inline is ~190 bytes, so unboxed every
/// stream held a 6 KB block for as long as its sidecar stays connected (heaptrack,
/// `bench/control.sh`); boxed it is 32 pointers.
pub(crate) type Queued = Box<Result<DeltaDiscoveryResponse, Status>>;

/// Opens a `DeltaAggregatedResources` stream: reads the first request, admits its client and
/// starts the stream's task, whose responses (and final status) arrive on the returned queue.
pub(crate) async fn open<V: Views>(
    views: Arc<V>,
    req: http::Request<tonic::body::BoxBody>,
) -> Result<mpsc::Receiver<Queued>, Status> {
    let req = Request::from_http(req);
    let remote = req.remote_addr();
    let certs = req.peer_certs();
    let metadata = req.metadata().clone();
    // No compression is offered, so a compressed request cannot be read (as tonic answers).
    if let Some(enc) = metadata.get("grpc-encoding") {
        if enc.as_encoded_bytes() != b"identity" {
            return Err(Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(enc.as_encoded_bytes())
            )));
        }
    }
    let decoder =
        SmallBuffers::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default().decoder();
    let mut inbound = Streaming::new_request(decoder, req.into_inner(), None, Some(MAX_MESSAGE));
    // The first request names the client; nothing is served before it is admitted.
    let first = match inbound.next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(e),
        None => return Err(Status::cancelled("stream closed before its first request")),
    };
    let node = first.node.clone().unwrap_or_default();
    let caller = Caller {
        metadata: &metadata,
        certs: certs.as_deref().map(|c| c.as_slice()),
        remote,
    };
    let client = views.admit(caller, &node).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let stream = StreamTask {
        views,
        client,
        types: HashMap::new(),
        nonce: 0,
        tx,
    };
    tokio::spawn(stream.run(first, inbound));
    Ok(rx)
}

struct StreamTask<V: Views> {
    views: Arc<V>,
    client: V::Client,
    types: HashMap<String, TypeState>,
    nonce: u64,
    tx: mpsc::Sender<Queued>,
}

impl<V: Views> StreamTask<V> {
    async fn run(
        mut self,
        first: DeltaDiscoveryRequest,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
    ) {
        let mut changes = self.views.changes();
        changes.borrow_and_update();
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take() {
                if let Err(status) = self.request(req).await {
                    let _ = self.tx.send(Box::new(Err(status))).await;
                    break;
                }
            }
            tokio::select! {
                r = inbound.next() => match r {
                    Some(Ok(req)) => next = Some(req),
                    // The client went away (or the connection broke): the stream is over.
                    Some(Err(_)) | None => break,
                },
                c = changes.changed() => {
                    if c.is_err() {
                        // The world is gone: the server is shutting down.
                        break;
                    }
                    if let Err(status) = self.push_all().await {
                        let _ = self.tx.send(Box::new(Err(status))).await;
                        break;
                    }
                }
                () = self.tx.closed() => break,
            }
        }
        self.views.event(&self.client, Event::Closed);
    }

    async fn request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        if req.type_url.is_empty() {
            return Err(Status::invalid_argument("request without a type_url"));
        }
        let first = !self.types.contains_key(&req.type_url);
        let state = self.types.entry(req.type_url.clone()).or_default();
        if !req.response_nonce.is_empty() {
            let error = req.error_detail.as_ref().map(|e| {
                if e.message.is_empty() {
                    format!("code {}", e.code)
                } else {
                    e.message.clone()
                }
            });
            match state.reply(&req.response_nonce, error) {
                Reply::Ack => self.views.event(
                    &self.client,
                    Event::Acked {
                        type_url: &req.type_url,
                        nonce: &req.response_nonce,
                    },
                ),
                Reply::Nack(reason) => {
                    tracing::warn!(type_url = %req.type_url, nonce = %req.response_nonce, "client refused a push (NACK): {reason}");
                    self.views.event(
                        &self.client,
                        Event::Nacked {
                            type_url: &req.type_url,
                            nonce: &req.response_nonce,
                            reason: &reason,
                        },
                    )
                }
                Reply::Stale => {}
            }
        }
        state.subscribe(
            first,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
            &req.initial_resource_versions,
        );
        self.push(&req.type_url).await
    }

    async fn push_all(&mut self) -> Result<(), Status> {
        let types: Vec<String> = self.types.keys().cloned().collect();
        for t in types {
            self.push(&t).await?;
        }
        Ok(())
    }

    /// Sends `type_url`'s difference, if there is one and no response is unanswered.
    async fn push(&mut self, type_url: &str) -> Result<(), Status> {
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        if state.waiting() {
            return Ok(());
        }
        let want = self.views.resources(&self.client, type_url)?;
        if state.in_step_with(&want) {
            return Ok(());
        }
        let Some(delta) = state.next(&want) else {
            state.computed_from(&want, false);
            return Ok(());
        };
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        state.sent(nonce.clone(), &delta);
        state.computed_from(&want, true);
        let response = response(type_url, &nonce, self.views.system_version(), &delta);
        self.views.event(
            &self.client,
            Event::Sent {
                type_url,
                nonce: &nonce,
                updated: delta.updated.len(),
                removed: delta.removed.len(),
                bytes: prost::Message::encoded_len(&response),
            },
        );
        self.tx
            .send(Box::new(Ok(response)))
            .await
            .map_err(|_| Status::cancelled("client gone"))
    }
}

fn response(type_url: &str, nonce: &str, version: String, delta: &Delta) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: version,
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        resources: delta
            .updated
            .iter()
            .map(|(name, r)| Resource {
                name: name.clone(),
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                ..Default::default()
            })
            .collect(),
        removed_resources: delta.removed.clone(),
    }
}
