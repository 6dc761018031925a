//! End to end (tier 1: the proxy in-process, real curl as the client): request targets that
//! once slipped past a DENY on `/admin` and an ALLOW on `/public/*` are normalized before policy,
//! over HTTP/1.1 (origin and absolute form) and HTTP/2, and the app receives the normalized path;
//! malformed requests get 400 (405 for CONNECT) and never reach the app.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trustmesh_testkit::http::{backend, read_http_head, reply_ok};
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::{write_beside, Cfg};
use trustmesh_testkit::tools;

/// Every request head the app received.
type Seen = Arc<Mutex<Vec<String>>>;

/// An HTTP/1.1 app that records each request head and answers `200 ok`. A chunked body is read
/// to its end first; a body that never ends properly gets no answer.
async fn app() -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let port = backend(move |mut s| {
        let record = record.clone();
        async move {
            while let Some(head) = read_http_head(&mut s).await {
                let chunked = head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked");
                record.lock().unwrap().push(head);
                if chunked && !read_chunked_end(&mut s).await {
                    return;
                }
                if !reply_ok(&mut s).await {
                    return;
                }
            }
        }
    })
    .await;
    (port, seen)
}

/// Reads until the last-chunk marker; false if the stream ends or stalls first.
async fn read_chunked_end(s: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"0\r\n\r\n") {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

/// The request target of each head the app saw.
fn targets(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|h| h.split(' ').nth(1).unwrap_or_default().to_string())
        .collect()
}

async fn proxy(app_port: u16, policy: &str, mesh: &str) -> (tempfile::TempDir, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let inb = free_port();
    // No PeerAuthentication: PERMISSIVE, so curl may talk plaintext to the listener.
    let cfg = Cfg {
        mesh: format!("{{ trustDomain: cluster.local {mesh} }}"),
        ..Cfg::beside("web").inbound(inb, app_port, "http")
    };
    let path = write_beside(tmp.path(), &cfg);
    std::fs::write(tmp.path().join("policies/p.yaml"), policy).unwrap();
    trustmesh_proxy::start(&path).await.expect("proxy starts");
    (tmp, inb)
}

const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: foo }
spec:
  action: DENY
  rules: [ { to: [ { operation: { paths: [\"/admin/*\", \"/admin\"] } } ] } ]
";

const ALLOW_PUBLIC: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: public-only, namespace: foo }
spec:
  rules: [ { to: [ { operation: { paths: [\"/public/*\"] } } ] } ]
";

/// curl's status code for one request to `path`; `args` go before the URL.
async fn curl_at(port: u16, path: &str, args: &[&str]) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    tools::curl(&[args, &[url.as_str()]].concat())
        .await
        .0
        .to_string()
}

/// [`curl_at`] `/`.
async fn curl(port: u16, args: &[&str]) -> String {
    curl_at(port, "/", args).await
}

async fn status_for(port: u16, target: &str, h2: bool) -> String {
    let mut args = vec!["--request-target", target];
    if h2 {
        args.push("--http2-prior-knowledge");
    }
    curl(port, &args).await
}

/// Sends raw bytes and returns the response's status line.
async fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_http_head(&mut s))
        .await
        .expect("an answer in time")
        .unwrap_or_default();
    head.lines().next().unwrap_or_default().to_string()
}

/// The attacks, and their relatives.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_admin_paths_are_denied_over_http1_and_http2() {
    let (app_port, seen) = app().await;
    let (_tmp, port) = proxy(app_port, DENY_ADMIN, "").await;
    for h2 in [false, true] {
        for target in ADMIN_IN_DISGUISE {
            assert_eq!(
                status_for(port, target, h2).await,
                "403",
                "{target} h2={h2}"
            );
        }
    }
    // Absolute form (HTTP/1.1): same path rules.
    for target in [
        "http://app.example/foo/../admin/x",
        "http://app.example/%61dmin",
    ] {
        assert_eq!(status_for(port, target, false).await, "403", "{target}");
    }
    assert!(
        targets(&seen).is_empty(),
        "nothing reached the app: {:?}",
        targets(&seen)
    );

    // What passes reaches the app normalized: policy and app saw the same path.
    let plain = [
        ("/public/./x/../y?a=/../b", "/public/y?a=/../b"),
        ("/%7Euser/%41bc", "/~user/Abc"),
        ("/files/a%2Fb.txt", "/files/a%2Fb.txt"),
        ("/static/app.js", "/static/app.js"),
    ];
    for (sent, _) in plain {
        assert_eq!(status_for(port, sent, false).await, "200", "{sent}");
        assert_eq!(status_for(port, sent, true).await, "200", "{sent} h2");
    }
    assert_eq!(
        status_for(port, "http://app.example/public/../ok", false).await,
        "200"
    );
    let got = targets(&seen);
    let mut want = Vec::new();
    for (_, received) in plain {
        want.push(received.to_string());
        want.push(received.to_string());
    }
    want.push("/ok".to_string());
    assert_eq!(got, want);
    // The absolute form's authority became the app's Host.
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        last.to_ascii_lowercase().contains("host: app.example\r\n"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_path_as_is_dot_segments_are_resolved_before_policy() {
    let (app_port, seen) = app().await;
    let (_tmp, port) = proxy(app_port, ALLOW_PUBLIC, "").await;
    for (path, want) in [
        ("/public/../admin/x", "403"),
        ("/public/./../admin", "403"),
        ("/public/x/../y", "200"),
        ("/public/x", "200"),
    ] {
        assert_eq!(curl_at(port, path, &["--path-as-is"]).await, want, "{path}");
    }
    assert_eq!(targets(&seen), ["/public/y", "/public/x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_follow_the_mode() {
    let (app_port, seen) = app().await;
    // BASE (the default): an encoded slash beside a dot segment is refused, one inside a name
    // passes unchanged.
    let (_a, base) = proxy(app_port, DENY_ADMIN, "").await;
    assert_eq!(status_for(base, "/foo/..%2fadmin/x", false).await, "400");
    assert_eq!(status_for(base, "/foo/..%5Cadmin/x", true).await, "400");
    assert_eq!(status_for(base, "/admin%2Fx", false).await, "200");
    // DECODE_AND_MERGE_SLASHES: decoded, so policy sees /admin/x.
    let (_b, decode) = proxy(
        app_port,
        DENY_ADMIN,
        ", pathNormalization: { normalization: DECODE_AND_MERGE_SLASHES }",
    )
    .await;
    for target in [
        "/foo/..%2fadmin/x",
        "/admin%2Fx",
        "//admin//x",
        "/foo%5c..%5cadmin",
    ] {
        assert_eq!(status_for(decode, target, false).await, "403", "{target}");
    }
    assert_eq!(status_for(decode, "/a%2Fb//c", true).await, "200");
    // NONE: the path as sent, for apps that must see it so (and policies must be written so).
    let (_c, none) = proxy(
        app_port,
        DENY_ADMIN,
        ", pathNormalization: { normalization: NONE }",
    )
    .await;
    assert_eq!(status_for(none, "/foo/../admin/x", false).await, "200");
    assert_eq!(status_for(none, "/admin%00", false).await, "400");
    assert_eq!(targets(&seen), ["/admin%2Fx", "/a/b/c", "/foo/../admin/x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_never_reach_the_app() {
    let (app_port, seen) = app().await;
    let (_tmp, port) = proxy(app_port, DENY_ADMIN, "").await;
    for h2 in [false, true] {
        assert_eq!(status_for(port, "/x%00", h2).await, "400");
        assert_eq!(status_for(port, "/%00admin", h2).await, "400");
    }
    assert_eq!(curl(port, &["-X", "get"]).await, "400");
    assert_eq!(
        curl(port, &["-X", "get", "--http2-prior-knowledge"]).await,
        "400"
    );
    // curl leaves the Host header out when told to blank it.
    assert_eq!(curl(port, &["-H", "Host:"]).await, "400");
    // (HTTP/2 with a Host naming another authority than :authority: curl turns Host into
    // :authority, so the unit tests in src/normalize.rs cover that rule.)
    assert_eq!(
        raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await,
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        raw(port, b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n").await,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert!(targets(&seen).is_empty(), "{:?}", targets(&seen));

    // A broken chunked body is the client's fault: 400, not the app's 503.
    let status = raw(
        port,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // HTTP/1.0 without Host is fine (Host became mandatory in 1.1).
    assert_eq!(
        raw(port, b"GET /ok HTTP/1.0\r\n\r\n").await,
        "HTTP/1.0 200 OK"
    );
}
