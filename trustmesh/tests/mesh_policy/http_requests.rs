//! What the `web` workload's DENY policies see of HTTP requests on captured connections:
//! paths normalized before policy (and the app seeing the same path), malformed requests
//! refused before policy, request headers, upgrades, and reloads changing the decision or the
//! normalization. Steps of [`super::authorization`]'s test, on its topology.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::authorization::Mesh;
use super::*;
use crate::mesh_support::*;

/// normalization.rs's DENY_ADMIN, upgrade.rs's DENY (`/admin/*`) and app_connections.rs's
/// header condition, for the `web` namespace.
pub(super) const WEB: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: no-admin, namespace: web }\nspec:\n  action: DENY\n  rules: [ { to: [ { operation: { paths: [\"/admin/*\", \"/admin\"] } } ] } ]\n---\n\
apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: block-flagged, namespace: web }\nspec:\n  action: DENY\n  rules:\n  - when:\n    - key: request.headers[X-Block]\n      values: [\"yes\"]\n";

/// normalization.rs: request targets that once slipped past a DENY on `/admin`.
const ADMIN_IN_DISGUISE: &[&str] = &[
    "/admin/x",
    "/foo/../admin/x",
    "/./admin/x",
    "/%61dmin/x",
    "/adm%69n",
    "/foo/%2e%2e/admin/x",
    "/foo/%2E./admin/x",
    "/public/../admin/x",
    "/a/b/../../admin",
    "/../admin/x",
    "/foo\\..\\admin\\x",
    "/admin\\x",
    "/admin/x?q=/../public",
];

/// Disguised admin paths are denied over HTTP/1.1 and HTTP/2, and what passes reaches the app
/// normalized: policy and app see the same path
/// (normalization.rs::disguised_admin_paths_are_denied_over_http1_and_http2).
pub(super) fn disguised_paths(mesh: &Mesh) {
    let (out, web_app, web_sc) = (&mesh.out, &mesh.web_app, &mesh.web_sc);
    let web_url = web_url(mesh);
    let target = |t: &str, h2: bool| request_target(mesh, t, h2);
    for h2 in [false, true] {
        for t in ADMIN_IN_DISGUISE {
            assert_eq!(target(t, h2), 403, "{t} h2={h2}\n{}", web_sc.log.text());
        }
    }
    for t in [
        "http://app.example/foo/../admin/x",
        "http://app.example/%61dmin",
    ] {
        assert_eq!(target(t, false), 403, "{t}");
    }
    assert_eq!(
        app_saw(web_app),
        Vec::<String>::new(),
        "nothing reached the app"
    );
    // What passes reaches the app normalized.
    let passing = [
        ("/public/./x/../y?a=/../b", "/public/y?a=/../b"),
        ("/%7Euser/%41bc", "/~user/Abc"),
        ("/files/a%2Fb.txt", "/files/a%2Fb.txt"),
        ("/static/app.js", "/static/app.js"),
    ];
    let mut want = Vec::new();
    for (sent, received) in passing {
        assert_eq!(target(sent, false), 200, "{sent}");
        assert_eq!(target(sent, true), 200, "{sent} h2");
        want.extend([format!("web GET {received}"), format!("web GET {received}")]);
    }
    let (code, text) = get_as_root(
        &out.ns,
        &web_url,
        &["--request-target", "http://app.example/public/../ok"],
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(seen_header(&text, "host"), Some("app.example"), "{text}");
    want.push("web GET /ok".into());
    assert_eq!(app_saw(web_app), want);
}

/// Malformed requests get 400 (405 for CONNECT) and never reach the app
/// (normalization.rs::malformed_requests_get_400_and_never_reach_the_app).
pub(super) fn malformed_requests(mesh: &Mesh) {
    let (out, web_app) = (&mesh.out, &mesh.web_app);
    let (web_at, web_url) = (&mesh.web.addr, web_url(mesh));
    let target = |t: &str, h2: bool| request_target(mesh, t, h2);
    for h2 in [false, true] {
        assert_eq!(target("/x%00", h2), 400, "h2={h2}");
        assert_eq!(target("/%00admin", h2), 400, "h2={h2}");
    }
    assert_eq!(get_as_root(&out.ns, &web_url, &["-X", "get"]).0, 400);
    let lowercase_h2 = ["-X", "get", "--http2-prior-knowledge"];
    assert_eq!(get_as_root(&out.ns, &web_url, &lowercase_h2).0, 400);
    assert_eq!(get_as_root(&out.ns, &web_url, &["-H", "Host:"]).0, 400);
    let web_addr = format!("{web_at}:8080");
    let two_hosts = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_eq!(
        raw(&out.ns, &web_addr, two_hosts),
        "HTTP/1.1 400 Bad Request"
    );
    let connect = b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n";
    assert_eq!(
        raw(&out.ns, &web_addr, connect),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        app_saw(web_app),
        Vec::<String>::new(),
        "nothing reached the app"
    );
    // A broken chunked body is the client's fault: 400, not the app's 503.
    let chunked = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n";
    assert_eq!(raw(&out.ns, &web_addr, chunked), "HTTP/1.1 400 Bad Request");
    assert_eq!(
        raw(&out.ns, &web_addr, b"GET /ok HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 200 OK"
    );
    app_saw(web_app);
}

/// A DENY on a request header (app_connections.rs::policies_reading_request_headers_see_them).
pub(super) fn header_condition(mesh: &Mesh) {
    let (out, web_app, web_url) = (&mesh.out, &mesh.web_app, web_url(mesh));
    let (code, text) = get_as_root(&out.ns, &web_url, &["-H", "x-block: yes"]);
    assert_eq!((code, body(&text)), (403, "RBAC: access denied"), "{text}");
    assert_eq!(
        get_as_root(&out.ns, &web_url, &["-H", "x-block: no"]).0,
        200
    );
    assert_eq!(get_as_root(&out.ns, &web_url, &[]).0, 200);
    assert_eq!(app_saw(web_app).len(), 2);
}

/// An upgrade is authorized like any request, then tunnelled; a denied one never reaches
/// the app (upgrade.rs::upgrade_is_authorized_then_tunnelled).
pub(super) fn upgrade(mesh: &Mesh) {
    let (out, web_at, upgrade_app) = (&mesh.out, &mesh.web.addr, &mesh.upgrade_app);
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let (addr, request) = (format!("{web_at}:8090"), upgrade("/chat"));
    let tunnelled = out.ns.run(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut echoed = Vec::new();
        for msg in [&b"hello"[..], b"second frame"] {
            s.write_all(msg).unwrap();
            let mut buf = vec![0u8; msg.len()];
            let _ = reader.read_exact(&mut buf);
            echoed.push(String::from_utf8_lossy(&buf).to_string());
        }
        (head, echoed)
    });
    assert!(tunnelled.0.starts_with("HTTP/1.1 101"), "{tunnelled:?}");
    assert!(
        tunnelled
            .0
            .to_ascii_lowercase()
            .contains("upgrade: websocket"),
        "{tunnelled:?}"
    );
    assert_eq!(tunnelled.1, ["hello", "second frame"]);
    let denied = raw(
        &out.ns,
        &format!("{web_at}:8090"),
        upgrade("/admin/ws").as_bytes(),
    );
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert_eq!(app_saw(upgrade_app), ["upgrade /chat"]);
}

/// Hot reload changes the decision for the mesh client within 2 s
/// (proxy_e2e::http_policy_hot_reload_changes_decision).
pub(super) fn hot_reload(mesh: &Mesh) {
    let (dir, sleep, web, web_app) = (&mesh.dir, &mesh.sleep, &mesh.web, &mesh.web_app);
    let web_by_name = "http://web.web:8080/x";
    assert_eq!(get(&sleep.ns, web_by_name).0, 200);
    let generation = config_dump(web)["generation"].as_u64().unwrap();
    policy(
        dir,
        "web-deny-get.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: deny-get, namespace: web }\nspec:\n  action: DENY\n  rules:\n  - to: [ { operation: { methods: [GET] } } ]\n",
    );
    let started = Instant::now();
    wait("the DENY of GET", Duration::from_secs(4), || {
        get(&sleep.ns, web_by_name).0 == 403
    });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(config_dump(web)["generation"].as_u64().unwrap() > generation);
    unpolicy(dir, "web-deny-get.yaml");
    wait("the DENY of GET removed", Duration::from_secs(4), || {
        get(&sleep.ns, web_by_name).0 == 200
    });
    app_saw(web_app);
}

/// Encoded slashes follow the mesh config's pathNormalization, changed by a reload of the
/// sidecar's config (normalization.rs::encoded_slashes_follow_the_mode).
pub(super) fn encoded_slashes(mesh: &mut Mesh) {
    // BASE (the default): an encoded slash beside a dot segment is refused, one inside a name
    // passes unchanged.
    assert_eq!(request_target(mesh, "/foo/..%2fadmin/x", false), 400);
    assert_eq!(request_target(mesh, "/foo/..%5Cadmin/x", true), 400);
    assert_eq!(request_target(mesh, "/admin%2Fx", false), 200);
    // DECODE_AND_MERGE_SLASHES: decoded, so policy sees /admin/x.
    normalize(mesh, "DECODE_AND_MERGE_SLASHES");
    for t in [
        "/foo/..%2fadmin/x",
        "/admin%2Fx",
        "//admin//x",
        "/foo%5c..%5cadmin",
    ] {
        assert_eq!(request_target(mesh, t, false), 403, "{t}");
    }
    assert_eq!(request_target(mesh, "/a%2Fb//c", true), 200);
    // NONE: the path as sent.
    normalize(mesh, "NONE");
    assert_eq!(request_target(mesh, "/foo/../admin/x", false), 200);
    assert_eq!(request_target(mesh, "/admin%00", false), 400);
    assert_eq!(
        app_saw(&mesh.web_app),
        [
            "web GET /admin%2Fx",
            "web GET /a/b/c",
            "web GET /foo/../admin/x"
        ]
    );
}

/// Rewrites the web sidecar's mesh config with the path normalization `mode` and waits for
/// the reload.
fn normalize(mesh: &mut Mesh, mode: &str) {
    let generation = config_dump(&mesh.web)["generation"].as_u64().unwrap();
    mesh.web_sc.reconfigure(|spec| {
        spec.mesh = format!(
            "{{ trustDomain: {TD}, outboundTrafficPolicy: {{ mode: ALLOW_ANY }}, \
             pathNormalization: {{ normalization: {mode} }} }}"
        )
    });
    wait(mode, Duration::from_secs(10), || {
        config_dump(&mesh.web)["generation"].as_u64().unwrap() > generation
    });
}

/// `http://<web>:8080/`, where the outsider sends its request targets.
fn web_url(mesh: &Mesh) -> String {
    format!("http://{}:8080/", mesh.web.addr)
}

/// The status of a plaintext request from the outsider to the web workload with the request
/// target `target` (curl's `--request-target`), over HTTP/1.1 or HTTP/2 with prior knowledge.
fn request_target(mesh: &Mesh, target: &str, h2: bool) -> u16 {
    let mut args = vec!["--request-target", target];
    if h2 {
        args.push("--http2-prior-knowledge");
    }
    get_as_root(&mesh.out.ns, &web_url(mesh), &args).0
}
