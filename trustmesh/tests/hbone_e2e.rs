//! HBONE between two trustmesh sidecars in the transparent mesh (tier 2; needs root and
//! iptables, as in CI): an unmodified app calls a service by name; its sidecar sees in the
//! registry that the endpoint terminates HBONE (Istio's `networking.istio.io/tunnel: http`
//! label) and carries the connection as an HTTP/2 CONNECT over mTLS to the endpoint's port
//! 15008, where the server's sidecar applies its policies, L7 included, with the caller's
//! SPIFFE ID. The capture leaves 15008 alone (`--inbound-tunnel-port`). Namespaces on a bridge
//! in 198.18.7.0/24, VIPs in 198.19.7.0/24, removed when the test ends.

mod mesh_support;
mod support;

use std::time::Duration;

use mesh_support::{echo, get, hub, node, service_entry, sidecar, wait, Net, TOOLS};
use trustmesh_testkit::netns;
use trustmesh_testkit::pki::openssl::OpensslCa;

const TD: &str = "cluster.local";
const NET: Net = Net {
    prefix: "198.18.7",
    vips: "198.19.7.0/24",
};

const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: frontend, namespace: shop }
spec: { address: 198.18.7.10, labels: { app: frontend }, serviceAccount: frontend }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: cart, namespace: shop }
spec: { address: 198.18.7.11, labels: { app: cart, networking.istio.io/tunnel: http }, serviceAccount: cart }
---
";

const NO_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: cart-no-admin, namespace: shop }
spec:
  selector: { matchLabels: { app: cart } }
  action: DENY
  rules:
  - from: [ { source: { principals: [ cluster.local/ns/shop/sa/frontend ] } } ]
    to: [ { operation: { paths: [ /admin ] } } ]
";

#[test]
fn a_sidecar_reaches_an_hbone_endpoint_through_its_tunnel_port_with_policies_applied() {
    if !netns::usable("hbone_e2e", TOOLS) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("mesh")).unwrap();
    let registry = format!(
        "{REGISTRY}{}",
        service_entry("cart", "shop", "cart", &[(9080, "HTTP")])
    );
    std::fs::write(dir.join("mesh/registry.yaml"), registry).unwrap();
    std::fs::write(dir.join("mesh/policy.yaml"), NO_ADMIN).unwrap();
    let ca = OpensslCa::new(dir, "mesh", TD);

    let hub = hub(NET);
    let frontend = node(&hub, "hfe", "198.18.7.10");
    let cart = node(&hub, "hcart", "198.18.7.11");
    let _app = echo(&cart.ns, "cart", 9080);
    let mut fe = sidecar(
        dir,
        &ca,
        &frontend,
        "shop",
        "frontend",
        "frontend",
        "ALLOW_ANY",
    );
    let mut server = sidecar(dir, &ca, &cart, "shop", "cart", "cart", "ALLOW_ANY");

    let mut last = (0, String::new());
    wait(
        "the cart app through the tunnel",
        Duration::from_secs(15),
        || {
            last = get(&frontend.ns, "http://cart.shop:9080/");
            last.0 == 200
        },
    );
    assert!(
        last.1
            .contains(&format!("URI=spiffe://{TD}/ns/shop/sa/frontend")),
        "the app sees the caller's identity from the tunnel: {}",
        last.1
    );
    let (code, body) = get(&frontend.ns, "http://cart.shop:9080/admin");
    assert_eq!(code, 403, "L7 policy inside the tunnel: {body}");

    // The client's sidecar tunnelled to cart's HBONE port with cart's identity pinned, and
    // cart's sidecar took it there.
    let out = fe.access_log();
    let tunnelled = out.iter().find(|l| {
        l["listener_port"] == 15001
            && l["destination_principal"] == format!("spiffe://{TD}/ns/shop/sa/cart")
    });
    assert!(tunnelled.is_some(), "{out:#?}");
    wait("the server's access log", Duration::from_secs(5), || {
        server.access_log().iter().any(|l| {
            l["listener_port"] == 15008
                && l["source_principal"] == format!("spiffe://{TD}/ns/shop/sa/frontend")
                && l["path"] == "/admin"
                && l["status"] == 403
        })
    });
    // Nothing reached cart's captured inbound port: the tunnel is the only way in here.
    assert!(
        !server
            .access_log()
            .iter()
            .any(|l| l["listener_port"] == 15006),
        "{:#?}",
        server.access_log()
    );
}
