//! The demo's applications: tiny HTTP services (frontend, reviews, ratings, payroll) that answer
//! every request with JSON describing what reached them. Because they sit behind sidecars, what
//! they echo is what the mesh let through: the caller's identity arrives in
//! `x-forwarded-client-cert`, JWT and ext_authz results as headers.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Binds a demo service on loopback and serves it until the runtime stops.
pub async fn start(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    serve(name, listener);
    Ok(addr)
}

/// Serves the demo service `name` on `listener` (wherever it was bound: loopback, or inside a
/// network namespace) until the runtime stops.
pub fn serve(name: &'static str, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req)) });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn answer(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = serde_json::json!({
        "service": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        // The sidecar's statement of who called, as Envoy formats it.
        "peer": header("x-forwarded-client-cert").as_deref().and_then(xfcc_uri),
        "jwtPayload": header("x-jwt-payload"),
        "authorization": header("authorization"),
        "extAuthz": header("x-ext-authz"),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}

/// The `URI=` element of an `x-forwarded-client-cert` value (the client's SPIFFE ID).
pub fn xfcc_uri(xfcc: &str) -> Option<String> {
    // A value may list several proxies separated by ','; the last element is the nearest hop.
    let last = xfcc.rsplit(',').next()?;
    last.split(';')
        .find_map(|kv| kv.trim().strip_prefix("URI="))
        .map(|v| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::xfcc_uri;

    #[test]
    fn xfcc_uri_takes_the_nearest_hop() {
        assert_eq!(
            xfcc_uri("By=spiffe://a/ns/x/sa/y;Hash=ab;URI=spiffe://a/ns/p/sa/q").as_deref(),
            Some("spiffe://a/ns/p/sa/q")
        );
        assert_eq!(
            xfcc_uri("URI=spiffe://one,By=b;URI=spiffe://two").as_deref(),
            Some("spiffe://two")
        );
        assert_eq!(xfcc_uri("By=spiffe://a"), None);
    }
}
