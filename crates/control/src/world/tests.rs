use super::*;
use crate::source::{Document, Inputs};

fn doc(yaml: &str) -> Document {
    Document {
        value: serde_yaml::from_str(yaml).unwrap(),
        origin: "test.yaml#0".into(),
    }
}

fn world(docs: &[&str]) -> World {
    let inputs = Inputs {
        documents: docs.iter().map(|d| doc(d)).collect(),
        ..Default::default()
    };
    World::build(&inputs, &settings(), 1)
}

fn settings() -> Settings {
    Settings {
        trust_domain: "cluster.local".into(),
        local_roots: "ROOTS".into(),
        registry: Default::default(),
    }
}

fn names(w: &World, ns: &str, labels: &[(&str, &str)]) -> Vec<String> {
    let key = ViewKey {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    w.view(&key, types::ISTIO_RESOURCE)
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

const POLICIES: [&str; 5] = [
    "kind: AuthorizationPolicy\nmetadata: { name: mesh-wide, namespace: istio-system }\nspec: {}",
    "kind: AuthorizationPolicy\nmetadata: { name: ns-wide, namespace: foo }\nspec: {}",
    "kind: AuthorizationPolicy\nmetadata: { name: web-only, namespace: foo }\nspec: { selector: { matchLabels: { app: web } } }",
    "kind: PeerAuthentication\nmetadata: { name: broken, namespace: foo }\nspec: { selector: { matchLabels: [ not, a, map ] } }",
    "kind: RequestAuthentication\nmetadata: { name: elsewhere, namespace: bar }\nspec: {}",
];

#[test]
fn a_workload_sees_the_policies_that_select_it_and_broken_ones_of_its_namespace() {
    let w = world(&POLICIES);
    assert_eq!(
        names(&w, "foo", &[("app", "web")]),
        [
            "AuthorizationPolicy/foo/ns-wide",
            "AuthorizationPolicy/foo/web-only",
            "AuthorizationPolicy/istio-system/mesh-wide",
            "PeerAuthentication/foo/broken",
        ]
    );
    assert_eq!(
        names(&w, "foo", &[("app", "db")]),
        [
            "AuthorizationPolicy/foo/ns-wide",
            "AuthorizationPolicy/istio-system/mesh-wide",
            "PeerAuthentication/foo/broken",
        ]
    );
    assert_eq!(
        names(&w, "bar", &[]),
        [
            "AuthorizationPolicy/istio-system/mesh-wide",
            "RequestAuthentication/bar/elsewhere",
        ]
    );
}

#[test]
fn registry_entries_follow_export_to_and_workload_entries_go_everywhere() {
    let w = world(&[
        "kind: ServiceEntry\nmetadata: { name: public, namespace: foo }\nspec: { hosts: [a] }",
        "kind: ServiceEntry\nmetadata: { name: private, namespace: foo }\nspec: { hosts: [b], exportTo: [\".\"] }",
        "kind: DestinationRule\nmetadata: { name: to-bar, namespace: foo }\nspec: { host: a, exportTo: [bar] }",
        "kind: DestinationRule\nmetadata: { name: hidden, namespace: foo }\nspec: { host: a, exportTo: [\"~\"] }",
        "kind: WorkloadEntry\nmetadata: { name: vm, namespace: foo }\nspec: { address: 198.18.0.1, serviceAccount: vm, labels: { app: vm } }",
    ]);
    assert_eq!(
        names(&w, "foo", &[]),
        [
            "ServiceEntry/foo/private",
            "ServiceEntry/foo/public",
            "WorkloadEntry/foo/vm",
        ]
    );
    assert_eq!(
        names(&w, "bar", &[]),
        [
            "DestinationRule/foo/to-bar",
            "ServiceEntry/foo/public",
            "WorkloadEntry/foo/vm",
        ]
    );
    assert_eq!(w.workloads.len(), 1);
    assert_eq!(w.workloads[0].service_account, "vm");
}

#[test]
fn versions_are_digests_of_content_so_replicas_agree_and_one_change_moves_one_version() {
    let a = world(&POLICIES);
    let b = world(&POLICIES);
    assert_eq!(a.version, b.version);
    let mut edited = POLICIES;
    edited[1] = "kind: AuthorizationPolicy\nmetadata: { name: ns-wide, namespace: foo }\nspec: { action: DENY }";
    let c = world(&edited);
    assert_ne!(a.version, c.version);
    let key = ViewKey {
        namespace: "foo".into(),
        labels: [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect(),
    };
    let (va, vc) = (
        a.view(&key, types::ISTIO_RESOURCE).unwrap(),
        c.view(&key, types::ISTIO_RESOURCE).unwrap(),
    );
    let changed: Vec<&String> = va
        .iter()
        .filter(|(n, r)| vc[*n].version != r.version)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(changed, ["AuthorizationPolicy/foo/ns-wide"]);
}

#[test]
fn a_duplicate_is_reported_and_the_first_is_served() {
    let w = world(&[POLICIES[1], POLICIES[1]]);
    assert_eq!(w.resource_count(), 1);
    assert!(
        w.problems.iter().any(|p| p.contains("defined again")),
        "{:?}",
        w.problems
    );
}

#[test]
fn the_mesh_config_and_bundles_are_served_to_everyone() {
    let inputs = Inputs {
        bundles: vec![("other.example".into(), "OTHER".into())],
        ..Default::default()
    };
    let w = World::build(&inputs, &settings(), 1);
    let key = ViewKey {
        namespace: "x".into(),
        labels: Default::default(),
    };
    let bundles = w.view(&key, types::TRUST_BUNDLE).unwrap();
    assert_eq!(
        bundles.keys().collect::<Vec<_>>(),
        ["cluster.local", "other.example"]
    );
    let mesh = w.view(&key, types::MESH_CONFIG).unwrap();
    let m = <MeshResource as prost::Message>::decode(mesh["mesh"].body.value.as_slice()).unwrap();
    assert!(m.mesh_config_json.contains("cluster.local"));
    assert!(w.view(&key, "type.googleapis.com/unknown").is_none());
}

#[test]
fn ztunnels_types_come_from_the_same_documents() {
    let w = world(&[
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: vm, namespace: foo }\nspec: { address: 198.18.0.1, serviceAccount: vm, labels: { app: vm } }",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: vm, namespace: foo }\nspec: { hosts: [vm.foo.svc.cluster.local], resolution: STATIC, location: MESH_INTERNAL, ports: [ { number: 80, name: http, protocol: HTTP } ], workloadSelector: { labels: { app: vm } } }",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: vm-allow, namespace: foo }\nspec: { selector: { matchLabels: { app: vm } }, rules: [ { from: [ { source: { principals: [cluster.local/ns/foo/sa/web] } } ] } ] }",
    ]);
    let addresses: Vec<String> = w
        .ambient_view(types::ADDRESS)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        addresses,
        [
            "Kubernetes/networking.istio.io/WorkloadEntry/foo/vm",
            "foo/vm.foo.svc.cluster.local",
        ]
    );
    let authz: Vec<String> = w
        .ambient_view(types::AUTHORIZATION)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(authz, ["foo/vm-allow"]);
    assert!(w.ambient_view(types::ISTIO_RESOURCE).is_none());
}
