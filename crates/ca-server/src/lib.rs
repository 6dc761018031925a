//! The CA server: Istio's certificate-signing gRPC API over TLS, caller authentication (bearer
//! JWT or an existing SVID), and the SPIFFE bundle endpoint for federation.
//!
//! Issuance itself lives in `trustmesh_ca`; this crate decides *who* is asking and *what* they
//! may get, and speaks the wire protocols.

pub mod auth;
pub mod bundle;
pub mod bundle_endpoint;
pub mod ca_signer;
pub mod client;
pub mod csr;
pub mod https_get;
pub mod jwt_authority;
pub mod limits;
pub mod server;
pub mod service;
pub mod signer;
pub mod tls;
pub mod ttl;

/// Generated from `proto/istio_ca.proto` (package `istio.v1.auth`).
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("istio.v1.auth");
}

/// Generated from `proto/trustmesh_jwt.proto` (package `trustmesh.v1`).
pub mod pb_jwt {
    #![allow(clippy::all)]
    tonic::include_proto!("trustmesh.v1");
}
