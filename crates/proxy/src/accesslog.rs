//! One JSON line per request (HTTP) or connection (TCP) on stdout.
//!
//! Access logs go to stdout and diagnostics (tracing) to stderr so a log shipper can take the
//! access log as a clean JSON stream without filtering. Lines are written whole under the stdout
//! lock so concurrent connections never interleave halves of two records.

use std::io::Write;

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct AccessLog {
    pub time: String,
    pub direction: &'static str,
    pub protocol: &'static str,
    pub listener_port: u16,
    pub source_address: String,
    pub destination_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_principal: Option<String>,
    /// Outbound: the identity the peer proxy proved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_principal: Option<String>,
    pub tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `allow`, `deny`, `unauthenticated`, `error`.
    pub decision: String,
    /// Deciding policy as `namespace.name`, when one decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl AccessLog {
    pub fn emit(&self) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let out = std::io::stdout();
            let mut lock = out.lock();
            // A closed stdout must not take the proxy down; the record is simply lost.
            let _ = lock.write_all(&line);
            let _ = lock.flush();
        }
    }
}
