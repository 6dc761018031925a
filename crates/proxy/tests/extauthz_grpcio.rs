//! The CUSTOM-action client against a third-party ext_authz server: a Python grpcio
//! implementation (tests/python/ext_authz_server.py) that compiles our .proto files with
//! grpc_tools, so both the wire format and the semantics are checked end to end on loopback.
//!
//! Needs python3 with grpcio + grpcio-tools. Without them the tests print a loud SKIP, except
//! under CI (`CI` set), where their absence is a failure.

use hyper::http::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use trustmesh_proxy::extauthz::{
    BodySettings, CheckInput, ExtAuthzClient, ExtAuthzOutcome, HeaderAction,
};
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::tools::{python_has, ExtAuthzServer};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/foo/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/bar/sa/server";

fn grpcio_available() -> bool {
    python_has("grpc, grpc_tools", "ext_authz interop test")
}

/// The Python authorizer (killed on drop), its log in a temporary folder of its own.
struct Authorizer {
    server: ExtAuthzServer,
    _dir: tempfile::TempDir,
}

impl Authorizer {
    fn start() -> Authorizer {
        let dir = tempfile::tempdir().unwrap();
        Authorizer {
            server: ExtAuthzServer::start(dir.path()),
            _dir: dir,
        }
    }

    fn target(&self) -> String {
        self.server.target()
    }

    /// The CheckRequests the server recorded, oldest first.
    fn seen(&self) -> Vec<Value> {
        self.server.seen()
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            hyper::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn input<'a>(path: &'a str, headers: &'a HeaderMap) -> CheckInput<'a> {
    CheckInput {
        source_addr: Some(SocketAddr::from(([127, 0, 0, 7], 41000))),
        source_principal: Some(CLIENT_ID),
        destination_addr: Some(SocketAddr::from(([127, 0, 0, 1], 15006))),
        destination_principal: Some(SERVER_ID),
        method: "GET",
        path,
        host: "server.bar.svc:8080",
        scheme: "https",
        protocol: "HTTP/1.1",
        headers,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn allow_carries_header_mutations_and_server_sees_the_request() {
    if !grpcio_available() {
        return;
    }
    let server = Authorizer::start();
    let rt = runtime();
    let client = ExtAuthzClient::new(&server.target(), Duration::from_secs(5), false, 403).unwrap();
    let h = headers(&[
        ("x-ext-authz", "allow"),
        ("x-remove-me", "gone"),
        ("x-ext-authz-appended", "first"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("x-request-id", "req-42"),
    ]);
    let outcome = rt.block_on(client.check(&input("/api/items?x=1", &h)));
    let ExtAuthzOutcome::Allow {
        headers_to_add,
        headers_to_remove,
        failed_open,
        ..
    } = &outcome
    else {
        panic!("expected allow, got {outcome:?}");
    };
    assert!(!failed_open);
    let added = |name: &str| {
        headers_to_add
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} not added: {headers_to_add:?}"))
    };
    assert_eq!(added("x-ext-authz-check-result").value, "allowed");
    assert_eq!(
        added("x-ext-authz-check-result").action,
        HeaderAction::Overwrite
    );
    assert_eq!(added("x-ext-authz-seen-principal").value, CLIENT_ID);
    assert_eq!(added("x-ext-authz-seen-path").value, "/api/items?x=1");
    assert_eq!(added("x-ext-authz-appended").action, HeaderAction::Append);
    assert_eq!(headers_to_remove, &vec!["x-remove-me".to_string()]);

    let mut forwarded = h.clone();
    outcome.apply_to_request(&mut forwarded);
    assert_eq!(forwarded["x-ext-authz-check-result"], "allowed");
    assert!(!forwarded.contains_key("x-remove-me"));
    let appended: Vec<_> = forwarded.get_all("x-ext-authz-appended").iter().collect();
    assert_eq!(appended, ["first", "second"]);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s["source_principal"], CLIENT_ID);
    assert_eq!(s["source_address"], "127.0.0.7");
    assert_eq!(s["source_port"], 41000);
    assert_eq!(s["destination_principal"], SERVER_ID);
    assert_eq!(s["method"], "GET");
    assert_eq!(s["path"], "/api/items?x=1");
    assert_eq!(s["host"], "server.bar.svc:8080");
    assert_eq!(s["scheme"], "https");
    assert_eq!(s["protocol"], "HTTP/1.1");
    assert_eq!(s["has_time"], true);
    assert_eq!(s["headers"]["x-multi"], "a,b");
    assert_eq!(s["headers"][":path"], "/api/items?x=1");
    assert_eq!(s["headers"][":authority"], "server.bar.svc:8080");
}

#[test]
fn deny_uses_the_denied_response() {
    if !grpcio_available() {
        return;
    }
    let server = Authorizer::start();
    let rt = runtime();
    let client = ExtAuthzClient::new(&server.target(), Duration::from_secs(5), true, 403).unwrap();
    let h = headers(&[("x-ext-authz", "deny"), ("x-ext-authz-deny-status", "401")]);
    let outcome = rt.block_on(client.check(&input("/admin", &h)));
    assert_eq!(
        outcome,
        ExtAuthzOutcome::Deny {
            status: 401,
            body: "denied by ext_authz: /admin".into(),
            headers: vec![("x-ext-authz-check-result".into(), "denied".into())],
            error: None,
        },
        "a decision to deny is not an error: failOpen must not turn it into an allow"
    );
    let h = headers(&[("x-ext-authz", "nope")]);
    let outcome = rt.block_on(client.check(&input("/other", &h)));
    assert!(
        matches!(outcome, ExtAuthzOutcome::Deny { status: 403, .. }),
        "{outcome:?}"
    );
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn timeouts_follow_fail_open() {
    if !grpcio_available() {
        return;
    }
    let server = Authorizer::start();
    let rt = runtime();
    let h = headers(&[("x-ext-authz", "allow"), ("x-ext-authz-sleep-ms", "2000")]);
    let timeout = Duration::from_millis(300);

    let open = ExtAuthzClient::new(&server.target(), timeout, true, 403).unwrap();
    let started = Instant::now();
    let outcome = rt.block_on(open.check(&input("/slow", &h)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(outcome, ExtAuthzOutcome::Allow { failed_open: true, ref headers_to_add, .. } if headers_to_add.is_empty()),
        "{outcome:?}"
    );

    let closed = ExtAuthzClient::new(&server.target(), timeout, false, 403).unwrap();
    let started = Instant::now();
    let outcome = rt.block_on(closed.check(&input("/slow", &h)));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    match outcome {
        ExtAuthzOutcome::Deny { status, error, .. } => {
            assert_eq!(status, 403);
            assert!(error.is_some());
        }
        other => panic!("expected deny, got {other:?}"),
    }
    // The same client still works for fast requests afterwards.
    let fast = headers(&[("x-ext-authz", "allow")]);
    assert!(rt.block_on(closed.check(&input("/fast", &fast))).is_allow());
}

#[test]
fn unreachable_authorizer_follows_fail_open_and_status_on_error() {
    // No Python needed: nothing listens on the port.
    let target = format!("127.0.0.1:{}", free_port());
    let rt = runtime();
    let h = headers(&[("x-ext-authz", "allow")]);
    let timeout = Duration::from_millis(500);

    let closed = ExtAuthzClient::new(&target, timeout, false, 403).unwrap();
    let outcome = rt.block_on(closed.check(&input("/", &h)));
    assert!(
        matches!(
            outcome,
            ExtAuthzOutcome::Deny {
                status: 403,
                error: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );

    let custom = ExtAuthzClient::new(&target, timeout, false, 503).unwrap();
    let outcome = rt.block_on(custom.check(&input("/", &h)));
    assert!(
        matches!(outcome, ExtAuthzOutcome::Deny { status: 503, .. }),
        "{outcome:?}"
    );

    let open = ExtAuthzClient::new(&target, timeout, true, 403).unwrap();
    let outcome = rt.block_on(open.check(&input("/", &h)));
    assert!(
        matches!(
            outcome,
            ExtAuthzOutcome::Allow {
                failed_open: true,
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[test]
fn allowed_headers_limit_what_the_authorizer_sees() {
    if !grpcio_available() {
        return;
    }
    let server = Authorizer::start();
    let rt = runtime();
    let client = ExtAuthzClient::new(&server.target(), Duration::from_secs(5), false, 403)
        .unwrap()
        .with_allowed_headers(["X-Ext-Authz"])
        .unwrap();
    let h = headers(&[("x-ext-authz", "allow"), ("cookie", "session=secret")]);
    assert!(rt.block_on(client.check(&input("/p", &h))).is_allow());
    let seen = server.seen();
    let sent = seen[0]["headers"].as_object().unwrap();
    assert!(sent.contains_key("x-ext-authz"));
    assert!(
        !sent.contains_key("cookie"),
        "cookie must not leak: {sent:?}"
    );
}

#[test]
fn request_body_follows_include_request_body_in_check() {
    if !grpcio_available() {
        return;
    }
    let server = Authorizer::start();
    let rt = runtime();
    let settings = |allow_partial_message, pack_as_bytes| BodySettings {
        max_request_bytes: 8,
        allow_partial_message,
        pack_as_bytes,
    };
    let client = |s| {
        ExtAuthzClient::new(&server.target(), Duration::from_secs(5), false, 403)
            .unwrap()
            .with_request_body(s)
    };
    let h = headers(&[("x-ext-authz", "allow")]);

    let partial = client(settings(true, false));
    let outcome =
        rt.block_on(partial.check_with_body(&input("/upload", &h), Some(b"hello world!")));
    assert!(outcome.is_allow(), "{outcome:?}");
    let short = rt.block_on(partial.check_with_body(&input("/upload", &h), Some(b"tiny")));
    assert!(short.is_allow());
    let seen = server.seen();
    assert_eq!(seen[0]["body"], "hello wo");
    assert_eq!(seen[0]["headers"]["x-envoy-auth-partial-body"], "true");
    assert_eq!(seen[1]["body"], "tiny");
    assert_eq!(seen[1]["headers"]["x-envoy-auth-partial-body"], "false");

    let bytes = client(settings(true, true));
    assert!(rt
        .block_on(bytes.check_with_body(&input("/bin", &h), Some(&[0xff, 0x00, 0x41])))
        .is_allow());
    let seen = server.seen();
    assert_eq!(seen[2]["raw_body_hex"], "ff0041");
    assert_eq!(seen[2]["body"], "");

    // Too large without allowPartialMessage: 413, and the authorizer is not even asked.
    let strict = client(settings(false, false));
    let outcome = rt.block_on(strict.check_with_body(&input("/upload", &h), Some(b"hello world!")));
    assert!(
        matches!(outcome, ExtAuthzOutcome::Deny { status: 413, .. }),
        "{outcome:?}"
    );
    assert_eq!(server.seen().len(), 3);
}
