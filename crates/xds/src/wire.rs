//! The HTTP/2 side of the ADS service, written here instead of taken from tonic's generated
//! server, so that a stream holds no response buffer between responses.
//!
//! Why: tonic encodes a response stream into one `BytesMut` per stream that grows to the
//! largest response and hands out the encoded bytes with `split_to(..).freeze()`, which leaves
//! the rest of the same allocation in the buffer. A sidecar's first push is ~60 KB, so every
//! stream kept a 64 KiB allocation for as long as its sidecar stayed connected: 65.6 KB of the
//! control plane's 144 KB per connected sidecar (heaptrack, `bench/control.sh 10000`). Here each
//! `DeltaDiscoveryResponse` becomes its own exactly-sized gRPC frame (a 0 compression flag, a
//! big-endian `u32` length, the protobuf bytes), which HTTP/2 frees once it is written; the
//! stream ends with the gRPC trailers (`grpc-status`, and `grpc-message` for an error).
//!
//! Requests are small, so they still go through tonic's decoder ([`tonic::codec::Streaming`]
//! with [`crate::codec::SmallBuffers`]).

// Statuses travel as tonic::Status, as the stream task makes them.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tonic::body::BoxBody;
use tonic::server::NamedService;
use tonic::Status;

use crate::pb::DeltaDiscoveryResponse;
use crate::server::{Ads, Queued, Views, MAX_MESSAGE};

/// The gRPC service name, which the router matches on a request's path.
const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The ADS service over `V`, to add to a tonic server (`tonic::service::Routes::new`).
pub struct AdsServer<V: Views> {
    views: Arc<V>,
}

impl<V: Views> Ads<V> {
    /// The service to add to a tonic server (`tonic::service::Routes::new`): our own HTTP/2
    /// side of ADS (see this module for why not tonic's generated one). Defined here so the
    /// stream logic (`server`) does not depend on its transport.
    pub fn service(self) -> AdsServer<V> {
        AdsServer { views: self.views }
    }
}

impl<V: Views> Clone for AdsServer<V> {
    fn clone(&self) -> Self {
        AdsServer {
            views: self.views.clone(),
        }
    }
}

impl<V: Views> NamedService for AdsServer<V> {
    const NAME: &'static str = SERVICE;
}

impl<V: Views> tower_service::Service<http::Request<BoxBody>> for AdsServer<V> {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        let views = self.views.clone();
        Box::pin(async move {
            let response = match req.uri().path() {
                DELTA => match crate::server::open(views, req).await {
                    Ok(rx) => respond(rx),
                    // Refused before any response: a trailers-only answer, as tonic gives.
                    Err(status) => status.into_http(),
                },
                SOTW => Status::unimplemented(
                    "this control plane speaks incremental xDS only: use DeltaAggregatedResources",
                )
                .into_http(),
                _ => Status::unimplemented("").into_http(),
            };
            Ok(response)
        })
    }
}

/// The response to an admitted stream: headers now, then a frame per queued response.
fn respond(rx: mpsc::Receiver<Queued>) -> http::Response<BoxBody> {
    let mut response = http::Response::new(Responses { rx: Some(rx) }.boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

/// A stream's response body: each queued response as one gRPC frame, then the trailers (the
/// queued error, or OK when the stream task has finished).
struct Responses {
    /// `None` once the trailers are out. Dropping it tells the stream task to stop.
    rx: Option<mpsc::Receiver<Queued>>,
}

impl Body for Responses {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        let end = match ready!(rx.poll_recv(cx)).map(|q| *q) {
            Some(Ok(response)) => match frame(&response) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.rx = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }
}

/// One gRPC length-prefixed message in an allocation of exactly its size.
fn frame(m: &DeltaDiscoveryResponse) -> Result<Bytes, Status> {
    let len = prost::Message::encoded_len(m);
    if len > MAX_MESSAGE {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: \
             {MAX_MESSAGE} bytes"
        )));
    }
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    prost::Message::encode(m, &mut buf).expect("a Vec grows as needed");
    Ok(Bytes::from(buf))
}

/// The trailers that end a stream with `status`: tonic's own rendering (`grpc-status`, the
/// percent-encoded `grpc-message`, any details and metadata).
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        map.insert(Status::GRPC_STATUS, HeaderValue::from_static("13"));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Resource;

    async fn frames(queued: Vec<Queued>) -> Vec<Frame<Bytes>> {
        let (tx, rx) = mpsc::channel(queued.len().max(1));
        for q in queued {
            tx.send(q).await.unwrap();
        }
        drop(tx);
        let mut body = Responses { rx: Some(rx) };
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap());
        }
        assert!(body.is_end_stream());
        out
    }

    #[tokio::test]
    async fn frames_then_ok_trailers() {
        let response = DeltaDiscoveryResponse {
            type_url: "t".into(),
            nonce: "1".into(),
            resources: vec![Resource {
                name: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = frames(vec![Box::new(Ok(response.clone()))]).await;
        assert_eq!(out.len(), 2);
        let data = out[0].data_ref().unwrap();
        let len = prost::Message::encoded_len(&response);
        assert_eq!(data.len(), 5 + len);
        assert_eq!(data[0], 0);
        assert_eq!(
            u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize,
            len
        );
        let decoded: DeltaDiscoveryResponse = prost::Message::decode(&data[5..]).unwrap();
        assert_eq!(decoded, response);
        let t = out[1].trailers_ref().unwrap();
        assert_eq!(t.get("grpc-status").unwrap(), "0");
        assert!(t.get("grpc-message").is_none());
    }

    #[tokio::test]
    async fn error_trailers_percent_encoded() {
        let out = frames(vec![Box::new(Err(Status::invalid_argument(
            "bad request: é?",
        )))])
        .await;
        assert_eq!(out.len(), 1);
        let t = out[0].trailers_ref().unwrap();
        assert_eq!(t.get("grpc-status").unwrap(), "3");
        assert_eq!(t.get("grpc-message").unwrap(), "bad%20request:%20%C3%A9%3F");
    }
}
