//! What the DNS proxy asks: which addresses answer a name (A and AAAA records together; the
//! caller picks by family). Names are found as [`crate::names`] describes; the addresses of a
//! service are, as in Istio's name table (`pkg/dns/server/name_table.go`): its explicit single
//! addresses, else its auto-allocated VIPs; for a NONE service without addresses the IP
//! addresses of its endpoints on its first port (a headless service). CIDRs are never answers.
//! A service with nothing to answer is not found, so the proxy asks upstream.

use std::net::IpAddr;

use crate::model::{EndpointAddress, Resolution, Service};
use crate::registry::Registry;

impl Registry {
    /// The service a client in `client_namespace` means by `name`, and its addresses. When
    /// several namespaces declare the name, the client's own namespace wins, then the first
    /// declared.
    pub fn lookup_host(
        &self,
        name: &str,
        client_namespace: &str,
    ) -> Option<(&Service, Vec<IpAddr>)> {
        let found = self.names.lookup(name, client_namespace)?;
        let pick = found
            .iter()
            .map(|i| &self.services[*i as usize])
            .find(|s| s.namespace == client_namespace)
            .or_else(|| found.first().map(|i| &self.services[*i as usize]))?;
        Some((pick, answers(self, pick)))
    }
}

/// The addresses DNS answers for `service`.
pub(crate) fn answers(reg: &Registry, service: &Service) -> Vec<IpAddr> {
    let vips: Vec<IpAddr> = service.vips().collect();
    if !vips.is_empty() || service.resolution != Resolution::None || !service.addresses.is_empty() {
        return vips;
    }
    let Some(first) = service.ports.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in reg.endpoints(service, first) {
        if let EndpointAddress::Ip(ip) = e.address() {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}
