//! A minimal client for a sidecar's admin endpoint (`/certs`, `/config_dump`), used by the
//! operator commands. Plain HTTP/1.0 over loopback TCP: the admin port is local-only, and a
//! blocking one-shot request keeps these commands free of an async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// GETs `path` from the admin endpoint at `addr` and parses the body as JSON.
pub fn get_json(addr: &str, path: &str) -> Result<serde_json::Value, String> {
    let body = get_text(addr, path, "application/json")?;
    serde_json::from_str(&body).map_err(|e| format!("{addr}{path}: invalid JSON: {e}"))
}

/// GETs `path` from the admin endpoint at `addr`: the body of a 200 answer.
pub fn get_text(addr: &str, path: &str, accept: &str) -> Result<String, String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("admin address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("admin address {addr:?} resolves to nothing"))?;
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot reach the sidecar admin endpoint at {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .map_err(|e| format!("{addr}{path}: {e}"))?;
    let mut raw = Vec::new();
    // Bounded: an admin answer is small; refuse anything absurd rather than buffer it.
    s.take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "{addr}{path}: HTTP {status}: {}",
            body.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_string())
}
