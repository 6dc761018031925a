//! Resource versions: a digest of what is served, so replicas reading the same source give the
//! same versions and a resource's version moves only when its bytes do. A leaf: the world and
//! ztunnel's resources both version through it.

use std::sync::Arc;

use trustmesh_xds::server::Versioned;

/// A short, stable digest of `bytes` (SHA-256, first 8 bytes in hex).
pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn versioned<M: prost::Message>(type_url: &str, m: &M) -> Arc<Versioned> {
    let body = trustmesh_xds::any(type_url, m);
    Arc::new(Versioned {
        version: digest(&body.value),
        body,
    })
}
