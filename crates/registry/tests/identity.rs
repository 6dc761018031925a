//! Workload identities as Istio derives them (service account + namespace + the mesh's trust
//! domain), a sidecar's own workload, endpoint ports, and loading from a folder.

mod support;

use std::collections::BTreeMap;

use support::{clean, join, load_with, mesh, options_198, REVIEWS};
use trustmesh_registry::{
    EndpointAddress, IdentifyError, Options, Registry, SelfRef, TlsMode, Workload,
};

#[test]
fn identity_comes_from_service_account_namespace_and_trust_domain() {
    let (reg, report) = load_with(
        REVIEWS,
        &mesh("meshConfig:\n  trustDomain: prod.example\n"),
        &options_198(),
    );
    assert!(report.problems.is_empty());
    let v1 = reg.workload_entry("bookinfo", "reviews-v1").unwrap();
    assert_eq!(
        v1.identity.as_ref().unwrap().as_str(),
        "spiffe://prod.example/ns/bookinfo/sa/bookinfo-reviews"
    );
    assert!(v1.service_account_named && v1.has_sidecar());
    // No serviceAccount: Kubernetes' `default`; the label says there is no sidecar.
    let legacy = reg.workload_entry("bookinfo", "reviews-legacy").unwrap();
    assert_eq!(
        legacy.identity.as_ref().unwrap().as_str(),
        "spiffe://prod.example/ns/bookinfo/sa/default"
    );
    assert_eq!(
        (legacy.service_account_named, legacy.tls_mode.clone()),
        (false, TlsMode::Disabled)
    );
    let v2 = reg.workload_entry("bookinfo", "reviews-v2").unwrap();
    assert_eq!((v2.weight, v2.locality.as_str()), (3, "us-east/zone-a"));
    // Policy sees namespace and labels.
    let w = v1.policy_workload();
    assert_eq!(
        (w.namespace.as_str(), w.labels["app"].as_str()),
        ("bookinfo", "reviews")
    );
}

/// A WorkloadEntry `name` in namespace `ns` with `spec` (flow-style YAML).
fn entry(name: &str, spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec: {spec}\n")
}

#[test]
fn the_tls_mode_label_else_a_named_service_account_else_disabled() {
    let reg = clean(&join(&[
        &entry("labelled", "{address: 10.0.0.1, labels: {security.istio.io/tlsMode: istio}}"),
        &entry("named", "{address: 10.0.0.2, serviceAccount: sa}"),
        &entry("neither", "{address: 10.0.0.3}"),
        &entry("opted-out", "{address: 10.0.0.4, serviceAccount: sa, labels: {security.istio.io/tlsMode: disabled}}"),
        &entry("custom", "{address: 10.0.0.5, labels: {security.istio.io/tlsMode: mtls-v2}}"),
    ]));
    let mode = |n: &str| reg.workload_entry("ns", n).unwrap().tls_mode.clone();
    assert_eq!(mode("labelled"), TlsMode::Istio);
    assert_eq!(mode("named"), TlsMode::Istio);
    assert_eq!(mode("neither"), TlsMode::Disabled);
    assert_eq!(mode("opted-out"), TlsMode::Disabled);
    assert_eq!(mode("custom"), TlsMode::Other("mtls-v2".into()));
    assert!(!reg.workload_entry("ns", "custom").unwrap().has_sidecar());
}

#[test]
fn a_sidecar_finds_its_own_workload_by_entry_name_or_labels() {
    let reg = clean(REVIEWS);
    let by_name = reg
        .identify(SelfRef::Entry {
            namespace: "bookinfo",
            name: "reviews-v2",
        })
        .unwrap();
    assert_eq!(
        by_name.identity.as_ref().unwrap().as_str(),
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    );
    let labels = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let v1 = labels(&[("app", "reviews"), ("version", "v1")]);
    let found: &Workload = reg
        .identify(SelfRef::Labels {
            namespace: "bookinfo",
            labels: &v1,
        })
        .unwrap();
    assert_eq!(found.entry_name(), Some("reviews-v1"));
    // v1 and v2 share their account: one identity, so `app=reviews, tlsMode=istio` is fine.
    let both = labels(&[("app", "reviews"), ("security.istio.io/tlsMode", "istio")]);
    assert!(reg
        .identify(SelfRef::Labels {
            namespace: "bookinfo",
            labels: &both
        })
        .is_ok());
    // With the legacy entry (account `default`) the identity would be a guess.
    let all = labels(&[("app", "reviews")]);
    let e = reg
        .identify(SelfRef::Labels {
            namespace: "bookinfo",
            labels: &all,
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "WorkloadEntries in namespace bookinfo with labels app=reviews have different service accounts (reviews-legacy: default, reviews-v1: bookinfo-reviews, reviews-v2: bookinfo-reviews); name one entry"
    );
    let e = reg
        .identify(SelfRef::Entry {
            namespace: "bookinfo",
            name: "ratings",
        })
        .unwrap_err();
    assert_eq!(
        e,
        IdentifyError::NotFound {
            what: "bookinfo/ratings".into()
        }
    );
    let e = reg
        .identify(SelfRef::Labels {
            namespace: "default",
            labels: &v1,
        })
        .unwrap_err();
    assert!(matches!(e, IdentifyError::NotFound { .. }));
}

#[test]
fn endpoint_ports_follow_istios_priority() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app, namespace: ns}
spec:
  hosts: [app.ns.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 81, name: admin, protocol: HTTP}
  endpoints:
  - {address: 10.0.0.1}
  - {address: 10.0.0.2, ports: {http: 9090, admin: 9091}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: sock, namespace: ns}
spec:
  hosts: [sock.ns.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: grpc, protocol: GRPC}]
  endpoints: [{address: "unix:///var/run/app.sock"}]
"#;
    let reg = clean(yaml);
    let ports = |host: &str, port: u16| -> Vec<(String, u16)> {
        let s = reg.services().iter().find(|s| s.host == host).unwrap();
        reg.endpoints(s, s.port(port).unwrap())
            .map(|e| (e.address().to_string(), e.port))
            .collect()
    };
    // entry's ports[name] > targetPort > the service port.
    assert_eq!(
        ports("app.ns.svc.cluster.local", 80),
        [("10.0.0.1".into(), 8080), ("10.0.0.2".into(), 9090)]
    );
    assert_eq!(
        ports("app.ns.svc.cluster.local", 81),
        [("10.0.0.1".into(), 81), ("10.0.0.2".into(), 9091)]
    );
    // A Unix socket has no port.
    assert_eq!(
        ports("sock.ns.svc.cluster.local", 7000),
        [("unix:///var/run/app.sock".into(), 0)]
    );
    let w = &reg.workloads()[2];
    assert_eq!(w.address, EndpointAddress::Unix("/var/run/app.sock".into()));
}

#[test]
fn an_invalid_trust_domain_is_one_problem_and_no_identities() {
    let (reg, report) = load_with(
        REVIEWS,
        &mesh("trustDomain: \"spiffe://bad\""),
        &options_198(),
    );
    let l: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(
        l[0].starts_with("(mesh config):1:trustDomain: no workload identity can be made"),
        "{l:#?}"
    );
    assert!(reg.workloads().iter().all(|w| w.identity.is_none()));
    let e = reg
        .identify(SelfRef::Entry {
            namespace: "bookinfo",
            name: "reviews-v1",
        })
        .unwrap_err();
    assert_eq!(e, IdentifyError::NoTrustDomain);
}

#[test]
fn loads_a_folder_shared_with_security_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reviews.yaml"), REVIEWS).unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("egress")).unwrap();
    std::fs::write(dir.path().join("egress/httpbin.yml"), support::HTTPBIN).unwrap();
    let (reg, report) =
        Registry::load(&[dir.path().to_path_buf()], &mesh(""), &Options::default()).unwrap();
    assert!(report.problems.is_empty() && report.notices.is_empty());
    assert_eq!(
        (
            report.workload_entries,
            report.service_entries,
            report.services
        ),
        (3, 2, 2)
    );
    let hosts: Vec<&str> = reg.services().iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        hosts,
        ["httpbin.org", "reviews.bookinfo.svc.cluster.local"],
        "files in path order"
    );
    let e = Registry::load(
        &[dir.path().join("missing")],
        &mesh(""),
        &Options::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing: cannot read"), "{e}");
}

#[test]
fn the_tunnel_label_says_which_workloads_terminate_hbone() {
    let yaml = |name: &str, tunnel: Option<&str>| {
        let label = tunnel.map_or(String::new(), |t| {
            format!("    networking.istio.io/tunnel: \"{t}\"\n")
        });
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  \
             namespace: ns\nspec:\n  address: 10.0.0.{}\n  serviceAccount: sa\n  labels:\n    \
             app: {name}\n{label}---\n",
            name.len()
        )
    };
    let text = [
        yaml("a", Some("http")),
        yaml("bb", Some("quic, http")),
        yaml("ccc", Some("quic")),
        yaml("dddd", Some("HTTP")),
        yaml("eeeee", None),
    ]
    .concat();
    let (reg, report) = support::load(&text);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let hbone = |n: &str| reg.workload_entry("ns", n).unwrap().speaks_hbone();
    // Istio's value is a list: `http` anywhere in it means HBONE; the names are exact.
    assert!(hbone("a") && hbone("bb"));
    assert!(!hbone("ccc") && !hbone("dddd") && !hbone("eeeee"));
    assert_eq!(
        trustmesh_registry::TUNNEL_LABEL,
        "networking.istio.io/tunnel"
    );
}

#[test]
fn workloads_are_found_by_identity_through_the_index() {
    let reg = clean(&join(&[
        &entry("a1", "{address: 10.0.0.1, serviceAccount: a}"),
        &entry("b1", "{address: 10.0.0.2, serviceAccount: b}"),
        &entry("a2", "{address: 10.0.0.3, serviceAccount: a}"),
    ]));
    let id = |sa: &str| {
        trustmesh_identity::SpiffeId::parse(&format!("spiffe://cluster.local/ns/ns/sa/{sa}"))
            .unwrap()
    };
    let names = |sa: &str| -> Vec<String> {
        reg.workloads_with(&id(sa))
            .map(|w| w.address.to_string())
            .collect()
    };
    // Every workload of that identity, in registry order, and nothing else.
    assert_eq!(names("a"), ["10.0.0.1", "10.0.0.3"]);
    assert_eq!(names("b"), ["10.0.0.2"]);
    assert!(names("nobody").is_empty());
    // The index agrees with a scan for every identity in the registry.
    for w in reg.workloads() {
        let id = w.identity.as_ref().unwrap();
        let scanned: Vec<_> = reg
            .workloads()
            .iter()
            .filter(|o| o.identity.as_ref() == Some(id))
            .map(|o| o.address.to_string())
            .collect();
        let indexed: Vec<_> = reg
            .workloads_with(id)
            .map(|o| o.address.to_string())
            .collect();
        assert_eq!(indexed, scanned);
    }
}
