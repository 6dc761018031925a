//! Which HTTP version a sidecar sends a routed request upstream in, as Istio's cluster builder
//! decides it for an outbound cluster (pilot's `setUpstreamProtocol`, `shouldH2Upgrade` and
//! `applyConnectionPool`, in the order they are applied):
//!
//! - a port declared `HTTP2`, `GRPC` or `GRPC-Web` is HTTP/2, whatever else is set;
//! - a port without a declared protocol (sniffed) uses the version the app spoke;
//! - otherwise a DestinationRule's `connectionPool.http.useClientProtocol` uses the app's
//!   version, its `h2UpgradePolicy` `UPGRADE` or `DO_NOT_UPGRADE` decides, and `DEFAULT` (or no
//!   rule) leaves it to `meshConfig.h2UpgradePolicy`, whose default keeps HTTP/1.1.
//!
//! So by default an app's HTTP/1.1 request to an `http` port crosses the mesh as HTTP/1.1 (an
//! HTTP/2 one is sent as HTTP/1.1 too), as between Istio's sidecars.

use trustmesh_policy::{H2UpgradePolicy, Workload};

use crate::crd::H2Upgrade;
use crate::model::{Protocol, Service, ServicePort};
use crate::registry::Registry;
use crate::rules::HttpPool;

/// The HTTP version sent upstream for a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum UpstreamHttp {
    Http1,
    Http2,
    /// The version the app's request came in (Envoy's `use_downstream_protocol_config`).
    Downstream,
}

impl UpstreamHttp {
    /// Whether a request that came in as HTTP/2 (or not) goes upstream as HTTP/2.
    pub fn http2(self, downstream_http2: bool) -> bool {
        match self {
            UpstreamHttp::Http1 => false,
            UpstreamHttp::Http2 => true,
            UpstreamHttp::Downstream => downstream_http2,
        }
    }
}

/// The decision for a port of `protocol` under the mesh-wide policy and a rule's pool, if any.
pub fn decide(protocol: Protocol, mesh: H2UpgradePolicy, pool: Option<HttpPool>) -> UpstreamHttp {
    if protocol.is_http2() {
        return UpstreamHttp::Http2;
    }
    if protocol == Protocol::Unspecified {
        return UpstreamHttp::Downstream;
    }
    let pool = pool.unwrap_or_default();
    if pool.use_client_protocol {
        return UpstreamHttp::Downstream;
    }
    let upgrade = match pool.h2_upgrade_policy {
        H2Upgrade::Upgrade => true,
        H2Upgrade::DoNotUpgrade => false,
        H2Upgrade::Default => protocol.is_http() && mesh == H2UpgradePolicy::Upgrade,
    };
    if upgrade {
        UpstreamHttp::Http2
    } else {
        UpstreamHttp::Http1
    }
}

impl Registry {
    /// The HTTP version `client` sends requests for `service`'s `port` in. A port-level entry
    /// of the client's DestinationRule replaces the rule's own `connectionPool` wholesale.
    pub fn upstream_http(
        &self,
        client: &Workload,
        service: &Service,
        port: &ServicePort,
    ) -> UpstreamHttp {
        let pool = self
            .destination_rule(client, service)
            .and_then(|r| r.for_port(port.number).http);
        decide(port.protocol, self.h2_upgrade, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(h2_upgrade_policy: H2Upgrade, use_client_protocol: bool) -> Option<HttpPool> {
        Some(HttpPool {
            h2_upgrade_policy,
            use_client_protocol,
        })
    }

    /// The table of pilot's `TestShouldH2Upgrade` and `setUpstreamProtocol`, for the port
    /// kinds that reach the HTTP route.
    #[test]
    fn follows_istio_for_every_port_kind_and_setting() {
        use H2Upgrade::{Default as D, DoNotUpgrade as Dnu, Upgrade as U};
        use H2UpgradePolicy::{DoNotUpgrade as MeshNo, Upgrade as MeshUp};
        use UpstreamHttp::{Downstream, Http1, Http2};
        let cases = [
            // (port, mesh, rule pool, expected)
            (Protocol::Http, MeshNo, None, Http1),
            (Protocol::Http, MeshUp, None, Http2),
            (Protocol::Http, MeshNo, pool(D, false), Http1),
            (Protocol::Http, MeshUp, pool(D, false), Http2),
            (Protocol::Http, MeshNo, pool(U, false), Http2),
            (Protocol::Http, MeshUp, pool(Dnu, false), Http1),
            (Protocol::Http, MeshUp, pool(U, true), Downstream),
            (Protocol::Http, MeshNo, pool(D, true), Downstream),
            (Protocol::HttpProxy, MeshUp, None, Http2),
            (Protocol::Http2, MeshNo, None, Http2),
            (Protocol::Http2, MeshNo, pool(Dnu, true), Http2),
            (Protocol::Grpc, MeshNo, pool(Dnu, false), Http2),
            (Protocol::GrpcWeb, MeshNo, None, Http2),
            (Protocol::Unspecified, MeshUp, None, Downstream),
            (Protocol::Unspecified, MeshNo, pool(U, false), Downstream),
            (Protocol::Tcp, MeshUp, None, Http1),
        ];
        for (port, mesh, rule, want) in cases {
            assert_eq!(decide(port, mesh, rule), want, "{port:?} {mesh:?} {rule:?}");
        }
    }

    #[test]
    fn downstream_follows_the_app() {
        assert!(UpstreamHttp::Downstream.http2(true));
        assert!(!UpstreamHttp::Downstream.http2(false));
        assert!(UpstreamHttp::Http2.http2(false));
        assert!(!UpstreamHttp::Http1.http2(true));
    }
}
