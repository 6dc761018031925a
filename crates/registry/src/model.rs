//! The registry's model: services (one per ServiceEntry host, as Istio's `model.Service`),
//! their ports, and workloads (WorkloadEntries, inline ServiceEntry endpoints, and the host of a
//! DNS ServiceEntry without endpoints), with everything a sidecar needs per connection already
//! derived: the SPIFFE identity, whether a sidecar is present, the endpoint port.
//!
//! Facts from istio/istio `pilot/pkg/serviceregistry/serviceentry/conversion.go`: an endpoint's
//! port is, in priority, none for a `unix://` address, the entry's `ports[<service port name>]`,
//! the service port's `targetPort`, the service port's number; its TLS mode is the
//! `security.istio.io/tlsMode` label when present, else `istio` when the entry names a
//! `serviceAccount`, else `disabled` (`getTLSModeFromWorkloadEntry`); a DNS ServiceEntry without
//! endpoints or selector gets one endpoint per host, the host name itself, TLS mode disabled.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use trustmesh_identity::SpiffeId;
use trustmesh_policy::Location;

/// The label that says whether a workload runs a sidecar (`istio`) or not (`disabled`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Marks a WorkloadEntry the control plane made from a Kubernetes pod. Istio takes a pod's TLS
/// mode from its `security.istio.io/tlsMode` label alone (absent: disabled), where a written
/// `serviceAccount` makes a WorkloadEntry `istio`; the pod's labels stay exactly the pod's, as
/// its sidecar reports them.
pub const POD_ANNOTATION: &str = "trustmesh.io/kubernetes-pod";
/// The node a Kubernetes pod's WorkloadEntry runs on (ztunnel's shared mode keeps the workloads
/// of its own node by it).
pub const NODE_ANNOTATION: &str = "trustmesh.io/node";
/// Istio's `TunnelLabel`: the tunnel protocols a workload terminates, a comma-separated list
/// (Istio asks readers to parse the list rather than compare the whole value). `http` is
/// HBONE: HTTP/2 CONNECT over mTLS on port 15008, ambient's transport.
pub const TUNNEL_LABEL: &str = "networking.istio.io/tunnel";
/// The [`TUNNEL_LABEL`] protocol that means HBONE.
pub const TUNNEL_HTTP: &str = "http";

/// The service account of a workload that names none, as Kubernetes gives every pod.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// `ServiceEntry.location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MeshLocation {
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// `ServiceEntry.resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Resolution {
    /// Connections go to the address the client asked for (Istio's ORIGINAL_DST).
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "STATIC")]
    Static,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
    #[serde(rename = "DYNAMIC_DNS")]
    DynamicDns,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// A service port's protocol (Istio's `protocol.Parse`: case-insensitive; empty means the
/// proxy sniffs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    Hbone,
    Unspecified,
}

impl Protocol {
    /// `None` for a name Istio does not know.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "" => Protocol::Unspecified,
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            "hbone" => Protocol::Hbone,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Hbone => "HBONE",
            Protocol::Unspecified => "",
        }
    }

    /// Carries HTTP, so requests name their host (Istio's `IsHTTP`).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// HTTP/2 whatever the app speaks (Istio's `IsHTTP2`).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Carries TLS with SNI (Istio's `IsTLS`).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// One `ports[]` entry of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: String,
    pub number: u16,
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
}

/// One host of a ServiceEntry.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// As written in `hosts` (lower-cased).
    pub host: String,
    pub namespace: String,
    /// The ServiceEntry's `metadata.name`.
    pub service_entry: String,
    pub location: MeshLocation,
    pub resolution: Resolution,
    pub ports: Vec<ServicePort>,
    /// `addresses` as written: single IPs (as /32 or /128) and CIDRs.
    pub addresses: Vec<IpNet>,
    /// Addresses given by auto-allocation (see [`crate::alloc`]); empty when `addresses` is set.
    pub auto_allocated: Vec<IpAddr>,
    pub subject_alt_names: Vec<String>,
    /// Read but not enforced: every service is visible to every namespace.
    pub export_to: Vec<String>,
    #[serde(skip)]
    pub source: Location,
    /// `metadata.creationTimestamp` of the ServiceEntry (older entries keep their VIPs).
    #[serde(skip)]
    pub(crate) created: Option<String>,
    /// Its position in [`crate::Registry::services`].
    #[serde(skip)]
    pub(crate) index: usize,
}

impl Service {
    /// Its position in [`crate::Registry::services`]: a key for per-service state a caller
    /// keeps beside one registry (it changes when the registry is rebuilt).
    pub fn index(&self) -> usize {
        self.index
    }

    /// `metadata.creationTimestamp` of its ServiceEntry, as written (a control plane picks the
    /// oldest declaration of a host, as Istio does).
    pub fn created(&self) -> Option<&str> {
        self.created.as_deref()
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The addresses a client reaches it at: explicit single IPs, then auto-allocated ones
    /// (a CIDR is a range of destinations, not an address to hand out).
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| n.addr())
            .chain(self.auto_allocated.iter().copied())
    }

    /// `namespace/host`, Istio's service key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.host)
    }

    pub fn is_wildcard(&self) -> bool {
        crate::host::is_wildcard(&self.host)
    }
}

/// Where a workload's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A name the proxy resolves (DNS resolution).
    Hostname(String),
    /// A Unix domain socket path (`unix:///path`, or `unix://@abstract`).
    Unix(String),
    /// No address: reached through its network's gateway (`network` is set).
    Network,
}

impl std::fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => write!(f, "{ip}"),
            EndpointAddress::Hostname(h) => f.write_str(h),
            EndpointAddress::Unix(p) => write!(f, "unix://{p}"),
            EndpointAddress::Network => f.write_str("(through its network gateway)"),
        }
    }
}

/// The `security.istio.io/tlsMode` of a workload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// `istio`: a sidecar terminates Istio mTLS.
    Istio,
    /// `disabled`, or derived: no sidecar.
    Disabled,
    /// Another value of the label; Istio treats it as "no sidecar" for auto mTLS.
    Other(String),
}

/// What a workload was read from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// A WorkloadEntry (its name).
    WorkloadEntry(String),
    /// `endpoints[index]` of a ServiceEntry (its name).
    Inline { service_entry: String, index: usize },
    /// The host of a DNS ServiceEntry without endpoints.
    DnsHost { service_entry: String },
}

/// A workload: a WorkloadEntry or an inline endpoint, with its identity derived.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub origin: Origin,
    pub namespace: String,
    pub address: EndpointAddress,
    /// Service port name → this workload's port.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub locality: String,
    /// The Kubernetes node, for a pod's entry ([`NODE_ANNOTATION`]); empty otherwise.
    pub node: String,
    /// `weight` as written; 0 means unset (Istio then treats all endpoints alike).
    pub weight: u32,
    /// `serviceAccount`, or [`DEFAULT_SERVICE_ACCOUNT`] when none is named.
    pub service_account: String,
    /// Whether `serviceAccount` was written (it turns the TLS mode to `istio` when the label is
    /// absent, as in Istio).
    pub service_account_named: bool,
    /// `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`; `None` for a DNS host.
    pub identity: Option<SpiffeId>,
    pub tls_mode: TlsMode,
    #[serde(skip)]
    pub source: Location,
}

impl Workload {
    /// Runs a sidecar that speaks Istio mTLS (`tlsMode: istio`).
    pub fn has_sidecar(&self) -> bool {
        self.tls_mode == TlsMode::Istio
    }

    /// Terminates HBONE: its [`TUNNEL_LABEL`] lists `http`. A caller then opens an HTTP/2
    /// CONNECT tunnel to the workload's port 15008 instead of connecting to the port itself.
    pub fn speaks_hbone(&self) -> bool {
        self.labels
            .get(TUNNEL_LABEL)
            .is_some_and(|v| v.split(',').any(|p| p.trim() == TUNNEL_HTTP))
    }

    /// The WorkloadEntry's name, when it is one.
    pub fn entry_name(&self) -> Option<&str> {
        match &self.origin {
            Origin::WorkloadEntry(n) => Some(n),
            _ => None,
        }
    }

    /// The workload as authorization policies select it: namespace and labels.
    pub fn policy_workload(&self) -> trustmesh_policy::Workload {
        trustmesh_policy::Workload {
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
        }
    }

    /// Its port for a service port: Istio's order (see the module docs); 0 for a Unix socket.
    pub fn port_for(&self, port: &ServicePort) -> u16 {
        if matches!(self.address, EndpointAddress::Unix(_)) {
            return 0;
        }
        if let Some(p) = self.ports.get(&port.name).filter(|p| **p > 0) {
            return *p;
        }
        port.target_port.unwrap_or(port.number)
    }
}

/// One endpoint of a service port: a workload and the port to connect to on it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub workload: &'a Workload,
    /// The port on the workload (0 for a Unix socket).
    pub port: u16,
}

impl Endpoint<'_> {
    pub fn address(&self) -> &EndpointAddress {
        &self.workload.address
    }
    pub fn identity(&self) -> Option<&SpiffeId> {
        self.workload.identity.as_ref()
    }
    pub fn has_sidecar(&self) -> bool {
        self.workload.has_sidecar()
    }
}
