//! The DNS proxy's view of the mesh: names answered from the registry of the snapshot in force
//! at each query, short forms resolved relative to this workload's namespace (as Istio's DNS
//! proxy answers `reviews` to a client in `bookinfo`).

use std::sync::Arc;

use trustmesh_dns::{Lookup, MeshNames};

use crate::state::Shared;

pub struct RegistryNames(pub Arc<Shared>);

impl MeshNames for RegistryNames {
    fn lookup(&self, name: &str) -> Lookup {
        let snap = self.0.current();
        let namespace = &snap.config.workload.namespace;
        match snap.mesh_view.registry.lookup_host(name, namespace) {
            Some((_, addrs)) => Lookup::mesh(addrs),
            None => Lookup::NotMesh,
        }
    }
}
