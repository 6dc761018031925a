//! HBONE between two trustmesh sidecars in the transparent mesh (tier 2; needs root and
//! iptables, as in CI): an unmodified app calls a service by name; its sidecar sees in the
//! registry that the endpoint terminates HBONE (Istio's `networking.istio.io/tunnel: http`
//! label), routes each request on its own and carries it in an HTTP/2 CONNECT stream over
//! mTLS to the endpoint's port 15008, where the server's sidecar applies its policies, L7
//! included, with the caller's SPIFFE ID. Requests share the one mTLS connection; an upgrade
//! (WebSocket) gets a CONNECT stream of its own, and so does a connection to a TCP port, relayed
//! as bytes by both sidecars. The capture leaves 15008 alone
//! (`--inbound-tunnel-port`). Namespaces on a bridge in 198.18.7.0/24, VIPs in 198.19.7.0/24,
//! removed when the test ends.

mod mesh_support;
mod support;

use std::time::Duration;

use mesh_support::{
    apps, echo, get, hub, node, python_as_app, service_entry, sidecar, upgrade_then_hello, wait,
    Net, TOOLS,
};
use trustmesh_testkit::netns;
use trustmesh_testkit::pki::openssl::OpensslCa;
use trustmesh_testkit::tools::{stderr, stdout};

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

/// On TCP a DENY rule loses its HTTP-only fields (Istio's rule, which denies more rather
/// than less), so without the port this one would refuse every TCP connection from frontend.
const NO_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: cart-no-admin, namespace: shop }
spec:
  selector: { matchLabels: { app: cart } }
  action: DENY
  rules:
  - from: [ { source: { principals: [ cluster.local/ns/shop/sa/frontend ] } } ]
    to: [ { operation: { paths: [ /admin ], ports: [ \"9080\" ] } } ]
";

/// Bytes the app sends to cart's TCP port 9100 (an echo) through the tunnel.
const TCP_BYTES: usize = 2 * 1024 * 1024;

/// As the app: connects to cart's echo port, sends [`TCP_BYTES`] while reading what comes back,
/// ends its side, reads to the end; prints `echoed N` when all came back in order.
const TCP_ECHO: &str = r#"
import socket, threading
data = bytes(i % 251 for i in range(2 * 1024 * 1024))
s = socket.create_connection(("cart.shop", 9100), timeout=10)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
t.join()
print("echoed", len(got) if bytes(got) == data else f"{len(got)} bytes, not the same")
"#;

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
        service_entry(
            "cart",
            "shop",
            "cart",
            &[(9080, "HTTP"), (9090, "HTTP"), (9100, "TCP")]
        )
    );
    std::fs::write(dir.join("mesh/registry.yaml"), registry).unwrap();
    std::fs::write(dir.join("mesh/policy.yaml"), NO_ADMIN).unwrap();
    let ca = OpensslCa::new(dir, "mesh", TD);

    let hub = hub(NET);
    let frontend = node(&hub, "hfe", "198.18.7.10");
    let cart = node(&hub, "hcart", "198.18.7.11");
    let _app = echo(&cart.ns, "cart", 9080);
    let _chat = apps(&cart.ns, &["upgrade:9090", "echo:9100"]);
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
    // The client's sidecar saw each request (L7 on both sides): routed, logged and answered
    // one by one, not relayed as bytes. Its line is written once the answer went to the app,
    // which may be after the app has it.
    wait("the client's access log", Duration::from_secs(5), || {
        fe.access_log().iter().any(|l| {
            l["listener_port"] == 15001
                && l["protocol"] == "http"
                && l["path"] == "/admin"
                && l["status"] == 403
                && l["destination_principal"] == format!("spiffe://{TD}/ns/shop/sa/cart")
        })
    });

    // More requests, on the inner connections the client's sidecar keeps in its tunnels.
    for i in 0..5 {
        let (code, body) = get(&frontend.ns, &format!("http://cart.shop:9080/more-{i}"));
        assert_eq!(code, 200, "{body}");
    }
    wait(
        "the requests in the server's log",
        Duration::from_secs(5),
        || {
            let log = server.access_log();
            (0..5).all(|i| {
                log.iter().any(|l| {
                    l["listener_port"] == 15008 && l["path"] == format!("/more-{i}").as_str()
                })
            })
        },
    );

    // An upgrade goes through a CONNECT stream of its own, and the bytes after the 101 both
    // ways.
    let run = upgrade_then_hello(&frontend.ns, "cart.shop", 9090);
    let said = stdout(&run);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["HTTP/1.1 101 Switching Protocols", "hello"],
        "{said}{}",
        stderr(&run)
    );
    wait(
        "the upgrade in the server's log",
        Duration::from_secs(5),
        || {
            server
                .access_log()
                .iter()
                .any(|l| l["listener_port"] == 15008 && l["path"] == "/chat" && l["status"] == 101)
        },
    );

    // A TCP port goes through a CONNECT stream of its own, relayed as bytes on both sides
    // (L4): 2 MiB echoed while still being sent, and each side's end passed on (the echo app
    // closes only once it has read the client's end).
    let run = python_as_app(&frontend.ns, TCP_ECHO);
    assert_eq!(
        stdout(&run).trim(),
        format!("echoed {TCP_BYTES}"),
        "{}\nclient: {:#?}\nserver: {:#?}",
        stderr(&run),
        fe.access_log(),
        server.access_log()
    );
    let l4 = |l: &serde_json::Value, port: u16| {
        l["listener_port"] == port
            && l["protocol"] == "tcp"
            && l["bytes_received"] == TCP_BYTES
            && l["bytes_sent"] == TCP_BYTES
    };
    wait(
        "the TCP connection in both logs",
        Duration::from_secs(5),
        || {
            let client = fe.access_log().iter().any(|l| {
                l4(l, 15001)
                    && l["destination_principal"] == format!("spiffe://{TD}/ns/shop/sa/cart")
            });
            let server = server.access_log().iter().any(|l| {
                l4(l, 15008)
                    && l["source_principal"] == format!("spiffe://{TD}/ns/shop/sa/frontend")
            });
            client && server
        },
    );

    // Nothing reached cart's captured inbound port: the tunnel is the only way in here.
    assert!(
        !server
            .access_log()
            .iter()
            .any(|l| l["listener_port"] == 15006),
        "{:#?}",
        server.access_log()
    );

    // A DestinationRule that upgrades the port: HTTP/2 inside the tunnel. The server's sidecar
    // logs the version each request came in (a text format, reloaded with its config).
    server.reconfigure(|s| {
        s.mesh = format!(
            "{{ trustDomain: {TD}, outboundTrafficPolicy: {{ mode: ALLOW_ANY }}, \
             accessLogEncoding: TEXT, accessLogFormat: \"proto=%PROTOCOL% path=%REQ(:PATH)%\\n\" }}"
        );
    });
    std::fs::write(
        dir.join("mesh/pool.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: { name: cart-h2, namespace: shop }\n\
         spec:\n  host: cart.shop.svc.cluster.local\n  \
         trafficPolicy: { connectionPool: { http: { h2UpgradePolicy: UPGRADE } } }\n",
    )
    .unwrap();
    let mut n = 0;
    wait("HTTP/2 inside the tunnel", Duration::from_secs(15), || {
        n += 1;
        let (code, body) = get(&frontend.ns, &format!("http://cart.shop:9080/h2-{n}"));
        assert_eq!(code, 200, "{body}");
        std::thread::sleep(Duration::from_millis(100));
        server
            .access_lines()
            .iter()
            .any(|l| l.starts_with("proto=HTTP/2 path=/h2-"))
    });
}
