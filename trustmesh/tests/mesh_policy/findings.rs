//! What porting the explicit mode's policy tests to capture mode found failing, each kept as
//! the test of what should happen, now that it does: auto mTLS honouring the endpoint's
//! port-level DISABLE, a TCP relay between sidecars offering no HTTP ALPN, an IPv4 caller's
//! own address for `ipBlocks` (a DENY by address let the caller in), `/config_dump` showing the
//! captured ports' mTLS modes, and upgrades tunnelled between sidecars over HTTP/1.1.

use super::http_requests::WEB;
use super::peer_authentication::MODES;
use super::*;
use crate::mesh_support::*;

/// A finding's topology: `sleep` (the mesh client, with its sidecar), one server workload
/// `ns/<name>` at `.11` with `apps`, its sidecar, the `policies`, and the outsider (the
/// processes drop before their namespaces, the folder last).
struct Finding {
    _sidecars: (Sidecar, Sidecar),
    _apps: Proc,
    sleep: Node,
    server: Node,
    out: Node,
    _hub: Hub,
    _tmp: tempfile::TempDir,
}

fn finding(ns: &str, name: &str, ports: &[(u16, &str)], apps_: &[&str], policies: &str) -> Finding {
    let (sleep_at, server_at) = (NET.addr(SLEEP), NET.addr(11));
    let registry = [
        workload_entry("sleep", "foo", &sleep_at, "sleep", "sleep"),
        workload_entry(name, ns, &server_at, name, name),
        service_entry(name, ns, name, ports),
    ]
    .concat();
    let (tmp, ca, hub) = setup(&registry);
    let dir = tmp.path();
    policy(dir, "policies.yaml", policies);
    let sleep = node(&hub, "sleep", &sleep_at);
    let server = node(&hub, name, &server_at);
    let out = node(&hub, "out", &NET.addr(OUTSIDE));
    let app = apps(&server.ns, apps_);
    let sidecars = (
        sidecar(dir, &ca, &sleep, "foo", "sleep", "sleep", "ALLOW_ANY"),
        sidecar(dir, &ca, &server, ns, name, name, "ALLOW_ANY"),
    );
    Finding {
        _tmp: tmp,
        _hub: hub,
        sleep,
        server,
        out,
        _apps: app,
        _sidecars: sidecars,
    }
}

/// Istio turns auto mTLS off for an endpoint whose own PeerAuthentication says DISABLE for
/// the endpoint's port (pilot/pkg/xds/endpoints/mtls_checker.go, `checkMtlsEnabled`:
/// `GetMutualTLSModeForPort(ep.EndpointPort) != MTLSDisable`, workload and port level
/// included). The registry's auto mTLS reads only the namespace- and mesh-wide modes
/// (`BestEffortInferServiceMTLSMode`), so the client sidecar starts TLS to a port whose server
/// sidecar does not terminate it, and the app gets a 503 (TLS error, InvalidContentType).
#[test]
fn auto_mtls_honours_the_endpoints_port_level_disable() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let f = finding(
        "modes",
        "httpbin",
        &[(8080, "HTTP"), (8082, "HTTP")],
        &["http:8080:permissive", "http:8082:disable"],
        MODES,
    );
    // The outsider's plaintext is served on the DISABLE port, as peer_authentication's test shows.
    let direct = format!("http://{}:8082/d", f.server.addr);
    assert_eq!(get_as_root(&f.out.ns, &direct, &[]).0, 200);
    let (code, text) = get(&f.sleep.ns, "http://httpbin.modes:8082/g");
    assert_eq!(code, 200, "{text}");
    assert!(
        !text.contains("x-forwarded-client-cert"),
        "plaintext: {text}"
    );
}

/// The client sidecar offers ALPN `h2` on every mTLS connection it makes (mesh.rs
/// `client_tls`: "HTTP/2 between sidecars; a TCP relay offers nothing", but the one cached
/// config sets `h2` for both), and the server's captured inbound serves a connection whose
/// ALPN is HTTP as HTTP (inbound.rs `handle_captured`: `by_alpn.is_some()`). So a TCP service
/// port between two sidecars gets HTTP/1.1 400 for its first bytes; no policy is involved.
/// This is what keeps proxy_e2e::tcp_policy_hot_reload_keeps_established_connection and the
/// L4 half of proxy_e2e::authorization_by_principal_namespace_path_method from being ported
/// with the mesh client (they run with a client certificate there).
#[test]
fn mesh_tcp_between_sidecars_stays_tcp() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let f = finding("db", "db", &[(9000, "TCP")], &["echo:9000"], "");
    let mut app = Conversation::app(&f.sleep.ns, "db.db", 9000);
    assert_eq!(app.say("hello").as_deref(), Some("hello"));
}

/// The capture's inbound port listens on `[::]`, so a captured IPv4 peer is accepted as
/// `::ffff:a.b.c.d`, and that is what policy sees as `source.ip` and `remote.ip`
/// (authz.rs `base_request`), what the access log shows, and what the ext_authz server gets
/// as the source address. An IPv4 `ipBlocks`, `remoteIpBlocks` or `source.ip` never matches
/// it: ALLOW rules by address deny the callers they name, and a DENY by address lets them
/// through (fail-open). Envoy reports the IPv4 address; the explicit listeners bind IPv4.
#[test]
fn captured_ipv4_peers_reach_policy_as_ipv4() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let (sleep_at, out_at) = (NET.addr(SLEEP), NET.addr(OUTSIDE));
    let policies = format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: by-address, namespace: ipb }}
spec:
  action: ALLOW
  rules:
  - from: [ {{ source: {{ ipBlocks: ["{sleep_at}/32"] }} }} ]
    to: [ {{ operation: {{ paths: ["/ip-block"] }} }} ]
  - from: [ {{ source: {{ remoteIpBlocks: ["{sleep_at}"] }} }} ]
    to: [ {{ operation: {{ paths: ["/remote-ip-block"] }} }} ]
  - to: [ {{ operation: {{ paths: ["/source-ip"] }} }} ]
    when: [ {{ key: source.ip, values: ["{sleep_at}"] }} ]
  - to: [ {{ operation: {{ paths: ["/open"] }} }} ]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{ name: deny-outsider, namespace: ipb }}
spec:
  action: DENY
  rules:
  - from: [ {{ source: {{ ipBlocks: ["{out_at}/32"] }} }} ]
"#
    );
    let f = finding(
        "ipb",
        "web",
        &[(8080, "HTTP")],
        &["http:8080:web"],
        &policies,
    );
    let by_name = |path: &str| get(&f.sleep.ns, &format!("http://web.ipb:8080{path}")).0;
    let got: Vec<u16> = ["/ip-block", "/remote-ip-block", "/source-ip", "/open"]
        .iter()
        .map(|p| by_name(p))
        .collect();
    let outsider = get_as_root(
        &f.out.ns,
        &format!("http://{}:8080/open", f.server.addr),
        &[],
    )
    .0;
    assert_eq!((got, outsider), (vec![200, 200, 200, 200], 403));
}

/// `/config_dump`'s `policies.mtlsByPort` lists the explicit inbound listeners' target ports
/// (admin.rs `config_dump`), so in capture mode it is empty and the operator cannot see the
/// effective mTLS mode of the workload's ports, which proxy_e2e::strict_mtls_refuses_
/// plaintext_and_untrusted_ca reads there.
#[test]
fn config_dump_shows_the_mtls_mode_of_captured_ports() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let f = finding(
        "strict",
        "httpbin",
        &[(8080, "HTTP")],
        &["http:8080:httpbin"],
        &strict_in("strict"),
    );
    let dump = config_dump(&f.server);
    assert_eq!(
        dump["policies"]["mtlsByPort"]["8080"]["mode"], "STRICT",
        "{}",
        dump["policies"]
    );
}

/// An HTTP/1.1 upgrade by the app behind its sidecar (upgrade.rs's scenario with the mesh
/// client). The finding: the client sidecar carried every request to the server's over
/// HTTP/2 (route.rs), where an upgrade cannot be expressed, so the server sidecar forwarded a
/// plain GET, the app switched protocols anyway (as this one does; a WebSocket server would
/// refuse) and the app got 502 "app switched protocols unasked" — authorization worked (the
/// server's log line was an allow), the tunnel did not exist. An upgrade now goes over an
/// HTTP/1.1 connection of its own, whatever the port's HTTP version between sidecars.
#[test]
fn upgrades_are_tunnelled_between_sidecars() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let f = finding("web", "web", &[(8090, "HTTP")], &["upgrade:8090"], WEB);
    let out = upgrade_then_hello(&f.sleep.ns, "web.web", 8090);
    let said = stdout(&out);
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["HTTP/1.1 101 Switching Protocols", "hello"],
        "{said}{}",
        stderr(&out)
    );
}
