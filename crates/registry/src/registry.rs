//! The loaded registry: an immutable snapshot (built by [`crate::build`], swapped whole on
//! reload like the policy set) holding the services, the workloads, each service port's
//! endpoints and the indexes every per-connection question is answered from. The questions
//! themselves live beside their result types: [`crate::classify`], [`crate::dns`],
//! [`crate::tls`], [`crate::own`].

use std::collections::HashMap;

use trustmesh_identity::{SpiffeId, TrustDomain};
use trustmesh_policy::{H2UpgradePolicy, OutboundMode};

use crate::addr::AddressIndex;
use crate::model::{Endpoint, Service, ServicePort, Workload};
use crate::names::NameIndex;
use crate::options::Options;
use crate::rule_index::RuleIndex;
use crate::rules::DestinationRule;

#[derive(Debug, Default)]
pub struct Registry {
    pub(crate) options: Options,
    pub(crate) trust_domain: Option<TrustDomain>,
    pub(crate) outbound: OutboundMode,
    /// `meshConfig.h2UpgradePolicy`.
    pub(crate) h2_upgrade: H2UpgradePolicy,
    pub(crate) root_namespace: String,
    pub(crate) services: Vec<Service>,
    pub(crate) workloads: Vec<Workload>,
    /// Per service, per port (in `Service::ports` order): the endpoints, as (workload, port).
    pub(crate) endpoints: Vec<Vec<Vec<(u32, u16)>>>,
    /// Per workload: the (service, port index) pairs it is an endpoint of.
    pub(crate) memberships: Vec<Vec<(u32, u16)>>,
    /// Namespace → WorkloadEntry name → workload.
    pub(crate) entries: HashMap<String, HashMap<String, u32>>,
    /// Host → services declaring it.
    pub(crate) by_host: HashMap<String, Vec<u32>>,
    /// SPIFFE ID → the workloads that have it (a sidecar names its peer this way on every
    /// outbound request, so it must not scan every workload of a large mesh).
    pub(crate) by_identity: HashMap<SpiffeId, Vec<u32>>,
    pub(crate) addresses: AddressIndex,
    pub(crate) names: NameIndex,
    pub(crate) rules: RuleIndex,
}

impl Registry {
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The mesh's trust domain; `None` when the mesh config's is not a valid one (then no
    /// workload has an identity, and a problem says why).
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    pub fn outbound_mode(&self) -> OutboundMode {
        self.outbound
    }

    /// Every service (one per ServiceEntry host), in the order they were read.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Every workload: WorkloadEntries, inline endpoints and DNS hosts.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workloads at address `ip` (by the address index, not a scan).
    pub fn workloads_at(&self, ip: &std::net::IpAddr) -> impl Iterator<Item = &Workload> {
        self.addresses
            .workloads(ip)
            .iter()
            .filter_map(|i| self.workloads.get(*i as usize))
    }

    /// The workloads whose identity is `id` (by an index, not a scan), in registry order.
    pub fn workloads_with(&self, id: &SpiffeId) -> impl Iterator<Item = &Workload> {
        self.by_identity
            .get(id)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|i| self.workloads.get(*i as usize))
    }

    /// Every DestinationRule in effect (merged per host, broken ones as stand-ins).
    pub fn destination_rules(&self) -> &[DestinationRule] {
        self.rules.rules()
    }

    /// A service by its host as declared (not a short name), preferring one of `namespace`
    /// when several namespaces declare it.
    pub fn service(&self, host: &str, namespace: &str) -> Option<&Service> {
        let found = self.by_host.get(&crate::host::normalize(host))?;
        let all = found.iter().map(|i| &self.services[*i as usize]);
        all.clone()
            .find(|s| s.namespace == namespace)
            .or_else(|| all.clone().next())
    }

    /// The WorkloadEntry `namespace/name`.
    pub fn workload_entry(&self, namespace: &str, name: &str) -> Option<&Workload> {
        let i = *self.entries.get(namespace)?.get(name)?;
        Some(&self.workloads[i as usize])
    }

    /// The endpoints of a service port, with the port to connect to on each.
    pub fn endpoints<'a>(
        &'a self,
        service: &'a Service,
        port: &ServicePort,
    ) -> impl Iterator<Item = Endpoint<'a>> + 'a {
        let list = service
            .ports
            .iter()
            .position(|p| p.number == port.number)
            .and_then(|i| self.endpoints.get(service.index)?.get(i))
            .map_or(&[][..], Vec::as_slice);
        list.iter().map(move |(w, p)| Endpoint {
            workload: &self.workloads[*w as usize],
            port: *p,
        })
    }

    /// The DestinationRule a client (namespace and labels) gets for a service, if any.
    pub fn destination_rule(
        &self,
        client: &trustmesh_policy::Workload,
        service: &Service,
    ) -> Option<&DestinationRule> {
        self.rules.find(
            &client.namespace,
            &client.labels,
            &service.host,
            &service.namespace,
            &self.root_namespace,
        )
    }
}
