//! Fetching a JWKS over HTTP(S).
//!
//! A deliberately small client: one GET per fetch on a fresh connection (fetches happen every
//! 20 minutes, pooling would buy nothing), no redirects (a JWKS location that redirects is a
//! configuration to fix, not to follow silently), a size cap so a hostile or broken endpoint
//! cannot balloon the proxy's memory, and the whole exchange under one timeout.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::http::{header, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest JWKS (or discovery document) we accept. Real key sets are a few KiB.
const MAX_BODY_BYTES: usize = 1 << 20;

/// GETs `uri` and returns the body as text; any non-200 answer is an error.
pub(crate) async fn get_text(
    uri: &Uri,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<String, String> {
    tokio::time::timeout(timeout, get_inner(uri, tls))
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))?
}

async fn get_inner(uri: &Uri, tls: &Arc<rustls::ClientConfig>) -> Result<String, String> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let host = uri.host().ok_or("no host")?;
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "trustmesh-proxy")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;

    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect {bare_host}:{port}: {e}"))?;
    if https {
        let name = ServerName::try_from(bare_host.to_string())
            .map_err(|e| format!("server name {bare_host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {bare_host}: {e}"))?;
        send(stream, request).await
    } else {
        send(tcp, request).await
    }
}

async fn send<S>(io: S, request: Request<Empty<Bytes>>) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "body is not UTF-8".to_string())
    }
    .await;
    driver.abort();
    result
}

/// TLS settings for https JWKS endpoints: the operating system's trust store, as istiod uses
/// when it resolves `jwksUri`.
pub(crate) fn default_tls() -> Arc<rustls::ClientConfig> {
    let roots = crate::tls::system_roots();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
