//! `meshConfig.accessLogEncoding` / `accessLogFormat`: the access log as Istio writes it, for
//! operators whose tooling parses Envoy's lines.
//!
//! Unset, the record is trustmesh's own JSON (the module above). `TEXT` without a format is
//! Istio's default text format ([`ISTIO_TEXT`], `EnvoyTextLogFormat` in Istio's
//! `pilot/pkg/model/telemetry_logging.go`); a `TEXT` format is Envoy command operators in
//! text; with `JSON` the format is a JSON object of key → operator string, which Istio turns
//! into Envoy's `json_format`. Parsed once when a snapshot is built (so `proxy --check` and a
//! reload refuse an unknown operator, naming it), then swapped in whole; a line looks the
//! current one up with one atomic load.
//!
//! Values Envoy leaves unset print `-` in text and `null` in JSON, as Envoy does; byte counts
//! and the response code print `0` when there is none, as Envoy's do. `%REQ(A?B):N%` reads
//! header `A`, else `B`, cut to `N` characters. Headers the format names beyond the ones the
//! record holds anyway (method, path, authority, request id) are copied per request only
//! when a format names them. What trustmesh has no value for (`%UPSTREAM_LOCAL_ADDRESS%`,
//! `%UPSTREAM_TRANSPORT_FAILURE_REASON%`) prints `-`. `%DYNAMIC_METADATA(ns:key)%` knows the
//! RBAC filters' shadow results (`envoy.filters.http.rbac` / `envoy.filters.network.rbac`,
//! keys `istio_dry_run_{allow,deny}_shadow_{engine_result,effective_policy_id}`) and the
//! AUDIT mark (`envoy.common:access_log_hint`); other keys print `-`.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use trustmesh_policy::{AccessLogEncoding, MeshConfig};

use super::record::{json_str, AccessLog};
use crate::conn::ConnCtx;

/// Istio's default text format (without its final newline, which every line gets).
pub const ISTIO_TEXT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Op(Op, Option<usize>),
}

/// What a request must copy into its record for the format in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Lower-case header names `%REQ%` reads beyond the record's own fields.
    pub request_headers: Vec<http::HeaderName>,
    pub response_headers: Vec<http::HeaderName>,
    /// `%REQUESTED_SERVER_NAME%`, `%DOWNSTREAM_LOCAL_ADDRESS%`.
    pub sni: bool,
    pub local_address: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Encoding {
    Text(Vec<Piece>),
    Json(Vec<(String, JsonValue)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JsonValue {
    /// A string of operators and text; exactly one operator keeps its type.
    Pieces(Vec<Piece>),
    /// A number, boolean or null written as it is.
    Literal(String),
}

/// A parsed access log format; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    encoding: Encoding,
    pub needs: Needs,
}

static CURRENT: ArcSwapOption<Format> = ArcSwapOption::const_empty();

/// Makes `f` the format every line is written in (`None`: trustmesh's JSON).
pub fn set_current(f: Option<Arc<Format>>) {
    CURRENT.store(f);
}

/// The format in force, if it is not trustmesh's JSON; a guard that touches no reference
/// count (this runs for every request).
pub fn current() -> arc_swap::Guard<Option<Arc<Format>>> {
    CURRENT.load()
}

impl Format {
    /// The format the mesh config asks for; `None` keeps trustmesh's JSON. The error names
    /// the operator or the JSON problem.
    pub fn from_mesh(mesh: &MeshConfig) -> Result<Option<Format>, String> {
        match (mesh.access_log_encoding, mesh.access_log_format.as_deref()) {
            (None | Some(AccessLogEncoding::Text), Some(f)) if !f.trim().is_empty() => {
                Format::text(f).map(Some)
            }
            (Some(AccessLogEncoding::Text), _) => Format::text(ISTIO_TEXT).map(Some),
            (Some(AccessLogEncoding::Json), Some(f)) if !f.trim().is_empty() => {
                Format::json(f).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Envoy's text format: operators between `%`, the rest copied.
    pub fn text(f: &str) -> Result<Format, String> {
        let mut needs = Needs::default();
        let f = f.strip_suffix('\n').unwrap_or(f);
        let pieces = parse(f, &mut needs)?;
        Ok(Format {
            encoding: Encoding::Text(pieces),
            needs,
        })
    }

    /// Istio's JSON `accessLogFormat`: an object of key → operator string.
    pub fn json(f: &str) -> Result<Format, String> {
        let v: serde_json::Value = serde_json::from_str(f)
            .map_err(|e| format!("with JSON encoding the format must be a JSON object: {e}"))?;
        let serde_json::Value::Object(m) = v else {
            return Err(
                "with JSON encoding the format must be a JSON object of key → operator".into(),
            );
        };
        let mut needs = Needs::default();
        let mut fields = Vec::new();
        for (k, v) in m {
            let value = match v {
                serde_json::Value::String(s) => JsonValue::Pieces(parse(&s, &mut needs)?),
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                    return Err(format!("{k}: nested values are not supported"))
                }
                other => JsonValue::Literal(other.to_string()),
            };
            fields.push((k, value));
        }
        Ok(Format {
            encoding: Encoding::Json(fields),
            needs,
        })
    }

    /// Writes `r` in this format (without the newline).
    pub fn write(&self, r: &AccessLog, out: &mut Vec<u8>) {
        match &self.encoding {
            Encoding::Text(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Lit(s) => out.extend_from_slice(s.as_bytes()),
                        Piece::Op(op, max) => {
                            let v = value(op, r);
                            let text = v.as_deref().unwrap_or("-");
                            out.extend_from_slice(cut(text, *max).as_bytes());
                        }
                    }
                }
            }
            Encoding::Json(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(out, k);
                    out.push(b':');
                    match v {
                        JsonValue::Literal(l) => out.extend_from_slice(l.as_bytes()),
                        JsonValue::Pieces(pieces) => json_value(pieces, r, out),
                    }
                }
                out.push(b'}');
            }
        }
    }
}

/// A JSON value: one operator alone keeps its type (numbers stay numbers, unset is `null`).
fn json_value(pieces: &[Piece], r: &AccessLog, out: &mut Vec<u8>) {
    if let [Piece::Op(op, max)] = pieces {
        match value(op, r) {
            None => out.extend_from_slice(b"null"),
            Some(v) if numeric(op) => out.extend_from_slice(v.as_bytes()),
            Some(v) => json_str(out, cut(&v, *max)),
        }
        return;
    }
    let mut s = String::new();
    for p in pieces {
        match p {
            Piece::Lit(l) => s.push_str(l),
            Piece::Op(op, max) => {
                let v = value(op, r);
                s.push_str(cut(v.as_deref().unwrap_or("-"), *max));
            }
        }
    }
    json_str(out, &s);
}

fn numeric(op: &Op) -> bool {
    matches!(
        op,
        Op::ResponseCode | Op::BytesReceived | Op::BytesSent | Op::Duration
    )
}

fn cut(s: &str, max: Option<usize>) -> &str {
    match max {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        }
        _ => s,
    }
}

/// Splits `f` into text and operators.
fn parse(f: &str, needs: &mut Needs) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = f;
    while let Some(at) = rest.find('%') {
        if at > 0 {
            out.push(Piece::Lit(rest[..at].to_string()));
        }
        let after = &rest[at + 1..];
        let Some(end) = after.find('%') else {
            return Err(format!(
                "a '%' at {:?} opens a command operator that is never closed",
                cut(&rest[at..], Some(30))
            ));
        };
        let token = &after[..end];
        if token.is_empty() {
            out.push(Piece::Lit("%".into()));
        } else {
            out.push(operator(token, needs)?);
        }
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.to_string()));
    }
    Ok(out)
}

/// One operator: `NAME`, `NAME(args)` or `NAME(args):N`.
fn operator(token: &str, needs: &mut Needs) -> Result<Piece, String> {
    let (body, max) = match token.rsplit_once("):") {
        Some((b, n)) => {
            let n: usize = n
                .parse()
                .map_err(|_| format!("%{token}%: the length after ':' must be a number"))?;
            (format!("{b})"), Some(n))
        }
        None => (token.to_string(), None),
    };
    let (name, arg) = match body.split_once('(') {
        Some((n, a)) => match a.strip_suffix(')') {
            Some(a) => (n, Some(a)),
            None => return Err(format!("%{token}%: unclosed '('")),
        },
        None => (body.as_str(), None),
    };
    let no_arg = |op: Op| match arg {
        None => Ok(op),
        Some(_) => Err(format!("%{token}%: {name} takes no argument here")),
    };
    let op = match name {
        "START_TIME" => no_arg(Op::StartTime)?,
        "REQ" => {
            let (a, b) = alternatives(token, arg)?;
            Op::Req(req_field(a, needs), b.map(|b| req_field(b, needs)))
        }
        "RESP" => {
            let (a, b) = alternatives(token, arg)?;
            Op::Resp(
                header_index(&mut needs.response_headers, a),
                b.map(|b| header_index(&mut needs.response_headers, b)),
            )
        }
        "RESPONSE_CODE" => no_arg(Op::ResponseCode)?,
        "RESPONSE_FLAGS" => no_arg(Op::ResponseFlags)?,
        "RESPONSE_CODE_DETAILS" => no_arg(Op::ResponseCodeDetails)?,
        "CONNECTION_TERMINATION_DETAILS" => no_arg(Op::ConnectionTerminationDetails)?,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => no_arg(Op::UpstreamTransportFailureReason)?,
        "BYTES_RECEIVED" => no_arg(Op::BytesReceived)?,
        "BYTES_SENT" => no_arg(Op::BytesSent)?,
        "DURATION" => no_arg(Op::Duration)?,
        "UPSTREAM_HOST" => no_arg(Op::UpstreamHost)?,
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => no_arg(Op::UpstreamCluster)?,
        "UPSTREAM_LOCAL_ADDRESS" => no_arg(Op::UpstreamLocalAddress)?,
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(Op::DownstreamRemoteAddress { port: true })?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(Op::DownstreamRemoteAddress { port: false })?
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => {
            needs.local_address = true;
            no_arg(Op::DownstreamLocalAddress { port: true })?
        }
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            needs.local_address = true;
            no_arg(Op::DownstreamLocalAddress { port: false })?
        }
        "DOWNSTREAM_PEER_URI_SAN" => no_arg(Op::DownstreamPeerUriSan)?,
        "REQUESTED_SERVER_NAME" => {
            needs.sni = true;
            no_arg(Op::RequestedServerName)?
        }
        "ROUTE_NAME" => no_arg(Op::RouteName)?,
        "PROTOCOL" => no_arg(Op::Protocol)?,
        "DYNAMIC_METADATA" => {
            let arg = arg.filter(|a| !a.is_empty()).ok_or_else(|| {
                format!("%{token}%: DYNAMIC_METADATA needs a namespace, as in DYNAMIC_METADATA(envoy.common:access_log_hint)")
            })?;
            let mut parts = arg.splitn(2, ':');
            let ns = parts.next().unwrap_or_default().to_string();
            Op::DynamicMetadata(ns, parts.next().map(str::to_string))
        }
        _ => {
            return Err(format!(
                "unknown command operator %{token}%; trustmesh knows START_TIME, REQ, RESP, \
                 RESPONSE_CODE, RESPONSE_FLAGS, RESPONSE_CODE_DETAILS, \
                 CONNECTION_TERMINATION_DETAILS, UPSTREAM_TRANSPORT_FAILURE_REASON, \
                 BYTES_RECEIVED, BYTES_SENT, DURATION, UPSTREAM_HOST, UPSTREAM_CLUSTER(_RAW), \
                 UPSTREAM_LOCAL_ADDRESS, DOWNSTREAM_REMOTE_ADDRESS(_WITHOUT_PORT), \
                 DOWNSTREAM_LOCAL_ADDRESS(_WITHOUT_PORT), DOWNSTREAM_PEER_URI_SAN, \
                 REQUESTED_SERVER_NAME, ROUTE_NAME, PROTOCOL, DYNAMIC_METADATA"
            ))
        }
    };
    Ok(Piece::Op(op, max))
}

/// `A?B` → (`A`, `Some(B)`); a header name is required.
fn alternatives<'a>(
    token: &str,
    arg: Option<&'a str>,
) -> Result<(&'a str, Option<&'a str>), String> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| format!("%{token}%: a header name is required, as in REQ(USER-AGENT)"))?;
    let (a, b) = match arg.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (arg, None),
    };
    for h in std::iter::once(a).chain(b) {
        let plain = h.strip_prefix(':').unwrap_or(h);
        if http::HeaderName::from_bytes(plain.as_bytes()).is_err() {
            return Err(format!("%{token}%: {h:?} is not a header name"));
        }
    }
    Ok((a, b))
}

fn req_field(h: &str, needs: &mut Needs) -> Field {
    match h.to_ascii_lowercase().as_str() {
        ":method" => Field::Method,
        ":path" => Field::Path,
        ":authority" | "host" => Field::Authority,
        "x-request-id" => Field::RequestId,
        p if p.starts_with(':') => Field::Unknown,
        _ => Field::Header(header_index(&mut needs.request_headers, h)),
    }
}

/// Where `h` is in `list` (added if new); `usize::MAX` for a pseudo-header, never recorded.
fn header_index(list: &mut Vec<http::HeaderName>, h: &str) -> usize {
    // `alternatives` checked that the name is valid.
    let Ok(name) = http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) else {
        return usize::MAX;
    };
    match list.iter().position(|n| *n == name) {
        Some(i) => i,
        None => {
            list.push(name);
            list.len() - 1
        }
    }
}

impl AccessLog {
    /// Copies what the configured format reads from the connection (nothing without one).
    pub fn capture_connection(&mut self, ctx: &ConnCtx) {
        if let Some(f) = current().as_deref() {
            if f.needs.sni {
                self.requested_server_name = ctx.sni.clone();
            }
            if f.needs.local_address {
                self.local_address = Some(ctx.local.to_string());
            }
        }
    }

    /// Copies the request headers and HTTP version the configured format reads.
    pub fn capture_request(&mut self, version: http::Version, headers: &http::HeaderMap) {
        let guard = current();
        let Some(f) = guard.as_deref() else {
            return;
        };
        self.http_version = Some(match version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        });
        self.request_headers = capture(&f.needs.request_headers, headers);
    }

    /// Copies the response headers the configured format reads.
    pub fn capture_response(&mut self, headers: &http::HeaderMap) {
        if let Some(f) = current().as_deref() {
            if !f.needs.response_headers.is_empty() {
                self.response_headers = capture(&f.needs.response_headers, headers);
            }
        }
    }

    /// The line as the configured format writes it, or trustmesh's JSON without one.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        match current().as_deref() {
            Some(f) => f.write(self, out),
            None => self.write_json(out),
        }
    }
}

/// Several values of one header are joined with `,`, as Envoy's `%REQ%` shows them.
fn capture(names: &[http::HeaderName], headers: &http::HeaderMap) -> Vec<Option<String>> {
    names
        .iter()
        .map(|n| {
            let mut vals = headers.get_all(n).iter().filter_map(|v| v.to_str().ok());
            let first = vals.next()?.to_string();
            Some(vals.fold(first, |mut acc, v| {
                acc.push(',');
                acc.push_str(v);
                acc
            }))
        })
        .collect()
}

mod ops;
use ops::{value, Field, Op};

#[cfg(test)]
mod tests;
