//! Istio's HTTP metadata exchange, so each side of a request learns the other's workload for
//! the metric labels: `x-envoy-peer-metadata` carries the sender's node metadata as a
//! base64-encoded, protobuf-serialized `google.protobuf.Struct` (`NAMESPACE`,
//! `WORKLOAD_NAME`, `CLUSTER_ID`, `LABELS` with `app`, `version` and the canonical
//! service/revision labels), and `x-envoy-peer-metadata-id` the sender's node id
//! (`sidecar~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`).
//!
//! A client sidecar adds them to the requests it sends, the server's adds them to the
//! responses; each removes what it received before the app or the client sees it. What a peer
//! claims here is never trusted for policy, and a peer's namespace is taken from its SPIFFE ID
//! when it proved one (as Istio does): these only fill metric labels.

use std::collections::BTreeMap;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use prost_types::{value::Kind, Struct, Value};

use super::labels::{Workload, LATEST, UNKNOWN};

pub static PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
pub static PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// A header value longer than this is ignored (bounds the decoding work a peer can cause).
const MAX_LEN: usize = 4096;

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// Our two header values, built once per workload (at start and reload), never per request.
pub fn encode(own: &Workload) -> (HeaderValue, HeaderValue) {
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("app", &own.app),
        ("version", &own.version),
        ("service.istio.io/canonical-name", &own.canonical_service),
        (
            "service.istio.io/canonical-revision",
            &own.canonical_revision,
        ),
    ] {
        if &**v != UNKNOWN {
            labels.insert(k.to_string(), text(v));
        }
    }
    let mut fields = BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), text(&own.namespace));
    fields.insert("WORKLOAD_NAME".to_string(), text(&own.name));
    fields.insert("NAME".to_string(), text(&own.name));
    if &*own.cluster != UNKNOWN {
        fields.insert("CLUSTER_ID".to_string(), text(&own.cluster));
    }
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    let bytes = Struct { fields }.encode_to_vec();
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let id = format!(
        "sidecar~0.0.0.0~{}.{}~{}.svc.cluster.local",
        own.name, own.namespace, own.namespace
    );
    (
        HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("")),
    )
}

/// Adds our metadata to a request or response we send.
pub fn add(headers: &mut HeaderMap, ours: &(HeaderValue, HeaderValue)) {
    headers.insert(PEER_METADATA.clone(), ours.0.clone());
    headers.insert(PEER_METADATA_ID.clone(), ours.1.clone());
}

/// Removes the peer's metadata from `headers`, returning the metadata value if there was one.
pub fn take(headers: &mut HeaderMap) -> Option<HeaderValue> {
    headers.remove(&PEER_METADATA_ID);
    headers.remove(&PEER_METADATA)
}

/// The workload a metadata value describes; `None` when it is not one (bad base64 or
/// protobuf, too long, no workload name).
pub fn decode(value: &[u8]) -> Option<Workload> {
    if value.len() > MAX_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let s = Struct::decode(bytes.as_slice()).ok()?;
    let field = |st: &Struct, k: &str| match st.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) if !v.is_empty() => Some(v.clone()),
        _ => None,
    };
    let labels = match s.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(l)) => l.clone(),
        _ => Struct::default(),
    };
    let name = field(&s, "WORKLOAD_NAME")?;
    let known = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_string());
    Some(Workload {
        canonical_service: known(field(&labels, "service.istio.io/canonical-name")).into(),
        canonical_revision: field(&labels, "service.istio.io/canonical-revision")
            .unwrap_or_else(|| LATEST.to_string())
            .into(),
        app: known(field(&labels, "app")).into(),
        version: known(field(&labels, "version")).into(),
        namespace: known(field(&s, "NAMESPACE")).into(),
        cluster: known(field(&s, "CLUSTER_ID")).into(),
        name: name.into(),
    })
}
