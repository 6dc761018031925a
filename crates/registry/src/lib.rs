//! The service registry for trustmesh: Istio's `networking.istio.io` WorkloadEntry,
//! ServiceEntry and DestinationRule, read from the same files and folders as the security
//! policies, turned into the model a sidecar needs per connection — what is this original
//! destination, which addresses answer this name, which identity must the peer prove, mTLS or
//! not. Pure logic; the only I/O is the [`load`] module. Future callers: the sidecar's
//! transparent capture (classify, TLS), a DNS proxy (names), a control plane (everything).
//!
//! # API
//! - [`Registry::load`]`(paths, &mesh, &options)`, [`Registry::from_sources`],
//!   [`Registry::from_yaml_str`] → `(Registry, Report)`; [`validate`] → [`Report`]. Only
//!   unreadable input is an error. Resources with errors are reported and left out; a
//!   DestinationRule with errors whose host is readable stands in failing closed.
//! - [`Registry::classify`]`(original_dst) -> Destination`: service (VIP, CIDR, any-address
//!   port), workload, or unknown (passthrough under ALLOW_ANY, refused under REGISTRY_ONLY).
//! - [`Registry::lookup_host`]`(name, client_namespace) -> Option<(&Service, Vec<IpAddr>)>`.
//! - [`Registry::endpoints`]`(service, port)`: address, port to dial, weight, labels, network,
//!   SPIFFE identity, sidecar or not.
//! - [`Registry::tls_for`]`(client, service, port, endpoint, policies) -> UpstreamTls`: auto
//!   mTLS and DestinationRule TLS, with what decided it.
//! - [`Registry::identify`]`(SelfRef) -> &Workload`: a sidecar's own identity and policy labels.
//!
//! ```
//! use trustmesh_policy::{MeshConfig, Workload as Client};
//! use trustmesh_registry::{Destination, Options, Registry, UpstreamMode};
//!
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1
//! kind: WorkloadEntry
//! metadata: {name: reviews-vm-1, namespace: bookinfo}
//! spec:
//!   address: 10.0.0.11
//!   labels: {app: reviews, security.istio.io/tlsMode: istio}
//!   serviceAccount: bookinfo-reviews
//! ---
//! apiVersion: networking.istio.io/v1
//! kind: ServiceEntry
//! metadata: {name: reviews, namespace: bookinfo}
//! spec:
//!   hosts: [reviews.bookinfo.svc.cluster.local]
//!   location: MESH_INTERNAL
//!   resolution: STATIC
//!   ports: [{number: 9080, name: http, protocol: HTTP}]
//!   workloadSelector: {labels: {app: reviews}}
//! "#;
//! let (reg, report) =
//!     Registry::from_yaml_str("reviews.yaml", yaml, &MeshConfig::default(), &Options::default());
//! assert!(report.problems.is_empty(), "{:?}", report.problems);
//!
//! // The DNS proxy: a client in `bookinfo` asks for `reviews`; the VIP was auto-allocated.
//! let (service, ips) = reg.lookup_host("reviews", "bookinfo").unwrap();
//! assert!(ips[0].to_string().starts_with("240.240."));
//!
//! // The sidecar: the connection to that VIP is the service; its endpoint gets Istio mTLS.
//! let Destination::Service(hit) = reg.classify((ips[0], 9080).into()) else { panic!() };
//! let endpoint = reg.endpoints(hit.service, hit.port).next().unwrap();
//! let client = Client::new("bookinfo", &[("app", "productpage")]);
//! let tls = reg.tls_for(&client, service, hit.port, Some(endpoint), None);
//! let UpstreamMode::IstioMutual { peer_identities, .. } = tls.mode else { panic!() };
//! assert_eq!(peer_identities, ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"]);
//! ```
//!
//! # What is left out, and said so where it matters
//! - `exportTo` is read and not enforced (a notice when it restricts anything).
//! - DestinationRule `connectionPool` (but for the HTTP version it chooses, see
//!   [`upstream_http`]), `outlierDetection`, `tunnel`, `proxyProtocol`,
//!   `retryBudget`, load balancer settings other than `simple`, and subsets' own traffic
//!   policies are accepted and ignored (a notice lists them per rule). `credentialName` is a
//!   problem: it names a Kubernetes Secret.
//! - VirtualService, Gateway, Sidecar and the other kinds are skipped quietly; so are the
//!   security kinds, which the policy crate reads from the same files.
//! - Kubernetes Services, Pods and Endpoints are not read: a ServiceEntry host of the form
//!   `name.namespace.svc.<domain>` stands for a Kubernetes service.

mod addr;
pub mod alloc;
mod build;
pub mod classify;
pub mod crd;
pub mod dns;
mod entries;
pub mod host;
pub mod load;
pub mod model;
mod names;
pub mod options;
pub mod own;
pub mod parse;
mod registry;
pub mod report;
mod rule_index;
pub mod rules;
mod services;
pub mod tls;
pub mod upstream_http;

pub use build::validate;
pub use classify::{Destination, ServiceHit, Unknown, Via, WorkloadHit};
pub use crd::{H2Upgrade, SimpleLb};
pub use model::{
    Endpoint, EndpointAddress, MeshLocation, Origin, Protocol, Resolution, Service, ServicePort,
    TlsMode, Workload, DEFAULT_SERVICE_ACCOUNT, NODE_ANNOTATION, POD_ANNOTATION, TLS_MODE_LABEL,
    TUNNEL_HTTP, TUNNEL_LABEL,
};
pub use options::{AutoAllocate, Options};
pub use own::{IdentifyError, SelfRef};
pub use registry::Registry;
pub use report::Report;
pub use rules::{ClientTls, DestinationRule, HttpPool, PortSettings, TlsSetting};
pub use tls::{DecidedBy, Originate, UpstreamMode, UpstreamTls};
pub use upstream_http::UpstreamHttp;
