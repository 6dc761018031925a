//! What the registry's tests share: Istio YAML as users write it, and loaders.
#![allow(dead_code)]

use trustmesh_policy::{MeshConfig, Problem};
use trustmesh_registry::{AutoAllocate, Options, Registry, Report};

/// Bookinfo's `reviews` on VMs: three WorkloadEntries (two with sidecars, one legacy without)
/// selected by a ServiceEntry, as Istio's "virtual machine" guides write them.
pub const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: bookinfo
spec:
  address: 10.10.0.11
  labels:
    app: reviews
    version: v1
    security.istio.io/tlsMode: istio
  serviceAccount: bookinfo-reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2
  namespace: bookinfo
spec:
  address: 10.10.0.12
  labels:
    app: reviews
    version: v2
    security.istio.io/tlsMode: istio
  serviceAccount: bookinfo-reviews
  locality: us-east/zone-a
  weight: 3
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-legacy
  namespace: bookinfo
spec:
  address: 10.10.0.13
  ports:
    http: 8080
  labels:
    app: reviews
    version: legacy
    security.istio.io/tlsMode: disabled
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews.bookinfo.svc.cluster.local
  location: MESH_INTERNAL
  ports:
  - number: 9080
    name: http
    protocol: HTTP
    targetPort: 9081
  resolution: STATIC
  workloadSelector:
    labels:
      app: reviews
"#;

/// An external API reached by DNS, as in Istio's egress task.
pub const HTTPBIN: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
  namespace: egress
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
  location: MESH_EXTERNAL
"#;

/// A TCP database with an explicit VIP.
pub const DB: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: orders-db, namespace: shop}
spec:
  hosts: [orders-db.shop.svc.cluster.local]
  addresses: [10.96.0.50]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  endpoints:
  - address: 10.20.0.5
    labels: {app: orders-db}
    serviceAccount: orders-db
"#;

/// The test range for auto-allocation.
pub fn options_198() -> Options {
    Options {
        auto_allocate: Some(AutoAllocate {
            v4: "198.19.7.0/24".parse().unwrap(),
            v6: None,
        }),
        ..Options::default()
    }
}

pub fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::from_yaml_str(yaml).unwrap()
}

pub fn load_with(yaml: &str, mesh: &MeshConfig, options: &Options) -> (Registry, Report) {
    Registry::from_yaml_str("test.yaml", yaml, mesh, options)
}

pub fn load(yaml: &str) -> (Registry, Report) {
    load_with(yaml, &MeshConfig::default(), &options_198())
}

/// Loads and insists there were no problems.
pub fn clean(yaml: &str) -> Registry {
    let (reg, report) = load(yaml);
    let errors: Vec<String> = report.problems.iter().map(Problem::to_string).collect();
    assert!(
        errors.is_empty(),
        "unexpected problems:\n{}",
        errors.join("\n")
    );
    reg
}

pub fn join(docs: &[&str]) -> String {
    docs.join("\n---\n")
}

/// The problems as the lines a person reads.
pub fn lines(report: &Report) -> Vec<String> {
    report.problems.iter().map(Problem::to_string).collect()
}
