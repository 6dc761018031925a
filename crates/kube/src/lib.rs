//! The Kubernetes edge of the control plane, as istiod is a cluster citizen: the cluster as a
//! configuration [`source`] (Istio's resources, the mesh ConfigMap, the registry from Services,
//! EndpointSlices and Pods), the CA's token [`review`] (TokenReview), and the
//! `istio-ca-root-cert` ConfigMap in every namespace ([`roots`]). [`translate`] is pure: the
//! objects → documents mapping, tested without a server.

pub mod cacerts;
pub mod client;
pub mod csr;
pub mod events;
pub mod external;
pub mod node;
pub mod review;
pub mod roots;
pub mod source;
pub mod store;
pub mod translate;

/// The client every part of this crate takes, for callers that build one with [`client::connect`].
pub use kube::Client;
