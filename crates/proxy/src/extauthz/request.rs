//! Building the `CheckRequest` an authorizer sees, from what the proxy knows about a request.
//!
//! The shape follows what Envoy sends, because authorizers (OPA-Envoy, Istio's sample
//! ext-authz, in-house services) are written against it: header names lower-cased, repeated
//! headers joined with `,`, the pseudo-headers `:authority`, `:method`, `:path` and `:scheme`
//! included in the header map, `path` holding path and query, `size` -1 when unknown, and the
//! peers' SPIFFE IDs as `principal`.

use super::proto::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use super::proto::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use hyper::http::{header, HeaderMap, HeaderName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

/// What the proxy knows about a request at authorization time.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// The downstream peer's address.
    pub source_addr: Option<SocketAddr>,
    /// The downstream peer's SPIFFE ID under mTLS.
    pub source_principal: Option<&'a str>,
    /// The address the request arrived on.
    pub destination_addr: Option<SocketAddr>,
    /// This workload's own SPIFFE ID.
    pub destination_principal: Option<&'a str>,
    pub method: &'a str,
    /// Path and query exactly as received.
    pub path: &'a str,
    /// `Host` / `:authority`.
    pub host: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'a str,
    pub headers: &'a HeaderMap,
}

/// Istio's `includeRequestBodyInCheck` for a gRPC provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySettings {
    /// Most body bytes sent to the authorizer.
    pub max_request_bytes: u32,
    /// Send the first `max_request_bytes` of a longer body instead of answering 413.
    pub allow_partial_message: bool,
    /// Send the body as bytes (`raw_body`) rather than as a string (`body`).
    pub pack_as_bytes: bool,
}

impl From<&trustmesh_policy::mesh::RequestBody> for BodySettings {
    fn from(b: &trustmesh_policy::mesh::RequestBody) -> Self {
        BodySettings {
            max_request_bytes: b.max_request_bytes,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        }
    }
}

/// The body part of a check: the bytes to send, whether they were cut, and how to pack them.
pub(crate) type BodyPart<'a> = (&'a [u8], bool, &'a BodySettings);

pub(crate) fn build(
    input: &CheckInput<'_>,
    allowed: Option<&[HeaderName]>,
    body: Option<BodyPart<'_>>,
) -> CheckRequest {
    let mut headers: HashMap<String, String> = HashMap::new();
    for name in input.headers.keys() {
        if allowed.is_some_and(|list| !list.contains(name)) {
            continue;
        }
        let joined = input
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",");
        headers.insert(name.as_str().to_string(), joined);
    }
    headers.insert(":authority".into(), input.host.to_string());
    headers.insert(":method".into(), input.method.to_string());
    headers.insert(":path".into(), input.path.to_string());
    headers.insert(":scheme".into(), input.scheme.to_string());

    let size = input
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<i64>().ok())
        .unwrap_or(-1);
    let id = input
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();

    if let Some((_, partial, _)) = body {
        headers.insert("x-envoy-auth-partial-body".into(), partial.to_string());
    }
    let (body_text, raw_body) = match body {
        Some((bytes, _, settings)) if settings.pack_as_bytes => (String::new(), bytes.to_vec()),
        Some((bytes, _, _)) => (String::from_utf8_lossy(bytes).into_owned(), Vec::new()),
        None => (String::new(), Vec::new()),
    };
    let http = attribute_context::HttpRequest {
        body: body_text,
        raw_body,
        id,
        method: input.method.to_string(),
        headers,
        path: input.path.to_string(),
        host: input.host.to_string(),
        scheme: input.scheme.to_string(),
        size,
        protocol: input.protocol.to_string(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(input.source_addr, input.source_principal)),
            destination: Some(peer(input.destination_addr, input.destination_principal)),
            request: Some(attribute_context::Request {
                time: Some(prost_types::Timestamp::from(SystemTime::now())),
                http: Some(http),
            }),
            ..Default::default()
        }),
    }
}

/// What the proxy knows about a TCP connection when it is accepted (Envoy's network ext_authz
/// filter sends no more).
#[derive(Debug, Clone, Copy)]
pub struct ConnInput<'a> {
    pub source_addr: SocketAddr,
    /// The peer's SPIFFE ID under mTLS.
    pub source_principal: Option<&'a str>,
    pub destination_addr: SocketAddr,
    /// This workload's own SPIFFE ID.
    pub destination_principal: Option<&'a str>,
}

/// The `CheckRequest` of Envoy's network filter: source and destination peers, no `request`.
pub(crate) fn build_connection(input: &ConnInput<'_>) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(Some(input.source_addr), input.source_principal)),
            destination: Some(peer(
                Some(input.destination_addr),
                input.destination_principal,
            )),
            ..Default::default()
        }),
    }
}

fn peer(addr: Option<SocketAddr>, principal: Option<&str>) -> attribute_context::Peer {
    attribute_context::Peer {
        address: addr.map(|a| Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: a.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(a.port().into())),
                ..Default::default()
            })),
        }),
        principal: principal.unwrap_or_default().to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_envoy_shaped_request() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        headers.append("x-secret", "s".parse().unwrap());
        headers.append("content-length", "12".parse().unwrap());
        let input = CheckInput {
            source_addr: Some("127.0.0.1:5000".parse().unwrap()),
            source_principal: Some("spiffe://td/ns/a/sa/b"),
            destination_addr: None,
            destination_principal: None,
            method: "POST",
            path: "/x?y=1",
            host: "svc",
            scheme: "http",
            protocol: "HTTP/1.1",
            headers: &headers,
        };
        let req = build(&input, None, None);
        let attrs = req.attributes.unwrap();
        let http = attrs.request.unwrap().http.unwrap();
        assert_eq!(http.headers["x-a"], "1,2");
        assert_eq!(http.headers[":path"], "/x?y=1");
        assert_eq!(http.size, 12);
        assert_eq!(attrs.source.unwrap().principal, "spiffe://td/ns/a/sa/b");
        assert!(attrs.destination.unwrap().address.is_none());

        let only = [HeaderName::from_static("x-a")];
        let req = build(&input, Some(&only), None);
        let http = req.attributes.unwrap().request.unwrap().http.unwrap();
        assert!(!http.headers.contains_key("x-secret"));
        assert!(http.headers.contains_key("x-a"));
    }
}
