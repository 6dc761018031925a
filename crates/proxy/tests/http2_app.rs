//! `appProtocol: http2`: the proxy speaks cleartext HTTP/2 to the app (as gRPC apps need),
//! whatever the client spoke, and keeps `te: trailers`.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An h2c-only backend answering with the version, path, te and x-forwarded-host it saw.
async fn h2c_backend() -> u16 {
    let ln = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(async move {
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
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_app_protocol_reaches_an_h2c_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_pki(dir, "spiffe://cluster.local/ns/foo/sa/grpc");
    std::fs::create_dir(dir.join("policies")).unwrap();
    let app = h2c_backend().await;
    let (inb, inb1) = (common::free_port(), common::free_port());
    let cfg = dir.join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"workload: {{ namespace: foo, serviceAccount: grpc }}
certs: {{ key: key.pem, certChain: cert-chain.pem }}
trustBundles: [ "cluster.local=root-cert.pem" ]
mesh: {{ trustDomain: cluster.local }}
policyDir: policies
inbound:
- {{ port: {inb}, targetPort: {app}, protocol: http, appProtocol: http2 }}
- {{ port: {inb1}, targetPort: {app}, protocol: http }}
"#
        ),
    )
    .unwrap();
    trustmesh_proxy::start(&cfg).await.expect("proxy starts");

    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-H",
            "te: trailers",
            "-H",
            "Host: grpc.foo",
        ])
        .arg(format!("http://127.0.0.1:{inb}/pkg.Svc/Method"))
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(body, "HTTP/2.0 /pkg.Svc/Method te=trailers xfh=grpc.foo");

    // Without appProtocol the proxy speaks HTTP/1.1, which an h2c-only app cannot serve.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{inb1}/x"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");
}
