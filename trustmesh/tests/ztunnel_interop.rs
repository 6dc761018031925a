//! Interop with Istio's ztunnel (tier 2; needs root, iptables and a ztunnel binary given by
//! path in `TRUSTMESH_ZTUNNEL`, built from istio/ztunnel by the person running it — never by
//! this repository; skipped with a SKIP line when it is not given).
//!
//! A hub namespace runs `trustmesh control` (CA and xDS on one port) on a bridge in
//! 198.18.6.0/24 (VIPs 198.19.6.0/24); namespace `zt-a` runs ztunnel in dedicated mode for
//! workload foo/app with an HTTP app, `zt-b` a trustmesh sidecar in transparent mode with
//! `controlPlane:` for foo/client with an HTTP app. ztunnel gets its certificate (CA_ADDRESS)
//! and its workloads, services and L4 policies (XDS_ADDRESS) from trustmesh; traffic crosses
//! as HBONE both ways with identities checked and each side's policies enforced.

mod control;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use control::bin;
use trustmesh_testkit::jwt::{TokenIssuer, K8S_ISSUER};
use trustmesh_testkit::net::wait_for;
use trustmesh_testkit::netns::{self, Netns};
use trustmesh_testkit::process::{Log, Proc};
use trustmesh_testkit::tools::run_ok;

const PREFIX: &str = "198.18.6";
const VIPS: &str = "198.19.6.0/24";
const APP_UID: &str = "65534";

fn ztunnel() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("TRUSTMESH_ZTUNNEL")?);
    assert!(
        p.is_file(),
        "TRUSTMESH_ZTUNNEL={} is not a file",
        p.display()
    );
    Some(p)
}

const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: app-vm, namespace: foo }
spec: { address: 198.18.6.2, serviceAccount: app, labels: { app: app, networking.istio.io/tunnel: http } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client-vm, namespace: foo }
spec: { address: 198.18.6.3, serviceAccount: client, labels: { app: client, networking.istio.io/tunnel: http } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: app, namespace: foo }
spec:
  hosts: [ app.foo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 80, targetPort: 8080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: app } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: client, namespace: foo }
spec:
  hosts: [ client.foo.svc.cluster.local ]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [ { number: 80, targetPort: 8080, name: http, protocol: HTTP } ]
  workloadSelector: { labels: { app: client } }
";

fn allow_app_from(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: app-from-client, namespace: foo }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: app }} }}\n  action: ALLOW\n  rules:\n  \
         - from: [ {{ source: {{ principals: [ \"{principal}\" ] }} }} ]\n"
    )
}

const CLIENT_NO_SECRET: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: client-no-secret, namespace: foo }
spec:
  selector: { matchLabels: { app: client } }
  action: DENY
  rules:
  - from: [ { source: { principals: [ cluster.local/ns/foo/sa/app ] } } ]
    to: [ { operation: { paths: [ /secret ] } } ]
";

/// A namespace on the hub's bridge at `<PREFIX>.<host>`, with a route to the VIPs.
fn node(hub: &Netns, tag: &str, host: u8) -> Netns {
    let ns = Netns::create(tag);
    let (dev, hub_end) = netns::veth(&ns, &[&format!("{PREFIX}.{host}/24")], hub, &[]);
    hub.ip(&["link", "set", &hub_end, "master", "br0"]);
    ns.ip(&["route", "add", VIPS, "dev", &dev]);
    ns
}

/// A Python HTTP server on `<addr>:8080` in `ns`, answering before this returns.
fn app(ns: &Netns, addr: &str) -> Proc {
    let p = Proc::start(
        ns.command("/usr/bin/python3")
            .args(["-m", "http.server", "8080", "--bind", addr])
            .stdout(std::process::Stdio::null()),
    );
    wait_for("the app listening", Duration::from_secs(10), || {
        // As root, which no capture takes.
        let out = ns
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}"])
            .arg(format!("http://{addr}:8080/"))
            .output()
            .ok()?;
        (out.stdout == b"200").then_some(())
    });
    p
}

/// curl as the app (so the capture takes it): the status code, 0 when nothing answered.
fn curl(ns: &Netns, url: &str) -> u16 {
    let out = ns
        .command("setpriv")
        .args(["--reuid", APP_UID, "--regid", APP_UID, "--clear-groups"])
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "5",
            "-w",
            "%{http_code}",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `program` in `ns` with its stdout (access logs) sent to stderr, so a [`Log`] holds both.
fn logged(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = ns.command("sh");
    cmd.args(["-c", "exec \"$0\" \"$@\" 1>&2"]).arg(program);
    cmd
}

/// The capture for the trustmesh sidecar (its HBONE port is left alone by default).
fn capture(ns: &Netns) {
    run_ok(
        ns.command(bin())
            .args(["capture", "install", "--proxy-uid", "0"]),
    );
}

/// The capture for ztunnel: the app's outbound only. ztunnel takes inbound traffic on its
/// HBONE port and calls the app at its own address itself (port 8080), which the capture's
/// loopback rule would send back to ztunnel.
fn capture_outbound(ns: &Netns) {
    run_ok(
        ns.command(bin())
            .args(["capture", "install", "--proxy-uid", "0"])
            .args([
                "--istio-inbound-ports",
                "",
                "--istio-local-outbound-ports-exclude",
                "8080",
            ]),
    );
}

/// ztunnel's `/config_dump` (its admin port, inside its namespace).
fn ztunnel_dump(ns: &Netns) -> serde_json::Value {
    let out = ns
        .command("curl")
        .args(["-s", "-m", "5", "http://127.0.0.1:15000/config_dump"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The VIP ztunnel was given for `host`.
fn vip(dump: &serde_json::Value, host: &str) -> Option<String> {
    let s = dump["services"]
        .as_array()?
        .iter()
        .find(|s| s["hostname"] == host)?;
    let v = s["vips"].as_array()?.first()?.as_str()?;
    Some(v.rsplit('/').next()?.to_string())
}

#[test]
fn ztunnel_and_a_trustmesh_sidecar_reach_each_other_over_hbone_with_policies_from_trustmesh() {
    let Some(zt) = ztunnel() else {
        eprintln!("SKIP ztunnel interop: set TRUSTMESH_ZTUNNEL to a ztunnel binary built from istio/ztunnel");
        return;
    };
    if !netns::usable("ztunnel interop", &["iptables", "curl", "setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mesh = control::Mesh::new(dir.path());
    mesh.write("registry.yaml", REGISTRY);
    mesh.write(
        "authz.yaml",
        &allow_app_from("cluster.local/ns/foo/sa/client"),
    );
    let jwks = dir.path().join("jwks.json");
    let issuer = TokenIssuer::new(&jwks, "k8s");
    let token = dir.path().join("token-app");
    std::fs::write(&token, issuer.token("foo", "app")).unwrap();

    let hub = Netns::create("zthub");
    hub.ip(&["link", "add", "br0", "type", "bridge"]);
    hub.ip(&["addr", "add", &format!("{PREFIX}.1/24"), "dev", "br0"]);
    hub.ip(&["link", "set", "br0", "up"]);
    let a = node(&hub, "zt-a", 2);
    let b = node(&hub, "zt-b", 3);

    let control_addr = format!("{PREFIX}.1:15012");
    let (mut cp, cp_log) = Proc::start_logged(hub.command(bin()).args([
        "control",
        "--ca",
        mesh.ca().to_str().unwrap(),
        "--listen",
        &control_addr,
        "--monitoring-listen",
        "127.0.0.1:15014",
        "--config-dir",
        mesh.config().to_str().unwrap(),
        "--jwt-issuer",
        K8S_ISSUER,
        "--jwks",
        jwks.to_str().unwrap(),
        "--ambient-identity",
        "spiffe://cluster.local/ns/foo/sa/app",
        "--vip-range",
        VIPS,
    ]));
    cp.wait_line("listening grpc=", Duration::from_secs(30));
    let _apps = (
        app(&a, &format!("{PREFIX}.2")),
        app(&b, &format!("{PREFIX}.3")),
    );

    // ztunnel, dedicated to foo/app, as the person running it would start it by hand.
    capture_outbound(&a);
    let root = mesh.root();
    let (_zt, zt_log): (Proc, Log) = Proc::start_logged(
        logged(&a, &zt)
            .arg("proxy")
            .env("PROXY_MODE", "dedicated")
            .env("PROXY_WORKLOAD_INFO", "foo/app-vm/app")
            .env("XDS_ADDRESS", format!("https://{control_addr}"))
            .env("CA_ADDRESS", format!("https://{control_addr}"))
            .env("XDS_ROOT_CA", &root)
            .env("CA_ROOT_CA", &root)
            .env("ALT_XDS_HOSTNAME", "istiod.istio-system.svc")
            .env("ALT_CA_HOSTNAME", "istiod.istio-system.svc")
            .env("AUTH_TOKEN", &token)
            .env("ENABLE_ORIG_SRC", "false")
            .env("POD_NAMESPACE", "foo")
            .env("POD_NAME", "app-vm")
            .env("INSTANCE_IP", format!("{PREFIX}.2")),
    );
    // The trustmesh sidecar for foo/client, everything but its certificate from the control plane.
    let svid = mesh.svid("foo", "client");
    let cfg = dir.path().join("client.yaml");
    std::fs::write(
        &cfg,
        format!(
            "workload: {{ namespace: foo, serviceAccount: client, labels: {{ app: client, networking.istio.io/tunnel: http }} }}\n\
             certs: {{ key: {key}, certChain: {chain} }}\n\
             controlPlane: {{ address: \"{control_addr}\", rootCert: {root} }}\n\
             capture: {{ vipRange: {VIPS} }}\n\
             admin: {{ address: \"127.0.0.1:15000\" }}\n",
            key = svid.join("key.pem").display(),
            chain = svid.join("cert-chain.pem").display(),
            root = root.display(),
        ),
    )
    .unwrap();
    capture(&b);
    let (_sidecar, sidecar_log) = Proc::start_logged(
        logged(&b, bin())
            .args(["proxy", "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info"),
    );
    wait_for("the sidecar ready", Duration::from_secs(30), || {
        sidecar_log
            .text()
            .contains("trustmesh proxy ready")
            .then_some(())
    });

    // ztunnel took its workloads, services and policies from trustmesh.
    let dump = wait_for(
        "ztunnel's config from trustmesh",
        Duration::from_secs(30),
        || {
            let d = ztunnel_dump(&a);
            let ok = d["workloads"].as_array().is_some_and(|w| w.len() == 2)
                && d["policies"].as_array().is_some_and(|p| !p.is_empty());
            ok.then_some(d)
        },
    );
    let app_vip = vip(&dump, "app.foo.svc.cluster.local").expect("app's VIP");
    let client_vip = vip(&dump, "client.foo.svc.cluster.local").expect("client's VIP");
    assert!(app_vip.starts_with("198.19.6."), "{app_vip}");
    let workloads = dump["workloads"].to_string();
    assert!(workloads.contains("\"HBONE\""), "{workloads}");

    // trustmesh → ztunnel: allowed by the policy ztunnel got from trustmesh.
    assert_eq!(
        curl(&b, &format!("http://{app_vip}/")),
        200,
        "{}\n{}",
        sidecar_log.text(),
        zt_log.text()
    );
    // ztunnel logs a connection when it ends, which may be just after curl has its answer.
    wait_for(
        "ztunnel logging the caller's identity",
        Duration::from_secs(5),
        || {
            zt_log
                .text()
                .contains("src.identity=\"spiffe://cluster.local/ns/foo/sa/client\"")
                .then_some(())
        },
    );
    let certs = ztunnel_dump(&a)["certificates"].to_string();
    assert!(
        certs.contains("spiffe://cluster.local/ns/foo/sa/app"),
        "ztunnel's certificate from trustmesh's CA: {certs}"
    );

    // A policy edit reaches ztunnel and it enforces it.
    mesh.write(
        "authz.yaml",
        &allow_app_from("cluster.local/ns/foo/sa/someone-else"),
    );
    wait_for(
        "ztunnel refusing the client",
        Duration::from_secs(10),
        || (curl(&b, &format!("http://{app_vip}/")) != 200).then_some(()),
    );
    wait_for(
        "ztunnel logging the policy rejection",
        Duration::from_secs(5),
        || zt_log.text().contains("policy rejection").then_some(()),
    );
    mesh.write(
        "authz.yaml",
        &allow_app_from("cluster.local/ns/foo/sa/client"),
    );

    // ztunnel → trustmesh: the sidecar sees ztunnel's identity and applies L7 policy inside
    // the tunnel.
    mesh.write("client.yaml", CLIENT_NO_SECRET);
    wait_for(
        "ztunnel reaching the sidecar",
        Duration::from_secs(10),
        || (curl(&a, &format!("http://{client_vip}/")) == 200).then_some(()),
    );
    wait_for(
        "the sidecar's DENY of /secret",
        Duration::from_secs(10),
        || (curl(&a, &format!("http://{client_vip}/secret")) == 403).then_some(()),
    );
    let access = sidecar_log.text();
    assert!(
        access.contains("\"listener_port\":15008")
            && access.contains("\"source_principal\":\"spiffe://cluster.local/ns/foo/sa/app\""),
        "the sidecar's HBONE inbound saw ztunnel's identity: {access}"
    );
    let status = run_ok(
        hub.command(bin())
            .args(["proxy-status", "--control", "127.0.0.1:15014"]),
    );
    assert!(
        status.contains("spiffe://cluster.local/ns/foo/sa/app")
            && status.contains("Address=SYNCED"),
        "{status}"
    );
    assert!(
        !cp_log.text().contains("refused an xDS stream"),
        "{}",
        cp_log.text()
    );
}
