//! The xDS transport: Envoy's Aggregated Discovery Service in its incremental ("delta")
//! variant, as Envoy, istiod and ztunnel speak it, for trustmesh's control plane and sidecars.
//!
//! What a resource *means* is not this crate's business: the server asks a [`server::Views`]
//! what one client should hold and sends the difference; the client hands what arrives to a
//! [`client::Handler`], which applies it or refuses it with a reason. Between them this crate
//! keeps the protocol's promises: type URLs, subscriptions (wildcard and by name), nonces,
//! ACK/NACK with the error detail, per-resource versions so a change resends only what changed,
//! `initial_resource_versions` so a reconnect resends nothing the client already holds, and a
//! client that reconnects with backoff across several servers and keeps what it last accepted.

pub mod client;
mod codec;
pub mod server;
mod state;
mod wire;

pub use wire::AdsServer;

/// The generated code, in the package tree the protos declare (their cross-references are
/// relative paths through it).
#[allow(clippy::all)]
pub mod proto {
    pub mod envoy {
        pub mod service {
            pub mod discovery {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.discovery.v3");
                }
            }
        }
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub mod trustmesh {
        pub mod config {
            pub mod v1 {
                tonic::include_proto!("trustmesh.config.v1");
            }
        }
    }
}

/// Envoy's `envoy.config.core.v3` (the `Node` only).
pub use proto::envoy::config::core::v3 as core;
/// Envoy's `envoy.service.discovery.v3`: the ADS service and its messages.
pub use proto::envoy::service::discovery::v3 as pb;
/// `google.rpc.Status`, a NACK's error detail.
pub use proto::google::rpc;
/// trustmesh's own resource types (`trustmesh.config.v1`).
pub use proto::trustmesh::config::v1 as config;

/// The type URL of a message type in package `pkg`: what goes in `Any.type_url` and in a
/// request's `type_url`.
pub fn type_url(full_name: &str) -> String {
    format!("type.googleapis.com/{full_name}")
}

/// trustmesh's resource types (see `config.proto`).
pub mod types {
    pub const ISTIO_RESOURCE: &str = "type.googleapis.com/trustmesh.config.v1.IstioResource";
    pub const MESH_CONFIG: &str = "type.googleapis.com/trustmesh.config.v1.MeshConfig";
    pub const TRUST_BUNDLE: &str = "type.googleapis.com/trustmesh.config.v1.TrustBundle";
    /// ztunnel's: workloads and services (`istio.workload.Address`).
    pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
    /// ztunnel's: L4 authorization (`istio.security.Authorization`).
    pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
}

/// Packs a message as an `Any` of type `type_url`.
pub fn any<M: prost::Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}
