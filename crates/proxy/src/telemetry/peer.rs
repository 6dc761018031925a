//! The labels of one connection's other side, worked out once per connection and shared by
//! every request it carries: its SPIFFE ID (principal and namespace, which nothing the peer
//! says can override), the workload the registry knows under that identity, and per request
//! what the metadata exchange adds when the registry knows nothing.

use std::net::IpAddr;
use std::sync::Arc;

use trustmesh_identity::SpiffeId;

use super::labels::{Interned, Protocol, Reporter, Security, Service, Workload};
use super::store::{Facts, Istio};

/// A connection's peer and our side of it, as the metric labels need them.
#[derive(Debug, Clone)]
pub struct Side {
    pub reporter: Reporter,
    pub peer: Interned<Workload>,
    /// Whether `peer` came from the registry (then the metadata exchange adds nothing).
    pub from_registry: bool,
    pub peer_principal: Interned<str>,
    pub own_principal: Interned<str>,
    pub security: Security,
    /// The peer's namespace from its SPIFFE ID.
    pub san_namespace: Option<Arc<str>>,
    /// Inbound: the app port and the source as `trustmesh_inbound_sources_total` names it.
    pub inbound: Option<(u16, Arc<str>)>,
}

/// The peer workload the registry describes (`namespace`, `service account`, labels).
pub struct Known<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

impl Istio {
    /// An inbound connection from `source` on app port `port`; `peer` is the SPIFFE ID it
    /// proved (mTLS), `known` what the registry says about that identity.
    pub fn inbound_side(
        &self,
        peer: Option<&SpiffeId>,
        own: &SpiffeId,
        known: Option<Known<'_>>,
        source: IpAddr,
        port: u16,
    ) -> Side {
        let principal = peer.map(|p| p.to_string());
        let security = if peer.is_some() {
            Security::MutualTls
        } else {
            Security::None
        };
        let san_namespace: Option<Arc<str>> = peer.and_then(|p| p.namespace()).map(Into::into);
        let (workload, from_registry) = self.known_or(known, san_namespace.as_deref());
        let who: Arc<str> = match &principal {
            Some(p) => p.as_str().into(),
            None if from_registry => {
                format!("workload {}.{}", workload.0.name, workload.0.namespace).into()
            }
            None => format!("address {source}").into(),
        };
        Side {
            reporter: Reporter::Destination,
            peer: workload,
            from_registry,
            peer_principal: self.string(principal.as_deref().unwrap_or("")),
            own_principal: if peer.is_some() {
                self.string(own.as_ref())
            } else {
                self.unknown_str()
            },
            security,
            san_namespace,
            inbound: Some((port, who)),
        }
    }

    /// An outbound connection (or request) to a peer that proved `peer` (mTLS), or none.
    pub fn outbound_side(
        &self,
        peer: Option<&str>,
        own: &SpiffeId,
        known: Option<Known<'_>>,
    ) -> Side {
        let id = peer.and_then(|p| SpiffeId::parse(p).ok());
        let san_namespace: Option<Arc<str>> =
            id.as_ref().and_then(|p| p.namespace()).map(Into::into);
        let (workload, from_registry) = self.known_or(known, san_namespace.as_deref());
        Side {
            reporter: Reporter::Source,
            peer: workload,
            from_registry,
            peer_principal: match &id {
                Some(i) => self.string(i.as_ref()),
                None => self.unknown_str(),
            },
            own_principal: if peer.is_some() {
                self.string(own.as_ref())
            } else {
                self.unknown_str()
            },
            // Istio's client side does not know what the server enforced.
            security: Security::Unknown,
            san_namespace,
            inbound: None,
        }
    }

    /// The registry's workload, or an unknown one in the namespace of its SPIFFE ID.
    fn known_or(
        &self,
        known: Option<Known<'_>>,
        san_namespace: Option<&str>,
    ) -> (Interned<Workload>, bool) {
        match known {
            Some(k) => (
                self.workload(Workload::from_labels(
                    None,
                    san_namespace.unwrap_or(k.namespace),
                    k.service_account,
                    k.labels,
                )),
                true,
            ),
            None => match san_namespace {
                Some(ns) => {
                    let mut w = Workload::unknown();
                    w.namespace = ns.into();
                    (self.workload(w), false)
                }
                None => (self.unknown_workload(), false),
            },
        }
    }

    /// The peer a metadata-exchange value describes (cached by the value, so a peer's
    /// repeated header is decoded once); its namespace is the SPIFFE ID's when there is one.
    pub fn from_metadata(
        &self,
        value: &[u8],
        san_namespace: Option<&str>,
    ) -> Option<Interned<Workload>> {
        // The cache holds what the value says; the SPIFFE ID's namespace is applied after.
        let claimed = match self.cached_metadata(value) {
            Some(w) => w,
            None => {
                let w = self.workload(super::exchange::decode(value)?);
                self.cache_metadata(value, &w);
                w
            }
        };
        match san_namespace {
            Some(ns) if *claimed.0.namespace != *ns => {
                let mut w = (*claimed.0).clone();
                w.namespace = ns.into();
                Some(self.workload(w))
            }
            _ => Some(claimed),
        }
    }
}

impl Side {
    /// The facts of one request or connection on this side, for `service`; `metadata` is the
    /// peer's metadata-exchange value if it sent one.
    pub fn facts(
        &self,
        istio: &Istio,
        protocol: Protocol,
        service: Interned<Service>,
        metadata: Option<&[u8]>,
    ) -> Facts {
        let peer = match metadata {
            Some(v) if !self.from_registry => istio
                .from_metadata(v, self.san_namespace.as_deref())
                .unwrap_or_else(|| self.peer.clone()),
            _ => self.peer.clone(),
        };
        Facts {
            reporter: self.reporter,
            peer,
            peer_principal: self.peer_principal.clone(),
            own_principal: self.own_principal.clone(),
            service,
            security: self.security,
            protocol,
            inbound: self.inbound.clone(),
            grpc_status: None,
            request_bytes: 0,
            response_bytes: 0,
            opened: None,
        }
    }
}

/// `request_protocol` of an HTTP request: gRPC when its content type says so.
pub fn http_protocol(headers: &http::HeaderMap) -> Protocol {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        Protocol::Grpc
    } else {
        Protocol::Http
    }
}

/// A body size from its `content-length` (0 when streamed without one).
pub fn declared_size(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// `grpc-status` when the response carries it in its headers (a trailers-only answer). Looked
/// up by a typed name: a `&str` is checked and parsed into one on every call.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}
