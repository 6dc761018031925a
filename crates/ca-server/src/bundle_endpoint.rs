//! The SPIFFE bundle endpoint: serves this trust domain's roots as a SPIFFE bundle over HTTPS so
//! other trust domains can federate with it (SPIFFE Federation spec, `https_spiffe` profile: the
//! endpoint authenticates with an SVID of its own trust domain).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use trustmesh_lifecycle::drain::Watch;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle;

/// How often consumers are asked to poll (the spec's `spiffe_refresh_hint`, seconds): short
/// enough that a root rotation reaches federated peers well before the old root is retired.
pub const REFRESH_HINT_SECS: u64 = 300;

/// The bundle document for `roots`. The sequence number is the newest root's `notBefore`, so it
/// only moves when the root set changes and always moves forward when a new root is added.
pub fn document(
    roots: &[CertificateDer<'_>],
    jwt_authorities: &[serde_json::Value],
) -> Result<String, bundle::BundleError> {
    let sequence = roots
        .iter()
        .filter_map(|r| X509Certificate::from_der(r).ok())
        .map(|(_, c)| c.validity().not_before.timestamp().max(0) as u64)
        .max()
        .unwrap_or(0);
    bundle::encode(roots, jwt_authorities, sequence, REFRESH_HINT_SECS)
}

/// How long a client may take to send a whole request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `doc` on `GET /` and `GET /bundle` until `drain` starts: then the listener closes,
/// a request in flight is answered (HTTP/1.1 `Connection: close`) and idle connections close;
/// an immediate drain closes every connection at once.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    doc: String,
    limits: Arc<crate::limits::Limits>,
    drain: Watch,
) {
    let doc = Bytes::from(doc);
    let mut incoming = crate::tls::accept_tls(listener, tls, limits, drain.clone());
    loop {
        let conn = tokio::select! {
            conn = incoming.recv() => conn,
            _ = drain.draining() => return,
        };
        let Some(conn) = conn else { return };
        let Ok(stream) = conn else { continue };
        let (doc, drain) = (doc.clone(), drain.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| respond(req, doc.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = drain.draining() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = conn => {}
                        () = drain.immediate() => {}
                    }
                }
            }
        });
    }
}

async fn respond(req: Request<Incoming>, doc: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") | (&Method::GET, "/bundle") => Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", format!("max-age={REFRESH_HINT_SECS}"))
            .body(Full::new(doc)),
        (&Method::GET, _) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found: the bundle is at / or /bundle\n",
            ))),
        _ => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header("allow", "GET")
            .body(Full::new(Bytes::from_static(b"only GET is supported\n"))),
    };
    Ok(resp.expect("static response parts are valid"))
}
