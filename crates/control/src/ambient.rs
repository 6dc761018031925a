//! ztunnel's resource types from the same world: every workload and service of the registry as
//! `istio.workload.Address`, every AuthorizationPolicy in its L4 form as
//! `istio.security.Authorization` (the translations are `trustmesh_ambient`'s, istiod's rules).
//!
//! They are mesh-wide by nature — a node proxy serves every workload on its node, so it needs
//! every policy — and are built once per world for every ztunnel to share. Who may read them is
//! decided at admission (`views`), not here.

use std::sync::Arc;

use trustmesh_ambient::{AuthzOptions, Cluster};
use trustmesh_policy::document::{parse_text, Parsed, Spec};
use trustmesh_policy::{MeshConfig, SourceText};
use trustmesh_registry::{Options, Registry};
use trustmesh_xds::server::ResourceMap;

use crate::version::versioned;

/// istiod's cluster id when `CLUSTER_ID` is unset, and ztunnel's default: the first segment of
/// every workload uid.
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// The Address and Authorization resources of one world.
pub struct Ambient {
    pub addresses: Arc<ResourceMap>,
    pub authorizations: Arc<ResourceMap>,
    pub problems: Vec<String>,
}

pub fn build(
    sources: &[SourceText],
    mesh: &MeshConfig,
    options: &Options,
    cluster_id: &str,
) -> Ambient {
    let mut problems = Vec::new();
    let mut parsed = Parsed::default();
    for s in sources {
        parse_text(&s.file, &s.text, &mut parsed);
    }
    let policies: Vec<_> = parsed
        .resources
        .into_iter()
        .filter(|r| matches!(r.spec, Spec::Authorization(_)))
        .collect();
    let (registry, report) = Registry::from_sources(sources, mesh, options);
    for p in report.problems {
        problems.push(format!("registry: {p}"));
    }
    let cluster = Cluster {
        id: cluster_id,
        network: "",
        root_namespace: &mesh.root_namespace,
        policies: &policies,
        authz: AuthzOptions::default(),
    };
    let mut addresses = ResourceMap::new();
    for a in trustmesh_ambient::workloads(&registry, &cluster)
        .into_iter()
        .chain(trustmesh_ambient::services(&registry, &cluster))
    {
        let name = trustmesh_ambient::address_resource_name(&a);
        addresses.insert(name, versioned(trustmesh_ambient::ADDRESS_TYPE_URL, &a));
    }
    let mut authorizations = ResourceMap::new();
    for p in &policies {
        if let Some(a) = trustmesh_ambient::authorization(p, &mesh.root_namespace) {
            let name = trustmesh_ambient::authorization_resource_name(&a);
            authorizations.insert(
                name,
                versioned(trustmesh_ambient::AUTHORIZATION_TYPE_URL, &a),
            );
        }
    }
    Ambient {
        addresses: Arc::new(addresses),
        authorizations: Arc::new(authorizations),
        problems,
    }
}
