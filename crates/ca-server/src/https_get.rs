//! A minimal HTTPS GET for the two documents trustmesh fetches from other servers: an issuer's
//! JWKS and a federated trust domain's SPIFFE bundle.
//!
//! The server is verified against explicitly given roots only (never the host's store): both
//! documents are trust anchors, and fetching them over a connection verified by "any public CA"
//! would let anyone with a web certificate for that name hand us keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use tokio::net::TcpStream;

/// Documents larger than this are refused; a JWKS or bundle is a few KiB.
const MAX_BODY: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, String),
    #[error("{0}: only https:// URLs are fetched")]
    NotHttps(String),
    #[error("{0}: no root certificate given to verify the server")]
    NoRoots(String),
    #[error("{url}: {reason}")]
    Io { url: String, reason: String },
    #[error("{url}: server answered HTTP {status}")]
    Status { url: String, status: u16 },
}

/// GETs `url`, verifying the server against the PEM roots in `ca_file`.
pub async fn get(url: &str, ca_file: Option<&Path>) -> Result<Vec<u8>, FetchError> {
    let ca_file = ca_file.ok_or_else(|| FetchError::NoRoots(url.to_string()))?;
    let pem = std::fs::read(ca_file).map_err(|e| FetchError::Io {
        url: url.to_string(),
        reason: format!("reading {}: {e}", ca_file.display()),
    })?;
    let roots = pem::parse_many(&pem)
        .map_err(|e| FetchError::Io {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect::<Vec<_>>();
    get_with_roots(url, &roots).await
}

/// GETs `url`, verifying the server's chain and name against `roots`.
pub async fn get_with_roots(
    url: &str,
    roots: &[CertificateDer<'static>],
) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(TIMEOUT, fetch(url, roots))
        .await
        .map_err(|_| FetchError::Io {
            url: url.to_string(),
            reason: format!("timed out after {TIMEOUT:?}"),
        })?
}

async fn fetch(url: &str, roots: &[CertificateDer<'static>]) -> Result<Vec<u8>, FetchError> {
    let io = |reason: String| FetchError::Io {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
        FetchError::Url(url.to_string(), e.to_string())
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(FetchError::NotHttps(url.to_string()));
    }
    if roots.is_empty() {
        return Err(FetchError::NoRoots(url.to_string()));
    }
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(url.to_string(), "no host".into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);

    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .map_err(|e| io(format!("bad root certificate: {e}")))?;
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| io(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| io(e.to_string()))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| io(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| io(format!("TLS: {e}")))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| io(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::get(path)
        .header(
            hyper::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| io(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| io(format!("reading body: {e}")))?
        .to_bytes();
    driver.abort();
    if status != 200 {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
        });
    }
    Ok(body.to_vec())
}
