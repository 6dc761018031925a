//! What trustmesh's control plane serves to Istio's ztunnel: the `istio.workload.Address` and
//! `istio.security.Authorization` resources of ztunnel's delta xDS, built from trustmesh's own
//! policy and registry models the way istiod builds them in ambient mode, so a stock ztunnel
//! pointed at trustmesh enforces the same identities and L4 policies a sidecar would.
//!
//! Pure logic: the control plane (crates/control, crates/xds) owns the transport; this crate
//! only turns models into messages. The message types are generated at build time from
//! trustmesh's own `.proto` files (`proto/`), whose package names, message names and field
//! numbers are ztunnel's wire contract.
//!
//! # API
//! - [`authorization`]`(&Resource, root_namespace) -> Option<Authorization>`: an
//!   AuthorizationPolicy in ztunnel's L4 form (istiod `convertAuthorizationPolicy`);
//!   [`convert_authorization`] also says why a policy was dropped or narrowed, and takes
//!   [`AuthzOptions`].
//! - [`workload_policies`]: the `authorization_policies` list of one workload (istiod
//!   `buildWorkloadPolicies`, AuthorizationPolicy part).
//! - [`workloads`]`(&Registry, &Cluster) -> Vec<Address>` and [`services`]: the registry's
//!   WorkloadEntries, inline ServiceEntry endpoints and ServiceEntry hosts (istiod
//!   `workloadEntryWorkloadBuilder`, `serviceEntryWorkloadBuilder`, `constructServiceEntries`).
//! - [`address_resource_name`] / [`authorization_resource_name`]: xDS resource names, and
//!   [`ADDRESS_TYPE_URL`] / [`AUTHORIZATION_TYPE_URL`].

mod authz;
mod cluster;
mod ip;
mod service;
mod workload;

/// Messages generated from `proto/` (prost), in the protobuf packages ztunnel expects.
pub mod istio {
    /// Package `istio.workload`: workloads and services.
    // Generated code: `Address` holds a `Workload` or a `Service` inline, as prost lays it out.
    #[allow(clippy::large_enum_variant)]
    pub mod workload {
        include!(concat!(env!("OUT_DIR"), "/istio.workload.rs"));
    }
    /// Package `istio.security`: L4 authorization policies.
    pub mod security {
        include!(concat!(env!("OUT_DIR"), "/istio.security.rs"));
    }
}

pub use authz::{
    authorization, authorization_resource_name, convert_authorization, workload_policies,
    AuthzOptions, Converted,
};
pub use cluster::Cluster;
pub use service::services;
pub use workload::workloads;

/// The delta xDS type URL of [`istio::workload::Address`] resources.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// The delta xDS type URL of [`istio::security::Authorization`] resources.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// The xDS resource name of an address, as istiod names it: a workload's uid, or
/// `namespace/hostname` for a service (`AddressInfo.ResourceName`).
pub fn address_resource_name(address: &istio::workload::Address) -> String {
    use istio::workload::address::Type;
    match &address.r#type {
        Some(Type::Workload(w)) => w.uid.clone(),
        Some(Type::Service(s)) => service::key(&s.namespace, &s.hostname),
        None => String::new(),
    }
}
