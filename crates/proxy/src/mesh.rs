//! The service registry as this sidecar holds it: built from the same Istio YAML folder as the
//! policies (`policyDir`: WorkloadEntry, ServiceEntry, DestinationRule beside the security
//! kinds, as an Istio user keeps them), swapped whole with the rest of the snapshot on reload.
//!
//! It also holds what transparent mode decides per connection and request that is not the
//! registry's to know: which endpoint is next (by the DestinationRule's `loadBalancer.simple`,
//! LEAST_REQUEST when none is set, as in Istio, see [`order`]); each service port's endpoints as
//! targets, worked out on first use rather than once per request; and the client TLS configs
//! for the identities an endpoint must present, built once per identity set rather than once
//! per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use trustmesh_identity::{ChainVerifier, SpiffeId, TrustConfig};
use trustmesh_policy::load::SourceText;
use trustmesh_policy::{Location, MeshConfig, PolicySet};
use trustmesh_registry::{
    AutoAllocate, Endpoint, EndpointAddress, Options, Originate, Protocol, Registry, Resolution,
    Service, ServicePort, SimpleLb, UpstreamHttp, UpstreamMode, WorkloadHit,
};

use crate::config::ProxyConfig;
use crate::fastmap::{self, FastMap};
use crate::telemetry::{Interned, Istio, Service as LabelService};
use crate::tls::{ExpectedPeer, OwnCert};

/// The identities a server must present, and what the connection carries.
type ClientKey = (Vec<String>, Carry);

/// A built TLS origination (config and SNI), or why it could not be built.
type Originated = Result<(Arc<rustls::ClientConfig>, Option<String>), String>;

pub struct Mesh {
    pub registry: Registry,
    /// This sidecar's workload as DestinationRules select their clients.
    pub client: trustmesh_policy::Workload,
    /// Round-robin position per service (by the registry's service index) and port.
    next: FastMap<(usize, u16), AtomicUsize>,
    /// Requests in flight per endpoint of each service port (the registry's endpoint order).
    loads: FastMap<(usize, u16), Arc<Vec<AtomicUsize>>>,
    /// The protocols of this workload's own ports, from the services it is an endpoint of
    /// (the capture's inbound port carries every port and needs to know which speak HTTP).
    own_ports: HashMap<u16, Protocol>,
    /// This workload's own IP addresses (its WorkloadEntries): where an HBONE CONNECT may go.
    own_addresses: Vec<std::net::IpAddr>,
    /// TLS origination configs (files read once per snapshot), or why one cannot be built.
    originations: Mutex<HashMap<String, Originated>>,
    /// The targets of each service port's endpoints, by the registry's service index, the port
    /// and the policy set they were worked out under ([`Mesh::prepared`]).
    prepared: Mutex<FastMap<(usize, u16, usize), Arc<Prepared>>>,
    /// Client TLS configs by the identities the server must present and whether HTTP/2 is
    /// offered.
    client_tls: Mutex<HashMap<ClientKey, Arc<rustls::ClientConfig>>>,
    chains: Arc<ChainVerifier>,
    own: OwnCert,
    /// Unique per built view: connections to peers are pooled under it (`meshconn`), so a
    /// reload (trust bundles, our SVID, the registry's identities) is used by every new
    /// request at once, as Envoy drains a cluster's pools when its TLS context changes.
    pub epoch: u64,
}

/// A service port's endpoints as targets, in the registry's order (`None`: an endpoint not
/// reached by address), and the load balancing that picks among them.
struct Prepared {
    targets: Vec<Option<Arc<Target>>>,
    lb: SimpleLb,
}

/// The next [`Mesh::epoch`].
static EPOCHS: AtomicU64 = AtomicU64::new(1);

impl Mesh {
    /// Builds the registry from `sources`. Problems are logged (each resource with a problem is
    /// left out, a DestinationRule that cannot be read refuses what it governs); returns the
    /// objects it read, so the policy loader does not call them unknown.
    pub fn build(
        cfg: &ProxyConfig,
        mesh: &MeshConfig,
        sources: &[SourceText],
        chains: Arc<ChainVerifier>,
        own: &OwnCert,
    ) -> anyhow::Result<(Mesh, Vec<Location>)> {
        let (registry, report) = Registry::from_sources(sources, mesh, &options(cfg));
        for p in &report.problems {
            tracing::warn!("registry: {p}");
        }
        let mut next = fastmap::new();
        let mut loads = fastmap::new();
        for s in registry.services() {
            for p in &s.ports {
                next.insert((s.index(), p.number), AtomicUsize::new(0));
                let n = registry.endpoints(s, p).count();
                loads.insert(
                    (s.index(), p.number),
                    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect()),
                );
            }
        }
        let client = trustmesh_policy::Workload {
            namespace: cfg.workload.namespace.clone(),
            labels: cfg.workload.labels.clone(),
        };
        let own_ports = own_ports(&registry, &client);
        let own_addresses = registry
            .workloads()
            .iter()
            .filter(|w| is_mine(w, &client))
            .filter_map(|w| match w.address {
                EndpointAddress::Ip(ip) => Some(ip),
                _ => None,
            })
            .collect();
        Ok((
            Mesh {
                registry,
                client,
                next,
                loads,
                own_ports,
                own_addresses,
                originations: Mutex::new(HashMap::new()),
                prepared: Mutex::new(fastmap::new()),
                client_tls: Mutex::new(HashMap::new()),
                chains,
                own: own.clone(),
                epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
            },
            report.handled,
        ))
    }

    /// This workload's ports the registry knows (the services it is an endpoint of), sorted.
    pub fn own_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.own_ports.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// This workload's addresses in the registry.
    pub fn own_addresses(&self) -> &[std::net::IpAddr] {
        &self.own_addresses
    }

    /// What the registry says port `port` of this workload speaks, if it says.
    pub fn own_port_protocol(&self, port: u16) -> Option<Protocol> {
        self.own_ports.get(&port).copied()
    }

    /// The order to try a service port's `n` endpoints in (indexes in the registry's order):
    /// the one the load balancer picks first (see [`order`]), then the rest in turn.
    fn turn_order(
        &self,
        service: &Service,
        port: &ServicePort,
        n: usize,
        lb: SimpleLb,
    ) -> Vec<usize> {
        if n < 2 {
            return (0..n).collect();
        }
        let key = (service.index(), port.number);
        let turn = self
            .next
            .get(&key)
            .map_or(0, |t| t.fetch_add(1, Ordering::Relaxed));
        let in_flight: Vec<usize> = match self.loads.get(&key) {
            Some(l) => l.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
            None => vec![0; n],
        };
        order(n, turn, lb, &in_flight, rand::random())
    }

    /// The targets of every endpoint of a service port, worked out on first use and kept for
    /// as long as this view: what a target is (its TLS settings from the DestinationRule, the
    /// PeerAuthentication and the endpoint's sidecar, its cluster name) depends on nothing a
    /// request brings, and working it out allocated about 17 times per request.
    fn prepared(
        &self,
        service: &Service,
        port: &ServicePort,
        policies: &PolicySet,
    ) -> Arc<Prepared> {
        // The policy set is part of the key: every caller passes the set of the snapshot this
        // view belongs to, and a view must never answer with another set's decisions.
        let key = (
            service.index(),
            port.number,
            policies as *const PolicySet as usize,
        );
        let mut cache = self
            .prepared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let cluster: Arc<str> = cluster_name(service, port).into();
        let loads = self.loads.get(&(service.index(), port.number));
        let targets = self
            .registry
            .endpoints(service, port)
            .enumerate()
            .map(|(i, ep)| {
                let addr = match ep.address() {
                    EndpointAddress::Ip(ip) => TargetAddr::Socket(SocketAddr::new(*ip, ep.port)),
                    EndpointAddress::Hostname(h) => TargetAddr::Host(h.clone(), ep.port),
                    // Unix sockets are the workload's own; gateways are not modelled.
                    EndpointAddress::Unix(_) | EndpointAddress::Network => return None,
                };
                let tls = target_tls(
                    self.registry
                        .tls_for(&self.client, service, port, Some(ep), Some(policies))
                        .mode,
                );
                Some(Arc::new(Target {
                    hbone: matches!(addr, TargetAddr::Socket(_))
                        && tunnels(Some(ep.workload), &tls),
                    service: Default::default(),
                    addr_text: addr.to_string().into(),
                    addr,
                    tls,
                    load: loads.map(|l| Load(l.clone(), i)),
                    cluster: cluster.clone(),
                }))
            })
            .collect();
        let lb = self
            .registry
            .load_balancer(&self.client, service, port)
            .unwrap_or(SimpleLb::Unspecified);
        let p = Arc::new(Prepared { targets, lb });
        cache.insert(key, p.clone());
        p
    }

    /// The client config that presents our SVID and accepts a server only if it presents one
    /// of `identities` (any identity of a trusted domain when the list is empty, as Istio does
    /// when no account is known), offering in ALPN what the connection carries.
    pub fn client_tls(
        &self,
        identities: &[String],
        carry: Carry,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let key = (identities.to_vec(), carry);
        let mut cache = self
            .client_tls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let expected = expected_peer(identities, self.chains.trust())?;
        let config =
            crate::tls::client_config_offering(&self.chains, &self.own, expected, carry.alpn())
                .map_err(|e| anyhow!("building the TLS client config: {e}"))?;
        cache.insert(key, config.clone());
        Ok(config)
    }
}

/// What a mesh connection carries, which its ALPN tells the peer's inbound port (one port
/// carries every protocol there): HTTP/2 or HTTP/1.1 for requests between sidecars (as the
/// port's settings choose, `route::send`), HTTP/1.1 for an upgrade (HTTP/2 has no Upgrade),
/// nothing for a TCP relay — the peer then takes the port's
/// declared protocol, as Istio's sidecars send `istio-peer-exchange` and no HTTP name for TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carry {
    Tcp,
    Http2,
    Http1,
}

impl Carry {
    fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Carry::Tcp => &[],
            Carry::Http2 => &[b"h2"],
            Carry::Http1 => &[b"http/1.1"],
        }
    }
}

fn expected_peer(identities: &[String], trust: &TrustConfig) -> anyhow::Result<ExpectedPeer> {
    let ids = identities
        .iter()
        .map(|i| {
            SpiffeId::parse(i).map_err(|e| {
                anyhow!("{i} is not a SPIFFE ID ({e}); only SPIFFE IDs are checked in mesh mTLS")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(match ids.len() {
        0 => ExpectedPeer::TrustDomain(trust.local.clone()),
        1 => ExpectedPeer::Exact(ids.into_iter().next().expect("one")),
        _ => ExpectedPeer::AnyOf(ids),
    })
}

/// The ports of the workloads that are this sidecar's (same namespace, carrying all of its
/// labels) in the services they serve, with the protocol each service port declares.
fn own_ports(registry: &Registry, me: &trustmesh_policy::Workload) -> HashMap<u16, Protocol> {
    let mut out = HashMap::new();
    for service in registry.services() {
        for port in &service.ports {
            for ep in registry.endpoints(service, port) {
                if is_mine(ep.workload, me) && port.protocol != Protocol::Unspecified {
                    out.entry(ep.port).or_insert(port.protocol);
                }
            }
        }
    }
    out
}

/// Whether a workload of the registry is this sidecar's: same namespace, all of its labels.
fn is_mine(w: &trustmesh_registry::Workload, me: &trustmesh_policy::Workload) -> bool {
    w.namespace == me.namespace && me.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

/// Registry options from `capture.vipRange` (Istio's DNS auto-allocation range by default).
fn options(cfg: &ProxyConfig) -> Options {
    let mut options = Options::default();
    if let Some(range) = cfg.capture.as_ref().and_then(|c| c.vip_range) {
        options.auto_allocate = Some(AutoAllocate {
            v4: range,
            v6: None,
        });
    }
    options
}

/// One endpoint's count of requests in flight; [`Load::begin`] holds one until dropped.
#[derive(Debug, Clone)]
pub struct Load(Arc<Vec<AtomicUsize>>, usize);

impl Load {
    pub fn begin(&self) -> LoadGuard {
        self.0[self.1].fetch_add(1, Ordering::Relaxed);
        LoadGuard(self.clone())
    }
}

pub struct LoadGuard(Load);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0 .0[self.0 .1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The order to try `n` endpoints in: the load balancer's pick, then the others in turn.
///
/// `LEAST_REQUEST` (and no setting: Istio's default) compares the two endpoints whose turn it
/// is and takes the one with fewer requests in flight — Envoy's power of two choices, with the
/// pair taken in turn instead of at random so that idle endpoints are used alike;
/// `ROUND_ROBIN` takes the one whose turn it is; `RANDOM` any (`random`).
pub fn order(
    n: usize,
    turn: usize,
    lb: SimpleLb,
    in_flight: &[usize],
    random: usize,
) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let (a, b) = (turn % n, (turn + 1) % n);
    let first = match lb {
        SimpleLb::RoundRobin | SimpleLb::Passthrough => a,
        SimpleLb::Random => random % n,
        SimpleLb::LeastRequest | SimpleLb::Unspecified => {
            let load = |i: usize| in_flight.get(i).copied().unwrap_or(0);
            if load(b) < load(a) {
                b
            } else {
                a
            }
        }
    };
    (0..n).map(|k| (first + k) % n).collect()
}

/// Where one captured connection or request may go, decided from the registry: owned, so it
/// outlives the snapshot borrow across the awaits of connecting.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: TargetAddr,
    /// `addr` as the access log records it, written once with the target (a prepared target
    /// serves every request of its mesh view).
    pub addr_text: Arc<str>,
    pub tls: TargetTls,
    /// The endpoint's requests in flight (for `LEAST_REQUEST`); none for an original
    /// destination.
    pub load: Option<Load>,
    /// Istio's name of the destination (`outbound|<port>||<host>`, `PassthroughCluster`).
    pub cluster: Arc<str>,
    /// The endpoint terminates HBONE (its `networking.istio.io/tunnel` label says `http`) and
    /// is reached with mesh mTLS: the connection goes through a CONNECT to its port 15008
    /// ([`crate::tunnel`]) instead of to the port itself.
    pub hbone: bool,
    /// The metric labels' destination service of `cluster` ([`Target::service`]).
    pub service: std::sync::OnceLock<Interned<LabelService>>,
}

impl Target {
    /// Istio's `destination_service` labels of this target's cluster: looked up in `istio`'s
    /// tables the first time a request needs them and kept with the target, which serves
    /// every request of its mesh view (the lookup hashed the cluster's host twice under a
    /// lock on every request).
    pub fn service(&self, istio: &Istio) -> Interned<LabelService> {
        self.service
            .get_or_init(|| istio.cluster_service(&self.cluster))
            .clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    Socket(SocketAddr),
    /// A DNS-resolution endpoint: resolved when connecting.
    Host(String, u16),
}

impl TargetAddr {
    /// The address to connect to: a DNS-resolution endpoint's first address from the system
    /// resolver (the sidecar's own lookups are not captured).
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        match self {
            TargetAddr::Socket(a) => Ok(*a),
            TargetAddr::Host(h, p) => tokio::net::lookup_host((h.as_str(), *p))
                .await
                .map_err(|e| format!("resolving endpoint {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolving endpoint {h}: no address")),
        }
    }
}

impl std::fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetAddr::Socket(a) => write!(f, "{a}"),
            TargetAddr::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetTls {
    Plaintext,
    /// Istio mTLS; the server must present one of these identities (any of the local trust
    /// domain when empty).
    Mesh(Vec<String>),
    /// TLS the sidecar originates (DestinationRule SIMPLE, or MUTUAL when `mutual`).
    Originate {
        settings: Originate,
        mutual: bool,
    },
    /// Not to be connected, and why (a broken DestinationRule).
    Refuse(String),
}

/// Istio's cluster name of a service port.
pub fn cluster_name(service: &Service, port: &ServicePort) -> String {
    format!("outbound|{}||{}", port.number, service.host)
}

/// What Istio calls a connection to an original destination it does not know.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// ... and one it refuses under `REGISTRY_ONLY`.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

impl Mesh {
    /// The endpoints of a service port as targets, the one whose turn it is first: as many as a
    /// connection or request is tried on ([`crate::upstream::MAX_ATTEMPTS`]), shared with every
    /// other request of this view ([`Mesh::prepared`]). `policies` is the set of the snapshot
    /// this view belongs to. A service that keeps the original destination (resolution NONE)
    /// goes there.
    pub fn service_targets(
        &self,
        service: &Service,
        port: &ServicePort,
        original: Option<SocketAddr>,
        policies: &PolicySet,
    ) -> Vec<Arc<Target>> {
        if service.resolution == Resolution::None {
            let Some(orig) = original else {
                return Vec::new();
            };
            let addr = SocketAddr::new(orig.ip(), port.target_port.unwrap_or(orig.port()));
            let known = self.registry.workloads_at(&orig.ip()).next();
            let endpoint = known.map(|workload| Endpoint {
                workload,
                port: addr.port(),
            });
            let tls = target_tls(
                self.registry
                    .tls_for(&self.client, service, port, endpoint, Some(policies))
                    .mode,
            );
            return vec![Arc::new(Target {
                addr: TargetAddr::Socket(addr),
                addr_text: addr.to_string().into(),
                hbone: tunnels(known, &tls),
                service: Default::default(),
                tls,
                load: None,
                cluster: cluster_name(service, port).into(),
            })];
        }
        let prepared = self.prepared(service, port, policies);
        self.turn_order(service, port, prepared.targets.len(), prepared.lb)
            .into_iter()
            .filter_map(|i| prepared.targets[i].clone())
            .take(crate::upstream::MAX_ATTEMPTS)
            .collect()
    }

    /// The HTTP version this sidecar sends requests for a service port in (the registry's
    /// decision for this workload as a DestinationRule client).
    pub fn upstream_http(&self, service: &Service, port: &ServicePort) -> UpstreamHttp {
        self.registry.upstream_http(&self.client, service, port)
    }

    /// A connection straight to a known workload's address (pod to pod): mTLS with its identity
    /// when it has a sidecar, plaintext when not; a service it serves on that port decides as
    /// for the service.
    pub fn workload_target(
        &self,
        hit: &WorkloadHit<'_>,
        orig: SocketAddr,
        policies: &PolicySet,
    ) -> Target {
        let endpoint = Endpoint {
            workload: hit.workload,
            port: orig.port(),
        };
        if let Some((service, port)) = hit.serves.first() {
            let tls = target_tls(
                self.registry
                    .tls_for(&self.client, service, port, Some(endpoint), Some(policies))
                    .mode,
            );
            return Target {
                addr: TargetAddr::Socket(orig),
                addr_text: orig.to_string().into(),
                hbone: tunnels(Some(hit.workload), &tls),
                service: Default::default(),
                tls,
                load: None,
                cluster: cluster_name(service, port).into(),
            };
        }
        let tls = match (&hit.workload.identity, hit.workload.has_sidecar()) {
            (Some(id), true) => TargetTls::Mesh(vec![id.to_string()]),
            _ => TargetTls::Plaintext,
        };
        Target {
            addr: TargetAddr::Socket(orig),
            addr_text: orig.to_string().into(),
            hbone: tunnels(Some(hit.workload), &tls),
            service: Default::default(),
            tls,
            load: None,
            cluster: PASSTHROUGH_CLUSTER.into(),
        }
    }

    /// How to secure a connection to `target` carrying `carry`, or why it must not be made.
    pub fn security(
        &self,
        tls: &TargetTls,
        carry: Carry,
    ) -> Result<crate::upstream::Security, String> {
        match tls {
            TargetTls::Plaintext => Ok(crate::upstream::Security::Plaintext),
            TargetTls::Mesh(ids) => self
                .client_tls(ids, carry)
                .map(|c| crate::upstream::Security::Mtls(c, self.chains.clone()))
                .map_err(|e| e.to_string()),
            TargetTls::Originate { settings, mutual } => {
                let key = format!("{mutual} {settings:?}");
                let mut cache = self
                    .originations
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let built = match cache.get(&key) {
                    Some(b) => b.clone(),
                    None => {
                        let b = crate::originate::build(settings, *mutual)
                            .map(|o| (o.config, o.sni))
                            .map_err(|e| format!("DestinationRule TLS origination: {e}"));
                        cache.insert(key, b.clone());
                        b
                    }
                };
                built.map(|(config, sni)| crate::upstream::Security::Tls { config, sni })
            }
            TargetTls::Refuse(why) => Err(why.clone()),
        }
    }
}

/// Whether a connection to `workload` secured by `tls` goes through HBONE: the workload
/// terminates it and the connection is mesh mTLS (a DestinationRule that disables TLS or
/// originates its own keeps the direct path, as the tunnel is Istio mTLS by definition).
fn tunnels(workload: Option<&trustmesh_registry::Workload>, tls: &TargetTls) -> bool {
    matches!(tls, TargetTls::Mesh(_)) && workload.is_some_and(|w| w.speaks_hbone())
}

fn target_tls(mode: UpstreamMode) -> TargetTls {
    match mode {
        UpstreamMode::Plaintext => TargetTls::Plaintext,
        UpstreamMode::IstioMutual {
            peer_identities, ..
        } => TargetTls::Mesh(peer_identities),
        UpstreamMode::Simple(settings) => TargetTls::Originate {
            settings,
            mutual: false,
        },
        UpstreamMode::Mutual(settings) => TargetTls::Originate {
            settings,
            mutual: true,
        },
        UpstreamMode::Refuse { reason } => TargetTls::Refuse(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_looks_its_service_labels_up_once() {
        let istio = Istio::default();
        let target = Target {
            addr: TargetAddr::Socket("198.18.9.1:8080".parse().unwrap()),
            addr_text: "198.18.9.1:8080".into(),
            tls: TargetTls::Plaintext,
            load: None,
            cluster: "outbound|8080||reviews.default.svc.cluster.local".into(),
            hbone: false,
            service: Default::default(),
        };
        let first = target.service(&istio);
        assert_eq!(&*first.0.host, "reviews.default.svc.cluster.local");
        assert!(Arc::ptr_eq(
            &first.0,
            &istio.cluster_service(&target.cluster).0
        ));
        // Kept with the target: the same labels, not a second lookup's.
        let again = target.service(&Istio::default());
        assert!(Arc::ptr_eq(&first.0, &again.0));
    }

    #[test]
    fn round_robin_takes_turns_and_keeps_the_rest_for_retries() {
        let idle = [0, 0, 0];
        assert_eq!(order(3, 0, SimpleLb::RoundRobin, &idle, 0), [0, 1, 2]);
        assert_eq!(order(3, 4, SimpleLb::RoundRobin, &idle, 0), [1, 2, 0]);
        assert!(order(0, 7, SimpleLb::RoundRobin, &[], 0).is_empty());
    }

    #[test]
    fn least_request_prefers_the_less_busy_of_the_pair_whose_turn_it_is() {
        // Idle endpoints are taken in turn, so sequential requests spread alike.
        let firsts: Vec<usize> = (0..4)
            .map(|t| order(2, t, SimpleLb::LeastRequest, &[0, 0], 0)[0])
            .collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
        // Endpoint 0 is busy: the pair (0, 1) gives 1, also on 0's turn.
        assert_eq!(
            order(3, 0, SimpleLb::LeastRequest, &[5, 1, 0], 0),
            [1, 2, 0]
        );
        // Istio's default (no loadBalancer set) is LEAST_REQUEST.
        assert_eq!(order(3, 0, SimpleLb::Unspecified, &[5, 1, 0], 0)[0], 1);
        // The pair whose turn it is, not the global minimum (power of two choices).
        assert_eq!(order(3, 1, SimpleLb::LeastRequest, &[0, 4, 3], 0)[0], 2);
    }

    /// Two endpoints with sidecars behind one ServiceEntry; a PeerAuthentication that turns
    /// mTLS off for the service's namespace, in a policy set of its own.
    const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 198.18.9.1, serviceAccount: reviews, labels: {security.istio.io/tlsMode: istio}}
  - {address: 198.18.9.2, serviceAccount: reviews, labels: {security.istio.io/tlsMode: istio}}
"#;
    const DISABLE: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: off, namespace: prod}
spec: {mtls: {mode: DISABLE}}
"#;

    fn view(sources: &[SourceText]) -> Mesh {
        let cfg = r#"
workload: { namespace: prod, serviceAccount: frontend }
certs: { key: key.pem, certChain: chain.pem }
trustBundles: [ "root.pem" ]
mesh: { trustDomain: cluster.local }
outbound: [ { port: 15001, peer: "127.0.0.1:16006", peerTrustDomain: cluster.local } ]
"#;
        let (cfg, _) = ProxyConfig::parse(
            cfg,
            std::path::Path::new("p.yaml"),
            std::path::Path::new("."),
        )
        .unwrap();
        let domain = trustmesh_identity::TrustDomain::parse("cluster.local").unwrap();
        let trust = TrustConfig::new(domain, trustmesh_identity::TrustBundleSet::new());
        let chains = Arc::new(ChainVerifier::new(Arc::new(trust)));
        let own = OwnCert {
            chain: Vec::new(),
            key: rustls_pki_types::PrivatePkcs8KeyDer::from(Vec::new()).into(),
        };
        Mesh::build(&cfg, &MeshConfig::default(), sources, chains, &own)
            .unwrap()
            .0
    }

    fn source(text: &str) -> Vec<SourceText> {
        vec![SourceText {
            file: "mesh.yaml".into(),
            text: text.into(),
        }]
    }

    fn addr(t: &Target) -> String {
        match &t.addr {
            TargetAddr::Socket(a) => a.to_string(),
            other => panic!("not a socket address: {other:?}"),
        }
    }

    #[test]
    fn service_targets_are_worked_out_once_per_policy_set_and_still_take_turns() {
        let view = view(&source(REGISTRY));
        let svc = &view.registry.services()[0];
        let port = svc.port(9080).unwrap();
        let (strict, _) = PolicySet::from_sources(&[], &MeshConfig::default()).unwrap();
        let (off, _) = PolicySet::from_sources(&source(DISABLE), &MeshConfig::default()).unwrap();

        // The endpoints still take turns, each request getting the other one as its retry.
        let first = view.service_targets(svc, port, None, &strict);
        let second = view.service_targets(svc, port, None, &strict);
        let firsts = [addr(&first[0]), addr(&second[0])];
        assert_eq!(first.len(), 2);
        assert_ne!(firsts[0], firsts[1], "turns: {firsts:?}");
        assert_eq!(addr(&first[1]), firsts[1]);
        // Worked out once: the second request got the very targets of the first.
        assert!(Arc::ptr_eq(&first[0], &second[1]));
        assert!(matches!(&first[0].tls, TargetTls::Mesh(ids)
            if ids == &["spiffe://cluster.local/ns/prod/sa/reviews".to_string()]));
        assert_eq!(
            &*first[0].cluster,
            "outbound|9080||reviews.prod.svc.cluster.local"
        );
        assert!(first[0].load.is_some());

        // Another policy set is never answered from the first one's work.
        let plain = view.service_targets(svc, port, None, &off);
        assert!(plain.iter().all(|t| matches!(t.tls, TargetTls::Plaintext)));
        let again = view.service_targets(svc, port, None, &strict);
        assert!(again.iter().all(|t| matches!(t.tls, TargetTls::Mesh(_))));
    }

    #[test]
    fn random_starts_anywhere_and_load_counts_follow_guards() {
        assert_eq!(order(4, 0, SimpleLb::Random, &[0; 4], 6), [2, 3, 0, 1]);
        let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
        let load = Load(counts.clone(), 1);
        let (a, b) = (load.begin(), load.begin());
        assert_eq!(counts[1].load(Ordering::Relaxed), 2);
        drop(a);
        drop(b);
        assert_eq!(counts[1].load(Ordering::Relaxed), 0);
    }
}
