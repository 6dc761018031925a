//! How the sidecar protects a connection to an endpoint: Istio mTLS, TLS it originates with
//! given files, or plaintext — Istio's auto mTLS unless a DestinationRule says otherwise.
//!
//! From istio/istio `pilot/pkg/networking/core/cluster_tls.go` (`buildAutoMtlsSettings`,
//! transport socket matches) and `pilot/pkg/model/push_context.go`
//! (`BestEffortInferServiceMTLSMode`):
//! - A DestinationRule's `tls` decides when present. A `portLevelSettings` entry for the port
//!   replaces the rule's settings wholesale ([`DestinationRule::for_port`]): an entry without
//!   `tls` leaves that port to auto mTLS.
//!   ISTIO_MUTUAL uses the rule's `sni` and `subjectAltNames` when given, else the automatic
//!   ones; DISABLE, SIMPLE and MUTUAL are used as written.
//! - Without one, auto mTLS: plaintext to a MESH_EXTERNAL service; plaintext to a passthrough
//!   service (resolution NONE, or load balancer PASSTHROUGH) when it has no endpoints on the
//!   port or any of them has no sidecar; plaintext when the service's namespace (or the mesh)
//!   has a PeerAuthentication with mode DISABLE, or the endpoint's own workload has DISABLE on
//!   the port it is reached at (port-level included; pass the policy set to apply these);
//!   otherwise ISTIO_MUTUAL to an endpoint labelled `security.istio.io/tlsMode: istio` and
//!   plaintext to any other (Envoy's transport socket match on that label).
//! - The automatic SNI is `outbound_.<port>_._.<host>`; the expected peer identities are the
//!   endpoint's SPIFFE ID plus the ServiceEntry's `subjectAltNames`. (Istio accepts any service
//!   account of the service; trustmesh knows which endpoint it dials and pins that one.) An
//!   empty list means only the trust chain is checked, as in Istio when no account is known.
//!
//! A DestinationRule that could not be read refuses every connection it would govern.

use trustmesh_policy::{MtlsMode, PolicySet, Workload as Client};

use crate::crd::SimpleLb;
use crate::model::{Endpoint, MeshLocation, Resolution, Service, ServicePort};
use crate::registry::Registry;
use crate::rules::{ClientTls, DestinationRule, TlsSetting};

/// The decision, and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub mode: UpstreamMode,
    pub decided_by: DecidedBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamMode {
    Plaintext,
    /// Istio mTLS with the workload's own certificate.
    IstioMutual {
        sni: String,
        /// SPIFFE IDs (or other SANs) the peer certificate must carry, any one of them.
        peer_identities: Vec<String>,
    },
    /// TLS with the rule's files; the server is verified, no client certificate.
    Simple(Originate),
    /// TLS with the rule's client certificate and key.
    Mutual(Originate),
    /// Do not connect.
    Refuse {
        reason: String,
    },
}

/// What a SIMPLE or MUTUAL rule gives; paths as written, for the proxy to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// The rule's `sni`, else the service host (what Istio's auto SNI sends for requests to
    /// it); `None` for a wildcard host.
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub ca_certificates: Option<String>,
    pub ca_crl: Option<String>,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// Istio's auto mTLS, and why it chose what it chose.
    AutoMtls(&'static str),
    DestinationRule {
        namespace: String,
        name: String,
        /// The port-level settings decided.
        port_level: bool,
    },
}

impl UpstreamMode {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamMode::Plaintext => "plaintext",
            UpstreamMode::IstioMutual { .. } => "istio_mutual",
            UpstreamMode::Simple(_) => "simple",
            UpstreamMode::Mutual(_) => "mutual",
            UpstreamMode::Refuse { .. } => "refuse",
        }
    }
}

/// Istio's SNI for ISTIO_MUTUAL (`BuildDNSSrvSubsetKey`, outbound, no subset).
pub fn istio_sni(host: &str, port: u16) -> String {
    format!("outbound_.{port}_._.{host}")
}

impl Registry {
    /// How `client` (the sidecar's workload: namespace and labels) protects a connection to
    /// `endpoint` of `service` on `port`. `endpoint` is `None` when the connection goes to an
    /// original destination the registry does not know as a workload. `policies`, when given,
    /// applies Istio's namespace-level PeerAuthentication DISABLE rule.
    pub fn tls_for(
        &self,
        client: &Client,
        service: &Service,
        port: &ServicePort,
        endpoint: Option<Endpoint<'_>>,
        policies: Option<&PolicySet>,
    ) -> UpstreamTls {
        let rule = self.destination_rule(client, service);
        if let Some(r) = rule {
            if let Some(reason) = &r.broken {
                return decided(
                    UpstreamMode::Refuse {
                        reason: format!("DestinationRule {}/{} could not be read, so connections it governs are refused: {reason}", r.namespace, r.name),
                    },
                    r,
                    false,
                );
            }
            // A port-level entry without `tls` of its own leaves that port to auto mTLS,
            // whatever the rule's `tls` (`for_port`: port-level settings do not inherit).
            let settings = r.for_port(port.number);
            if let Some(tls) = settings.tls {
                let mode = from_rule(tls, service, port, endpoint);
                return decided(mode, r, settings.port_level);
            }
        }
        let auto = |why: &'static str, mode: UpstreamMode| UpstreamTls {
            mode,
            decided_by: DecidedBy::AutoMtls(why),
        };
        if service.location == MeshLocation::MeshExternal {
            return auto(
                "MESH_EXTERNAL service: no automatic mTLS",
                UpstreamMode::Plaintext,
            );
        }
        let passthrough = service.resolution == Resolution::None
            || rule.and_then(|r| r.for_port(port.number).load_balancer)
                == Some(SimpleLb::Passthrough);
        if passthrough {
            let mut eps = self.endpoints(service, port).peekable();
            if eps.peek().is_none() || eps.any(|e| !e.has_sidecar()) {
                return auto(
                    "passthrough service with an endpoint without a sidecar (or none)",
                    UpstreamMode::Plaintext,
                );
            }
        }
        if let Some(set) = policies {
            let ns = Client {
                namespace: service.namespace.clone(),
                labels: Default::default(),
            };
            if set.mtls_mode(&ns, port.number).0 == MtlsMode::Disable {
                return auto(
                    "PeerAuthentication DISABLE for the service's namespace",
                    UpstreamMode::Plaintext,
                );
            }
            // Istio decides per endpoint (`checkMtlsEnabled` in pilot's endpoint builder): the
            // mode the endpoint's own workload has on the port it is reached at, port-level
            // settings included.
            if let Some(e) = endpoint {
                if set.mtls_mode(&e.workload.policy_workload(), e.port).0 == MtlsMode::Disable {
                    return auto(
                        "PeerAuthentication DISABLE for the endpoint's workload and port",
                        UpstreamMode::Plaintext,
                    );
                }
            }
        }
        match endpoint {
            Some(e) if e.has_sidecar() => auto(
                "endpoint has a sidecar (tlsMode istio)",
                UpstreamMode::IstioMutual {
                    sni: istio_sni(&service.host, port.number),
                    peer_identities: peers(service, Some(e)),
                },
            ),
            Some(_) => auto("endpoint has no sidecar", UpstreamMode::Plaintext),
            None => auto(
                "destination is not a known workload",
                UpstreamMode::Plaintext,
            ),
        }
    }

    /// The load balancing a client gets for a service port (`loadBalancer.simple`; a port-level
    /// entry replaces the rule's wholesale, so one without `loadBalancer` has the default),
    /// when a DestinationRule sets one.
    pub fn load_balancer(
        &self,
        client: &Client,
        service: &Service,
        port: &ServicePort,
    ) -> Option<SimpleLb> {
        self.destination_rule(client, service)?
            .for_port(port.number)
            .load_balancer
    }
}

fn decided(mode: UpstreamMode, r: &DestinationRule, port_level: bool) -> UpstreamTls {
    UpstreamTls {
        mode,
        decided_by: DecidedBy::DestinationRule {
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            port_level,
        },
    }
}

/// The endpoint's identity, then the service's `subjectAltNames`.
fn peers(service: &Service, endpoint: Option<Endpoint<'_>>) -> Vec<String> {
    let mut out: Vec<String> = endpoint
        .and_then(|e| e.workload.identity.as_ref())
        .map(|id| id.as_str().to_string())
        .into_iter()
        .collect();
    for san in &service.subject_alt_names {
        if !out.contains(san) {
            out.push(san.clone());
        }
    }
    out
}

fn from_rule(
    tls: &ClientTls,
    service: &Service,
    port: &ServicePort,
    endpoint: Option<Endpoint<'_>>,
) -> UpstreamMode {
    let originate = || Originate {
        sni: tls
            .sni
            .clone()
            .or_else(|| (!service.is_wildcard()).then(|| service.host.clone())),
        subject_alt_names: tls.subject_alt_names.clone(),
        ca_certificates: tls.ca_certificates.clone(),
        ca_crl: tls.ca_crl.clone(),
        client_certificate: tls.client_certificate.clone(),
        private_key: tls.private_key.clone(),
        insecure_skip_verify: tls.insecure_skip_verify,
    };
    match tls.mode {
        TlsSetting::Disable => UpstreamMode::Plaintext,
        TlsSetting::Simple => UpstreamMode::Simple(originate()),
        TlsSetting::Mutual => UpstreamMode::Mutual(originate()),
        TlsSetting::IstioMutual => UpstreamMode::IstioMutual {
            sni: tls
                .sni
                .clone()
                .unwrap_or_else(|| istio_sni(&service.host, port.number)),
            peer_identities: if tls.subject_alt_names.is_empty() {
                peers(service, endpoint)
            } else {
                tls.subject_alt_names.clone()
            },
        },
    }
}
