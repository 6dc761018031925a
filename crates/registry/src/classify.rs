//! What the sidecar asks for every captured outbound connection: what is its original
//! destination? A typed answer the proxy can act on and count: a service (by VIP, by CIDR, or
//! by a port Istio listens on at every address), a known workload (pod to pod, by address), or
//! unknown — passed through under `ALLOW_ANY`, refused under `REGISTRY_ONLY`
//! (`meshConfig.outboundTrafficPolicy`).
//!
//! Order, most specific first: an exact VIP with that port; a workload's address; the longest
//! CIDR of a ServiceEntry with that port; a port claimed on every address — HTTP ports, which
//! Istio routes by the request's host on `0.0.0.0:<port>`, and every port of a service with no
//! address at all (Istio binds those to `0.0.0.0:<port>` too; istio/api `service_entry.proto`
//! warns that with resolution NONE "traffic to any IP on said port will be allowed"). A VIP
//! reached on a port it does not serve is unknown, and says so.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use trustmesh_policy::OutboundMode;

use crate::model::{Service, ServicePort, Workload};
use crate::registry::Registry;

/// The registry's answer for an original destination.
#[derive(Debug)]
pub enum Destination<'a> {
    Service(ServiceHit<'a>),
    Workload(WorkloadHit<'a>),
    /// Unknown, `ALLOW_ANY`: forward to the original destination as it is.
    Passthrough(Unknown<'a>),
    /// Unknown, `REGISTRY_ONLY`: close the connection.
    Refused(Unknown<'a>),
}

/// How a service was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// One of its addresses, explicit or auto-allocated.
    Vip,
    /// A CIDR of its `addresses`.
    Cidr(IpNet),
    /// Its port, claimed on every address: tell services apart by the request's host or SNI
    /// (see [`ServiceHit::others`]).
    AnyAddress,
}

#[derive(Debug)]
pub struct ServiceHit<'a> {
    pub service: &'a Service,
    pub port: &'a ServicePort,
    pub via: Via,
    /// Other services at the same address and port (several hosts of one entry, or several
    /// HTTP services on one port): the proxy picks by Host or SNI. Empty in the common case.
    pub others: Vec<(&'a Service, &'a ServicePort)>,
}

impl ServiceHit<'_> {
    /// The port to use when the connection goes to the original destination (resolution
    /// NONE): the port's `targetPort` if set, else the port asked for (Istio's
    /// `PassthroughTargetPorts`).
    pub fn original_dst_port(&self, asked: u16) -> u16 {
        self.port.target_port.unwrap_or(asked)
    }
}

#[derive(Debug)]
pub struct WorkloadHit<'a> {
    pub workload: &'a Workload,
    /// The service ports this workload serves on the port asked for (it may serve none).
    pub serves: Vec<(&'a Service, &'a ServicePort)>,
}

#[derive(Debug)]
pub struct Unknown<'a> {
    pub addr: SocketAddr,
    /// The address is this service's VIP, but not on this port.
    pub vip_of: Option<&'a Service>,
}

impl Destination<'_> {
    /// A short label for metrics and access logs.
    pub fn label(&self) -> &'static str {
        match self {
            Destination::Service(_) => "service",
            Destination::Workload(_) => "workload",
            Destination::Passthrough(_) => "passthrough",
            Destination::Refused(_) => "refused",
        }
    }
}

impl fmt::Display for Unknown<'_> {
    /// The sentence a person reads about an unknown destination.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip_of {
            Some(s) => write!(
                f,
                "{} is an address of service {} ({}/{}), which has no port {}",
                self.addr.ip(),
                s.host,
                s.namespace,
                s.service_entry,
                self.addr.port()
            ),
            None => write!(
                f,
                "no service or workload in the registry has address {}",
                self.addr
            ),
        }
    }
}

impl Registry {
    /// Classifies a connection's original destination (see the module docs).
    pub fn classify(&self, original_dst: SocketAddr) -> Destination<'_> {
        let (ip, port) = (original_dst.ip(), original_dst.port());
        let at_vip = self.hits(self.addresses.vip(&ip), port, Via::Vip);
        if let Some(hit) = at_vip {
            return Destination::Service(hit);
        }
        if let Some(w) = self.addresses.workloads(&ip).first() {
            return Destination::Workload(self.workload_hit(*w, port));
        }
        if let Some((net, services)) = self.addresses.cidr(&ip) {
            if let Some(hit) = self.hits(services, port, Via::Cidr(net)) {
                return Destination::Service(hit);
            }
        }
        if let Some(hit) = self.hits(self.addresses.any_address(port), port, Via::AnyAddress) {
            return Destination::Service(hit);
        }
        let unknown = Unknown {
            addr: original_dst,
            vip_of: self
                .addresses
                .vip(&ip)
                .first()
                .map(|i| &self.services[*i as usize]),
        };
        match self.outbound {
            OutboundMode::AllowAny => Destination::Passthrough(unknown),
            OutboundMode::RegistryOnly => Destination::Refused(unknown),
        }
    }

    fn hits(&self, services: &[u32], port: u16, via: Via) -> Option<ServiceHit<'_>> {
        let mut found = services.iter().filter_map(|i| {
            let s = &self.services[*i as usize];
            s.port(port).map(|p| (s, p))
        });
        let (service, port) = found.next()?;
        Some(ServiceHit {
            service,
            port,
            via,
            others: found.collect(),
        })
    }

    fn workload_hit(&self, w: u32, port: u16) -> WorkloadHit<'_> {
        let serves = self.memberships[w as usize]
            .iter()
            .filter(|(s, pi)| {
                self.endpoints[*s as usize][*pi as usize]
                    .iter()
                    .any(|(x, p)| *x == w && *p == port)
            })
            .map(|(s, pi)| {
                let s = &self.services[*s as usize];
                (s, &s.ports[*pi as usize])
            })
            .collect();
        WorkloadHit {
            workload: &self.workloads[w as usize],
            serves,
        }
    }
}
