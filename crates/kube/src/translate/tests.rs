use super::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use trustmesh_registry::{Destination, Registry};

fn svc(v: Value) -> Service {
    serde_json::from_value(v).expect("a Service")
}

fn pod(name: &str, ip: &str, labels: Value, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"serviceAccountName": "reviews", "nodeName": "node-a", "containers": [
            {"name": "app", "ports": [{"name": "web", "containerPort": 9080}, {"name": "metrics", "containerPort": 9090}]}
        ]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    }))
    .expect("a Pod")
}

fn reviews() -> Service {
    svc(json!({
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"clusterIP": "198.19.200.10", "clusterIPs": ["198.19.200.10"],
                 "selector": {"app": "reviews"},
                 "ports": [{"name": "http-web", "port": 80, "targetPort": "web"},
                           {"name": "grpc", "port": 81, "targetPort": 9081, "appProtocol": "grpc"}]}
    }))
}

/// The translated documents, loaded by the registry as the control plane loads them.
fn registry(docs: &[Translated]) -> Registry {
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(&d.value).unwrap()))
        .collect();
    let (reg, report) = Registry::from_yaml_str(
        "k8s.yaml",
        &text,
        &trustmesh_policy::MeshConfig::default(),
        &trustmesh_registry::Options::default(),
    );
    assert!(report.problems.is_empty(), "{:?}\n{text}", report.problems);
    reg
}

#[test]
fn protocols_follow_istio_selection() {
    let p = |v: Value| -> &'static str { port_protocol(&serde_json::from_value(v).unwrap()) };
    assert_eq!(p(json!({"port": 1, "name": "http-web"})), "HTTP");
    assert_eq!(p(json!({"port": 1, "name": "http"})), "HTTP");
    assert_eq!(
        p(json!({"port": 1, "name": "web", "appProtocol": "grpc"})),
        "GRPC"
    );
    assert_eq!(
        p(json!({"port": 1, "name": "tcp-x", "appProtocol": "kubernetes.io/h2c"})),
        "HTTP2"
    );
    // An unknown appProtocol falls back to the name, as in Istio.
    assert_eq!(
        p(json!({"port": 1, "name": "https-x", "appProtocol": "custom"})),
        "HTTPS"
    );
    assert_eq!(p(json!({"port": 1, "name": "web"})), "");
    assert_eq!(
        p(json!({"port": 1, "name": "dns", "protocol": "UDP"})),
        "UDP"
    );
    assert_eq!(p(json!({"port": 1})), "");
}

#[test]
fn a_service_and_its_ready_pods_are_a_service_with_endpoints() {
    let s = reviews();
    let ready = pod(
        "reviews-1",
        "198.18.100.1",
        json!({"app": "reviews", "security.istio.io/tlsMode": "istio"}),
        true,
    );
    let plain = pod("reviews-2", "198.18.100.2", json!({"app": "reviews"}), true);
    let starting = pod(
        "reviews-3",
        "198.18.100.3",
        json!({"app": "reviews"}),
        false,
    );
    let entry = service_entry(&s, &[], "cluster.local").unwrap();
    assert_eq!(entry.origin, "kubernetes Service shop/reviews");
    let mut docs = vec![entry];
    for p in [&ready, &plain, &starting] {
        docs.extend(workload_entry(p, &[&s], None));
    }
    assert_eq!(docs.len(), 3, "the pod that is not ready is no endpoint");
    let reg = registry(&docs);
    let service = &reg.services()[0];
    assert_eq!(service.host, "reviews.shop.svc.cluster.local");
    let http = &service.ports[0];
    assert_eq!(http.protocol, trustmesh_registry::Protocol::Http);
    let mut eps: Vec<(String, u16, String)> = reg
        .endpoints(service, http)
        .map(|e| {
            (
                e.workload.address.to_string(),
                e.port,
                e.workload.identity.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    eps.sort();
    // The named targetPort resolves to each pod's container port.
    assert_eq!(
        eps,
        vec![
            (
                "198.18.100.1".into(),
                9080,
                "spiffe://cluster.local/ns/shop/sa/reviews".into()
            ),
            (
                "198.18.100.2".into(),
                9080,
                "spiffe://cluster.local/ns/shop/sa/reviews".into()
            ),
        ]
    );
    let grpc = &service.ports[1];
    assert_eq!(grpc.protocol, trustmesh_registry::Protocol::Grpc);
    assert!(reg.endpoints(service, grpc).all(|e| e.port == 9081));
    // The sidecar's label decides mutual TLS; a pod without it is plaintext, as in Istio.
    let tls: Vec<_> = reg
        .workloads()
        .iter()
        .map(|w| (w.address.to_string(), w.tls_mode.clone()))
        .collect();
    assert!(tls.contains(&("198.18.100.1".into(), trustmesh_registry::TlsMode::Istio)));
    assert!(tls.contains(&("198.18.100.2".into(), trustmesh_registry::TlsMode::Disabled)));
    assert!(
        reg.workloads().iter().all(|w| w.node == "node-a"),
        "the pod's node is kept"
    );
    let plain_labels = &reg
        .workloads()
        .iter()
        .find(|w| w.address.to_string() == "198.18.100.2")
        .unwrap()
        .labels;
    assert_eq!(
        plain_labels.iter().collect::<Vec<_>>(),
        vec![(&"app".to_string(), &"reviews".to_string())],
        "a pod's labels are exactly its own: its sidecar claims them"
    );
    match reg.classify("198.19.200.10:80".parse().unwrap()) {
        Destination::Service(hit) => assert_eq!(hit.service.host, "reviews.shop.svc.cluster.local"),
        other => panic!("cluster IP not classified as the service: {other:?}"),
    }
}

#[test]
fn export_to_comes_from_istios_service_annotation() {
    let private = svc(json!({
        "metadata": {"name": "db", "namespace": "shop",
                     "annotations": {"networking.istio.io/exportTo": ". , ops"}},
        "spec": {"clusterIP": "198.19.200.12", "ports": [{"name": "tcp", "port": 5432}],
                 "selector": {"app": "db"}}
    }));
    let e = service_entry(&private, &[], "cluster.local").unwrap();
    assert_eq!(e.value["spec"]["exportTo"], to_yaml(json!([".", "ops"])));
    registry(&[e]);
    let public = service_entry(&reviews(), &[], "cluster.local").unwrap();
    assert!(public.value["spec"].get("exportTo").is_none());
}

#[test]
fn the_network_is_the_pods_label_else_its_namespaces() {
    let s = reviews();
    let own = pod(
        "r-1",
        "198.18.100.1",
        json!({"app": "reviews", "topology.istio.io/network": "net-a"}),
        true,
    );
    let plain = pod("r-2", "198.18.100.2", json!({"app": "reviews"}), true);
    let net = |p: &Pod, ns: Option<&str>| {
        workload_entry(p, &[&s], ns).unwrap().value["spec"]["network"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(net(&own, Some("net-b")).as_deref(), Some("net-a"));
    assert_eq!(net(&plain, Some("net-b")).as_deref(), Some("net-b"));
    assert_eq!(net(&plain, None), None);
}

#[test]
fn a_service_without_selector_takes_its_endpoint_slices() {
    let s = svc(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "198.19.200.11", "ports": [{"name": "tcp-db", "port": 5432}]}
    }));
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp-db", "port": 15432}],
        "endpoints": [
            {"addresses": ["198.18.100.9"], "conditions": {"ready": true}},
            {"addresses": ["198.18.100.10"], "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    let other: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "other"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["198.18.100.11"]}]
    }))
    .unwrap();
    let reg = registry(&[service_entry(&s, &[&slice, &other], "cluster.local").unwrap()]);
    let service = &reg.services()[0];
    let eps: Vec<(String, u16)> = reg
        .endpoints(service, &service.ports[0])
        .map(|e| (e.workload.address.to_string(), e.port))
        .collect();
    assert_eq!(eps, vec![("198.18.100.9".into(), 15432)]);
}

#[test]
fn external_name_resolves_by_dns_and_headless_has_no_address() {
    let ext = svc(json!({
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "api.example.com", "ports": [{"name": "https", "port": 443}]}
    }));
    let headless = svc(json!({
        "metadata": {"name": "peers", "namespace": "shop"},
        "spec": {"clusterIP": "None", "selector": {"app": "peers"}, "ports": [{"name": "tcp", "port": 7000}]}
    }));
    let e = service_entry(&ext, &[], "cluster.local").unwrap();
    assert_eq!(e.value["spec"]["resolution"], "DNS");
    assert_eq!(
        e.value["spec"]["endpoints"][0]["address"],
        "api.example.com"
    );
    let h = service_entry(&headless, &[], "cluster.local").unwrap();
    assert!(h.value["spec"].get("addresses").is_none());
    registry(&[e, h]);
    let none = svc(json!({"metadata": {"name": "n", "namespace": "shop"}, "spec": {"ports": []}}));
    assert!(service_entry(&none, &[], "cluster.local").is_none());
}

#[test]
fn istio_resources_keep_only_what_they_mean() {
    let obj = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": "deny-all", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
            "generation": 3, "managedFields": [{"manager": "kubectl"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                            "istio.io/dry-run": "true"}
        },
        "spec": {"action": "DENY", "rules": [{}]},
        "status": {"validationMessages": []}
    });
    let t = istio_resource(&obj).unwrap();
    assert_eq!(t.origin, "kubernetes AuthorizationPolicy shop/deny-all");
    let mut again = obj.clone();
    again["metadata"]["resourceVersion"] = json!("43");
    again["status"] = json!({"conditions": [{"type": "Reconciled"}]});
    assert_eq!(
        istio_resource(&again).unwrap(),
        t,
        "bookkeeping changes nothing served"
    );
    let meta = &t.value["metadata"];
    assert!(meta.get("uid").is_none() && meta.get("managedFields").is_none());
    assert_eq!(meta["annotations"]["istio.io/dry-run"], "true");
    assert!(meta["annotations"].get(LAST_APPLIED).is_none());
    assert!(t.value.get("status").is_none());
    assert_eq!(t.value["spec"]["action"], "DENY");
    assert!(istio_resource(&json!({"kind": "X", "metadata": {}})).is_none());
}
