//! Admin HTTP server: `/metrics`, `/config_dump`, `/certs`, `/peers` (recently served peers,
//! `crate::peers`), `/healthz/ready`, and Envoy's `/stats`, `/stats/prometheus`
//! (`crate::adminstats`) and `/logging` (`crate::loglevel`).
//!
//! Every GET is read-only. The one thing that changes state is `POST /logging` (log levels,
//! as on Envoy's admin); nothing here changes policy or traffic. Bind it to loopback:
//! `/config_dump` shows the policy set and file paths, which are operational detail an
//! attacker would value, and anyone who can reach the port can raise the log levels.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::response::{bytes_response, text, Body};
use crate::state::Shared;

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json_response(v: serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    let mut r = bytes_response(StatusCode::OK, Bytes::from(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn typed(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = bytes_response(status, Bytes::from(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Envoy's `/logging`: POST changes levels (no parameter only lists), GET lists.
fn logging(req: &Request<Incoming>) -> Response<Body> {
    use crate::loglevel::LoggingError;
    if req.method() == http::Method::GET {
        return typed(StatusCode::OK, "text/plain", crate::loglevel::list());
    }
    match crate::loglevel::apply(req.uri().query().unwrap_or("")) {
        Ok(listing) => typed(StatusCode::OK, "text/plain", listing),
        Err(LoggingError::BadRequest(why)) => {
            typed(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n"))
        }
        Err(LoggingError::Unavailable(why)) => typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{why}\n"),
        ),
    }
}

fn route(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() == "/logging"
        && (req.method() == http::Method::POST || req.method() == http::Method::GET)
    {
        return logging(&req);
    }
    if req.method() != http::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported, and POST for /logging\n",
        );
    }
    match req.uri().path() {
        "/stats" => match crate::adminstats::stats(&shared.metrics, req.uri().query()) {
            Ok((content_type, body)) => typed(StatusCode::OK, content_type, body),
            Err(why) => typed(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n")),
        },
        "/stats/prometheus" => typed(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::adminstats::prometheus(&shared.metrics, crate::clock::unix_now()),
        ),
        "/metrics" => {
            let mut r = bytes_response(
                StatusCode::OK,
                Bytes::from(shared.metrics.render(crate::clock::unix_now())),
            );
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/config_dump" => json_response(config_dump(shared)),
        "/certs" => json_response(certs(shared)),
        "/peers" => json_response(json!({ "peers": shared.metrics.peers.list() })),
        "/healthz/ready" if shared.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        // Peers refuse an expired certificate: this sidecar cannot serve mesh traffic.
        "/healthz/ready"
            if shared
                .metrics
                .cert_expiry_unix
                .load(std::sync::atomic::Ordering::Relaxed)
                <= crate::clock::unix_now() =>
        {
            text(StatusCode::SERVICE_UNAVAILABLE, "certificate expired\n")
        }
        "/healthz/ready" => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /stats /stats/prometheus /logging /config_dump /certs /peers /healthz/ready\n",
        ),
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn config_dump(shared: &Shared) -> serde_json::Value {
    let snap = shared.current();
    json!({
        "generation": snap.generation,
        "loadedAt": snap.loaded_at,
        "identity": snap.own_id.to_string(),
        "config": snap.config,
        "mesh": snap.mesh,
        "trustDomain": snap.trust.local.to_string(),
        "trustDomainAliases": snap.trust.aliases.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "policies": snap.policies.dump(&inbound_ports(&snap)),
    })
}

fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn cert_facts(der: &[u8]) -> serde_json::Value {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => json!({
            "subject": c.subject().to_string(),
            "issuer": c.issuer().to_string(),
            "serial": c.raw_serial_as_string(),
            "notBefore": rfc3339(c.validity().not_before.timestamp()),
            "notAfter": rfc3339(c.validity().not_after.timestamp()),
            "sha256": fingerprint(der),
        }),
        Err(_) => json!({ "sha256": fingerprint(der), "error": "unparsable certificate" }),
    }
}

fn certs(shared: &Shared) -> serde_json::Value {
    let snap = shared.current();
    let now = crate::clock::unix_now();
    let mut bundles = serde_json::Map::new();
    for td in snap.trust.bundles.trust_domains() {
        let roots: Vec<_> = snap
            .trust
            .bundles
            .roots(td)
            .iter()
            .map(|r| cert_facts(r.as_ref()))
            .collect();
        bundles.insert(td.to_string(), serde_json::Value::Array(roots));
    }
    json!({
        "workload": {
            "spiffeId": snap.own_id.to_string(),
            "notBefore": rfc3339(snap.own_not_before),
            "notAfter": rfc3339(snap.own_not_after),
            "expiresInSeconds": snap.own_not_after - now,
            "chain": snap.own.chain.iter().map(|c| cert_facts(c.as_ref())).collect::<Vec<_>>(),
        },
        "trustBundles": bundles,
    })
}

/// Binds the admin listener, so a port conflict is reported at startup.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The workload ports traffic arrives on: the explicit inbound listeners' targets and, in
/// transparent mode, the ports the registry knows this workload serves.
fn inbound_ports(snap: &crate::snapshot::Snapshot) -> Vec<u16> {
    let mut ports: Vec<u16> = snap.config.inbound.iter().map(|l| l.target_port).collect();
    if snap.config.capture.is_some() {
        ports.extend(snap.mesh_view.own_ports());
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
