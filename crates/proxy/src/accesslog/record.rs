//! The access log record and its JSON form: what one request or connection leaves behind,
//! and the hand-written serializer that writes it exactly as serde_json would (a leaf, so the
//! format module and the writer both build on it without depending on each other).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::Stamp;

#[derive(Debug, Default, Serialize)]
pub struct AccessLog {
    pub time: Stamp,
    pub direction: &'static str,
    pub protocol: &'static str,
    pub listener_port: u16,
    pub source_address: Arc<str>,
    pub destination_address: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_principal: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_principal: Option<String>,
    /// Outbound: the identity the peer proxy proved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_principal: Option<Arc<str>>,
    pub tls: bool,
    /// `x-request-id` of the request (the client's, or one the proxy generated), to correlate
    /// this line with the app's logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path as the client sent it, when normalization changed it (`path` is what policy
    /// and the app saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `allow`, `deny`, `unauthenticated`, `error`.
    pub decision: &'static str,
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
    /// Transparent outbound: the service port as Istio names its cluster
    /// (`outbound|9080||reviews.bookinfo.svc.cluster.local`), or `PassthroughCluster` /
    /// `BlackHoleCluster` for a destination the registry does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cluster: Option<Arc<str>>,
    /// Envoy's response flags for what went wrong (`UF`, `NR`, `UAEX`, `DPE`, `DC`), set by the
    /// outcome; absent (Envoy's `-`) when nothing did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'static str>,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream`, or why the proxy answered itself
    /// (`rbac_access_denied_matched_policy[<policy or none>]`, `ext_authz_denied`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code_details: Option<Cow<'static, str>>,
    /// Envoy's `%CONNECTION_TERMINATION_DETAILS%`: why a TCP connection was closed by policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_termination_details: Option<String>,
    /// The dry-run policies' shadow results, under the dynamic metadata keys Istio's RBAC
    /// filters write (`allowed` / `denied`, and the matching policy
    /// `ns[<ns>]-policy[<name>]-rule[<i>]` when one matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_dry_run_deny_shadow_engine_result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_dry_run_deny_shadow_effective_policy_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_dry_run_allow_shadow_engine_result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_dry_run_allow_shadow_effective_policy_id: Option<String>,
    /// An AUDIT policy matched: Envoy's `envoy.common` `access_log_hint`, which marks the
    /// request for audit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub access_log_hint: bool,
    /// The AUDIT policy that matched, as `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_policy: Option<String>,
    /// Only for a configured format (`format`): `%PROTOCOL%`, `%REQUESTED_SERVER_NAME%`,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%` and the headers it names, in `Needs` order.
    #[serde(skip)]
    pub http_version: Option<&'static str>,
    #[serde(skip)]
    pub requested_server_name: Option<String>,
    #[serde(skip)]
    pub local_address: Option<String>,
    #[serde(skip)]
    pub request_headers: Vec<Option<String>>,
    #[serde(skip)]
    pub response_headers: Vec<Option<String>>,
}

/// A request's method as the record keeps it: the standard ones as constants (no string made
/// per request), an extension method copied.
pub fn method_text(m: &http::Method) -> Cow<'static, str> {
    use http::Method as M;
    let known = match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::PATCH => "PATCH",
        M::TRACE => "TRACE",
        _ => return Cow::Owned(m.as_str().to_string()),
    };
    Cow::Borrowed(known)
}

/// Appends `v` as a JSON string: quoted, with `"`, `\\` and control characters escaped exactly
/// as serde_json escapes them. Most values (addresses, identities, paths) need no escaping, and
/// are then copied in one piece.
pub(super) fn json_str(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    let bytes = v.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b if b < 0x20 => {
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&crate::hex::hex_pair(b));
                }
                b => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// Whether any byte is a control character, `"` or `\\`: eight bytes per step, with the
/// classic "does this word have a zero byte" bit trick on the word XORed with each target.
pub(super) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    // b < 0x20 exactly: per byte, (b | 0x80) - 0x20 keeps its high bit iff (b & 0x7f) >= 0x20
    // (no borrow crosses bytes, each starts at 0x80 or more); `!w` keeps bytes below 0x80.
    let has_control = |w: u64| {
        let t = (w | HIGHS).wrapping_sub(0x2020_2020_2020_2020);
        !t & !w & HIGHS != 0
    };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if has_control(w)
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Builds one JSON object field by field (keys are ours and need no escaping).
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(self.out, v);
    }
    fn opt_str<T: AsRef<str>>(&mut self, k: &str, v: &Option<T>) {
        if let Some(v) = v {
            self.str(k, v.as_ref());
        }
    }
    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn opt_num(&mut self, k: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }
    fn end(self) {
        self.out.push(b'}');
    }
}

impl AccessLog {
    /// The record as one line of JSON (without the newline), the same text serde_json writes
    /// for this struct (a test holds the two together), about five times cheaper: this runs
    /// for every request.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = JsonObject::new(out);
        o.str("time", &self.time.text());
        o.str("direction", self.direction);
        o.str("protocol", self.protocol);
        o.num("listener_port", u64::from(self.listener_port));
        o.str("source_address", &self.source_address);
        o.str("destination_address", &self.destination_address);
        o.opt_str("source_principal", &self.source_principal);
        o.opt_str("request_principal", &self.request_principal);
        o.opt_str("destination_principal", &self.destination_principal);
        o.bool("tls", self.tls);
        o.opt_str("request_id", &self.request_id);
        o.opt_str("method", &self.method);
        o.opt_str("path", &self.path);
        o.opt_str("original_path", &self.original_path);
        o.opt_str("authority", &self.authority);
        o.opt_num("status", self.status.map(u64::from));
        o.str("decision", self.decision);
        o.opt_str("policy", &self.policy);
        o.opt_str("reason", &self.reason);
        o.num("duration_ms", self.duration_ms);
        o.opt_num("bytes_received", self.bytes_received);
        o.opt_num("bytes_sent", self.bytes_sent);
        o.opt_str("upstream_cluster", &self.upstream_cluster);
        if let Some(f) = self.response_flags {
            o.str("response_flags", f);
        }
        o.opt_str("response_code_details", &self.response_code_details);
        o.opt_str(
            "connection_termination_details",
            &self.connection_termination_details,
        );
        for (k, v) in self.shadow_fields() {
            o.str(k, v);
        }
        if self.access_log_hint {
            o.bool("access_log_hint", true);
        }
        o.opt_str("audit_policy", &self.audit_policy);
        o.end();
    }

    /// The shadow results present, as (dynamic metadata key, value), in record order.
    pub fn shadow_fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (
                "istio_dry_run_deny_shadow_engine_result",
                self.istio_dry_run_deny_shadow_engine_result,
            ),
            (
                "istio_dry_run_deny_shadow_effective_policy_id",
                self.istio_dry_run_deny_shadow_effective_policy_id
                    .as_deref(),
            ),
            (
                "istio_dry_run_allow_shadow_engine_result",
                self.istio_dry_run_allow_shadow_engine_result,
            ),
            (
                "istio_dry_run_allow_shadow_effective_policy_id",
                self.istio_dry_run_allow_shadow_effective_policy_id
                    .as_deref(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}
