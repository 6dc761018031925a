//! Just enough HTTP/1.1 to drive a sidecar and stand in for the app behind it, written by hand
//! rather than with a client library: tests send exactly the bytes they mean (keep-alive or not,
//! one request per connection or many), and the test backends report exactly what reached them.
//! Every read is bounded in size and every exchange in time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long one exchange with a test server may take.
const EXCHANGE: Duration = Duration::from_secs(5);

/// Reads one HTTP head up to and including the blank line, a byte at a time so nothing after it
/// is consumed; `None` if the peer closes first or the head grows past 16 KiB. Not bounded in
/// time: callers that need a deadline wrap it in a timeout.
pub async fn read_http_head(s: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16_384 || s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}

/// The value of header `name` in a head, if present (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One answer read off a connection: the status line (`HTTP/1.1 200 OK`), its code, the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status_line: String,
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `GET path` with `Host: host` and the `extra` header lines (`"name: value\r\n"` each)
/// on an open connection, keep-alive, and reads the answer (content-length framed); `None` when
/// the connection closes or nothing whole arrives within 5 s.
pub async fn get_on(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    host: &str,
    path: &str,
    extra: &str,
) -> Option<Answer> {
    let fut = async {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let head = read_http_head(s).await?;
        let len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.ok()?;
        let status_line = head.lines().next().unwrap_or_default().to_string();
        Some(Answer {
            status: status_line.split(' ').nth(1)?.parse().ok()?,
            status_line,
            head,
            body: String::from_utf8_lossy(&body).to_string(),
        })
    };
    tokio::time::timeout(EXCHANGE, fut).await.ok().flatten()
}

/// One GET on a fresh `Connection: close` connection to a loopback port (an admin endpoint,
/// say): (status, body), or `None` when nothing answered within 5 s.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(EXCHANGE, fut).await.ok().flatten()
}

/// One GET on a fresh connection; the status code only (0 when no answer came within 5 s).
pub async fn get_status(port: u16, path: &str) -> u16 {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let head = read_http_head(&mut s).await?;
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(EXCHANGE, fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// [`http_get`] for tests without a runtime (plain threads): HTTP/1.0 to `addr`, bounded by
/// socket timeouts.
pub fn blocking_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(EXCHANGE)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Test backends: the app behind a sidecar. Each binds an ephemeral loopback port, serves every
// connection on its own task until the test's runtime ends, and returns the port.
// ---------------------------------------------------------------------------------------------

/// Binds a loopback listener and hands every accepted connection to `serve` on its own task.
pub async fn backend<F, Fut>(serve: F) -> u16
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ln = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ln.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = ln.accept().await else {
                continue;
            };
            tokio::spawn(serve(s));
        }
    });
    port
}

/// A TCP echo backend.
pub async fn echo_backend() -> u16 {
    backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// A server-first backend (like SMTP or MySQL): greets on connect, then echoes.
pub async fn greeter_backend() -> u16 {
    backend(|mut s| async move {
        if s.write_all(b"220 hello\r\n").await.is_ok() {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    })
    .await
}

/// An app that reads requests and never answers.
pub async fn silent_backend() -> u16 {
    backend(|mut s| async move {
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// A keep-alive HTTP/1.1 app that answers every request `200 ok`.
pub async fn ok_backend() -> u16 {
    ok_backend_after(Duration::ZERO).await
}

/// [`ok_backend`] taking `delay` per answer, so requests are in flight when a test acts.
pub async fn ok_backend_after(delay: Duration) -> u16 {
    backend(move |mut s| async move {
        while read_http_head(&mut s).await.is_some() {
            tokio::time::sleep(delay).await;
            if !reply_ok(&mut s).await {
                return;
            }
        }
    })
    .await
}

/// Answers one request `200` with the body `ok`; false when the peer is gone.
pub async fn reply_ok(s: &mut (impl AsyncWrite + Unpin)) -> bool {
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    s.write_all(r).await.is_ok()
}

/// One request as a test backend read it.
pub struct Request {
    pub method: String,
    pub path: String,
    /// Every header line, lower-cased name, trimmed value, in order.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Serves keep-alive HTTP/1.1 on `s`, answering each request (at most 1,000, each read within
/// 30 s) with `200` and the text `answer` makes of it; a body the client sends is read and
/// dropped.
pub async fn serve_http(s: TcpStream, answer: impl Fn(&Request) -> String) -> std::io::Result<()> {
    serve_http_with_body(s, |r, _| answer(r)).await
}

/// [`serve_http`], handing `answer` the request's (content-length framed) body too.
pub async fn serve_http_with_body(
    s: TcpStream,
    answer: impl Fn(&Request, &[u8]) -> String,
) -> std::io::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    for _ in 0..1000 {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line)).await??;
        if n == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let mut req = Request {
            method: parts.next().unwrap_or("").to_string(),
            path: parts.next().unwrap_or("").to_string(),
            headers: Vec::new(),
        };
        for _ in 0..200 {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                req.headers.push((k, v.trim().to_string()));
            }
        }
        let len = req.header("content-length").parse().unwrap_or(0);
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let text = answer(&req, &body);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        w.write_all(resp.as_bytes()).await?;
    }
    Ok(())
}

/// A tiny HTTP/1.1 backend that answers every request with `<name> <method> <path>` and the
/// `x-forwarded-client-cert` and `x-request-id` it received (plus every `x-test-*` and
/// `x-ext-authz-*` header as `name=value` lines), so tests see exactly what the proxy forwarded.
pub async fn http_backend(name: &'static str) -> u16 {
    backend(move |s| async move {
        let _ = serve_http(s, |r| {
            let mut text = format!(
                "{name} {} {}\nxfcc: {}\nrid: {}\n",
                r.method,
                r.path,
                r.header("x-forwarded-client-cert"),
                r.header("x-request-id")
            );
            for (k, v) in &r.headers {
                if k.starts_with("x-test-") || k.starts_with("x-ext-authz-") {
                    text.push_str(&format!("{k}={v}\n"));
                }
            }
            text
        })
        .await;
    })
    .await
}

/// A backend answering `<method> <path>`, every `x-*` header it received except XFCC as
/// `name: value` lines, and `body=<the body it received>`: what reached the app, body included.
pub async fn body_backend() -> u16 {
    backend(|s| async move {
        let _ = serve_http_with_body(s, |r, body| {
            let mut text = format!("{} {}\n", r.method, r.path);
            for (k, v) in &r.headers {
                if k.starts_with("x-") && k != "x-forwarded-client-cert" {
                    text.push_str(&format!("{k}: {v}\n"));
                }
            }
            text.push_str(&format!("body={}\n", String::from_utf8_lossy(body)));
            text
        })
        .await;
    })
    .await
}

/// A backend answering `<method> <path>` plus every `x-*` and `authorization` header it received
/// except XFCC, as lower-cased `name: value` lines: what authentication left in the request.
pub async fn headers_backend() -> u16 {
    backend(|s| async move {
        let _ = serve_http(s, |r| {
            let mut text = format!("{} {}\n", r.method, r.path);
            for (k, v) in &r.headers {
                let shown = k.starts_with("x-") || k.starts_with("authorization");
                if shown && k != "x-forwarded-client-cert" {
                    text.push_str(&format!("{k}: {}\n", v.to_ascii_lowercase()));
                }
            }
            text
        })
        .await;
    })
    .await
}

/// The value of the first sample in a Prometheus exposition whose line starts with
/// `line_start` (`name{labels}`, or `name ` for a sample without labels).
pub fn metric(exposition: &str, line_start: &str) -> Option<u64> {
    exposition
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}
