//! How inbound HTTP/1 requests reach the app: over a pool of app connections per worker thread,
//! shared by the client connections (origin-form request line, the client's Host kept), a busy
//! one never waited for, and a closed one replaced. Also: policies that read request headers see
//! them (the proxy copies headers for policy only when a policy reads them).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use trustmesh_testkit::http::{backend, get_on, read_http_head, reply_ok};
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::write_proxy_config;

/// What the app saw: per accepted connection, the request heads it read.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A keep-alive HTTP/1.1 app answering `200 ok`; it closes a connection once it has been idle
/// for `idle_close` (like an app server's keep-alive timeout).
async fn app(idle_close: Duration) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let port = backend(move |mut s| {
        let index = {
            let mut all = record.lock().unwrap();
            all.push(Vec::new());
            all.len() - 1
        };
        let record = record.clone();
        async move {
            while let Ok(Some(head)) =
                tokio::time::timeout(idle_close, read_http_head(&mut s)).await
            {
                record.lock().unwrap()[index].push(head);
                if !reply_ok(&mut s).await {
                    return;
                }
            }
            // Idle too long (or the peer left): close, as an app's keep-alive timeout does.
        }
    })
    .await;
    (port, seen)
}

/// Sends one request on `s` and returns the status line and body (content-length framed).
async fn get(s: &mut TcpStream, path: &str) -> (String, String) {
    get_with(s, path, "").await
}

/// [`get`] with extra header lines (`"name: value\r\n"` each).
async fn get_with(s: &mut TcpStream, path: &str, extra: &str) -> (String, String) {
    let answer = get_on(s, "app.example", path, extra).await;
    let answer = answer.expect("a response in time");
    (answer.status_line, answer.body)
}

/// The proxy's worker threads in these tests: each has a pool of its own.
const WORKERS: usize = 2;

async fn proxy_in_front_of(app_port: u16) -> (tempfile::TempDir, u16) {
    proxy_with_policy(app_port, None).await
}

async fn proxy_with_policy(app_port: u16, policy: Option<&str>) -> (tempfile::TempDir, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let inb = free_port();
    // No PeerAuthentication: PERMISSIVE, so a plaintext client may talk to the listener.
    let extra = format!("concurrency: {WORKERS}\n");
    let cfg = write_proxy_config(tmp.path(), "web", &[(inb, app_port, "http")], &extra);
    if let Some(yaml) = policy {
        std::fs::write(tmp.path().join("policies/p.yaml"), yaml).unwrap();
    }
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");
    (tmp, inb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_one_after_another_share_the_app_connections() {
    let (app_port, seen) = app(Duration::from_secs(30)).await;
    let (_tmp, inb) = proxy_in_front_of(app_port).await;

    // Ten client connections, each sending its requests while no other request is in flight.
    let mut clients = Vec::new();
    for c in 0..10 {
        let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
        for i in 0..3 {
            let (status, body) = get(&mut s, &format!("/items/{c}-{i}?q=x")).await;
            assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"));
        }
        clients.push(s);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(Vec::len).sum::<usize>(), 30);
    assert!(
        seen.len() <= WORKERS,
        "30 requests, never two at once, from 10 client connections: at most one app \
         connection per worker, got {}",
        seen.len()
    );
    for head in seen.iter().flatten() {
        // Origin form on the request line, and the client's Host, not the app's address.
        assert!(head.starts_with("GET /items/"), "{head}");
        assert!(head.contains("?q=x HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("host: app.example\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("x-request-id: "),
            "{head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_waits_behind_a_busy_app_connection() {
    // The app answers /slow with its head and the first byte of its body at once and the
    // last byte two seconds later (a connection back in its pool, still busy), anything else
    // at once.
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = connections.clone();
    let app_port = backend(move |mut s| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            while let Some(head) = read_http_head(&mut s).await {
                if head.starts_with("GET /slow ") {
                    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no";
                    if s.write_all(head).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if s.write_all(b"k").await.is_err() {
                        return;
                    }
                } else if !reply_ok(&mut s).await {
                    return;
                }
            }
        }
    })
    .await;
    let (_tmp, inb) = proxy_in_front_of(app_port).await;

    // Warm each worker's pool with one app connection, then keep it busy with a body still
    // coming: WORKERS client connections in a row land on every worker (round-robin), each
    // with a slow request.
    let mut warm = Vec::new();
    for _ in 0..WORKERS {
        let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
        assert_eq!(get(&mut s, "/warm").await.1, "ok");
        warm.push(s);
    }
    let mut slow = Vec::new();
    for mut s in warm {
        slow.push(tokio::spawn(async move { get(&mut s, "/slow").await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Whichever worker the next client connection lands on has its pooled connection busy.
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    assert_eq!(get(&mut s, "/fast").await.1, "ok");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1000),
        "the request waited {waited:?}, behind a slow one"
    );
    for h in slow {
        assert_eq!(h.await.unwrap().1, "ok");
    }
    let made = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        made > WORKERS,
        "the fast request needed a connection of its own: {made} made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_connection_closed_between_requests_is_replaced() {
    // The app drops connections idle for 100 ms; the client pauses 300 ms between requests.
    let (app_port, seen) = app(Duration::from_millis(100)).await;
    let (_tmp, inb) = proxy_in_front_of(app_port).await;

    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    for i in 0..3 {
        let (status, body) = get(&mut s, &format!("/r{i}")).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().map(Vec::len).collect::<Vec<_>>(),
        [1, 1, 1],
        "each request after an idle close went over a fresh app connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_is_down_gives_503_and_the_next_request_still_works() {
    // Reserve a port, then close it: nothing listens there yet.
    let port = free_port();
    let (_tmp, inb) = proxy_in_front_of(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    let (status, _) = get(&mut s, "/").await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");

    // The app comes up on that port: the same client connection now reaches it.
    let ln = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let (mut c, _) = ln.accept().await.unwrap();
        while let Some(_head) = read_http_head(&mut c).await {
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nup")
                .await;
        }
    });
    let (status, body) = get(&mut s, "/").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reading_request_headers_see_them() {
    let (app_port, seen) = app(Duration::from_secs(30)).await;
    let policy = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: block-flagged, namespace: foo }
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[X-Block]
      values: [\"yes\"]
";
    let (_tmp, inb) = proxy_with_policy(app_port, Some(policy)).await;
    let mut s = TcpStream::connect(("127.0.0.1", inb)).await.unwrap();
    let (status, body) = get_with(&mut s, "/", "x-block: yes\r\n").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 403 Forbidden", "RBAC: access denied")
    );
    let (status, _) = get_with(&mut s, "/", "x-block: no\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, _) = get(&mut s, "/").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Only the two allowed requests reached the app.
    assert_eq!(seen.lock().unwrap().iter().map(Vec::len).sum::<usize>(), 2);
}
