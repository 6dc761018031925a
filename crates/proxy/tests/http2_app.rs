//! `appProtocol: http2`: the proxy speaks cleartext HTTP/2 to the app (as gRPC apps need),
//! whatever the client spoke, and keeps `te: trailers`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use trustmesh_testkit::http::backend;
use trustmesh_testkit::net::free_port;
use trustmesh_testkit::sidecar::write_proxy_config;
use trustmesh_testkit::tools::curl;

/// An h2c-only backend answering with the version, path, te and x-forwarded-host it saw.
async fn h2c_backend() -> u16 {
    backend(|s| async move {
        let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            };
            let body = format!(
                "{:?} {} te={} xfh={}",
                req.version(),
                req.uri().path(),
                h("te"),
                h("x-forwarded-host")
            );
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_app_protocol_reaches_an_h2c_app() {
    let tmp = tempfile::tempdir().unwrap();
    let app = h2c_backend().await;
    let (inb, inb1) = (free_port(), free_port());
    let listeners = [(inb, app, "http, appProtocol: http2"), (inb1, app, "http")];
    let cfg = write_proxy_config(tmp.path(), "grpc", &listeners, "");
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let url = format!("http://127.0.0.1:{inb}/pkg.Svc/Method");
    let (_, body) = curl(&["-H", "te: trailers", "-H", "Host: grpc.foo", &url]).await;
    assert_eq!(body, "HTTP/2.0 /pkg.Svc/Method te=trailers xfh=grpc.foo");

    // Without appProtocol the proxy speaks HTTP/1.1, which an h2c-only app cannot serve.
    let (code, _) = curl(&[&format!("http://127.0.0.1:{inb1}/x")]).await;
    assert_eq!(code, 503);
}
