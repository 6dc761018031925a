//! What the DNS proxy asks the mesh: is this name one of ours, and at which addresses?
//!
//! The proxy does not know the service registry; the sidecar hands it a [`MeshNames`] and the
//! registry (built separately) implements it. The question is one name, lowercased and without
//! the trailing dot, exactly as the client's resolver sent it after its own search-list
//! expansion. The implementation decides what counts as the same service: short forms
//! (`reviews`, `reviews.bookinfo`, `reviews.bookinfo.svc`) relative to the workload's
//! namespace, and wildcard hosts (`*.example.com`), as Istio's name table does
//! (`pkg/dns/client/dns.go`, `generateAltHosts` and the wildcard walk in `lookupHost`).
//!
//! A name is either not the mesh's ([`Lookup::NotMesh`], the query goes upstream verbatim) or
//! the mesh's with zero or more addresses per family. A mesh name is never forwarded, also
//! when it has no address of the asked family: the answer is then NOERROR with no record
//! (NODATA), so a v4-only service does not leak its AAAA queries to the cluster's resolver.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The mesh's name table as the DNS proxy sees it. Called on the hot path of every query, from
/// several tasks at once: it should be a lookup in a snapshot, not a computation.
pub trait MeshNames: Send + Sync {
    /// `name` is the query name in lowercase ASCII (IDNs in their `xn--` form) without the
    /// trailing dot, e.g. `reviews.bookinfo.svc.cluster.local`.
    fn lookup(&self, name: &str) -> Lookup;
}

/// What the mesh knows about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not a mesh name: forward the query to the upstream resolvers.
    NotMesh,
    /// A mesh name: answered here, never forwarded, with these addresses (either list may be
    /// empty).
    Mesh {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
}

impl Lookup {
    /// A mesh name with `addrs`, split by family.
    pub fn mesh(addrs: impl IntoIterator<Item = IpAddr>) -> Lookup {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for addr in addrs {
            match addr {
                IpAddr::V4(a) => v4.push(a),
                IpAddr::V6(a) => v6.push(a),
            }
        }
        Lookup::Mesh { v4, v6 }
    }
}

/// A fixed table of exact names: for tests, and for a sidecar that has no registry yet.
#[derive(Debug, Clone, Default)]
pub struct StaticNames {
    names: HashMap<String, Lookup>,
}

impl StaticNames {
    pub fn new() -> StaticNames {
        StaticNames::default()
    }

    /// Adds `name` (any case, trailing dot optional) with `addrs`.
    pub fn with(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> StaticNames {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.insert(key, Lookup::mesh(addrs));
        self
    }
}

impl MeshNames for StaticNames {
    fn lookup(&self, name: &str) -> Lookup {
        self.names.get(name).cloned().unwrap_or(Lookup::NotMesh)
    }
}
