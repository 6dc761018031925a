//! The tour's HTTP client: plain HTTP/1.1 to a sidecar's outbound listener (as an app would
//! talk to its sidecar), with every call bounded in time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Upper bound for any single step of a call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What came back: a status and body, or the reason there was no HTTP answer at all.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response { status: u16, body: String },
    NoResponse(String),
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            Outcome::NoResponse(_) => None,
        }
    }

    pub fn body(&self) -> &str {
        match self {
            Outcome::Response { body, .. } => body,
            Outcome::NoResponse(e) => e,
        }
    }

    /// The JSON a demo backend answered with, when it did.
    pub fn json(&self) -> Option<serde_json::Value> {
        match self {
            Outcome::Response { status: 200, body } => serde_json::from_str(body).ok(),
            _ => None,
        }
    }

    /// One short line for the tour's output.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Response { status, body } => {
                let first = body.lines().next().unwrap_or("");
                let short: String = first.chars().take(90).collect();
                format!("HTTP {status} {short}")
            }
            Outcome::NoResponse(e) => format!("no HTTP response ({e})"),
        }
    }
}

/// A kept-alive HTTP/1.1 connection, so the tour can show a connection outliving a rotation.
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        Connection::over(stream, addr.to_string()).await
    }

    /// HTTP/1.1 over a stream connected elsewhere (e.g. from inside a network namespace);
    /// `host` is the `Host` header.
    pub async fn over(stream: TcpStream, host: String) -> anyhow::Result<Connection> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Connection { sender, host })
    }

    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
        match tokio::time::timeout(CALL_TIMEOUT, self.send_inner(method, path, headers)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::NoResponse(format!("{e:#}")),
            Err(_) => Outcome::NoResponse("timed out".into()),
        }
    }

    async fn send_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Outcome> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.sender.send_request(req.body(Empty::new())?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Outcome::Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// One request on a fresh connection.
pub async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
    match Connection::open(addr).await {
        Ok(mut c) => c.send(method, path, headers).await,
        Err(e) => Outcome::NoResponse(format!("{e:#}")),
    }
}
