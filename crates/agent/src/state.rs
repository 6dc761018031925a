//! What the agent currently serves, published through a watch channel: the file writer and
//! every Workload API stream observe the same snapshots, so a rotation reaches all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use trustmesh_identity::TrustDomain;

use crate::svid::Svid;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub svid: Option<Arc<Svid>>,
    /// Roots of federated trust domains, by domain (the local roots travel with the SVID).
    pub federated: BTreeMap<TrustDomain, Vec<CertificateDer<'static>>>,
    /// The local trust domain's JWT bundle (JWK Set JSON), once fetched from the CA.
    pub local_jwt_bundle: Option<Vec<u8>>,
    /// JWT authorities (JWKs) of federated trust domains.
    pub federated_jwt: BTreeMap<TrustDomain, Vec<serde_json::Value>>,
}

pub type StateTx = watch::Sender<Snapshot>;
pub type StateRx = watch::Receiver<Snapshot>;

pub fn channel() -> (StateTx, StateRx) {
    watch::channel(Snapshot::default())
}
