//! Registry → ztunnel Workload and Service resources, against what istiod's ambient builders
//! produce for the same WorkloadEntries and ServiceEntries.

use std::collections::BTreeMap;

use trustmesh_ambient::istio::workload::{
    address, load_balancing, AppProtocol, Locality, NetworkAddress, Port, PortList, Service,
    TunnelProtocol, Workload, WorkloadType,
};
use trustmesh_ambient::{address_resource_name, services, workloads, AuthzOptions, Cluster};
use trustmesh_policy::document::{parse_text, Parsed};
use trustmesh_policy::MeshConfig;
use trustmesh_registry::{Options, Registry};

const YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop, annotations: {trustmesh.io/node: node-7}}
spec:
  address: 10.0.0.11
  network: net-b
  locality: eu/west-1/a
  weight: 5
  serviceAccount: reviews
  ports: {http: 8081}
  labels:
    app: reviews
    version: v2
    networking.istio.io/tunnel: "h2c,http"
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-2, namespace: shop}
spec:
  address: vm2.example.internal
  labels: {app: reviews, service.istio.io/workload-name: reviews-vms}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  addresses: [10.96.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9443, name: tls, protocol: TLS, targetPort: 8443}
  - {number: 7000, name: raw, protocol: MONGO}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: data}
spec:
  hosts: [db.example.com]
  addresses: [10.97.0.1]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints:
  - address: 192.168.1.5
    serviceAccount: db
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lan, namespace: data}
spec:
  hosts: [lan.example.com]
  addresses: [192.168.7.1/16]
  location: MESH_EXTERNAL
  resolution: NONE
  ports: [{number: 22, name: ssh, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: data}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
"#;

const POLICY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-v2, namespace: shop}
spec:
  selector: {matchLabels: {version: v2}}
  rules: [{from: [{source: {namespaces: [shop]}}]}]
"#;

fn registry(mesh: &str) -> Registry {
    let mesh = MeshConfig::from_yaml_str(mesh).unwrap();
    let (reg, report) = Registry::from_yaml_str("r.yaml", YAML, &mesh, &Options::default());
    assert!(
        report.problems.iter().all(|p| p.warning),
        "{:?}",
        report.problems
    );
    reg
}

fn by_name<T>(
    items: Vec<trustmesh_ambient::istio::workload::Address>,
    pick: fn(address::Type) -> Option<T>,
) -> BTreeMap<String, T> {
    items
        .into_iter()
        .map(|a| (address_resource_name(&a), pick(a.r#type.unwrap()).unwrap()))
        .collect()
}

fn workload(t: address::Type) -> Option<Workload> {
    match t {
        address::Type::Workload(w) => Some(w),
        _ => None,
    }
}

fn service(t: address::Type) -> Option<Service> {
    match t {
        address::Type::Service(s) => Some(s),
        _ => None,
    }
}

fn ports(list: &[(u32, u32)]) -> PortList {
    PortList {
        ports: list
            .iter()
            .map(|(s, t)| Port {
                service_port: *s,
                target_port: *t,
                app_protocol: 0,
            })
            .collect(),
    }
}

#[test]
fn workload_entries_and_inline_endpoints() {
    let reg = registry("trustDomain: example.org\n");
    let mut parsed = Parsed::default();
    parse_text("p.yaml", POLICY, &mut parsed);
    let cluster = Cluster {
        id: "Kubernetes",
        network: "net-a",
        root_namespace: "istio-system",
        policies: &parsed.resources,
        authz: AuthzOptions::default(),
    };
    let all = by_name(workloads(&reg, &cluster), workload);
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Kubernetes/networking.istio.io/ServiceEntry/data/db/192.168.1.5",
            "Kubernetes/networking.istio.io/ServiceEntry/data/ext/api.example.com",
            "Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-1",
            "Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-2",
        ]
    );

    let vm1 = &all["Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-1"];
    let reviews_ports = ports(&[(9080, 8081), (9443, 8443), (7000, 7000)]);
    let want = Workload {
        uid: "Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-1".into(),
        name: "vm-1".into(),
        namespace: "shop".into(),
        addresses: vec![vec![10, 0, 0, 11]],
        network: "net-b".into(),
        tunnel_protocol: TunnelProtocol::Hbone as i32,
        native_tunnel: true,
        trust_domain: "example.org".into(),
        service_account: "reviews".into(),
        canonical_name: "reviews".into(),
        canonical_revision: "v2".into(),
        workload_type: WorkloadType::Pod as i32,
        workload_name: "vm-1".into(),
        services: [(
            "shop/reviews.shop.svc.cluster.local".to_string(),
            reviews_ports.clone(),
        )]
        .into_iter()
        .collect(),
        authorization_policies: vec!["shop/reviews-v2".into()],
        cluster_id: "Kubernetes".into(),
        locality: Some(Locality {
            region: "eu".into(),
            zone: "west-1".into(),
            subzone: "a".into(),
        }),
        capacity: Some(5),
        // A Kubernetes pod's node (trustmesh.io/node), which ztunnel's shared mode keeps its
        // own node's workloads by.
        node: "node-7".into(),
        ..Workload::default()
    };
    assert_eq!(vm1, &want);

    let vm2 = &all["Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-2"];
    assert!(vm2.addresses.is_empty());
    assert_eq!(vm2.hostname, "vm2.example.internal");
    assert_eq!(
        vm2.network, "net-a",
        "the local network when none is written"
    );
    assert_eq!(
        vm2.service_account, "",
        "istiod sends the account as written"
    );
    assert_eq!(vm2.tunnel_protocol(), TunnelProtocol::None);
    assert!(!vm2.native_tunnel);
    assert_eq!(vm2.workload_name, "reviews-vms");
    assert_eq!(vm2.canonical_name, "reviews");
    assert_eq!(vm2.canonical_revision, "latest");
    assert!(vm2.authorization_policies.is_empty());
    assert_eq!(vm2.capacity, None);
    assert_eq!(vm2.locality, None);
    assert_eq!(
        vm2.services["shop/reviews.shop.svc.cluster.local"],
        ports(&[(9080, 9080), (9443, 8443), (7000, 7000)])
    );

    let db = &all["Kubernetes/networking.istio.io/ServiceEntry/data/db/192.168.1.5"];
    assert_eq!(db.name, "db");
    assert_eq!(db.workload_name, "db");
    assert_eq!(db.canonical_name, "db");
    assert_eq!(db.service_account, "db");
    assert_eq!(db.addresses, vec![vec![192, 168, 1, 5]]);
    assert_eq!(
        db.services.keys().collect::<Vec<_>>(),
        ["data/db.example.com"]
    );

    let ext = &all["Kubernetes/networking.istio.io/ServiceEntry/data/ext/api.example.com"];
    assert_eq!(ext.hostname, "api.example.com");
    assert!(ext.addresses.is_empty());
    assert_eq!(ext.services["data/api.example.com"], ports(&[(443, 443)]));
}

#[test]
fn trust_domain_cluster_local_is_sent_empty() {
    let reg = registry("{}\n");
    let cluster = Cluster {
        id: "c1",
        network: "",
        root_namespace: "istio-system",
        policies: &[],
        authz: AuthzOptions::default(),
    };
    for a in workloads(&reg, &cluster) {
        let w = workload(a.r#type.unwrap()).unwrap();
        assert_eq!(w.trust_domain, "");
        assert!(w.uid.starts_with("c1/"), "{}", w.uid);
        assert_eq!(w.cluster_id, "c1");
    }
}

#[test]
fn service_entries_become_services() {
    let reg = registry("{}\n");
    let cluster = Cluster {
        id: "Kubernetes",
        network: "net-a",
        root_namespace: "istio-system",
        policies: &[],
        authz: AuthzOptions::default(),
    };
    let all = by_name(services(&reg, &cluster), service);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [
            "data/api.example.com",
            "data/db.example.com",
            "data/lan.example.com",
            "shop/reviews.shop.svc.cluster.local"
        ]
    );
    let reviews = &all["shop/reviews.shop.svc.cluster.local"];
    assert_eq!(
        reviews,
        &Service {
            name: "reviews".into(),
            namespace: "shop".into(),
            hostname: "reviews.shop.svc.cluster.local".into(),
            addresses: vec![NetworkAddress {
                network: "net-a".into(),
                address: vec![10, 96, 0, 10],
                length: None,
            }],
            ports: vec![
                Port {
                    service_port: 9080,
                    target_port: 9080,
                    app_protocol: AppProtocol::Http11 as i32
                },
                Port {
                    service_port: 9443,
                    target_port: 8443,
                    app_protocol: AppProtocol::Tls as i32
                },
                Port {
                    service_port: 7000,
                    target_port: 7000,
                    app_protocol: AppProtocol::Unknown as i32
                },
            ],
            canonical: true,
            ..Service::default()
        }
    );

    let db = &all["data/db.example.com"];
    assert_eq!(db.addresses[0].address, [10, 97, 0, 1]);
    assert_eq!(db.load_balancing, None);
    assert_eq!(db.ports[0].app_protocol(), AppProtocol::Tcp);

    let lan = &all["data/lan.example.com"];
    assert_eq!(
        lan.addresses,
        vec![NetworkAddress {
            network: "net-a".into(),
            // Masked to the prefix, as istiod does.
            address: vec![192, 168, 0, 0],
            length: Some(16),
        }]
    );
    let lb = lan
        .load_balancing
        .as_ref()
        .expect("resolution NONE passes through");
    assert_eq!(lb.mode(), load_balancing::Mode::Passthrough);
    assert_eq!(lb.health_policy(), load_balancing::HealthPolicy::AllowAll);

    let ext = &all["data/api.example.com"];
    assert_eq!(ext.load_balancing, None);
    assert_eq!(ext.ports[0].app_protocol(), AppProtocol::Tls);
    // DNS resolution without addresses: the VIP trustmesh auto-allocated.
    assert_eq!(ext.addresses.len(), 1);
    assert_eq!(ext.addresses[0].address[..2], [240, 240]);
    assert_eq!(ext.addresses[0].length, None);
}

#[test]
fn one_declaration_per_namespace_and_the_oldest_is_canonical() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: new, namespace: a, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {hosts: [x.example.com], resolution: DNS, ports: [{number: 80, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: old, namespace: b, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {hosts: [x.example.com], resolution: DNS, ports: [{number: 80, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dup, namespace: b, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {hosts: [x.example.com], resolution: DNS, ports: [{number: 81, name: http}]}
"#;
    let (reg, _) =
        Registry::from_yaml_str("r.yaml", yaml, &MeshConfig::default(), &Options::default());
    let cluster = Cluster {
        id: "K",
        network: "",
        root_namespace: "istio-system",
        policies: &[],
        authz: AuthzOptions::default(),
    };
    let got: Vec<(String, bool)> = services(&reg, &cluster)
        .into_iter()
        .map(|a| service(a.r#type.unwrap()).unwrap())
        .map(|s| (format!("{}/{}", s.namespace, s.name), s.canonical))
        .collect();
    assert_eq!(
        got,
        [("a/new".to_string(), false), ("b/old".to_string(), true)]
    );
    // The dropped duplicate's DNS endpoint is not sent either.
    let uids: Vec<String> = workloads(&reg, &cluster)
        .iter()
        .map(address_resource_name)
        .collect();
    assert!(uids.iter().all(|u| !u.contains("/dup/")), "{uids:?}");
    assert_eq!(uids.len(), 2, "{uids:?}");
}
