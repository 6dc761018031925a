//! The HTTP version a client sidecar sends upstream: a DestinationRule's
//! `connectionPool.http` (`h2UpgradePolicy`, `useClientProtocol`, top level and port level)
//! over `meshConfig.h2UpgradePolicy`, by the port's declared protocol.

mod support;

use support::{join, lines, load, load_with, mesh, options_198};
use trustmesh_policy::Workload as Client;
use trustmesh_registry::{Registry, UpstreamHttp};

/// `api.prod` with an HTTP port on 80 and 8080, gRPC on 9090 and an undeclared one on 7000.
const API: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: prod}
spec:
  hosts: [api.prod.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: http-alt, protocol: HTTP}
  - {number: 9090, name: grpc, protocol: GRPC}
  - {number: 7000, name: sniffed}
  endpoints:
  - {address: 10.1.0.1, labels: {security.istio.io/tlsMode: istio}, serviceAccount: api}
"#;

/// The decision on ports 80, 8080, 9090 and 7000, in that order.
fn on_ports(reg: &Registry) -> Vec<UpstreamHttp> {
    let client = Client::new("prod", &[("app", "frontend")]);
    let svc = reg
        .services()
        .iter()
        .find(|s| s.host == "api.prod.svc.cluster.local")
        .unwrap();
    [80, 8080, 9090, 7000]
        .into_iter()
        .map(|n| reg.upstream_http(&client, svc, svc.port(n).unwrap()))
        .collect()
}

#[test]
fn without_a_rule_the_mesh_config_decides_for_http_ports() {
    use UpstreamHttp::{Downstream, Http1, Http2};
    let (reg, _) = load(API);
    assert_eq!(on_ports(&reg), [Http1, Http1, Http2, Downstream]);
    let upgrade = mesh("h2UpgradePolicy: UPGRADE");
    let (reg, _) = load_with(API, &upgrade, &options_198());
    assert_eq!(on_ports(&reg), [Http2, Http2, Http2, Downstream]);
}

#[test]
fn a_rule_upgrades_and_a_port_entry_replaces_its_pool_wholesale() {
    use UpstreamHttp::{Downstream, Http1, Http2};
    let rule = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: prod}
spec:
  host: api
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE, maxRetries: 3}
    portLevelSettings:
    - port: {number: 8080}
      loadBalancer: {simple: ROUND_ROBIN}
"#;
    let (reg, report) = load(&join(&[API, rule]));
    assert!(lines(&report).is_empty(), "{:#?}", lines(&report));
    assert_eq!(on_ports(&reg), [Http2, Http1, Http2, Downstream]);
    // The limits beside the choice are listed as ignored; the choice is not.
    let notices: Vec<String> = report.notices.iter().map(|n| n.to_string()).collect();
    assert!(
        notices.iter().any(|n| n.contains("accepted and ignored")
            && n.contains("spec.trafficPolicy.connectionPool.http.maxRetries")
            && !n.contains("h2UpgradePolicy")),
        "{notices:#?}"
    );

    // The app's own version when asked for; DO_NOT_UPGRADE beats the mesh's UPGRADE.
    let rule = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: prod}
spec:
  host: api.prod.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}
    portLevelSettings:
    - port: {number: 8080}
      connectionPool: {http: {useClientProtocol: true}}
"#;
    let upgrade = mesh("h2UpgradePolicy: UPGRADE");
    let (reg, _) = load_with(&join(&[API, rule]), &upgrade, &options_198());
    assert_eq!(on_ports(&reg), [Http1, Downstream, Http2, Downstream]);
}

#[test]
fn an_unknown_upgrade_policy_is_a_problem_that_names_the_choices() {
    let rule = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: prod}
spec:
  host: api
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: ALWAYS}}
"#;
    let (_, report) = load(&join(&[API, rule]));
    let l = lines(&report);
    assert!(
        l.iter().any(|p| p.contains("h2UpgradePolicy")
            && p.contains("unknown h2UpgradePolicy value \"ALWAYS\"")
            && p.contains("DEFAULT, DO_NOT_UPGRADE, UPGRADE")),
        "{l:#?}"
    );
}
